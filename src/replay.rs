//! Replay: runs the whole pipeline over capture files, the same path live capture feeds.
//!
//! Threads: one reader (this thread), N workers, one output thread. The reader and the
//! workers exchange preallocated batches over bounded channels; workers hand events to the
//! output thread over a bounded channel. In replay nothing may be lost, so a full channel
//! makes the sender wait (live capture will count and drop instead).

use crate::capture::dispatch::{Dispatcher, ReaderStats};
use crate::capture::file::{check_files, read_files, total_size, CaptureError};
use crate::capture::progress::Progress;
use crate::capture::Batch;
use crate::config::Config;
use crate::correlate::dns::{AnalyseStats, DnsAlert, DnsRecord};
use crate::correlate::dns_pairs::PairEvictions;
use crate::correlate::incident::{IncidentStats, IncidentUpdate};
use crate::correlate::leak::{LeakAlert, LeakStats};
use crate::correlate::StateError;
use crate::decode::DecodeError;
use crate::detect::{Alert, Detector};
use crate::event::EventKey;
use crate::event::{OutMsg, OUT_QUEUE};
use crate::flow::{EndReason, FlowRecord};
use crate::output::sink::{Collected, OutputThread, PrepareError, Sinks};
use crate::pipeline::{Driver, Snapshot};
use crate::slice::recorder::SliceSetup;
use crate::telemetry::Occupancy;
use crate::worker::{Worker, WorkerStats};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of a replay run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An output could not be opened or written.
    // The io::Error is the source: `{:#}` prints it once, after this.
    #[error("output")]
    Output(#[from] std::io::Error),
    /// `state.dir` cannot be written, or its snapshot exists but cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A thread panicked (a bug: please report it with the capture).
    #[error("internal error: {0} thread panicked")]
    Panic(&'static str),
}

impl From<PrepareError> for ReplayError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Output(e) => ReplayError::Output(e),
            PrepareError::State(e) => ReplayError::State(e),
        }
    }
}

/// What to replay and where the results go.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Configuration.
    pub config: Config,
    /// Worker count override (`--workers`); `None` uses the config.
    pub workers: Option<usize>,
    /// Capture files, read in order as one capture.
    pub inputs: Vec<PathBuf>,
    /// Outputs.
    pub sinks: Sinks,
    /// Show progress on standard error once the replay has run a couple of seconds (the
    /// caller decides: the command does when standard error is a terminal).
    pub progress: bool,
}

/// Result of a replay.
#[derive(Debug)]
pub struct ReplayReport {
    /// Counters.
    pub summary: Summary,
    /// Alerts in output order (when `sinks.collect`).
    pub alerts: Vec<Alert>,
    /// Flow records in output order (when `sinks.collect`).
    pub flows: Vec<FlowRecord>,
    /// DNS alerts in output order (when `sinks.collect`).
    pub dns_alerts: Vec<DnsAlert>,
    /// DNS transactions in output order (when `sinks.collect`).
    pub dns_records: Vec<DnsRecord>,
    /// Data-leak alerts in output order (when `sinks.collect`).
    pub leak_alerts: Vec<LeakAlert>,
    /// Incident announcements in output order (when `sinks.collect`).
    pub incidents: Vec<IncidentUpdate>,
}

