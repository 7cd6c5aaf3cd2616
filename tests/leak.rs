//! Slow leaks: host-window threshold events summed into data-leak totals over 24 hours.

mod common;

use outflow::config::{Config, GroupBy};
use outflow::gen::{merge, PcapWriter, TcpSession};
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::Path;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const MB: u64 = 1_000_000;
/// 120 MB in bursts of 3 to 8 MB; the bursts of 5 MB or more (the ones that make a
/// threshold event) add up to 109 MB. Spread over 15 h all of them fall in one 24 h window;
/// spread over 30 h no 24 h window holds more than 88 MB of them.
const BURSTS: [u64; 18] = [8, 8, 7, 6, 4, 7, 8, 8, 4, 6, 8, 3, 7, 8, 7, 7, 6, 8];

fn burst(src: &str, dst: &str, mb: u64, start_ns: u64) -> TcpSession {
    let mut s = TcpSession::new(
        src.parse::<SocketAddr>().unwrap(),
        dst.parse::<SocketAddr>().unwrap(),
        mb * MB,
        2_000,
    );
    s.mss = 8960;
    s.ack_every = 8;
    s.start_ns = start_ns;
    s
}

fn write(path: &Path, sessions: &[TcpSession]) {
    let mut w =
        PcapWriter::new(BufWriter::new(std::fs::File::create(path).unwrap()), 1, 96).unwrap();
    for p in merge(sessions.iter().map(|s| s.packets()).collect()) {
        w.write(p.ts_ns, &p.frame).unwrap();
    }
    w.into_inner().unwrap();
}

fn spread(hours: u64) -> Vec<TcpSession> {
    let gap = hours * 3600 * S / BURSTS.len() as u64;
    BURSTS
        .iter()
        .enumerate()
        .map(|(i, mb)| {
            burst(
                "10.0.0.5:40000",
                "198.51.100.77:443",
                *mb,
                T0 + i as u64 * gap,
            )
        })
        .collect()
}

#[test]
fn uploads_over_15_hours_are_a_data_leak_over_30_they_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = spread(15);
    let path = dir.path().join("15h.pcap");
    write(&path, &sessions);
    let r = common::replay(&Config::default(), 2, &[path]);
    // Every burst of 5 MB or more made one threshold event; smaller ones none.
    let events: Vec<&TcpSession> = sessions.iter().filter(|s| s.upload >= 5 * MB).collect();
    assert_eq!(r.summary.leak.threshold_events, events.len() as u64);
    // Exactly one alert, at the event that carried the total over 100 MB.
    assert_eq!(r.leak_alerts.len(), 1, "{:?}", r.leak_alerts);
    let a = &r.leak_alerts[0];
    let mut total = 0;
    let crossing = events
        .iter()
        .position(|s| {
            total += s.expected().orig_ip_bytes;
            total > 100 * MB
        })
        .unwrap();
    assert_eq!(a.events, crossing as u64 + 1);
    assert_eq!(a.total_bytes, total);
    assert_eq!(a.peers, 1);
    assert_eq!(a.src.unwrap().to_string(), "10.0.0.5");
    assert_eq!(a.dst.unwrap().to_string(), "198.51.100.77");
    // The event closes its pair's 5-minute window, which opened with the burst.
    let s = events[crossing];
    assert!(a.ts_ns > s.start_ns && a.ts_ns <= s.start_ns + 300 * S + S);
    assert!(a.first_ns - events[0].start_ns < 301 * S);

    let path = dir.path().join("30h.pcap");
    write(&path, &spread(30));
    let r = common::replay(&Config::default(), 2, &[path]);
    assert_eq!(r.summary.leak.threshold_events, events.len() as u64);
    assert!(r.leak_alerts.is_empty(), "{:?}", r.leak_alerts);
}

