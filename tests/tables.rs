//! Every bounded table counts what it loses (issue 12, item 6): one small capture per
//! table fills it beyond its capacity, and the replay summary and `/metrics` must both
//! show exactly the entries evicted (or refused). The tables' names come from
//! `telemetry::TABLES`, so a new table without a case here fails the last check.

mod common;

use etherparse::PacketBuilder;
use outflow::config::Config;
use outflow::decode::{decode, LinkType};
use outflow::flow::{FlowKey, RecentClosed};
use outflow::gen::tunnel_name;
use outflow::gen::{fragmented_udp, merge, Packet, TcpSession};
use outflow::replay::ReplayReport;
use outflow::telemetry::{Telemetry, TABLES};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const RESOLVER: [u8; 4] = [10, 0, 0, 1];

fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, payload)
        .unwrap();
    f
}

fn udp(ts_ns: u64, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Packet {
    Packet {
        ts_ns,
        frame: frame(src, sport, dst, dport, payload),
    }
}

/// A DNS message with one question and, for a response, one A answer if `answer` is set.
fn dns(id: u16, response: bool, rcode: u8, q: &str, answer: Option<[u8; 4]>) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.push(if response { 0x81 } else { 0x01 });
    m.push(if response { 0x80 | rcode } else { 0 });
    m.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    for l in q.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(a) = answer {
        // A pointer to the question name, type A, class IN, TTL 300, 4 bytes.
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
        m.extend_from_slice(&a);
    }
    m
}

fn query(ts_ns: u64, client: [u8; 4], port: u16, name: &str) -> Packet {
    udp(
        ts_ns,
        client,
        port,
        RESOLVER,
        53,
        &dns(port, false, 0, name, None),
    )
}

fn response(
    ts_ns: u64,
    client: [u8; 4],
    port: u16,
    rcode: u8,
    name: &str,
    a: Option<[u8; 4]>,
) -> Packet {
    udp(
        ts_ns,
        RESOLVER,
        53,
        client,
        port,
        &dns(port, true, rcode, name, a),
    )
}

/// `n` one-packet outbound UDP flows, from `src(i)` to `dst(i)`, a millisecond apart.
fn outbound(n: u32, src: impl Fn(u32) -> [u8; 4], dst: impl Fn(u32) -> [u8; 4]) -> Vec<Packet> {
    (0..n)
        .map(|i| {
            let ts = T0 + u64::from(i) * 1_000_000;
            udp(ts, src(i), 40_000 + i as u16, dst(i), 9999, &[0; 200])
        })
        .collect()
}

fn write(path: &Path, mut packets: Vec<Packet>) {
    packets.sort_by_key(|p| p.ts_ns);
    common::write_pcap(path, packets);
}

/// Replays with one worker and telemetry on; returns the report and the /metrics text.
fn replay(cfg: &Config, path: &Path) -> (ReplayReport, String) {
    let t = Telemetry::new("replay", 1, cfg.http.alerts_kept);
    let r = common::replay_with(cfg, 1, &[path.to_path_buf()], Some(Arc::clone(&t)));
    let mut buf = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &outflow::http::metrics::gather(&t),
        &mut buf,
    )
    .unwrap();
    (r, String::from_utf8(buf).unwrap())
}

/// The value of one sample of the /metrics text.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

/// The second fragment of a fragmented DNS response with IP id `id`: an orphan (its first
/// fragment never comes), held by the reader for reassembly.
fn dns_orphan(id: u16) -> Packet {
    fragmented_udp(
        "198.51.100.53:53".parse().unwrap(),
        "10.0.0.5:40000".parse().unwrap(),
        T0,
        id,
        3000,
        1480,
        false,
    )
    .swap_remove(1)
}

