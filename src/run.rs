//! `outflow run`: live capture as a long-running service, on the same decode → flow →
//! detect path as replay.
//!
//! Threads: N capture workers (each with its own libpcap handle in one `PACKET_FANOUT`
//! group, so each owns its flows outright), one output thread, and this thread, which waits
//! for signals and prints the stats line. If the kernel refuses the fanout group, one
//! capture thread reads the interface and dispatches batches to the workers by symmetric
//! hash, as replay does; the log and the stats line say which mode runs.
//!
//! Time is the packets' time. When no packet arrives for a second, a worker advances its
//! clock to the wall clock so idle flows still expire on a quiet link. SIGINT/SIGTERM stop
//! capture, end every open flow and flush the outputs; SIGHUP reloads thresholds and
//! allowlists without touching flow state.

use crate::capture::dispatch::{Dispatcher, Frame, ReaderStats};
use crate::capture::frag::FragPorts;
use crate::capture::live::{self, Handle, LiveError};
use crate::capture::{ts_ns, BatchPacket, Clock};
use crate::config::{Config, ConfigError};
use crate::correlate::StateError;
use crate::decode::{decode_frame, DecodeError};
use crate::event::{OutMsg, OUT_QUEUE};
use crate::http::HttpServer;
use crate::output::sink::{Output, OutputThread, PrepareError, Sinks};
use crate::pipeline::{Driver, Published, Snapshot, PUBLISH_EVERY};
use crate::replay::batch_worker_loop;
use crate::telemetry::OutputCounters;
use crate::telemetry::Telemetry;
use crate::worker::Worker;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// Errors that stop `outflow run` from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Capture could not start.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// An output could not be opened, or a thread not started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `state.dir` cannot be written, or its snapshot exists but cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A thread panicked (a bug: please report it).
    #[error("internal error: {0} thread panicked")]
    Panic(&'static str),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Every capture worker stopped (the interface went away or failed).
    #[error(
        "capture.interface {0:?}: capture stopped (interface gone or failed); outputs were flushed"
    )]
    CaptureLost(String),
}

impl From<PrepareError> for RunError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Output(e) => RunError::Io(e),
            PrepareError::State(e) => RunError::State(e),
        }
    }
}

/// How packets reach the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    /// One worker reading its own handle (no dispatch, no fanout needed).
    Direct,
    /// One handle per worker in a `PACKET_FANOUT` hash group.
    Fanout,
    /// One capture thread dispatching to the workers (fanout unavailable, or one worker).
    Single,
}

impl CaptureMode {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            CaptureMode::Direct => "direct",
            CaptureMode::Fanout => "fanout",
            CaptureMode::Single => "single",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The config file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// Its current contents.
    pub config: Config,
    /// Alerts output (overrides `output.alerts`).
    pub alerts_out: Option<Output>,
    /// Flow records output (overrides `output.flows`).
    pub flows_out: Option<Output>,
    /// DNS transactions output (overrides `output.dns`).
    pub dns_out: Option<Output>,
}

/// Process-wide flags set by signal handlers.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// SIGINT or SIGTERM arrived.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP arrived (cleared when handled).
    pub reload: Arc<AtomicBool>,
}

impl Signals {
    /// Installs handlers for SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> std::io::Result<Signals> {
        let s = Signals::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&s.stop))?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&s.reload))?;
        Ok(s)
    }
}

/// Final counters of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How packets reached the workers.
    pub mode: CaptureMode,
    /// Per-worker counters at exit.
    pub workers: Vec<Snapshot>,
    /// The capture thread's counters (single mode only).
    pub reader: Option<Snapshot>,
}

