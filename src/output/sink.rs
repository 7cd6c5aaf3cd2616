//! The output thread: merges the workers' events into one order and writes them.
//!
//! Each worker sends its events plus, after every batch, a progress mark: a key below which
//! it will never produce another event (see `worker` for how keys are built). The thread keeps
//! events in a min-heap and writes those whose key is at or below every worker's progress.
//! The written order is thus the key order, which depends only on the input: the same
//! capture gives byte-identical output for 1 or 16 workers.

use super::deliver::{JsonLinesFile, Mode, SinkHandle};
use super::json::{alert_json, dns_alert_json, dns_record_json, leak_alert_json, write_flow_json};
use super::record::AlertRecord;
use super::syslog::SyslogTransport;
use crate::config::{Config, SyslogConfig};
use crate::correlate::dns::{AnalyseStats, DnsAlert, DnsAnalyser, DnsOutput, DnsRecord};
use crate::correlate::leak::{LeakAlert, LeakAnalyser, LeakStats, SnapshotError};
use crate::decode::Addr;
use crate::detect::{Alert, Detector};
use crate::event::{Event, EventKey, OutMsg};
use crate::flow::FlowRecord;
use crate::telemetry::{mono_ns, new_histogram, record, Telemetry};
use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a JSON-lines stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

impl Output {
    /// `-` is stdout, anything else a path.
    pub fn parse(s: &str) -> Output {
        if s == "-" {
            Output::Stdout
        } else {
            Output::File(PathBuf::from(s))
        }
    }

    /// Opens the stream: a file is appended to or truncated.
    pub fn open(&self, append: bool) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Output::Stdout => Box::new(io::stdout()),
            Output::File(p) => {
                let f = if append {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                } else {
                    File::create(p)
                };
                Box::new(f.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
                })?)
            }
        })
    }
}

/// A JSON-lines stream whose write errors say what was being written where: "No space
/// left on device" alone does not tell an operator which of several outputs to fix.
struct Named {
    inner: Box<dyn Write + Send>,
    /// "flow records to /var/log/outflow/flows.json", "DNS transactions to standard output".
    what: String,
}

impl Named {
    /// Opens `o` for `what` ("flow records"), behind a 1 MiB buffer.
    fn open(o: &Output, append: bool, what: &str) -> io::Result<BufWriter<Named>> {
        let to = match o {
            Output::Stdout => "standard output".to_string(),
            Output::File(p) => p.display().to_string(),
        };
        Ok(BufWriter::with_capacity(
            1 << 20,
            Named {
                inner: o.open(append)?,
                what: format!("{what} to {to}"),
            },
        ))
    }

    fn name_error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("cannot write {}: {e}", self.what))
    }
}

impl Write for Named {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.name_error(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.name_error(e))
    }
}

/// Which outputs to write.
#[derive(Clone, Debug, Default)]
pub struct Sinks {
    /// Alerts as JSON lines (flushed per alert, so a tail -f sees them at once).
    pub alerts: Option<Output>,
    /// Flow records as JSON lines.
    pub flows: Option<Output>,
    /// DNS transactions as JSON lines.
    pub dns: Option<Output>,
    /// Also keep every alert and record in memory and return them (tests, small replays).
    pub collect: bool,
    /// Append to existing files (the service) instead of truncating them (replay).
    pub append: bool,
    /// Write events in key order (replay: deterministic output). Live capture writes them as
    /// they come, since waiting for every worker's progress would only add latency.
    pub ordered: bool,
    /// Alerts to syslog too (RFC 5424), if set and its target is not empty.
    pub syslog: Option<SyslogConfig>,
    /// Alerts held per sink while it is failing (live; replay waits instead).
    pub sink_queue: usize,
    /// Where the output thread publishes its counters, alerts and latency (stats line,
    /// /metrics, /api/alerts), if anywhere.
    pub telemetry: Option<Arc<Telemetry>>,
    /// Where to ask the workers for slices of flows the output thread flags (per-flow
    /// asymmetry, service outlier), when slices are written.
    pub slice_requests: Option<crate::slice::recorder::SliceRequester>,
    /// Where DNS event boxes go back to the workers once analysed.
    pub dns_recycle: Option<crossbeam_channel::Sender<Box<crate::dns::DnsEvent>>>,
}

