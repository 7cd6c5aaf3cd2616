//! The HTTP listener and its connections: a bounded table that never blocks accept, and
//! per-connection deadlines that a trickle of bytes cannot reset.
//!
//! The threat is a local user (or anything that can reach the port) holding connections
//! open without a token, so that Prometheus cannot scrape `/metrics` and the probe cannot
//! reach `/healthz`. Capping connections with a semaphore taken before `accept` (the
//! earlier design) lost to 256 idle sockets: new clients, the scrape among them, waited in
//! the kernel's accept queue until one of the idle sockets left, and an idle deadline that
//! every byte reset let a slowloris client (one header byte every 30 s) stay forever.
//!
//! The design:
//!
//! - **Accept always.** Every connection is accepted and enters the connection table
//!   ([`super::budget::Table`], at most [`Limits::max_connections`]) as its newest idle
//!   member. When the table is full, the **oldest idle connection is closed** to make room
//!   (O(1): an intrusive list through a slab with generations), so a flood of idle or
//!   half-sent connections only ever evicts itself, oldest first, while each new client,
//!   the scrape included, gets in at once. Idle means no request in progress: waiting for a
//!   request, between keep-alive requests, or still sending a request head.
//! - **Reserved budget for the scrape and the probe.** A request is in progress from its
//!   complete head to its last response byte, and only then is its connection safe from
//!   eviction. `/metrics` and `/healthz` may have [`Limits::max_probe_requests`] in
//!   progress, everything else (`/api/*`, 404s) [`Limits::max_api_requests`]; both
//!   together are below the table's size, so a full table always has an idle connection to
//!   evict, and slow `/api` clients can never take the scrape's place. A request over its
//!   class's budget is answered `503` at once and its connection closed.
//! - **Deadlines set by requests, not by bytes.** A new connection must deliver a
//!   complete request head within [`Limits::header_timeout`] of being accepted; a kept-alive
//!   connection may wait [`Limits::idle_timeout`] for its next request, whose head must then
//!   be complete within `header_timeout` of its first byte; a request must finish (response
//!   written) within its class's budget ([`Limits::probe_request_timeout`],
//!   [`Limits::api_request_timeout`]). Bytes arriving do not extend any of these, so a
//!   trickle buys nothing. The keep-alive wait (90 s) is longer than any Prometheus scrape
//!   interval, so a scraper keeps its connection from one scrape to the next, and the
//!   header deadline only starts with the next request's first byte. (A head pipelined
//!   behind a request in progress was read before its turn; it gets the keep-alive
//!   deadline instead, and stays evictable.)
//!
//! Under a flood, a kept-alive scraper may find its idle connection evicted between
//! scrapes; it then reconnects, and the new connection gets in at once (Prometheus's Go
//! client retries a request that fails on a reused idle connection). The kernel's accept
//! queue is raised to [`BACKLOG`] so that bursts of connects are not dropped (and retried a
//! second later) while the accept loop catches up.
//!
//! Each connection is a task that runs hyper's HTTP/1 connection beside its deadline and
//! an eviction signal, and drops the socket when either fires. Hyper's own
//! `header_read_timeout` is not used: it starts when hyper begins waiting for a head, so it
//! would also cut the keep-alive wait between scrapes. Memory per connection is bounded by
//! hyper's buffer limit ([`MAX_BUF`]). Everything here runs on the HTTP thread's
//! single-threaded runtime; the table's mutex is never contended and is taken per
//! connection and per request, never per byte.

use super::budget::{Class, Key, Refused, Table};
use crate::telemetry::ConnStats;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Connections open at once (idle or serving); a new one beyond it closes the oldest idle.
pub const MAX_CONNECTIONS: usize = 256;

/// `/api/*` requests (and every path but `/metrics` and `/healthz`) in progress at once.
pub const MAX_API_REQUESTS: usize = 64;