/// Once a second: tick timers, publish counters, pick up a reload.
const TICK: Duration = Duration::from_secs(1);
/// Packets between two looks at the stop flag and the wall clock when traffic never pauses.
const CHECK_EVERY: u64 = 64;

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn sinks(opts: &RunOptions) -> Sinks {
    let from_cfg = |s: &str| (!s.is_empty()).then(|| Output::parse(s));
    Sinks {
        alerts: opts
            .alerts_out
            .clone()
            .or_else(|| from_cfg(&opts.config.output.alerts)),
        flows: opts
            .flows_out
            .clone()
            .or_else(|| from_cfg(&opts.config.output.flows)),
        dns: opts
            .dns_out
            .clone()
            .or_else(|| from_cfg(&opts.config.output.dns)),
        collect: false,
        append: true,
        ordered: false,
        syslog: Some(opts.config.output.syslog.clone()),
        ipfix: Some(opts.config.output.ipfix.clone()),
        sink_queue: opts.config.output.sink_queue,
        telemetry: None,
        slice_requests: None,
        dns_recycle: None,
        bus: Some(opts.config.bus.clone()),
    }
}

/// Opens `n` handles in one fanout group; `None` if the kernel refuses the group.
fn open_fanout(cfg: &Config, n: usize) -> Result<Option<Vec<Handle>>, LiveError> {
    let group = match cfg.capture.fanout_group {
        0 => (std::process::id() & 0xffff) as u16,
        g => g,
    };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let h = live::open(&cfg.capture)?;
        if let Err(e) = live::join_fanout(&h, group) {
            warn!(
                interface = %cfg.capture.interface,
                group,
                handle = i,
                error = %e,
                "PACKET_FANOUT unavailable: falling back to one capture thread dispatching to the workers"
            );
            return Ok(None);
        }
        handles.push(h);
    }
    info!(interface = %cfg.capture.interface, workers = n, group, "capturing with PACKET_FANOUT (hash)");
    Ok(Some(handles))
}