/// Names of the output thread's tables in [`OutputCounters::tables`] (metric labels).
pub const OUTPUT_TABLES: [&str; 7] = [
    crate::correlate::dns::DNS_TABLES[0],
    crate::correlate::dns::DNS_TABLES[1],
    crate::correlate::dns::DNS_TABLES[2],
    crate::correlate::dns::DNS_TABLES[3],
    crate::correlate::leak::LEAK_TABLES[0],
    crate::correlate::leak::LEAK_TABLES[1],
    crate::correlate::leak::LEAK_TABLES[2],
];

/// The output thread's counters: what was written, and the analysers' tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputCounters {
    /// Alerts written, by detector (indexed like `Detector::ALL`).
    pub alerts_by_detector: [u64; Detector::ALL.len()],
    /// Flow records written.
    pub flow_records: u64,
    /// DNS transactions written.
    pub dns_records: u64,
    /// Flow alerts silenced by `allow.dst_domains`.
    pub allowlisted_alerts: u64,
    /// DNS analyser counters (queries, suspicious, NXDOMAIN, table drops...).
    pub dns: AnalyseStats,
    /// Cross-flow stage counters (volumes, threshold events, evictions...).
    pub leak: LeakStats,
    /// (entries, capacity, evictions) of each table named in [`OUTPUT_TABLES`].
    pub tables: [(u64, u64, u64); OUTPUT_TABLES.len()],
}

/// The state in `state.dir` cannot be used: the sensor refuses to start rather than run for
/// a day and lose what it learnt at the first snapshot or at shutdown.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The snapshot exists but this process cannot read it.
    #[error(
        "state.dir: cannot read the state snapshot {} as user {user}: {error}; \
         make it a file that user can read, or move it away to start without history",
        path.display()
    )]
    Unreadable {
        /// The snapshot file.
        path: PathBuf,
        /// Who the process runs as (after dropping privileges to `run.user`).
        user: String,
        /// The I/O error (part of the message, not a source: printed once).
        error: io::Error,
    },
    /// The directory cannot be created or written (snapshots are written there as a
    /// temporary file, then renamed).
    #[error(
        "state.dir {}: cannot write state snapshots there as user {user}: {error}; \
         create it writable by that user (the systemd unit's StateDirectory= does)",
        dir.display()
    )]
    DirUnwritable {
        /// The directory.
        dir: PathBuf,
        /// Who the process runs as.
        user: String,
        /// The I/O error.
        error: io::Error,
    },
}

/// Why the outputs could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// An output file could not be opened, or a sink thread not started; the message names
    /// the file or the sink.
    #[error(transparent)]
    Output(#[from] io::Error),
    /// The state snapshot could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// File name of the state snapshot inside `state.dir`.
pub const STATE_FILE: &str = "outflow-state.json";

/// What the output thread wrote.
#[derive(Debug, Default)]
pub struct Collected {
    /// Alerts, in output order (only when `collect`).
    pub alerts: Vec<Alert>,
    /// Flow records, in output order (only when `collect`).
    pub flows: Vec<FlowRecord>,
    /// DNS alerts, in output order (only when `collect`).
    pub dns_alerts: Vec<DnsAlert>,
    /// DNS transaction records, in output order (only when `collect`).
    pub dns_records: Vec<DnsRecord>,
    /// Alerts written (flow and DNS).
    pub alert_count: u64,
    /// Alerts by detector (indexed like `Detector::ALL`).
    pub alerts_by_detector: [u64; Detector::ALL.len()],
    /// Flow records written.
    pub flow_count: u64,
    /// DNS transaction records written.
    pub dns_record_count: u64,
    /// The DNS analyser's counters.
    pub dns: AnalyseStats,
    /// Data-leak alerts, in output order (only when `collect`).
    pub leak_alerts: Vec<LeakAlert>,
    /// The slow-leak stage's counters.
    pub leak: LeakStats,
    /// Flow alerts dropped because the destination's name is allowlisted.
    pub allowlisted_alerts: u64,
    /// (entries, capacity, evictions) of each table named in [`OUTPUT_TABLES`], as the
    /// input ended (before the last transactions were written out).
    pub tables: [(u64, u64, u64); OUTPUT_TABLES.len()],
}

/// Copies the occupancy of the analysers given into their places in `tables` (laid out
/// as [`OUTPUT_TABLES`]).
fn copy_tables(
    tables: &mut [(u64, u64, u64); OUTPUT_TABLES.len()],
    dns: Option<&DnsAnalyser>,
    leak: Option<&LeakAnalyser>,
) {
    if let Some(d) = dns {
        for (t, v) in tables.iter_mut().zip(d.tables()) {
            *t = v;
        }
    }
    if let Some(l) = leak {
        let skip = crate::correlate::dns::DNS_TABLES.len();
        for (t, v) in tables.iter_mut().skip(skip).zip(l.tables()) {
            *t = v;
        }
    }
}

/// The output's merge buffer: a min-heap of (key, slot) over a slab of events. The heap
/// moves only 32-byte entries as it sifts, the events stay put (measured: sifting whole
/// events was most of the output thread's copying under a flood). Slots are reused, so
/// the slab keeps the size of the largest backlog.
#[derive(Default)]
struct Merge {
    heap: BinaryHeap<Reverse<(EventKey, u32)>>,
    slab: Vec<Option<Event>>,
    free: Vec<u32>,
}

impl Merge {
    fn push(&mut self, k: EventKey, e: Event) {
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slab.get_mut(i as usize) {
                    *s = Some(e);
                }
                i
            }
            None => {
                self.slab.push(Some(e));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((k, i)));
    }

    /// The event with the lowest key, if that key is at or below `upto`.
    fn pop_upto(&mut self, upto: EventKey) -> Option<Event> {
        if self.heap.peek().is_none_or(|Reverse((k, _))| *k > upto) {
            return None;
        }
        let Reverse((_, i)) = self.heap.pop()?;
        self.free.push(i);
        self.slab.get_mut(i as usize)?.take()
    }
}

