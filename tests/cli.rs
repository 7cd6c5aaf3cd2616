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
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One upload, one incident: opened at the packet that crossed 100 MB (the upload is
    // still running), and the close at the end of the capture. What came between — the
    // asymmetric upload when the flow ended with almost nothing back (a new detector at
    // the same severity, held `incident.hold`) and what the windows closing at the end
    // found (data leak: severity high) — folds into the close.
    let updates: Vec<&str> = lines
        .iter()
        .map(|l| l["update"].as_str().unwrap())
        .collect();
    assert_eq!(updates, ["opened", "closed"], "{stdout}");
    let id = &lines[0]["incident_id"];
    assert!(lines.iter().all(|l| &l["incident_id"] == id), "{stdout}");
    let (open, close) = (&lines[0], &lines[1]);
    assert_eq!(open["ts"], "2023-11-14T22:14:00.875140Z");
    assert_eq!(open["severity"], "medium");
    assert_eq!(open["reasons"].as_array().unwrap().len(), 1);
    assert_eq!(open["reasons"][0]["detector"], "large_outbound_transfer");
    assert_eq!(open["flows"][0]["open"], true);
    assert_eq!(open["out_ip_bytes"], 100_008_084);
    assert_eq!(close["flows_open"], 0);
    assert_eq!(close["close_reason"], "end_of_input");
    assert_eq!(close["severity"], "high");
    assert_eq!(
        close["escalation"],
        serde_json::json!(["severity", "detector"])
    );
    let reasons: Vec<&str> = close["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["large_outbound_transfer", "asymmetric_upload", "data_leak"]
    );
    assert_eq!(close["findings"], 4);
    assert_eq!(close["out_ip_bytes"], 150_669_884);
    assert_eq!(close["in_ip_bytes"], 87_844);
    assert_eq!(close["src_ip"], "10.0.0.5");
    assert_eq!(close["dst_ips"], serde_json::json!(["203.0.113.50"]));
    assert_eq!(close["first_seen"], "2023-11-14T22:14:00.000000Z");

    // The detectors' own lines, behind `incident.per_detector_lines`.
    let config = dir.path().join("outflow.toml");
    std::fs::write(&config, "[incident]\nper_detector_lines = true\n").unwrap();
    let out = outflow()
        .args(["replay", "--workers", "2", "--alerts-out", "-", "--config"])
        .arg(&config)
        .args(["--flows-out"])
        .arg(&flows)
        .arg(demo())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("detector").is_some())
        .collect();
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
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
    // One meaning per field name: byte kinds spelled out; nothing meaningless (a per-flow
    // asymmetry verdict has no window, events or peers); messages say what was observed
    // (the 150 MB went in ~1.3 s of packets, not "in 24 h").
    assert!(
        leak["out_ip_bytes"].as_u64().unwrap_or(0) > 150_000_000,
        "{leak}"
    );
    assert!(leak.get("total_bytes").is_none(), "{leak}");
    let msg = leak["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(" in ") && msg.ends_with("(1 threshold events)"),
        "{msg}"
    );
    assert!(!msg.contains(" h ("), "{msg}");
    for k in ["window", "events", "peers"] {
        assert!(alerts[1].get(k).is_none(), "{k} in {}", alerts[1]);
        assert!(alerts[2].get(k).is_some(), "{k} missing in {}", alerts[2]);
    }
    assert!(alerts[1]["in_ip_bytes"].as_u64().is_some(), "{}", alerts[1]);
    assert!(alerts[0].get("out_bytes").is_none() && alerts[0].get("in_bytes").is_none());
    assert!(alerts[0]["out_payload_bytes"].as_u64().unwrap_or(0) > 99_000_000);
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
        "incidents      1 (0 escalations, 1 closed; reached medium 1, high 1)",
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
    std::fs::write(&p, "[http]\ntoken = \"hunter2-secret-token\"\n").unwrap();
    let out = outflow().arg("check-config").arg(&p).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2-secret-token"), "{text}");
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

