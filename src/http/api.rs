//! `/healthz`, `/api/alerts`, `/api/incidents` and `/api/flows/top`.
//!
//! Query strings are parsed strictly: an unknown parameter or a bad value is a 400 with a
//! JSON error naming it, because a silently ignored typo (`detecter=`) would show an analyst
//! the wrong alerts.

use super::{authorize, ApiError, AppState};
use crate::detect::Detector;
use crate::telemetry::record::AlertRecord;
use crate::telemetry::{AlertQuery, IncidentQuery, TopBy, TopFlow};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most alerts one `/api/alerts` call returns.
pub const MAX_ALERTS: usize = 10_000;
/// Default `limit` of `/api/alerts` and `/api/flows/top`.
pub const DEFAULT_LIMIT: usize = 100;
/// How long `/api/flows/top` waits for the workers to answer.
const TOP_WAIT: Duration = Duration::from_secs(2);
/// Window over which /healthz decides whether drops are rising.
const DROP_WINDOW: Duration = Duration::from_secs(60);
/// Interval of the drop samples behind it.
const DROP_SAMPLE: Duration = Duration::from_secs(5);

fn json_ok(v: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Parses a query string into pairs, refusing parameters not in `allowed` and repeats.
fn params(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {k:?}; this endpoint takes: {}",
                allowed.join(", ")
            )));
        }
        if out.iter().any(|(x, _)| *x == k) {
            return Err(ApiError::bad_request(format!(
                "parameter {k:?} given twice"
            )));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

fn limit(p: &[(String, String)], max: usize) -> Result<usize, ApiError> {
    match get(p, "limit") {
        None => Ok(DEFAULT_LIMIT.min(max)),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit: {v:?} must be a whole number from 1 to {max}"
            ))),
        },
    }
}

/// `since=`: RFC 3339 (`2026-11-23T10:00:00Z`), Unix seconds (`1795000000.5`), or a
/// duration back from now (`15m`, `2h`).
fn parse_since(v: &str) -> Option<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return t
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
    }
    if let Ok(s) = v.parse::<f64>() {
        // Finite and before 2286: the conversion to ns cannot overflow.
        return (0.0..1e10).contains(&s).then_some((s * 1e9) as u64);
    }
    let d = humantime::parse_duration(v).ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(now.saturating_sub(d).as_nanos()).ok()
}

/// Parses the query string of `GET /api/alerts` (`since`, `detector`, `src`, `limit`).
/// Every refusal is a 400 naming the parameter; the limit is within 1..=[`MAX_ALERTS`].
pub fn alerts_query(raw: Option<&str>) -> Result<AlertQuery, ApiError> {
    let p = params(raw, &["since", "detector", "src", "limit"])?;
    let mut q = AlertQuery {
        limit: limit(&p, MAX_ALERTS)?,
        ..AlertQuery::default()
    };
    if let Some(v) = get(&p, "since") {
        q.since_ns = Some(parse_since(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since: {v:?} is not an RFC 3339 time, Unix seconds or a duration such as 15m"
            ))
        })?);
    }
    if let Some(v) = get(&p, "detector") {
        let d = Detector::ALL
            .iter()
            .find(|d| d.name() == v)
            .ok_or_else(|| {
                let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
                ApiError::bad_request(format!(
                    "detector: unknown {v:?}; one of {}",
                    names.join(", ")
                ))
            })?;
        q.detector = Some(d.name());
    }
    if let Some(v) = get(&p, "src") {
        q.src = Some(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("src: {v:?} is not an IP address")))?,
        );
    }
    Ok(q)
}

