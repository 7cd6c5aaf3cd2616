//! A correlator's snapshot ([`Correlator::snapshot`] / [`Correlator::restore`]) is exact: a
//! correlator restored from a snapshot taken after `k` events of a stream, fed the rest,
//! gives exactly the outputs the original gave after those `k` events, whatever `k` — on
//! the events a worker really produces from the committed captures (the demo, the DNS
//! scenarios), a generated capture of cloud uploads and long connections, and a generated
//! capture of thousands of hosts and flows, under a config whose thresholds are low enough
//! that every detector holds state at the cuts. Hostile bytes give errors, never panics.
//! `cargo test --test snapshot sizes -- --nocapture` prints the snapshot sizes.

mod common;

use outflow::config::Config;
use outflow::correlate::{CorrelateSnapshotError, Correlator, Output, TABLES};
use outflow::event::Event;
use outflow::gen::{a_lookup, merge, Packet, TcpSession};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

/// Low thresholds and short windows: host windows close and make threshold events, groups
/// pass their data-leak total, uploads cross the large-transfer tiers and the cloud
/// threshold, connections become long and incidents hold news and close idle, all within
/// the captures' minutes, so each has state at the cuts and outputs after them.
fn config() -> Config {
    let mut c = Config::default();
    let d = &mut c.detect;
    d.large_transfer.threshold_bytes = 200_000;
    d.large_transfer.min_packets = 10;
    d.large_transfer.tiers = vec![1_000_000, 4_000_000];
    d.host_window.window = Duration::from_secs(5);
    d.host_window.threshold_bytes = 20_000;
    d.data_leak.total_bytes = 100_000;
    d.data_leak.suppression = Duration::from_secs(60);
    d.long_connection.min_duration = Duration::from_secs(4);
    d.long_connection.min_flows = 2;
    d.asymmetry.min_out_bytes = 50_000;
    d.service_outlier.min_flows = 3;
    d.service_outlier.min_out_bytes = 1_000;
    c.cloud.threshold_bytes = 100_000;
    c.dns.nxdomain_threshold = 3;
    c.incident.hold = Duration::from_secs(2);
    c.incident.idle = Duration::from_secs(30);
    c
}

