//! The `outflow` command: CLI parsing, config loading and thread wiring. The only place that
//! uses `anyhow`; the library reports typed errors.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use outflow::config::Config;
use outflow::config::LogFormat;
use outflow::http::HttpServer;
use outflow::output::{Output, Sinks};
use outflow::replay::{self, ReplayOptions};
use outflow::run::{RunOptions, Signals};
use outflow::telemetry::Telemetry;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Network sensor that detects data exfiltration while it happens.
#[derive(Parser)]
#[command(name = "outflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay pcap/pcapng files, plain or gzip/zstd-compressed, through the sensor (in
    /// order, as one capture).
    Replay {
        /// Configuration file (TOML). Without it the documented defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads (default: capture.workers from the config, 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Write alerts as JSON lines to FILE, or `-` for standard output.
        #[arg(long, value_name = "FILE|-")]
        alerts_out: Option<String>,
        /// Write one JSON line per finished flow to FILE (or `-`).
        #[arg(long, value_name = "FILE|-")]
        flows_out: Option<String>,
        /// Write one JSON line per DNS transaction to FILE (or `-`).
        #[arg(long, value_name = "FILE|-")]
        dns_out: Option<String>,
        /// Load the cross-flow state (24 h totals, baselines, DNS and cloud windows, port
        /// durations, open incidents) from DIR and save it back at the end instead of
        /// closing it, so consecutive replays behave like one continuous run.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Write a pcap slice of every flagged flow into DIR (overrides slice.dir).
        #[arg(long, value_name = "DIR")]
        slice_dir: Option<PathBuf>,
        /// Also send alerts to syslog (RFC 5424): udp://host:port, tcp://host:port or
        /// unix:///dev/log; facility, app name and host name come from output.syslog.
        #[arg(long, value_name = "TARGET")]
        syslog: Option<String>,
        /// Also export every flow record as IPFIX (RFC 7011, biflows per RFC 5103) to a
        /// collector: udp://host:port or tcp://host:port; the rest comes from output.ipfix.
        #[arg(long, value_name = "URL")]
        ipfix: Option<String>,
        /// Publish the event stream to NATS JetStream for `outflow correlate` (nats://host:port,
        /// overrides bus.url): the cross-flow detectors and incidents then run there, the
        /// per-flow alerts and the records stay here.
        #[arg(long, value_name = "URL")]
        bus: Option<String>,
        /// This sensor's name on the bus (overrides bus.sensor_id; default: the host name).
        #[arg(long, value_name = "ID", requires = "bus")]
        sensor_id: Option<String>,
        /// Serve /metrics, /healthz and the API on ADDR (e.g. 127.0.0.1:9760, port 0 = any
        /// free port; the address is logged) while replaying; the token comes from http.token
        /// or OUTFLOW_HTTP_TOKEN.
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Keep the HTTP server up after the replay ends, until SIGINT or SIGTERM.
        #[arg(long, requires = "http")]
        serve: bool,
        /// Do not print the summary, nor the progress shown on a terminal.
        #[arg(long, short)]
        quiet: bool,
        /// Capture files, plain or compressed (gzip, zstd: found by their first bytes);
        /// `-` = standard input, e.g. from `tcpdump -w -`.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
    },
    /// Capture live from `capture.interface` as a long-running service (see systemd/).
    Run {
        /// Configuration file (TOML); re-read on SIGHUP.
        #[arg(long)]
        config: PathBuf,
        /// Worker threads, overriding capture.workers.
        #[arg(long)]
        workers: Option<usize>,
        /// Interface, overriding capture.interface.
        #[arg(long)]
        interface: Option<String>,
        /// Append alerts as JSON lines to FILE (`-` = stdout), overriding output.alerts.
        #[arg(long, value_name = "FILE|-")]
        alerts_out: Option<String>,
        /// Append flow records as JSON lines to FILE, overriding output.flows.
        #[arg(long, value_name = "FILE|-")]
        flows_out: Option<String>,
        /// Append DNS transactions as JSON lines to FILE, overriding output.dns.
        #[arg(long, value_name = "FILE|-")]
        dns_out: Option<String>,
        /// Publish the event stream to NATS JetStream for `outflow correlate`, overriding
        /// bus.url.
        #[arg(long, value_name = "URL")]
        bus: Option<String>,
        /// This sensor's name on the bus, overriding bus.sensor_id.
        #[arg(long, value_name = "ID")]
        sensor_id: Option<String>,
    },
    /// Run the cross-flow detectors and incidents over the events sensors publish to NATS
    /// JetStream (`bus.url` / `--bus` on the sensors), for the partitions this process
    /// claims; runs until SIGINT or SIGTERM.
    Correlate {
        /// The bus: nats://host:port (several comma-separated), overriding bus.url.
        #[arg(long, value_name = "URL")]
        bus: Option<String>,
        /// Configuration file (TOML): thresholds, windows, incidents, bus.* keys.
        #[arg(long)]
        config: Option<PathBuf>,
        /// This correlator's name in the partition leases (default: host name and PID).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Append incident lines (JSON) to FILE, or `-` for standard output.
        #[arg(long, value_name = "FILE|-")]
        alerts_out: Option<String>,
        /// Serve /metrics, /healthz and the API (/api/incidents, /api/alerts) on ADDR.
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// Read every partition from its start and write every incident to --alerts-out
        /// again, touching nothing of the live correlators (no leases, checkpoints,
        /// snapshots or incident subject).
        #[arg(long)]
        rebuild: bool,
    },
    /// Validate a configuration file and print the effective values.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Read capture files with libpcap and do nothing else: the floor that replay
    /// throughput is measured against.
    ReadOnly {
        /// Capture files.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("outflow: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to standard error (journald under systemd), as text or one JSON object per line.
fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The NATS client logs every reconnect attempt at info; the bus code says once
        // when the bus goes away and when it is back.
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!("{},async_nats=warn", cfg.log.level))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: under systemd standard error is the journal,
    // and escape codes there are noise in every SIEM that reads it (NO_COLOR honoured too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the command: `Ok` carries the exit status of a command that ran to its end (1 when
