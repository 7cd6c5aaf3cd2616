//! Cross-sensor correlation over a real NATS JetStream server (`nats-server -js`, started
//! by each test on a loopback port in a temporary directory; the tests skip with a message
//! when it is not installed — `make test-deps` installs it):
//!
//! - two sensors each replay half of a slow leak (one home host, its connections split
//!   between them): neither raises the data leak alone, the correlator raises exactly one;
//! - a correlator killed (SIGKILL) with the stream half read, and another taking the
//!   partitions over: together they write exactly what one uninterrupted correlator writes
//!   (`--rebuild` over the same stream), nothing lost, nothing twice;
//! - with the bus down, the sensor's own upload alert still fires at the crossing packet;
//!   events queue, and beyond the queue are dropped and counted (exit status 1 says the
//!   correlators missed part of the capture); a bus that comes up while they are queued
//!   receives them all.

mod common;

use outflow::config::Config;
use outflow::gen::TcpSession;
use outflow::gen::Packet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn outflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_outflow"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` on loopback, killed when dropped.
struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts one, or `None` (with a message) when nats-server is not installed.
    fn start() -> Option<Nats> {
        let Some(bin) = which("nats-server") else {
            eprintln!("SKIPPED: nats-server not installed (make test-deps installs it)");
            return None;
        };
        Some(Nats::start_on(&bin, free_port()))
    }

    fn start_on(bin: &Path, port: u16) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nats {
            child,
            port,
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), "nats-server listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Upload session `k` of the slow leak: 10.0.0.5 → 198.51.100.7:443, 250 kB, starting at
/// `T0 + 2k s`.
fn leak_session(k: u64) -> impl Iterator<Item = Packet> {
    let mut s = TcpSession::new(
        sa(&format!("10.0.0.5:{}", 41000 + k)),
        sa("198.51.100.7:443"),
        250_000,
        2_000,
    );
    s.start_ns = T0 + k * 2 * SEC;
    s.packets()
}

/// A pcap of the leak sessions `ks`, then one DNS lookup by the same host at `tail_s`
/// seconds (it moves the packet clock past the last pair window).
fn write_leak(path: &Path, ks: &[u64], tail_s: u64, name: &str) {
    let mut packets: Vec<Packet> = ks.iter().flat_map(|&k| leak_session(k)).collect();
    packets.extend(outflow::gen::a_lookup(
        [10, 0, 0, 5],
        50_000 + tail_s as u16,
        name,
        [192, 0, 2, 9],
        T0 + tail_s * SEC,
    ));
    packets.sort_by_key(|p| p.ts_ns);
    common::write_pcap(path, packets);
}

/// Thresholds at which 12 sessions of 250 kB (3 MB) are a data leak and 6 (1.5 MB) are not:
/// pair windows of 5 s above 50 kB are threshold events, 2 MB of them a leak.
const CONFIG: &str = r#"
[detect.host_window]
window = "5s"
threshold_bytes = 50000
[detect.data_leak]
total_bytes = 2000000
[bus]
partitions = 4
lease_ttl = "2s"
max_lateness = "1h"
drain_timeout = "15s"
sensors = ["edge-a", "edge-b"]
"#;

fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("outflow.toml");
    std::fs::write(&p, format!("{CONFIG}{extra}")).unwrap();
    p
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Incident lines of an alert file: (incident id, update, detectors among its reasons).
fn incidents(path: &Path) -> Vec<(String, String, Vec<String>)> {
    lines(path)
        .into_iter()
        .filter(|v| v.get("incident_id").is_some())
        .map(|v| {
            let reasons = v["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["detector"].as_str().unwrap().to_string())
                .collect();
            (
                v["incident_id"].as_str().unwrap().to_string(),
                v["update"].as_str().unwrap().to_string(),
                reasons,
            )
        })
        .collect()
}

/// `outflow replay` as a sensor on the bus; returns (exit code, stderr).
fn sensor(cfg: &Path, url: &str, id: &str, alerts: &Path, pcap: &Path) -> (i32, String) {
    let out = outflow()
        .args(["replay", "--workers", "1", "--config"])
        .arg(cfg)
        .args(["--bus", url, "--sensor-id", id, "--alerts-out"])
        .arg(alerts)
        .arg(pcap)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn correlator(cfg: &Path, url: &str, id: &str, alerts: &Path, extra: &[&str]) -> Child {
    outflow()
        .args(["correlate", "--bus", url, "--id", id, "--config"])
        .arg(cfg)
        .arg("--alerts-out")
        .arg(alerts)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    unsafe_kill(c.id(), "TERM");
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(15), "correlator did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn bus_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with("bus "))
        .unwrap_or_else(|| panic!("no bus line in the summary:\n{stderr}"))
}

#[test]
fn two_sensors_halves_of_a_slow_leak_make_one_incident_on_the_correlator() {
    let Some(nats) = Nats::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg_path = config_file(d, "");
    let cfg = Config::load(&cfg_path).unwrap();
    // Connections alternate between the two sensors, as a packet broker splits them.
    let (a, b): (Vec<u64>, Vec<u64>) = (0..12).partition(|k| k % 2 == 0);
    let (pa, pb, whole) = (d.join("a.pcap"), d.join("b.pcap"), d.join("whole.pcap"));
    write_leak(&pa, &a, 60, "a.example");
    write_leak(&pb, &b, 61, "b.example");
    let all: Vec<u64> = (0..12).collect();
    write_leak(&whole, &all, 60, "a.example");

    // In one process: the whole capture is one data leak, either half is none.
    let leaks = |p: &PathBuf| {
        let rep = common::replay(&cfg, 1, std::slice::from_ref(p));
        rep.leak_alerts
            .iter()
            .filter(|a| a.detector == outflow::detect::Detector::DataLeak)
            .count()
    };
    assert_eq!(leaks(&whole), 1);
    assert_eq!(leaks(&pa), 0);
    assert_eq!(leaks(&pb), 0);

    let c_alerts = d.join("correlator.json");
    let c = correlator(&cfg_path, &nats.url(), "c1", &c_alerts, &[]);
    for (id, pcap) in [("edge-a", &pa), ("edge-b", &pb)] {
        let local = d.join(format!("{id}.json"));
        let (code, err) = sensor(&cfg_path, &nats.url(), id, &local, pcap);
        assert_eq!(code, 0, "{err}");
        assert!(bus_line(&err).contains(" 0 events dropped"), "{err}");
        // The sensor raises no leak of its own: only per-flow findings stay local.
        assert!(incidents(&local).is_empty(), "{:?}", lines(&local));
    }
    wait_until(Duration::from_secs(30), "the correlator's incident", || {
        incidents(&c_alerts)
            .iter()
            .any(|i| i.2.iter().any(|d| d == "data_leak"))
    });
    // Whatever else is still to come (nothing: every sensor is done), then stop.
    std::thread::sleep(Duration::from_secs(1));
    stop(c);
    let inc = incidents(&c_alerts);
    let ids: std::collections::BTreeSet<&str> = inc.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(ids.len(), 1, "{inc:?}");
    let opened: Vec<_> = inc.iter().filter(|i| i.1 == "opened").collect();
    assert_eq!(opened.len(), 1, "{inc:?}");
    assert!(
        opened[0].2.iter().any(|d| d == "data_leak"),
        "{inc:?}"
    );
    assert!(opened[0].0.contains("10.0.0.5"), "{inc:?}");
}
