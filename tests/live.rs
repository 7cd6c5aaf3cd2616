//! `outflow run` on a real interface: two network namespaces joined by a veth pair, the
//! sensor capturing on one end with 2 workers, tcpreplay sending a generated capture from the
//! other. Needs root, `ip` and `tcpreplay`; skipped with the reason printed otherwise. The
//! namespaces are removed even when an assertion fails (a guard's Drop).
//!
//! Both ends live in their own namespaces, so nothing replayed can reach the host's routing
//! or any real network: frames arrive on the capture veth, are seen by the sensor, and die
//! there (no addresses, no routes, forwarding off in a fresh namespace).

mod common;

use outflow::gen::{merge, Packet, PcapWriter, TcpSession, UdpExchange, Wrap};
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Two namespaces and the veth pair between them. Interface names carry the tag, so tests
/// running at once (one process, several threads) never collide while the pair is created
/// in the host namespace.
struct Netns {
    cap: String,
    send: String,
    /// The capture end (in `cap`).
    cap_dev: String,
    /// The sending end (in `send`).
    send_dev: String,
}

impl Netns {
    fn create(tag: &str) -> Option<Netns> {
        let n = Netns {
            cap: format!("ofcap-{tag}"),
            send: format!("ofsnd-{tag}"),
            cap_dev: format!("ofc{tag}"),
            send_dev: format!("ofs{tag}"),
        };
        n.cleanup();
        let ok = [
            vec!["netns", "add", &n.cap],
            vec!["netns", "add", &n.send],
            vec![
                "link",
                "add",
                &n.cap_dev,
                "type",
                "veth",
                "peer",
                "name",
                &n.send_dev,
            ],
            vec!["link", "set", &n.cap_dev, "netns", &n.cap],
            vec!["link", "set", &n.send_dev, "netns", &n.send],
        ]
        .iter()
        .all(|a| ip(a));
        if !ok {
            n.cleanup();
            return None;
        }
        for (ns, dev) in [(&n.cap, &n.cap_dev), (&n.send, &n.send_dev)] {
            // No IPv6 on the test link: router solicitations would only add noise.
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{dev}.disable_ipv6=1"))
                .status();
            ip(&["-n", ns, "link", "set", dev, "mtu", "9000"]);
            if !ip(&["-n", ns, "link", "set", dev, "up"]) {
                return None;
            }
        }
        // The sensor's HTTP server listens on the capture namespace's own loopback.
        if !ip(&["-n", &n.cap, "link", "set", "lo", "up"]) {
            return None;
        }
        Some(n)
    }

    fn cleanup(&self) {
        // A pair left in the host namespace by a failed create.
        let _ = Command::new("ip")
            .args(["link", "del", &self.cap_dev])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cap])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.send])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The live tests run one at a time: each replays traffic at a rate the sensor (a debug
/// build) must keep up with loss-free, and the flood test times a stop, so two at once on a
/// 2-core machine would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn can_run() -> Result<(), String> {
    // SAFETY-free check of root: /proc/self/status Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Err("not root".into());
    }
    for tool in ["ip", "tcpreplay"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!("{tool} is not installed"));
        }
    }
    if !ip(&["netns", "list"]) {
        return Err("ip netns is unavailable".into());
    }
    Ok(())
}

/// The start of every live test: root and the tools checked, the other live tests waited
/// for, the namespaces made. `None` (the reason printed) when the test cannot run here.
fn live_setup(tag: &str) -> Option<(Netns, std::sync::MutexGuard<'static, ()>)> {
    if let Err(why) = can_run() {
        eprintln!("skipping live capture test: {why}");
        return None;
    }
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(ns) = Netns::create(tag) else {
        eprintln!("skipping live capture test: cannot create network namespaces");
        return None;
    };
    Some((ns, one))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Sensor(Child);
impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

fn wait_for(path: &Path, needle: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// GET `url` from inside network namespace `ns` (the sensor's HTTP server listens on that
/// namespace's loopback): a thread enters the namespace (`setns` affects only the calling
/// thread) and makes the request there.
fn get_in_netns(ns: &str, url: &str) -> (u16, String) {
    let (ns, url) = (ns.to_string(), url.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns handle");
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd we own; CLONE_NEWNET moves this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut r = agent
            .get(&url)
            .call()
            .expect("HTTP request in the namespace");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    })
    .join()
    .expect("request thread")
}

/// Value of one sample (`name{labels}` exactly as exposed) in a Prometheus text body.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
}

