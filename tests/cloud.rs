//! The cloud-upload detector end to end: generated captures where a home host resolves a
//! catalogue service and then uploads (or downloads) over several connections.

mod common;

use outflow::config::Config;
use outflow::detect::Detector;
use outflow::gen::{a_lookup, merge, tls_session, Packet, PcapWriter, TcpSession};
use outflow::proto::tls::build::example_spec;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn write(path: &Path, packets: Vec<Packet>) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::new(f, 1, 65535).unwrap();
    for p in packets {
        w.write(p.ts_ns, &p.frame).unwrap();
    }
    w.into_inner().unwrap();
}

/// Sessions of 10.0.0.5 to `server`: (start s, bytes up, bytes down) each.
fn sessions(server: &str, shape: &[(u64, u64, u64)]) -> Vec<Vec<Packet>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &(at, up, down))| {
            let mut s = TcpSession::new(
                sa(&format!("10.0.0.5:{}", 40_000 + i)),
                sa(server),
                up,
                down,
            );
            s.start_ns = T0 + at * S;
            s.packets().collect()
        })
        .collect()
}

/// The packets of session `i` of `shape` alone (as [`sessions`] numbers it).
fn sessions_at(shape: &[(u64, u64, u64)], i: usize) -> Vec<Packet> {
    sessions("162.125.6.20:443", shape).swap_remove(i)
}

fn capture(dir: &Path, name: &str, lookup: bool, shape: &[(u64, u64, u64)]) -> PathBuf {
    let mut streams = sessions("162.125.6.20:443", shape);
    if lookup {
        streams.push(a_lookup(
            [10, 0, 0, 5],
            53_000,
            "content.dropboxapi.com",
            [162, 125, 6, 20],
            T0,
        ));
    }
    let packets: Vec<Packet> = merge(streams.into_iter().map(Vec::into_iter).collect()).collect();
    let path = dir.join(name);
    write(&path, packets);
    path
}

fn cloud_findings(
    rep: &outflow::replay::ReplayReport,
) -> Vec<&outflow::correlate::leak::LeakAlert> {
    rep.leak_alerts
        .iter()
        .filter(|a| a.detector == Detector::CloudUpload)
        .collect()
}

#[test]
fn uploads_to_a_resolved_service_alert_once_and_join_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    // Three 8 MB uploads within four minutes of the lookup (its answer is remembered at
    // least `dns.name_ttl_min`, 5 min): each below every volume threshold.
    let path = capture(
        dir.path(),
        "up.pcap",
        true,
        &[
            (10, 8_000_000, 20_000),
            (100, 8_000_000, 20_000),
            (200, 8_000_000, 20_000),
        ],
    );
    for workers in [1, 2] {
        let rep = common::replay(&Config::default(), workers, std::slice::from_ref(&path));
        let found = cloud_findings(&rep);
        assert_eq!(found.len(), 1, "{found:?}");
        let a = found[0];
        assert_eq!(a.scope, "Dropbox|file_sharing");
        assert_eq!(a.src, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(a.dst, Some("162.125.6.20".parse().unwrap()));
        assert_eq!(a.fqdns, ["content.dropboxapi.com"]);
        assert_eq!(a.events, 3, "connections");
        assert!(
            a.total_bytes > 20_000_000 && a.total_bytes < 24_500_000,
            "{}",
            a.total_bytes
        );
        // Fired while the third upload ran, on the report that crossed 20 MB.
        let third = rep
            .flows
            .iter()
            .filter(|f| f.resp_port == 443)
            .map(|f| f.last_ns)
            .max()
            .unwrap();
        assert!(a.ts_ns <= third, "{} > {third}", a.ts_ns);
        // Nothing else fires on 24 MB, so the incident is the cloud finding's.
        assert!(rep.alerts.is_empty());
        let inc = &rep.incidents;
        assert_eq!(inc.first().map(|u| u.update.name()), Some("opened"));
        assert_eq!(inc[0].incident.reasons[0].detector, Detector::CloudUpload);
        let json = outflow::output::json::leak_alert_json(a);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["service"], "Dropbox");
        assert_eq!(v["category"], "file_sharing");
        assert_eq!(v["connections"], 3);
        assert!(v.get("events").is_none() && v.get("scope").is_none(), "{v}");
        assert_eq!(
            v["message"],
            "Cloud upload: 10.0.0.5 sent 20.1 MB to Dropbox (file_sharing) in 3 min over 3 \
             connections (content.dropboxapi.com)"
        );
    }
}