#[test]
fn group_by_src_catches_one_host_spreading_over_20_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let sessions: Vec<TcpSession> = (0..20u64)
        .map(|i| {
            burst(
                "10.0.0.9:41000",
                &format!("203.0.113.{}:443", 10 + i),
                6,
                T0 + i * 1800 * S,
            )
        })
        .collect();
    let path = dir.path().join("spread.pcap");
    write(&path, &sessions);
    // Per (src, dst) no group reaches 100 MB...
    let r = common::replay(&Config::default(), 1, std::slice::from_ref(&path));
    assert_eq!(r.summary.leak.threshold_events, 20);
    assert!(r.leak_alerts.is_empty());
    // ...per source it does, on the 17th event (17 × ~6.03 MB).
    let mut cfg = Config::default();
    cfg.detect.data_leak.group_by = GroupBy::Src;
    let r = common::replay(&cfg, 3, &[path]);
    assert_eq!(r.leak_alerts.len(), 1, "{:?}", r.leak_alerts);
    let a = &r.leak_alerts[0];
    assert_eq!((a.events, a.peers), (17, 17));
    assert_eq!(a.dst, None);
    assert_eq!(a.src.unwrap().to_string(), "10.0.0.9");
}

#[test]
fn allowlisted_sources_and_destination_names_never_alert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("15h.pcap");
    write(&path, &spread(15));
    let mut cfg = Config::default();
    cfg.allow.src_cidrs = vec!["10.0.0.5/32".parse().unwrap()];
    let r = common::replay(&cfg, 2, &[path]);
    assert!(r.leak_alerts.is_empty());
    assert_eq!(
        r.summary.leak.volumes, 0,
        "an allowlisted source is not outbound"
    );
}

fn with_state(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.state.dir = dir.display().to_string();
    cfg
}

#[test]
fn a_replay_split_in_two_with_state_gives_the_alerts_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = spread(15);
    let whole = dir.path().join("whole.pcap");
    write(&whole, &sessions);
    let all = common::replay(&Config::default(), 2, &[whole]);
    assert_eq!(all.leak_alerts.len(), 1);

    // The same bursts in two files, split in the middle of the day.
    let (a, b) = sessions.split_at(9);
    let (pa, pb) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
    write(&pa, a);
    write(&pb, b);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let first = common::replay(&with_state(&state), 2, &[pa]);
    assert!(first.leak_alerts.is_empty());
    assert!(state.join(outflow::correlate::STATE_FILE).exists());
    let second = common::replay(&with_state(&state), 2, &[pb]);
    let render = |v: &[outflow::correlate::leak::LeakAlert]| {
        v.iter()
            .filter(|a| a.detector == outflow::detect::Detector::DataLeak)
            .map(outflow::output::json::leak_alert_json)
            .collect::<Vec<_>>()
    };
    assert_eq!(render(&second.leak_alerts), render(&all.leak_alerts));
}