/// `/metrics` and `/healthz` requests in progress at once: the reserved budget. These
/// answers take milliseconds, so a handful is plenty; 16 leaves room for several scrapers
/// and probes whose sockets drain slowly.
pub const MAX_PROBE_REQUESTS: usize = 16;

/// A request head must be complete this long after the connection was accepted, or after
/// the first byte of a keep-alive request. Real clients send a head in one segment;
/// five seconds covers a lossy link's retransmissions.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A kept-alive connection may wait this long for its next request. Longer than any
/// Prometheus scrape interval in use (15 to 60 s), so keep-alive scrapes are not cut; idle
/// connections cost a table slot only until someone needs it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// `/metrics` or `/healthz`: from the complete head to the last response byte. A scrape
/// takes milliseconds; this only bounds a client that does not read its answer.
pub const PROBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Any other request, head to last byte: a 100 MB slice over a 1 MB/s link fits.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest buffer hyper keeps per connection (request head included): 64 KiB, where
/// hyper's default is about 400 KiB. A request head of ours is a few hundred bytes.
pub const MAX_BUF: usize = 64 * 1024;

/// The kernel's accept queue. A flood of connects outpaces the accept loop in bursts; with
/// std's 128 the kernel then drops SYNs and every client, the scrape included, waits a
/// second for its retransmission (measured: 10 of 2000 back-to-back connects). Capped by
/// `net.core.somaxconn` (4096 on current kernels).
pub const BACKLOG: u32 = 1024;

/// Back-off after a failed accept (EMFILE and friends), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection budget and deadlines ([`Limits::default`] is the constants above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once. Default [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Requests other than the scrape and probe in progress. Default [`MAX_API_REQUESTS`].
    pub max_api_requests: usize,
    /// `/metrics` and `/healthz` in progress. Default [`MAX_PROBE_REQUESTS`].
    pub max_probe_requests: usize,
    /// Accept (or first byte of a keep-alive request) to complete head. Default
    /// [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// End of a response to the next request's first byte. Default [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Head to last response byte, `/metrics` and `/healthz`. Default
    /// [`PROBE_REQUEST_TIMEOUT`].
    pub probe_request_timeout: Duration,
    /// Head to last response byte, other requests. Default [`API_REQUEST_TIMEOUT`].
    pub api_request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            max_api_requests: MAX_API_REQUESTS,
            max_probe_requests: MAX_PROBE_REQUESTS,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            probe_request_timeout: PROBE_REQUEST_TIMEOUT,
            api_request_timeout: API_REQUEST_TIMEOUT,
        }
    }
}

impl Limits {
    fn request_timeout(&self, class: Class) -> Duration {
        match class {
            Class::Probe => self.probe_request_timeout,
            Class::Api => self.api_request_timeout,
        }
    }
}

/// Which deadline closed a connection (the `phase` label of
/// `outflow_http_connections_timed_out_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The request head was not complete in time (slowloris, or a silent new connection).
    Header,
    /// No next request on a kept-alive connection.
    Idle,
    /// A request (its response) took longer than its class's budget.
    Request,
}