#[test]
fn downloads_from_the_service_and_unnamed_uploads_do_not_alert() {
    let dir = tempfile::tempdir().unwrap();
    let down = capture(
        dir.path(),
        "down.pcap",
        true,
        &[(10, 50_000, 30_000_000), (300, 50_000, 30_000_000)],
    );
    let rep = common::replay(&Config::default(), 1, &[down]);
    assert!(cloud_findings(&rep).is_empty());
    // The same uploads without the lookup: the address alone names no service.
    let up = capture(
        dir.path(),
        "unnamed.pcap",
        false,
        &[
            (10, 8_000_000, 20_000),
            (100, 8_000_000, 20_000),
            (200, 8_000_000, 20_000),
        ],
    );
    let rep = common::replay(&Config::default(), 1, std::slice::from_ref(&up));
    assert!(cloud_findings(&rep).is_empty());
    // Allowed service: counted, no finding.
    let mut cfg = Config::default();
    cfg.allow.cloud_services = vec!["Dropbox".into()];
    let named = capture(
        dir.path(),
        "allowed.pcap",
        true,
        &[(10, 8_000_000, 0), (100, 8_000_000, 0), (200, 8_000_000, 0)],
    );
    let rep = common::replay(&cfg, 1, &[named]);
    assert!(cloud_findings(&rep).is_empty());
}

// ---------------------------------------------------------------------------------------
// Long connections (same file: both are destination-level detectors fed by generated
// sessions of one home host)
// ---------------------------------------------------------------------------------------

fn long_findings(rep: &outflow::replay::ReplayReport) -> Vec<&outflow::correlate::leak::LeakAlert> {
    rep.leak_alerts
        .iter()
        .filter(|a| a.detector == Detector::LongConnection)
        .collect()
}

#[test]
fn a_connection_open_past_an_hour_alerts_while_open_and_at_its_doubling() {
    let dir = tempfile::tempdir().unwrap();
    // 10.0.0.5 → 198.51.100.20:22, a segment every 20 s for 2 h 5 min.
    let mut s = TcpSession::new(sa("10.0.0.5:41000"), sa("198.51.100.20:22"), 375 * 100, 0);
    s.mss = 100;
    s.ack_every = 1;
    s.start_ns = T0;
    s.gap_ns = 10 * S;
    let path = dir.path().join("long.pcap");
    write(&path, s.packets().collect());
    for workers in [1, 2] {
        let rep = common::replay(&Config::default(), workers, std::slice::from_ref(&path));
        let found = long_findings(&rep);
        let ages: Vec<u64> = found.iter().map(|a| (a.ts_ns - a.first_ns) / S).collect();
        assert_eq!(found.len(), 2, "{ages:?}");
        // At the first packet past 1 h, and past 2 h: both while the flow was open.
        assert!(
            (3600..3620).contains(&ages[0]) && (7200..7220).contains(&ages[1]),
            "{ages:?}"
        );
        let end = rep.flows.iter().map(|f| f.last_ns).max().unwrap();
        assert!(found.iter().all(|a| a.ts_ns < end && a.port == 22));
        let v: serde_json::Value =
            serde_json::from_str(&outflow::output::json::leak_alert_json(found[0])).unwrap();
        assert_eq!(v["detector"], "long_connection");
        assert!(v["age"].as_f64().unwrap() >= 3600.0, "{v}");
        assert!(v.get("usual_duration").is_none(), "{v}");
    }
}