/// One exfiltration stays one incident across a restart: the demo capture cut just after
/// its upload crossed the threshold and replayed as two runs sharing `--state-dir` gives
/// the incident opened in the first run and continued — never opened again — in the
/// second, under one id. A run with state closes nothing at its end (the incident is in
/// the snapshot): it closes in a third run, an hour of packet time later, idle, with every
/// byte of the upload and every detector of the uncut run.
#[test]
fn an_incident_continues_across_a_restart_with_state() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap");
    let whole = common::replay(&Config::default(), 1, std::slice::from_ref(&demo));
    let kinds = |r: &outflow::replay::ReplayReport| {
        r.incidents
            .iter()
            .map(|u| (u.update.name(), u.incident.id.clone()))
            .collect::<Vec<_>>()
    };
    let all = kinds(&whole);
    assert_eq!(all.len(), 2, "{all:?}");
    let crossing = whole.alerts[0].ts_ns;

    // Cut at the first packet 100 ms after the crossing one, mid-upload.
    let (head, recs) = common::pcap_records(&std::fs::read(&demo).unwrap());
    let ts = |r: &[u8]| {
        let sec = u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]]));
        let usec = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
        sec * S + usec * 1000
    };
    let cut = recs.iter().position(|r| ts(r) > crossing + S / 10).unwrap();
    assert!(cut < recs.len() - 1000, "{cut} of {}", recs.len());
    let last = ts(&recs[recs.len() - 1]);
    let dir = tempfile::tempdir().unwrap();
    let part = |name: &str, range: std::ops::Range<usize>| {
        let mut bytes = head.clone();
        for r in &recs[range] {
            bytes.extend_from_slice(r);
        }
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let (a, b) = (part("a.pcap", 0..cut), part("b.pcap", cut..recs.len()));
    // An hour later, one unrelated datagram: the packet clock moves past `incident.idle`.
    let mut later = outflow::gen::UdpExchange::new(
        "10.0.0.9:5000".parse().unwrap(),
        "192.0.2.1:5001".parse().unwrap(),
        1,
        20,
        0,
    );
    later.start_ns = last + 3600 * S;
    let c = dir.path().join("c.pcap");
    common::write_pcap(&c, later.packets());

    let state = dir.path().join("state");
    let first = common::replay(&with_state(&state), 1, &[a]);
    let second = common::replay(&with_state(&state), 1, &[b]);
    let third = common::replay(&with_state(&state), 1, &[c]);
    let (one, two, three) = (kinds(&first), kinds(&second), kinds(&third));
    assert_eq!(one.first().map(|l| l.0), Some("opened"), "{one:?}");
    assert_eq!(first.incidents[0].ts_ns, crossing);
    assert!(one.iter().all(|l| l.0 != "closed"), "{one:?}");
    let id = &one[0].1;
    // The flow-end asymmetry (a new detector at the same severity) is held
    // (`incident.hold`); when the packet clock jumps an hour in the third run, the host
    // window closes with a data leak (severity high: announced at once, with the held
    // news), then the incident closes idle. As live, and in no more lines than the uncut
    // replay, which folds the same findings into its close at end of input.
    assert_eq!(two, []);
    assert_eq!(three, [("escalated", id.clone()), ("closed", id.clone())]);
    assert_eq!(one.len() + two.len() + three.len(), all.len() + 1);
    // Every byte of the upload is in it: the first run's flow up to the cut, and the
    // connection picked up mid-stream by the second.
    let closed = |r: &outflow::replay::ReplayReport| r.incidents.last().unwrap().incident.clone();
    let (was, is) = (closed(&whole), closed(&third));
    assert_eq!(is.totals(), was.totals());
    assert_eq!(is.flows.len(), 2);
    let detectors = |i: &outflow::correlate::incident::Incident| {
        i.reasons.iter().map(|r| r.detector).collect::<Vec<_>>()
    };
    assert_eq!(detectors(&is), detectors(&was));
    assert_eq!(is.severity, was.severity);
    // Counters are each process's: the third escalated and closed one incident it did not
    // open.
    assert_eq!(third.summary.incidents.updates, [0, 1, 1]);
    assert_eq!(third.summary.incidents.open, 0);
}

/// A damaged state file — the snapshot, or an earlier version's leak-stage JSON read when
/// there is no snapshot — is set aside, the run starts without history, and the snapshot
/// written at its end replaces it.
#[test]
fn a_corrupt_snapshot_is_set_aside_and_the_run_continues() {
    use outflow::correlate::{LEGACY_STATE_FILE, STATE_FILE};
    let damaged: [(&str, &[u8]); 3] = [
        (LEGACY_STATE_FILE, b"{\"version\": 1, \"now_ns\": [garbage"),
        (STATE_FILE, b"OUTFLOWS\x01\x00\x02garbage"),
        (STATE_FILE, b"{\"version\": 1}"),
    ];
    for (file, bytes) in damaged {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(file), bytes).unwrap();
        let path = dir.path().join("15h.pcap");
        write(&path, &spread(15));
        let r = common::replay(&with_state(&state), 1, &[path]);
        // 15 bursts make events; the last one's window is still open at the end of the
        // input and is persisted for the next run instead of being closed.
        assert_eq!(r.summary.leak.threshold_events, 14, "{file}");
        assert_eq!(
            r.leak_alerts
                .iter()
                .filter(|a| a.detector == outflow::detect::Detector::DataLeak)
                .count(),
            1,
            "{file}"
        );
        let mut names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Set aside; a fresh snapshot was written in its place (and the earlier format's
        // file is gone).
        assert_eq!(names.len(), 2, "{file}: {names:?}");
        assert!(names[0].starts_with("outflow-state.corrupt-"), "{names:?}");
        assert_eq!(names[1], STATE_FILE, "{names:?}");
        let snap = std::fs::read(state.join(STATE_FILE)).unwrap();
        assert!(snap.starts_with(b"OUTFLOWS"), "{file}");
    }
}