/// replay had to stop reading a file early), `Err` one that could not.
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config: path,
            workers,
            interface,
            alerts_out,
            flows_out,
            dns_out,
            bus,
            sensor_id,
        } => {
            let mut config = Config::load(&path)?;
            if let Some(url) = bus {
                config.bus.url = url;
            }
            if let Some(id) = sensor_id {
                config.bus.sensor_id = id;
            }
            config.validate().context("--bus/--sensor-id")?;
            if let Some(w) = workers {
                anyhow::ensure!(w >= 1, "--workers must be at least 1");
                config.capture.workers = w;
            }
            if let Some(i) = interface {
                config.capture.interface = i;
            }
            init_logging(&config);
            let signals = Signals::install().context("cannot install signal handlers")?;
            let report = outflow::run::run(
                RunOptions {
                    config_path: path,
                    config,
                    alerts_out: alerts_out.as_deref().map(Output::parse),
                    flows_out: flows_out.as_deref().map(Output::parse),
                    dns_out: dns_out.as_deref().map(Output::parse),
                },
                signals,
            )?;
            tracing::info!(capture_mode = report.mode.name(), "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            workers,
            alerts_out,
            flows_out,
            dns_out,
            state_dir,
            slice_dir,
            syslog,
            ipfix,
            bus,
            sensor_id,
            http,
            serve,
            quiet,
            captures,
        } => {
            let mut config = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            if let Some(d) = state_dir {
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("cannot create --state-dir {}", d.display()))?;
                config.state.dir = d.display().to_string();
            }
            if let Some(d) = slice_dir {
                config.slice.dir = d.display().to_string();
            }
            init_logging(&config);
            if workers == Some(0) {
                anyhow::bail!("--workers must be at least 1");
            }
            let mut syslog_cfg = None;
            if let Some(target) = syslog {
                config.output.syslog.target = target;
                config.validate().context("--syslog")?;
                syslog_cfg = Some(config.output.syslog.clone());
            }
            if let Some(target) = ipfix {
                config.output.ipfix.target = target;
                config.validate().context("--ipfix")?;
            }
            let ipfix_cfg = Some(config.output.ipfix.clone());
            if let Some(url) = bus {
                config.bus.url = url;
                if let Some(id) = sensor_id {
                    config.bus.sensor_id = id;
                }
                config.validate().context("--bus")?;
            }
            let n = workers.unwrap_or_else(|| config.effective_workers()).max(1);
            let telemetry = http
                .as_ref()
                .map(|_| Telemetry::new("replay", n, config.http.alerts_kept));
            let server = match (&http, &telemetry) {
                (Some(addr), Some(t)) => {
                    let token = outflow::http::token(&config.http)?;
                    Some(HttpServer::start_with(addr, token, Arc::clone(t))?)
                }
                _ => None,
            };
            let sink_queue = config.output.sink_queue;
            let bus_cfg = Some(config.bus.clone());
            let opts = ReplayOptions {
                config,
                workers,
                inputs: captures,
                sinks: Sinks {
                    alerts: alerts_out.as_deref().map(Output::parse),
                    flows: flows_out.as_deref().map(Output::parse),
                    dns: dns_out.as_deref().map(Output::parse),
                    collect: false,
                    append: false,
                    ordered: true,
                    syslog: syslog_cfg,
                    ipfix: ipfix_cfg,
                    sink_queue,
                    telemetry,
                    slice_requests: None,
                    dns_recycle: None,
                    bus: bus_cfg,
                },
                // A person watching a terminal sees a long replay move; a pipe or a log file
                // gets nothing but the summary.
                progress: !quiet && std::io::stderr().is_terminal(),
            };
            // Installed before the replay starts: a SIGTERM right after the last packet must
            // still end the serving cleanly.
            let signals = if serve {
                Some(Signals::install().context("cannot install signal handlers")?)
            } else {
                None
            };
            let report = replay::run(&opts).context("replay failed")?;
            if !quiet {
                eprintln!("{}", report.summary);
            }
            // A file that ends inside its last record (copied while still being written):
            // everything in it was replayed, so it is a warning and the status stays 0; but
            // the input was not whole, which --quiet does not hide.
            for w in &report.summary.reader.truncated {
                eprintln!("outflow: warning: {w}");
            }
            // A corrupt file: everything before the bad record was replayed and written, but
            // the result is incomplete, so the status says so (as tcpdump's does), and
            // --quiet does not hide it.
            let read_errors = &report.summary.reader.read_errors;
            for e in read_errors {
                eprintln!("outflow: error: {e}");
            }
            // Events that never reached the bus: the sensor's own alerts were written, but the
            // correlators missed part of the capture.
            let lost_on_bus = report.summary.bus.map_or(0, |b| b.dropped);
            if lost_on_bus > 0 {
                eprintln!(
                    "outflow: error: bus: {lost_on_bus} events were not delivered to the bus; \
                     the correlators saw only part of this capture"
                );
            }
            let code = if read_errors.is_empty() && lost_on_bus == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
            if let (Some(signals), Some(server)) = (signals, server) {
                tracing::info!(
                    "replay finished; serving http://{}/ until SIGINT or SIGTERM",
                    server.addr()
                );
                while !signals.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                server.stop();
            }
            Ok(code)
        }
        Command::Correlate {
            bus,
            config,
            id,
            alerts_out,
            http,
            rebuild,
        } => {
            let mut config = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            if let Some(url) = bus {
                config.bus.url = url;
            }
            config.validate().context("--bus")?;
            anyhow::ensure!(
                !config.bus.url.is_empty(),
                "outflow correlate needs a bus: --bus nats://host:port or bus.url"
            );
            init_logging(&config);
            let id = match id {
                Some(i) => {
                    anyhow::ensure!(
                        outflow::config::valid_sensor_id(&i),
                        "--id {i:?}: use 1..=64 letters, digits, '-' or '_'"
                    );
                    i
                }
                None => format!(
                    "{}-{}",
                    config.bus.effective_sensor_id(),
                    std::process::id()
                ),
            };
            let telemetry = http
                .as_ref()
                .map(|_| Telemetry::new("correlate", 0, config.http.alerts_kept));
            let server = match (&http, &telemetry) {
                (Some(addr), Some(t)) => {
                    let token = outflow::http::token(&config.http)?;
                    Some(HttpServer::start_with(addr, token, Arc::clone(t))?)
                }
                _ => None,
            };
            let signals = Signals::install().context("cannot install signal handlers")?;
            let report = outflow::cluster::run(outflow::cluster::CorrelateOptions {
                config,
                id,
                alerts_out: alerts_out.as_deref().map(Output::parse),
                telemetry,
                stop: Arc::clone(&signals.stop),
                rebuild,
            })?;
            if let Some(s) = server {
                s.stop();
            }
            tracing::info!(
                incident_lines = report.incident_lines,
                findings = report.findings,
                partitions = ?report.partitions,
                "stopped"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let mut config = Config::load(&file)?;
            // This output ends up in tickets and CI logs: never print the API secret.
            if !config.http.token.is_empty() {
                config.http.token = "<redacted>".into();
            }
            println!("# {}: valid; effective configuration:", file.display());
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::ReadOnly { captures } => {
            let started = std::time::Instant::now();
            let (mut packets, mut bytes) = (0u64, 0u64);
            for path in &captures {
                let mut cap = pcap::Capture::from_file(path)
                    .with_context(|| format!("cannot open capture file {}", path.display()))?;
                while let Ok(p) = cap.next_packet() {
                    packets += 1;
                    bytes += u64::from(p.header.len);
                }
            }
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            println!(
                "read-only: {packets} packets, {bytes} bytes in {secs:.3} s = {:.0} packets/s",
                packets as f64 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