/// 100 sessions from outside to the home database 10.0.0.30:5432, 4–5 min each, then one
/// from an unknown address that stays 24 min (the last stream).
fn database_sessions() -> Vec<Vec<Packet>> {
    let mut streams: Vec<Vec<Packet>> = Vec::new();
    for i in 0..100u64 {
        let mut s = TcpSession::new(
            sa(&format!("198.51.100.{}:{}", 1 + i % 50, 50_000 + i)),
            sa("10.0.0.30:5432"),
            2_000,
            12_000 + 100 * (i % 7),
        );
        s.mss = 1_000;
        s.start_ns = T0 + i * 150 * S;
        s.gap_ns = 8 * S + (i % 5) * S;
        streams.push(s.packets().collect());
    }
    let mut odd = TcpSession::new(
        sa("203.0.113.66:61000"),
        sa("10.0.0.30:5432"),
        6_000,
        90_000,
    );
    odd.mss = 1_000;
    odd.start_ns = T0 + 100 * 150 * S;
    odd.gap_ns = 15 * S;
    streams.push(odd.packets().collect());
    streams
}

#[test]
fn a_session_far_past_its_ports_usual_duration_alerts_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let streams = database_sessions();
    let packets: Vec<Packet> = merge(streams.into_iter().map(Vec::into_iter).collect()).collect();
    let path = dir.path().join("db.pcap");
    write(&path, packets);
    let rep = common::replay(&Config::default(), 1, &[path]);
    let found = long_findings(&rep);
    assert_eq!(found.len(), 1, "{found:?}");
    let a = found[0];
    assert_eq!(a.scope, "service");
    assert_eq!(a.port, 5432);
    assert_eq!(a.src, Some("10.0.0.30".parse().unwrap()));
    assert_eq!(a.dst, Some("203.0.113.66".parse().unwrap()));
    let odd_end = rep
        .flows
        .iter()
        .find(|f| f.orig_port == 61000)
        .map(|f| f.last_ns)
        .unwrap();
    assert!(a.ts_ns < odd_end, "alerted while open");
    assert!(
        a.mean > 200.0 && a.mean < 330.0,
        "usual duration {} s",
        a.mean
    );
    let v: serde_json::Value =
        serde_json::from_str(&outflow::output::json::leak_alert_json(a)).unwrap();
    assert!(
        v["usual_duration"].as_f64().is_some() && v["port_history"] == 100,
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Long connection: 10.0.0.30 → 203.0.113.66"),
        "{v}"
    );
}

fn with_state(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.state.dir = dir.display().to_string();
    cfg
}