#[test]
fn a_tenfold_day_after_ten_ordinary_days_is_an_upload_baseline_outlier() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400 * S;
    let start = 1_700_006_400 * S; // 2023-11-15 00:00 UTC
    let sizes = [10, 11, 9, 10, 12, 9, 10, 11, 10, 9, 100];
    let sessions: Vec<TcpSession> = sizes
        .iter()
        .enumerate()
        .map(|(i, mb)| {
            burst(
                "10.0.0.5:40000",
                "198.51.100.80:443",
                *mb,
                start + i as u64 * day + 12 * 3600 * S,
            )
        })
        .collect();
    let path = dir.path().join("days.pcap");
    write(&path, &sessions);
    let r = common::replay(&Config::default(), 2, &[path]);
    let base: Vec<_> = r
        .leak_alerts
        .iter()
        .filter(|a| a.detector == outflow::detect::Detector::UploadBaseline)
        .collect();
    assert_eq!(base.len(), 1, "{base:?}");
    let a = base[0];
    assert_eq!(a.scope, "2023-11-25", "the eleventh day");
    assert_eq!(a.events, 10, "ten days of history");
    assert_eq!(a.total_bytes, sessions[10].expected().orig_ip_bytes);
    assert!(a.z > 3.0 && a.mean > 9.0e6 && a.mean < 11.0e6, "{a:?}");
}

#[test]
fn asymmetry_and_service_outliers() {
    let dir = tempfile::tempdir().unwrap();
    // 60 MB out and nothing back is asymmetric; 60 MB in is not.
    let up = burst("10.0.0.5:40000", "198.51.100.90:443", 60, T0);
    let mut down = TcpSession::new(
        "10.0.0.6:40001".parse().unwrap(),
        "198.51.100.91:443".parse().unwrap(),
        1_000,
        60 * MB,
    );
    down.mss = 8960;
    down.start_ns = T0;
    // A home database answering external clients: 120 flows of about 1 MB, then 20 MB.
    let mut db: Vec<TcpSession> = (0..121u64)
        .map(|i| {
            let mut s = TcpSession::new(
                format!("203.0.113.{}:{}", 1 + i % 200, 50_000 + i)
                    .parse()
                    .unwrap(),
                "10.0.0.20:3306".parse().unwrap(),
                500,
                if i == 120 {
                    20 * MB
                } else {
                    MB + (i % 7) * 20_000
                },
            );
            s.mss = 8960;
            s.start_ns = T0 + 3600 * S + i * 10 * S;
            s
        })
        .collect();
    db.push(up);
    db.push(down);
    let path = dir.path().join("asym.pcap");
    write(&path, &db);
    let r = common::replay(&Config::default(), 2, &[path]);
    let of = |d| {
        r.leak_alerts
            .iter()
            .filter(|a| a.detector == d)
            .collect::<Vec<_>>()
    };
    let asym = of(outflow::detect::Detector::Asymmetry);
    // Per flow at its end, and per host pair when its window closes: both for the upload.
    assert_eq!(asym.len(), 2, "{asym:?}");
    assert!(asym
        .iter()
        .all(|a| a.src.unwrap().to_string() == "10.0.0.5"));
    assert_eq!(
        asym.iter()
            .map(|a| a.scope.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["flow", "window"].into_iter().collect()
    );
    let svc = of(outflow::detect::Detector::ServiceOutlier);
    assert_eq!(svc.len(), 1, "{svc:?}");
    assert_eq!(svc[0].port, 3306);
    assert_eq!(svc[0].events, 120);
    assert_eq!(svc[0].src.unwrap().to_string(), "10.0.0.20");
}