/// Counters of a whole replay, printed at the end.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Workers used.
    pub workers: usize,
    /// Reader counters.
    pub reader: ReaderStats,
    /// Sum of the workers' counters.
    pub flows: WorkerStats,
    /// Findings (alerts of every detector) raised.
    pub alerts: u64,
    /// The incident book's counters.
    pub incidents: IncidentStats,
    /// Alerts by detector (indexed like `Detector::ALL`).
    pub alerts_by_detector: [u64; Detector::ALL.len()],
    /// Flow records written.
    pub records: u64,
    /// DNS transactions written.
    pub dns_records: u64,
    /// DNS analyser counters.
    pub dns: AnalyseStats,
    /// Slow-leak stage counters.
    pub leak: LeakStats,
    /// Flow alerts dropped because their destination's name is allowlisted.
    pub allowlisted_alerts: u64,
    /// Every bounded table (see [`crate::telemetry::TABLES`]; the alert store only with an
    /// HTTP server): (entries at the end, capacity, entries evicted or refused because it
    /// was full). The workers' tables are summed over the workers.
    pub tables: Vec<(&'static str, Occupancy)>,
    /// What the bus publisher did, when the events went to a bus.
    pub bus: Option<crate::bus::publish::BusReport>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Summary {
    /// Decode failures of one reason.
    pub fn decode_errors(&self, e: DecodeError) -> u64 {
        self.reader
            .decode_errors
            .get(e.index())
            .copied()
            .unwrap_or(0)
    }

    /// Flow records with one end reason.
    pub fn records_by(&self, r: EndReason) -> u64 {
        EndReason::ALL
            .iter()
            .position(|x| *x == r)
            .and_then(|i| self.flows.records.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// A table's (entries, capacity, evictions), by its name in [`crate::telemetry::TABLES`].
    pub fn table(&self, name: &str) -> Option<Occupancy> {
        self.tables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| *o)
    }

    /// Packets per second of wall time.
    pub fn pps(&self) -> f64 {
        self.reader.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.reader;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "outflow replay summary")?;
        if let Some(b) = &self.bus {
            writeln!(
                f,
                "  bus            {} events acknowledged in {} messages, {} events dropped, {} messages re-sent",
                b.published, b.messages, b.dropped, b.resent
            )?;
        }
        writeln!(f, "  files          {}", r.files)?;
        writeln!(
            f,
            "  packets        {} ({} bytes on the wire)",
            r.frames, r.wire_bytes
        )?;
        if let (Some(a), Some(b)) = (r.first_ts_ns, r.last_ts_ns) {
            writeln!(
                f,
                "  capture span   {:.3} s of packet time",
                b.saturating_sub(a) as f64 / 1e9
            )?;
        }
        writeln!(f, "  decoded        {}", r.decoded)?;
        let undecoded: u64 = r.decode_errors.iter().sum();
        writeln!(f, "  not decoded    {undecoded}")?;
        for e in DecodeError::ALL {
            let n = self.decode_errors(e);
            if n > 0 {
                writeln!(f, "    {:<24} {n}", e.name())?;
            }
        }
        if r.bad_timestamps > 0 {
            writeln!(f, "  bad timestamps {} (skipped)", r.bad_timestamps)?;
        }
        let en = &r.encap;
        if en.layers.iter().any(|n| *n > 0) {
            let layers: Vec<String> = crate::decode::Layer::ALL
                .iter()
                .zip(en.layers.iter())
                .filter(|(_, n)| **n > 0)
                .map(|(l, n)| format!("{} {n}", l.name()))
                .collect();
            writeln!(f, "  decapsulated   {}", layers.join(", "))?;
        }
        if en.too_deep + en.inner_errors > 0 {
            writeln!(
                f,
                "  tunnels        {} nested too deep, {} with an undecodable inside (counted in the tunnel's flow)",
                en.too_deep, en.inner_errors
            )?;
        }
        if en.len_from_frame > 0 {
            writeln!(
                f,
                "  offloaded      {} (TSO/GRO: IP length taken from the frame)",
                en.len_from_frame
            )?;
        }
        let fr = &r.fragments;
        if fr.first + fr.matched + fr.orphaned > 0 {
            writeln!(
                f,
                "  ip fragments   {} first, {} matched, {} orphaned ({} held for reassembly, {} delivered, {} not held)",
                fr.first, fr.matched, fr.orphaned, fr.held, fr.replayed, fr.not_held
            )?;
        }
        let named = self.flows.defrag.named();
        if named.iter().any(|(_, n)| *n > 0) {
            let (datagrams, fragments) = named.split_at(5);
            let list = |xs: &[(&str, u64)]| {
                xs.iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(f, "  ip reassembly  datagrams: {}", list(datagrams))?;
            writeln!(f, "    fragments ignored: {}", list(fragments))?;
        }
        writeln!(
            f,
            "  flows          {} created, at most {} open at once (sum of worker peaks)",
            self.flows.flows_created, self.flows.peak_flows
        )?;
        for reason in EndReason::ALL {
            let n = self.records_by(reason);
            if n > 0 {
                writeln!(f, "    {:<24} {n}", reason.name())?;
            }
        }
        let rc = &self.flows.recent;
        if rc.inserted + rc.joined > 0 {
            writeln!(
                f,
                "  recent closed  {} tcp closings remembered, {} late flows joined one, {} overwritten, {} links lost",
                rc.inserted, rc.joined, rc.overwritten, rc.links_lost
            )?;
        }
        let x = &self.flows.dns;
        if x.messages + x.malformed + x.truncated_capture > 0 {
            writeln!(
                f,
                "  dns            {} messages, {} malformed, {} cut by snaplen, {} transactions",
                x.messages, x.malformed, x.truncated_capture, self.dns_records
            )?;
            let d = &self.dns;
            writeln!(
                f,
                "    queries {} (suspicious {}, allowlisted {}), NXDOMAIN {}",
                d.queries, d.suspicious, d.allowlisted, d.nxdomains
            )?;
        }
        let t = &self.flows.tap;
        if t.looked > 0 {
            writeln!(
                f,
                "  names          {} tcp flows looked at: {} tls hellos, {} http heads; {} stashed, {} out of order, {} given up, {} segments cut",
                t.looked, t.tls, t.http, t.stashed, t.out_of_order, t.gave_up, t.cut
            )?;
        }
        let q = &self.flows.quic_tap;
        if q.looked > 0 {
            writeln!(
                f,
                "  quic names     {} udp flows looked at: {} hellos from decrypted Initials; {} given up, {} evicted",
                q.looked, q.hellos, q.gave_up, q.evicted
            )?;
        }
        let l = &self.leak;
        if l.volumes > 0 {
            writeln!(
                f,
                "  slow leaks     {} volume reports, {} threshold events, {} allowlisted",
                l.volumes, l.threshold_events, l.allowlisted
            )?;
        }
        writeln!(
            f,
            "  tables         entries evicted or refused because the table was full"
        )?;
        for (name, (_, cap, evicted)) in &self.tables {
            write!(f, "    {name:<24} {evicted} (capacity {cap})")?;
            let pairs = &self.dns.pairs_evicted;
            if *name == crate::correlate::dns::DNS_TABLES[0] && pairs.total() > 0 {
                let reasons = PairEvictions::REASONS
                    .iter()
                    .zip(pairs.by_reason())
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>();
                write!(f, ": {}", reasons.join(", "))?;
            }
            writeln!(f)?;
        }
        let (held, _, ring_cap, ring_evicted) = self.flows.ring;
        if ring_cap > 0 {
            writeln!(
                f,
                "  packet rings   {held} packets held, {ring_evicted} evicted to make room"
            )?;
        }
        let inc = &self.incidents;
        let [opened, escalated, closed] = inc.updates;
        write!(f, "  incidents      {opened}")?;
        if opened > 0 {
            let by: Vec<String> = crate::correlate::incident::Severity::ALL
                .iter()
                .zip(inc.reached_by_severity)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{} {n}", s.name()))
                .collect();
            write!(
                f,
                " ({escalated} escalations, {closed} closed; reached {})",
                by.join(", ")
            )?;
        }
        writeln!(f)?;
        writeln!(f, "  alerts         {}", self.alerts)?;
        for (i, d) in Detector::ALL.iter().enumerate() {
            let n = self.alerts_by_detector.get(i).copied().unwrap_or(0);
            if n > 0 {
                writeln!(f, "    {:<24} {n}", d.name())?;
            }
        }
        if !r.read_errors.is_empty() {
            // Each is reported once, as the command's error (shown with --quiet too).
            writeln!(
                f,
                "  read errors    {} (files cut short: see the error below)",
                r.read_errors.len()
            )?;
        }
        if !r.truncated.is_empty() {
            // Each is reported once, as a warning of the command (shown with --quiet too).
            writeln!(
                f,
                "  truncated files {} (last record cut short: see the warning below)",
                r.truncated.len()
            )?;
        }
        write!(
            f,
            "  throughput     {:.0} packets/s, {:.1} Mbit/s ({} workers, {:.3} s)",
            self.pps(),
            r.wire_bytes as f64 * 8.0 / secs / 1e6,
            self.workers,
            secs
        )
    }
}

/// Bytes reserved per batch for captured data: room for a full batch of 1500-byte frames,
/// and at least 256 KiB so jumbo or offloaded 64 KiB frames fit a few at a time.
pub(crate) fn batch_bytes(packets: usize) -> usize {
    (packets * 1600).max(256 * 1024)
}

/// The channels between the reader and one worker: batches to it, and its free list back,
/// already holding `capture.batches_per_worker` preallocated batches.
pub(crate) fn batch_channels(
    cfg: &Config,
) -> (
    Sender<Batch>,
    Receiver<Batch>,
    Sender<Batch>,
    Receiver<Batch>,
) {
    let depth = cfg.capture.batches_per_worker;
    let (tx, rx) = bounded::<Batch>(depth);
    let (free_tx, free) = bounded::<Batch>(depth);
    for _ in 0..depth {
        let b = Batch::with_capacity(
            cfg.capture.batch_packets,
            batch_bytes(cfg.capture.batch_packets),
        );
        let _ = free_tx.send(b);
    }
    (tx, rx, free_tx, free)
}

/// Runs a replay to the end.
pub fn run(opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let cfg = &opts.config;
    let workers = opts
        .workers
        .unwrap_or_else(|| cfg.effective_workers())
        .max(1);
    check_files(&opts.inputs)?;
    let telemetry = opts.sinks.telemetry.clone();

    let stats = telemetry
        .as_ref()
        .map_or_else(Default::default, |t| Arc::clone(&t.slices));
    let mut slices = SliceSetup::start(&cfg.slice, workers, true, stats)?;
    if let Some(t) = &telemetry {
        if !cfg.slice.dir.is_empty() {
            let _ = t.slice_dir.set(PathBuf::from(&cfg.slice.dir));
        }
    }

    let (out_tx, out_rx) = bounded::<OutMsg>(OUT_QUEUE);
    let mut sinks = opts.sinks.clone();
    sinks.slice_requests = slices.requester();
    let recycle = crate::worker::DnsRecycler::new();
    sinks.dns_recycle = Some(recycle.tx.clone());
    let output = OutputThread::prepare(&sinks, Some(cfg), workers, out_rx)?;
    // The output thread holds the only requester now: when it ends, the workers (serving
    // slice requests after their last packet) see the queue close and end too.
    drop(sinks);
    let output = std::thread::Builder::new()
        .name("outflow-output".into())
        .spawn(output)?;

    let mut to = Vec::with_capacity(workers);
    let mut free_rx = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx, free_tx, free) = batch_channels(cfg);
        let shared = telemetry.as_ref().and_then(|t| t.workers.get(id).cloned());
        let mut worker = Worker::new(cfg);
        if let Some(link) = slices.link(id) {
            worker.slices.attach(link);
        }
        let mut driver = Driver::new(worker, id, out_tx.clone(), true, shared);
        driver.recycle_dns_from(recycle.rx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("outflow-worker-{id}"))
                .spawn(move || batch_worker_loop(driver, rx, free_tx, None))?,
        );
        to.push(tx);
        free_rx.push(free);
    }
    drop(out_tx);

    let mut dispatcher = Dispatcher::new(to, free_rx)?;
    dispatcher.set_decap(cfg.decap.decap());
    let mut publish = |st: &ReaderStats| {
        if let Some(t) = &telemetry {
            if let Ok(mut s) = t.reader.snap.lock() {
                s.frames = st.frames;
                s.decode_errors = st.decode_errors;
                s.fragments = st.fragment_table;
                s.encap = st.encap;
            }
        }
    };
    let mut progress = Progress::new(opts.progress, total_size(&opts.inputs));
    let read = read_files(
        &opts.inputs,
        cfg,
        &mut dispatcher,
        &mut publish,
        &mut progress,
    );
    // Cleared before anything else is printed, even when reading failed.
    progress.finish();
    drop(dispatcher); // closes the worker channels: workers finish and flush

    let mut flows = WorkerStats::default();
    for h in handles {
        let s = h.join().map_err(|_| ReplayError::Panic("worker"))?;
        add_stats(&mut flows, &s.flows);
    }
    slices.join();
    let collected: Collected = output.join().map_err(|_| ReplayError::Panic("output"))??;
    let reader = read?;
    if let Some(t) = &telemetry {
        if let Ok(mut s) = t.reader.snap.lock() {
            s.frames = reader.frames;
            s.decode_errors = reader.decode_errors;
            s.fragments = reader.fragment_table;
            s.encap = reader.encap;
        }
        t.reader
            .alive
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // Only now: /healthz saying "finished" promises final counters.
        t.capturing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let tables = crate::telemetry::tables(
        &flows.tables,
        &reader.fragment_table,
        &collected.tables,
        telemetry.as_ref().map(|t| t.store.occupancy()),
    );
    let summary = Summary {
        workers,
        reader,
        flows,
        alerts: collected.alert_count,
        incidents: collected.incident_stats,
        alerts_by_detector: collected.alerts_by_detector,
        records: collected.flow_count,
        dns_records: collected.dns_record_count,
        dns: collected.dns,
        leak: collected.leak,
        allowlisted_alerts: collected.allowlisted_alerts,
        tables,
        bus: collected.bus,
        elapsed: started.elapsed(),
    };
    Ok(ReplayReport {
        summary,
        alerts: collected.alerts,
        flows: collected.flows,
        dns_alerts: collected.dns_alerts,
        dns_records: collected.dns_records,
        leak_alerts: collected.leak_alerts,
        incidents: collected.incidents,
    })
}