/// Parses the query string of `GET /api/incidents` (`since`, `src`, `state` = open or
/// closed, `severity` = the lowest severity wanted, `limit`). Every refusal is a 400
/// naming the parameter.
pub fn incidents_query(raw: Option<&str>) -> Result<IncidentQuery, ApiError> {
    use crate::correlate::incident::Severity;
    let p = params(raw, &["since", "src", "state", "severity", "limit"])?;
    let mut q = IncidentQuery {
        limit: limit(&p, MAX_ALERTS)?,
        ..IncidentQuery::default()
    };
    if let Some(v) = get(&p, "since") {
        q.since_ns = Some(parse_since(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since: {v:?} is not an RFC 3339 time, Unix seconds or a duration such as 15m"
            ))
        })?);
    }
    if let Some(v) = get(&p, "src") {
        q.src = Some(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("src: {v:?} is not an IP address")))?,
        );
    }
    if let Some(v) = get(&p, "state") {
        q.open = Some(match v {
            "open" => true,
            "closed" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "state: unknown {v:?}; open or closed"
                )))
            }
        });
    }
    if let Some(v) = get(&p, "severity") {
        q.min_severity = Some(
            Severity::ALL
                .into_iter()
                .find(|s| s.name() == v)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "severity: unknown {v:?}; one of low, medium, high, critical"
                    ))
                })?,
        );
    }
    Ok(q)
}

/// `GET /api/incidents?since=&src=&state=&severity=&limit=`: recent incidents, each as its
/// latest announcement, most recently updated first.
pub(super) async fn incidents(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let q = incidents_query(raw.as_deref())?;
    let store = &state.telemetry.incidents;
    let found = store.query(&q);
    Ok(spliced("incidents", &found, store.len()))
}

/// A JSON object `{"count":N,"held":H,"<key>":[...]}` spliced from records that are already
/// JSON, rather than parsed and encoded again.
fn spliced(key: &str, found: &[Arc<AlertRecord>], held: usize) -> Response {
    let mut body =
        String::with_capacity(64 + found.iter().map(|a| a.json.len() + 1).sum::<usize>());
    body.push_str(&format!(
        "{{\"count\":{},\"held\":{held},\"{key}\":[",
        found.len()
    ));
    for (i, a) in found.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&a.json);
    }
    body.push_str("]}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET /api/alerts?since=&detector=&src=&limit=`: recent alerts, newest first.
pub(super) async fn alerts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let q = alerts_query(raw.as_deref())?;
    let found = state.telemetry.store.query(&q);
    Ok(spliced("alerts", &found, state.telemetry.store.len()))
}

/// One `/api/flows/top` row; `seed`: the Community ID's.
fn top_json(f: &TopFlow, seed: u16) -> serde_json::Value {
    let ts = crate::time::rfc3339;
    json!({
        "flow_id": f.flow_id,
        "proto": crate::decode::proto_name(f.proto),
        "src_ip": f.src.to_string(),
        "src_port": f.sport,
        "dst_ip": f.dst.to_string(),
        "dst_port": f.dport,
        "community_id": f.tuple.community_id(seed).as_str(),
        "vlan": match f.vlan { [0, 0] => json!(null), [a, 0] => json!([a]), [a, b] => json!([a, b]) },
        "state": f.state,
        "server_name": f.server_name,
        "alpn": f.alpn,
        "ja4": f.ja4,
        "ja3": f.ja3,
        "http_host": f.http_host,
        "http_method": f.http_method,
        "first_seen": ts(f.first_ns),
        "last_seen": ts(f.last_ns),
        "duration": f.last_ns.saturating_sub(f.first_ns) as f64 / 1e9,
        "out_pkts": f.out.pkts,
        "out_ip_bytes": f.out.ip_bytes,
        "out_payload_bytes": f.out.payload_bytes,
        "in_pkts": f.inbound.pkts,
        "in_ip_bytes": f.inbound.ip_bytes,
        "in_payload_bytes": f.inbound.payload_bytes,
    })
}

/// Parses the query string of `GET /api/flows/top` (`by`, `limit`): the ranking and a
/// limit within 1..=[`crate::telemetry::TOP_MAX`].
pub fn top_query(raw: Option<&str>) -> Result<(TopBy, usize), ApiError> {
    let p = params(raw, &["by", "limit"])?;
    let n = limit(&p, crate::telemetry::TOP_MAX)?;
    let by = match get(&p, "by") {
        None => TopBy::OutBytes,
        Some(v) => TopBy::parse(v).ok_or_else(|| {
            let names: Vec<&str> = TopBy::ALL.iter().map(|b| b.name()).collect();
            ApiError::bad_request(format!("by: unknown {v:?}; one of {}", names.join(", ")))
        })?,
    };
    Ok((by, n))
}