/// What a port and a cloud window learnt survives a restart with `state.dir`: the
/// database's 100 ordinary sessions in one run and the 24-minute one in the next alert as
/// in one run (without the state, the second run has no history for the port and stays
/// silent); two 8 MB Dropbox uploads and the lookup that named them in one run and a third
/// upload in the next make one `cloud_upload` of three connections (without the state the
/// third is unnamed and alone). Before the second run the catalogue changes: its cloud
/// windows are dropped, the rest is kept, and nothing is set aside.
#[test]
fn a_ports_history_and_a_cloud_window_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database_sessions();
    let odd = db.pop().unwrap();
    // And one more session to the port, cut by the end of the first file (its FIN and last
    // ACKs in no file): a connection cut by a stop is no sample of the port's durations.
    let mut cut = TcpSession::new(
        sa("198.51.100.200:60000"),
        sa("10.0.0.30:5432"),
        2_000,
        12_000,
    );
    cut.mss = 1_000;
    cut.start_ns = T0 + 99 * 150 * S;
    cut.gap_ns = 8 * S;
    let mut cut: Vec<Packet> = cut.packets().collect();
    cut.truncate(cut.len() - 4);
    db.push(cut);
    let hundred: Vec<Packet> = merge(db.into_iter().map(Vec::into_iter).collect()).collect();
    let (first, second) = (dir.path().join("db1.pcap"), dir.path().join("db2.pcap"));
    write(&first, hundred);
    write(&second, odd);
    let state = dir.path().join("state");
    assert!(long_findings(&common::replay(&with_state(&state), 1, &[first])).is_empty());
    let rep = common::replay(&with_state(&state), 1, std::slice::from_ref(&second));
    let found = long_findings(&rep);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].port, found[0].scope.as_str()), (5432, "service"));
    let v: serde_json::Value =
        serde_json::from_str(&outflow::output::json::leak_alert_json(found[0])).unwrap();
    assert_eq!(v["port_history"], 100, "{v}");
    let fresh = common::replay(&Config::default(), 1, &[second]);
    assert!(long_findings(&fresh).is_empty());

    let shape = [
        (10, 8_000_000, 20_000),
        (100, 8_000_000, 20_000),
        (200, 8_000_000, 20_000),
    ];
    let two = capture(dir.path(), "up2.pcap", true, &shape[..2]);
    let whole = capture(dir.path(), "up.pcap", true, &shape);
    let whole = common::replay(&Config::default(), 1, &[whole]);
    let third = dir.path().join("up3.pcap");
    write(&third, sessions_at(&shape, 2));
    for (catalogue_changes, alerts) in [(false, 1), (true, 0)] {
        let state = dir.path().join(format!("cloud-state-{catalogue_changes}"));
        let rep = common::replay(&with_state(&state), 1, std::slice::from_ref(&two));
        assert!(cloud_findings(&rep).is_empty());
        let mut cfg = with_state(&state);
        if catalogue_changes {
            cfg.cloud
                .services
                .push(outflow::config::CloudServiceConfig {
                    name: "Acme Share".into(),
                    category: "file_sharing".into(),
                    domains: vec!["share.acme.example".into()],
                });
        }
        let rep = common::replay(&cfg, 1, std::slice::from_ref(&third));
        let found = cloud_findings(&rep);
        assert_eq!(found.len(), alerts, "{found:?}");
        if let Some(a) = found.first() {
            // As in one run of the whole: the same report crosses, with the same total.
            let b = cloud_findings(&whole)[0];
            assert_eq!(a.scope, "Dropbox|file_sharing");
            assert_eq!(a.events, 3, "connections");
            assert_eq!(a.fqdns, ["content.dropboxapi.com"]);
            assert_eq!((a.ts_ns, a.total_bytes), (b.ts_ns, b.total_bytes));
        }
        let names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [outflow::correlate::STATE_FILE], "nothing set aside");
    }
    let alone = common::replay(&Config::default(), 1, &[third]);
    assert!(cloud_findings(&alone).is_empty());
}

// ---------------------------------------------------------------------------------------
// Names from QUIC Initials (no DNS): the QUIC tap, and the cloud detector fed by it
// ---------------------------------------------------------------------------------------

fn quic_hello(sni: &str) -> Vec<u8> {
    use outflow::proto::tls::build::{client_hello, quic_spec};
    client_hello(&quic_spec(sni.as_bytes()))
}

#[test]
fn quic_initials_of_v1_and_v2_name_their_flows_also_across_datagrams() {
    use outflow::gen::quic::quic_connection;
    use outflow::proto::quic::Version;
    let dir = tempfile::tempdir().unwrap();
    let hello = quic_hello("content.dropboxapi.com");
    let mut streams = Vec::new();
    for (i, (version, initials)) in [
        (Version::V1, 1),
        (Version::V2, 1),
        (Version::V1, 3),
        (Version::V2, 2),
    ]
    .into_iter()
    .enumerate()
    {
        streams.push(quic_connection(
            sa(&format!("10.0.0.5:{}", 52_000 + i)),
            sa("162.125.6.21:443"),
            version,
            &hello,
            initials,
            24_000,
            2_400,
            T0 + i as u64 * S,
            1_000_000,
        ));
    }
    let packets: Vec<Packet> = merge(streams.into_iter().map(Vec::into_iter).collect()).collect();
    let path = dir.path().join("quic.pcap");
    write(&path, packets);
    let rep = common::replay(&Config::default(), 2, &[path]);
    let named: Vec<(u16, String, String, bool, String)> = rep
        .flows
        .iter()
        .filter_map(|f| {
            let n = f.names()?;
            Some((
                f.orig_port,
                String::from_utf8_lossy(n.server_name.get()?).into_owned(),
                String::from_utf8_lossy(n.alpn.get()?).into_owned(),
                n.quic,
                n.ja4.map(|j| j.as_str().to_string()).unwrap_or_default(),
            ))
        })
        .collect();
    assert_eq!(named.len(), 4, "{named:?}");
    for (port, sni, alpn, quic, ja4) in &named {
        assert_eq!(
            (sni.as_str(), alpn.as_str(), *quic),
            ("content.dropboxapi.com", "h3", true),
            "{port}"
        );
        assert!(ja4.starts_with("q13d0305h3_"), "{port}: {ja4}");
    }
}

