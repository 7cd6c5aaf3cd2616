//! The output thread: merges the workers' events into one order and writes them.
//!
//! Each worker sends its events plus, after every batch, a progress mark: a key below which
//! it will never produce another event (see `worker` for how keys are built). The thread keeps
//! events in a min-heap and writes those whose key is at or below every worker's progress.
//! The written order is thus the key order, which depends only on the input: the same
//! capture gives byte-identical output for 1 or 16 workers.

use super::deliver::{JsonLinesFile, Mode, SinkHandle};
use super::json::{
    alert_json, dns_alert_json, dns_record_json, incident_json, leak_alert_json, write_flow_json,
};
use super::syslog::SyslogTransport;
use crate::config::{Config, SyslogConfig};
use crate::correlate::dns::{AnalyseStats, DnsAlert, DnsRecord};
use crate::correlate::incident::{IncidentStats, IncidentUpdate};
use crate::correlate::leak::{LeakAlert, LeakStats};
use crate::correlate::{Correlator, Finding, Output as CorrelateOutput, StateError, TABLES};
use crate::detect::{Alert, Detector};
use crate::event::{Event, EventKey, OutMsg};
use crate::flow::FlowRecord;
use crate::telemetry::record::AlertRecord;
use crate::telemetry::{mono_ns, new_histogram, record, OutputCounters, Telemetry};
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
    /// Flow records to an IPFIX collector too, if set and its target is not empty.
    pub ipfix: Option<crate::config::IpfixConfig>,
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
    /// Publish the event stream to this bus (`bus.url` set): the cross-flow detectors and
    /// incidents then run on `outflow correlate`, and this process keeps the per-flow
    /// alerts, flow and DNS records.
    pub bus: Option<crate::config::BusConfig>,
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
    /// (entries, capacity, evictions) of each table named in [`TABLES`], as the
    /// input ended (before the last transactions were written out).
    pub tables: [(u64, u64, u64); TABLES.len()],
    /// Incident announcements, in output order (only when `collect`).
    pub incidents: Vec<IncidentUpdate>,
    /// The incident book's counters.
    pub incident_stats: IncidentStats,
    /// What the bus publisher did, when publishing.
    pub bus: Option<crate::bus::publish::BusReport>,
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
    fn pop_upto(&mut self, upto: EventKey) -> Option<(EventKey, Event)> {
        if self.heap.peek().is_none_or(|Reverse((k, _))| *k > upto) {
            return None;
        }
        let Reverse((k, i)) = self.heap.pop()?;
        self.free.push(i);
        Some((k, self.slab.get_mut(i as usize)?.take()?))
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
    /// The IPFIX exporter of flow records, on its own thread.
    ipfix: Option<super::ipfix::IpfixHandle>,
    /// The event bus, when the cross-flow stage runs on correlators.
    bus: Option<crate::bus::publish::BusSink>,
    /// Latest event time handed to the bus (its last mark at the end).
    bus_last_ns: u64,
    dns_recycle: Option<crossbeam_channel::Sender<Box<crate::dns::DnsEvent>>>,
    telemetry: Option<Arc<Telemetry>>,
    /// Detection latency since the last publication (ns).
    latency: Histogram<u64>,
    flows: Option<BufWriter<Named>>,
    dns_out: Option<BufWriter<Named>>,
    /// The cross-flow stage this thread feeds.
    correlate: Correlator,
    /// What the stage produced for the event being written (reused).
    pending: Vec<CorrelateOutput>,
    /// Findings go to the alert sinks too, not only to `/api/alerts`.
    per_detector_lines: bool,
    /// `output.community_id_seed`: every record's Community ID is computed here, as it is
    /// rendered.
    community_id_seed: u16,
    snapshot_every: std::time::Duration,
    last_snapshot: std::time::Instant,
    collect: bool,
    out: Collected,
    first_error: Option<io::Error>,
    /// The service (appending outputs): a write error is logged when it happens, since
    /// the run may go on for months; a replay reports it once, at its end.
    log_errors: bool,
    since_publish: u32,
}

impl Writers {
    /// New settings (SIGHUP): the cross-flow stage's, and the Community ID's seed.
    fn reconfigure(&mut self, cfg: &Config) {
        self.correlate.reconfigure(cfg);
        self.community_id_seed = cfg.output.community_id_seed;
        if let Some(t) = &self.telemetry {
            t.set_community_id_seed(self.community_id_seed);
        }
    }

    /// Hands one rendered finding to the API's store (`/api/alerts`) and, with
    /// `incident.per_detector_lines`, to every sink.
    fn deliver(&mut self, rec: AlertRecord) {
        if rec.read_mono_ns != 0 {
            record(
                &mut self.latency,
                mono_ns().saturating_sub(rec.read_mono_ns),
                1,
            );
        }
        let rec = Arc::new(rec);
        if self.per_detector_lines {
            for s in &self.sinks {
                s.deliver(Arc::clone(&rec));
            }
        }
        if let Some(t) = &self.telemetry {
            t.store.push(rec);
        }
    }

