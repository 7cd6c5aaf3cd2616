//! The Community ID (`community_id`) of flow records, DNS records, alerts and incidents
//! against the public references in `../shared/pcaps` (skipped when that folder is absent):
//! Zeek's `bifs/community_id/run-pcaps` baselines (TCP, UDP, ICMP, ICMPv6, SCTP over IPv4
//! and IPv6), its `community-id-logging` conn.log, and suricata-verify's `community-id-ipv4`
//! (seed 7). Plus a generated upload inside VXLAN: every output names it with the id of the
//! inner connection.

mod common;

use outflow::config::Config;
use outflow::decode::{decode, LinkType};
use outflow::flow::FlowTuple;
use outflow::output::{Output, Sinks};
use outflow::replay::{run, ReplayOptions, ReplayReport};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What a replay wrote: the collected report and the JSON lines of each output.
struct Written {
    report: ReplayReport,
    flows: Vec<Value>,
    alerts: Vec<Value>,
    dns: Vec<Value>,
}

/// Replays `inputs` with `cfg` through the real outputs (files), as `outflow replay` does.
fn replay_written(cfg: &Config, inputs: &[PathBuf]) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let (flows, alerts, dns) = (
        dir.path().join("flows.json"),
        dir.path().join("alerts.json"),
        dir.path().join("dns.json"),
    );
    let report = run(&ReplayOptions {
        config: cfg.clone(),
        workers: Some(2),
        inputs: inputs.to_vec(),
        sinks: Sinks {
            alerts: Some(Output::File(alerts.clone())),
            flows: Some(Output::File(flows.clone())),
            dns: Some(Output::File(dns.clone())),
            collect: true,
            append: false,
            ordered: true,
            syslog: None,
            ipfix: None,
            sink_queue: 4096,
            telemetry: None,
            slice_requests: None,
            dns_recycle: None,
            bus: None,
        },
        progress: false,
    })
    .expect("replay");
    let lines = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    Written {
        report,
        flows: lines(&flows),
        alerts: lines(&alerts),
        dns: lines(&dns),
    }
}

fn cid(v: &Value) -> &str {
    v["community_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no community_id in {v}"))
}

/// One line of a run-pcaps baseline: Zeek's conn id and its Community ID.
struct ZeekRow {
    proto: u8,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    id: String,
}

/// `[orig_h=A, orig_p=N/tcp, resp_h=B, resp_p=M/tcp, proto=6, ctx=[]], 1:...`
fn parse_run_pcaps(path: &Path) -> Vec<ZeekRow> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let (tuple, id) = l.rsplit_once("], ").expect("conn id, then the id");
            let field = |k: &str| {
                let at = tuple.find(&format!("{k}=")).expect(k) + k.len() + 1;
                let rest = &tuple[at..];
                rest[..rest.find([',', ']']).unwrap_or(rest.len())].to_string()
            };
            let port = |k: &str| field(k).split('/').next().unwrap().parse::<u16>().unwrap();
            ZeekRow {
                proto: field("proto").parse().unwrap(),
                orig: (field("orig_h").parse().unwrap(), port("orig_p")),
                resp: (field("resp_h").parse().unwrap(), port("resp_p")),
                id: id.trim().to_string(),
            }
        })
        .collect()
}