fn sum_samples(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn live_capture_with_fanout_alerts_mid_upload_and_counts_exactly() {
    let Some((ns, _one)) = live_setup("t1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // One 20 MB upload and 40 small UDP exchanges on distinct ports (spread over workers).
    let up = jumbo_upload();
    let mut streams: Vec<Box<dyn Iterator<Item = Packet>>> = vec![Box::new(up.packets())];
    let mut udps = Vec::new();
    for i in 0..40u16 {
        let mut u = UdpExchange::new(
            SocketAddr::from(([10, 0, 0, 9], 30_000 + i)),
            SocketAddr::from(([198, 51, 100, 1 + (i % 7) as u8], 53)),
            3,
            40,
            200,
        );
        u.start_ns = up.start_ns + u64::from(i) * 1_000_000;
        udps.push(u);
    }
    for u in &udps {
        streams.push(Box::new(u.packets()));
    }
    let pcap = dir.path().join("in.pcap");
    let mut w = PcapWriter::new(
        BufWriter::new(std::fs::File::create(&pcap).unwrap()),
        1,
        65535,
    )
    .unwrap();
    let mut sent = 0u64;
    for p in merge(streams) {
        w.write(p.ts_ns, &p.frame).unwrap();
        sent += 1;
    }
    w.into_inner().unwrap();

    let cfg = dir.path().join("outflow.toml");
    let slices = dir.path().join("slices");
    let slices_s = slices.display().to_string();
    let cap_dev = &ns.cap_dev;
    let write_cfg = |threshold: u64| {
        std::fs::write(
            &cfg,
            format!(
                "[capture]\ninterface = \"{cap_dev}\"\nworkers = 2\n\
                 [run]\nstats_interval = \"1s\"\n[log]\nformat = \"json\"\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n\
                 [slice]\ndir = \"{slices_s}\"\n\
                 [flow]\nudp_timeout = \"1h\"\n\
                 [detect.large_transfer]\nthreshold_bytes = {threshold}\nmin_packets = 100\ntiers = []\n"
            ),
        )
        .unwrap();
    };
    write_cfg(50_000_000);
    let alerts = dir.path().join("alerts.json");
    let flows = dir.path().join("flows.json");
    let log = dir.path().join("log.json");
    let (sensor, base) = start_sensor(
        &ns.cap,
        &cfg,
        &log,
        &[("--alerts-out", &alerts), ("--flows-out", &flows)],
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("PACKET_FANOUT"),
        "expected fanout mode"
    );

    // logrotate: the alert file is moved away before the SIGHUP; the sensor must reopen the
    // path, so the alert lands in a new file and the moved one stays as it was.
    std::fs::write(&alerts, "").ok();
    let rotated = dir.path().join("alerts.json.1");
    std::fs::rename(&alerts, &rotated).unwrap();

    // SIGHUP: lower the threshold to 10 MB without restarting.
    write_cfg(10_000_000);
    signal(&sensor.0, 1);
    assert!(
        wait_for(&log, "SIGHUP: reloaded", Duration::from_secs(5)),
        "reload not logged"
    );
    std::thread::sleep(Duration::from_millis(1200)); // workers pick it up on their tick

    tcpreplay(&ns, &pcap, "--pps=8000");
    // The upload's FIN closes it; wait out the 5 s linger so its record is written.
    assert!(
        wait_for(&flows, "\"resp_port\":443", Duration::from_secs(15)),
        "no flow record for the upload"
    );

    // While it runs: health, metrics and the open UDP flows over HTTP.
    let (status, body) = get_in_netns(&ns.cap, &format!("{base}/healthz"));
    assert_eq!(status, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["mode"], "live");
    assert_eq!(h["capturing"], true);
    assert_eq!(h["workers_alive"], 2);
    assert_eq!(h["drops"], 0);
    let (status, m) = get_in_netns(&ns.cap, &format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert_eq!(sample(&m, "outflow_capturing"), 1.0);
    assert_eq!(sample(&m, "outflow_workers_alive"), 2.0);
    assert_eq!(
        sample(
            &m,
            "outflow_alerts_total{detector=\"large_outbound_transfer\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "outflow_kernel_drops_total{where=\"kernel\"}"),
        0.0
    );
    let processed = sum_samples(&m, "outflow_packets_total");
    assert!(
        processed >= sent as f64 && sample(&m, "outflow_kernel_received_total") >= processed,
        "sent {sent}, processed {processed}"
    );
    assert_eq!(sample(&m, "outflow_sink_alerts_total{sink=\"file\"}"), 1.0);
    assert!(sample(&m, "outflow_packet_processing_seconds_count") >= sent as f64);
    assert_eq!(sample(&m, "outflow_detection_latency_seconds_count"), 1.0);
    let (status, body) = get_in_netns(&ns.cap, &format!("{base}/api/flows/top?limit=100"));
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["workers_answered"], 2, "{top}");
    // The 40 UDP exchanges are still open (udp_timeout 1h), each with its exact counters.
    let listed = top["flows"].as_array().unwrap();
    for u in &udps {
        let e = u.expected();
        let f = listed
            .iter()
            .find(|f| f["src_port"] == u.client.port() && f["src_ip"] == "10.0.0.9")
            .unwrap_or_else(|| panic!("{} not in the top flows: {top}", u.client));
        assert_eq!(f["out_pkts"], e.orig_pkts);
        assert_eq!(f["out_ip_bytes"], e.orig_ip_bytes);
        assert_eq!(f["in_pkts"], e.resp_pkts);
        assert_eq!(f["in_ip_bytes"], e.resp_ip_bytes);
    }

    stop_within(sensor, Duration::from_secs(10));

    let json = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let alerts = json(&alerts);
    let flows = json(&flows);
    let logs = json(&log);

    // The alert: the reloaded 10 MB threshold, raised while the upload was still open, in
    // the file reopened after the rotation.
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "");
    // One incident: opened mid-upload, closed at the stop (the asymmetry found at the
    // flow's end is folded into a held update or the close).
    assert!((2..=3).contains(&alerts.len()), "{alerts:?}");
    assert!(alerts
        .iter()
        .all(|l| l["incident_id"] == alerts[0]["incident_id"]));
    let last = alerts.last().unwrap();
    assert_eq!(last["update"], "closed", "{last}");
    assert_eq!(last["close_reason"], "end_of_input", "{last}");
    let a = &alerts[0];
    assert_eq!(a["update"], "opened");
    assert_eq!(a["reasons"][0]["detector"], "large_outbound_transfer");
    // The reloaded threshold: 10 MB (the default 100 MB is above the whole upload).
    let opened_at = a["out_ip_bytes"].as_u64().unwrap();
    assert!(
        (10_000_000..100_000_000).contains(&opened_at),
        "{opened_at}"
    );
    assert_eq!(a["src_ip"], "10.0.0.5");
    let rec = flows
        .iter()
        .find(|f| f["orig_ip"] == "10.0.0.5" && f["resp_port"] == 443)
        .expect("upload record");
    assert!(
        a["ts"].as_str().unwrap() < rec["end_ts"].as_str().unwrap(),
        "alert {} not before the upload ended {}",
        a["ts"],
        rec["end_ts"]
    );

    // Its slice: every packet of the upload, captured live, in a file tshark can read.
    let id = a["slice_ids"][0].as_str().expect("slice id");
    assert_eq!(a["slice_urls"][0], format!("/api/slices/{id}.pcap"));
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(slices.join(format!("{id}.json"))).unwrap())
            .unwrap();
    let e = up.expected();
    assert_eq!(side["complete"], true, "{side}");
    assert_eq!(side["end_reason"], "flow_ended", "{side}");
    assert_eq!(side["packets_dropped"], 0, "{side}");
    assert_eq!(side["packets"], e.orig_pkts + e.resp_pkts, "{side}");
    assert_eq!(side["linktype"], 1);
    let slice = std::fs::read(slices.join(format!("{id}.pcap"))).unwrap();
    assert_eq!(slice.len() as u64, side["bytes"].as_u64().unwrap());
    if let Ok(out) = Command::new("capinfos")
        .arg("-c")
        .arg(slices.join(format!("{id}.pcap")))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        assert!(
            text.contains(&format!(
                "Number of packets:   {}\n",
                e.orig_pkts + e.resp_pkts
            )),
            "{text}"
        );
    }

    // Exact per-flow counters, as the generator defines them.
    let got = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        [
            got(rec, "orig_pkts"),
            got(rec, "orig_ip_bytes"),
            got(rec, "resp_pkts"),
            got(rec, "resp_ip_bytes")
        ],
        [e.orig_pkts, e.orig_ip_bytes, e.resp_pkts, e.resp_ip_bytes]
    );
    for u in &udps {
        let e = u.expected();
        let r = flows
            .iter()
            .find(|f| f["orig_port"] == u.client.port() && f["orig_ip"] == "10.0.0.9")
            .unwrap_or_else(|| panic!("no record for {}", u.client));
        assert_eq!(
            [
                got(r, "orig_pkts"),
                got(r, "orig_ip_bytes"),
                got(r, "resp_pkts"),
                got(r, "resp_ip_bytes")
            ],
            [e.orig_pkts, e.orig_ip_bytes, e.resp_pkts, e.resp_ip_bytes],
            "{}",
            u.client
        );
    }

    // Both workers got flows, nothing was dropped.
    let finals: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["message"] == "worker stats" && l["kind"] == "final")
        .collect();
    assert_eq!(finals.len(), 2, "{logs:?}");
    // The output side of the stats line: what was written and the analysers' tables.
    let out = logs
        .iter()
        .find(|l| l["message"] == "output stats" && l["kind"] == "final")
        .expect("final output stats line");
    assert!(out["alerts"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(
        out["flow_records"].as_u64().unwrap(),
        flows.len() as u64,
        "{out}"
    );
    assert!(out["volume_reports"].as_u64().unwrap() > 0, "{out}");
    for f in &finals {
        assert!(f["flows_created"].as_u64().unwrap() > 0, "idle worker: {f}");
        assert_eq!(f["kernel_dropped"], 0, "{f}");
        assert_eq!(f["events_dropped"], 0, "{f}");
    }
}

/// Starts `outflow run --config cfg` inside `ns` with the given output flags, logging JSON
/// to `log`; waits until it captures and its HTTP server listens, and returns it with the
/// base URL.
fn start_sensor(ns: &str, cfg: &Path, log: &Path, outputs: &[(&str, &Path)]) -> (Sensor, String) {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        env!("CARGO_BIN_EXE_outflow"),
        "run",
        "--config",
    ])
    .arg(cfg);
    for (flag, path) in outputs {
        cmd.arg(flag).arg(path);
    }
    let sensor = Sensor(
        cmd.stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(log, "listening on http://", Duration::from_secs(10))
            && wait_for(log, "capturing with", Duration::from_secs(5)),
        "sensor did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let l = std::fs::read_to_string(log).unwrap();
    let at = l.find("listening on http://").unwrap() + "listening on http://".len();
    let hostport: String = l[at..].chars().take_while(|c| *c != '/').collect();
    (sensor, format!("http://{hostport}"))
}

