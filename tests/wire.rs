//! The event stream's wire format ([`outflow::event::encode`] / [`decode`]) on the events a
//! worker really produces: every event of the committed captures (the demo, the DNS
//! scenarios), of a generated capture of named (TLS, HTTP, QUIC) and tunnelled (VXLAN,
//! Geneve, ERSPAN) flows, and of every capture in `../shared/pcaps` (skipped when absent)
//! decodes to itself; damaged and hostile messages give errors, never panics; and the
//! encoded size per variant on the demo capture (`cargo test --test wire sizes --
//! --nocapture` prints it).

mod common;

use outflow::config::Config;
use outflow::event::{decode, encode, Event, EventKey, WireError, WIRE_VERSION};
use outflow::gen::{merge, wrap, Packet, Wrap};
use outflow::proto::NameSource;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

/// Every variant of [`Event`], by [`variant`]'s names.
const VARIANTS: [&str; 6] = ["Flow", "Alert", "Dns", "Volume", "Age", "Name"];

fn variant(e: &Event) -> &'static str {
    match e {
        Event::Flow(_) => "Flow",
        Event::Alert(_) => "Alert",
        Event::Dns(_) => "Dns",
        Event::Volume(_) => "Volume",
        Event::Age(_) => "Age",
        Event::Name(_) => "Name",
    }
}

/// The default config, with age reports from 1 s on (`min_duration / 64`; 64 s is the
/// smallest `min_duration` the config accepts) and large-transfer alerts from 1 MB, so
/// short captures produce every kind of event.
fn config() -> Config {
    let mut cfg = Config::default();
    cfg.detect.long_connection.min_duration = std::time::Duration::from_secs(64);
    cfg.detect.large_transfer.threshold_bytes = 1_000_000;
    cfg.detect.large_transfer.min_packets = 10;
    cfg.detect.large_transfer.tiers = vec![2_000_000];
    cfg
}