#[test]
fn uploads_to_a_service_named_only_by_quic_alert_and_downloads_do_not() {
    use outflow::gen::quic::quic_connection;
    use outflow::proto::quic::Version;
    let dir = tempfile::tempdir().unwrap();
    let hello = quic_hello("content.dropboxapi.com");
    let conns = |up: u64, down: u64| -> Vec<Packet> {
        let streams: Vec<Vec<Packet>> = (0..3)
            .map(|i| {
                quic_connection(
                    sa(&format!("10.0.0.5:{}", 53_000 + i)),
                    sa("162.125.6.22:443"),
                    Version::V1,
                    &hello,
                    2,
                    up,
                    down,
                    T0 + i * 60 * S,
                    200_000,
                )
            })
            .collect();
        merge(streams.into_iter().map(Vec::into_iter).collect()).collect()
    };
    let up = dir.path().join("quic-up.pcap");
    write(&up, conns(8_000_000, 100_000));
    // Large transfers at 5 MB too, so the incident holds flow findings with their names.
    let mut cfg = Config::default();
    cfg.detect.large_transfer.threshold_bytes = 5_000_000;
    cfg.detect.large_transfer.min_packets = 100;
    let rep = common::replay(&cfg, 1, &[up]);
    let found = cloud_findings(&rep);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].scope, "Dropbox|file_sharing");
    assert_eq!(found[0].fqdns, ["content.dropboxapi.com"]);
    // The upload alerts name the destination from QUIC; the incident gathers it all.
    assert_eq!(rep.alerts.len(), 3);
    assert!(rep
        .alerts
        .iter()
        .all(|a| a.dst_fqdn.as_deref() == Some("content.dropboxapi.com")
            && a.dst_fqdn_source == Some("quic_sni")));
    let last = rep.incidents.last().unwrap();
    assert_eq!(
        rep.incidents
            .iter()
            .filter(|u| u.update.name() == "opened")
            .count(),
        1
    );
    let kinds: Vec<_> = last
        .incident
        .reasons
        .iter()
        .map(|r| r.detector.name())
        .collect();
    assert!(
        kinds.contains(&"cloud_upload") && kinds.contains(&"large_outbound_transfer"),
        "{kinds:?}"
    );
    assert_eq!(
        last.incident.client_names.server_names,
        ["content.dropboxapi.com"]
    );
    assert_eq!(last.incident.client_names.alpns, ["h3"]);
    assert_eq!(last.incident.client_names.ja4s.len(), 1);
    // JA3 of the QUIC hello: MD5 of `771,4865-4866-4867,0-16-13-43-57,,` (no curves or
    // point formats offered).
    assert_eq!(
        last.incident.client_names.ja3s,
        ["e316069ad7c53f30214fbb8617266d65"]
    );
    let json = outflow::output::json::incident_json(last, 0);
    assert!(
        json.contains("\"server_names\":[\"content.dropboxapi.com\"]"),
        "{json}"
    );
    assert!(
        json.contains("\"ja3s\":[\"e316069ad7c53f30214fbb8617266d65\"]"),
        "{json}"
    );
    let down = dir.path().join("quic-down.pcap");
    write(&down, conns(100_000, 8_000_000));
    let rep = common::replay(&Config::default(), 1, &[down]);
    assert!(cloud_findings(&rep).is_empty());
}

