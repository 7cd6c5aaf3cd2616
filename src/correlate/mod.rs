//! The cross-flow stage: what can only be seen across flows, after the workers' streams are
//! merged into one order.
//!
//! Input is the ordered stream of [`crate::event::Event`]s the workers produce (flow ends,
//! volume reports, DNS messages, per-flow findings); output is findings and incidents for
//! the sinks in [`crate::output`], which only format and deliver. Nothing here reads a
//! socket or a file other than the state snapshot, so the stage can be tested by feeding it
//! events, and fed from elsewhere than the in-process merge.
//!
//! - [`leak`]: per-host and per-group windows (data-leak totals), asymmetry, upload
//!   baselines, service outliers;
//! - [`dns`]: DNS transactions, per-(client, registered domain) tunnel windows, NXDOMAIN
//!   bursts, and the (client, IP) → name map;
//! - [`dns_pairs`]: the bounded table of (client, domain) windows;
//! - [`cloud`]: uploads per (host, cloud service), named from the destination's name;
//! - [`long_conn`]: connections open unusually long, judged from the workers' age reports;
//! - [`incident`]: every finding joined into incidents, one per exfiltration;
//! - [`snapshot`]: the stage's complete state as bytes, for another correlator to resume
//!   from ([`Correlator::snapshot`], [`Correlator::restore`]).

pub mod cloud;
pub mod dns;
pub mod dns_pairs;
pub mod incident;
pub mod leak;
pub mod long_conn;
pub mod snapshot;

use crate::config::Config;
use crate::correlate::dns::{AnalyseStats, DnsAlert, DnsAnalyser, DnsOutput, DnsRecord};
use crate::correlate::leak::{LeakAlert, LeakAnalyser, LeakStats, SnapshotError};
use crate::decode::Addr;
use crate::detect::{Alert, Detector};
use crate::dns::DnsEvent;
use crate::event::{end_volume, Event, Volume};
use crate::flow::FlowRecord;
use crate::slice::recorder::SliceRequester;
use cloud::{CloudDetector, CloudStats};
use incident::{IncidentBook, IncidentStats, IncidentUpdate};
use long_conn::LongConnections;
pub use snapshot::CorrelateSnapshotError;
use std::io;
use std::path::PathBuf;

/// Names of the stage's bounded tables, in the order of [`CorrelateStats::tables`] (metric
/// labels): the DNS analyser's, the leak stage's, then the cloud detector's.
pub const TABLES: [&str; 8] = [
    dns::DNS_TABLES[0],
    dns::DNS_TABLES[1],
    dns::DNS_TABLES[2],
    dns::DNS_TABLES[3],
    leak::LEAK_TABLES[0],
    leak::LEAK_TABLES[1],
    leak::LEAK_TABLES[2],
    cloud::CLOUD_TABLE,
];

/// File name of the state snapshot inside `state.dir`: the whole stage
/// ([`Correlator::snapshot`]), behind a header naming the cloud catalogue and window it was
/// taken with
/// (see [`Correlator::save_state`]).
pub const STATE_FILE: &str = "outflow-state.snap";

/// The leak stage's JSON snapshot that earlier versions kept in `state.dir` (24 h totals,
/// host windows, baselines, service statistics). Read once when there is no
/// [`STATE_FILE`], so an upgrade keeps its history; removed by the first full snapshot.
pub const LEGACY_STATE_FILE: &str = "outflow-state.json";

/// How far before the resumed state's clock an input may start without a warning: the
/// workers' events reach the stage up to about this much out of order.
const REWIND_SLACK_NS: u64 = 60_000_000_000;

/// First bytes of [`STATE_FILE`]: the file is recognised as a state file before anything
/// in it is trusted.
const STATE_MAGIC: &[u8; 8] = b"OUTFLOWS";

/// A detector's finding as the stage passes it on: a per-flow alert raised on a worker, a
/// cross-flow alert, or a DNS alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// Raised inline on a worker (large outbound transfer), named here.
    Flow(Box<Alert>),
    /// Raised by the leak stage (data leak, asymmetry, baseline, service outlier).
    Leak(LeakAlert),
    /// Raised by the DNS analyser (tunnel, NXDOMAIN burst).
    Dns(DnsAlert),
}

impl Finding {
    /// The detector that raised it.
    pub fn detector(&self) -> Detector {
        match self {
            Finding::Flow(a) => a.detector,
            Finding::Leak(a) => a.detector,
            Finding::Dns(a) => a.detector,
        }
    }

    /// Packet time it fired at (ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Finding::Flow(a) => a.ts_ns,
            Finding::Leak(a) => a.ts_ns,
            Finding::Dns(a) => a.ts_ns,
        }
    }

    /// Its stable id.
    pub fn id(&self) -> &str {
        match self {
            Finding::Flow(a) => &a.id,
            Finding::Leak(a) => &a.id,
            Finding::Dns(a) => &a.id,
        }
    }
}

/// What the stage hands to the outputs, in the order it was produced.
#[derive(Debug)]
pub enum Output {
    /// A detector's finding.
    Finding(Finding),
    /// A flow record, passed on once the stage has taken its last volume.
    Flow(FlowRecord),
    /// A DNS transaction record.
    DnsRecord(DnsRecord),
    /// A DNS message the stage is done with: its box can go back to the workers.
    DnsDone(Box<DnsEvent>),
    /// An incident opened, escalated or closed.
    Incident(IncidentUpdate),
}

