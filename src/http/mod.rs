//! The HTTP server: `/metrics` for Prometheus, `/healthz` for probes, `/api/*` for analysts.
//!
//! It runs on its own thread with a single-threaded tokio runtime (axum on hyper), reading
//! only what the pipeline publishes in [`Telemetry`]: it never touches a worker's state
//! directly, so a slow or hostile client can cost the HTTP thread time but never capture.
//! The API requires a bearer token whenever one is configured, and the server refuses to
//! listen on a non-loopback address without one. TLS is left to a reverse proxy (see
//! `deploy/README.md`).

pub mod api;
pub mod budget;
pub mod conn;
pub mod metrics;

use crate::config::HttpConfig;
use crate::telemetry::Telemetry;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How long requests in flight may take to finish once the server is asked to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Environment variable holding the API token (overrides `http.token`).
pub const TOKEN_ENV: &str = "OUTFLOW_HTTP_TOKEN";

pub use crate::config::MIN_TOKEN_CHARS;

/// The API token in force: [`TOKEN_ENV`] when it is set (even to nothing: an empty
/// variable is a secret that failed to arrive, not a wish for an open API), otherwise
/// `http.token` unless that is empty, its documented "no token". Either, when given, must
/// pass [`check_token`].
pub fn token(cfg: &HttpConfig) -> Result<Option<String>, HttpError> {
    match std::env::var(TOKEN_ENV) {
        Ok(t) => check_token(TOKEN_ENV, &t).map(|()| Some(t)),
        Err(std::env::VarError::NotUnicode(_)) => Err(HttpError::WeakToken {
            key: TOKEN_ENV,
            problem: "is not valid UTF-8".into(),
        }),
        Err(std::env::VarError::NotPresent) if cfg.token.is_empty() => Ok(None),
        Err(std::env::VarError::NotPresent) => {
            check_token("http.token", &cfg.token).map(|()| Some(cfg.token.clone()))
        }
    }
}

/// Refuses an API token that is empty, only whitespace, or shorter than
/// [`MIN_TOKEN_CHARS`] characters; `key` (`http.token`, [`TOKEN_ENV`]) names where it came
/// from in the error.
pub fn check_token(key: &'static str, token: &str) -> Result<(), HttpError> {
    match crate::config::token_problem(token) {
        None => Ok(()),
        Some(problem) => Err(HttpError::WeakToken { key, problem }),
    }
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `http.listen` is not an address.
    #[error("http.listen: {0:?} is not an address:port such as 127.0.0.1:9760")]
    BadAddress(String),
    /// Non-loopback without a token.
    #[error(
        "http.listen {0} is not a loopback address: set http.token or the {TOKEN_ENV} \
         environment variable, so the API is not open to the network"
    )]
    TokenRequired(SocketAddr),
    /// The API token is empty, whitespace or too short.
    #[error("{}", crate::config::weak_token_message(key, problem))]
    WeakToken {
        /// Where the token came from: `http.token` or [`TOKEN_ENV`].
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Binding failed (in use, no permission, no such address).
    #[error("http.listen {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or thread could not start.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// What the handlers share.
pub struct AppState {
    /// The pipeline's published state.
    pub telemetry: Arc<Telemetry>,
    /// Bearer token for /api/*, if any.
    pub token: Option<String>,
    /// Recent (time, total drops) samples for "drops rising" in /healthz.
    pub drop_history: Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// One top-flows request at a time reaches the workers, and an answer younger than a
    /// second is reused: clients in a loop cannot keep the workers scanning their tables.
    pub top_cache: tokio::sync::Mutex<Option<api::TopCache>>,
    /// One ring query at a time reaches the workers.
    pub pcap_lock: tokio::sync::Mutex<()>,
}

/// A running HTTP server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `cfg.listen` (the token from [`token`]) and serves on a new thread. Binding
    /// happens here, so a port in use is reported before capture starts.
    pub fn start(cfg: &HttpConfig, telemetry: Arc<Telemetry>) -> Result<HttpServer, HttpError> {
        Self::start_with(&cfg.listen, token(cfg)?, telemetry)
    }

    /// As [`HttpServer::start`] with an explicit address and token.
    pub fn start_with(
        listen: &str,
        token: Option<String>,
        telemetry: Arc<Telemetry>,
    ) -> Result<HttpServer, HttpError> {
        Self::start_limited(listen, token, telemetry, conn::Limits::default())
    }

    /// As [`HttpServer::start_with`] with other connection limits and deadlines (tests use
    /// short deadlines so that they run in seconds).
    pub fn start_limited(
        listen: &str,
        token: Option<String>,
        telemetry: Arc<Telemetry>,
        limits: conn::Limits,
    ) -> Result<HttpServer, HttpError> {
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| HttpError::BadAddress(listen.to_string()))?;
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(HttpError::TokenRequired(addr));
        }
        let bind_error = |source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(bind_error)?;
        // As std's bind does: a restart is not refused while old connections linger.
        socket.set_reuseaddr(true).map_err(bind_error)?;
        socket.bind(addr).map_err(bind_error)?;
        let state = Arc::new(AppState {
            telemetry,
            token,
            drop_history: Mutex::default(),
            top_cache: tokio::sync::Mutex::new(None),
            pcap_lock: tokio::sync::Mutex::new(()),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _in_runtime = rt.enter();
            socket.listen(conn::BACKLOG).map_err(bind_error)?
        };
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("outflow-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::spawn(api::sample_drops(Arc::clone(&state)));
                    let stats = Arc::clone(&state.telemetry.http);
                    let app = router(state);
                    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
                    let served = conn::serve(listener, app, limits, stats, async move {
                        let _ = stop_rx.await;
                        let _ = stopping_tx.send(());
                    });
                    // Requests in flight get a moment to finish; a client that holds its
                    // connection open must not keep the sensor from stopping.
                    let grace = async move {
                        if stopping_rx.await.is_ok() {
                            tokio::time::sleep(SHUTDOWN_GRACE).await;
                        } else {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        () = served => {}
                        () = grace => tracing::info!("HTTP server: closing connections still open"),
                    }
                });
                // Dropping the runtime here closes whatever connections remain.
            })?;
        tracing::info!("HTTP server listening on http://{addr}/");
        Ok(HttpServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Tells the server to stop accepting and to finish the requests in flight (within
    /// [`SHUTDOWN_GRACE`]) without waiting for it; [`HttpServer::stop`] then joins. A
    /// stopping sensor starts this first, so the grace runs beside the flush of the
    /// outputs instead of after it (the whole stop must fit in 5 s).
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(api::healthz))
        .route("/api/alerts", get(api::alerts))
        .route("/api/incidents", get(api::incidents))
        .route("/api/flows/top", get(api::top_flows))
        .route("/api/slices", get(api::slices))
        .route("/api/slices/{name}", get(api::slice_file))
        .route("/api/pcap", get(api::pcap))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A JSON error body: `{"error": "..."}` with the status.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET (and HEAD) are served",
    )
}

/// An API error: its status and a message for the JSON body.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    /// 500: something on the sensor's side (a file it cannot read).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    /// 400 with a message naming the parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = error(self.status, self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"outflow\""),
            );
        }
        r
    }
}

/// Checks the bearer token of an /api request. Compared in constant time, so the
/// response time does not tell an attacker how much of a guess was right.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = state.token.as_deref() else {
        return Ok(());
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = got.is_some_and(|g| {
        g.len() == want.len()
            && g.bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token (Authorization: Bearer <http.token>)".into(),
        })
    }
}
