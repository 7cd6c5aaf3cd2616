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