/// The stage's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorrelateStats {
    /// Flow findings dropped because the destination's name is allowlisted
    /// (`allow.dst_domains`).
    pub allowlisted_alerts: u64,
    /// DNS analyser counters (queries, suspicious, NXDOMAIN, table drops...).
    pub dns: AnalyseStats,
    /// Leak stage counters (volumes, threshold events, evictions...).
    pub leak: LeakStats,
    /// (entries, capacity, evictions) of each table named in [`TABLES`].
    pub tables: [(u64, u64, u64); TABLES.len()],
    /// Incident counters.
    pub incidents: IncidentStats,
    /// Cloud-upload detector counters.
    pub cloud: CloudStats,
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
    /// Another process holds the directory: two writing one state would each resume and
    /// overwrite what the other learnt.
    #[error(
        "state.dir {}: in use by another outflow process; give each sensor, and each replay \
         with --state-dir, a directory of its own",
        dir.display()
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
}

/// The state snapshot could not be written (the run goes on; the next snapshot tries again).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The state could not be encoded (larger than [`snapshot::MAX_STATE_BYTES`]...).
    #[error("cannot encode the state snapshot: {0}")]
    Encode(#[from] CorrelateSnapshotError),
    /// Writing, syncing or renaming the file failed.
    #[error("cannot write the state snapshot {}: {source}", path.display())]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Opens `dir` and takes an exclusive `flock` on it without waiting. Held while the
/// returned file is open. (`File::try_lock` does this from Rust 1.89; the crate builds with
/// 1.85, Debian's.)
#[allow(unsafe_code)]
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, StateError> {
    use std::os::fd::AsRawFd;
    let unwritable = |error| StateError::DirUnwritable {
        dir: dir.to_path_buf(),
        user: crate::capture::live::effective_user(),
        error,
    };
    let f = std::fs::File::open(dir).map_err(unwritable)?;
    // SAFETY: flock takes a descriptor this function owns (open for the call) and two
    // flags; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            StateError::InUse {
                dir: dir.to_path_buf(),
            }
        } else {
            unwritable(e)
        });
    }
    Ok(f)
}

/// Writes the file `path` whole or not at all: into a temporary file beside it (named by
/// this process, so two processes pointed at one directory never write the same one),
/// synced, renamed over `path`, and the directory synced. On an error the temporary file
/// is removed (a snapshot can be hundreds of MB, on a disk that may be what failed) and
/// `path` is as it was. `io` makes the caller's error of an I/O error.
pub(crate) fn write_atomically<E>(
    path: &std::path::Path,
    io: impl Fn(io::Error) -> E,
    write: impl FnOnce(io::BufWriter<std::fs::File>) -> Result<io::BufWriter<std::fs::File>, E>,
) -> Result<(), E> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .map_err(&io)
        .and_then(|f| write(io::BufWriter::with_capacity(1 << 16, f)))
        .and_then(|w| w.into_inner().map_err(|e| io(e.into_error())))
        .and_then(|f| f.sync_all().map_err(&io))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(&io));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    written
}

