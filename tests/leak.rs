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