/// Runs `cmd` with stdout to a file in `dir`, killing it after 60 s (a replay hanging on a
/// pipe must fail the test, not hang it); returns (exit code, stdout, stderr).
fn run_within(dir: &Path, mut cmd: Command) -> (Option<i32>, String, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code(),
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

/// Replays `input` with alerts to stdout and flow records to a file; returns (exit code,
/// alerts, flow records, stderr).
fn replay_outputs(
    dir: &Path,
    extra: &[&str],
    input: &Path,
) -> (Option<i32>, String, String, String) {
    let flows = dir.join("flows.json");
    let mut cmd = outflow();
    cmd.args([
        "replay",
        "--workers",
        "2",
        "--alerts-out",
        "-",
        "--flows-out",
    ])
    .arg(&flows)
    .args(extra)
    .arg(input);
    let (code, stdout, stderr) = run_within(dir, cmd);
    let flows = std::fs::read_to_string(&flows).unwrap_or_default();
    (code, stdout, flows, stderr)
}

#[test]
fn a_fifo_and_process_substitution_replay_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, alerts, flows, err) = replay_outputs(dir.path(), &["-q"], &demo());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(alerts.lines().count(), 2, "{alerts}");
    assert_eq!(flows.lines().count(), 13, "{flows}");

    // A named pipe: opened once, by the reader (a look beforehand would eat the header).
    let fifo = dir.path().join("capture.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            // Blocks until the reader opens the pipe.
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo)?;
            std::io::copy(&mut std::fs::File::open(demo())?, &mut w).map(drop)
        })
    };
    let got = replay_outputs(dir.path(), &["-q"], &fifo);
    // Should outflow never have opened the pipe, opening it here releases the writer.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let _ = writer.join();
    assert_eq!(got.0, Some(0), "fifo: {}", got.3);
    assert_eq!(got.1, alerts, "fifo alerts");
    assert_eq!(got.2, flows, "fifo flow records");

    // bash's <(...): a /dev/fd/N pipe.
    let flows_path = dir.path().join("flows-fd.json");
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(r#""$0" replay -q --workers 2 --alerts-out - --flows-out "$1" <(cat "$2")"#)
        .arg(env!("CARGO_BIN_EXE_outflow"))
        .arg(&flows_path)
        .arg(demo());
    let (code, stdout, err) = run_within(dir.path(), bash);
    assert_eq!(code, Some(0), "/dev/fd: {err}");
    assert_eq!(stdout, alerts, "/dev/fd alerts");
    assert_eq!(
        std::fs::read_to_string(&flows_path).unwrap(),
        flows,
        "/dev/fd flow records"
    );
}

/// Byte offset of record `n` (0-based) of a little-endian classic pcap: the 24-byte file
/// header, then per record a 16-byte header (caplen at +8) and caplen bytes.
fn record_offset(pcap: &[u8], n: usize) -> usize {
    let mut off = 24;
    for _ in 0..n {
        let caplen = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap());
        off += 16 + caplen as usize;
    }
    off
}

#[test]
fn a_corrupt_record_ends_the_replay_with_its_offset_and_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(demo()).unwrap();
    // Record 10 001 of 20 633, in the middle of the upload.
    let at = record_offset(&bytes, 10_000);
    let prefix = dir.path().join("prefix.pcap");
    std::fs::write(&prefix, &bytes[..at]).unwrap();
    let mut bad = bytes.clone();
    bad[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes()); // caplen
    let corrupt = dir.path().join("corrupt.pcap");
    std::fs::write(&corrupt, &bad).unwrap();

    // What a clean file of the records before the bad one gives.
    let (code, alerts, flows, err) = replay_outputs(dir.path(), &["-q"], &prefix);
    assert_eq!(code, Some(0), "{err}");
    assert!(!alerts.is_empty() && !flows.is_empty());

    for quiet in [false, true] {
        let extra: &[&str] = if quiet { &["-q"] } else { &[] };
        let (code, got_alerts, got_flows, err) = replay_outputs(dir.path(), extra, &corrupt);
        assert_eq!(code, Some(1), "quiet {quiet}: {err}");
        assert_eq!(
            got_alerts, alerts,
            "quiet {quiet}: alerts before the bad record"
        );
        assert_eq!(
            got_flows, flows,
            "quiet {quiet}: flows before the bad record"
        );
        let want = format!(
            "outflow: error: {}: cannot read the record at byte offset {at} (after 10000 records)",
            corrupt.display()
        );
        assert!(err.contains(&want), "quiet {quiet}: {err}");
        assert_eq!(err.matches("outflow: error:").count(), 1, "{err}");
        assert_eq!(err.contains("outflow replay summary"), !quiet, "{err}");
    }
}

/// Past 65 536 records the counted offset is checked against the stream: it must still be
/// exact, and the replay must not ask the kernel for its position per record.
#[test]
fn a_corrupt_record_far_into_a_big_file_still_has_its_exact_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcap");
    outflow::gen::write_concurrent(&path, 100_000, 3).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = record_offset(&bytes, 90_000);
    bytes[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let out = outflow()
        .args(["replay", "-q", "--flows-out", "/dev/null"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the record at byte offset {at} (after 90000 records)"
        )),
        "{err}"
    );
}

