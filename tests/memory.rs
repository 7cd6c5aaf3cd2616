//! Memory at the end of input (issue 12.4): a replay that ends with many flows open must
//! not need more memory to end them than the same traffic needs in steady state. It once
//! queued two ~1 KiB events per open flow at once (6 GB at 1 M open flows); flows are now
//! ended in batches of 1024 with back-pressure, and the state snapshot is streamed.

use std::path::Path;
use std::process::Command;

/// Runs `outflow replay` on `pcap` with `config`, returns its peak RSS in bytes (`wait4`).
fn peak_rss(pcap: &Path, config: &Path, state: &Path) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args([
            "replay",
            "-q",
            "--workers",
            "1",
            "--flows-out",
            "/dev/null",
            "--config",
        ])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .arg(pcap)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; `pid` is our child, waited once.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    // Reaped by wait4: the handle must not wait again.
    std::mem::forget(child.stdin.take());
    std::mem::forget(child);
    u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024
}

/// 200 000 one-packet flows from as many home hosts, all open when the file ends, against
/// the same capture with a 1 s idle timeout, so the flows end along the way as in steady
/// state (each ends the same way, feeding the same cross-flow tables). Ending them all at
/// the end may cost only what holding them did: their table entries (134 B) and the list
/// that orders them (16 B).
#[test]
fn ending_all_open_flows_at_end_of_input_costs_no_more_than_steady_state() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("concurrent.pcap");
    let n = 200_000u64;
    let s = outflow::gen::write_concurrent(&pcap, n, 11).unwrap();
    assert_eq!(s.flows, n);
    let open_cfg = dir.path().join("open.toml");
    std::fs::write(&open_cfg, "[flow]\ncapacity_per_worker = 262144\n").unwrap();
    let steady_cfg = dir.path().join("steady.toml");
    std::fs::write(
        &steady_cfg,
        "[flow]\ncapacity_per_worker = 262144\nudp_timeout = \"1s\"\n\
         tcp_unestablished_timeout = \"1s\"\n",
    )
    .unwrap();
    let (s1, s2) = (dir.path().join("s1"), dir.path().join("s2"));
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::create_dir_all(&s2).unwrap();
    let steady = peak_rss(&pcap, &steady_cfg, &s1);
    let at_end = peak_rss(&pcap, &open_cfg, &s2);
    let held = n * (134 + 16);
    eprintln!(
        "peak RSS: {} MB ending {n} open flows at the end, {} MB in steady state",
        at_end >> 20,
        steady >> 20
    );
    assert!(
        at_end <= steady + held + (16 << 20),
        "ending {n} open flows peaked at {} MB, steady state {} MB (+{} MB allowed)",
        at_end >> 20,
        steady >> 20,
        (held + (16 << 20)) >> 20
    );
}
