//! IPFIX export to real collectors: nfdump's `nfcapd` and pmacct's `nfacctd` receive the
//! export of a replayed capture over UDP, and `nfdump -r` / pmacct's print plugin show the
//! same flows with the same counters as outflow's own flow records. Installs nothing:
//! `make test-deps` installs nfdump and pmacct; without one, its test says so and passes.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free UDP port on loopback (bound and released; nfcapd binds it right after).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (orig, resp, orig port, resp port, proto, orig pkts, orig bytes, resp pkts, resp bytes)
type Row = (String, String, u16, u16, String, u64, u64, u64, u64);

/// Rows sorted, duplicates kept: two equal flows must show up twice on both sides.
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn outflow_rows(flows: &Path) -> Vec<Row> {
    let rows = std::fs::read_to_string(flows)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let n = |k: &str| v[k].as_u64().unwrap();
            (
                s("orig_ip"),
                s("resp_ip"),
                n("orig_port") as u16,
                n("resp_port") as u16,
                s("proto").to_uppercase(),
                n("orig_pkts"),
                n("orig_ip_bytes"),
                n("resp_pkts"),
                n("resp_ip_bytes"),
            )
        })
        .collect();
    sorted(rows)
}

/// nfdump's CSV: ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,...
fn nfdump_rows(dir: &Path) -> Vec<Row> {
    let out = Command::new("nfdump")
        .args(["-R"])
        .arg(dir)
        .args(["-o", "csv", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (
                f[3].to_string(),
                f[4].to_string(),
                n(5) as u16,
                n(6) as u16,
                f[7].to_string(),
                n(11),
                n(12),
                n(13),
                n(14),
            )
        })
        .collect();
    sorted(rows)
}

/// Replays the demo capture (IPv4 and IPv6 flows) with `--ipfix target`, its flow records
/// written to `flows`.
fn replay_demo(target: &str, flows: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["replay", "--quiet", "--ipfix", target, "--flows-out"])
        .arg(flows)
        .args(["--alerts-out", "/dev/null"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "outflow replay --ipfix {target}: {st}");
}

#[test]
fn nfcapd_receives_the_same_flows_with_the_same_counters() {
    if !have("nfcapd") || !have("nfdump") {
        eprintln!("SKIPPED: nfcapd/nfdump not installed (make test-deps installs nfdump)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nfcapd");
    std::fs::create_dir(&store).unwrap();
    let port = free_udp_port();
    let mut nfcapd = Command::new("nfcapd")
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let flows = dir.path().join("flows.json");
    replay_demo(&format!("udp://127.0.0.1:{port}"), &flows);
    // SIGTERM makes nfcapd write out what it holds.
    std::thread::sleep(Duration::from_millis(500));
    unsafe {
        libc::kill(nfcapd.id() as i32, libc::SIGTERM);
    }
    nfcapd.wait().unwrap();
    let want = outflow_rows(&flows);
    let got = nfdump_rows(&store);
    assert!(!want.is_empty());
    assert_eq!(got, want, "nfdump's flows differ from outflow's records");
}

/// A collector process, stopped by SIGINT (and SIGKILL if it does not end) when a failed
/// assertion leaves it running.
struct Daemon(Option<Child>);

impl Daemon {
    /// Sends `sig` and waits for the process to end.
    fn stop(mut self, sig: i32) -> ExitStatus {
        let mut c = self.0.take().unwrap();
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
        c.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let end = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `done` every 100 ms for at most `limit`; whether it came true.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pmacct's print plugin CSV (header line first; an appended file repeats no header). Only
/// complete lines: the plugin may be writing the file while it is read.
fn pmacct_rows(csv: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines = complete.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (sa, da, sp, dp, pr) = (
        col("SRC_IP"),
        col("DST_IP"),
        col("SRC_PORT"),
        col("DST_PORT"),
        col("PROTOCOL"),
    );
    let (pkts, bytes, rpkts, rbytes) = (
        col("PACKETS"),
        col("BYTES"),
        col("rev_pkts"),
        col("rev_bytes"),
    );
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), cols.len(), "{l:?}");
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (
                f[sa].to_string(),
                f[da].to_string(),
                n(sp) as u16,
                n(dp) as u16,
                f[pr].to_uppercase(),
                n(pkts),
                n(bytes),
                n(rpkts),
                n(rbytes),
            )
        })
        .collect();
    sorted(rows)
}

/// pmacct's `nfacctd` (print plugin, CSV) receives the export of the demo capture and shows
/// the same flows with the same counters as outflow's flow records, both directions.
///
/// pmacct has no notion of biflows: its own PACKETS and BYTES are the forward elements
/// (packetDeltaCount, octetDeltaCount: the originator's), and it ignores the RFC 5103
/// reverse elements unless told to read them. The test tells it, with custom primitives
/// (`aggregate_primitives`) for reverse packetDeltaCount and octetDeltaCount (PEN 29305,
/// elements 2 and 1), aggregated with the 5-tuple: so pmacct shows the responder's counters
/// as it decoded them from the records, next to its own forward counters. Every flow record
/// is one data record with its own 5-tuple, so the print plugin's aggregation sums nothing.
#[test]
fn nfacctd_receives_the_same_flows_with_the_same_counters_in_both_directions() {
    if !have("nfacctd") {
        eprintln!("SKIPPED: nfacctd not installed (make test-deps installs pmacct)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    std::fs::write(
        d.join("primitives.lst"),
        "name=rev_bytes\tfield_type=29305:1\tlen=8\tsemantics=u_int\n\
         name=rev_pkts\tfield_type=29305:2\tlen=8\tsemantics=u_int\n",
    )
    .unwrap();
    let (csv, log) = (d.join("flows.csv"), d.join("nfacctd.log"));
    // Written every second, appended: the test waits for all rows, then stops nfacctd.
    let conf = format!(
        "daemonize: false\n\
         logfile: {log}\n\
         nfacctd_ip: 127.0.0.1\n\
         nfacctd_port: {port}\n\
         aggregate_primitives: {prims}\n\
         plugins: print\n\
         aggregate: src_host, dst_host, src_port, dst_port, proto, rev_pkts, rev_bytes\n\
         print_output: csv\n\
         print_output_file: {csv}\n\
         print_output_file_append: true\n\
         print_refresh_time: 1\n",
        log = log.display(),
        prims = d.join("primitives.lst").display(),
        csv = csv.display(),
    );
    std::fs::write(d.join("nfacctd.conf"), conf).unwrap();
    let nfacctd = Daemon(Some(
        Command::new("nfacctd")
            .arg("-f")
            .arg(d.join("nfacctd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || log_text()
            .contains("waiting for NetFlow/IPFIX data")),
        "nfacctd did not start:\n{}",
        log_text()
    );
    let flows = d.join("flows.json");
    replay_demo(&format!("udp://127.0.0.1:{port}"), &flows);
    let want = outflow_rows(&flows);
    assert!(!want.is_empty());
    // Every record as one row: then nothing is still on its way through nfacctd.
    wait_until(Duration::from_secs(20), || {
        pmacct_rows(&csv).len() >= want.len()
    });
    // SIGINT: nfacctd's graceful end (its plugins purge what they hold).
    let st = nfacctd.stop(libc::SIGINT);
    assert!(st.success(), "nfacctd: {st}\n{}", log_text());
    let got = pmacct_rows(&csv);
    assert_eq!(
        got,
        want,
        "pmacct's flows differ from outflow's records\n{}",
        log_text()
    );
}