/// Waits for the sensor to exit, at most `limit`; returns its status, the time it took and
/// its peak resident memory (`ru_maxrss` from `wait4`, bytes). `ip netns exec` execs the
/// sensor in place, so the child is the sensor itself.
fn wait_exit(sensor: Sensor, limit: Duration) -> (i32, Duration, u64) {
    let t = Instant::now();
    let pid = sensor.0.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child's pid; WNOHANG never blocks.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        assert!(
            t.elapsed() < limit,
            "the sensor did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    // Reaped: the guard's kill/wait must not touch a recycled pid.
    std::mem::forget(sensor);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    (code, took, u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024)
}

/// Polls the sensor's /metrics until `done` holds (10 s at most); returns that scrape.
fn wait_for_metrics(ns: &Netns, base: &str, done: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let (_, m) = get_in_netns(&ns.cap, &format!("{base}/metrics"));
        if done(&m) {
            return m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "packets not seen: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A 20 MB upload 10.0.0.5:51234 → 203.0.113.50:443 in jumbo frames (fewer packets to
/// replay), 100 µs apart.
fn jumbo_upload() -> TcpSession {
    let mut up = TcpSession::new(
        sa("10.0.0.5:51234"),
        sa("203.0.113.50:443"),
        20_000_000,
        20_000,
    );
    up.mss = 8960;
    up.gap_ns = 100_000;
    up
}

/// SIGTERM, then a successful exit within `limit`.
fn stop_within(mut sensor: Sensor, limit: Duration) {
    signal(&sensor.0, 15);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = sensor.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < limit, "no exit within {limit:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

fn tcpreplay(ns: &Netns, pcap: &Path, rate: &str) {
    let replay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.send,
            "tcpreplay",
            "-q",
            "-i",
            &ns.send_dev,
            rate,
        ])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// Twelve UDP exchanges of 10.0.0.9 (two requests of 100 bytes, answers of 300), each
/// from its own port, for the live tests that need a few open flows.
fn twelve_udp_exchanges() -> Vec<UdpExchange> {
    (0..12u16)
        .map(|i| {
            UdpExchange::new(
                SocketAddr::from(([10, 0, 0, 9], 40_000 + i)),
                SocketAddr::from(([198, 51, 100, 7], 5000)),
                2,
                100,
                300,
            )
        })
        .collect()
}

/// Writes the exchanges' packets, merged in time order, to `path`; returns the count.
fn write_udp_pcap(path: &Path, udps: &[UdpExchange]) -> u64 {
    write_udp_pcap_wrapped(path, udps, None)
}

/// [`write_udp_pcap`], each frame inside `wrap` if given (as a mirror delivers it).
fn write_udp_pcap_wrapped(path: &Path, udps: &[UdpExchange], wrap: Option<Wrap>) -> u64 {
    let mut seq = 0u32;
    common::write_pcap(
        path,
        merge(
            udps.iter()
                .map(|u| Box::new(u.packets()) as Box<dyn Iterator<Item = Packet>>)
                .collect(),
        )
        .map(|p| match wrap {
            Some(w) => {
                seq += 1;
                Packet {
                    ts_ns: p.ts_ns,
                    frame: outflow::gen::wrap(w, &p.frame, seq),
                }
            }
            None => p,
        }),
    )
}

/// Issue 12.1: with `slice.dir` set (as the shipped config does), a sensor whose interface
/// disappears used to keep running forever with no worker: each worker, after its capture
/// failed, kept serving slice requests, so the "every worker finished" check never passed.
/// Now: the open flows are written, the process exits non-zero within seconds (systemd's
/// `Restart=on-failure` brings it back), and the log names the interface.
#[test]
fn live_sensor_exits_non_zero_when_its_interface_goes_away() {
    let Some((ns, _one)) = live_setup("t2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Twelve UDP exchanges left open (udp_timeout 1h): their records can only come from
    // the flush at exit.
    let udps = twelve_udp_exchanges();
    let pcap = dir.path().join("in.pcap");
    let sent = write_udp_pcap(&pcap, &udps);
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\n[log]\nformat = \"json\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[slice]\ndir = \"{}\"\n\
             [state]\ndir = \"{}\"\n[flow]\nudp_timeout = \"1h\"\n",
            ns.cap_dev,
            dir.path().join("slices").display(),
            dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let (flows, log) = (dir.path().join("flows.json"), dir.path().join("log.json"));
    let (sensor, base) = start_sensor(&ns.cap, &cfg, &log, &[("--flows-out", &flows)]);
    tcpreplay(&ns, &pcap, "--pps=2000");
    let m = wait_for_metrics(&ns, &base, |m| {
        sum_samples(m, "outflow_packets_total") >= sent as f64
    });
    assert_eq!(sample(&m, "outflow_capturing"), 1.0);

    assert!(ip(&["-n", &ns.cap, "link", "del", &ns.cap_dev]));
    let (code, took, _) = wait_exit(sensor, Duration::from_secs(10));
    let logs = std::fs::read_to_string(&log).unwrap();
    // 2, as for every error that stops the sensor (README "Errors name what to fix").
    assert_eq!(
        code, 2,
        "exit status after losing the interface; log:\n{logs}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?} to exit");
    assert!(
        logs.contains("capture stopped") && logs.contains(&ns.cap_dev),
        "{logs}"
    );
    // Outputs flushed: every open flow has its record, with its exact counters.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&flows)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for u in &udps {
        let e = u.expected();
        let r = records
            .iter()
            .find(|f| f["orig_port"] == u.client.port())
            .unwrap_or_else(|| panic!("no record for {}: {records:?}", u.client));
        assert_eq!(r["orig_ip_bytes"], e.orig_ip_bytes);
        assert_eq!(r["resp_ip_bytes"], e.resp_ip_bytes);
    }
}

/// Resident-memory high-water mark of a running process, bytes (`VmHWM`).
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Issue 12.3 and 12.4: after a flood of new sources, SIGTERM used to take 31 s (more than
/// systemd's TimeoutStopSec) and ending the open flows queued ~2 KiB per flow (gigabytes).
/// Here 60 000 one-packet flows from as many sources are open when SIGTERM arrives: the
/// sensor must exit 0 within 5 s, write a record for every flow and the state snapshot, and
/// its peak memory must stay at what the same traffic costs in steady state (the same
/// flows once ended by their idle timeout, then a second flood holding the table full).
#[test]
fn sigterm_after_a_flood_exits_in_seconds_without_a_memory_spike() {
    let Some((ns, _one)) = live_setup("t3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flood.pcap");
    // The test runs the debug build: a modest rate it keeps up with, loss-free.
    let flows_n = 60_000u64;
    let s = outflow::gen::write_concurrent(&pcap, flows_n, 7).unwrap();
    assert_eq!(s.flows, flows_n);
    let cfg = dir.path().join("outflow.toml");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\n[log]\nformat = \"json\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[slice]\ndir = \"{}\"\n\
             [state]\ndir = \"{}\"\n\
             [flow]\nudp_timeout = \"8s\"\ntcp_unestablished_timeout = \"8s\"\n",
            ns.cap_dev,
            dir.path().join("slices").display(),
            state.display(),
        ),
    )
    .unwrap();
    let (flows, log) = (dir.path().join("flows.json"), dir.path().join("log.json"));
    let (sensor, base) = start_sensor(&ns.cap, &cfg, &log, &[("--flows-out", &flows)]);
    let metric = |name: &str| {
        let (_, m) = get_in_netns(&ns.cap, &format!("{base}/metrics"));
        sum_samples(&m, name)
    };
    let wait_metric = |name: &str, want: f64| {
        let t = Instant::now();
        while metric(name) < want {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name} stays below {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // Steady state: the flood, every flow ended by its idle timeout (which fills the
    // cross-flow tables as much as ending them at stop can), then the flood again.
    tcpreplay(&ns, &pcap, "--pps=30000");
    wait_metric("outflow_flows_ended_total", flows_n as f64);
    tcpreplay(&ns, &pcap, "--pps=30000");
    wait_metric("outflow_flows_created_total", 2.0 * flows_n as f64);
    assert_eq!(metric("outflow_kernel_drops_total"), 0.0);
    let open = metric("outflow_flows_active");
    assert!(open >= flows_n as f64 * 0.9, "{open} flows open");
    let steady = vm_hwm(sensor.0.id());

    signal(&sensor.0, 15);
    let (code, took, peak) = wait_exit(sensor, Duration::from_secs(20));
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{logs}");
    eprintln!(
        "stop with {open} flows open: {took:?}; peak RSS {} MB, steady {} MB",
        peak >> 20,
        steady >> 20
    );
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    if std::env::var_os("OUTFLOW_TEST_SHOW_LOG").is_some() {
        eprintln!("{logs}");
    }
    assert!(
        peak <= steady + (16 << 20),
        "peak RSS {} MB at stop, {} MB in steady state",
        peak >> 20,
        steady >> 20
    );
    // Every flow got its record, and the history was saved.
    let records = std::fs::read_to_string(&flows).unwrap().lines().count() as u64;
    assert_eq!(records, 2 * flows_n, "{logs}");
    assert!(logs.contains("\"flows_unended\":0"), "{logs}");
    assert!(
        state
            .join(outflow::correlate::STATE_FILE)
            .metadata()
            .unwrap()
            .len()
            > 0
    );
}

/// One `Name:\tvalue` line of `/proc/PID/status`.
fn proc_status(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Issue 12.10: `run.user` leaves the process with no capability, a bounding set of just
/// CAP_NET_ADMIN and CAP_NET_RAW, and no way to gain privileges by executing anything.
#[test]
fn run_user_drops_to_the_user_with_no_new_privileges_and_a_capture_only_bounding_set() {
    let Some((ns, _one)) = live_setup("t4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The outputs are opened after the switch: the user must be able to write them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\n[run]\nuser = \"nobody\"\n\
             [log]\nformat = \"json\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            ns.cap_dev
        ),
    )
    .unwrap();
    let (flows, log) = (dir.path().join("flows.json"), dir.path().join("log.json"));
    let (sensor, _) = start_sensor(&ns.cap, &cfg, &log, &[("--flows-out", &flows)]);
    assert!(wait_for(&log, "dropped privileges", Duration::from_secs(5)));
    let pid = sensor.0.id();
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(proc_status(pid, "Groups"), "");
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(pid, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status(pid, "CapBnd"), "0000000000003000");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    // Every worker thread too (prctl state is per thread, inherited by later threads).
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        if status.contains("outflow-worker") {
            assert!(status.contains("NoNewPrivs:\t1"), "{status}");
            assert!(status.contains("CapBnd:\t0000000000003000"), "{status}");
        }
    }
    signal(&sensor.0, 15);
    let (code, _, _) = wait_exit(sensor, Duration::from_secs(10));
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
}

/// A flow output that cannot be written (a full disk) is logged while the sensor runs,
/// naming the file, not only when it stops: a sensor runs for months.
#[test]
fn a_full_disk_is_logged_when_it_happens() {
    let Some((ns, _one)) = live_setup("t5") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    write_udp_pcap(&pcap, &twelve_udp_exchanges());
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\n[log]\nformat = \"json\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[flow]\nudp_timeout = \"1s\"\n",
            ns.cap_dev
        ),
    )
    .unwrap();
    let log = dir.path().join("log.json");
    let (sensor, _) = start_sensor(
        &ns.cap,
        &cfg,
        &log,
        &[("--flows-out", Path::new("/dev/full"))],
    );
    tcpreplay(&ns, &pcap, "--pps=2000");
    // The flows end on their 1 s timeout and their records are written (and flushed).
    assert!(
        wait_for(
            &log,
            "cannot write flow records to /dev/full",
            Duration::from_secs(10)
        ),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logs.matches("cannot write flow records").count(),
        1,
        "{logs}"
    );
    signal(&sensor.0, 15);
    let (code, _, _) = wait_exit(sensor, Duration::from_secs(10));
    // The stop itself went well (exit 0); the stop summary repeats the output's failure.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains("\"output: cannot write flow records to /dev/full"),
        "{logs}"
    );
}

