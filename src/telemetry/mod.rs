//! What the running pipeline shares with the outside: counters, histograms, recent alerts and
//! the live top-flows view, read by the stats line, `/metrics`, `/healthz` and `/api/*`.
//!
//! Workers own their state outright and never lock per packet. They keep counters and a
//! processing-time histogram as plain fields and copy them into a [`WorkerShared`] every
//! [`crate::pipeline::PUBLISH_EVERY`] packets or batch; readers (the HTTP thread) merge the
//! copies at scrape time. The top-flows view is pulled, not pushed: an HTTP request raises a
//! generation number, each worker notices it between batches, ranks its own table and
//! answers; so the cost of scanning a table is paid only when someone asks.

use crate::capture::frag::READER_TABLES;
use crate::correlate::incident::IncidentStats;
use crate::correlate::{dns::AnalyseStats, leak::LeakStats, TABLES as OUTPUT_TABLES};
use crate::detect::Detector;
use crate::pipeline::Snapshot;
use crate::worker::WORKER_TABLES;
use record::AlertRecord;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

pub mod record;

pub use crate::flow::top::{TopBy, TopFlow, TOP_MAX};
pub use crate::pipeline::{PcapSlot, TopAnswer, TopSlot, WorkerShared};
pub use crate::slice::{PcapFilter, PCAP_MAX};
pub use crate::stats::{mono_ns, new_histogram, record, Occupancy, Windowed, QUANTILE_WINDOW};

/// Asks one alert sink to close and reopen its destination (log rotation), from any
/// thread, without blocking. A closure, so this board needs no type of the outputs.
pub struct Reopen(pub Box<dyn Fn() + Send + Sync>);

impl Reopen {
    /// Requests the reopen.
    pub fn reopen(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reopen")
    }
}

/// A sink's counters, read by /metrics and the stats line.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Alerts sent successfully.
    pub delivered: AtomicU64,
    /// Failed attempts (each retry that failed counts once).
    pub failures: AtomicU64,
    /// Alerts given up on: queue full, or still unsent at shutdown.
    pub dropped: AtomicU64,
    /// Alerts waiting in the queue now.
    pub queued: AtomicU64,
    /// Whether the last attempt succeeded (true before the first).
    pub up: AtomicBool,
}

/// The HTTP server's connection counters, read by /metrics (the server counts them; its
/// accessors are in `http::conn`).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Idle connections closed to admit a new one (or to free a descriptor on EMFILE).
    pub evicted: AtomicU64,
    /// Connections closed by a deadline, by [`crate::http::conn::Phase`].
    pub timed_out: [AtomicU64; 3],
    /// Requests answered 503 because their class's in-progress budget was full, indexed
    /// as [`crate::http::conn::Class::ALL`].
    pub rejected: [AtomicU64; 2],
}

/// The IPFIX exporter's counters (`output::ipfix`), read by /metrics.
#[derive(Debug, Default)]
pub struct IpfixCounters {
    /// Data records sent.
    pub records: AtomicU64,
    /// Messages sent.
    pub messages: AtomicU64,
    /// Records dropped: queue full (live), or lost with a message that could not be sent.
    pub dropped: AtomicU64,
    /// Failed sends or connects.
    pub errors: AtomicU64,
}

/// The event bus's counters (`bus`): a sensor's publisher and a correlator's consumers,
/// read by /metrics. All zero on a process that does not use the bus.
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Events acknowledged by the bus.
    pub published: AtomicU64,
    /// Messages acknowledged by the bus (batches of events, progress marks).
    pub messages: AtomicU64,
    /// Events dropped because the queue to the bus was full (or still held at the end of
    /// the drain timeout).
    pub dropped: AtomicU64,
    /// Messages (batches, marks) published again after a failed or missing acknowledgement (the
    /// de-duplication ids keep them from counting twice).
    pub resent: AtomicU64,
    /// Failed publishes, connects, stream or lease operations.
    pub errors: AtomicU64,
    /// Events waiting for the bus now.
    pub queued: AtomicU64,
    /// 1 while connected to the bus.
    pub connected: AtomicBool,
    /// Correlator: events taken from the partitions it owns.
    pub consumed: AtomicU64,
    /// Correlator: events that arrived after the merge had passed their time.
    pub late: AtomicU64,
    /// Correlator: events re-read to rebuild a partition's state after taking it over,
    /// whose outputs had already been written.
    pub replayed: AtomicU64,
    /// Correlator: partitions owned now.
    pub partitions_owned: AtomicU64,
    /// Correlator: leases lost to another correlator (or expired before renewal).
    pub lease_losses: AtomicU64,
    /// Correlator: messages dropped as copies of ones already taken (the bus's own
    /// de-duplication had forgotten them).
    pub duplicates: AtomicU64,
    /// Correlator: partition snapshots stored.
    pub snapshots: AtomicU64,
}