/// `n` IP ids whose orphans (see [`dns_orphan`]) the reader holds in the same slot: found
/// with the reader's own map, whose hash is fixed.
fn colliding_held_ids(n: usize) -> Vec<u16> {
    use outflow::capture::frag::FragPorts;
    use outflow::decode::{decode, LinkType};
    let meta = |id: u16| {
        let f = dns_orphan(id).frame;
        (decode(LinkType::Ethernet, &f, f.len() as u32).unwrap(), f)
    };
    let (base, base_frame) = meta(1);
    let mut ids = vec![1];
    for id in 2..u16::MAX {
        if ids.len() == n {
            break;
        }
        let mut m = FragPorts::new(16, 30 * S).holding(&[53]);
        m.hold(&base, &base_frame, 0);
        let (other, frame) = meta(id);
        m.hold(&other, &frame, 0);
        if m.stats.held_overwritten == 1 {
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), n);
    ids
}

type Case = (&'static str, fn(&mut Config, &Path), Vec<Packet>, u64, u64);

#[test]
fn every_table_counts_its_evictions_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let home = |i: u32| [10, 0, 2, i as u8];
    let ext = |i: u32| [198, 51, 100, i as u8];
    // (table, config, packets, capacity, evictions)
    let cases: Vec<Case> = vec![
        (
            // 25 one-packet flows through a table of 10: each of the last 15 evicts one.
            "flows",
            |c, _| c.flow.capacity_per_worker = 10,
            outbound(25, |_| [10, 0, 2, 1], ext),
            10,
            15,
        ),
        (
            // 70 outbound connections closed by a reset and reopened on the same ports:
            // each new one carries the old one's counts, in a side map of 64 (the minimum;
            // 100 flows / 256 is less): 6 carries dropped.
            "flow_carry",
            |c, _| c.flow.capacity_per_worker = 100,
            (0..70u16)
                .flat_map(|i| {
                    let t = T0 + u64::from(i) * 10_000_000;
                    let seg = |ts: u64, seq: u32, syn: bool| {
                        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                            .ipv4([10, 0, 0, 5], [203, 0, 113, 9], 64)
                            .tcp(50_000 + i, 443, seq, 65535);
                        let b = if syn { b.syn() } else { b.rst() };
                        let mut f = Vec::new();
                        b.write(&mut f, &[]).unwrap();
                        Packet {
                            ts_ns: ts,
                            frame: f,
                        }
                    };
                    [
                        seg(t, 1000, true),
                        seg(t + 1_000_000, 1001, false),
                        seg(t + 2_000_000, 900_000, true),
                    ]
                })
                .collect(),
            64,
            6,
        ),
        (
            // Five connections whose keys share a slot of the recently-closed table (64
            // slots: 100 flows / 16 is less) close by RST 10 s apart: each remembered
            // closing but the first overwrites a live one. A last packet moves the clock
            // past the fifth one's linger.
            "tcp_recent_closed",
            |c, _| c.flow.capacity_per_worker = 100,
            {
                let recent = RecentClosed::new(RecentClosed::capacity_for(100), 1);
                let seg = |ts: u64, port: u16, seq: u32, syn: bool| {
                    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                        .ipv4([10, 0, 0, 5], [203, 0, 113, 9], 64)
                        .tcp(port, 443, seq, 65535);
                    let b = if syn { b.syn() } else { b.rst() };
                    let mut f = Vec::new();
                    b.write(&mut f, &[]).unwrap();
                    Packet {
                        ts_ns: ts,
                        frame: f,
                    }
                };
                let slot = |port: u16| {
                    let f = seg(0, port, 1000, true).frame;
                    let m = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
                    recent.slot_of(&FlowKey::of(&m).0)
                };
                let first = slot(50_000);
                let ports = (50_000..u16::MAX).filter(|p| slot(*p) == first).take(5);
                let mut packets: Vec<Packet> = ports
                    .enumerate()
                    .flat_map(|(i, port)| {
                        let t = T0 + i as u64 * 10 * S;
                        [
                            seg(t, port, 1000, true),
                            seg(t + 1_000_000, port, 1001, false),
                        ]
                    })
                    .collect();
                packets.push(udp(
                    T0 + 60 * S,
                    [10, 0, 0, 5],
                    40_000,
                    [203, 0, 113, 9],
                    9,
                    &[],
                ));
                packets
            },
            64,
            4,
        ),
        (
            // 130 TCP DNS streams each holding part of a message: 128 slots, 2 evicted.
            "dns_tcp",
            |_, _| {},
            (0..130u16)
                .map(|i| {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2([1; 6], [2; 6])
                        .ipv4([10, 0, 0, 5], RESOLVER, 64)
                        .tcp(30_000 + i, 53, 1000, 65535)
                        .ack(1)
                        .psh()
                        // Length 32, 3 bytes of it: the rest never comes.
                        .write(&mut f, &[0x00, 0x20, 0x12, 0x34, 0x01])
                        .unwrap();
                    Packet {
                        ts_ns: T0 + u64::from(i) * 1_000,
                        frame: f,
                    }
                })
                .collect(),
            128,
            2,
        ),
        (
            // Three concurrent uploads alert; one may record, two are refused.
            "slice_recordings",
            |c, dir| {
                c.slice.dir = dir.to_string_lossy().into_owned();
                c.slice.max_recording = 1;
                c.detect.large_transfer.threshold_bytes = 1_000_000;
                c.detect.large_transfer.min_packets = 100;
            },
            merge(
                (0..3u32)
                    .map(|i| {
                        let mut s = TcpSession::new(
                            format!("10.0.0.{}:5100{i}", 5 + i).parse().unwrap(),
                            format!("203.0.113.{}:443", 50 + i).parse().unwrap(),
                            1_500_000,
                            0,
                        );
                        s.start_ns = T0 + u64::from(i) * 1_000_000;
                        s.packets()
                    })
                    .collect(),
            )
            .collect(),
            1,
            2,
        ),
        (
            // Five fragmented datagrams through one slot: each first fragment but the
            // first overwrites a live one.
            "fragments",
            |c, _| c.flow.fragment_capacity = 1,
            (0..5u16)
                .flat_map(|i| {
                    fragmented_udp(
                        "10.0.0.5:4000".parse().unwrap(),
                        "198.51.100.7:9999".parse().unwrap(),
                        T0 + u64::from(i) * S,
                        100 + i,
                        3000,
                        1480,
                        false,
                    )
                })
                .collect(),
            1,
            4,
        ),
        (
            // Ten fragmented DNS responses whose later fragments never come: eight slots,
            // two datagrams evicted.
            "ip_reassembly",
            |_, _| {},
            (0..10u16)
                .map(|i| {
                    let mut f = fragmented_udp(
                        "198.51.100.53:53".parse().unwrap(),
                        "10.0.0.5:40000".parse().unwrap(),
                        T0 + u64::from(i) * 1_000_000,
                        200 + i,
                        3000,
                        1480,
                        false,
                    );
                    f.swap_remove(0)
                })
                .collect(),
            8,
            2,
        ),
        (
            // Later fragments of five DNS datagrams whose held copies land in one slot of
            // the held table (ids found below): each but the first takes a live slot.
            "fragments_held",
            |_, _| {},
            colliding_held_ids(5)
                .into_iter()
                .enumerate()
                .map(|(n, id)| {
                    let mut p = dns_orphan(id);
                    p.ts_ns = T0 + n as u64 * 1_000_000;
                    p
                })
                .collect(),
            32,
            4,
        ),
        (
            // 25 one-query domains through 10 windows, no per-client share: 15 cold pairs
            // evicted.
            "dns_windows",
            |c, _| {
                c.dns.pair_capacity = 10;
                c.dns.client_share = 1.0;
                c.dns.client_min_pairs = 1;
            },
            (0..25u16)
                .map(|i| {
                    query(
                        T0 + u64::from(i) * 1_000_000,
                        [10, 0, 0, 5],
                        20_000 + i,
                        &format!("www.d{i}.com"),
                    )
                })
                .collect(),
            10,
            15,
        ),
        (
            // 25 clients get an NXDOMAIN within the window: 10 are tracked, 15 refused.
            "dns_nxdomain",
            |c, _| {
                c.dns.pair_capacity = 10;
                c.dns.client_min_pairs = 1;
            },
            (0..25u32)
                .map(|i| {
                    response(
                        T0 + u64::from(i) * 1_000_000,
                        home(i),
                        20_000,
                        3,
                        "nope.example.com",
                        None,
                    )
                })
                .collect(),
            10,
            15,
        ),
        (
            // 25 answers, each a new (client, IP), within their TTL: 15 names forgotten.
            "dns_names",
            |c, _| c.dns.name_map_capacity = 10,
            (0..25u16)
                .map(|i| {
                    response(
                        T0 + u64::from(i) * 1_000_000,
                        [10, 0, 0, 5],
                        20_000 + i,
                        0,
                        "cdn.example.com",
                        Some([192, 0, 2, i as u8]),
                    )
                })
                .collect(),
            10,
            15,
        ),
        (
            // 25 queries, never answered, within the timeout: 15 written out early.
            "dns_transactions",
            |c, _| c.dns.transaction_capacity = 10,
            (0..25u16)
                .map(|i| {
                    query(
                        T0 + u64::from(i) * 1_000_000,
                        [10, 0, 0, 5],
                        20_000 + i,
                        "a.example.com",
                    )
                })
                .collect(),
            10,
            15,
        ),
        (
            // Five tunnelling clients, one alert each, in a store of two: three forgotten.
            "alert_store",
            |c, _| c.http.alerts_kept = 2,
            (0..5u32)
                .flat_map(|h| {
                    (0..6u32).map(move |i| {
                        let ts = T0 + u64::from(h * 6 + i) * 1_000_000;
                        query(ts, home(h), 20_000 + i as u16, &tunnel_name(h * 6 + i))
                    })
                })
                .collect(),
            2,
            3,
        ),
        (
            // Five (home, external) pairs in a host-window table of two.
            "leak_pairs",
            |c, _| c.detect.host_window.capacity = 2,
            outbound(5, |_| [10, 0, 2, 1], ext),
            2,
            3,
        ),
        (
            // Five pairs' windows cross a 100-byte threshold: five groups, room for two.
            "leak_groups",
            |c, _| {
                c.detect.host_window.threshold_bytes = 100;
                c.detect.data_leak.capacity = 2;
            },
            outbound(5, |_| [10, 0, 2, 1], ext),
            2,
            3,
        ),
        (
            // Five home hosts resolve a Dropbox name and send to it: five (host, service)
            // windows, room for two.
            "cloud_windows",
            |c, _| c.cloud.capacity = 2,
            {
                let mut v = Vec::new();
                for i in 0..5u32 {
                    let t = T0 - 1_000_000_000 + u64::from(i) * 1_000_000;
                    let port = 50_000 + i as u16;
                    v.push(query(t, home(i), port, "content.dropboxapi.com"));
                    v.push(response(
                        t + 1_000,
                        home(i),
                        port,
                        0,
                        "content.dropboxapi.com",
                        Some(ext(i)),
                    ));
                }
                v.extend(outbound(5, home, ext));
                v
            },
            2,
            3,
        ),
        (
            // 260 TLS connections each send the first of three segments of a ClientHello
            // and nothing more: the stash holds 256 handshakes in progress, the last four
            // take the slots held longest.
            "tap_stash",
            |_, _| {},
            (0..260u32)
                .flat_map(|i| {
                    let mut s = outflow::gen::tls_session(
                        format!("10.0.3.{}:{}", i % 250 + 1, 40_000 + i)
                            .parse()
                            .unwrap(),
                        "162.125.6.20:443".parse().unwrap(),
                        &outflow::proto::tls::build::example_spec(b"content.dropboxapi.com"),
                        3,
                        0,
                        0,
                    );
                    s.start_ns = T0 + u64::from(i) * 1_000_000;
                    // SYN, SYN-ACK, ACK and the hello's first segment.
                    s.packets().take(4).collect::<Vec<_>>()
                })
                .collect(),
            outflow::proto::tap::STASH_SLOTS as u64,
            4,
        ),
        (
            // 68 QUIC v1 connections each send a first client Initial carrying the first
            // third of a ClientHello (the other two datagrams never come): each holds a
            // decryption state until its hello is whole, the pool (one worker) has 64, and
            // the last four take the states held longest.
            "quic_initials",
            |_, _| {},
            {
                let hello = outflow::proto::tls::build::client_hello(
                    &outflow::proto::tls::build::quic_spec(b"content.dropboxapi.com"),
                );
                (0..68u64)
                    .map(|i| {
                        outflow::gen::quic::quic_connection(
                            format!("10.0.4.{}:{}", i + 1, 50_000 + i).parse().unwrap(),
                            "162.125.6.21:443".parse().unwrap(),
                            outflow::proto::quic::Version::V1,
                            &hello,
                            3,
                            0,
                            0,
                            T0 + i * 1_000_000,
                            1_000_000,
                        )
                        .swap_remove(0)
                    })
                    .collect()
            },
            outflow::proto::tap::QUIC_SLOTS as u64,
            4,
        ),
        (
            // Five home hosts upload: baselines for two.
            "leak_hosts",
            |c, _| c.detect.baseline.capacity = 2,
            outbound(5, home, ext),
            2,
            3,
        ),
    ];
    let mut covered = BTreeSet::new();
    for (i, (table, setup, packets, capacity, evicted)) in cases.into_iter().enumerate() {
        let mut cfg = Config::default();
        let slices = dir.path().join(format!("slices{i}"));
        std::fs::create_dir_all(&slices).unwrap();
        setup(&mut cfg, &slices);
        cfg.validate().unwrap();
        let path = dir.path().join(format!("{table}.pcap"));
        write(&path, packets);
        let (r, metrics) = replay(&cfg, &path);
        let (_, cap, ev) = r
            .summary
            .table(table)
            .unwrap_or_else(|| panic!("{table}: not in the summary"));
        assert_eq!((cap, ev), (capacity, evicted), "{table}: summary");
        let text = r.summary.to_string();
        let line = format!("{table:<24} {evicted} (capacity {capacity})");
        assert!(text.contains(&line), "{table}: no `{line}` in\n{text}");
        let series = |m: &str| format!("{m}{{table=\"{table}\"}}");
        assert_eq!(
            sample(&metrics, &series("outflow_table_evictions_total")),
            Some(evicted),
            "{table}: /metrics"
        );
        assert_eq!(
            sample(&metrics, &series("outflow_table_capacity")),
            Some(capacity),
            "{table}: /metrics"
        );
        // Every table is exported, and nothing else evicted in these small captures.
        for other in TABLES {
            let n = sample(
                &metrics,
                &format!("outflow_table_evictions_total{{table=\"{other}\"}}"),
            );
            let want = if other == table { evicted } else { 0 };
            assert_eq!(n, Some(want), "{table} case: {other}");
        }
        if table == "quic_initials" {
            // The tap's own counter is the same evictions.
            assert_eq!(r.summary.flows.quic_tap.evicted, evicted, "quic tap stats");
            assert_eq!(
                sample(&metrics, "outflow_name_tap_total{event=\"quic_evicted\"}"),
                Some(evicted),
                "quic_evicted"
            );
        }
        covered.insert(table);
    }
    let all: BTreeSet<&str> = TABLES.iter().copied().collect();
    assert_eq!(covered, all, "a table without a case");
}