/// The events one worker produces from `inputs`, in key order as the output thread's
/// merge hands them to the stage.
fn worker_events(cfg: &Config, inputs: &[PathBuf]) -> Vec<Event> {
    let mut events = common::worker_events(cfg, inputs);
    events.sort_by_key(|(k, _)| *k);
    events.into_iter().map(|(_, e)| e).collect()
}

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A host that resolves Dropbox and uploads to it over several connections (a cloud
/// window, and data-leak windows to one destination), a second host's slow upload that
/// stays open for a minute (a long connection), and connections to a home server's port
/// whose durations the long-connection detector learns; and a host's failing lookups.
fn cloud_and_long_capture(dir: &Path) -> PathBuf {
    let session = |client: &str, server: &str, at_ms: u64, up: u64, down: u64, gap_ms: u64| {
        let mut s = TcpSession::new(sa(client), sa(server), up, down);
        s.start_ns = T0 + at_ms * 1_000_000;
        s.gap_ns = gap_ms * 1_000_000;
        s.packets().collect::<Vec<Packet>>()
    };
    let mut streams = vec![a_lookup(
        [10, 0, 0, 5],
        53_000,
        "content.dropboxapi.com",
        [162, 125, 6, 20],
        T0,
    )];
    for i in 0..6u64 {
        streams.push(session(
            &format!("10.0.0.5:{}", 40_000 + i),
            "162.125.6.20:443",
            1_000 + i * 9_000,
            400_000,
            8_000,
            2,
        ));
    }
    // About a minute: its age crosses the 4 s report points and their doublings.
    streams.push(session(
        "10.0.0.6:41000",
        "198.51.100.9:443",
        500,
        300_000,
        20_000,
        120,
    ));
    // External clients of a home server: short sessions, then a long one.
    for i in 0..5u64 {
        streams.push(session(
            &format!("203.0.113.{}:50000", 10 + i),
            "10.0.0.80:5432",
            2_000 + i * 3_000,
            2_000,
            30_000,
            1,
        ));
    }
    streams.push(session(
        "203.0.113.99:50001",
        "10.0.0.80:5432",
        20_000,
        3_000,
        120_000,
        400,
    ));
    // A host whose lookups of made-up names fail: an NXDOMAIN burst.
    for i in 0..8u64 {
        let mut lookup = a_lookup(
            [10, 0, 0, 7],
            54_000 + i as u16,
            &format!("q{i}x7kd{i}zv.com"),
            [192, 0, 2, 1],
            T0 + (3_000 + i * 1_500) * 1_000_000,
        );
        // The response's rcode (Ethernet, IPv4 and UDP headers, then the DNS header's
        // fourth byte) says NXDOMAIN; its UDP checksum is dropped (0: none, for IPv4).
        let resp = &mut lookup[1].frame;
        resp[14 + 20 + 8 + 3] = 0x83;
        resp[14 + 20 + 6] = 0;
        resp[14 + 20 + 7] = 0;
        streams.push(lookup);
    }
    let path = dir.join("cloud-long.pcap");
    common::write_pcap(
        &path,
        merge(streams.into_iter().map(Vec::into_iter).collect()),
    );
    path
}

/// The streams of the exactness test, by name, read once.
fn streams() -> &'static Vec<(String, Vec<Event>)> {
    static STREAMS: OnceLock<Vec<(String, Vec<Event>)>> = OnceLock::new();
    STREAMS.get_or_init(|| {
        let cfg = config();
        let dir = tempfile::tempdir().unwrap();
        let mut v = vec![(
            "demo".to_string(),
            worker_events(&cfg, &[manifest("pcaps/demo.pcap")]),
        )];
        let mut dns: Vec<PathBuf> = std::fs::read_dir(manifest("pcaps/dns"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .collect();
        dns.sort();
        assert!(!dns.is_empty(), "pcaps/dns holds the DNS scenarios");
        for f in dns {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            v.push((name, worker_events(&cfg, &[f])));
        }
        v.push((
            "cloud-long".into(),
            worker_events(&cfg, &[cloud_and_long_capture(dir.path())]),
        ));
        let flows = dir.path().join("flows.pcap");
        outflow::gen::write_flows(&flows, 3_000, 7).unwrap();
        v.push(("flows".into(), worker_events(&cfg, &[flows])));
        v
    })
}

fn correlator(cfg: &Config) -> Correlator {
    Correlator::new(Some(cfg), true, None)
}

/// What the outputs say, as text (every field of every output, DNS boxes by value).
fn render(o: &Output) -> String {
    format!("{o:?}")
}

/// Packet time of an event.
fn ts_of(e: &Event) -> u64 {
    match e {
        Event::Dns(d) => d.ts_ns,
        Event::Alert(a) => a.ts_ns,
        Event::Flow(r) => r.last_ns,
        Event::Volume(v) | Event::Age(v) => v.ts_ns,
        Event::Name(n) => n.ts_ns,
    }
}

/// Feeds `events`, then moves the clock to three days after the stream's last event
/// (windows close, days end, incidents go idle) and ends the input.
fn run_to_end(c: &mut Correlator, all: &[Event], from: usize, out: &mut Vec<String>) {
    for e in all.iter().skip(from) {
        c.on_event(e.clone(), &mut |o| out.push(render(&o)));
    }
    let last = all.iter().map(ts_of).max().unwrap_or(0);
    c.tick(last + 3 * 86_400 * S, &mut |o| out.push(render(&o)));
    c.finish(&mut |o| out.push(render(&o))).unwrap();
}

/// What holds state at a cut, by the stage's table occupancy and open incidents.
fn holding(c: &mut Correlator) -> Vec<&'static str> {
    let st = c.stats();
    let mut v: Vec<&'static str> = TABLES
        .iter()
        .zip(st.tables)
        .filter(|(_, t)| t.0 > 0)
        .map(|(n, _)| *n)
        .collect();
    if st.incidents.open > 0 {
        v.push("incidents");
    }
    v
}

/// The detectors and incident updates among rendered outputs.
fn kinds(lines: &[String]) -> BTreeSet<String> {
    let mut k = BTreeSet::new();
    for l in lines {
        if let Some(i) = l.find("detector: ").filter(|_| l.starts_with("Finding(")) {
            let rest = &l[i + "detector: ".len()..];
            let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
            k.insert(rest[..end].to_string());
        }
        if l.starts_with("Incident(") {
            for u in ["Opened", "Escalated", "Closed"] {
                if l.contains(&format!("update: {u}")) {
                    k.insert(format!("incident {u}"));
                }
            }
        }
    }
    k
}

/// The exactness property on every stream, at cuts from the start to the very end: the
/// original runs once, snapshotting at each cut; a correlator restored from each snapshot
/// (one of them after it had already taken other events: restoring replaces) gives the
/// original's outputs after the cut, line for line.
#[test]
fn a_restored_correlator_continues_exactly() {
    let cfg = config();
    let mut held = BTreeSet::new();
    let mut after_cuts = BTreeSet::new();
    for (name, events) in streams() {
        let n = events.len();
        assert!(n > 10, "{name}: {n} events");
        let cuts: BTreeSet<usize> = [0, 1, n / 4, n / 2, 3 * n / 4, n - 2, n]
            .into_iter()
            .collect();
        // The original, snapshotting at each cut.
        let mut a = correlator(&cfg);
        let mut a_out = Vec::new();
        let mut snaps = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if cuts.contains(&i) {
                held.extend(holding(&mut a));
                snaps.push((i, a_out.len(), a.snapshot().unwrap()));
            }
            a.on_event(e.clone(), &mut |o| a_out.push(render(&o)));
        }
        held.extend(holding(&mut a));
        snaps.push((n, a_out.len(), a.snapshot().unwrap()));
        let mut tail = Vec::new();
        run_to_end(&mut a, events, n, &mut tail);
        a_out.extend(tail);

        for (k, said, snap) in &snaps {
            let mut b = correlator(&cfg);
            if *k == n / 2 {
                // Already busy with other events: the snapshot replaces all of it.
                let mut ignored = Vec::new();
                for e in events.iter().skip(n / 3).take(n / 3) {
                    b.on_event(e.clone(), &mut |o| ignored.push(render(&o)));
                }
            }
            b.restore(snap)
                .unwrap_or_else(|e| panic!("{name} at {k}: {e}"));
            let mut b_out = Vec::new();
            run_to_end(&mut b, events, *k, &mut b_out);
            let want = &a_out[*said..];
            if let Some(i) =
                (0..want.len().max(b_out.len())).find(|i| want.get(*i) != b_out.get(*i))
            {
                panic!(
                    "{name}, cut at event {k} of {n}: output {i} differs\n original: {:?}\n restored: {:?}",
                    want.get(i),
                    b_out.get(i)
                );
            }
            after_cuts.extend(kinds(want));
        }
        eprintln!(
            "{name}: {n} events, {} outputs, cuts {:?}",
            a_out.len(),
            snaps.iter().map(|s| s.0).collect::<Vec<_>>()
        );
    }
    eprintln!("state held at the cuts: {held:?}");
    eprintln!("outputs after the cuts: {after_cuts:?}");
    // Every table had entries at some cut, and incidents were open.
    for t in TABLES.iter().chain(&["incidents"]) {
        assert!(held.contains(t), "no cut with {t} state: {held:?}");
    }
    // What came after the cuts exercised every detector these captures can raise, and
    // incidents through their whole life.
    for k in [
        "LargeTransfer",
        "DataLeak",
        "Asymmetry",
        "DnsTunnel",
        "NxdomainBurst",
        "CloudUpload",
        "LongConnection",
        "ServiceOutlier",
        "incident Opened",
        "incident Escalated",
        "incident Closed",
    ] {
        assert!(after_cuts.contains(k), "no {k} after a cut: {after_cuts:?}");
    }
}