/// `GET /api/flows/top?by=out_payload_bytes&limit=`: the active outbound flows ranking highest, with
/// their live counters. Each worker ranks its own table when asked (see
/// [`crate::telemetry`]); workers that do not answer within 2 s are reported, not waited for.
pub(super) async fn top_flows(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (by, n) = top_query(raw.as_deref())?;
    let mut cache = state.top_cache.lock().await;
    let fresh = cache
        .as_ref()
        .is_some_and(|c| c.by == by && c.at.elapsed() < TOP_CACHE);
    if !fresh {
        *cache = Some(ask_top(&state, by).await);
    }
    let Some(c) = cache.as_ref() else {
        return Err(ApiError::internal("no answer"));
    };
    let flows = &c.flows[..c.flows.len().min(n)];
    let seed = state.telemetry.community_id_seed();
    Ok(json_ok(&json!({
        "by": by.name(),
        "workers": state.telemetry.workers.len(),
        "workers_answered": c.answered,
        "workers_not_answered": c.not_answered,
        "count": flows.len(),
        "flows": flows.iter().map(|f| top_json(f, seed)).collect::<Vec<_>>(),
    })))
}

/// How long a top-flows answer is reused.
const TOP_CACHE: Duration = Duration::from_secs(1);

/// The last top-flows answer.
pub struct TopCache {
    at: Instant,
    by: TopBy,
    flows: Vec<TopFlow>,
    answered: usize,
    not_answered: usize,
}