/// Runs until SIGINT/SIGTERM (or a fatal capture error). Returns the final counters.
pub fn run(opts: RunOptions, signals: Signals) -> Result<RunReport, RunError> {
    let cfg = opts.config.clone();
    let n = cfg.effective_workers().max(1);
    // Before any capture handle opens: a weak or empty token stops the start at once.
    let token = if cfg.http.listen.is_empty() {
        None
    } else {
        crate::http::token(&cfg.http)?
    };

    // Open everything that needs privileges first.
    let (mode, mut handles) = if n == 1 {
        info!(interface = %cfg.capture.interface, "capturing with one worker reading the interface directly");
        (CaptureMode::Direct, vec![live::open(&cfg.capture)?])
    } else if !cfg.capture.fanout {
        info!(interface = %cfg.capture.interface, "capture.fanout = false: one capture thread hashes the innermost headers");
        (CaptureMode::Single, vec![live::open(&cfg.capture)?])
    } else {
        match open_fanout(&cfg, n)? {
            Some(h) => (CaptureMode::Fanout, h),
            None => (CaptureMode::Single, vec![live::open(&cfg.capture)?]),
        }
    };
    if mode == CaptureMode::Single {
        info!(interface = %cfg.capture.interface, workers = n, "capturing with one capture thread");
    }
    if !cfg.run.user.is_empty() {
        live::drop_privileges(&cfg.run.user)?;
        info!(user = %cfg.run.user, "dropped privileges");
    }

    let telemetry = Telemetry::new("live", n, cfg.http.alerts_kept);
    // Bound before capture starts, so a port in use or a missing token stops the start.
    let mut http = if cfg.http.listen.is_empty() {
        None
    } else {
        Some(HttpServer::start_with(
            &cfg.http.listen,
            token,
            Arc::clone(&telemetry),
        )?)
    };
    let (out_tx, out_rx) = bounded::<OutMsg>(OUT_QUEUE);
    let out_counters = Arc::clone(&telemetry.output);
    let mut out_sinks = sinks(&opts);
    let mut slices = crate::slice::recorder::SliceSetup::start(
        &cfg.slice,
        n,
        false,
        Arc::clone(&telemetry.slices),
    )?;
    if !cfg.slice.dir.is_empty() {
        let _ = telemetry
            .slice_dir
            .set(std::path::PathBuf::from(&cfg.slice.dir));
    }
    out_sinks.telemetry = Some(Arc::clone(&telemetry));
    out_sinks.slice_requests = slices.requester();
    let recycle = crate::worker::DnsRecycler::new();
    out_sinks.dns_recycle = Some(recycle.tx.clone());
    let output = OutputThread::prepare(&out_sinks, Some(&cfg), n, out_rx)?;
    // The output thread holds the only slice requester (see replay.rs).
    drop(out_sinks);
    let output = std::thread::Builder::new()
        .name("outflow-output".into())
        .spawn(output)?;

    let published: Vec<Published> = telemetry.workers.clone();
    let mut reloads: Vec<Sender<Arc<Config>>> = Vec::with_capacity(n);
    let mut workers: Vec<JoinHandle<Snapshot>> = Vec::with_capacity(n);
    let mut reader: Option<(JoinHandle<Snapshot>, Published)> = None;
    // A live worker's driver (output hand-off never waits) and its reload channel.
    let mut live_driver = |id: usize| {
        let (tx, rx) = bounded::<Arc<Config>>(4);
        reloads.push(tx);
        let mut worker = Worker::new(&cfg);
        if let Some(link) = slices.link(id) {
            worker.slices.attach(link);
        }
        let mut d = Driver::new(
            worker,
            id,
            out_tx.clone(),
            false,
            published.get(id).cloned(),
        );
        d.recycle_dns_from(recycle.rx.clone());
        d.set_stop_budget(crate::pipeline::STOP_FLOWS_BUDGET);
        (d, rx)
    };

    match mode {
        CaptureMode::Direct | CaptureMode::Fanout => {
            for (id, h) in handles.drain(..).enumerate() {
                let (d, rx) = live_driver(id);
                let ctx = LiveWorker {
                    id,
                    n,
                    stop: Arc::clone(&signals.stop),
                    reload: rx,
                    // The kernel reassembles before the fanout: nothing to hold.
                    frags: FragPorts::from_config(&cfg, false),
                    decap: cfg.decap.decap(),
                };
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("outflow-worker-{id}"))
                        .spawn(move || ctx.run(d, h))?,
                );
            }
        }
        CaptureMode::Single => {
            let mut to = Vec::with_capacity(n);
            let mut free_rx = Vec::with_capacity(n);
            for id in 0..n {
                let (tx, rx, free_tx, free) = crate::replay::batch_channels(&cfg);
                let (d, rrx) = live_driver(id);
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("outflow-worker-{id}"))
                        .spawn(move || batch_worker_loop(d, rx, free_tx, Some(rrx)))?,
                );
                to.push(tx);
                free_rx.push(free);
            }
            let mut dispatcher = Dispatcher::new(to, free_rx)
                .map_err(|e| RunError::Io(std::io::Error::other(e.to_string())))?
                .lossy();
            dispatcher.set_decap(cfg.decap.decap());
            let h = handles.pop().ok_or(RunError::Panic("capture"))?;
            let pubr: Published = Arc::clone(&telemetry.reader);
            let ctx = LiveReader {
                stop: Arc::clone(&signals.stop),
                frags: FragPorts::from_config(&cfg, true),
                published: Arc::clone(&pubr),
            };
            reader = Some((
                std::thread::Builder::new()
                    .name("outflow-capture".into())
                    .spawn(move || ctx.run(h, dispatcher))?,
                pubr,
            ));
        }
    }
    let reload_out = out_tx;

    // The control loop: signals and the stats line.
    let mut cfg = cfg;
    let mut last_stats = Instant::now();
    let mut capture_lost = false;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if signals.stop.load(Ordering::Relaxed) {
            info!("stopping: ending open flows and flushing outputs");
            break;
        }
        // A capture loop stopped without being asked (interface deleted or down, driver
        // error). Its worker ends its flows and then keeps serving slice requests until
        // the output thread closes them, so its thread does not end by itself: look at the
        // flag the loop sets, and stop everything. Capturing a part of the traffic (one
        // fanout handle lost) is no better than none: exit, and let systemd restart.
        if telemetry
            .workers
            .iter()
            .chain(std::iter::once(&telemetry.reader))
            .any(|w| w.capture_stopped.load(Ordering::Relaxed))
            || workers.iter().any(|w| w.is_finished())
            || reader.as_ref().is_some_and(|(h, _)| h.is_finished())
        {
            error!(interface = %cfg.capture.interface, "capture stopped; ending open flows, flushing outputs and exiting");
            signals.stop.store(true, Ordering::Relaxed);
            capture_lost = true;
            break;
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            // logrotate moved the alert file: reopen it whatever becomes of the config.
            if let Ok(r) = telemetry.reopeners.lock() {
                for s in r.iter() {
                    s.reopen();
                }
            }
            match Config::load(&opts.config_path) {
                Ok(new) => {
                    if new.capture != cfg.capture
                        || new.run != cfg.run
                        || new.log != cfg.log
                        || new.output != cfg.output
                    {
                        warn!("SIGHUP: capture, run, log and output settings need a restart; applying detector thresholds and allowlists only");
                    }
                    let shared = Arc::new(new.clone());
                    for r in &reloads {
                        let _ = r.try_send(Arc::clone(&shared));
                    }
                    // The DNS and cross-flow analysers live on the output thread.
                    if reload_out
                        .send_timeout(OutMsg::Reload(Arc::clone(&shared)), Duration::from_secs(1))
                        .is_err()
                    {
                        warn!("SIGHUP: the output thread is busy; the DNS and cross-flow thresholds were not reloaded");
                    }
                    cfg = new;
                    info!(config = %opts.config_path.display(), "SIGHUP: reloaded detector thresholds and allowlists");
                }
                Err(e) => error!("SIGHUP: keeping the running configuration: {e}"),
            }
        }
        if last_stats.elapsed() >= cfg.run.stats_interval {
            last_stats = Instant::now();
            let snaps: Vec<Snapshot> = published
                .iter()
                .map(|p| p.snap.lock().map(|g| *g).unwrap_or_default())
                .collect();
            let rsnap = reader
                .as_ref()
                .map(|(_, p)| p.snap.lock().map(|g| *g).unwrap_or_default());
            log_stats(mode, &snaps, rsnap.as_ref(), false);
            log_output_stats(&out_counters, false);
            log_table_stats(&snaps, rsnap.as_ref(), &telemetry, false);
        }
    }

    // Shutdown: the capture side first, then the workers, then the output. The HTTP
    // server's grace for requests in flight runs meanwhile.
    telemetry.capturing.store(false, Ordering::Relaxed);
    if let Some(h) = http.as_mut() {
        h.begin_stop();
    }
    drop(reload_out);
    let reader_snap = match reader {
        Some((h, _)) => Some(h.join().map_err(|_| RunError::Panic("capture"))?),
        None => None,
    };
    let mut finals = Vec::with_capacity(n);
    for w in workers {
        finals.push(w.join().map_err(|_| RunError::Panic("worker"))?);
    }
    slices.join();
    match output.join().map_err(|_| RunError::Panic("output"))? {
        Ok(c) => info!(
            alerts = c.alert_count,
            flow_records = c.flow_count,
            "outputs flushed"
        ),
        Err(e) => error!("output: {e}"),
    }
    log_stats(mode, &finals, reader_snap.as_ref(), true);
    log_output_stats(&out_counters, true);
    log_table_stats(&finals, reader_snap.as_ref(), &telemetry, true);
    if let Some(h) = http {
        h.stop();
    }
    if capture_lost {
        // Non-zero exit, so systemd's Restart=on-failure brings the sensor back.
        return Err(RunError::CaptureLost(cfg.capture.interface.clone()));
    }
    Ok(RunReport {
        mode,
        workers: finals,
        reader: reader_snap,
    })
}