/// A snapshot fits a stage configured alike only: one with no analysers, or the analysers
/// of a bus sensor's local stage, refuses it by name and is left as it was.
#[test]
fn a_snapshot_of_another_stage_is_refused() {
    let cfg = config();
    let (_, events) = &streams()[0];
    let mut a = correlator(&cfg);
    for e in &events[..events.len() / 2] {
        a.on_event(e.clone(), &mut |_| {});
    }
    let snap = a.snapshot().unwrap();
    let mut bare = Correlator::new(None, false, None);
    let err = bare.restore(&snap).unwrap_err();
    assert!(matches!(err, CorrelateSnapshotError::Mismatch(_)), "{err}");
    let mut local = Correlator::local(&cfg, true);
    let err = local.restore(&snap).unwrap_err();
    assert!(err.to_string().contains("cloud"), "{err}");
    assert_eq!(local.stats(), Correlator::local(&cfg, true).stats());
}

fn valid_snapshot() -> &'static Vec<u8> {
    static SNAP: OnceLock<Vec<u8>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let cfg = config();
        let (_, events) = &streams()[0];
        let mut a = correlator(&cfg);
        for e in &events[..events.len() / 2] {
            a.on_event(e.clone(), &mut |_| {});
        }
        a.snapshot().unwrap()
    })
}

/// The snapshot's state, uncompressed (its postcard bytes).
fn raw_of(snap: &[u8]) -> Vec<u8> {
    zstd::decode_all(&snap[1..]).unwrap()
}

fn framed(raw: &[u8]) -> Vec<u8> {
    let mut v = vec![snap_version()];
    v.extend(zstd::encode_all(raw, 1).unwrap());
    v
}

fn snap_version() -> u8 {
    outflow::correlate::snapshot::SNAPSHOT_FORMAT
}

