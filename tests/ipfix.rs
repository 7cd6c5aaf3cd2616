//! IPFIX export to a real collector: nfdump's `nfcapd` receives the export of a replayed
//! capture, and `nfdump -r` shows the same flows with the same counters (both directions:
//! nfdump keeps RFC 5103 reverse counters as its "out" packets and bytes) as outflow's own
//! flow records. Installs nothing: `make test-deps` installs nfdump; without it the test
//! says so and passes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

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

fn outflow_rows(flows: &Path) -> BTreeSet<Row> {
    std::fs::read_to_string(flows)
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
        .collect()
}

/// nfdump's CSV: ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,...
fn nfdump_rows(dir: &Path) -> BTreeSet<Row> {
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
    String::from_utf8(out.stdout)
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
        .collect()
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
    let st = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["replay", "--quiet", "--ipfix"])
        .arg(format!("udp://127.0.0.1:{port}"))
        .arg("--flows-out")
        .arg(&flows)
        .args(["--alerts-out", "/dev/null"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
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
