//! DNS analysis on generated captures: per-domain query rates, suspicious queries, NXDOMAIN
//! bursts, IP→name enrichment of flow alerts, TCP DNS across segments, and the same output
//! for any number of workers.

mod common;

use etherparse::PacketBuilder;
use outflow::config::Config;
use outflow::detect::Detector;
use outflow::gen::tunnel_name;
use outflow::gen::{merge, Packet, TcpSession};
use outflow::output::json::{alert_json, dns_alert_json, dns_record_json};
use std::path::Path;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn name(out: &mut Vec<u8>, n: &str) {
    for l in n.split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

/// A DNS message: one question, answers as (owner, type, ttl, rdata).
fn dns(
    id: u16,
    response: bool,
    rcode: u8,
    q: &str,
    qtype: u16,
    answers: &[(&str, u16, u32, Vec<u8>)],
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.push(if response { 0x81 } else { 0x01 });
    m.push(if response { 0x80 | rcode } else { 0 });
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    name(&mut m, q);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for (owner, t, ttl, rdata) in answers {
        name(&mut m, owner);
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    }
    m
}

fn encoded(n: &str) -> Vec<u8> {
    let mut v = Vec::new();
    name(&mut v, n);
    v
}

fn udp(ts: u64, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Packet {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, payload)
        .unwrap();
    Packet {
        ts_ns: ts,
        frame: f,
    }
}

const CLIENT: [u8; 4] = [10, 0, 0, 5];
const RESOLVER: [u8; 4] = [10, 0, 0, 1];

/// `n` query/response pairs for `name_of(i)` spread evenly over `span` seconds.
fn lookups(n: u32, span: u64, rcode: u8, name_of: impl Fn(u32) -> String) -> Vec<Packet> {
    let mut v = Vec::new();
    for i in 0..n {
        let ts = T0 + u64::from(i) * span * S / u64::from(n.max(1));
        let q = name_of(i);
        let port = 20_000 + (i % 40_000) as u16;
        let id = i as u16;
        v.push(udp(
            ts,
            CLIENT,
            port,
            RESOLVER,
            53,
            &dns(id, false, 0, &q, 1, &[]),
        ));
        let ans: Vec<(&str, u16, u32, Vec<u8>)> = if rcode == 0 {
            vec![(q.as_str(), 1, 300, vec![192, 0, 2, (i % 250) as u8])]
        } else {
            vec![]
        };
        v.push(udp(
            ts + 1_000_000,
            RESOLVER,
            53,
            CLIENT,
            port,
            &dns(id, true, rcode, &q, 1, &ans),
        ));
    }
    v
}

fn write(path: &Path, packets: impl Iterator<Item = Packet>) {
    common::write_pcap(path, packets);
}

#[test]
fn query_rate_per_domain_alerts_above_500_in_5_minutes() {
    let dir = tempfile::tempdir().unwrap();
    // Ordinary-looking names (low entropy, short): only the rate can give them away.
    let host = |i: u32| format!("host{}.updates.example.co.uk", i % 350);
    for (n, alerts) in [(600u32, 1usize), (400, 0)] {
        let path = dir.path().join(format!("rate{n}.pcap"));
        write(&path, lookups(n, 290, 0, host).into_iter());
        let one = common::replay(&Config::default(), 1, std::slice::from_ref(&path));
        let tunnel: Vec<_> = one
            .dns_alerts
            .iter()
            .filter(|a| a.detector == Detector::DnsTunnel)
            .collect();
        assert_eq!(tunnel.len(), alerts, "{n} queries: {:?}", one.dns_alerts);
        assert_eq!(one.dns_records.len(), n as usize);
        assert!(one
            .dns_records
            .iter()
            .all(|r| r.query_seen && r.response_seen));
        if let Some(a) = tunnel.first() {
            assert_eq!(a.reason, "query_rate");
            assert_eq!(a.client.to_string(), "10.0.0.5");
            // PSL split: the registered domain under co.uk, not "co.uk" or "example.co.uk"'s parent.
            assert_eq!(a.domain, "example.co.uk");
            assert_eq!(a.queries, 501, "fires on the 501st query");
            assert_eq!(a.suspicious_subdomains, 0);
            // The message says what was seen, over the time it was seen in (the 501st
            // query comes 241.7 s after the first), not the window's length.
            let m = dns_alert_json(a);
            assert!(m.contains("501 queries ("), "{m}");
            assert!(m.contains("unique subdomains) in 242 s"), "{m}");
            assert!(
                (330..=370).contains(&a.unique_subdomains),
                "{}",
                a.unique_subdomains
            );
            assert_eq!(a.samples.len(), 5);
        }
        // Same output with 4 workers (queries use 600 different ports: all workers busy).
        let four = common::replay(&Config::default(), 4, &[path]);
        let render = |r: &outflow::replay::ReplayReport| {
            (
                r.dns_alerts.iter().map(dns_alert_json).collect::<Vec<_>>(),
                r.dns_records
                    .iter()
                    .map(|r| dns_record_json(r, 0))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(render(&one), render(&four));
    }
}

#[test]
fn suspicious_subdomains_alert_and_allowlist_holds() {
    let dir = tempfile::tempdir().unwrap();
    // Base32-looking 40-character labels (entropy ≈ 4.5): 8 of them in a minute.
    let random = tunnel_name;
    let path = dir.path().join("tunnel.pcap");
    write(&path, lookups(8, 60, 0, random).into_iter());
    let r = common::replay(&Config::default(), 2, std::slice::from_ref(&path));
    assert_eq!(r.dns_alerts.len(), 1, "{:?}", r.dns_alerts);
    let a = &r.dns_alerts[0];
    assert_eq!(
        (a.reason, a.domain.as_str()),
        ("suspicious_subdomains", "exfil-c2.net")
    );
    assert_eq!(
        (a.queries, a.suspicious_subdomains, a.unique_subdomains),
        (6, 6, 6),
        "fires on the 6th unique suspicious subdomain"
    );
    assert_eq!(a.encoding.name(), "base32");
    assert!(a.worst_score.entropy > 4.0);
    assert!(r.dns_records.iter().all(|d| d.suspicious));

    // The same queries under an allowlisted domain never alert.
    let mut cfg = Config::default();
    cfg.dns.allow_domains.push("exfil-c2.net".into());
    let r = common::replay(&cfg, 2, &[path]);
    assert!(r.dns_alerts.is_empty());
    assert_eq!(r.summary.dns.allowlisted, 8);
}

#[test]
fn nxdomain_burst_alerts_once_per_suppression_interval() {
    let dir = tempfile::tempdir().unwrap();
    let dga = |i: u32| format!("q{i}x.example{}.com", i % 97);
    for (n, alerts) in [(150u32, 1usize), (100, 0)] {
        let path = dir.path().join(format!("nx{n}.pcap"));
        write(&path, lookups(n, 200, 3, dga).into_iter());
        let r = common::replay(&Config::default(), 2, &[path]);
        let nx: Vec<_> = r
            .dns_alerts
            .iter()
            .filter(|a| a.detector == Detector::NxdomainBurst)
            .collect();
        assert_eq!(nx.len(), alerts, "{n} NXDOMAIN");
        if let Some(a) = nx.first() {
            assert_eq!(a.nxdomains, 101);
            assert_eq!(a.client.to_string(), "10.0.0.5");
        }
        assert!(r.dns_records.iter().all(|d| d.rcode == Some(3)));
    }
}

#[test]
fn flow_alerts_carry_the_name_the_client_resolved() {
    let dir = tempfile::tempdir().unwrap();
    // www.example.org CNAME cdn.example.net A 203.0.113.50, then a 3 MB upload to it.
    let resp = dns(
        7,
        true,
        0,
        "www.example.org",
        1,
        &[
            ("www.example.org", 5, 60, encoded("cdn.example.net")),
            ("cdn.example.net", 1, 20, vec![203, 0, 113, 50]),
        ],
    );
    let mut pk = vec![
        udp(
            T0,
            CLIENT,
            40_000,
            RESOLVER,
            53,
            &dns(7, false, 0, "www.example.org", 1, &[]),
        ),
        udp(T0 + 1_000_000, RESOLVER, 53, CLIENT, 40_000, &resp),
    ];
    let mut up = TcpSession::new(
        "10.0.0.5:51000".parse().unwrap(),
        "203.0.113.50:443".parse().unwrap(),
        3_000_000,
        0,
    );
    up.start_ns = T0 + S;
    // Another host uploading to the same address never resolved it: no name.
    let mut other = up.clone();
    other.client = "10.0.0.6:51000".parse().unwrap();
    other.start_ns = T0 + 2 * S;
    pk.extend(merge(vec![up.packets(), other.packets()]));
    let path = dir.path().join("enrich.pcap");
    write(&path, pk.into_iter());
    let mut cfg = Config::default();
    cfg.detect.large_transfer.threshold_bytes = 1_000_000;
    cfg.detect.large_transfer.min_packets = 100;
    let r = common::replay(&cfg, 2, &[path]);
    assert_eq!(r.alerts.len(), 2);
    let by = |src: &str| r.alerts.iter().find(|a| a.src.to_string() == src).unwrap();
    // The TTL was 20 s but names are kept at least dns.name_ttl_min (5 min).
    assert_eq!(by("10.0.0.5").dst_fqdn.as_deref(), Some("www.example.org"));
    assert!(alert_json(by("10.0.0.5"), 0).contains("\"dst_fqdn\":\"www.example.org\""));
    assert_eq!(by("10.0.0.6").dst_fqdn, None);
    let rec = &r.dns_records[0];
    assert_eq!(rec.answers, vec!["cdn.example.net", "203.0.113.50"]);
    assert_eq!(rec.ttls, vec![60, 20]);
    assert_eq!(rec.rtt_ns, Some(1_000_000));
}

#[test]
fn tcp_dns_is_reassembled_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let q = dns(0x1234, false, 0, "split.example.com", 28, &[]);
    let a = dns(
        0x1234,
        true,
        0,
        "split.example.com",
        28,
        &[(
            "split.example.com",
            28,
            300,
            vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        )],
    );
    let framed = |m: &[u8]| {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    let (fq, fa) = (framed(&q), framed(&a));
    let tcp = |ts: u64, from_client: bool, seq: u32, payload: &[u8]| {
        let (s, sp, d, dp) = if from_client {
            (CLIENT, 41_000, RESOLVER, 53)
        } else {
            (RESOLVER, 53, CLIENT, 41_000)
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(s, d, 64)
            .tcp(sp, dp, seq, 65535)
            .ack(1)
            .psh()
            .write(&mut f, payload)
            .unwrap();
        Packet {
            ts_ns: ts,
            frame: f,
        }
    };
    // The query in one segment; the response split in three, one segment retransmitted.
    let (a1, rest) = fa.split_at(1);
    let (a2, a3) = rest.split_at(20);
    let packets = vec![
        tcp(T0, true, 1000, &fq),
        tcp(T0 + 10, false, 5000, a1),
        tcp(T0 + 20, false, 5001, a2),
        tcp(T0 + 25, false, 5001, a2),
        tcp(T0 + 30, false, 5021, a3),
    ];
    let path = dir.path().join("tcpdns.pcap");
    write(&path, packets.into_iter());
    let r = common::replay(&Config::default(), 1, &[path]);
    assert_eq!(r.dns_records.len(), 1, "{:?}", r.dns_records);
    let rec = &r.dns_records[0];
    assert_eq!(rec.proto, 6);
    assert_eq!(
        (rec.query.as_str(), rec.qtype, rec.rcode),
        ("split.example.com", 28, Some(0))
    );
    assert_eq!(rec.answers, vec!["2001:db8::1"]);
    assert!(rec.query_seen && rec.response_seen);
}

/// Review findings: the name map keeps a name through re-resolutions at capacity, and a
/// slow upload is named by the answer in force when it started, even after the TTL.
#[test]
fn enrichment_survives_map_churn_and_slow_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let answer = |id: u16, port: u16, ts: u64, name: &str, ip: [u8; 4]| {
        vec![
            udp(
                ts,
                CLIENT,
                port,
                RESOLVER,
                53,
                &dns(id, false, 0, name, 1, &[]),
            ),
            udp(
                ts + 1_000_000,
                RESOLVER,
                53,
                CLIENT,
                port,
                &dns(id, true, 0, name, 1, &[(name, 1, 60, ip.to_vec())]),
            ),
        ]
    };
    let mut pk = Vec::new();
    for i in 0..5u16 {
        pk.extend(answer(
            i,
            30_000 + i,
            T0 + u64::from(i) * S,
            "popular.example.com",
            [192, 0, 2, 1],
        ));
    }
    pk.extend(answer(
        9,
        30_100,
        T0 + 10 * S,
        "evil.example",
        [203, 0, 113, 66],
    ));
    // 1.5 MB at one segment per 0.4 s: crosses 1 MB about 4.8 minutes after its start,
    // far beyond the 60 s TTL.
    let mut up = TcpSession::new(
        "10.0.0.5:51000".parse().unwrap(),
        "203.0.113.66:443".parse().unwrap(),
        1_500_000,
        0,
    );
    up.start_ns = T0 + 11 * S;
    up.gap_ns = 400_000_000;
    pk.extend(up.packets());
    let path = dir.path().join("churn.pcap");
    write(&path, pk.into_iter());
    let mut cfg = Config::default();
    cfg.dns.name_map_capacity = 3;
    cfg.dns.name_ttl_min = std::time::Duration::from_secs(60);
    cfg.detect.large_transfer.threshold_bytes = 1_000_000;
    cfg.detect.large_transfer.min_packets = 100;
    let r = common::replay(&cfg, 2, &[path]);
    assert_eq!(r.alerts.len(), 1);
    assert!(
        r.alerts[0].ts_ns > up.start_ns + 120 * S,
        "the alert comes late"
    );
    assert_eq!(r.alerts[0].dst_fqdn.as_deref(), Some("evil.example"));
}

/// Many interleaved TCP DNS streams, each message in its own segment: parsed without
/// reassembly slots, so every worker count gives every transaction.
#[test]
fn interleaved_tcp_dns_streams_do_not_depend_on_workers() {
    let dir = tempfile::tempdir().unwrap();
    let framed = |m: &[u8]| {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    let seg = |ts: u64, port: u16, to_server: bool, seq: u32, payload: &[u8]| {
        let (s, sp, d, dp) = if to_server {
            (CLIENT, port, RESOLVER, 53)
        } else {
            (RESOLVER, 53, CLIENT, port)
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(s, d, 64)
            .tcp(sp, dp, seq, 65535)
            .ack(1)
            .psh()
            .write(&mut f, payload)
            .unwrap();
        Packet {
            ts_ns: ts,
            frame: f,
        }
    };
    let mut pk = Vec::new();
    for i in 0..200u16 {
        let name = format!("n{i}.example.com");
        pk.push(seg(
            T0 + u64::from(i),
            42_000 + i,
            true,
            1,
            &framed(&dns(i, false, 0, &name, 1, &[])),
        ));
    }
    for i in 0..200u16 {
        let name = format!("n{i}.example.com");
        let a = dns(
            i,
            true,
            0,
            &name,
            1,
            &[(name.as_str(), 1, 60, vec![192, 0, 2, 9])],
        );
        pk.push(seg(
            T0 + 1000 + u64::from(i),
            42_000 + i,
            false,
            1,
            &framed(&a),
        ));
    }
    let path = dir.path().join("tcpmix.pcap");
    write(&path, pk.into_iter());
    for workers in [1, 4] {
        let r = common::replay(&Config::default(), workers, std::slice::from_ref(&path));
        let answered = r
            .dns_records
            .iter()
            .filter(|d| d.query_seen && d.response_seen)
            .count();
        assert_eq!(answered, 200, "{workers} workers");
    }
}

/// Issue 12, item 5: 40 000 lookups of distinct domains within 10 s (the default table
/// holds 32 768 pairs: full at 8.2 s) and a 60-query tunnel that starts at 8.5 s. The
/// tunnel alerts whether the flood comes from another host, from sixteen hosts, or from
/// the tunnelling host itself, and the summary counts exactly the windows evicted: with
/// one flooding host it holds only its share (4096) and replaces its own pairs; sixteen
/// hosts stay within their shares and fill the table, whose one-query pairs go first.
/// (The table used to refuse new pairs once full: this tunnel was never tracked, and the
/// summary said nothing.)
#[test]
fn a_flood_of_distinct_domains_does_not_blind_the_tunnel_detector() {
    const FLOOD: u32 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let cap = u64::try_from(Config::default().dns.pair_capacity).unwrap();
    let share = cap / 8;
    let cases: [(&str, Vec<[u8; 4]>, &str, u64); 3] = [
        (
            "another host",
            vec![[10, 0, 0, 7]],
            "client_share",
            u64::from(FLOOD) - share,
        ),
        (
            "sixteen hosts",
            (0..16).map(|h| [10, 0, 1, h]).collect(),
            "cold",
            u64::from(FLOOD) + 1 - cap,
        ),
        (
            "the tunnelling host",
            vec![CLIENT],
            "client_share",
            u64::from(FLOOD) + 1 - share,
        ),
    ];
    for (what, flooders, reason, evicted) in cases {
        let mut pk = Vec::new();
        for i in 0..FLOOD {
            let ts = T0 + u64::from(i) * 10 * S / u64::from(FLOOD);
            let src = flooders[i as usize % flooders.len()];
            let port = 1024 + (i % 60_000) as u16;
            let q = dns(i as u16, false, 0, &format!("www.d{i}.com"), 1, &[]);
            pk.push(udp(ts, src, port, RESOLVER, 53, &q));
        }
        for i in 0..60u32 {
            let ts = T0 + 8_500_000_000 + u64::from(i) * 25_000_000;
            let q = dns(i as u16, false, 0, &tunnel_name(i), 16, &[]);
            pk.push(udp(ts, CLIENT, 50_000, RESOLVER, 53, &q));
        }
        pk.sort_by_key(|p| p.ts_ns);
        let path = dir.path().join("flood.pcap");
        write(&path, pk.into_iter());
        let r = common::replay(&Config::default(), 2, &[path]);
        let tunnel: Vec<_> = r
            .dns_alerts
            .iter()
            .filter(|a| a.detector == Detector::DnsTunnel)
            .collect();
        assert_eq!(tunnel.len(), 1, "{what}: {:?}", r.dns_alerts);
        let a = tunnel[0];
        assert_eq!(
            (a.client.to_string().as_str(), a.domain.as_str(), a.reason),
            ("10.0.0.5", "exfil-c2.net", "suspicious_subdomains"),
            "{what}"
        );
        assert_eq!((a.queries, a.suspicious_subdomains), (6, 6), "{what}");
        let d = &r.summary.dns;
        assert_eq!(d.queries, u64::from(FLOOD) + 60, "{what}");
        let by_reason = d.pairs_evicted.by_reason();
        for (name, n) in outflow::correlate::dns_pairs::PairEvictions::REASONS
            .iter()
            .zip(by_reason)
        {
            let want = if *name == reason { evicted } else { 0 };
            assert_eq!(n, want, "{what}: {name} evictions");
        }
        let held = u64::from(FLOOD) + 1 - evicted;
        assert_eq!(
            r.summary.table("dns_windows"),
            Some((held, cap, evicted)),
            "{what}"
        );
        let text = r.summary.to_string();
        let line =
            format!("dns_windows              {evicted} (capacity {cap}): {reason} {evicted}");
        assert!(text.contains(&line), "{what}: no `{line}` in\n{text}");
    }
}