pub(crate) fn add_stats(sum: &mut WorkerStats, s: &WorkerStats) {
    sum.packets += s.packets;
    sum.ip_bytes += s.ip_bytes;
    sum.wire_bytes += s.wire_bytes;
    sum.flows_created += s.flows_created;
    sum.peak_flows += s.peak_flows;
    for (a, b) in sum.records.iter_mut().zip(s.records.iter()) {
        *a += b;
    }
    for (a, b) in sum.alerts.iter_mut().zip(s.alerts.iter()) {
        *a += b;
    }
    sum.dns.messages += s.dns.messages;
    sum.dns.malformed += s.dns.malformed;
    sum.dns.truncated_capture += s.dns.truncated_capture;
    sum.dns.tcp_abandoned += s.dns.tcp_abandoned;
    sum.dns.damaged += s.dns.damaged;
    sum.slices.started += s.slices.started;
    sum.slices.dropped += s.slices.dropped;
    sum.slices.lost_messages += s.slices.lost_messages;
    sum.ring.0 += s.ring.0;
    sum.ring.1 += s.ring.1;
    sum.ring.2 += s.ring.2;
    sum.ring.3 += s.ring.3;
    sum.carry_dropped += s.carry_dropped;
    sum.recent.inserted += s.recent.inserted;
    sum.recent.joined += s.recent.joined;
    sum.recent.overwritten += s.recent.overwritten;
    sum.recent.links_lost += s.recent.links_lost;
    for (a, b) in sum.tables.iter_mut().zip(s.tables.iter()) {
        a.0 += b.0;
        a.1 += b.1;
        a.2 += b.2;
    }
    sum.dns.tcp_evicted += s.dns.tcp_evicted;
    sum.defrag.add(&s.defrag);
    sum.tap.add(&s.tap);
    sum.quic_tap.add(&s.quic_tap);
    sum.slices.refused += s.slices.refused;
}