/// The output thread's counters: what was written, and the cross-flow stage's tables.
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
    /// Incidents opened, announced, open.
    pub incidents: IncidentStats,
}
/// Every bounded table of the process, as the `table` label of `outflow_table_*` and the
/// table lines of the replay summary: each worker's (summed over the workers), the capture
/// threads' first-fragment maps and held orphan fragments, the output thread's DNS and
/// cross-flow tables, and the API's store of recent alerts. A new table goes here, in its
/// stage's list, and in `docs/metrics.md`.
pub const TABLES: [&str; 19] = [
    WORKER_TABLES[0],
    WORKER_TABLES[1],
    WORKER_TABLES[2],
    WORKER_TABLES[3],
    WORKER_TABLES[4],
    WORKER_TABLES[5],
    WORKER_TABLES[6],
    WORKER_TABLES[7],
    READER_TABLES[0],
    READER_TABLES[1],
    OUTPUT_TABLES[0],
    OUTPUT_TABLES[1],
    OUTPUT_TABLES[2],
    OUTPUT_TABLES[3],
    OUTPUT_TABLES[4],
    OUTPUT_TABLES[5],
    OUTPUT_TABLES[6],
    OUTPUT_TABLES[7],
    ALERT_STORE,
];

/// Table label of the [`AlertStore`].
pub const ALERT_STORE: &str = "alert_store";

/// The tables in [`TABLES`] order, from their sources: the workers' (summed), the
/// capture threads' fragment tables (summed), the output thread's, and the alert store if
/// there is one.
pub fn tables(
    workers: &[Occupancy; WORKER_TABLES.len()],
    readers: &[Occupancy; READER_TABLES.len()],
    output: &[Occupancy; OUTPUT_TABLES.len()],
    store: Option<Occupancy>,
) -> Vec<(&'static str, Occupancy)> {
    let values = workers
        .iter()
        .copied()
        .chain(readers.iter().copied())
        .chain(output.iter().copied())
        .chain(store);
    TABLES.iter().copied().zip(values).collect()
}

/// [`tables`] of a live process: the workers' and capture threads' tables summed over their
/// snapshots (each snapshot holds one thread's), with the output's and the alert store's.
pub fn snapshot_tables<'a>(
    snaps: impl IntoIterator<Item = &'a Snapshot>,
    output: &[Occupancy; OUTPUT_TABLES.len()],
    store: Option<Occupancy>,
) -> Vec<(&'static str, Occupancy)> {
    fn add(to: &mut [Occupancy], from: &[Occupancy]) {
        for (a, b) in to.iter_mut().zip(from) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
        }
    }
    let mut workers = [(0u64, 0u64, 0u64); WORKER_TABLES.len()];
    let mut readers = [(0u64, 0u64, 0u64); READER_TABLES.len()];
    for s in snaps {
        add(&mut workers, &s.flows.tables);
        add(&mut readers, &s.fragments);
    }
    tables(&workers, &readers, output, store)
}

/// Recent alerts for `/api/alerts`, newest last; bounded. A ring: a push drops at most the
/// one oldest alert from the front, O(1); only a query (per API request) walks it.
#[derive(Debug)]
pub struct AlertStore {
    kept: usize,
    alerts: Mutex<VecDeque<Arc<AlertRecord>>>,
    /// Alerts forgotten to make room (counted under the lock, read by /metrics).
    evicted: AtomicU64,
}