/// Raises a request on every live worker (`ask`), then polls each until `take` accepts its
/// answer (returns true), the worker ends, or [`TOP_WAIT`] passes. Returns (answered, not
/// answered).
async fn ask_workers(
    t: &crate::telemetry::Telemetry,
    ask: impl Fn(&crate::telemetry::WorkerShared, u64),
    mut take: impl FnMut(&crate::telemetry::WorkerShared, u64) -> bool,
) -> (usize, usize) {
    let generation = t.top_generation.fetch_add(1, Ordering::Relaxed) + 1;
    let mut pending: Vec<&crate::telemetry::WorkerShared> = t
        .workers
        .iter()
        .filter(|w| w.alive.load(Ordering::Relaxed))
        .map(|w| &**w)
        .collect();
    for w in &pending {
        ask(w, generation);
    }
    let deadline = Instant::now() + TOP_WAIT;
    let mut answered = 0usize;
    loop {
        pending.retain(|w| {
            if take(w, generation) {
                answered += 1;
                false
            } else {
                // A worker that ended meanwhile has nothing left to show.
                w.alive.load(Ordering::Relaxed)
            }
        });
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (answered, pending.len())
}

/// Asks every live worker for its best flows and merges them.
async fn ask_top(state: &AppState, by: TopBy) -> TopCache {
    let mut flows: Vec<TopFlow> = Vec::new();
    let (answered, not_answered) = ask_workers(
        &state.telemetry,
        |w, generation| {
            w.top.request(generation, by);
        },
        |w, generation| {
            let Ok(a) = w.top.answer.lock() else {
                return false;
            };
            let ok = a.generation >= generation && a.by == Some(by);
            if ok {
                flows.extend(a.flows.iter().cloned());
            }
            ok
        },
    )
    .await;
    flows.sort_by(|a, b| b.rank(by).cmp(&a.rank(by)).then(a.flow_id.cmp(&b.flow_id)));
    flows.truncate(crate::telemetry::TOP_MAX);
    TopCache {
        at: Instant::now(),
        by,
        flows,
        answered,
        not_answered,
    }
}

/// Samples the total drops every 5 s for /healthz's "drops rising".
pub(super) async fn sample_drops(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(DROP_SAMPLE);
    loop {
        tick.tick().await;
        let d = state.telemetry.drops();
        if let Ok(mut h) = state.drop_history.lock() {
            h.push_back((Instant::now(), d));
            while h
                .front()
                .is_some_and(|(t, _)| t.elapsed() > DROP_WINDOW + DROP_SAMPLE)
            {
                h.pop_front();
            }
        }
    }
}

/// `GET /healthz`: 200 while the sensor works (capturing with every worker alive, or a
/// replay that finished cleanly), 503 otherwise; the body says why.
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let t = &state.telemetry;
    let capturing = t.is_capturing();
    let alive = t.workers_alive();
    let drops = t.drops();
    let oldest = state
        .drop_history
        .lock()
        .ok()
        .and_then(|h| h.front().copied());
    let rising = oldest.is_some_and(|(_, d)| drops > d);
    let snaps = t.snapshots();
    let packets: u64 = snaps.iter().map(|s| s.flows.packets).sum();
    let (status, code) = if t.mode == "live" && (!capturing || alive < t.workers.len()) {
        ("down", StatusCode::SERVICE_UNAVAILABLE)
    } else if t.mode == "replay" && !capturing {
        ("finished", StatusCode::OK)
    } else if rising {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    let uptime = t.started.elapsed().map_or(0.0, |d| d.as_secs_f64());
    let body = json!({
        "status": status,
        "mode": t.mode,
        "capturing": capturing,
        "workers": t.workers.len(),
        "workers_alive": alive,
        "packets": packets,
        "drops": drops,
        "drops_rising": rising,
        "alerts_held": t.store.len(),
        "uptime_seconds": (uptime * 1000.0).round() / 1000.0,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn slice_dir(state: &AppState) -> Result<std::path::PathBuf, ApiError> {
    state
        .telemetry
        .slice_dir
        .get()
        .cloned()
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: "pcap slices are off (slice.dir is empty)".into(),
        })
}

/// `GET /api/slices`: every slice in `slice.dir`, newest first (its sidecar, or
/// `"complete": false` while it is still recording).
pub(super) async fn slices(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    params(raw.as_deref(), &[])?;
    let dir = slice_dir(&state)?;
    let listed = tokio::task::spawn_blocking(move || crate::slice::writer::list(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("cannot list slice.dir: {e}")))?;
    Ok(json_ok(&json!({ "count": listed.len(), "slices": listed })))
}

/// Splits the `{name}` of `GET /api/slices/{name}` into (slice id, extension, content
/// type). Only `<id>.pcap` and `<id>.json` with a [`crate::slice::valid_id`] id pass, so
/// `slice.dir`/`<id>.<ext>` never leaves `slice.dir`.
pub fn slice_name(name: &str) -> Result<(&str, &'static str, &'static str), ApiError> {
    let (id, ext, ctype) = if let Some(id) = name.strip_suffix(".pcap") {
        (id, "pcap", "application/vnd.tcpdump.pcap")
    } else if let Some(id) = name.strip_suffix(".json") {
        (id, "json", "application/json")
    } else {
        return Err(ApiError::bad_request(
            "ask for <slice_id>.pcap or <slice_id>.json",
        ));
    };
    if !crate::slice::valid_id(id) {
        return Err(ApiError::bad_request(
            "invalid slice id: 1 to 128 characters of A-Z a-z 0-9 . _ -, not starting with a dot",
        ));
    }
    Ok((id, ext, ctype))
}

/// `GET /api/slices/{id}.pcap` (and `{id}.json`, the sidecar). The id is validated
/// (`[A-Za-z0-9._-]`, no leading dot) before any path is built, so no request can name a
/// file outside `slice.dir`.
pub(super) async fn slice_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (id, ext, ctype) = slice_name(&name)?;
    let path = slice_dir(&state)?.join(format!("{id}.{ext}"));
    // Streamed, not read into memory: a slice can be 100 MB and clients many. The length
    // is fixed at open: a slice still recording is served as far as it was written.
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("no slice {id:?}"),
            },
            _ => ApiError::internal(format!("cannot read the slice: {e}")),
        })?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the slice: {e}")))?;
    if !meta.is_file() {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no slice {id:?}"),
        });
    }
    let len = meta.len();
    use tokio::io::AsyncReadExt;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.{ext}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

fn parse_proto(v: &str) -> Option<u8> {
    match v {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmp6" | "ipv6-icmp" => Some(58),
        n => n.parse().ok(),
    }
}