const DONE: EventKey = EventKey {
    time_ns: u64::MAX,
    class: u8::MAX,
    id: u64::MAX,
    sub: u32::MAX,
};

/// The open outputs and what has been written.
struct Writers {
    /// Alert sinks (JSON lines, syslog), each on its own thread.
    sinks: Vec<SinkHandle>,
    slice_requests: Option<crate::slice::recorder::SliceRequester>,
    dns_recycle: Option<crossbeam_channel::Sender<Box<crate::dns::DnsEvent>>>,
    telemetry: Option<Arc<Telemetry>>,
    /// Detection latency since the last publication (ns).
    latency: Histogram<u64>,
    flows: Option<BufWriter<Named>>,
    dns_out: Option<BufWriter<Named>>,
    dns: Option<DnsAnalyser>,
    leak: Option<LeakAnalyser>,
    /// Where long-window state is persisted (`state.dir`), if anywhere.
    state: Option<std::path::PathBuf>,
    snapshot_every: std::time::Duration,
    last_snapshot: std::time::Instant,
    collect: bool,
    out: Collected,
    first_error: Option<io::Error>,
    /// The service (appending outputs): a write error is logged when it happens, since
    /// the run may go on for months; a replay reports it once, at its end.
    log_errors: bool,
    since_publish: u32,
    /// The tables' occupancy at the last publication.
    tables: [(u64, u64, u64); OUTPUT_TABLES.len()],
}

impl Writers {
    /// Hands one rendered alert to every sink and the API's store.
    fn deliver(&mut self, rec: AlertRecord) {
        if rec.read_mono_ns != 0 {
            record(
                &mut self.latency,
                mono_ns().saturating_sub(rec.read_mono_ns),
                1,
            );
        }
        let rec = Arc::new(rec);
        for s in &self.sinks {
            s.deliver(Arc::clone(&rec));
        }
        if let Some(t) = &self.telemetry {
            t.store.push(rec);
        }
    }

    fn count_alert(&mut self, d: Detector) {
        self.out.alert_count += 1;
        if let Some(n) = self.out.alerts_by_detector.get_mut(d as usize) {
            *n += 1;
        }
    }

    fn dns_output(&mut self, o: DnsOutput) {
        let r = match o {
            DnsOutput::Alert(a) => {
                self.count_alert(a.detector);
                self.deliver(AlertRecord::from_json(
                    a.detector,
                    a.ts_ns,
                    dns_alert_json(&a),
                    0,
                ));
                if self.collect {
                    self.out.dns_alerts.push(a);
                }
                Ok(())
            }
            DnsOutput::Record(rec) => {
                self.out.dns_record_count += 1;
                let r = match self.dns_out.as_mut() {
                    Some(w) => writeln!(w, "{}", dns_record_json(&rec)),
                    None => Ok(()),
                };
                if self.collect {
                    self.out.dns_records.push(rec);
                }
                r
            }
        };
        if let Err(e) = r {
            self.note_error(e);
        }
    }

