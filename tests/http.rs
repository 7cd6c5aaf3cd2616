//! The HTTP server and the alert sinks, end to end through the `outflow` binary: /metrics
//! scraped with a real client and parsed with a Prometheus text parser, compared with an
//! in-process replay of the same capture; /api/alerts and /api/flows/top; the 400/401/404
//! paths; syslog received on a loopback UDP socket and checked field by field.

mod common;

use common::Sensor;
use outflow::config::Config;
use outflow::flow::{EndReason, Side};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Scrapes /metrics: (name, sorted labels) → value; summaries as name{quantile} plus
/// `_sum`/`_count`.
fn scrape(s: &Sensor) -> HashMap<String, f64> {
    let (status, ctype, body) = s.get_with("/metrics", None);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let body = String::from_utf8(body).expect("UTF-8");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    let mut out = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let l = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                out.insert(format!("{}{{{l}}}", sample.metric), v);
            }
            prometheus_parse::Value::Summary(qs) => {
                for q in qs {
                    out.insert(
                        format!("{}{{quantile={}}}", sample.metric, q.quantile),
                        q.count,
                    );
                }
            }
            prometheus_parse::Value::Histogram(_) => panic!("no histograms expected"),
        }
    }
    out
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("metric {key} missing; have {:?}", m.keys()))
}