/// Issue 13: a VXLAN mirror (as AWS Traffic Mirroring delivers it) captured live with two
/// workers and `capture.fanout = false`: every inner connection is one flow with its exact
/// inner counters and the tunnel (VNI 42) on its record, and the mirror session's own flows
/// are kept apart and never outbound.
#[test]
fn a_vxlan_mirror_captured_live_counts_each_inner_connection_once() {
    let Some((ns, _one)) = live_setup("t6") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let udps = twelve_udp_exchanges();
    let pcap = dir.path().join("vxlan.pcap");
    let sent = write_udp_pcap_wrapped(&pcap, &udps, Some(Wrap::Vxlan { vni: 42 }));
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\nfanout = false\n[log]\nformat = \"json\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[flow]\nudp_timeout = \"1h\"\n",
            ns.cap_dev,
        ),
    )
    .unwrap();
    let (flows, log) = (dir.path().join("flows.json"), dir.path().join("log.json"));
    let (sensor, base) = start_sensor(&ns.cap, &cfg, &log, &[("--flows-out", &flows)]);
    tcpreplay(&ns, &pcap, "--pps=2000");
    // The capture thread publishes its counters on its own tick.
    wait_for_metrics(&ns, &base, |m| {
        sum_samples(m, "outflow_packets_total") >= sent as f64
            && sample(m, "outflow_decapsulated_frames_total{layer=\"vxlan\"}") >= sent as f64
    });
    signal(&sensor.0, libc::SIGTERM);
    let (code, _, _) = wait_exit(sensor, Duration::from_secs(10));
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("capture.fanout = false"), "{logs}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&flows)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for u in &udps {
        let e = u.expected();
        let mine: Vec<_> = records
            .iter()
            .filter(|f| f["orig_port"] == u.client.port() && f["orig_ip"] == "10.0.0.9")
            .collect();
        assert_eq!(mine.len(), 1, "{}: {records:?}", u.client);
        let r = mine[0];
        assert_eq!(
            (&r["orig_pkts"], &r["orig_ip_bytes"], &r["resp_ip_bytes"]),
            (
                &serde_json::json!(e.orig_pkts),
                &serde_json::json!(e.orig_ip_bytes),
                &serde_json::json!(e.resp_ip_bytes)
            )
        );
        assert_eq!(r["tunnel"][0]["type"], "vxlan");
        assert_eq!(r["tunnel"][0]["id"], 42);
        assert_eq!(r["tunnel"][0]["dst_port"], 4789);
    }
    let outer: Vec<_> = records
        .iter()
        .filter(|f| f["tunnel_outer"] == "vxlan")
        .collect();
    assert!(!outer.is_empty());
    assert!(outer.iter().all(|f| f["outbound"].is_null()));
    let frames: u64 = outer
        .iter()
        .map(|f| f["orig_pkts"].as_u64().unwrap() + f["resp_pkts"].as_u64().unwrap())
        .sum();
    assert_eq!(frames, sent);
    assert_eq!(records.len(), udps.len() + outer.len());
}