    fn leak_alert(&mut self, mut a: LeakAlert) {
        self.count_alert(a.detector);
        // A per-flow alert (raised at the flow's end): the worker holding the flow's packets
        // cuts its slice from its ring.
        if let (Some(req), Some(flow_id), Some(src), Some(dst)) =
            (&self.slice_requests, a.flow_id, a.src, a.dst)
        {
            if crate::slice::valid_id(&a.id) {
                let meta = crate::slice::SliceMeta {
                    id: a.id.clone(),
                    detector: a.detector.name(),
                    worker: 0,
                    flow_id,
                    proto: 0,
                    src,
                    sport: 0,
                    dst,
                    dport: 0,
                    alert_ts_ns: a.ts_ns,
                    linktype: 0,
                    snaplen: 0,
                };
                if req.request(&meta) {
                    a.slice_id = Some(a.id.clone());
                }
            }
        }
        self.deliver(AlertRecord::from_json(
            a.detector,
            a.ts_ns,
            leak_alert_json(&a),
            0,
        ));
        if self.collect {
            self.out.leak_alerts.push(a);
        }
    }

    /// Loads persisted state at start. A snapshot that was read but does not parse (corrupt,
    /// or another version) is renamed aside with a log line and the run starts fresh. A
    /// snapshot that cannot be read at all (permissions, a directory in its place, an I/O
    /// error) is an error: the history in it may be intact, and setting it aside would
    /// throw it away for what is a deployment mistake, so the sensor refuses to start.
    fn load_state(&mut self) -> Result<(), StateError> {
        let (Some(l), Some(path)) = (self.leak.as_mut(), self.state.as_ref()) else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            // Found out now, not when the first snapshot (or the one at shutdown) fails.
            let probe = dir.join(".outflow-write-test");
            let writable = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&probe, b""))
                .and_then(|()| std::fs::remove_file(&probe));
            if let Err(error) = writable {
                return Err(StateError::DirUnwritable {
                    dir: dir.to_path_buf(),
                    user: crate::capture::live::effective_user(),
                    error,
                });
            }
        }
        match l.load(path) {
            Ok(true) => tracing::info!(path = %path.display(), "loaded state snapshot"),
            Ok(false) => tracing::info!(path = %path.display(), "no state snapshot yet"),
            Err(SnapshotError::Io { source, .. }) => {
                return Err(StateError::Unreadable {
                    path: path.clone(),
                    user: crate::capture::live::effective_user(),
                    error: source,
                })
            }
            Err(e @ SnapshotError::Invalid { .. }) => {
                let aside = path.with_extension(format!(
                    "corrupt-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                let moved = std::fs::rename(path, &aside).is_ok();
                tracing::warn!(
                    "state snapshot unusable ({e}); {} and starting without history",
                    if moved {
                        format!("set aside as {}", aside.display())
                    } else {
                        "could not set it aside".to_string()
                    }
                );
                *l = LeakAnalyser::new_like(l);
            }
        }
        Ok(())
    }

    /// Copies the counters to the shared place every 256 events (and at the end).
    fn publish(&mut self, force: bool) {
        self.since_publish += 1;
        if !force && self.since_publish < 256 {
            return;
        }
        self.since_publish = 0;
        if self.telemetry.is_none() {
            return;
        }
        self.refresh_tables();
        let Some(t) = &self.telemetry else {
            return;
        };
        let tables = self.tables;
        let c = OutputCounters {
            alerts_by_detector: self.out.alerts_by_detector,
            flow_records: self.out.flow_count,
            dns_records: self.out.dns_record_count,
            allowlisted_alerts: self.out.allowlisted_alerts,
            dns: self.dns.as_ref().map_or(self.out.dns, |d| d.stats),
            leak: self.leak.as_ref().map_or(self.out.leak, |l| l.stats),
            tables,
        };
        if let Ok(mut g) = t.output.lock() {
            *g = c;
        }
        if !self.latency.is_empty() {
            if let Ok(mut h) = t.latency.lock() {
                h.add(&self.latency);
            }
            self.latency.reset();
        }
    }

    /// Copies the analysers' table occupancy into `self.tables`. After `finish` the
    /// analysers are gone and their last occupancy stays.
    fn refresh_tables(&mut self) {
        copy_tables(&mut self.tables, self.dns.as_ref(), self.leak.as_ref());
    }

    /// Live: snapshot every `state.snapshot_interval`.
    fn maybe_snapshot(&mut self) {
        let (Some(l), Some(path)) = (self.leak.as_ref(), self.state.as_ref()) else {
            return;
        };
        if self.last_snapshot.elapsed() < self.snapshot_every {
            return;
        }
        self.last_snapshot = std::time::Instant::now();
        if let Err(e) = l.save(path) {
            tracing::error!("cannot write the state snapshot: {e}");
        }
    }

    /// Moves the slow-leak stage's clock; closes windows that ended.
    fn advance(&mut self, ts_ns: u64) {
        let mut alerts = Vec::new();
        if let Some(l) = self.leak.as_mut() {
            let dns = self.dns.as_ref();
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), ts_ns))
                    .map(str::to_owned)
            };
            l.advance(ts_ns, &names, &mut |a| alerts.push(a));
        }
        for a in alerts {
            self.leak_alert(a);
        }
    }

    fn volume(&mut self, v: &crate::event::Volume) {
        let mut alerts = Vec::new();
        if let Some(l) = self.leak.as_mut() {
            let dns = self.dns.as_ref();
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), v.ts_ns))
                    .map(str::to_owned)
            };
            let fqdn = names(v.src, v.dst, v.ipv6);
            l.on_volume(v, fqdn.as_deref(), &names, &mut |a| alerts.push(a));
        }
        for a in alerts {
            self.leak_alert(a);
        }
    }

    /// End of input: pending DNS transactions are written out.
    fn finish(&mut self) {
        self.refresh_tables();
        let mut alerts = Vec::new();
        if let (Some(path), true) = (self.state.as_ref(), self.leak.is_some()) {
            let Some(l) = self.leak.take() else {
                return;
            };
            // The state continues in the next run (restart, or the next file with
            // --state-dir): open windows are persisted, not closed.
            if let Err(e) = l.save(path) {
                tracing::error!("cannot write the state snapshot: {e}");
                self.first_error
                    .get_or_insert(std::io::Error::other(e.to_string()));
            }
            self.out.leak = l.stats;
        }
        if let Some(mut l) = self.leak.take() {
            let dns = self.dns.as_ref();
            let now = u64::MAX;
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), now.min(u64::MAX / 2)))
                    .map(str::to_owned)
            };
            l.finish(&names, &mut |a| alerts.push(a));
            self.out.leak = l.stats;
            // Closing the last windows may still evict groups.
            copy_tables(&mut self.tables, None, Some(&l));
        }
        for a in alerts {
            self.leak_alert(a);
        }
        if let Some(mut a) = self.dns.take() {
            let mut outs = Vec::new();
            a.finish(&mut |o| outs.push(o));
            self.out.dns = a.stats;
            copy_tables(&mut self.tables, Some(&a), None);
            for o in outs {
                self.dns_output(o);
            }
        }
        self.out.tables = self.tables;
    }

    fn write(&mut self, ev: Event) {
        let ts = match &ev {
            Event::Dns(d) => d.ts_ns,
            Event::Alert(a) => a.ts_ns,
            Event::Flow(r) => r.last_ns,
            Event::Volume(v) => v.ts_ns,
        };
        self.advance(ts);
        let r = match ev {
            Event::Volume(v) => {
                self.volume(&v);
                Ok(())
            }
            Event::Dns(d) => {
                let mut outs: Vec<DnsOutput> = Vec::new();
                if let Some(a) = self.dns.as_mut() {
                    a.on_event(&d, &mut |o| outs.push(o));
                }
                for o in outs {
                    self.dns_output(o);
                }
                if let Some(r) = &self.dns_recycle {
                    let _ = r.try_send(d);
                }
                Ok(())
            }
            Event::Alert(mut a) => {
                // The name in force when the connection started: a slow upload may alert long
                // after the answer's TTL ran out.
                if let Some(d) = self.dns.as_ref() {
                    a.dst_fqdn = d.fqdn(a.src, a.dst, a.flow_start_ns).map(str::to_owned);
                }
                if self
                    .leak
                    .as_ref()
                    .is_some_and(|l| l.allowed(a.dst_fqdn.as_deref()))
                {
                    // allow.dst_domains: counted, never alerted.
                    self.out.allowlisted_alerts += 1;
                    return;
                }
                self.count_alert(a.detector);
                let read = std::mem::take(&mut a.read_mono_ns);
                self.deliver(AlertRecord::from_json(
                    a.detector,
                    a.ts_ns,
                    alert_json(&a),
                    read,
                ));
                if self.collect {
                    self.out.alerts.push(*a);
                }
                Ok(())
            }
            Event::Flow(rec) => {
                self.out.flow_count += 1;
                let r = match self.flows.as_mut() {
                    Some(w) => write_flow_json(w, &rec).and_then(|()| w.write_all(b"\n")),
                    None => Ok(()),
                };
                // The flow's last volume report rides on its final record.
                if let Some(v) = crate::event::end_volume(&rec) {
                    self.volume(&v);
                }
                if self.collect {
                    self.out.flows.push(rec);
                }
                r
            }
        };
        if let Err(e) = r {
            self.note_error(e);
        }
    }

    /// Stops the sink threads (replay: after they wrote everything) and keeps the first
    /// error of a sink that must not lose alerts.
    fn close_sinks(&mut self) {
        for s in self.sinks.drain(..) {
            if let Some(e) = s.close() {
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn flush(&mut self) {
        let mut errors = Vec::new();
        for w in [self.flows.as_mut(), self.dns_out.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = w.flush() {
                errors.push(e);
            }
        }
        for e in errors {
            self.note_error(e);
        }
    }

    /// Keeps the first output write error for the exit status and, live, logs it when it
    /// happens: a sensor runs for months, and a full disk must show in the journal the
    /// moment records stop being written, not at the next stop. Later errors (every record
    /// after a full disk fails alike) are not logged again.
    fn note_error(&mut self, e: io::Error) {
        if self.first_error.is_none() {
            if self.log_errors {
                tracing::error!("{e}; later write errors of the outputs are not logged");
            }
            self.first_error = Some(e);
        }
    }
}

/// The output thread's body.
pub struct OutputThread;

impl OutputThread {
    /// Opens the sinks (so a bad path fails before any packet is read) and returns the
    /// function to run on the output thread.
    pub fn prepare(
        sinks: &Sinks,
        cfg: Option<&Config>,
        workers: usize,
        rx: Receiver<OutMsg>,
    ) -> Result<impl FnOnce() -> io::Result<Collected> + Send, PrepareError> {
        let append = sinks.append;
        // Replay must write every alert in order and fail loudly; live must never wait.
        let mode = if sinks.ordered {
            Mode::Lossless
        } else {
            Mode::Lossy
        };
        let queue = sinks.sink_queue.max(1);
        let mut handles = Vec::new();
        if let Some(o) = &sinks.alerts {
            let t = JsonLinesFile::open(o, append)?;
            handles.push(SinkHandle::spawn(Box::new(t), mode, queue)?);
        }
        if let Some(c) = sinks.syslog.as_ref().filter(|c| !c.target.is_empty()) {
            let t = SyslogTransport::new(c)?;
            handles.push(SinkHandle::spawn(Box::new(t), mode, queue)?);
        }
        if let Some(t) = &sinks.telemetry {
            if let Ok(mut g) = t.sinks.lock() {
                g.extend(handles.iter().map(|h| (h.name(), h.counters())));
            }
            if let Ok(mut g) = t.reopeners.lock() {
                g.extend(handles.iter().filter_map(SinkHandle::reopener));
            }
        }
        let mut w = Writers {
            sinks: handles,
            slice_requests: sinks.slice_requests.clone(),
            dns_recycle: sinks.dns_recycle.clone(),
            telemetry: sinks.telemetry.clone(),
            latency: new_histogram(),
            flows: sinks
                .flows
                .as_ref()
                .map(|o| Named::open(o, append, "flow records"))
                .transpose()?,
            dns_out: sinks
                .dns
                .as_ref()
                .map(|o| Named::open(o, append, "DNS transactions"))
                .transpose()?,
            dns: cfg
                .filter(|c| c.dns.enabled)
                .map(|c| DnsAnalyser::new(&c.dns)),
            leak: cfg.map(LeakAnalyser::new),
            state: cfg
                .filter(|c| !c.state.dir.is_empty())
                .map(|c| std::path::Path::new(&c.state.dir).join(STATE_FILE)),
            snapshot_every: cfg.map_or(std::time::Duration::from_secs(300), |c| {
                c.state.snapshot_interval
            }),
            last_snapshot: std::time::Instant::now(),
            collect: sinks.collect,
            since_publish: 0,
            tables: [(0, 0, 0); OUTPUT_TABLES.len()],
            out: Collected::default(),
            first_error: None,
            log_errors: append,
        };
        let ordered = sinks.ordered;
        let want_records = w.dns_out.is_some() || w.collect;
        if let Some(d) = w.dns.as_mut() {
            d.set_records(want_records);
        }
        w.load_state()?;
        Ok(move || {
            let mut progress = vec![
                EventKey {
                    time_ns: 0,
                    class: 0,
                    id: 0,
                    sub: 0
                };
                workers
            ];
            let mut heap = Merge::default();
            for msg in rx.iter() {
                match msg {
                    OutMsg::Event(_, e) if !ordered => {
                        w.write(e);
                        w.maybe_snapshot();
                        // Live: make records and counters visible once the burst is written.
                        let idle = rx.is_empty();
                        w.publish(idle);
                        if idle {
                            w.flush();
                        }
                        continue;
                    }
                    OutMsg::Event(k, e) => heap.push(k, e),
                    OutMsg::Progress { worker, upto } => {
                        if let Some(p) = progress.get_mut(worker) {
                            *p = upto;
                        }
                    }
                    OutMsg::Reload(cfg) => {
                        if let Some(d) = w.dns.as_mut() {
                            d.reconfigure(&cfg.dns);
                        }
                        if let Some(l) = w.leak.as_mut() {
                            l.reconfigure(&cfg);
                        }
                    }
                    OutMsg::Done { worker } => {
                        if let Some(p) = progress.get_mut(worker) {
                            *p = DONE;
                        }
                    }
                }
                let low = progress.iter().min().copied().unwrap_or(DONE);
                while let Some(e) = heap.pop_upto(low) {
                    w.write(e);
                    w.publish(false);
                }
                if rx.is_empty() {
                    w.publish(true);
                }
            }
            // All senders gone: whatever is left is final.
            while let Some(e) = heap.pop_upto(DONE) {
                w.write(e);
            }
            w.publish(true);
            w.finish();
            w.flush();
            w.close_sinks();
            w.publish(true);
            match w.first_error {
                Some(e) => Err(e),
                None => Ok(w.out),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prepares the outputs with `state.dir` = `dir` (no output files, no threads).
    fn prepare_in(dir: &std::path::Path) -> Result<(), PrepareError> {
        let mut cfg = Config::default();
        cfg.state.dir = dir.display().to_string();
        let (_tx, rx) = crossbeam_channel::bounded(1);
        OutputThread::prepare(&Sinks::default(), Some(&cfg), 1, rx).map(drop)
    }

    #[test]
    fn an_unreadable_state_snapshot_stops_the_start_and_stays_put() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        // A directory where the snapshot should be: it opens, but reading fails (EISDIR),
        // as reading a 0600 file of another user fails (EACCES) — and unlike permission
        // bits, it stops root too, so the test means the same whoever runs it.
        std::fs::create_dir(&path).unwrap();
        let err = match prepare_in(dir.path()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("an unreadable snapshot must stop the start"),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains(&crate::capture::live::effective_user()),
            "{err}"
        );
        assert!(err.starts_with("state.dir: cannot read"), "{err}");
        // Not set aside: the only entry in the directory is the snapshot, where it was.
        assert!(path.is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_state_dir_that_cannot_be_written_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: it can be neither created nor written,
        // whoever runs the test (root ignores permission bits).
        let blocked = dir.path().join("state");
        std::fs::write(&blocked, b"").unwrap();
        let err = match prepare_in(&blocked) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("an unwritable state.dir must stop the start"),
        };
        assert!(
            err.starts_with(&format!(
                "state.dir {}: cannot write state snapshots there as user {}",
                blocked.display(),
                crate::capture::live::effective_user()
            )),
            "{err}"
        );
        // A missing directory is created, and nothing is left in it.
        let fresh = dir.path().join("a/b");
        prepare_in(&fresh).unwrap();
        assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 0);
    }

    #[test]
    fn a_snapshot_that_does_not_parse_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, b"{\"version\": 1, \"now_ns\": ").unwrap();
        prepare_in(dir.path()).unwrap();
        assert!(!path.exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("outflow-state.corrupt-"), "{names:?}");
    }
}