/// The Community ID of every IP packet of a capture, from outflow's decoder (ICMP: the
/// message's type and code as ports).
fn packet_ids(pcap: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(pcap).unwrap();
    let (head, recs) = common::pcap_records(&bytes);
    let le = head[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || head[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let dlt = [head[20], head[21], head[22], head[23]];
    let dlt = if le {
        i32::from_le_bytes(dlt)
    } else {
        i32::from_be_bytes(dlt)
    };
    let link = LinkType::from_dlt(dlt);
    recs.iter()
        .filter_map(|r| {
            let wire = u32::from_le_bytes([r[12], r[13], r[14], r[15]]);
            let wire = if le { wire } else { wire.swap_bytes() };
            decode(link, &r[16..], wire).ok()
        })
        .map(|m| {
            FlowTuple {
                proto: m.proto,
                ipv6: m.ipv6,
                src: m.src,
                dst: m.dst,
                sport: m.sport,
                dport: m.dport,
            }
            .community_id(0)
            .to_string()
        })
        .collect()
}

/// The spec's own baseline for `sctp.pcap` (community-id-spec `baseline/baseline_deflt.json`):
/// the association 192.168.170.8:7 ↔ 192.168.170.56:7. Zeek's run-pcaps baseline was made
/// by a Zeek without an SCTP analyser, which saw no ports ("0/unknown") and hashed 0 and 0;
/// outflow reads SCTP's ports, as the spec, Suricata and pycommunityid do.
const SPEC_SCTP: &str = "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=";

/// Every connection of Zeek's run-pcaps baselines: (1) the baseline's id is what
/// `community_id` gives for Zeek's conn id; (2) the ids of the capture's packets, as outflow
/// decodes them, are exactly the baseline's set (SCTP: the spec's value); (3) every flow
/// record outflow writes carries one of them, no two the same (ICMP between two hosts is
/// one flow in outflow, named by its first message, so icmp6.pcap's 14 connections are 10
/// records); where the counts agree, the records' ids are exactly the baseline's.
#[test]
fn zeek_run_pcaps_baselines() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let dir = root.join("zeek/bifs__community_id__run-pcaps");
    let mut total = 0;
    // (capture, Zeek connections, outflow flow records)
    let expect: &[(&str, usize, usize)] = &[
        ("arp.pcap", 0, 0),
        ("icmp.pcap", 1, 1),
        ("icmp6.pcap", 14, 10),
        ("ipv6.pcap", 1, 1),
        ("sctp.pcap", 1, 1),
        ("tcp.pcap", 1, 1),
        ("udp.pcap", 1, 1),
    ];
    for &(file, conns, records) in expect {
        let rows = parse_run_pcaps(&dir.join(format!("baseline/{file}.out")));
        assert_eq!(rows.len(), conns, "{file}");
        let pcap = dir.join(file);
        for r in &rows {
            let t = FlowTuple::new(r.proto, r.orig.0, r.orig.1, r.resp.0, r.resp.1);
            assert_eq!(t.community_id(0).to_string(), r.id, "{file}: {:?}", r.orig);
        }
        let want: BTreeSet<String> = if file == "sctp.pcap" {
            [SPEC_SCTP.to_string()].into()
        } else {
            rows.iter().map(|r| r.id.clone()).collect()
        };
        assert_eq!(packet_ids(&pcap), want, "{file}: packet ids");
        let w = replay_written(&Config::default(), &[pcap]);
        let got: Vec<&str> = w.flows.iter().map(cid).collect();
        assert!(got.iter().all(|id| want.contains(*id)), "{file}: {got:?}");
        assert_eq!(got.len(), records, "{file}: {got:?}");
        let distinct: BTreeSet<&str> = got.iter().copied().collect();
        assert_eq!(distinct.len(), records, "{file}: one id per record");
        if records == conns {
            assert_eq!(
                got.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
                want,
                "{file}"
            );
        }
        eprintln!(
            "{file}: {} Zeek connections, {} packet ids, {} flow records, all matching",
            rows.len(),
            want.len(),
            got.len()
        );
        total += rows.len();
        // The DNS query in udp.pcap: its transaction record names the same connection.
        if file == "udp.pcap" {
            assert_eq!(w.dns.len(), 1);
            assert_eq!(cid(&w.dns[0]), "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
        }
    }
    assert_eq!(total, 19);
}

/// Zeek conn.log baselines with a `community_id` column (`protocols/conn/community-id-logging`,
/// cut to the columns its test names): each row's id is that of outflow's record of the
/// connection.
#[test]
fn zeek_conn_log_community_id() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let mut checked = 0;
    for case in std::fs::read_dir(root.join("zeek")).unwrap().flatten() {
        let dir = case.path();
        for name in ["conn.log", "conn.log.cut"] {
            let log = dir.join("baseline").join(name);
            let Ok(text) = std::fs::read_to_string(&log) else {
                continue;
            };
            // The columns: a conn.log's `#fields`, or the zeek-cut command that made the cut.
            let script: String = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "zeek"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect();
            let fields: Vec<String> = match text.lines().find_map(|l| l.strip_prefix("#fields\t")) {
                Some(f) => f.split('\t').map(String::from).collect(),
                None => match script.lines().find_map(|l| {
                    let at = l.find("zeek-cut ")? + "zeek-cut ".len();
                    Some(l[at..].split(" <").next()?.to_string())
                }) {
                    Some(c) => c.split_whitespace().map(String::from).collect(),
                    None => continue,
                },
            };
            let Some(cid_col) = fields.iter().position(|f| f == "community_id") else {
                continue;
            };
            let col = |k: &str| fields.iter().position(|f| f == k).unwrap();
            let pcap = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
                .expect("a capture");
            let w = replay_written(&Config::default(), &[pcap]);
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                let v: Vec<&str> = line.split('\t').collect();
                let rec = w
                    .flows
                    .iter()
                    .find(|f| {
                        f["orig_ip"] == v[col("id.orig_h")]
                            && f["orig_port"].as_u64() == v[col("id.orig_p")].parse().ok()
                            && f["resp_ip"] == v[col("id.resp_h")]
                            && f["resp_port"].as_u64() == v[col("id.resp_p")].parse().ok()
                    })
                    .unwrap_or_else(|| panic!("{}: no record for {line}", log.display()));
                assert_eq!(cid(rec), v[cid_col], "{}: {line}", log.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "no conn.log with a community_id column");
    eprintln!("{checked} conn.log rows with a community_id checked");
}

/// suricata-verify tests whose checks name a `community_id` (`community-id-ipv4`, seed 7 in
/// its suricata.yaml): replayed with `output.community_id_seed` set alike, each `flow` check
/// matches exactly `count` flow records (same 5-tuple, same id); the checks of other event
/// types (`tls`) name the same id for the same 5-tuple, so the flow record answers them
/// too.
#[test]
fn suricata_verify_community_id() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let mut checked = 0;
    for case in std::fs::read_dir(root.join("suricata-verify"))
        .unwrap()
        .flatten()
    {
        let dir = case.path();
        let Ok(yaml) = std::fs::read_to_string(dir.join("test.yaml")) else {
            continue;
        };
        if !yaml.contains("community_id") {
            continue;
        }
        let seed = std::fs::read_to_string(dir.join("suricata.yaml"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.trim().strip_prefix("community-id-seed:"))
            .map_or(0, |s| s.trim().parse::<u16>().unwrap());
        let mut cfg = Config::default();
        cfg.output.community_id_seed = seed;
        let w = replay_written(&cfg, &[dir.join("input.pcap")]);
        let test: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        for check in test["checks"].as_sequence().unwrap() {
            let f = &check["filter"];
            let m = &f["match"];
            let Some(want) = m["community_id"].as_str() else {
                continue;
            };
            let s = |k: &str| match &m[k] {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => panic!("{k} in {m:?}"),
            };
            let hits = w
                .flows
                .iter()
                .filter(|r| {
                    r["proto"].as_str() == Some(&s("proto").to_lowercase())
                        && r["orig_ip"] == s("src_ip").as_str()
                        && r["orig_port"].as_u64() == s("src_port").parse().ok()
                        && r["resp_ip"] == s("dest_ip").as_str()
                        && r["resp_port"].as_u64() == s("dest_port").parse().ok()
                        && cid(r) == want
                })
                .count();
            let count = f["count"].as_u64().unwrap_or(1) as usize;
            if m["event_type"].as_str() == Some("flow") {
                assert_eq!(hits, count, "{}: {m:?}", dir.display());
            } else {
                assert_eq!(hits, 1, "{}: {m:?}", dir.display());
            }
            checked += 1;
            // The seed matters: the spec's default gives another id.
            let mut t = w.report.flows.iter().map(FlowTuple::of_record);
            assert!(t.any(|t| t.community_id(seed).as_str() == want));
            assert!(w
                .report
                .flows
                .iter()
                .all(|r| FlowTuple::of_record(r).community_id(0).as_str() != want));
        }
    }
    assert!(checked >= 2, "only {checked} community_id checks");
    eprintln!("{checked} suricata-verify community_id checks");
}

/// A 3 MB upload inside a VXLAN mirror: its flow record, its large-transfer alert and its
/// incident's flow all carry the Community ID of the inner connection (as Zeek gives a
/// tunnelled connection), not the tunnel's; the tunnel's own flow has the outer one.
#[test]
fn a_tunnelled_upload_is_named_by_its_inner_connection_everywhere() {
    use outflow::gen::{wrap, TcpSession, Wrap, MIRROR_DST, MIRROR_SRC};
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("vxlan-upload.pcap");
    let mut up = TcpSession::new(
        "10.0.0.5:40000".parse().unwrap(),
        "198.51.100.7:443".parse().unwrap(),
        3_000_000,
        10_000,
    );
    up.start_ns = 1_700_000_000_000_000_000;
    common::write_pcap(
        &pcap,
        up.packets().enumerate().map(|(i, p)| outflow::gen::Packet {
            ts_ns: p.ts_ns,
            frame: wrap(Wrap::Vxlan { vni: 7 }, &p.frame, i as u32),
        }),
    );
    let mut cfg = Config::default();
    cfg.detect.large_transfer.threshold_bytes = 1_000_000;
    cfg.detect.large_transfer.min_packets = 100;
    cfg.detect.large_transfer.tiers = vec![];
    cfg.incident.per_detector_lines = true;
    let w = replay_written(&cfg, &[pcap]);
    let inner = FlowTuple::new(
        6,
        "10.0.0.5".parse().unwrap(),
        40000,
        "198.51.100.7".parse().unwrap(),
        443,
    )
    .community_id(0)
    .to_string();
    let rec: Vec<&Value> = w.flows.iter().filter(|r| r["resp_port"] == 443).collect();
    assert_eq!(rec.len(), 1, "{:?}", w.flows);
    assert!(rec[0]["tunnel"].is_array());
    assert_eq!(cid(rec[0]), inner);
    // The mirror session's own flow: the outer addresses' id.
    let outer: Vec<&Value> = w
        .flows
        .iter()
        .filter(|r| r["tunnel_outer"].is_string())
        .collect();
    assert!(!outer.is_empty());
    for o in &outer {
        let ip = |k: &str| o[k].as_str().unwrap().parse::<IpAddr>().unwrap();
        let port = |k: &str| o[k].as_u64().unwrap() as u16;
        let want = FlowTuple::new(
            17,
            ip("orig_ip"),
            port("orig_port"),
            ip("resp_ip"),
            port("resp_port"),
        )
        .community_id(0)
        .to_string();
        assert_eq!(cid(o), want);
        assert_ne!(cid(o), inner);
        assert_eq!(
            [ip("orig_ip"), ip("resp_ip")],
            [IpAddr::from(MIRROR_SRC), IpAddr::from(MIRROR_DST)]
        );
    }
    let alerts: Vec<&Value> = w
        .alerts
        .iter()
        .filter(|a| a["detector"] == "large_outbound_transfer")
        .collect();
    assert_eq!(alerts.len(), 1, "{:?}", w.alerts);
    assert_eq!(cid(alerts[0]), inner);
    let incidents: Vec<&Value> = w
        .alerts
        .iter()
        .filter(|a| a["incident_id"].is_string())
        .collect();
    assert!(!incidents.is_empty());
    for i in incidents {
        let flows = i["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 1, "{i}");
        assert_eq!(cid(&flows[0]), inner, "{i}");
    }
    assert_eq!(w.report.alerts.len(), 1);
}