/// Renames a snapshot `path` that must not be resumed from aside (`*.<label>-<unix
/// time>`), with a log line saying why and what follows (`then`): the file stays for a
/// person to look at.
fn set_aside(path: &std::path::Path, label: &str, why: &str, then: &str) {
    let aside = path.with_extension(format!(
        "{label}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    let moved = std::fs::rename(path, &aside).is_ok();
    tracing::warn!(
        "state snapshot {} not used ({why}); {} and {then}",
        path.display(),
        if moved {
            format!("set aside as {}", aside.display())
        } else {
            "could not set it aside".to_string()
        }
    );
}

/// Every counter of the stage and its parts, kept across [`Correlator::resume`].
type Counters = (
    CorrelateStats,
    Option<AnalyseStats>,
    Option<LeakStats>,
    Option<CloudStats>,
    Option<long_conn::LongStats>,
    IncidentStats,
);

/// The cross-flow stage. Feed it the merged event stream with [`Correlator::on_event`];
/// it calls back with what the outputs should write. It reads no clock: time is the
/// events' packet time.
pub struct Correlator {
    dns: Option<DnsAnalyser>,
    leak: Option<LeakAnalyser>,
    cloud: Option<CloudDetector>,
    long: Option<LongConnections>,
    /// Where to ask the workers for slices of flows this stage flags at their end
    /// (per-flow asymmetry, service outlier), when slices are written.
    slices: Option<SliceRequester>,
    /// Where long-window state is persisted (`state.dir`), if anywhere.
    state: Option<PathBuf>,
    incidents: IncidentBook,
    /// Latest packet time seen (ns).
    clock_ns: u64,
    stats: CorrelateStats,
    /// A sensor that publishes its events to a bus (see [`Correlator::local`]).
    local_only: bool,
    /// The packet clock of the state resumed from `state.dir`, until the first event is
    /// compared with it.
    resumed_clock: Option<u64>,
    /// The open `state.dir`, locked (`flock`) for this stage's life.
    state_lock: Option<std::fs::File>,
}

impl Correlator {
    /// A stage configured by `cfg` (`None`: no analysers, events pass through). `records`:
    /// build DNS transaction records (someone writes or collects them).
    pub fn new(cfg: Option<&Config>, records: bool, slices: Option<SliceRequester>) -> Self {
        let mut dns = cfg
            .filter(|c| c.dns.enabled)
            .map(|c| DnsAnalyser::new(&c.dns));
        if let Some(d) = dns.as_mut() {
            d.set_records(records);
        }
        Correlator {
            dns,
            leak: cfg.map(LeakAnalyser::new),
            cloud: cfg.and_then(|c| CloudDetector::new(&c.cloud, &c.allow.cloud_services)),
            long: cfg.and_then(|c| LongConnections::new(&c.detect.long_connection)),
            slices,
            state: cfg
                .filter(|c| !c.state.dir.is_empty())
                .map(|c| std::path::Path::new(&c.state.dir).join(STATE_FILE)),
            incidents: IncidentBook::new(&cfg.map(|c| c.incident.clone()).unwrap_or_default()),
            clock_ns: 0,
            stats: CorrelateStats::default(),
            local_only: false,
            resumed_clock: None,
            state_lock: None,
        }
    }

    /// The stage of a sensor whose cross-flow detection runs on correlators fed from the
    /// bus: per-flow findings pass straight out (the alert at the crossing packet, never
    /// waiting for the bus), allowlisted and named from the DNS answers seen here; DNS
    /// transactions are still paired into records. Volume windows, DNS tunnel windows,
    /// cloud uploads, long connections and incidents are the correlators' (here they would
    /// see one sensor's share and announce what the correlator announces again).
    pub fn local(cfg: &Config, records: bool) -> Self {
        let mut c = Correlator::new(Some(cfg), records, None);
        c.cloud = None;
        c.long = None;
        c.state = None;
        c.local_only = true;
        c
    }

    /// New thresholds and allowlists (SIGHUP); windows and history are kept.
    pub fn reconfigure(&mut self, cfg: &Config) {
        if let Some(d) = self.dns.as_mut() {
            d.reconfigure(&cfg.dns);
        }
        if let Some(l) = self.leak.as_mut() {
            l.reconfigure(cfg);
        }
        // The windows are per service index of the catalogue in force: a new catalogue (or
        // window length) starts them again.
        let old = self.cloud.take();
        self.cloud = CloudDetector::new(&cfg.cloud, &cfg.allow.cloud_services);
        if let (Some(new), Some(old)) = (self.cloud.as_mut(), old) {
            new.keep_windows_of(old);
        }
        match self.long.as_mut() {
            Some(l) => l.reconfigure(&cfg.detect.long_connection),
            None => self.long = LongConnections::new(&cfg.detect.long_connection),
        }
        if !cfg.detect.long_connection.enabled || self.local_only {
            self.long = None;
        }
        if self.local_only {
            // A sensor on a bus: the correlators own these (see `Correlator::local`).
            self.cloud = None;
        }
        self.incidents.reconfigure(&cfg.incident);
    }

    /// The counters, with the tables' current occupancy.
    pub fn stats(&mut self) -> CorrelateStats {
        self.refresh();
        self.stats
    }

    fn refresh(&mut self) {
        self.stats.incidents = self.incidents.stats;
        if let Some(d) = &self.dns {
            self.stats.dns = d.stats;
            for (t, v) in self.stats.tables.iter_mut().zip(d.tables()) {
                *t = v;
            }
        }
        if let Some(l) = &self.leak {
            self.stats.leak = l.stats;
            let skip = dns::DNS_TABLES.len();
            for (t, v) in self.stats.tables.iter_mut().skip(skip).zip(l.tables()) {
                *t = v;
            }
        }
        if let Some(c) = &self.cloud {
            self.stats.cloud = c.stats;
            if let Some(t) = self.stats.tables.last_mut() {
                *t = c.table();
            }
        }
    }

    /// Loads persisted state at start: the whole stage as the last run left it (windows,
    /// baselines, open incidents, cloud windows, long-connection statistics), resumed with
    /// [`Correlator::resume`]. A snapshot that was read but cannot be used (corrupt, or
    /// another version) is renamed aside with a log line and the run starts fresh. A
    /// snapshot that cannot be read at all (permissions, a directory in its place, an I/O
    /// error) is an error: the history in it may be intact, and setting it aside would
    /// throw it away for what is a deployment mistake, so the sensor refuses to start.
    /// Without a snapshot, the leak stage's file of earlier versions
    /// ([`LEGACY_STATE_FILE`]) is read if present.
    pub fn load_state(&mut self) -> Result<(), StateError> {
        let Some(path) = self.state.clone() else {
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
            // One process per directory, for as long as this stage lives; the kernel lets
            // go when the process ends, however it ends.
            self.state_lock = Some(lock_dir(dir)?);
            // Temporary files of writes a crash cut short ([`write_atomically`]: one name
            // per process, so nothing else would ever replace them).
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("outflow-state.tmp")
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let unreadable = |path: PathBuf, error| StateError::Unreadable {
            path,
            user: crate::capture::live::effective_user(),
            error,
        };
        match std::fs::read(&path) {
            Ok(bytes) => match self.resume(&bytes) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    open_incidents = self.incidents.stats.open,
                    "loaded state snapshot"
                ),
                Err(e) => set_aside(&path, "corrupt", &e.to_string(), "starting without history"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let legacy = path.with_file_name(LEGACY_STATE_FILE);
                let Some(l) = self.leak.as_mut() else {
                    return Ok(());
                };
                match l.load(&legacy) {
                    Ok(true) => tracing::info!(
                        path = %legacy.display(),
                        "loaded the leak stage's state from an earlier version's snapshot; \
                         the next snapshot replaces it"
                    ),
                    Ok(false) => tracing::info!(path = %path.display(), "no state snapshot yet"),
                    Err(SnapshotError::Io { source, .. }) => {
                        return Err(unreadable(legacy, source))
                    }
                    Err(e @ SnapshotError::Invalid { .. }) => {
                        set_aside(
                            &legacy,
                            "corrupt",
                            &e.to_string(),
                            "starting without history",
                        );
                        *l = LeakAnalyser::new_like(l);
                    }
                }
            }
            Err(error) => return Err(unreadable(path, error)),
        }
        Ok(())
    }

    /// Writes the state snapshot now (the caller decides when: live, every
    /// `state.snapshot_interval`, and at the end). No-op without `state.dir`.
    ///
    /// The file: [`STATE_MAGIC`], the cloud windows' layout ([`CloudDetector::layout`],
    /// postcard: a window names its service by index, so another catalogue or window
    /// length drops the cloud windows at the next start rather than misattribute them), then
    /// [`Correlator::snapshot`]. Written as a temporary file, synced, renamed over the old
    /// one and the directory synced: a crash leaves the old snapshot or the new, never half
    /// of one.
    pub fn save_state(&self) -> Result<(), SaveError> {
        let Some(path) = self.state.as_ref() else {
            return Ok(());
        };
        let io = |source| SaveError::Io {
            path: path.clone(),
            source,
        };
        let catalogue = self.cloud.as_ref().map(CloudDetector::layout);
        let started = std::time::Instant::now();
        write_atomically(path, io, |mut w| {
            std::io::Write::write_all(&mut w, STATE_MAGIC).map_err(io)?;
            let w = postcard::to_io(&catalogue, w)
                .map_err(|e| SaveError::Encode(CorrelateSnapshotError::Encode(e)))?;
            match self.snapshot_to(w) {
                Ok(w) => Ok(w),
                // The file's error, passed through the compressor.
                Err(CorrelateSnapshotError::Compression(e)) => Err(io(e)),
                Err(e) => Err(SaveError::Encode(e)),
            }
        })?;
        if let Some(dir) = path.parent() {
            // The earlier version's file is in this one now.
            let _ = std::fs::remove_file(dir.join(LEGACY_STATE_FILE));
        }
        tracing::debug!(
            path = %path.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "state snapshot written"
        );
        Ok(())
    }

    /// Continues from a state file written by [`Correlator::save_state`], possibly by a run
    /// with another config: a part this stage no longer runs is dropped, one it now runs
    /// starts empty, cloud windows of another catalogue are dropped. The counters stay this
    /// process's (they count what it saw). Flows of the previous process are forgotten
    /// (flow ids start again in each process; a graceful stop has already ended them all,
    /// a crash leaves them to be counted as ended). On error the stage is unchanged.
    pub fn resume(&mut self, file: &[u8]) -> Result<(), CorrelateSnapshotError> {
        let rest = file
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or_else(|| CorrelateSnapshotError::Mismatch("not an outflow state file".into()))?;
        let (catalogue, snapshot) = postcard::take_from_bytes::<Option<(Vec<String>, u64)>>(rest)
            .map_err(CorrelateSnapshotError::Decode)?;
        let same_catalogue = catalogue == self.cloud.as_ref().map(CloudDetector::layout);
        if !same_catalogue && self.cloud.is_some() {
            tracing::info!(
                "the cloud catalogue or window changed since the state snapshot: its cloud \
                 windows are dropped"
            );
        }
        let counters = self.counters();
        self.restore_fit(
            snapshot,
            snapshot::Fit::Resume {
                cloud: same_catalogue,
            },
        )?;
        self.put_counters(counters);
        self.resumed_clock = Some(self.clock_ns).filter(|&c| c > 0);
        self.incidents.forget_flows();
        // Held news waits this process's `incident.hold`.
        self.incidents.requeue_held();
        if let Some(l) = self.long.as_mut() {
            l.forget_flows();
        }
        if let Some(c) = self.cloud.as_mut() {
            c.forget_flows();
        }
        self.refresh();
        Ok(())
    }

    fn counters(&self) -> Counters {
        (
            self.stats,
            self.dns.as_ref().map(|d| d.stats),
            self.leak.as_ref().map(|l| l.stats),
            self.cloud.as_ref().map(|c| c.stats),
            self.long.as_ref().map(|l| l.stats),
            self.incidents.stats,
        )
    }

    fn put_counters(&mut self, (stage, dns, leak, cloud, long, incidents): Counters) {
        self.stats = stage;
        if let (Some(d), Some(s)) = (self.dns.as_mut(), dns) {
            d.stats = s;
            d.counters_set();
        }
        if let (Some(l), Some(s)) = (self.leak.as_mut(), leak) {
            l.stats = s;
        }
        if let (Some(c), Some(s)) = (self.cloud.as_mut(), cloud) {
            c.stats = s;
        }
        if let (Some(l), Some(s)) = (self.long.as_mut(), long) {
            l.stats = s;
        }
        let open = self.incidents.stats.open;
        self.incidents.stats = IncidentStats { open, ..incidents };
    }

    /// Takes one event of the merged stream.
    pub fn on_event(&mut self, ev: Event, out: &mut impl FnMut(Output)) {
        let ts = match &ev {
            Event::Dns(d) => d.ts_ns,
            Event::Alert(a) => a.ts_ns,
            Event::Flow(r) => r.last_ns,
            Event::Volume(v) | Event::Age(v) => v.ts_ns,
            Event::Name(n) => n.ts_ns,
        };
        if let Some(was) = self.resumed_clock.take() {
            if ts.saturating_add(REWIND_SLACK_NS) < was {
                tracing::warn!(
                    "the input starts {:.0} s before the time the state in state.dir reached: \
                     replaying a capture again with the same state directory counts it twice \
                     (use another --state-dir, or none)",
                    (was - ts) as f64 / 1e9
                );
            }
        }
        self.clock_ns = self.clock_ns.max(ts);
        self.advance(ts, out);
        match ev {
            Event::Volume(v) => {
                self.incidents.on_volume(&v);
                self.volume(&v, out);
            }
            Event::Age(v) => {
                let mut found = Vec::new();
                if let Some(l) = self.long.as_mut() {
                    l.on_age(&v, &mut |a| found.push(a));
                }
                for a in found {
                    self.leak_finding(a, out);
                }
            }
            Event::Dns(d) => {
                let mut outs = Vec::new();
                if let Some(a) = self.dns.as_mut() {
                    a.on_event(&d, &mut |o| outs.push(o));
                }
                for o in outs {
                    self.dns_output(o, out);
                }
                out(Output::DnsDone(d));
            }
            Event::Alert(mut a) => {
                // The name in force when the connection started: a slow upload may alert long
                // after the answer's TTL ran out.
                if let Some(d) = self.dns.as_ref() {
                    let named = d.fqdn_source(a.src, a.dst, a.flow_start_ns);
                    a.dst_fqdn = named.map(|(n, _)| n.to_owned());
                    a.dst_fqdn_source = named.map(|(_, s)| s.name());
                }
                if a.dst_fqdn.is_none() {
                    // Its own SNI / Host (a name event of the same flow may sort after the
                    // alert when both come from one packet).
                    if let Some((n, s)) = a.names.as_ref().and_then(|n| n.name()) {
                        a.dst_fqdn = Some(String::from_utf8_lossy(n).to_ascii_lowercase());
                        a.dst_fqdn_source = Some(s.name());
                    }
                }
                if self
                    .leak
                    .as_ref()
                    .is_some_and(|l| l.allowed(a.dst_fqdn.as_deref()))
                {
                    // allow.dst_domains: counted, never alerted.
                    self.stats.allowlisted_alerts += 1;
                    return;
                }
                self.found(Finding::Flow(a), out);
            }
            Event::Name(n) => self.learn_name(&n),
            Event::Flow(rec) => {
                // The flow's last volume report rides on its final record.
                let end = end_volume(&rec);
                self.incidents.on_flow(&rec);
                if let Some(l) = self.long.as_mut() {
                    l.on_flow(&rec);
                }
                out(Output::Flow(rec));
                if let Some(v) = end {
                    self.volume(&v, out);
                }
            }
        }
    }

    /// A flow's SNI / Host: the name (client, server) goes by when no DNS answer named it.
    fn learn_name(&mut self, n: &crate::proto::FlowName) {
        if let Some(d) = self.dns.as_mut() {
            d.learn(n.client, n.server, n.name.as_bytes(), n.ts_ns, n.source);
        }
    }

    /// Moves the clock to `now_ns` without an event (a live sensor on a quiet link: the
    /// workers' progress), if that is later than any event seen.
    pub fn tick(&mut self, now_ns: u64, out: &mut impl FnMut(Output)) {
        if now_ns > self.clock_ns {
            self.clock_ns = now_ns;
            self.advance(now_ns, out);
        }
    }

    /// End of input. With `state.dir` the whole stage is persisted as it is and continues
    /// in the next run (a restart, or the next file of a series): open windows, pending DNS
    /// transactions (the next file may hold their answers) and open incidents are neither
    /// closed nor reported here. Otherwise — or when the snapshot cannot be written, so
    /// that nothing is lost — windows close and what they hold is reported, pending DNS
    /// transactions are written out and every open incident closes; the older snapshot
    /// still in `state.dir` is then set aside, or the next start would resume from it and
    /// report again what was just closed.
    pub fn finish(&mut self, out: &mut impl FnMut(Output)) -> Result<(), SaveError> {
        self.refresh();
        let mut saved = Ok(());
        if let Some(path) = self.state.clone() {
            saved = self.save_state();
            if saved.is_ok() {
                self.refresh();
                return saved;
            }
            if path.exists() {
                set_aside(
                    &path,
                    "stale",
                    "older than what this run closed at its end",
                    "the next start begins without history",
                );
            }
        }
        self.incidents.closing();
        if let Some(l) = self.leak.as_mut() {
            let dns = self.dns.as_ref();
            let now = u64::MAX / 2;
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), now))
                    .map(str::to_owned)
            };
            let mut found = Vec::new();
            l.finish(&names, &mut |a| found.push(a));
            for a in found {
                self.leak_finding(a, out);
            }
        }
        // Closing the last windows may still evict groups.
        self.refresh();
        self.flush_dns(out);
        self.incidents
            .finish(self.clock_ns, &mut |u| out(Output::Incident(u)));
        self.refresh();
        saved
    }

    /// Writes out the pending DNS transactions (as unanswered).
    fn flush_dns(&mut self, out: &mut impl FnMut(Output)) {
        let mut outs = Vec::new();
        if let Some(a) = self.dns.as_mut() {
            a.finish(&mut |o| outs.push(o));
        }
        for o in outs {
            self.dns_output(o, out);
        }
    }

    /// A finding: to the outputs, then into its incident.
    fn found(&mut self, f: Finding, out: &mut impl FnMut(Output)) {
        if self.local_only {
            out(Output::Finding(f));
            return;
        }
        let mut updates = Vec::new();
        self.incidents.on_finding(&f, &mut |u| updates.push(u));
        out(Output::Finding(f));
        for u in updates {
            out(Output::Incident(u));
        }
    }

    fn dns_output(&mut self, o: DnsOutput, out: &mut impl FnMut(Output)) {
        match o {
            // A sensor on a bus: the correlator judges the (client, domain) windows over
            // every sensor's queries.
            DnsOutput::Alert(_) if self.local_only => {}
            DnsOutput::Alert(a) => self.found(Finding::Dns(a), out),
            DnsOutput::Record(r) => out(Output::DnsRecord(r)),
        }
    }

    /// Moves the clocks of the leak stage (closes windows that ended) and of the incidents
    /// (held news, idle incidents). The windows go first: a window that ended before
    /// `ts_ns` reports findings stamped at its end, and the book takes each at that time,
    /// before it closes as idle by `ts_ns` the incident the finding belongs to (else a
    /// 5-minute window closed by the next packet, minutes after an upload's last flow
    /// ended, opened a second incident, announced after the first one's close).
    fn advance(&mut self, ts_ns: u64, out: &mut impl FnMut(Output)) {
        let mut found = Vec::new();
        if let Some(l) = self.leak.as_mut() {
            let dns = self.dns.as_ref();
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), ts_ns))
                    .map(str::to_owned)
            };
            l.advance(ts_ns, &names, &mut |a| found.push(a));
        }
        // A window that closed by now fires at its own, earlier time: the incidents move to
        // that time first, so after a jump of the packet clock (a quiet link, a restart) the
        // finding joins the incident open then, and an incident idle before it closes
        // before it, as they would have with the clock moving smoothly.
        for a in found {
            self.incidents
                .advance(a.ts_ns.min(ts_ns), &mut |u| out(Output::Incident(u)));
            self.leak_finding(a, out);
        }
        self.incidents
            .advance(ts_ns, &mut |u| out(Output::Incident(u)));
    }

    fn volume(&mut self, v: &Volume, out: &mut impl FnMut(Output)) {
        if self.local_only {
            return;
        }
        let mut found = Vec::new();
        if let Some(l) = self.leak.as_mut() {
            let dns = self.dns.as_ref();
            let names = |s: Addr, d: Addr, v6: bool| {
                dns.and_then(|a| a.fqdn(s.to_ip(v6), d.to_ip(v6), v.ts_ns))
                    .map(str::to_owned)
            };
            // The name in force when the flow started (as for flow alerts): a connection
            // outlives its DNS answer's TTL.
            let fqdn = dns
                .and_then(|a| {
                    let at = if v.flow_start_ns > 0 {
                        v.flow_start_ns
                    } else {
                        v.ts_ns
                    };
                    a.fqdn(v.src.to_ip(v.ipv6), v.dst.to_ip(v.ipv6), at)
                })
                .map(str::to_owned);
            l.on_volume(v, fqdn.as_deref(), &names, &mut |a| found.push(a));
            if let (Some(c), Some(name)) = (self.cloud.as_mut(), fqdn.as_deref()) {
                // Outbound bytes of a home host only: the same service downloading is not
                // an upload.
                c.on_volume(
                    v.ts_ns,
                    v.flow_id,
                    v.src.to_ip(v.ipv6),
                    v.dst.to_ip(v.ipv6),
                    name,
                    v.out_bytes,
                    v.in_bytes,
                    &mut |a| found.push(a),
                );
            }
        }
        for a in found {
            self.leak_finding(a, out);
        }
    }

    /// A per-flow finding raised at the flow's end: the worker holding the flow's packets
    /// cuts its slice from its ring.
    fn leak_finding(&mut self, mut a: LeakAlert, out: &mut impl FnMut(Output)) {
        if let (Some(req), Some(flow_id), Some(src), Some(dst)) =
            (&self.slices, a.flow_id, a.src, a.dst)
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
        self.found(Finding::Leak(a), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn addr(s: &str) -> Addr {
        match s.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => Addr::v4(v4.octets()),
            _ => unreachable!(),
        }
    }

    fn upload_alert(ts: u64, out: u64) -> Alert {
        crate::detect::test_alert(9, "198.51.100.7", 0, ts, out, T0)
    }

    fn volume(ts: u64, out_total: u64, out_bytes: u64, end: bool) -> Volume {
        Volume {
            ts_ns: ts,
            flow_id: 9,
            ipv6: false,
            src: addr("10.0.0.5"),
            dst: addr("198.51.100.7"),
            dport: 443,
            sport: 40000,
            proto: 6,
            home_is_orig: true,
            out_total,
            in_total: 1_000,
            out_bytes,
            in_bytes: 0,
            end,
            flow_start_ns: 0,
        }
    }

    /// A 150 MB upload fed by hand as the workers would report it: a volume report, the
    /// large-transfer finding, the flow's end (its last volume report), a quiet two minutes
    /// and the end of input. Returns the stage and everything it produced.
    fn feed_upload() -> (Correlator, Vec<Output>) {
        feed_upload_to(
            Correlator::new(Some(&Config::default()), false, None),
            T0 + 120 * S,
        )
    }

    /// [`feed_upload`] into `c`, the link quiet until `quiet_until` (ns).
    fn feed_upload_to(mut c: Correlator, quiet_until: u64) -> (Correlator, Vec<Output>) {
        let mut out = Vec::new();
        c.on_event(
            Event::Volume(volume(T0 + S / 2, 50_000_000, 50_000_000, false)),
            &mut |o| out.push(o),
        );
        assert!(out.is_empty(), "a volume report alone says nothing");
        c.on_event(
            Event::Alert(Box::new(upload_alert(T0 + S, 100_000_000))),
            &mut |o| out.push(o),
        );
        c.on_event(
            Event::Volume(volume(T0 + 2 * S, 150_000_000, 100_000_000, true)),
            &mut |o| out.push(o),
        );
        c.tick(quiet_until, &mut |o| out.push(o));
        c.finish(&mut |o| out.push(o)).unwrap();
        (c, out)
    }

    /// The stage fed events by hand, as the output thread (or a bus) would: the finding
    /// passes through and opens an incident; the flow's end (its last volume report) makes
    /// the leak stage judge it asymmetric, news held (`incident.hold`, 1 h) past the quiet
    /// two minutes; the end of input closes the incident with it and the data leak.
    #[test]
    fn events_in_findings_and_incidents_out() {
        let (mut c, out) = feed_upload();
        let seen: Vec<String> = out
            .iter()
            .map(|o| match o {
                Output::Finding(f) => f.detector().name().to_string(),
                Output::Incident(u) => format!("incident {}", u.update.name()),
                Output::Flow(_) => "flow".into(),
                Output::DnsRecord(_) => "dns record".into(),
                Output::DnsDone(_) => "dns done".into(),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "large_outbound_transfer",
                "incident opened",
                "asymmetric_upload",
                "asymmetric_upload",
                "data_leak",
                "incident closed"
            ],
            "{seen:?}"
        );
        let Some(Output::Incident(closed)) = out.last() else {
            unreachable!()
        };
        assert_eq!(closed.incident.totals().0, 150_000_000);
        assert_eq!(closed.incident.open_flows(), 0);
        assert_eq!(closed.incident.reasons.len(), 3);
        let st = c.stats();
        assert_eq!(st.incidents.updates, [1, 0, 1]);
        assert_eq!(st.leak.volumes, 2);
    }

    /// An upgrade keeps the leak stage's history: with no snapshot in `state.dir`, the JSON
    /// file of earlier versions is read; the first snapshot replaces it, and holds the
    /// same leak state.
    #[test]
    fn the_earlier_versions_leak_state_is_read_once_then_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let json = |c: &Correlator, name: &str| {
            let p = dir.path().join(name);
            c.leak
                .as_ref()
                .map(|l| l.save(&p).map_err(|e| e.to_string()));
            std::fs::read(&p).unwrap_or_default()
        };
        let mut old = Correlator::new(Some(&Config::default()), false, None);
        old.on_event(
            Event::Volume(volume(T0 + S / 2, 50_000_000, 50_000_000, false)),
            &mut |_| {},
        );
        let before = json(&old, "before.json");
        assert!(before.len() > 100);
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(state.join(LEGACY_STATE_FILE), &before).unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = Config::default();
        cfg.state.dir = state.display().to_string();

        let mut c = Correlator::new(Some(&cfg), false, None);
        c.load_state().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json(&c, "migrated.json"), before);
        c.save_state().unwrap_or_else(|e| panic!("{e}"));
        assert!(!state.join(LEGACY_STATE_FILE).exists());
        assert!(state.join(STATE_FILE).exists());

        // One stage per directory: a second is refused while the first lives.
        let second = Correlator::new(Some(&cfg), false, None).load_state();
        assert!(
            matches!(second, Err(StateError::InUse { ref dir }) if dir == &state),
            "{second:?}"
        );
        drop(c);

        let mut again = Correlator::new(Some(&cfg), false, None);
        again.load_state().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json(&again, "resumed.json"), before);
    }

    /// The snapshot cannot be written at the end (the directory went away): the error is
    /// returned, and the run closes what it holds as without `state.dir`, so the incident
    /// is reported rather than lost with the state.
    #[test]
    fn a_snapshot_that_cannot_be_written_at_the_end_closes_instead() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("state");
        let mut cfg = Config::default();
        cfg.state.dir = state.display().to_string();
        let mut c = Correlator::new(Some(&cfg), false, None);
        c.load_state().unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&state, b"").unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        c.on_event(
            Event::Alert(Box::new(upload_alert(T0 + S, 100_000_000))),
            &mut |o| out.push(o),
        );
        let saved = c.finish(&mut |o| out.push(o));
        assert!(matches!(saved, Err(SaveError::Io { .. })), "{saved:?}");
        let updates: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Output::Incident(u) => Some(u.update.name()),
                _ => None,
            })
            .collect();
        assert_eq!(updates, ["opened", "closed"]);
        assert_eq!(
            std::fs::read_dir(dir.path()).map(Iterator::count).ok(),
            Some(1)
        );
        // With an older snapshot in place: it is set aside, so the next start does not
        // resume what this run closed and report it again.
        let state = dir.path().join("again");
        cfg.state.dir = state.display().to_string();
        let mut c = Correlator::new(Some(&cfg), false, None);
        c.load_state().unwrap_or_else(|e| panic!("{e}"));
        c.save_state().unwrap_or_else(|e| panic!("{e}"));
        // The next write's temporary file cannot be created.
        let tmp = state
            .join(STATE_FILE)
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::create_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        c.on_event(
            Event::Alert(Box::new(upload_alert(T0 + S, 100_000_000))),
            &mut |o| out.push(o),
        );
        assert!(c.finish(&mut |o| out.push(o)).is_err());
        assert!(!state.join(STATE_FILE).exists());
        let names: Vec<String> = std::fs::read_dir(&state)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            names.iter().any(|n| n.starts_with("outflow-state.stale-")),
            "{names:?}"
        );
        // A leftover temporary file is removed at the next start.
        drop(c);
        let _ = std::fs::remove_dir(&tmp);
        std::fs::write(&tmp, b"half").unwrap_or_else(|e| panic!("{e}"));
        Correlator::new(Some(&cfg), false, None)
            .load_state()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!tmp.exists());
    }

    /// A snapshot taken while a flow was open (the periodic one, before a crash): after the
    /// restart that flow counts as ended, and a flow of the new process that got the same
    /// id is a flow of its own in the incident, its bytes added, not merged into the old
    /// one's.
    #[test]
    fn flows_of_the_previous_process_are_not_matched_by_id() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = Config::default();
        cfg.state.dir = dir.path().display().to_string();
        let mut old = Correlator::new(Some(&cfg), false, None);
        let mut out = Vec::new();
        old.on_event(
            Event::Volume(volume(T0 + S / 2, 50_000_000, 50_000_000, false)),
            &mut |o| out.push(o),
        );
        old.on_event(
            Event::Alert(Box::new(upload_alert(T0 + S, 100_000_000))),
            &mut |o| out.push(o),
        );
        old.save_state().unwrap_or_else(|e| panic!("{e}"));

        let mut new = Correlator::new(Some(&cfg), false, None);
        new.load_state().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(new.stats().incidents.open, 1);
        let mut out = Vec::new();
        // Flow 9 of the new process: 10 MB to the same destination, ended.
        new.on_event(
            Event::Volume(volume(T0 + 10 * S, 10_000_000, 10_000_000, true)),
            &mut |o| out.push(o),
        );
        new.state = None;
        new.finish(&mut |o| out.push(o))
            .unwrap_or_else(|e| panic!("{e}"));
        let closed = out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Incident(u) => Some(&u.incident),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no incident line"));
        assert_eq!(closed.flows.len(), 2);
        assert!(closed.flows.iter().all(|f| f.flow_id == 9 && !f.open));
        assert_eq!(closed.open_flows(), 0);
        assert_eq!(
            closed.flows.iter().map(|f| f.out_ip_bytes).sum::<u64>(),
            100_000_000 + 10_000_000
        );
    }

    /// A sensor publishing to a bus keeps only the per-flow finding (at once, no incident):
    /// the asymmetry, the data leak and the incident are the correlator's, and a reload
    /// does not bring the cloud or long-connection detectors back.
    #[test]
    fn a_sensor_on_a_bus_passes_per_flow_findings_only() {
        let cfg = Config::default();
        let mut local = Correlator::local(&cfg, false);
        local.reconfigure(&cfg);
        assert!(local.cloud.is_none() && local.long.is_none());
        let (mut c, out) = feed_upload_to(local, T0 + 120 * S);
        let seen: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Output::Finding(f) => f.detector().name(),
                Output::Incident(_) => "incident",
                _ => "other",
            })
            .collect();
        assert_eq!(seen, ["large_outbound_transfer"]);
        let st = c.stats();
        assert_eq!(st.leak.volumes, 0);
        assert_eq!(st.incidents.updates, [0, 0, 0]);
    }

    /// An upload of two seconds is an incident of two seconds, though the host window that
    /// judged it asymmetric closed at the end of input two minutes later.
    #[test]
    fn an_incident_spans_what_was_observed_not_the_window() {
        let (_, out) = feed_upload();
        let window = out.iter().find_map(|o| match o {
            Output::Finding(Finding::Leak(a)) if a.scope == "window" => Some(a.clone()),
            _ => None,
        });
        assert_eq!(
            window.map(|a| a.last_ns),
            Some(T0 + 2 * S),
            "last outbound bytes"
        );
        let Some(Output::Incident(closed)) = out.last() else {
            unreachable!()
        };
        assert_eq!(closed.incident.last_ns, T0 + 2 * S);
    }

    /// The capture goes on after the upload: its host window, closed by a packet twenty
    /// minutes on, reports findings stamped at the window's end (5 minutes), while the
    /// incident is still open (idle only 10 minutes after the flow ended). They join it,
    /// and every line is in time order.
    #[test]
    fn a_window_that_closes_while_the_incident_is_quiet_joins_it() {
        let (_, out) = feed_upload_to(
            Correlator::new(Some(&Config::default()), false, None),
            T0 + 1200 * S,
        );
        let lines: Vec<(&str, &str, u64)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Incident(u) => Some((u.update.name(), u.incident.id.as_str(), u.ts_ns)),
                _ => None,
            })
            .collect();
        let window_end = T0 + S / 2 + 300 * S;
        assert_eq!(
            lines.iter().map(|l| (l.0, l.2)).collect::<Vec<_>>(),
            [
                ("opened", T0 + S),
                // The flow-end asymmetry is held (`incident.hold`); the window's asymmetry
                // and data leak raise the severity: announced at once, with it.
                ("escalated", window_end),
                ("closed", window_end + 600 * S),
            ],
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| l.1 == lines[0].1), "{lines:?}");
        let Some(Output::Incident(closed)) = out.last() else {
            unreachable!()
        };
        assert_eq!(closed.incident.findings, 4);
        assert_eq!(
            closed.incident.close_reason,
            Some(incident::CloseReason::Idle)
        );
    }

    /// `Event::Name` teaches the stage (client, server) → SNI; a later finding of another
    /// flow between the two, with no names of its own, gets it as `dst_fqdn` (`sni`).
    #[test]
    fn a_learnt_sni_names_a_finding_without_dns() {
        let cfg = Config::default();
        let mut c = Correlator::new(Some(&cfg), false, None);
        let mut out = Vec::new();
        let name = crate::proto::FlowName {
            ts_ns: T0,
            flow_id: 8,
            ipv6: false,
            client: addr("10.0.0.5"),
            server: addr("198.51.100.7"),
            server_port: 443,
            name: crate::proto::Text::new(b"Content.DropboxAPI.com"),
            source: crate::proto::NameSource::Sni,
        };
        c.on_event(Event::Name(Box::new(name)), &mut |o| out.push(o));
        assert!(out.is_empty());
        let mut a = upload_alert(T0 + S, 100_000_000);
        a.flow_start_ns = T0 + S / 2;
        c.on_event(Event::Alert(Box::new(a)), &mut |o| out.push(o));
        let named = out.iter().find_map(|o| match o {
            Output::Finding(Finding::Flow(a)) => Some((a.dst_fqdn.clone(), a.dst_fqdn_source)),
            _ => None,
        });
        assert_eq!(
            named,
            Some((Some("content.dropboxapi.com".into()), Some("sni")))
        );
    }
}