/// Encodes and decodes every event through one reused buffer and checks it comes back
/// equal (an alert's read time excepted: it is not carried); counts the variants.
fn round_trip(events: &[(EventKey, Event)], seen: &mut BTreeMap<&'static str, u64>) {
    let mut buf = Vec::new();
    for (k, e) in events {
        buf.clear();
        encode(k, e, &mut buf).unwrap();
        let mut want = e.clone();
        if let Event::Alert(a) = &mut want {
            a.read_mono_ns = 0;
        }
        let got = decode(&buf).unwrap_or_else(|err| panic!("{err}: {e:?}"));
        assert_eq!(got, (*k, want));
        *seen.entry(variant(e)).or_default() += 1;
    }
}

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Named and tunnelled flows: TLS uploads whole and inside VXLAN (alerts with names and a
/// tunnel), an HTTP PUT inside Geneve, a QUIC connection inside ERSPAN III, a plain HTTP
/// upload, a QUIC connection and a DNS lookup.
fn generated_capture(dir: &Path) -> PathBuf {
    use outflow::gen::quic::quic_connection;
    use outflow::proto::quic::Version;
    use outflow::proto::tls::build::{client_hello, example_spec, quic_spec};
    let tls = |client: &str, server: &str, sni: &[u8], at: u64| -> Vec<Packet> {
        let mut s = outflow::gen::tls_session(
            sa(client),
            sa(server),
            &example_spec(sni),
            2,
            3_000_000,
            40_000,
        );
        s.start_ns = T0 + at * S;
        // About 2 s long: its age crosses the 1 s and 2 s report points.
        s.gap_ns = 1_000_000;
        s.packets().collect()
    };
    let http = |client: &str, server: &str, host: &str, at: u64| -> Vec<Packet> {
        let mut s = outflow::gen::http_upload(
            sa(client),
            sa(server),
            "PUT",
            host,
            "/upload/report.bin?part=1",
            1_500_000,
            900,
        );
        s.start_ns = T0 + at * S;
        s.packets().collect()
    };
    let hello = client_hello(&quic_spec(b"www.gstatic.com"));
    let quic = |client: &str, at: u64| {
        quic_connection(
            sa(client),
            sa("142.250.0.10:443"),
            Version::V1,
            &hello,
            2,
            48_000,
            4_800,
            T0 + at * S,
            1_000_000,
        )
    };
    let wrapped = |w: Wrap, packets: Vec<Packet>| -> Vec<Packet> {
        packets
            .into_iter()
            .enumerate()
            .map(|(i, p)| Packet {
                ts_ns: p.ts_ns,
                frame: wrap(w, &p.frame, i as u32),
            })
            .collect()
    };
    let streams: Vec<Vec<Packet>> = vec![
        outflow::gen::a_lookup(
            [10, 0, 0, 5],
            53_000,
            "content.dropboxapi.com",
            [162, 125, 6, 20],
            T0,
        ),
        tls(
            "10.0.0.5:40000",
            "162.125.6.20:443",
            b"content.dropboxapi.com",
            1,
        ),
        wrapped(
            Wrap::Vxlan { vni: 77 },
            tls(
                "10.0.0.6:40001",
                "162.125.6.21:443",
                b"paste.example.org",
                2,
            ),
        ),
        http(
            "10.0.0.7:40002",
            "93.184.216.34:80",
            "upload.example.com:8080",
            3,
        ),
        wrapped(
            Wrap::Geneve { vni: 5 },
            http("10.0.0.8:40003", "93.184.216.35:80", "files.example.net", 4),
        ),
        quic("10.0.0.9:52000", 5),
        wrapped(Wrap::ErspanIII { session: 9 }, quic("10.0.0.10:52001", 6)),
    ];
    let path = dir.join("named-tunnelled.pcap");
    common::write_pcap(
        &path,
        merge(streams.into_iter().map(Vec::into_iter).collect()),
    );
    path
}

/// The committed DNS scenario captures.
fn dns_captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(manifest("pcaps/dns"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "pcaps/dns holds the DNS scenarios");
    v
}

#[test]
fn every_event_of_the_committed_and_generated_captures_round_trips() {
    let cfg = config();
    let mut seen = BTreeMap::new();
    round_trip(
        &common::worker_events(&cfg, &[manifest("pcaps/demo.pcap")]),
        &mut seen,
    );
    for f in dns_captures() {
        round_trip(&common::worker_events(&cfg, &[f]), &mut seen);
    }
    let dir = tempfile::tempdir().unwrap();
    let generated = common::worker_events(&cfg, &[generated_capture(dir.path())]);
    round_trip(&generated, &mut seen);
    eprintln!("events by variant: {seen:?}");
    for v in VARIANTS {
        assert!(
            seen.get(v).is_some_and(|n| *n > 0),
            "no {v} event: {seen:?}"
        );
    }

    // The generated capture exercised the optional parts: names of every source, tunnels
    // of three kinds, on flow records and alerts alike.
    let mut sources = Vec::new();
    let mut tunnels = Vec::new();
    let (mut named_alerts, mut tunnelled_alerts, mut named_flows) = (0, 0, 0);
    for (_, e) in &generated {
        match e {
            Event::Name(n) => sources.push(n.source),
            Event::Flow(r) => {
                named_flows += usize::from(r.names().is_some());
                if let Some(t) = r.tunnel() {
                    tunnels.extend(t.hops().iter().map(|h| h.kind));
                }
            }
            Event::Alert(a) => {
                named_alerts += usize::from(a.names.is_some());
                tunnelled_alerts += usize::from(a.tunnel.is_some());
            }
            _ => {}
        }
    }
    for s in [NameSource::Sni, NameSource::HttpHost, NameSource::QuicSni] {
        assert!(sources.contains(&s), "no {s:?} name: {sources:?}");
    }
    use outflow::decode::TunnelKind;
    for k in [TunnelKind::Vxlan, TunnelKind::Geneve, TunnelKind::ErspanIII] {
        assert!(tunnels.contains(&k), "no {k:?} tunnel: {tunnels:?}");
    }
    assert!(named_flows >= 6, "{named_flows} named flow records");
    assert!(
        named_alerts >= 2 && tunnelled_alerts >= 1,
        "alerts: {named_alerts} named, {tunnelled_alerts} tunnelled"
    );
}

/// Every capture file under `root`, sorted.
fn captures_under(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        let name = p.to_string_lossy().to_string();
        if p.is_dir() {
            captures_under(&p, out);
        } else if [".pcap", ".pcapng", ".cap", ".pcap.gz", ".trace"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn every_event_of_the_shared_captures_round_trips() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let mut files = Vec::new();
    captures_under(&root, &mut files);
    let cfg = config();
    let mut seen = BTreeMap::new();
    for f in &files {
        round_trip(
            &common::worker_events(&cfg, std::slice::from_ref(f)),
            &mut seen,
        );
    }
    eprintln!(
        "{} shared captures, events by variant: {seen:?}",
        files.len()
    );
    for v in ["Flow", "Dns", "Name", "Volume"] {
        assert!(
            seen.get(v).is_some_and(|n| *n > 0),
            "no {v} event: {seen:?}"
        );
    }
}

#[test]
fn encoded_sizes_on_the_demo_capture() {
    let events = common::worker_events(&config(), &[manifest("pcaps/demo.pcap")]);
    // (count, sum, max) of the encoded bytes, by variant.
    let mut sizes: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    // Every DNS event's size apart from its arena's used bytes: the zeros after them do
    // not travel (1 KiB each before).
    let mut dns_rest_max = 0u64;
    let mut buf = Vec::new();
    for (k, e) in &events {
        buf.clear();
        encode(k, e, &mut buf).unwrap();
        let n = buf.len() as u64;
        let s = sizes.entry(variant(e)).or_default();
        s.0 += 1;
        s.1 += n;
        s.2 = s.2.max(n);
        if let Event::Dns(d) = e {
            let used = d.arena.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            dns_rest_max = dns_rest_max.max(n - used as u64);
        }
    }
    println!("encoded size per event on pcaps/demo.pcap (version byte included):");
    println!(
        "  {:<8} {:>7} {:>10} {:>9}",
        "variant", "events", "mean B", "max B"
    );
    let (mut all_n, mut all_sum) = (0, 0);
    for (v, (n, sum, max)) in &sizes {
        println!("  {v:<8} {n:>7} {:>10.1} {max:>9}", *sum as f64 / *n as f64);
        all_n += n;
        all_sum += sum;
    }
    println!(
        "  {:<8} {all_n:>7} {:>10.1}",
        "all",
        all_sum as f64 / all_n.max(1) as f64
    );
    println!("  DNS events: at most {dns_rest_max} bytes besides their arena's used bytes");
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(dns_rest_max > 0 && dns_rest_max < 256, "{dns_rest_max}");
}

/// Valid messages to damage: up to 16 events of each variant, from the demo capture and
/// the generated one.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let cfg = config();
        let dir = tempfile::tempdir().unwrap();
        let mut events = common::worker_events(&cfg, &[manifest("pcaps/demo.pcap")]);
        events.extend(common::worker_events(
            &cfg,
            &[generated_capture(dir.path())],
        ));
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for (k, e) in &events {
            let n = per.entry(variant(e)).or_default();
            if *n < 16 {
                *n += 1;
                let mut buf = Vec::new();
                encode(k, e, &mut buf).unwrap();
                out.push(buf);
            }
        }
        out
    })
}