#[test]
fn an_empty_or_other_version_snapshot_is_refused_by_name() {
    let mut c = correlator(&config());
    assert!(matches!(c.restore(&[]), Err(CorrelateSnapshotError::Empty)));
    let mut other = valid_snapshot().clone();
    other[0] = snap_version().wrapping_add(1);
    let err = c.restore(&other).unwrap_err();
    assert!(
        matches!(err, CorrelateSnapshotError::Version { found, .. } if found == other[0]),
        "{err}"
    );
    assert!(err.to_string().contains("version"), "{err}");
    // The valid one, and its state with bytes after it.
    c.restore(valid_snapshot()).unwrap();
    let mut raw = raw_of(valid_snapshot());
    raw.extend([0, 0]);
    assert!(matches!(
        c.restore(&framed(&raw)),
        Err(CorrelateSnapshotError::Trailing(2))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes after the version byte: an error (a zstd frame is needed first).
    #[test]
    fn random_bytes_are_an_error_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut c = correlator(&config());
        let mut bytes = vec![snap_version()];
        bytes.extend(body);
        prop_assert!(c.restore(&bytes).is_err());
    }

    /// A valid snapshot cut short: an error.
    #[test]
    fn a_truncated_snapshot_is_an_error(cut in 0usize..1_000_000) {
        let snap = valid_snapshot();
        let cut = cut % snap.len();
        let mut c = correlator(&config());
        prop_assert!(c.restore(&snap[..cut]).is_err());
    }

    /// The state itself damaged (in a valid frame, so postcard and the checks see it): cut
    /// short, or bytes overwritten. Cut short is an error; overwritten may still be a state
    /// (a counter changed), but never a panic.
    #[test]
    fn a_damaged_state_is_an_error_or_a_state_never_a_panic(
        cut in 0usize..1_000_000,
        flips in proptest::collection::vec((0usize..1_000_000, any::<u8>()), 1..6),
    ) {
        let raw = raw_of(valid_snapshot());
        let mut c = correlator(&config());
        let short = &raw[..cut % raw.len()];
        prop_assert!(c.restore(&framed(short)).is_err());
        let mut bad = raw.clone();
        for (at, b) in flips {
            let i = at % bad.len();
            bad[i] = b;
        }
        let _ = c.restore(&framed(&bad));
    }
}

/// Sizes of the snapshot (compressed, and its state uncompressed) on the demo capture, the
/// generated stream of 3000 flows and one of 30 000 flows (~10 000 home hosts, ~2000
/// domains): the largest of the snapshots taken every `n / 20` events, and the one at the
/// end of the events (before the end of input closes anything), with the time to take and
/// to restore that one (debug build: an optimised one is several times faster).
#[test]
fn sizes() {
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("flows-30k.pcap");
    outflow::gen::write_flows(&big, 30_000, 11).unwrap();
    let big = ("flows-30k".to_string(), worker_events(&cfg, &[big]));
    let named = streams()
        .iter()
        .filter(|(n, _)| n == "demo" || n == "flows");
    for (name, events) in named.chain(std::iter::once(&big)) {
        let mut a = correlator(&cfg);
        let step = (events.len() / 20).max(1);
        let mut largest = (0, 0);
        for (i, e) in events.iter().enumerate() {
            a.on_event(e.clone(), &mut |_| {});
            if i % step == 0 {
                let snap = a.snapshot().unwrap();
                largest = largest.max((raw_of(&snap).len(), snap.len()));
            }
        }
        let t = std::time::Instant::now();
        let snap = a.snapshot().unwrap();
        let took = t.elapsed();
        let raw = raw_of(&snap);
        let t = std::time::Instant::now();
        correlator(&cfg).restore(&snap).unwrap();
        let back = t.elapsed();
        let st = a.stats();
        eprintln!(
            "{name}: {} events; largest snapshot {} bytes ({} uncompressed); at the end {} bytes \
             ({} uncompressed, {:.1}x), taken in {took:?}, restored in {back:?}; tables {:?}, \
             incidents open {}",
            events.len(),
            largest.1,
            largest.0,
            snap.len(),
            raw.len(),
            raw.len() as f64 / snap.len() as f64,
            TABLES
                .iter()
                .zip(st.tables)
                .map(|(n, t)| (*n, t.0))
                .collect::<Vec<_>>(),
            st.incidents.open,
        );
        if let Some(d) = std::env::var_os("SNAPSHOT_DUMP") {
            std::fs::write(Path::new(&d).join(format!("{name}.raw")), &raw).unwrap();
        }
        assert!(snap.len() < raw.len());
    }
}
