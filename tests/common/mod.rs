//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use outflow::config::Config;
use outflow::output::Sinks;
use outflow::replay::{run, ReplayOptions, ReplayReport};
use std::path::{Path, PathBuf};

/// `../shared/pcaps` relative to the crate, if present.
pub fn shared_pcaps() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// Replays files and collects every alert and flow record.
pub fn replay(cfg: &Config, workers: usize, inputs: &[PathBuf]) -> ReplayReport {
    replay_with(cfg, workers, inputs, None)
}

/// [`replay`], publishing its counters into `telemetry` (for `/metrics`) when given.
pub fn replay_with(
    cfg: &Config,
    workers: usize,
    inputs: &[PathBuf],
    telemetry: Option<std::sync::Arc<outflow::telemetry::Telemetry>>,
) -> ReplayReport {
    run(&ReplayOptions {
        config: cfg.clone(),
        workers: Some(workers),
        inputs: inputs.to_vec(),
        sinks: Sinks {
            alerts: None,
            flows: None,
            dns: None,
            collect: true,
            append: false,
            ordered: true,
            syslog: None,
            ipfix: None,
            sink_queue: 4096,
            telemetry,
            slice_requests: None,
            dns_recycle: None,
            bus: None,
        },
        progress: false,
    })
    .expect("replay")
}

/// Writes generated packets, in the order given, to an Ethernet pcap file at `path`;
/// returns how many.
pub fn write_pcap(path: &Path, packets: impl IntoIterator<Item = outflow::gen::Packet>) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = outflow::gen::PcapWriter::new(file, 1, 65535).unwrap();
    let mut n = 0;
    for p in packets {
        w.write(p.ts_ns, &p.frame).unwrap();
        n += 1;
    }
    w.into_inner().unwrap();
    n
}

/// A running `outflow` process with its HTTP server, for tests that talk to it over HTTP.
pub struct Sensor {
    /// The process.
    pub child: std::process::Child,
    /// Where its HTTP server listens.
    pub addr: std::net::SocketAddr,
    /// Everything it wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sensor {
    /// Starts `outflow <args> --http 127.0.0.1:0`-style commands: `args` must contain the
    /// subcommand and an `--http` address; waits for the "listening on http://ADDR/" line.
    /// Standard input is piped (see [`Sensor::stdin`]), standard output discarded.
    pub fn start(args: &[&str]) -> Sensor {
        Sensor::start_env(args, &[])
    }

    /// As [`Sensor::start`], with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Sensor {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_outflow"))
            .args(args)
            .env_remove("OUTFLOW_HTTP_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn outflow");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr: String = rest.chars().take_while(|c| *c != '/').collect();
                    let _ = tx.send(addr);
                }
                let mut g = l2.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "outflow did not start its HTTP server:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Sensor { child, addr, log }
    }

    /// The process's standard input (e.g. to feed `replay -` a capture piece by piece).
    pub fn stdin(&mut self) -> &mut std::process::ChildStdin {
        self.child.stdin.as_mut().expect("stdin")
    }

    /// GET `path` with an optional bearer token: (status, content type, body).
    pub fn get_with(&self, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(20)))
            .build()
            .into();
        let url = format!("http://{}{}", self.addr, path);
        let mut req = agent.get(&url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().expect("HTTP request");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("body");
        (status, ctype, body)
    }

    /// GET `path` without a token: (status, body as text).
    pub fn get(&self, path: &str) -> (u16, String) {
        let (s, _, b) = self.get_with(path, None);
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    /// Waits until /healthz says the replay is over (`"capturing": false`).
    pub fn wait_finished(&self) {
        let start = std::time::Instant::now();
        loop {
            let (_, body) = self.get("/healthz");
            let v: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
            if v["capturing"] == serde_json::Value::Bool(false) {
                return;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "replay did not finish: {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().expect("wait")
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a classic pcap into its global header and its records (header + data each).
pub fn pcap_records(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let head = bytes[..24].to_vec();
    let le = bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || bytes[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let mut recs = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let f = [bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]];
        let caplen = if le {
            u32::from_le_bytes(f)
        } else {
            u32::from_be_bytes(f)
        } as usize;
        recs.push(bytes[at..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    (head, recs)
}

/// What a worker fed the capture on stdin one packet per batch has seen after `n` records:
/// an in-process replay of exactly those (their end-of-input records are the flows still
/// open).
pub fn replay_prefix(dir: &Path, head: &[u8], recs: &[Vec<u8>], n: usize) -> ReplayReport {
    let prefix = dir.join("prefix.pcap");
    let mut p = head.to_vec();
    for r in &recs[..n] {
        p.extend_from_slice(r);
    }
    std::fs::write(&prefix, &p).unwrap();
    let mut cfg = Config::default();
    cfg.capture.batch_packets = 1;
    replay(&cfg, 1, &[prefix])
}

/// The events one worker produces from `inputs`, read as one capture, as it hands them to
/// the output thread (alerts stamped with their read time): the replay's reader and a
/// worker loop like the replay's, with this test in the output thread's place.
pub fn worker_events(
    cfg: &Config,
    inputs: &[PathBuf],
) -> Vec<(outflow::event::EventKey, outflow::event::Event)> {
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<outflow::event::OutMsg>();
    let depth = cfg.capture.batches_per_worker;
    let (tx, rx) = crossbeam_channel::bounded::<outflow::capture::Batch>(depth);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<outflow::capture::Batch>(depth);
    for _ in 0..depth {
        let bytes = (cfg.capture.batch_packets * 1600).max(256 * 1024);
        free_tx
            .send(outflow::capture::Batch::with_capacity(
                cfg.capture.batch_packets,
                bytes,
            ))
            .unwrap();
    }
    let worker_cfg = cfg.clone();
    let worker = std::thread::spawn(move || {
        let mut d = outflow::pipeline::Driver::new(
            outflow::worker::Worker::new(&worker_cfg),
            0,
            out_tx,
            true,
            None,
        );
        for batch in rx {
            d.worker.set_link(batch.link);
            d.packets(&batch);
            d.advance(batch.clock_ns);
            d.worker.expire_fragments(batch.clock_ns);
            d.read_mono_ns = batch.read_mono_ns;
            d.flush();
            let _ = free_tx.send(batch);
        }
        d.finish();
    });
    let mut dispatcher =
        outflow::capture::dispatch::Dispatcher::new(vec![tx], vec![free_rx]).unwrap();
    dispatcher.set_decap(cfg.decap.decap());
    let read = outflow::capture::file::read_files(
        inputs,
        cfg,
        &mut dispatcher,
        &mut |_| {},
        &mut outflow::capture::progress::Progress::off(),
    );
    drop(dispatcher);
    worker.join().unwrap();
    read.unwrap_or_else(|e| panic!("{inputs:?}: {e}"));
    out_rx
        .try_iter()
        .filter_map(|m| match m {
            outflow::event::OutMsg::Event(k, e) => Some((k, e)),
            _ => None,
        })
        .collect()
}