/// Filters of an `/api/alerts` query.
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    /// Only alerts at or after this time (Unix ns).
    pub since_ns: Option<u64>,
    /// Only this detector (its name).
    pub detector: Option<&'static str>,
    /// Only alerts whose source is this address.
    pub src: Option<IpAddr>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl AlertStore {
    /// A store keeping the newest `kept` alerts.
    pub fn new(kept: usize) -> AlertStore {
        AlertStore {
            kept: kept.max(1),
            alerts: Mutex::new(VecDeque::with_capacity(kept.clamp(1, 65_536))),
            evicted: AtomicU64::new(0),
        }
    }

    /// Adds an alert, forgetting (and counting) the oldest beyond the bound.
    pub fn push(&self, a: Arc<AlertRecord>) {
        if let Ok(mut g) = self.alerts.lock() {
            while g.len() >= self.kept {
                if g.pop_front().is_some() {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            g.push_back(a);
        }
    }

    /// (alerts held, `http.alerts_kept`, alerts forgotten to make room).
    pub fn occupancy(&self) -> Occupancy {
        (
            self.len() as u64,
            self.kept as u64,
            self.evicted.load(Ordering::Relaxed),
        )
    }

    /// Alerts held now.
    pub fn len(&self) -> usize {
        self.alerts.lock().map_or(0, |g| g.len())
    }

    /// Whether no alert is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The matching alerts, newest first.
    pub fn query(&self, q: &AlertQuery) -> Vec<Arc<AlertRecord>> {
        let Ok(g) = self.alerts.lock() else {
            return Vec::new();
        };
        g.iter()
            .rev()
            .filter(|a| q.since_ns.is_none_or(|s| a.ts_ns >= s))
            .filter(|a| q.detector.is_none_or(|d| a.detector.name() == d))
            // ::ffff:10.0.0.5 and 10.0.0.5 are the same host.
            .filter(|a| {
                q.src
                    .is_none_or(|s| a.src.map(|x| x.to_canonical()) == Some(s.to_canonical()))
            })
            .take(q.limit)
            .cloned()
            .collect()
    }
}

/// Recent incidents for `/api/incidents`: the latest announcement of each, in order of
/// their latest update; bounded (the incident updated longest ago goes first).
#[derive(Debug)]
pub struct IncidentStore {
    kept: usize,
    by_id: Mutex<hashlink::LinkedHashMap<String, Arc<AlertRecord>>>,
}

/// Filters of an `/api/incidents` query.
#[derive(Clone, Debug, Default)]
pub struct IncidentQuery {
    /// Only incidents updated at or after this time (Unix ns).
    pub since_ns: Option<u64>,
    /// Only incidents whose source is this address.
    pub src: Option<IpAddr>,
    /// Only open (`Some(true)`) or closed (`Some(false)`) incidents.
    pub open: Option<bool>,
    /// Only incidents of at least this severity (`low` < `medium` < `high` < `critical`).
    pub min_severity: Option<crate::correlate::incident::Severity>,
    /// At most this many, most recently updated first.
    pub limit: usize,
}

impl IncidentStore {
    /// A store keeping the `kept` most recently updated incidents.
    pub fn new(kept: usize) -> IncidentStore {
        IncidentStore {
            kept: kept.max(1),
            by_id: Mutex::new(hashlink::LinkedHashMap::new()),
        }
    }

    /// Records an announcement: it replaces the incident's previous one and moves it to
    /// the back.
    pub fn push(&self, rec: Arc<AlertRecord>) {
        if let Ok(mut g) = self.by_id.lock() {
            g.remove(&rec.id);
            while g.len() >= self.kept {
                if g.pop_front().is_none() {
                    break;
                }
            }
            g.insert(rec.id.clone(), rec);
        }
    }

    /// The matching incidents, most recently updated first.
    pub fn query(&self, q: &IncidentQuery) -> Vec<Arc<AlertRecord>> {
        use crate::correlate::incident::Severity;
        let Ok(g) = self.by_id.lock() else {
            return Vec::new();
        };
        let sev = |r: &AlertRecord| {
            Severity::ALL
                .into_iter()
                .find(|s| Some(s.name()) == r.severity)
                .unwrap_or_default()
        };
        g.values()
            .rev()
            .filter(|r| q.since_ns.is_none_or(|s| r.ts_ns >= s))
            .filter(|r| {
                q.src
                    .is_none_or(|s| r.src.map(|x| x.to_canonical()) == Some(s.to_canonical()))
            })
            .filter(|r| q.open.is_none_or(|o| o == (r.update != Some("closed"))))
            .filter(|r| q.min_severity.is_none_or(|m| sev(r) >= m))
            .take(q.limit)
            .cloned()
            .collect()
    }

    /// Incidents held.
    pub fn len(&self) -> usize {
        self.by_id.lock().map_or(0, |g| g.len())
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the pipeline shares with the stats line and the HTTP server.
#[derive(Debug)]
pub struct Telemetry {
    /// "replay" or "live".
    pub mode: &'static str,
    /// One entry per worker.
    pub workers: Vec<Arc<WorkerShared>>,
    /// The capture thread (live single mode) or the file reader (replay): frames, decode
    /// failures, kernel counters, queue drops. Workers reading their own handles (fanout)
    /// publish those in their own snapshots instead.
    pub reader: Arc<WorkerShared>,
    /// The output thread's counters.
    pub output: Arc<Mutex<OutputCounters>>,
    /// Detection latency (ns), recorded by the output thread.
    pub latency: Arc<Mutex<Windowed>>,
    /// Alert sinks and their counters, registered by the output thread.
    pub sinks: Mutex<Vec<(&'static str, Arc<SinkCounters>)>>,
    /// Reopen handles of the alert sinks (SIGHUP, for logrotate).
    pub reopeners: Mutex<Vec<Reopen>>,
    /// Recent alerts (findings of every detector).
    pub store: Arc<AlertStore>,
    /// Recent incidents, each at its latest announcement.
    pub incidents: Arc<IncidentStore>,
    /// True while packets are being read.
    pub capturing: AtomicBool,
    /// Process start.
    pub started: SystemTime,
    /// Top-flows and pcap request generations.
    pub top_generation: AtomicU64,
    /// The slice writer's counters.
    pub slices: Arc<crate::slice::writer::WriterStats>,
    /// Where slices are written, when they are.
    pub slice_dir: OnceLock<std::path::PathBuf>,
    /// The HTTP server's connection counters.
    pub http: Arc<ConnStats>,
    /// The IPFIX exporter's counters, registered by the output thread when it exports.
    pub ipfix: OnceLock<Arc<IpfixCounters>>,
    /// The event bus's counters, registered by the publisher or the correlator.
    pub bus: OnceLock<Arc<BusCounters>>,
    /// `output.community_id_seed`, published by the output thread (at start and on
    /// SIGHUP) for the API's `/api/flows/top` rows.
    community_id_seed: AtomicU16,
}

impl Telemetry {
    /// Shared state for `workers` workers, keeping `alerts_kept` alerts for the API.
    pub fn new(mode: &'static str, workers: usize, alerts_kept: usize) -> Arc<Telemetry> {
        let _ = mono_ns(); // start the monotonic epoch
        Arc::new(Telemetry {
            mode,
            workers: (0..workers).map(|_| Arc::default()).collect(),
            reader: Arc::default(),
            output: Arc::default(),
            latency: Arc::default(),
            sinks: Mutex::default(),
            reopeners: Mutex::default(),
            store: Arc::new(AlertStore::new(alerts_kept)),
            incidents: Arc::new(IncidentStore::new(alerts_kept)),
            capturing: AtomicBool::new(true),
            started: SystemTime::now(),
            top_generation: AtomicU64::new(0),
            slices: Arc::default(),
            slice_dir: OnceLock::new(),
            http: Arc::default(),
            ipfix: OnceLock::new(),
            bus: OnceLock::new(),
            community_id_seed: AtomicU16::new(crate::flow::community_id::DEFAULT_SEED),
        })
    }

    /// The Community ID seed the outputs use.
    pub fn community_id_seed(&self) -> u16 {
        self.community_id_seed.load(Ordering::Relaxed)
    }

    /// Publishes the Community ID seed (output thread).
    pub fn set_community_id_seed(&self, seed: u16) {
        self.community_id_seed.store(seed, Ordering::Relaxed);
    }

    /// True while the sensor captures: not stopping, and no capture loop has stopped
    /// reading (a lost interface shows here at once).
    pub fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
            && !std::iter::once(&self.reader)
                .chain(self.workers.iter())
                .any(|w| w.capture_stopped.load(Ordering::Relaxed))
    }

    /// Workers whose thread is still running.
    pub fn workers_alive(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.alive.load(Ordering::Relaxed))
            .count()
    }

    /// Every snapshot: the reader's first, then the workers'.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        std::iter::once(&self.reader)
            .chain(self.workers.iter())
            .map(|w| w.snap.lock().map_or_else(|_| Snapshot::default(), |g| *g))
            .collect()
    }

    /// Packets lost: kernel, interface and every internal drop, summed.
    pub fn drops(&self) -> u64 {
        self.snapshots()
            .iter()
            .map(|s| {
                s.kernel_dropped
                    + s.interface_dropped
                    + s.queue_dropped
                    + s.events_dropped
                    + s.alerts_dropped
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;

    #[test]
    fn a_stopped_capture_loop_shows_as_not_capturing_at_once() {
        let t = Telemetry::new("live", 2, 10);
        let gauge = |t: &Telemetry| {
            crate::http::metrics::gather(t)
                .iter()
                .find(|f| f.name() == "outflow_capturing")
                .and_then(|f| f.get_metric().first().map(|m| m.get_gauge().get_value()))
        };
        assert!(t.is_capturing());
        assert_eq!(gauge(&t), Some(1.0));
        // One fanout worker lost its handle: its thread is still alive (ending flows,
        // serving slices), but capture is not whole any more.
        t.workers[1].capture_stopped.store(true, Ordering::Relaxed);
        assert_eq!(t.workers_alive(), 2);
        assert!(!t.is_capturing());
        assert_eq!(gauge(&t), Some(0.0));
        // The single-mode capture thread likewise.
        let t = Telemetry::new("live", 2, 10);
        t.reader.capture_stopped.store(true, Ordering::Relaxed);
        assert!(!t.is_capturing());
    }

    #[test]
    fn the_alert_store_is_a_ring_that_drops_the_oldest() {
        let store = AlertStore::new(100);
        for i in 0..10_000u64 {
            let json = format!("{{\"id\":\"a{i}\"}}");
            store.push(Arc::new(AlertRecord::from_json(
                Detector::DataLeak,
                i,
                json,
                0,
            )));
            assert!(store.len() <= 100);
        }
        let all = store.query(&AlertQuery {
            limit: usize::MAX,
            ..AlertQuery::default()
        });
        let ts: Vec<u64> = all.iter().map(|a| a.ts_ns).collect();
        assert_eq!(ts, (9_900..10_000).rev().collect::<Vec<_>>());
        assert_eq!(
            store.occupancy(),
            (100, 100, 9_900),
            "every forgotten alert counted"
        );
    }

    /// Every table source lands under its own name, in [`TABLES`] order; the alert store
    /// only when there is one.
    #[test]
    fn tables_are_listed_in_order_under_unique_names() {
        let w = [
            (1, 10, 100),
            (2, 20, 200),
            (3, 30, 300),
            (4, 40, 400),
            (8, 80, 800),
            (11, 110, 1100),
            (12, 120, 1200),
            (13, 130, 1300),
        ];
        let r = [(5, 50, 500), (9, 90, 900)];
        let o = [(6, 60, 600); OUTPUT_TABLES.len()];
        let all = tables(&w, &r, &o, Some((7, 70, 700)));
        let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, TABLES.to_vec());
        assert_eq!(all[2], ("dns_tcp", (3, 30, 300)));
        assert_eq!(all[4], ("tcp_recent_closed", (8, 80, 800)));
        assert_eq!(all[5], ("ip_reassembly", (11, 110, 1100)));
        assert_eq!(all[6], ("tap_stash", (12, 120, 1200)));
        assert_eq!(all[7], ("quic_initials", (13, 130, 1300)));
        assert_eq!(all[8], ("fragments", (5, 50, 500)));
        assert_eq!(all[9], ("fragments_held", (9, 90, 900)));
        assert_eq!(all[18], ("alert_store", (7, 70, 700)));
        let unique: std::collections::BTreeSet<&str> = TABLES.iter().copied().collect();
        assert_eq!(unique.len(), TABLES.len());
        assert_eq!(tables(&w, &r, &o, None).len(), TABLES.len() - 1);
    }
}
