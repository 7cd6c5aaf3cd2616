//! Flow records against Zeek's reference `conn.log` baselines for the public captures in
//! `../shared/pcaps/zeek/` (skipped when that folder is absent).
//!
//! For every TCP and UDP connection Zeek logged, outflow must produce a record with the same
//! originator/responder orientation and the same `orig_pkts`, `orig_ip_bytes`, `resp_pkts`,
//! `resp_ip_bytes`: Zeek's counters and ours both sum IP total lengths per direction, and
//! both pick the SYN sender (or the first packet's sender, or the SYN-ACK's receiver) as
//! originator. Connections inside tunnels (GRE, ERSPAN, VXLAN, GTP, Teredo) are matched on
//! their inner headers and must carry a tunnel list exactly when Zeek gives them
//! `tunnel_parents`; the tunnels' own UDP connections (VXLAN, GTP, Teredo) are flows too.

mod common;

use outflow::config::Config;
use outflow::flow::FlowRecord;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct ConnRow {
    line: usize,
    orig: (String, u16),
    resp: (String, u16),
    proto: String,
    counts: (u64, u64, u64, u64),
    /// Zeek's `tunnel_parents`: the connection came through a tunnel.
    tunnelled: bool,
}

fn parse_conn_log(path: &Path) -> Vec<ConnRow> {
    let text = std::fs::read_to_string(path).expect("read conn.log");
    let mut fields: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let v: HashMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
        let num = |k: &str| {
            v[k].parse::<u64>()
                .unwrap_or_else(|_| panic!("{k} in {line}"))
        };
        rows.push(ConnRow {
            line: i + 1,
            orig: (v["id.orig_h"].to_string(), num("id.orig_p") as u16),
            resp: (v["id.resp_h"].to_string(), num("id.resp_p") as u16),
            proto: v["proto"].to_string(),
            counts: (
                num("orig_pkts"),
                num("orig_ip_bytes"),
                num("resp_pkts"),
                num("resp_ip_bytes"),
            ),
            tunnelled: v.get("tunnel_parents").is_some_and(|t| *t != "-"),
        });
    }
    rows
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "other",
    }
}

/// Same connection. ICMP: Zeek's `orig_p` is the first message's type, as ours; its
/// `resp_p` is the type of the expected answer where ours is the code, so it is not
/// compared.
fn matches(r: &FlowRecord, row: &ConnRow) -> bool {
    proto_name(r.proto) == row.proto
        && r.orig_addr.to_ip(r.ipv6).to_string() == row.orig.0
        && r.orig_port == row.orig.1
        && r.resp_addr.to_ip(r.ipv6).to_string() == row.resp.0
        && (row.proto == "icmp" || r.resp_port == row.resp.1)
}

fn zeek_cases(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut cases = Vec::new();
    for dir in std::fs::read_dir(root.join("zeek"))
        .expect("zeek dir")
        .flatten()
    {
        let conn = dir.path().join("baseline/conn.log");
        if !conn.exists() {
            continue;
        }
        let pcap = std::fs::read_dir(dir.path())
            .expect("case dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .expect("a capture next to the baseline");
        cases.push((pcap, conn));
    }
    cases.sort();
    cases
}

#[test]
fn flow_records_match_zeek_conn_log() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let cases = zeek_cases(&root);
    assert!(
        cases.len() >= 8,
        "expected the zeek cases, found {}",
        cases.len()
    );
    let mut checked = 0;
    let mut tunnelled = 0;
    let mut mismatches: Vec<(String, String)> = Vec::new();
    for (pcap, conn) in &cases {
        let case = case_name(conn);
        let rows = parse_conn_log(conn);
        for workers in [1, 4] {
            let report = common::replay(&Config::default(), workers, std::slice::from_ref(pcap));
            for row in &rows {
                let got: Vec<_> = report
                    .flows
                    .iter()
                    .filter(|r| matches(r, row))
                    .map(|r| {
                        (
                            (r.orig.pkts, r.orig.ip_bytes, r.resp.pkts, r.resp.ip_bytes),
                            r.tunnel.is_some(),
                        )
                    })
                    .collect();
                // A connection Zeek saw inside a tunnel carries its tunnel list here.
                if got.contains(&(row.counts, row.tunnelled)) {
                    checked += 1;
                    if row.tunnelled {
                        tunnelled += 1;
                    }
                    continue;
                }
                mismatches.push((
                    case.clone(),
                    format!(
                        "{}:{} {:?} -> {:?} {}: zeek (orig_pkts, orig_ip_bytes, resp_pkts, resp_ip_bytes) = {:?}, outflow = {:?} ({} workers)",
                        conn.display(),
                        row.line,
                        row.orig,
                        row.resp,
                        row.proto,
                        row.counts,
                        got,
                        workers
                    ),
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}",
        mismatches
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // TCP, UDP and ICMP connections of all the cases, with 1 and 4 workers; the tunnel,
    // MPLS and PPPoE cases (ERSPAN I/II, GRE in GRE, GTP, Teredo, VXLAN, PPPoE, VLAN+MPLS)
    // included.
    assert!(checked >= 300, "only {checked} connections checked");
    assert!(
        tunnelled >= 30,
        "only {tunnelled} tunnelled connections checked"
    );
    eprintln!("{checked} connections checked, {tunnelled} of them tunnelled");
}

fn case_name(conn: &Path) -> String {
    conn.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