/// Copies a handle's kernel counters (libpcap accumulates them) into a snapshot.
fn kernel_counters(h: &mut Handle, s: &mut Snapshot) {
    if let Some((recv, drop, ifdrop)) = live::kernel_stats(h) {
        s.kernel_received = recv;
        s.kernel_dropped = drop;
        s.interface_dropped = ifdrop;
    }
}

/// The stats line: one per worker, one for the capture thread (single mode) and a total.
fn log_stats(mode: CaptureMode, workers: &[Snapshot], reader: Option<&Snapshot>, last: bool) {
    let kind = if last { "final" } else { "periodic" };
    let mut total = Snapshot::default();
    for (i, s) in workers.iter().enumerate() {
        add(&mut total, s);
        info!(
            target: "outflow::stats",
            kind,
            capture_mode = mode.name(),
            worker = i,
            packets = s.flows.packets,
            ip_bytes = s.flows.ip_bytes,
            frames = s.frames,
            decode_errors = s.decode_errors.iter().sum::<u64>(),
            kernel_received = s.kernel_received,
            kernel_dropped = s.kernel_dropped,
            interface_dropped = s.interface_dropped,
            events_dropped = s.events_dropped,
            alerts_dropped = s.alerts_dropped,
            flows_active = s.flows_active,
            flows_created = s.flows.flows_created,
            flows_evicted = s.flows.records[3],
            alerts = s.flows.alerts.iter().sum::<u64>(),
            dns_messages = s.flows.dns.messages,
            dns_malformed = s.flows.dns.malformed,
            "worker stats"
        );
    }
    if let Some(r) = reader {
        add(&mut total, r);
        info!(
            target: "outflow::stats",
            kind,
            capture_mode = mode.name(),
            frames = r.frames,
            decode_errors = r.decode_errors.iter().sum::<u64>(),
            kernel_received = r.kernel_received,
            kernel_dropped = r.kernel_dropped,
            interface_dropped = r.interface_dropped,
            queue_dropped = r.queue_dropped,
            "capture thread stats"
        );
    }
    let mut reasons = String::new();
    for e in DecodeError::ALL {
        let c = total.decode_errors.get(e.index()).copied().unwrap_or(0);
        if c > 0 {
            reasons.push_str(&format!("{}={c} ", e.name()));
        }
    }
    info!(
        target: "outflow::stats",
        kind,
        capture_mode = mode.name(),
        workers = workers.len(),
        packets = total.flows.packets,
        frames = total.frames,
        kernel_dropped = total.kernel_dropped,
        interface_dropped = total.interface_dropped,
        queue_dropped = total.queue_dropped,
        events_dropped = total.events_dropped,
        alerts_dropped = total.alerts_dropped,
        decode_errors = reasons.trim_end(),
        flows_active = total.flows_active,
        flows_created = total.flows.flows_created,
        flows_evicted = total.flows.records[3],
        flows_unended = total.flows_unended,
        alerts = total.flows.alerts.iter().sum::<u64>(),
        dns_messages = total.flows.dns.messages,
        dns_malformed = total.flows.dns.malformed,
        "total stats"
    );
}

