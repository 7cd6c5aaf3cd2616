//! The `outflow` command line: the demo replay, outputs, and errors a person can act on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn outflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_outflow"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap")
}

#[test]
fn demo_replay_prints_the_upload_alert_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.json");
    let out = outflow()
        .args([
            "replay",
            "--workers",
            "2",
            "--alerts-out",
            "-",
            "--flows-out",
        ])
        .arg(&flows)
        .arg(demo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // While the upload runs: the large-transfer alert. When it ends: asymmetric upload (the
    // flow sent 150 MB and received 88 kB). When its 5-minute host window closes (here: the
    // end of the capture): asymmetry of the host pair, and a data leak, since the 150 MB
    // threshold event alone passes the 100 MB daily total.
    let detectors: Vec<&str> = alerts
        .iter()
        .map(|a| a["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        detectors,
        [
            "large_outbound_transfer",
            "asymmetric_upload",
            "asymmetric_upload",
            "data_leak"
        ],
        "{stdout}"
    );
    let leak = &alerts[3];
    assert_eq!(
        (&leak["src_ip"], &leak["dst_ip"]),
        (&"10.0.0.5".into(), &"203.0.113.50".into())
    );
    assert_eq!(leak["events"], 1);
    assert_eq!(alerts[1]["scope"], "flow");
    assert_eq!(alerts[2]["scope"], "window");
    let a = &alerts[0];
    assert_eq!(a["detector"], "large_outbound_transfer");
    assert_eq!(a["src_ip"], "10.0.0.5");
    assert_eq!(a["dst_ip"], "203.0.113.50");
    assert_eq!(a["dst_port"], 443);
    assert_eq!(a["flow_open"], true);
    assert!(a["out_ip_bytes"].as_u64().unwrap() >= 100_000_000);
    assert!(a["out_pkts"].as_u64().unwrap() > 1000);

    let summary = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "packets",
        "flows",
        "alerts         4",
        "not decoded",
        "throughput",
    ] {
        assert!(
            summary.contains(needle),
            "summary lacks {needle:?}:\n{summary}"
        );
    }

    // The upload's flow record: the alert came before its last packet.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&flows)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let up = records
        .iter()
        .find(|r| r["flow_id"] == a["flow_id"])
        .expect("record of the alerted flow");
    assert_eq!(up["end_reason"], "fin");
    assert_eq!(up["state"], "closed");
    assert_eq!(up["outbound"], "orig");
    assert!(up["orig_ip_bytes"].as_u64().unwrap() > a["out_ip_bytes"].as_u64().unwrap());
    assert!(a["ts"].as_str().unwrap() < up["end_ts"].as_str().unwrap());
}

#[test]
fn check_config_prints_effective_values() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/outflow.toml");
    let out = outflow().arg("check-config").arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("threshold_bytes = 100000000"), "{text}");
    assert!(text.contains("capacity_per_worker = 262144"), "{text}");

    // The API token is never printed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token.toml");
    std::fs::write(&p, "[http]\ntoken = \"hunter2-secret\"\n").unwrap();
    let out = outflow().arg("check-config").arg(&p).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2-secret"), "{text}");
    assert!(text.contains("token = \"<redacted>\""), "{text}");
}

#[test]
fn bad_config_names_every_bad_key_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "home_nets = []\n[flow]\ncapacity_per_worker = 0\n[detect.large_transfer]\ntiers = [5]\n",
    )
    .unwrap();
    let out = outflow().arg("check-config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for key in [
        "home_nets",
        "flow.capacity_per_worker",
        "detect.large_transfer.tiers[0]",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    std::fs::write(&p, "[flow]\ncapacity = 5\n").unwrap();
    let out = outflow()
        .args(["replay", "--config"])
        .arg(&p)
        .arg(demo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("flow.capacity"), "{err}");
}

#[test]
fn missing_capture_is_named() {
    let out = outflow()
        .args(["replay", "/nonexistent/capture.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
}

/// Runs `outflow run` with a config text; returns (exit code, stderr).
fn run_with(dir: &Path, config: &str) -> (Option<i32>, String) {
    let p = dir.join("run.toml");
    std::fs::write(&p, config).unwrap();
    let out = outflow()
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn run_names_a_missing_interface() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_with(dir.path(), "[capture]\ninterface = \"nosuchif0\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("capture.interface \"nosuchif0\": no such interface"),
        "{err}"
    );
    assert!(err.contains("available: "), "{err}");
    let (code, err) = run_with(dir.path(), "[capture]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("capture.interface is not set"), "{err}");
}

#[test]
fn run_names_a_bad_filter() {
    // Opening lo needs CAP_NET_RAW: only meaningful as root.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        eprintln!("skipping: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_with(
        dir.path(),
        "[capture]\ninterface = \"lo\"\nworkers = 1\nfilter = \"tcp port\"\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("capture.filter \"tcp port\": invalid filter"),
        "{err}"
    );

    // Without privileges (setpriv from util-linux drops them): one clear message.
    let p = dir.path().join("run.toml");
    std::fs::write(&p, "[capture]\ninterface = \"lo\"\nworkers = 1\n").unwrap();
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    let Ok(out) = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_outflow"))
        .args(["run", "--config"])
        .arg(&p)
        .output()
    else {
        eprintln!("skipping the unprivileged case: no setpriv");
        return;
    };
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("capture.interface \"lo\": permission denied: outflow needs CAP_NET_RAW"),
        "{err}"
    );
}