/// A worker thread fed with batches (replay, and live capture without fanout): batches in,
/// events out, batches back to the reader. Live, `reload` delivers new configurations
/// (SIGHUP), applied between batches.
pub(crate) fn batch_worker_loop(
    mut d: Driver,
    rx: Receiver<Batch>,
    free: Sender<Batch>,
    reload: Option<Receiver<std::sync::Arc<Config>>>,
) -> Snapshot {
    loop {
        let batch = match rx.recv_timeout(IDLE_POLL) {
            Ok(b) => b,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Idle (a slow link, or a capture arriving on a pipe): still answer
                // top-flows requests.
                d.serve_requests();
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(cfg) = reload.as_ref().and_then(|r| r.try_recv().ok()) {
            d.worker.reconfigure(&cfg);
        }
        let started = Instant::now();
        d.worker.set_link(batch.link);
        d.packets(&batch);
        d.advance(batch.clock_ns);
        d.worker.expire_fragments(batch.clock_ns);
        d.record_processing(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            batch.packets.len() as u64,
        );
        d.read_mono_ns = batch.read_mono_ns;
        d.flush();
        d.progress(EventKey {
            time_ns: batch.clock_ns,
            class: 1,
            id: batch.seq,
            sub: u32::MAX,
        });
        d.publish();
        // The reader may already be gone at the end; the batch is then simply dropped.
        let _ = free.send(batch);
    }
    d.finish()
}

/// How long an idle batch worker waits before checking for top-flows requests.
const IDLE_POLL: Duration = Duration::from_millis(50);