    /// Hands one incident announcement to every sink and the API's incident store.
    fn announce(&mut self, u: IncidentUpdate) {
        let rec = Arc::new(AlertRecord::from_incident(
            &u,
            incident_json(&u, self.community_id_seed),
        ));
        for s in &self.sinks {
            s.deliver(Arc::clone(&rec));
        }
        if let Some(t) = &self.telemetry {
            t.incidents.push(rec);
        }
        if self.collect {
            self.out.incidents.push(u);
        }
    }

    fn count_alert(&mut self, d: Detector) {
        self.out.alert_count += 1;
        if let Some(n) = self.out.alerts_by_detector.get_mut(d as usize) {
            *n += 1;
        }
    }

    /// Renders and delivers one finding.
    fn finding(&mut self, f: Finding) {
        self.count_alert(f.detector());
        match f {
            Finding::Flow(mut a) => {
                let read = std::mem::take(&mut a.read_mono_ns);
                self.deliver(AlertRecord::from_json(
                    a.detector,
                    a.ts_ns,
                    alert_json(&a, self.community_id_seed),
                    read,
                ));
                if self.collect {
                    self.out.alerts.push(*a);
                }
            }
            Finding::Leak(a) => {
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
            Finding::Dns(a) => {
                self.deliver(AlertRecord::from_json(
                    a.detector,
                    a.ts_ns,
                    dns_alert_json(&a),
                    0,
                ));
                if self.collect {
                    self.out.dns_alerts.push(a);
                }
            }
        }
    }

    /// Writes one thing the cross-flow stage produced.
    fn output(&mut self, o: CorrelateOutput) {
        let r = match o {
            CorrelateOutput::Finding(f) => {
                self.finding(f);
                Ok(())
            }
            CorrelateOutput::Flow(rec) => {
                self.out.flow_count += 1;
                if let Some(x) = &self.ipfix {
                    x.export(&rec);
                }
                let r = match self.flows.as_mut() {
                    Some(w) => write_flow_json(w, &rec, self.community_id_seed)
                        .and_then(|()| w.write_all(b"\n")),
                    None => Ok(()),
                };
                if self.collect {
                    self.out.flows.push(rec);
                }
                r
            }
            CorrelateOutput::DnsRecord(rec) => {
                self.out.dns_record_count += 1;
                let r = match self.dns_out.as_mut() {
                    Some(w) => writeln!(w, "{}", dns_record_json(&rec, self.community_id_seed)),
                    None => Ok(()),
                };
                if self.collect {
                    self.out.dns_records.push(rec);
                }
                r
            }
            CorrelateOutput::Incident(u) => {
                self.announce(u);
                Ok(())
            }
            CorrelateOutput::DnsDone(d) => {
                if let Some(r) = &self.dns_recycle {
                    let _ = r.try_send(d);
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            self.note_error(e);
        }
    }

    /// Feeds one event to the cross-flow stage and writes what comes out. The outputs pass
    /// through a buffer kept across events: most events (every flow record) produce one,
    /// and a fresh `Vec` for each was an allocation per flow under a flood.
    fn write(&mut self, key: EventKey, ev: Event) {
        if let Some(b) = self.bus.as_mut() {
            b.event(&key, &ev);
            self.bus_last_ns = self.bus_last_ns.max(key.time_ns);
        }
        let mut outs = std::mem::take(&mut self.pending);
        self.correlate.on_event(ev, &mut |o| outs.push(o));
        for o in outs.drain(..) {
            self.output(o);
        }
        self.pending = outs;
    }

    /// Moves the cross-flow stage's clock without an event (live, from the workers'
    /// progress) and writes what that closes.
    fn tick(&mut self, now_ns: u64) {
        let mut outs = Vec::new();
        self.correlate.tick(now_ns, &mut |o| outs.push(o));
        for o in outs {
            self.output(o);
        }
    }

    /// Copies the counters to the shared place every 256 events (and at the end).
    fn publish(&mut self, force: bool) {
        self.since_publish += 1;
        if !force && self.since_publish < 256 {
            return;
        }
        self.since_publish = 0;
        let Some(t) = self.telemetry.clone() else {
            return;
        };
        let st = self.correlate.stats();
        self.out.tables = st.tables;
        let c = OutputCounters {
            alerts_by_detector: self.out.alerts_by_detector,
            flow_records: self.out.flow_count,
            dns_records: self.out.dns_record_count,
            allowlisted_alerts: st.allowlisted_alerts,
            dns: st.dns,
            leak: st.leak,
            tables: st.tables,
            incidents: st.incidents,
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

    /// Live: snapshot every `state.snapshot_interval`.
    fn maybe_snapshot(&mut self) {
        if self.last_snapshot.elapsed() < self.snapshot_every {
            return;
        }
        self.last_snapshot = std::time::Instant::now();
        if let Err(e) = self.correlate.save_state() {
            tracing::error!("{e}");
        }
    }

    /// End of input: the stage closes (or persists) its windows and writes out pending
    /// DNS transactions.
    fn finish(&mut self) {
        let mut outs = Vec::new();
        if let Err(e) = self.correlate.finish(&mut |o| outs.push(o)) {
            tracing::error!("{e}");
            self.first_error
                .get_or_insert(std::io::Error::other(e.to_string()));
        }
        let st = self.correlate.stats();
        self.out.dns = st.dns;
        self.out.leak = st.leak;
        self.out.allowlisted_alerts = st.allowlisted_alerts;
        self.out.tables = st.tables;
        self.out.incident_stats = st.incidents;
        for o in outs {
            self.output(o);
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
        if let Some(e) = self.ipfix.take().and_then(|x| x.close()) {
            self.first_error.get_or_insert(e);
        }
        if let Some(b) = self.bus.take() {
            self.out.bus = Some(b.finish(self.bus_last_ns));
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
                g.extend(
                    handles
                        .iter()
                        .filter_map(SinkHandle::reopener)
                        .map(|r| crate::telemetry::Reopen(Box::new(move || r.reopen()))),
                );
            }
        }
        let ipfix = sinks
            .ipfix
            .as_ref()
            .filter(|c| !c.target.is_empty())
            .map(|c| super::ipfix::IpfixHandle::spawn(c, mode == Mode::Lossless))
            .transpose()?;
        if let (Some(t), Some(x)) = (&sinks.telemetry, &ipfix) {
            let _ = t.ipfix.set(x.counters());
        }
        let community_id_seed = cfg.map_or(crate::flow::community_id::DEFAULT_SEED, |c| {
            c.output.community_id_seed
        });
        if let Some(t) = &sinks.telemetry {
            t.set_community_id_seed(community_id_seed);
        }
        let want_records = sinks.dns.is_some() || sinks.collect;
        let bus_cfg = sinks.bus.as_ref().filter(|b| !b.url.is_empty());
        let bus = match bus_cfg {
            Some(b) => {
                let counters = Arc::new(crate::telemetry::BusCounters::default());
                if let Some(t) = &sinks.telemetry {
                    let _ = t.bus.set(Arc::clone(&counters));
                }
                Some(
                    crate::bus::publish::BusSink::start(b, mode == Mode::Lossless, counters)
                        .map_err(|e| io::Error::other(e.to_string()))?,
                )
            }
            None => None,
        };
        let mut correlate = match (cfg, &bus) {
            (Some(c), Some(_)) => Correlator::local(c, want_records),
            _ => Correlator::new(cfg, want_records, sinks.slice_requests.clone()),
        };
        correlate.load_state()?;
        let mut w = Writers {
            sinks: handles,
            ipfix,
            // On a bus the per-flow findings are this process's only alert lines.
            per_detector_lines: bus.is_some() || cfg.is_none_or(|c| c.incident.per_detector_lines),
            bus,
            bus_last_ns: 0,
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
            correlate,
            pending: Vec::with_capacity(16),
            community_id_seed,
            snapshot_every: cfg.map_or(std::time::Duration::from_secs(300), |c| {
                c.state.snapshot_interval
            }),
            last_snapshot: std::time::Instant::now(),
            collect: sinks.collect,
            since_publish: 0,
            out: Collected::default(),
            first_error: None,
            log_errors: append,
        };
        let ordered = sinks.ordered;
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
                    OutMsg::Event(k, e) if !ordered => {
                        w.write(k, e);
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
                    OutMsg::Reload(cfg) => w.reconfigure(&cfg),
                    OutMsg::Done { worker } => {
                        if let Some(p) = progress.get_mut(worker) {
                            *p = DONE;
                        }
                    }
                }
                let low = progress.iter().min().copied().unwrap_or(DONE);
                if !ordered && low.class < 2 {
                    // Live: the workers' progress moves the stage's clock on a quiet link
                    // too, so held incident news goes out and idle incidents close on time.
                    w.tick(low.time_ns);
                }
                while let Some((k, e)) = heap.pop_upto(low) {
                    w.write(k, e);
                    w.publish(false);
                }
                if low.class < 2 {
                    // No event below the workers' progress will follow: the correlators'
                    // merge may pass it.
                    if let Some(b) = w.bus.as_mut() {
                        b.progress(low.time_ns);
                    }
                }
                if rx.is_empty() {
                    w.publish(true);
                }
            }
            // All senders gone: whatever is left is final.
            while let Some((k, e)) = heap.pop_upto(DONE) {
                w.write(k, e);
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
        let path = dir.path().join(crate::correlate::STATE_FILE);
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
        let path = dir.path().join(crate::correlate::STATE_FILE);
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