#[test]
fn metrics_match_the_replay_and_the_api_serves_its_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let alerts_file = dir.path().join("alerts.json");
    let s = Sensor::start(&[
        "replay",
        "--workers",
        "2",
        "--http",
        "127.0.0.1:0",
        "--serve",
        "--alerts-out",
        alerts_file.to_str().unwrap(),
        demo().to_str().unwrap(),
    ]);
    s.wait_finished();
    let m = scrape(&s);

    // The same capture in-process: every counter must agree exactly.
    let r = common::replay(&Config::default(), 2, &[demo()]);
    let sum = &r.summary;
    let per_worker: f64 = (0..2)
        .map(|w| metric(&m, &format!("outflow_packets_total{{worker={w}}}")))
        .sum();
    assert_eq!(per_worker as u64, sum.flows.packets);
    let bytes: f64 = (0..2)
        .map(|w| metric(&m, &format!("outflow_bytes_total{{worker={w}}}")))
        .sum();
    assert_eq!(bytes as u64, sum.flows.wire_bytes);
    assert_eq!(
        metric(&m, "outflow_frames_total{}") as u64,
        sum.reader.frames
    );
    assert_eq!(sum.reader.frames, 20_633);
    for e in outflow::decode::DecodeError::ALL {
        assert_eq!(
            metric(
                &m,
                &format!("outflow_decode_failures_total{{reason={}}}", e.name())
            ) as u64,
            sum.decode_errors(e),
            "{}",
            e.name()
        );
    }
    for r in EndReason::ALL {
        assert_eq!(
            metric(
                &m,
                &format!("outflow_flows_ended_total{{reason={}}}", r.name())
            ) as u64,
            sum.records_by(r),
            "{}",
            r.name()
        );
    }
    let created: f64 = (0..2)
        .map(|w| metric(&m, &format!("outflow_flows_created_total{{worker={w}}}")))
        .sum();
    assert_eq!(created as u64, sum.flows.flows_created);
    for (i, d) in outflow::detect::Detector::ALL.iter().enumerate() {
        assert_eq!(
            metric(
                &m,
                &format!("outflow_alerts_total{{detector={}}}", d.name())
            ) as u64,
            sum.alerts_by_detector[i],
            "{}",
            d.name()
        );
    }
    assert_eq!(sum.alerts, 4);
    assert_eq!(
        metric(&m, "outflow_dns_messages_total{}") as u64,
        sum.flows.dns.messages
    );
    assert_eq!(
        metric(&m, "outflow_dns_malformed_total{}") as u64,
        sum.flows.dns.malformed
    );
    assert_eq!(metric(&m, "outflow_capturing{}"), 0.0);
    assert_eq!(metric(&m, "outflow_workers{}"), 2.0);
    assert_eq!(metric(&m, "outflow_workers_alive{}"), 0.0);
    // The file gets the incident's two lines (opened, closed).
    assert_eq!(metric(&m, "outflow_sink_alerts_total{sink=file}"), 2.0);
    for (sev, n) in [
        ("low", 0.0),
        ("medium", 1.0),
        ("high", 1.0),
        ("critical", 0.0),
    ] {
        assert_eq!(
            metric(&m, &format!("outflow_incidents_total{{severity={sev}}}")),
            n,
            "{sev}"
        );
    }
    for (u, n) in [("opened", 1.0), ("escalated", 0.0), ("closed", 1.0)] {
        assert_eq!(
            metric(&m, &format!("outflow_incident_updates_total{{update={u}}}")),
            n,
            "{u}"
        );
    }
    assert_eq!(metric(&m, "outflow_incidents_open{}"), 0.0);
    assert_eq!(metric(&m, "outflow_incidents_evicted_total{}"), 0.0);
    assert_eq!(metric(&m, "outflow_sink_failures_total{sink=file}"), 0.0);
    assert_eq!(metric(&m, "outflow_sink_up{sink=file}"), 1.0);
    assert_eq!(
        metric(&m, "outflow_table_capacity{table=flows}") as usize,
        2 * Config::default().flow.capacity_per_worker
    );
    assert_eq!(
        metric(&m, "outflow_table_capacity{table=dns_names}") as usize,
        Config::default().dns.name_map_capacity
    );
    assert_eq!(
        metric(&m, "outflow_table_capacity{table=fragments}") as usize,
        Config::default().flow.fragment_capacity.next_power_of_two()
    );
    assert_eq!(metric(&m, "outflow_table_capacity{table=dns_tcp}"), 256.0);
    assert_eq!(
        metric(&m, "outflow_table_capacity{table=ip_reassembly}") as usize,
        2 * outflow::defrag::SLOTS
    );
    assert_eq!(
        metric(&m, "outflow_table_capacity{table=fragments_held}") as usize,
        outflow::capture::frag::HELD_SLOTS
    );
    for (event, n) in sum.flows.defrag.named() {
        assert_eq!(
            metric(&m, &format!("outflow_ip_reassembly_total{{event={event}}}")) as u64,
            n,
            "{event}"
        );
    }
    assert_eq!(
        metric(&m, "outflow_table_evictions_total{table=fragments}") as u64,
        sum.reader.fragments.overwritten
    );
    // Every processed packet is in the processing-time summary; the one flow alert (the
    // large transfer) in the detection-latency summary.
    assert_eq!(
        metric(&m, "outflow_packet_processing_seconds_count{}") as u64,
        sum.flows.packets
    );
    assert_eq!(
        metric(&m, "outflow_detection_latency_seconds_count{}") as u64,
        1
    );
    let p50 = metric(&m, "outflow_packet_processing_seconds{quantile=0.5}");
    let p999 = metric(&m, "outflow_packet_processing_seconds{quantile=0.999}");
    assert!(p50 > 0.0 && p50 <= p999 && p999 < 1.0, "{p50} {p999}");
    // No label carries an address.
    let (_, body) = s.get("/metrics");
    assert!(!body.contains("10.0.0.5") && !body.contains("203.0.113"));
    // Exactly the documented families are exported (docs/metrics.md is the contract).
    let exported: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(exported, documented);

    // The alert file: the incident's lines. /api/incidents: the incident at its latest
    // line; /api/alerts: the four findings behind it, newest first.
    let file_lines: Vec<serde_json::Value> = std::fs::read_to_string(&alerts_file)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(file_lines.len(), 2);
    let (status, body) = s.get("/api/incidents");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["count"], 1);
    assert_eq!(v["incidents"][0], file_lines[1]);
    for (q, n) in [
        ("state=closed", 1),
        ("state=open", 0),
        ("severity=high", 1),
        ("severity=critical", 0),
        ("src=10.0.0.5", 1),
        ("src=10.0.0.6", 0),
    ] {
        let (status, body) = s.get(&format!("/api/incidents?{q}"));
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(json(&body)["count"], n, "{q}");
    }
    let (status, body) = s.get("/api/incidents?state=ajar");
    assert_eq!(status, 400);
    assert!(body.contains("state"), "{body}");
    let (status, body) = s.get("/api/alerts");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["count"], 4);
    let api: Vec<serde_json::Value> = v["alerts"].as_array().unwrap().clone();
    let ids: Vec<&str> = api
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    let mut in_incident: Vec<&str> = file_lines[1]["alert_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    in_incident.reverse();
    assert_eq!(ids, in_incident, "newest first, the incident's findings");
    let newest_first = api.clone();

    let count = |q: &str| {
        let (status, body) = s.get(&format!("/api/alerts?{q}"));
        assert_eq!(status, 200, "{q}: {body}");
        json(&body)["count"].as_u64().unwrap()
    };
    assert_eq!(count("detector=data_leak"), 1);
    assert_eq!(count("detector=asymmetric_upload"), 2);
    assert_eq!(count("detector=dns_tunnel"), 0);
    assert_eq!(count("src=10.0.0.5"), 4);
    assert_eq!(
        count("src=::ffff:10.0.0.5"),
        4,
        "an IPv4-mapped address is the same host"
    );
    assert_eq!(count("src=10.0.0.6"), 0);
    assert_eq!(count("limit=1"), 1);
    assert_eq!(count("since=2023-11-14T22:00:00Z"), 4);
    assert_eq!(count("since=2030-01-01T00:00:00Z"), 0);
    assert_eq!(count("since=1700000000"), 4);
    assert_eq!(count("since=1h"), 0, "replayed alerts are from 2023");
    let (_, body) = s.get("/api/alerts?limit=1");
    assert_eq!(json(&body)["alerts"][0], newest_first[0]);

    // Bad parameters: 400 with a JSON error naming the parameter.
    for (q, word) in [
        ("detector=nope", "detector"),
        ("src=10.0.0", "src"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("limit=10001", "limit"),
        ("since=yesterday-ish", "since"),
        ("sorce=10.0.0.5", "sorce"),
        ("limit=1&limit=2", "limit"),
    ] {
        let (status, body) = s.get(&format!("/api/alerts?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        let e = json(&body)["error"].as_str().unwrap().to_string();
        assert!(e.contains(word), "{q}: {e}");
    }
    for q in ["by=bytes", "limit=0", "limit=1001", "x=1"] {
        let (status, body) = s.get(&format!("/api/flows/top?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        assert!(json(&body)["error"].is_string());
    }
    for path in ["/api", "/api/alert", "/metrics/x", "/", "/api/flows"] {
        let (status, body) = s.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(json(&body)["error"].is_string());
    }
    // Only GET (and HEAD): other methods get a JSON 405.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("http://{}/api/alerts", s.addr))
        .send("x")
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(json(&r.body_mut().read_to_string().unwrap())["error"].is_string());
    let (status, body) = s.get("/healthz");
    assert_eq!(status, 200);
    let h = json(&body);
    assert_eq!(h["status"], "finished");
    assert_eq!(h["packets"], sum.flows.packets);
    assert_eq!(h["drops"], 0);
    assert_eq!(h["alerts_held"], 4);

    // The replay over, no flow is active.
    let (status, body) = s.get("/api/flows/top");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["count"], 0);
    assert!(s.stop().success());
}

#[test]
fn the_api_needs_the_token_when_one_is_set() {
    let token = "s3cret-token-for-tests";
    let s = Sensor::start_env(
        &[
            "replay",
            "--http",
            "127.0.0.1:0",
            "--serve",
            demo().to_str().unwrap(),
        ],
        &[("OUTFLOW_HTTP_TOKEN", token)],
    );
    s.wait_finished();
    for path in ["/api/alerts", "/api/flows/top", "/api/alerts?limit=x"] {
        let (status, _, body) = s.get_with(path, None);
        assert_eq!(status, 401, "{path}");
        assert!(json(&String::from_utf8_lossy(&body))["error"].is_string());
        let (status, _, _) = s.get_with(path, Some("s3cret-token-for-test"));
        assert_eq!(status, 401, "{path}: a prefix of the token");
        let (status, _, _) = s.get_with(path, Some("s3cret-token-for-tests-and-more"));
        assert_eq!(status, 401, "{path}: longer than the token");
    }
    let (status, _, body) = s.get_with("/api/alerts", Some(token));
    assert_eq!(status, 200);
    assert_eq!(json(&String::from_utf8_lossy(&body))["count"], 4);
    // A bad parameter is still a 400 once authorised.
    let (status, _, _) = s.get_with("/api/alerts?limit=x", Some(token));
    assert_eq!(status, 400);
    // Metrics and health stay open for Prometheus and probes.
    assert_eq!(s.get("/metrics").0, 200);
    assert_eq!(s.get("/healthz").0, 200);
    assert!(s.stop().success());
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["replay", "--http", "0.0.0.0:0", demo().to_str().unwrap()])
        .env_remove("OUTFLOW_HTTP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.token") && err.contains("OUTFLOW_HTTP_TOKEN"),
        "{err}"
    );
    // A port already taken is named too.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["replay", "--http", &addr, demo().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("cannot listen"),
        "{err}"
    );
}

/// `outflow replay -` with `config` (in `dir`), one worker and the API on, serving on after
/// its input: fed the capture `head` + `recs` on standard input, which stays open, so the
/// flows the records leave open stay open.
fn serve_from_stdin(dir: &Path, config: &str, head: &[u8], recs: &[Vec<u8>]) -> Sensor {
    let cfg = dir.join("outflow.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut s = Sensor::start(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--workers",
        "1",
        "--http",
        "127.0.0.1:0",
        "--serve",
        "-",
    ]);
    let w = s.stdin();
    w.write_all(head).unwrap();
    for r in recs {
        w.write_all(r).unwrap();
    }
    w.flush().unwrap();
    s
}