/// A live sensor publishing to a bus that is down (issue 16): the upload alert is written
/// mid-upload all the same; events queue up to `bus.queue`, the rest are dropped and
/// counted, and the output thread never waits for the bus.
#[test]
fn live_sensor_alerts_at_the_crossing_packet_while_the_bus_is_down() {
    let Some((ns, _one)) = live_setup("t5") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    common::write_pcap(&pcap, jumbo_upload().packets());
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{}\"\nworkers = 2\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [detect.large_transfer]\nthreshold_bytes = 10000000\nmin_packets = 100\ntiers = []\n\
             [bus]\nurl = \"nats://127.0.0.1:1\"\nsensor_id = \"edge-live\"\nqueue = 20\n\
             drain_timeout = \"1s\"\n",
            ns.cap_dev
        ),
    )
    .unwrap();
    let alerts = dir.path().join("alerts.json");
    let flows = dir.path().join("flows.json");
    let log = dir.path().join("log.json");
    let (sensor, base) = start_sensor(
        &ns.cap,
        &cfg,
        &log,
        &[("--alerts-out", &alerts), ("--flows-out", &flows)],
    );
    tcpreplay(&ns, &pcap, "--pps=8000");
    assert!(
        wait_for(&flows, "\"resp_port\":443", Duration::from_secs(15)),
        "no flow record for the upload"
    );
    let (status, m) = get_in_netns(&ns.cap, &format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert_eq!(sample(&m, "outflow_bus_connected"), 0.0);
    assert_eq!(sample(&m, "outflow_bus_published_events_total"), 0.0);
    // The queue is full and everything past it was dropped and counted: the upload's
    // volume reports alone (one per 256 KiB) are more than 20.
    assert_eq!(sample(&m, "outflow_bus_queued_events"), 20.0, "{m}");
    let dropped = sample(&m, "outflow_bus_dropped_events_total");
    assert!(
        dropped >= 20_000_000.0 / 262_144.0 - 20.0,
        "dropped {dropped}"
    );
    assert_eq!(
        sample(
            &m,
            "outflow_alerts_total{detector=\"large_outbound_transfer\"}"
        ),
        1.0
    );

    // With the bus down: it drains for bus.drain_timeout (1 s), then stops.
    stop_within(sensor, Duration::from_secs(15));
    // The per-flow alert, raised while the upload was open: before the flow's end.
    let line = std::fs::read_to_string(&alerts).unwrap();
    let a: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(a["detector"], "large_outbound_transfer", "{line}");
    let record: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&flows)
            .unwrap()
            .lines()
            .find(|l| l.contains("\"resp_port\":443"))
            .unwrap(),
    )
    .unwrap();
    assert!(a["ts"].as_str().unwrap() < record["end_ts"].as_str().unwrap());
    assert_eq!(line.lines().count(), 1, "{line}");
}