/// The output side of the stats line: alerts written, DNS analyser and cross-flow tables
/// (including every drop and eviction they counted).
fn log_output_stats(c: &Mutex<OutputCounters>, last: bool) {
    let c = c.lock().map(|g| *g).unwrap_or_default();
    info!(
        target: "outflow::stats",
        kind = if last { "final" } else { "periodic" },
        alerts = c.alerts_by_detector.iter().sum::<u64>(),
        flow_records = c.flow_records,
        dns_records = c.dns_records,
        allowlisted_alerts = c.allowlisted_alerts,
        dns_queries = c.dns.queries,
        dns_suspicious = c.dns.suspicious,
        dns_nxdomains = c.dns.nxdomains,
        dns_pairs_evicted_cold = c.dns.pairs_evicted.cold,
        dns_pairs_evicted_warm = c.dns.pairs_evicted.warm,
        dns_pairs_evicted_hot = c.dns.pairs_evicted.hot,
        dns_pairs_evicted_client_share = c.dns.pairs_evicted.client_share,
        dns_nxdomain_clients_dropped = c.dns.nx_clients_dropped,
        dns_names_evicted = c.dns.names_evicted,
        dns_unanswered = c.dns.unanswered,
        volume_reports = c.leak.volumes,
        threshold_events = c.leak.threshold_events,
        host_pairs_evicted = c.leak.pairs_evicted,
        leak_groups_evicted = c.leak.groups_evicted,
        baseline_hosts_evicted = c.leak.hosts_evicted,
        "output stats"
    );
}