/// Parses the query string of `GET /api/pcap`: a flow id, or addresses (with optional
/// ports, protocol and time range). The filter's byte budget is left for the caller.
pub fn pcap_query(raw: Option<&str>) -> Result<crate::telemetry::PcapFilter, ApiError> {
    let p = params(
        raw,
        &[
            "flow", "src", "dst", "sport", "dport", "proto", "since", "until",
        ],
    )?;
    let mut f = crate::telemetry::PcapFilter::default();
    let bad =
        |k: &str, v: &str, what: &str| ApiError::bad_request(format!("{k}: {v:?} is not {what}"));
    if let Some(v) = get(&p, "flow") {
        f.flow = Some(v.parse().map_err(|_| bad("flow", v, "a flow id"))?);
    }
    if let Some(v) = get(&p, "src") {
        f.src = Some(v.parse().map_err(|_| bad("src", v, "an IP address"))?);
    }
    if let Some(v) = get(&p, "dst") {
        f.dst = Some(v.parse().map_err(|_| bad("dst", v, "an IP address"))?);
    }
    if let Some(v) = get(&p, "sport") {
        f.sport = Some(v.parse().map_err(|_| bad("sport", v, "a port"))?);
    }
    if let Some(v) = get(&p, "dport") {
        f.dport = Some(v.parse().map_err(|_| bad("dport", v, "a port"))?);
    }
    if let Some(v) = get(&p, "proto") {
        f.proto =
            Some(parse_proto(v).ok_or_else(|| bad("proto", v, "tcp, udp, icmp or a number"))?);
    }
    if let Some(v) = get(&p, "since") {
        f.since_ns = Some(parse_since(v).ok_or_else(|| bad("since", v, "a time"))?);
    }
    if let Some(v) = get(&p, "until") {
        f.until_ns = Some(parse_since(v).ok_or_else(|| bad("until", v, "a time"))?);
    }
    if let (Some(a), Some(b)) = (f.since_ns, f.until_ns) {
        if a > b {
            return Err(ApiError::bad_request("since: is after until"));
        }
    }
    if f.flow.is_none() && f.src.is_none() && f.dst.is_none() {
        return Err(ApiError::bad_request(
            "give flow=<flow id>, or src= and/or dst= (with optional sport, dport, proto, since, until)",
        ));
    }
    Ok(f)
}

/// `GET /api/pcap?flow=<id>` or `?src=&dst=&sport=&dport=&proto=&since=&until=`: the
/// matching packets still held in the workers' rings, any flow, flagged or not, as one pcap
/// (nanosecond timestamps, oldest first). Address and port filters match both directions.
pub(super) async fn pcap(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let mut f = pcap_query(raw.as_deref())?;
    // One ring query at a time reaches the workers.
    let _one_at_a_time = state.pcap_lock.lock().await;
    f.max_bytes = crate::telemetry::PCAP_MAX / state.telemetry.workers.len().max(1);
    let mut records: Vec<u8> = Vec::new();
    let (_, not_answered) = ask_workers(
        &state.telemetry,
        |w, generation| w.pcap.request(generation, f.clone()),
        |w, generation| {
            let Ok(mut a) = w.pcap.answer.lock() else {
                return false;
            };
            let ok = a.0 >= generation;
            if ok {
                records.extend_from_slice(&std::mem::take(&mut a.1));
            }
            ok
        },
    )
    .await;
    // One flow lives on one worker; a conversation filter may span several: merge by time
    // (each worker's answer is already in time order; the sort is stable).
    let cut = records.len() + (1 << 20) >= f.max_bytes * state.telemetry.workers.len().max(1);
    let mut list: Vec<crate::slice::Record<'_>> = crate::slice::records(&records).collect();
    list.sort_by_key(|r| r.ts_ns);
    let linktype = list.first().map_or(1, |r| r.linktype);
    let (body, packets) = crate::slice::pcap_file(&list, linktype, 262_144);
    drop(list);
    drop(records);
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"outflow.pcap\"",
            ),
        ],
        body,
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&packets.to_string()) {
        r.headers_mut().insert("x-outflow-packets", v);
    }
    if cut {
        r.headers_mut().insert(
            "x-outflow-truncated",
            header::HeaderValue::from_static("the answer reached its size limit"),
        );
    }
    if not_answered > 0 {
        r.headers_mut().insert(
            "x-outflow-partial",
            header::HeaderValue::from_static("some workers did not answer"),
        );
    }
    Ok(r)
}