impl Phase {
    /// Every phase, in label order.
    pub const ALL: [Phase; 3] = [Phase::Header, Phase::Idle, Phase::Request];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Header => "header",
            Phase::Idle => "idle",
            Phase::Request => "request",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl ConnStats {
    /// Connections closed by `phase`'s deadline.
    pub fn timed_out(&self, phase: Phase) -> u64 {
        self.timed_out[phase.index()].load(Ordering::Relaxed)
    }

    /// Requests of `class` refused with 503.
    pub fn rejected(&self, class: Class) -> u64 {
        self.rejected[class.index()].load(Ordering::Relaxed)
    }

    fn reject(&self, class: Class) {
        self.rejected[class.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a connection is; its deadline belongs to the phase.
const WAIT_HEAD: u8 = 0; // a head expected or arriving: header deadline
const KEEP_ALIVE: u8 = 1; // between requests, no byte yet: idle deadline
const BUSY: u8 = 2; // request in progress: request deadline
const EVICTED: u8 = 3; // removed from the table: close now

/// What a connection's task, its socket wrapper and its request guard share.
struct Shared {
    /// Server start, the origin of `deadline_ns`.
    epoch: Instant,
    phase: AtomicU8,
    deadline_ns: AtomicU64,
    /// Wakes the task when the phase (and so the deadline) changes or it is evicted.
    wake: Notify,
}

impl Shared {
    fn set(&self, phase: u8, deadline: Instant) {
        let ns = deadline.saturating_duration_since(self.epoch).as_nanos();
        self.deadline_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn deadline(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.deadline_ns.load(Ordering::Relaxed))
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }
}

/// The server-wide state the connections share.
struct Server {
    limits: Limits,
    table: Mutex<Table<Arc<Shared>>>,
    stats: Arc<ConnStats>,
}

impl Server {
    /// The table, even if a panic poisoned its lock (its data stays consistent: every
    /// operation completes before it returns).
    fn table(&self) -> std::sync::MutexGuard<'_, Table<Arc<Shared>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_open(&self, table: &Table<Arc<Shared>>) {
        self.stats
            .open
            .store(table.open() as u64, Ordering::Relaxed);
    }

    fn evict(&self, victim: &Shared) {
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        victim.phase.store(EVICTED, Ordering::Relaxed);
        victim.wake.notify_one();
    }
}

/// Serves `router` on `listener` within `limits` until `stop` resolves, then lets requests
/// in progress finish (connections between requests are closed at once) and returns when
/// every connection is gone. The caller bounds that wait (see `SHUTDOWN_GRACE`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    stop: impl Future<Output = ()>,
) {
    let epoch = Instant::now();
    let server = Arc::new(Server {
        table: Mutex::new(Table::new(
            limits.max_connections,
            limits.max_probe_requests,
            limits.max_api_requests,
        )),
        limits,
        stats,
    });
    let service = TowerToHyperService::new(router);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Each connection task holds a receiver; `closed()` resolves when the last one ends.
    let (alive_tx, alive_rx) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = stop.as_mut() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((io, _addr)) => {
                let _ = io.set_nodelay(true);
                server.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let shared = Arc::new(Shared {
                    epoch,
                    phase: AtomicU8::new(WAIT_HEAD),
                    deadline_ns: AtomicU64::new(0),
                    wake: Notify::new(),
                });
                shared.set(WAIT_HEAD, now + limits.header_timeout);
                let admitted = {
                    let mut table = server.table();
                    let r = table.admit(Arc::clone(&shared));
                    server.publish_open(&table);
                    r
                };
                let key = match admitted {
                    Ok((key, evicted)) => {
                        if let Some(victim) = evicted {
                            server.evict(&victim);
                        }
                        key
                    }
                    Err(_) => {
                        // No idle connection to evict (the budgets rule it out): close the
                        // new one rather than wait.
                        server.stats.evicted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                tokio::spawn(connection(
                    Arc::clone(&server),
                    io,
                    key,
                    shared,
                    service.clone(),
                    shutdown_rx.clone(),
                    alive_rx.clone(),
                ));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR)) => {
                // One client gave up before we accepted it: nothing to wait for (a flood
                // of these must not pause accept).
            }
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    // Out of descriptors: the oldest idle connection gives its back.
                    let victim = {
                        let mut table = server.table();
                        let v = table.evict_oldest_idle();
                        server.publish_open(&table);
                        v
                    };
                    if let Some(v) = victim {
                        server.evict(&v);
                    }
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // Refuse new connections, end the idle ones, let requests in progress finish.
    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(alive_rx);
    alive_tx.closed().await;
}

/// One connection's task: hyper's HTTP/1 connection, raced against the deadline of the
/// current phase, eviction and shutdown.
async fn connection(
    server: Arc<Server>,
    io: TcpStream,
    key: Key,
    shared: Arc<Shared>,
    service: TowerToHyperService<Router>,
    mut shutdown: watch::Receiver<bool>,
    _alive: watch::Receiver<()>,
) {
    let service = Admission {
        server: Arc::clone(&server),
        key,
        shared: Arc::clone(&shared),
        inner: service,
    };
    let io = Conn {
        io,
        shared: Arc::clone(&shared),
        header_timeout: server.limits.header_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // Our own header deadline (see the module documentation).
        .header_read_timeout(None)
        .max_buf_size(MAX_BUF);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut deadline = pin!(tokio::time::sleep_until(shared.deadline()));
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            () = shared.wake.notified() => {
                if shared.phase() == EVICTED {
                    break;
                }
                deadline.as_mut().reset(shared.deadline());
            }
            () = deadline.as_mut() => {
                let due = shared.deadline();
                if Instant::now() < due {
                    // The phase moved on since this sleep was set.
                    deadline.as_mut().reset(due);
                    continue;
                }
                let phase = match shared.phase() {
                    WAIT_HEAD => Phase::Header,
                    KEEP_ALIVE => Phase::Idle,
                    BUSY => Phase::Request,
                    _ => break,
                };
                server.stats.timed_out[phase.index()].fetch_add(1, Ordering::Relaxed);
                break;
            }
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("HTTP connection: {e}");
                }
                break;
            }
            _ = shutdown.changed(), if !draining => {
                if shared.phase() != BUSY {
                    break;
                }
                // Finish the response, then close.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
    // Before `conn` (and a request guard inside it) is dropped; the guard's own `end` then
    // finds the key gone and does nothing.
    let mut table = server.table();
    table.remove(key);
    server.publish_open(&table);
}

/// The hyper service of one connection: takes the request's place in its class's budget
/// (or answers 503), moves the connection's deadline to the request's, and hands the
/// request to the router. The place is given back when the response body is finished or
/// dropped.
#[derive(Clone)]
struct Admission {
    server: Arc<Server>,
    key: Key,
    shared: Arc<Shared>,
    inner: TowerToHyperService<Router>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Service<Request<Incoming>> for Admission {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> BoxFuture {
        let class = Class::of(req.uri().path());
        let started = self.server.table().start(self.key, class);
        if let Err(why) = started {
            if why == Refused::Full {
                self.server.stats.reject(class);
            }
            return Box::pin(std::future::ready(Ok(busy())));
        }
        let now = Instant::now();
        self.shared
            .set(BUSY, now + self.server.limits.request_timeout(class));
        let guard = InProgress {
            server: Arc::clone(&self.server),
            key: self.key,
            shared: Arc::clone(&self.shared),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(resp.map(|inner| {
                Body::new(Guarded {
                    inner,
                    _guard: guard,
                })
            }))
        })
    }
}

/// `503` with `Connection: close`: the class's budget is full (or the connection is being
/// evicted).
fn busy() -> Response<Body> {
    let mut r = super::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress; retry",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A request in progress; dropping it ends the request in the table and starts the
/// keep-alive wait.
struct InProgress {
    server: Arc<Server>,
    key: Key,
    shared: Arc<Shared>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.server.table().end(self.key);
        if self.shared.phase() == BUSY {
            self.shared
                .set(KEEP_ALIVE, Instant::now() + self.server.limits.idle_timeout);
        }
    }
}

/// A response body that holds its request's place until hyper has sent it all (or dropped
/// it: a HEAD request, a closed connection).
struct Guarded {
    inner: Body,
    _guard: InProgress,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An accepted socket that starts the header deadline when a keep-alive request's first
/// byte arrives. It never extends a deadline.
struct Conn {
    io: TcpStream,
    shared: Arc<Shared>,
    header_timeout: Duration,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before && self.shared.phase() == KEEP_ALIVE {
            self.shared
                .set(WAIT_HEAD, Instant::now() + self.header_timeout);
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