/// The tables line: every bounded table's evictions (or refusals) since start, zeros
/// included, so a log shows what was lost and that nothing else was.
fn log_table_stats(workers: &[Snapshot], reader: Option<&Snapshot>, t: &Telemetry, last: bool) {
    let out = t.output.lock().map(|g| *g).unwrap_or_default();
    let tables = crate::telemetry::snapshot_tables(
        workers.iter().chain(reader),
        &out.tables,
        Some(t.store.occupancy()),
    );
    let evicted = tables
        .iter()
        .map(|(name, (_, _, n))| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    info!(
        target: "outflow::stats",
        kind = if last { "final" } else { "periodic" },
        evicted = evicted.as_str(),
        "table stats"
    );
}

fn add(t: &mut Snapshot, s: &Snapshot) {
    crate::replay::add_stats(&mut t.flows, &s.flows);
    t.flows_active += s.flows_active;
    t.flows_capacity += s.flows_capacity;
    t.frames += s.frames;
    for (a, b) in t.decode_errors.iter_mut().zip(s.decode_errors.iter()) {
        *a += b;
    }
    t.encap.add(&s.encap);
    t.kernel_received += s.kernel_received;
    t.kernel_dropped += s.kernel_dropped;
    t.interface_dropped += s.interface_dropped;
    t.events_dropped += s.events_dropped;
    t.alerts_dropped += s.alerts_dropped;
    t.queue_dropped += s.queue_dropped;
    t.flows_unended += s.flows_unended;
}

/// A capture worker in fanout mode: reads its own handle, decodes, and runs the worker.
struct LiveWorker {
    id: usize,
    n: usize,
    stop: Arc<AtomicBool>,
    reload: Receiver<Arc<Config>>,
    frags: FragPorts,
    decap: crate::decode::Decap,
}

impl LiveWorker {
    fn run(mut self, mut d: Driver, mut h: Handle) -> Snapshot {
        let mut local = 0u64;
        let mut clock = Clock::default();
        let mut since_check = 0u64;
        let mut since_publish = 0u64;
        let mut last_tick = Instant::now();
        let mut packets_at_tick = 0u64;
        // Processing time is measured per group of up to CHECK_EVERY packets read back to
        // back (two clock reads per group, not per packet).
        let mut group_start = Instant::now();
        let mut group_n = 0u64;
        d.worker.set_link(h.link);
        loop {
            match h.cap.next_packet() {
                Ok(pkt) => {
                    local += 1;
                    group_n += 1;
                    // Sequence numbers interleave the workers, so flow ids stay unique.
                    let seq = local * self.n as u64 + self.id as u64;
                    let hdr = *pkt.header;
                    // Kernel timestamps always fit; 0 if one ever did not.
                    let ts = ts_ns(&hdr).unwrap_or(0);
                    let now = clock.observe(ts);
                    d.extra.frames += 1;
                    let wire_len = hdr.len.max(hdr.caplen);
                    match decode_frame(h.link, pkt.data, wire_len, &self.decap) {
                        Ok(decoded) => {
                            d.extra.encap.count(&decoded);
                            let mut meta = decoded.meta;
                            self.frags.resolve(&mut meta, now);
                            d.advance(now);
                            let bp = BatchPacket {
                                seq,
                                ts_ns: ts,
                                clock_ns: now,
                                wire_len,
                                data_start: 0,
                                cap_len: hdr.caplen,
                                meta,
                                outer_copy: false,
                                held: false,
                            };
                            d.worker.packet(&bp, pkt.data);
                            if let Some(outer) = decoded.outer {
                                // Fanout hashes the outer headers, so the tunnel's own
                                // flow is this worker's too.
                                let o = BatchPacket {
                                    meta: outer,
                                    outer_copy: true,
                                    ..bp
                                };
                                d.worker.packet(&o, &[]);
                            }
                            if d.worker.has_pending() {
                                d.flush();
                            }
                        }
                        Err(e) => {
                            if let Some(c) = d.extra.decode_errors.get_mut(e.index()) {
                                *c += 1;
                            }
                        }
                    }
                    since_publish += 1;
                    if since_publish >= PUBLISH_EVERY {
                        since_publish = 0;
                        d.publish();
                    }
                    since_check += 1;
                    if since_check < CHECK_EVERY {
                        continue;
                    }
                    since_check = 0;
                    d.record_processing(elapsed_ns(group_start), group_n);
                    group_start = Instant::now();
                    group_n = 0;
                }
                // Non-blocking handle: nothing to read right now.
                Err(pcap::Error::TimeoutExpired) => {
                    d.record_processing(elapsed_ns(group_start), group_n);
                    group_n = 0;
                    h.wait();
                    group_start = Instant::now();
                }
                Err(e) => {
                    error!(worker = self.id, error = %e, "capture failed; this worker stops");
                    break;
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if local == packets_at_tick {
                    // A quiet second: let wall time move the clock so idle flows expire.
                    clock.advance_to(wall_ns());
                }
                packets_at_tick = local;
                d.advance(clock.now());
                d.flush();
                kernel_counters(&mut h, &mut d.extra);
                d.extra.fragments = self.frags.occupancy(clock.now());
                d.worker.expire_fragments(clock.now());
                if let Ok(cfg) = self.reload.try_recv() {
                    d.worker.reconfigure(&cfg);
                }
                d.publish();
            }
        }
        d.capture_stopped();
        kernel_counters(&mut h, &mut d.extra);
        d.finish()
    }
}

/// The capture thread in single mode: reads the interface and dispatches to the workers.
struct LiveReader {
    stop: Arc<AtomicBool>,
    frags: FragPorts,
    published: Published,
}

impl LiveReader {
    fn run(mut self, mut h: Handle, mut d: Dispatcher) -> Snapshot {
        // Batches carry the link type to the workers (ring, slices, /api/pcap).
        if d.set_link(h.link, 0, 0).is_err() {
            return Snapshot::default();
        }
        let mut st = ReaderStats::default();
        let mut clock = Clock::default();
        let mut seq = 0u64;
        let mut since_check = 0u64;
        let mut last_tick = Instant::now();
        let mut seq_at_tick = 0u64;
        loop {
            let mut timed_out = false;
            match h.cap.next_packet() {
                Ok(pkt) => {
                    seq += 1;
                    let hdr = *pkt.header;
                    let ts = ts_ns(&hdr).unwrap_or(0);
                    let frame = Frame {
                        link: h.link,
                        data: pkt.data,
                        wire_len: hdr.len,
                        ts_ns: ts,
                        clock_ns: clock.observe(ts),
                        seq,
                    };
                    if d.dispatch(&frame, &mut self.frags, &mut st).is_err() {
                        break;
                    }
                    since_check += 1;
                    if since_check < CHECK_EVERY {
                        continue;
                    }
                    since_check = 0;
                }
                Err(pcap::Error::TimeoutExpired) => {
                    timed_out = true;
                    h.wait();
                }
                Err(e) => {
                    error!(error = %e, "capture failed; stopping");
                    break;
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let tick = last_tick.elapsed() >= TICK;
            if tick {
                last_tick = Instant::now();
                if seq == seq_at_tick {
                    clock.advance_to(wall_ns());
                }
                seq_at_tick = seq;
            }
            // Hand partial batches over on every pause and every second, so alerts do not
            // wait for a batch to fill on a slow link.
            if (tick || timed_out) && d.flush_all(clock.now(), seq).is_err() {
                break;
            }
            if tick {
                let snap = self.snapshot(&mut h, &st, &d, clock.now());
                if let Ok(mut g) = self.published.snap.lock() {
                    *g = snap;
                }
            }
        }
        self.published
            .capture_stopped
            .store(true, Ordering::Relaxed);
        // Shutdown: the last partial batches must reach the workers, so wait for room.
        d.set_lossy(false);
        let _ = d.flush_all(clock.now(), seq);
        let snap = self.snapshot(&mut h, &st, &d, clock.now());
        drop(d); // closes the worker channels: workers finish
        snap
    }

    fn snapshot(
        &self,
        h: &mut Handle,
        st: &ReaderStats,
        d: &Dispatcher,
        clock_ns: u64,
    ) -> Snapshot {
        let mut s = Snapshot {
            fragments: self.frags.occupancy(clock_ns),
            frames: st.frames,
            decode_errors: st.decode_errors,
            encap: st.encap,
            queue_dropped: d.dropped,
            ..Snapshot::default()
        };
        kernel_counters(h, &mut s);
        s
    }
}