/// A message that decoded must encode again and decode to the same event: whatever the
/// decoder accepts is a value the encoder can carry.
fn check_accepted(bytes: &[u8]) {
    if let Ok((k, e)) = decode(bytes) {
        let mut again = Vec::new();
        encode(&k, &e, &mut again).unwrap();
        assert_eq!(decode(&again).unwrap(), (k, e));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        versioned in any::<bool>(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        if versioned {
            bytes.insert(0, WIRE_VERSION);
        }
        check_accepted(&bytes);
    }

    #[test]
    fn decode_never_panics_on_damaged_messages(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let valid = pick.get(corpus());
        let mut bytes = valid.clone();
        for (at, bit) in &flips {
            let i = at.index(bytes.len());
            if let Some(b) = bytes.get_mut(i) {
                *b ^= 1 << bit;
            }
        }
        if let Some(c) = cut {
            let keep = c.index(bytes.len());
            bytes.truncate(keep);
            if flips.is_empty() {
                // A strict prefix of a message is never a message.
                prop_assert!(decode(&bytes).is_err());
            }
        }
        bytes.extend_from_slice(&tail);
        check_accepted(&bytes);
        if flips.is_empty() && cut.is_none() && !tail.is_empty() {
            prop_assert!(
                matches!(decode(&bytes), Err(WireError::Trailing(n)) if n == tail.len()),
                "trailing bytes accepted"
            );
        }
    }
}

#[test]
fn a_message_of_another_version_is_refused_with_both_versions() {
    let mut msg = corpus().first().unwrap().clone();
    msg[0] = WIRE_VERSION + 1;
    match decode(&msg) {
        Err(WireError::Version { found, expected }) => {
            assert_eq!((found, expected), (WIRE_VERSION + 1, WIRE_VERSION));
        }
        other => panic!("{other:?}"),
    }
}