#[test]
fn top_flows_shows_an_upload_while_it_is_still_open() {
    // The demo capture arrives on standard input, like `tcpdump -w - | outflow replay -`.
    // With one packet per batch, the worker has processed every packet but the last
    // written (a batch is handed over when the next packet arrives).
    let bytes = std::fs::read(demo()).unwrap();
    let (head, recs) = common::pcap_records(&bytes);
    assert_eq!(recs.len(), 20_633);
    let n = 19_000;
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_from_stdin(
        dir.path(),
        "[capture]\nbatch_packets = 1\nbatches_per_worker = 4\n",
        &head,
        &recs[..=n],
    );

    // Expected: the outbound flows still open after the first n packets, from a replay of
    // exactly those packets (their end-of-input records).
    let r = common::replay_prefix(dir.path(), &head, &recs, n);
    let mut open: Vec<_> = r
        .flows
        .iter()
        .filter(|f| f.reason == EndReason::EndOfInput && f.outbound.is_some())
        .collect();
    let out_of = |f: &outflow::flow::FlowRecord| match f.outbound {
        Some(Side::Orig) => f.orig,
        _ => f.resp,
    };
    // Ranked by outbound payload bytes (`out_payload_bytes`), ties by flow id.
    open.sort_by_key(|f| (std::cmp::Reverse(out_of(f).payload_bytes), f.flow_id));
    assert!(!open.is_empty());
    let upload = open[0];
    assert!(out_of(upload).ip_bytes > 50_000_000, "{upload:?}");

    let start = std::time::Instant::now();
    let mut round = 0u32;
    let top = loop {
        // `out_bytes`, the name before byte kinds were spelled out, still ranks the same.
        let by = if round % 2 == 0 {
            "out_payload_bytes"
        } else {
            "out_bytes"
        };
        round += 1;
        let (status, body) = s.get(&format!("/api/flows/top?by={by}&limit=10"));
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        let seen = v["flows"][0]["out_pkts"].as_u64().unwrap_or(0);
        if seen == out_of(upload).pkts {
            break v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the worker never caught up: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(top["workers_answered"], 1);
    assert_eq!(top["count"].as_u64().unwrap() as usize, open.len().min(10));
    let f = &top["flows"][0];
    let out = out_of(upload);
    let inb = match upload.outbound {
        Some(Side::Orig) => upload.resp,
        _ => upload.orig,
    };
    assert_eq!(f["flow_id"], upload.flow_id);
    assert_eq!(f["src_ip"], "10.0.0.5");
    assert_eq!(f["dst_ip"], "203.0.113.50");
    assert_eq!(f["out_pkts"], out.pkts);
    assert_eq!(f["out_ip_bytes"], out.ip_bytes);
    assert_eq!(f["out_payload_bytes"], out.payload_bytes);
    assert_eq!(f["in_pkts"], inb.pkts);
    assert_eq!(f["in_ip_bytes"], inb.ip_bytes);
    assert_eq!(f["state"], "established");
    // The Community ID its flow record and its alert carry (default seed 0).
    let upload_id = outflow::flow::FlowTuple::of_record(upload).community_id(0);
    assert_eq!(f["community_id"], upload_id.as_str());
    // Every listed flow agrees with its end-of-input record, in descending order.
    let listed = top["flows"].as_array().unwrap();
    for (l, want) in listed.iter().zip(&open) {
        assert_eq!(l["flow_id"], want.flow_id);
        assert_eq!(l["out_ip_bytes"], out_of(want).ip_bytes);
        assert_eq!(l["out_payload_bytes"], out_of(want).payload_bytes);
        let id = outflow::flow::FlowTuple::of_record(want).community_id(0);
        assert_eq!(l["community_id"], id.as_str());
    }
    // The large-transfer alert already fired while the upload is open.
    let (_, body) = s.get("/api/alerts?detector=large_outbound_transfer");
    let a = json(&body);
    assert_eq!(a["count"], 1);
    assert_eq!(a["alerts"][0]["flow_open"], true);
    assert_eq!(a["alerts"][0]["community_id"], upload_id.as_str());
    assert_eq!(s.get("/healthz").0, 200);
    assert_eq!(json(&s.get("/healthz").1)["capturing"], true);

    // The rest of the capture; at its end nothing is open any more.
    {
        let w = s.stdin();
        for r in &recs[n + 1..] {
            w.write_all(r).unwrap();
        }
    }
    drop(s.child.stdin.take());
    s.wait_finished();
    // Answers are reused for a second (so clients in a loop cannot keep workers scanning).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, body) = s.get("/api/flows/top");
    assert_eq!(json(&body)["count"], 0);
    assert!(s.stop().success());
}

/// The names a flow's first client bytes carry reach `/api/flows/top` while it is open: a
/// TLS upload named only by its ClientHello (SNI, ALPN, JA4; no DNS in the capture) and an
/// HTTP PUT named by its request head (method, Host).
#[test]
fn top_flows_carry_the_names_of_open_flows() {
    use outflow::gen::{self, Close, PcapWriter};
    use outflow::proto::tls::build::example_spec;
    let sa = |s: &str| -> std::net::SocketAddr { s.parse().unwrap() };
    let mut tls = gen::tls_session(
        sa("10.0.0.5:40000"),
        sa("198.51.100.7:443"),
        &example_spec(b"Uploads.Example.COM"),
        1,
        300_000,
        1_000,
    );
    let mut put = gen::http_upload(
        sa("10.0.0.5:40001"),
        sa("198.51.100.8:8080"),
        "PUT",
        "store.example.net:8080",
        "/bucket/dump.sql",
        200_000,
        100,
    );
    put.start_ns = tls.start_ns + 1_000_000;
    // Both still open when the capture pauses: no teardown.
    tls.close = Close::None;
    put.close = Close::None;
    // A lookup between home hosts a second later: with one packet per batch, the worker
    // has processed every packet before the last written.
    let mut later = gen::UdpExchange::new(sa("10.0.0.7:53000"), sa("10.0.0.1:53"), 1, 38, 54);
    later.start_ns = tls.start_ns + 1_000_000_000;
    let mut w = PcapWriter::new(Vec::new(), gen::LINKTYPE_ETHERNET, 65_535).unwrap();
    for p in gen::merge(vec![tls.packets(), put.packets()]).chain(later.packets().take(1)) {
        w.write(p.ts_ns, &p.frame).unwrap();
    }
    let (head, recs) = common::pcap_records(&w.into_inner().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_from_stdin(dir.path(), "[capture]\nbatch_packets = 1\n", &head, &recs);
    let (tls_out, put_out) = (tls.expected(), put.expected());
    let start = std::time::Instant::now();
    let top = loop {
        let (status, body) = s.get("/api/flows/top?by=out_ip_bytes");
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        let seen: Vec<u64> = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["out_pkts"].as_u64().unwrap())
            .collect();
        if seen == [tls_out.orig_pkts, put_out.orig_pkts] {
            break v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the worker never caught up: {body}"
        );
        // Answers are reused for a second.
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(top["count"], 2);
    let (t, h) = (&top["flows"][0], &top["flows"][1]);
    assert_eq!(t["dst_ip"], "198.51.100.7");
    assert_eq!(t["out_ip_bytes"], tls_out.orig_ip_bytes);
    assert_eq!(t["state"], "established");
    assert_eq!(t["server_name"], "Uploads.Example.COM");
    assert_eq!(t["alpn"], "h2");
    assert_eq!(t["ja4"], "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(t["http_host"], serde_json::Value::Null);
    assert_eq!(t["http_method"], serde_json::Value::Null);
    assert_eq!(h["dst_ip"], "198.51.100.8");
    assert_eq!(h["out_ip_bytes"], put_out.orig_ip_bytes);
    assert_eq!(h["state"], "established");
    assert_eq!(h["http_host"], "store.example.net:8080");
    assert_eq!(h["http_method"], "PUT");
    assert_eq!(h["server_name"], serde_json::Value::Null);
    assert_eq!(h["alpn"], serde_json::Value::Null);
    assert_eq!(h["ja4"], serde_json::Value::Null);

    drop(s.child.stdin.take());
    s.wait_finished();
    assert!(s.stop().success());
}

/// One RFC 5424 message, split into its fields.
struct Syslog {
    pri: u8,
    version: String,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd: HashMap<String, String>,
    sd_id: String,
    msg: String,
}

fn parse_5424(m: &[u8]) -> Syslog {
    let text = std::str::from_utf8(m).expect("UTF-8");
    assert!(text.starts_with('<'), "{text}");
    let close = text.find('>').unwrap();
    let pri: u8 = text[1..close].parse().unwrap();
    let mut rest = &text[close + 1..];
    let mut next = || {
        let (a, b) = rest.split_once(' ').unwrap();
        rest = b;
        a.to_string()
    };
    let (version, timestamp, hostname, app, procid, msgid) =
        (next(), next(), next(), next(), next(), next());
    // Structured data: [id k="v" ...] with \" \\ \] escapes.
    assert!(rest.starts_with('['), "{rest}");
    let b = rest.as_bytes();
    let mut i = 1;
    let id_end = rest[1..].find(' ').unwrap() + 1;
    let sd_id = rest[1..id_end].to_string();
    i = i.max(id_end);
    let mut sd = HashMap::new();
    loop {
        if b[i] == b']' {
            i += 1;
            break;
        }
        assert_eq!(b[i], b' ');
        let eq = rest[i..].find('=').unwrap() + i;
        let key = rest[i + 1..eq].to_string();
        assert_eq!(b[eq + 1], b'"');
        let mut j = eq + 2;
        let mut val = Vec::new();
        while b[j] != b'"' {
            if b[j] == b'\\' {
                j += 1;
            }
            val.push(b[j]);
            j += 1;
        }
        sd.insert(key, String::from_utf8(val).unwrap());
        i = j + 1;
    }
    let msg = &rest[i..];
    let msg = msg.strip_prefix(' ').expect("space before MSG");
    let msg = msg
        .strip_prefix('\u{feff}')
        .expect("BOM before a UTF-8 MSG");
    Syslog {
        pri,
        version,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd,
        sd_id,
        msg: msg.to_string(),
    }
}

#[test]
fn alerts_reach_syslog_over_udp_as_rfc5424() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let target = format!("udp://{}", sock.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        "[output.syslog]\nfacility = \"local3\"\nhostname = \"sensor-7\"\n",
    )
    .unwrap();
    let alerts_file = dir.path().join("alerts.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--syslog",
            &target,
            "--alerts-out",
            alerts_file.to_str().unwrap(),
            demo().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&alerts_file)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    // The alert outputs carry the incident: opened, closed.
    assert_eq!(alerts.len(), 2);
    let mut buf = vec![0u8; 65_536];
    for a in &alerts {
        let n = sock
            .recv(&mut buf)
            .expect("a syslog datagram per incident line");
        let m = parse_5424(&buf[..n]);
        let update = a["update"].as_str().unwrap();
        let sev = a["severity"].as_str().unwrap();
        assert_eq!(m.pri / 8, 19, "local3");
        let want_sev = match sev {
            "critical" => 2,
            "high" => 3,
            "medium" => 4,
            _ => 5,
        };
        assert_eq!(m.pri % 8, want_sev, "{sev}");
        assert_eq!(m.version, "1");
        assert_eq!(m.timestamp, a["ts"].as_str().unwrap());
        assert_eq!(m.hostname, "sensor-7");
        assert_eq!(m.app, "outflow");
        assert!(m.procid.parse::<u32>().is_ok(), "{}", m.procid);
        assert_eq!(m.msgid, format!("incident_{update}"));
        assert_eq!(m.sd_id, "outflow@32473");
        assert_eq!(m.sd["incident_id"], a["incident_id"].as_str().unwrap());
        assert_eq!(m.sd["update"], update);
        assert_eq!(m.sd["severity"], sev);
        assert_eq!(m.sd["src_ip"], "10.0.0.5");
        assert_eq!(m.sd["dst_ip"], "203.0.113.50");
        assert_eq!(m.sd["bytes"], a["out_ip_bytes"].to_string());
        assert_eq!(m.sd["flow_id"], a["flows"][0]["flow_id"].to_string());
        assert_eq!(m.msg, a["message"].as_str().unwrap());
        assert!(
            m.msg.contains("10.0.0.5") && m.msg.contains(" → 203.0.113.50"),
            "{}",
            m.msg
        );
    }
    let sevs: Vec<&str> = alerts
        .iter()
        .map(|a| a["severity"].as_str().unwrap())
        .collect();
    assert_eq!(sevs, ["medium", "high"]);
}

#[test]
fn a_client_that_never_finishes_its_request_cannot_keep_the_sensor_running() {
    let s = Sensor::start(&[
        "replay",
        "--http",
        "127.0.0.1:0",
        "--serve",
        demo().to_str().unwrap(),
    ]);
    s.wait_finished();
    // Half a request header, then silence (slowloris); and a second, idle connection.
    let mut stuck = std::net::TcpStream::connect(s.addr).unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let _idle = std::net::TcpStream::connect(s.addr).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Other clients are still served.
    assert_eq!(s.get("/healthz").0, 200);
    let started = std::time::Instant::now();
    let status = s.stop();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "exit took {:?} with a stuck client",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Connection limits (src/http/conn.rs): idle and slow clients cannot lock out the scrape.

/// Raises the soft descriptor limit to the hard one (often 1024 → much more) and returns
/// how many descriptors this process may open.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// `GET path` on a new connection with `Connection: close`, everything bounded by
/// `within`: (status, body, time taken). Status 0 if no answer came in time.
fn timed_get(
    addr: std::net::SocketAddr,
    path: &str,
    within: std::time::Duration,
) -> (u16, String, std::time::Duration) {
    use std::io::Read;
    let start = std::time::Instant::now();
    let answer = (|| -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, within)?;
        s.set_read_timeout(Some(within))?;
        s.set_write_timeout(Some(within))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: outflow\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })();
    let (status, body) = answer.unwrap_or((0, String::new()));
    (status, body, start.elapsed())
}

/// One request on a kept-alive connection: (status, body).
fn keep_alive_get(s: &mut std::net::TcpStream, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    write!(s, "GET {path} HTTP/1.1\r\nHost: outflow\r\n\r\n")?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// True once the server has closed `s` (EOF or reset), false if it is still open after
/// `wait`.
fn closed_by_server(s: &mut std::net::TcpStream, wait: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (e.g. 408) before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_slowloris_clients_cannot_lock_out_the_scrape_and_the_probe() {
    use outflow::http::conn::{HEADER_TIMEOUT, MAX_CONNECTIONS};
    use std::time::{Duration, Instant};
    // 2000 client sockets plus the sensor's own; the server side holds at most
    // MAX_CONNECTIONS of them whatever the clients do.
    let fds = raise_fd_limit();
    let idle = 2000usize.min(fds.saturating_sub(200) as usize);
    if idle < 2000 {
        eprintln!("descriptor limit {fds}: opening {idle} idle sockets instead of 2000");
    }
    assert!(idle > 2 * MAX_CONNECTIONS, "descriptor limit {fds} too low");
    let s = Sensor::start(&[
        "replay",
        "--http",
        "127.0.0.1:0",
        "--serve",
        demo().to_str().unwrap(),
    ]);
    s.wait_finished();

    // Idle sockets: connected, never a byte. (The earlier listener stopped accepting at 256
    // and the kernel's queue filled at 384: connects hung from then on, the scrape's too.)
    // A connect may still wait for one SYN retransmission (1 s) when the machine is busy
    // and the accept loop falls behind the kernel's queue of 1024; 3 s allows it.
    let opened = Instant::now();
    let mut sockets = Vec::with_capacity(idle);
    let mut failed = Vec::new();
    while sockets.len() < idle && failed.len() < 3 {
        match std::net::TcpStream::connect_timeout(&s.addr, Duration::from_secs(3)) {
            Ok(c) => sockets.push(c),
            Err(e) => failed.push(e),
        }
    }
    eprintln!(
        "{} idle sockets open in {:?}, {} connects failed",
        sockets.len(),
        opened.elapsed(),
        failed.len()
    );

    // A slowloris client: half a request head, then one more header byte every 250 ms, which
    // would have reset the earlier 90-second idle deadline forever.
    let addr = s.addr;
    let slowloris = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let mut trickled = 0usize;
        while start.elapsed() < HEADER_TIMEOUT * 3 {
            if closed_by_server(&mut c, Duration::from_millis(250)) {
                return (Some(start.elapsed()), trickled);
            }
            if c.write_all(b"a").is_err() {
                return (Some(start.elapsed()), trickled);
            }
            trickled += 1;
        }
        (None, trickled)
    });

    // While all of that is open: the scrape and the probe answer at once, every time.
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while !slowloris.is_finished() {
        for path in ["/metrics", "/healthz"] {
            let (status, body, took) = timed_get(s.addr, path, Duration::from_secs(5));
            assert_eq!(status, 200, "{path} after {took:?}: {body}");
            // Milliseconds when all is well (measured 9–52 ms, debug build); the old server
            // gave no answer at all. 3 s of slack for a loaded 2-core CI machine.
            assert!(took < Duration::from_secs(3), "{path} took {took:?}");
            worst = worst.max(took);
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{rounds} rounds of /metrics + /healthz, slowest answer {worst:?}");
    assert!(failed.is_empty(), "connects failed: {failed:?}");
    assert_eq!(sockets.len(), idle);
    let (closed_after, trickled) = slowloris.join().unwrap();
    let closed_after = closed_after.expect("the slowloris connection was never closed");
    eprintln!("slowloris closed after {closed_after:?}, {trickled} bytes trickled");
    // Closed by the header deadline (not by eviction, which would have been sooner, nor
    // by anything later), despite a byte every 250 ms.
    assert!(
        closed_after >= HEADER_TIMEOUT - Duration::from_millis(300)
            && closed_after < HEADER_TIMEOUT + Duration::from_secs(2),
        "slowloris closed after {closed_after:?}"
    );
    assert!(trickled >= 15, "{trickled} bytes trickled");

    // The oldest idle sockets were closed to admit the newer ones.
    for c in sockets.iter_mut().take(10) {
        assert!(closed_by_server(c, Duration::from_secs(2)));
    }
    let m = scrape(&s);
    let evicted = metric(&m, "outflow_http_connections_evicted_total{}") as usize;
    assert!(evicted >= idle - MAX_CONNECTIONS, "evicted {evicted}");
    assert!(metric(&m, "outflow_http_connections_open{}") as usize <= MAX_CONNECTIONS);
    assert!(metric(&m, "outflow_http_connections_accepted_total{}") as usize > idle);
    assert!(metric(&m, "outflow_http_connections_timed_out_total{phase=header}") >= 1.0);
    assert_eq!(
        metric(&m, "outflow_http_requests_rejected_total{class=probe}"),
        0.0
    );
    drop(sockets);
    let started = Instant::now();
    assert!(s.stop().success());
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// Starts the HTTP server in-process with `limits` and a pipeline that is not running.
fn limited_server(
    workers: usize,
    limits: outflow::http::conn::Limits,
) -> (
    outflow::http::HttpServer,
    std::sync::Arc<outflow::telemetry::Telemetry>,
) {
    let t = outflow::telemetry::Telemetry::new("replay", workers, 16);
    let server = outflow::http::HttpServer::start_limited(
        "127.0.0.1:0",
        None,
        std::sync::Arc::clone(&t),
        limits,
    )
    .unwrap();
    (server, t)
}

#[test]
fn a_full_connection_table_closes_its_oldest_idle_connection() {
    use std::time::Duration;
    let (server, t) = limited_server(
        0,
        outflow::http::conn::Limits {
            max_connections: 8,
            max_api_requests: 2,
            max_probe_requests: 2,
            ..Default::default()
        },
    );
    let mut sockets: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
        .collect();
    let http = &t.http;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    // The server accepts on its own thread: wait (boundedly) until it has seen all 20, not
    // a fixed time that a loaded machine may not honour.
    let since = std::time::Instant::now();
    while (load(&http.accepted) < 20 || load(&http.evicted) < 12)
        && since.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(load(&http.accepted), 20);
    assert_eq!(load(&http.evicted), 12);
    assert_eq!(load(&http.open), 8);
    // Oldest first: the first 12 are closed, the last 8 are still open.
    for (i, c) in sockets.iter_mut().enumerate() {
        let closed = closed_by_server(c, Duration::from_millis(if i < 12 { 1000 } else { 50 }));
        assert_eq!(closed, i < 12, "socket {i}");
    }
    // A served keep-alive connection goes to the back of the queue: after a request, the
    // 13th socket is the newest idle one, and the next newcomer evicts the 14th.
    sockets[12]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (status, _) = keep_alive_get(&mut sockets[12], "/metrics").unwrap();
    assert_eq!(status, 200);
    let _newcomer = std::net::TcpStream::connect(server.addr()).unwrap();
    assert!(closed_by_server(&mut sockets[13], Duration::from_secs(1)));
    assert!(!closed_by_server(
        &mut sockets[12],
        Duration::from_millis(50)
    ));
    assert_eq!(load(&http.evicted), 13);
    server.stop();
}

#[test]
fn keep_alive_waits_for_the_next_request_but_a_head_has_a_deadline() {
    use outflow::http::conn::Phase;
    use std::time::{Duration, Instant};
    let header = Duration::from_millis(300);
    let idle = Duration::from_millis(1500);
    let (server, t) = limited_server(
        0,
        outflow::http::conn::Limits {
            header_timeout: header,
            idle_timeout: idle,
            ..Default::default()
        },
    );
    // A scraper on one kept-alive connection: requests further apart than the header
    // deadline (as Prometheus's 15 to 60 s are beyond 5 s) all go through.
    let mut c = std::net::TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        let (status, body) = keep_alive_get(&mut c, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("outflow_http_connections_open 1"), "{body}");
        std::thread::sleep(header * 3);
    }
    assert_eq!(
        t.http.accepted.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Silent beyond the keep-alive wait: closed, counted as idle.
    let last = Instant::now();
    assert!(closed_by_server(&mut c, idle * 3));
    let waited = last.elapsed();
    assert!(
        waited + header * 3 >= idle - Duration::from_millis(100),
        "{waited:?}"
    );
    assert_eq!(t.http.timed_out(Phase::Idle), 1);

    // The next request's head starts its own deadline at its first byte, and a trickle
    // does not extend it.
    let mut c = std::net::TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(keep_alive_get(&mut c, "/metrics").unwrap().0, 200);
    std::thread::sleep(header * 2);
    let first_byte = Instant::now();
    c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut closed = false;
    while first_byte.elapsed() < header * 5 {
        if closed_by_server(&mut c, Duration::from_millis(50)) || c.write_all(b"X").is_err() {
            closed = true;
            break;
        }
    }
    let after = first_byte.elapsed();
    assert!(closed, "the trickling head was never cut");
    // By the header deadline, well before the keep-alive one would have.
    assert!(
        after >= header - Duration::from_millis(50) && after < idle - header * 3,
        "{after:?}"
    );
    assert_eq!(t.http.timed_out(Phase::Header), 1);
    assert_eq!(t.http.timed_out(Phase::Idle), 1);
    server.stop();
}

#[test]
fn the_scrape_has_its_own_budget_when_api_requests_fill_theirs() {
    use outflow::http::budget::Class;
    use outflow::http::conn::Phase;
    use std::time::Duration;
    // One worker that never answers: /api/flows/top waits 2 s for it, longer than the
    // 1 s an API request may take here.
    let (server, t) = limited_server(
        1,
        outflow::http::conn::Limits {
            max_api_requests: 2,
            api_request_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let addr = server.addr();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || timed_get(addr, "/api/flows/top", Duration::from_secs(5)))
        })
        .collect();
    // Both slow requests accepted (then their heads are read at once: give that a moment).
    let since = std::time::Instant::now();
    while t.http.accepted.load(std::sync::atomic::Ordering::Relaxed) < 2
        && since.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Both API places are taken: a third API request is refused at once...
    let (status, body, took) = timed_get(addr, "/api/alerts", Duration::from_secs(5));
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // ...while the scrape and the probe are served.
    let (status, body, took) = timed_get(addr, "/metrics", Duration::from_secs(5));
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(body.contains("outflow_http_requests_rejected_total{class=\"api\"} 1"));
    assert_eq!(timed_get(addr, "/healthz", Duration::from_secs(5)).0, 200);
    // The slow requests are cut at their budget: closed without an answer.
    for h in slow {
        let (status, _, took) = h.join().unwrap();
        assert_eq!(status, 0);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
            "{took:?}"
        );
    }
    assert_eq!(t.http.timed_out(Phase::Request), 2);
    assert_eq!(t.http.rejected(Class::Api), 1);
    assert_eq!(t.http.rejected(Class::Probe), 0);
    server.stop();
}

#[test]
fn an_empty_blank_or_short_api_token_is_refused_naming_its_key() {
    let replay = |env: Option<&str>, config: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"));
        c.args(["replay", "-q", "--http", "127.0.0.1:0"]);
        if let Some(p) = config {
            c.arg("--config").arg(p);
        }
        c.arg(demo());
        match env {
            Some(v) => c.env("OUTFLOW_HTTP_TOKEN", v),
            None => c.env_remove("OUTFLOW_HTTP_TOKEN"),
        };
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    for (value, problem) in [
        ("", "is empty"),
        (" \t ", "is only whitespace"),
        ("fifteen-chars!!", "is 15 characters long"),
    ] {
        let (code, err) = replay(Some(value), None);
        assert_eq!(code, Some(2), "{value:?}: {err}");
        assert!(
            err.contains(&format!("OUTFLOW_HTTP_TOKEN: the API token {problem}")),
            "{value:?}: {err}"
        );
        assert_eq!(err.matches("outflow: error:").count(), 1, "{err}");
    }
    // In the file: refused by the config check itself, for every command.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("token.toml");
    for (value, problem) in [
        ("   ", "is only whitespace"),
        ("short", "is 5 characters long"),
    ] {
        std::fs::write(&cfg, format!("[http]\ntoken = {value:?}\n")).unwrap();
        let (code, err) = replay(None, Some(&cfg));
        assert_eq!(code, Some(2), "{value:?}: {err}");
        assert!(
            err.contains(&format!("http.token: the API token {problem}")),
            "{value:?}: {err}"
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("http.token: the API token"), "{err}");
    }
    // 16 characters is enough; "" in the file is the documented "no token".
    std::fs::write(&cfg, "[http]\ntoken = \"\"\n").unwrap();
    let (code, err) = replay(Some("sixteen-chars-ok"), Some(&cfg));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = replay(None, Some(&cfg));
    assert_eq!(code, Some(0), "{err}");
}