/// pcapng: blocks of varying layout, so the offset is where libpcap's stream stood when it
/// failed, and the message says so.
#[test]
fn a_corrupt_pcapng_block_is_reported_near_its_offset() {
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]); // version 1.0
    shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
    let mut idb = vec![1, 0, 0, 0]; // Ethernet, reserved
    idb.extend_from_slice(&65_535u32.to_le_bytes());
    let epb = |caplen: u32| {
        let mut b = vec![0u8; 12]; // interface 0, timestamp 0
        b.extend_from_slice(&caplen.to_le_bytes());
        b.extend_from_slice(&60u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 60]);
        b
    };
    let mut file = block(0x0a0d_0d0a, &shb);
    file.extend(block(1, &idb));
    for _ in 0..3 {
        file.extend(block(6, &epb(60)));
    }
    let bad_at = file.len();
    file.extend(block(6, &epb(u32::MAX)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcapng");
    std::fs::write(&path, &file).unwrap();
    let out = outflow()
        .args(["replay", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let at = err
        .split("cannot read the block ending at or before byte offset ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        at > bad_at && at <= file.len(),
        "{at} not within the bad block: {err}"
    );
    assert!(err.contains("(after 3 records)"), "{err}");
}

#[test]
fn flow_and_dns_write_errors_name_the_file() {
    for (flag, what) in [
        ("--flows-out", "flow records"),
        ("--dns-out", "DNS transactions"),
    ] {
        // /dev/full opens fine and fails every write with ENOSPC.
        let out = outflow()
            .args(["replay", "-q", flag, "/dev/full"])
            .arg(demo())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!("cannot write {what} to /dev/full: No space left")),
            "{flag}: {err}"
        );
    }
}

/// Whether the tests run as root (as CI does): needed to open `lo` for `outflow run`.
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn start_up_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[flow]\ncapacity_per_worker = 0\n").unwrap();
    let nosuchif = dir.path().join("nosuchif.toml");
    std::fs::write(&nosuchif, "[capture]\ninterface = \"nosuchif0\"\n").unwrap();
    // The state snapshot's place taken by a directory: readable by nobody.
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join(outflow::correlate::STATE_FILE)).unwrap();
    let lo_state = dir.path().join("lo-state.toml");
    std::fs::write(
        &lo_state,
        format!(
            "[capture]\ninterface = \"lo\"\nworkers = 1\n[http]\nlisten = \"\"\n[state]\ndir = {:?}\n",
            state.display().to_string()
        ),
    )
    .unwrap();

    let mut cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["run".into(), "--config".into(), bad.clone().into()],
            "flow.capacity_per_worker: 0 must be",
        ),
        (
            vec![
                "replay".into(),
                "--config".into(),
                bad.into(),
                demo().into(),
            ],
            "flow.capacity_per_worker: 0 must be",
        ),
        (
            vec!["run".into(), "--config".into(), nosuchif.into()],
            "capture.interface \"nosuchif0\": no such interface",
        ),
        (
            vec![
                "replay".into(),
                "--state-dir".into(),
                state.clone().into(),
                demo().into(),
            ],
            "state.dir: cannot read the state snapshot",
        ),
    ];
    if is_root() {
        cases.push((
            vec!["run".into(), "--config".into(), lo_state.into()],
            "state.dir: cannot read the state snapshot",
        ));
    }
    // A state directory another process holds (as a running sensor holds its own).
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let held = std::fs::File::open(&busy).unwrap();
    // SAFETY: flock on a descriptor this test owns; no memory is passed.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&held),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(locked, 0);
    let in_use = format!(
        "state.dir {}: in use by another outflow process",
        busy.display()
    );
    cases.push((
        vec![
            "replay".into(),
            "--state-dir".into(),
            busy.clone().into(),
            demo().into(),
        ],
        &in_use,
    ));
    for (args, message) in cases {
        let out = outflow().args(&args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.matches(message).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("outflow: error:").count(), 1, "{args:?}: {err}");
        assert!(!err.contains("ERROR"), "{args:?}: also logged: {err}");
    }
    // The unreadable snapshot was left where it was, not set aside.
    assert!(state.join(outflow::correlate::STATE_FILE).is_dir());
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    // Free again, the directory is used.
    drop(held);
    let out = outflow()
        .args(["replay", "-q", "--state-dir"])
        .arg(&busy)
        .arg(demo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(busy.join(outflow::correlate::STATE_FILE).exists());
}

/// Issue 14 ("logs for machines and people"): standard error that is not a terminal (a pipe
/// here; the journal under systemd) gets log lines without ANSI colour codes.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = outflow()
        .args(["replay", "-q", "--state-dir"])
        .arg(dir.path())
        .arg(demo())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The first replay with a state directory logs that there is no snapshot yet.
    assert!(err.contains("no state snapshot yet"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
    assert!(!err.contains("counts it twice"), "{err}");

    // The same capture again with the same state: it starts three minutes before the time
    // the state reached, and would be counted twice. Said, once.
    let out = outflow()
        .args(["replay", "-q", "--state-dir"])
        .arg(dir.path())
        .arg(demo())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("loaded state snapshot"), "{err}");
    assert_eq!(
        err.matches("the input starts 180 s before the time the state in state.dir reached")
            .count(),
        1,
        "{err}"
    );
}