/// Sessions of 10.0.0.5 to `server` over TLS, each opening with a ClientHello naming
/// `sni` (split over 2 segments every other connection): (start s, bytes up, bytes down).
fn tls_capture(
    dir: &Path,
    name: &str,
    server: &str,
    sni: &str,
    shape: &[(u64, u64, u64)],
) -> PathBuf {
    let streams: Vec<_> = shape
        .iter()
        .enumerate()
        .map(|(i, &(at, up, down))| {
            let mut s = tls_session(
                sa(&format!("10.0.0.5:{}", 40_000 + i)),
                sa(server),
                &example_spec(sni.as_bytes()),
                1 + (i % 2) as u16,
                up,
                down,
            );
            s.start_ns = T0 + at * S;
            s.packets()
        })
        .collect();
    let path = dir.join(name);
    write(&path, merge(streams).collect());
    path
}

#[test]
fn uploads_over_tls_without_dns_are_named_by_the_sni() {
    let dir = tempfile::tempdir().unwrap();
    let three = [
        (10, 8_000_000, 20_000),
        (100, 8_000_000, 20_000),
        (200, 8_000_000, 20_000),
    ];
    let up = tls_capture(
        dir.path(),
        "up.pcap",
        "162.125.6.20:443",
        "content.dropboxapi.com",
        &three,
    );
    for workers in [1, 2] {
        let rep = common::replay(&Config::default(), workers, std::slice::from_ref(&up));
        assert!(rep.dns_records.is_empty());
        let found = cloud_findings(&rep);
        assert_eq!(found.len(), 1, "{found:?}");
        let a = found[0];
        assert_eq!(a.scope, "Dropbox|file_sharing");
        assert_eq!(a.src, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(a.dst, Some("162.125.6.20".parse().unwrap()));
        assert_eq!(a.fqdns, ["content.dropboxapi.com"]);
        assert_eq!(a.events, 3, "connections");
        let v: serde_json::Value =
            serde_json::from_str(&outflow::output::json::leak_alert_json(a)).unwrap();
        assert_eq!(v["service"], "Dropbox");
        assert_eq!(v["category"], "file_sharing");
        assert!(rep.alerts.is_empty());
    }
    // The same service downloading: no finding.
    let down = tls_capture(
        dir.path(),
        "down.pcap",
        "162.125.6.20:443",
        "content.dropboxapi.com",
        &[(10, 50_000, 30_000_000), (300, 50_000, 30_000_000)],
    );
    let rep = common::replay(&Config::default(), 1, &[down]);
    assert_eq!(rep.flows.iter().filter(|f| f.names().is_some()).count(), 2);
    assert!(cloud_findings(&rep).is_empty());
}

#[test]
fn allowed_domains_match_a_name_known_only_from_the_sni() {
    let dir = tempfile::tempdir().unwrap();
    let path = tls_capture(
        dir.path(),
        "big.pcap",
        "162.125.6.20:443",
        "content.dropboxapi.com",
        &[(10, 3_000_000, 20_000)],
    );
    let mut cfg = Config::default();
    cfg.detect.large_transfer.threshold_bytes = 1_000_000;
    cfg.detect.large_transfer.min_packets = 100;
    cfg.detect.large_transfer.tiers = vec![];
    let rep = common::replay(&cfg, 1, std::slice::from_ref(&path));
    assert_eq!(rep.alerts.len(), 1);
    assert_eq!(rep.alerts[0].dst_fqdn_source, Some("sni"));
    assert_eq!(rep.summary.allowlisted_alerts, 0);
    cfg.allow.dst_domains = vec!["dropboxapi.com".into()];
    let rep = common::replay(&cfg, 1, &[path]);
    assert!(rep.alerts.is_empty(), "{:?}", rep.alerts);
    assert_eq!(rep.summary.allowlisted_alerts, 1);
}
