//! The slice writer thread: every byte of every pcap slice is written here, never on the
//! capture path.
//!
//! Workers send [`SliceMsg`]s over a bounded channel; this thread owns the open files (one
//! per recording flow, keyed by worker and flow id), turns records into a classic pcap file
//! `<slice.dir>/<alert_id>.pcap` and, when the slice ends, writes the sidecar
//! `<alert_id>.json` describing it. Staging buffers go back to their worker's pool once their
//! records are written, so the workers never allocate.
//!
//! - **Nanosecond pcap.** The files use magic `0xa1b23c4d` (little endian, version 2.4), so
//!   the packet timestamps in the file are exactly the ones the detectors saw. Every tool
//!   built on libpcap or Wireshark reads it.
//! - **Readable while recording.** The writer flushes after every message, so an in-progress
//!   slice can be downloaded and opened: it ends on a whole record.
//! - **Verifiable.** The sidecar carries the SHA-256 of the whole file (computed while
//!   writing), so an analyst can check the download, plus the alert's five-tuple, packet
//!   counts, how many packets were cut or dropped, and why recording stopped. It is written
//!   to a temporary name, synced and renamed, so a sidecar is either absent or whole; a
//!   slice without one is still recording (or was cut short by a crash).
//! - **Bounded.** A slice never exceeds `slice.max_bytes`; [`retention`] deletes slices older
//!   than `slice.max_age` and then the oldest until the directory is under
//!   `slice.max_disk_bytes`, never one that is still recording. It runs after slices
//!   complete and at least once a minute.
//! - **Never fatal.** A write error (disk full, permissions) fails only that slice: it is
//!   logged (the first, then at most once a minute), counted, and its later packets are
//!   counted as lost. The thread keeps going.
//!
//! A second alert on a flow that is already recording (a higher tier firing) starts a new
//! slice: the older one is finished at once with `end_reason` `"superseded"` (and
//! `superseded_by` naming the new slice), and the flow's later packets go to the new one
//! only. Each alert thus has its own complete file, and no packet is written twice.
//!
//! No message scans the open slices: a new slice finds the one it supersedes by key and by
//! id (an index of the open slices by id), and a batch of packets flushes only the slices
//! it wrote to. Only the shutdown and the retention pass walk them.

use super::{records, valid_id, Record, SliceEnd, SliceMeta, SliceMsg, FLAG_PAYLOAD_CUT};
use crate::config::SliceConfig;
use crate::decode::proto_name;
use crate::time::rfc3339;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bytes of a pcap record header.
const PCAP_RECORD_HEADER: u64 = 16;
/// pcap snaplen used when a slice's meta says 0 (libpcap's largest, `MAXIMUM_SNAPLEN`).
const MAX_SNAPLEN: u32 = 262_144;
/// Retention runs at least this often, even when no slice completes.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Errors are logged at most this often (the first always); all are counted.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Write buffer of each open slice: large enough that a busy flow costs few syscalls, small
/// enough that thousands of open slices stay cheap.
const BUF_BYTES: usize = 64 << 10;
/// `end_reason` of a slice replaced by a newer alert on the same flow.
const SUPERSEDED: &str = "superseded";

/// The writer's counters, read by /metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Slices started.
    pub started: AtomicU64,
    /// Slices completed (sidecar written).
    pub completed: AtomicU64,
    /// Packets written into slices.
    pub packets: AtomicU64,
    /// Bytes written into slice files (pcap headers included).
    pub bytes: AtomicU64,
    /// Packets that arrived for no open slice, or could not be written.
    pub lost: AtomicU64,
    /// Write errors (disk full, permissions), invalid slice ids and failed retention passes.
    pub errors: AtomicU64,
    /// Slices (pcap and sidecar) deleted by retention.
    pub deleted: AtomicU64,
    /// Bytes of slices in the directory after the last retention pass.
    pub disk_bytes: AtomicU64,
    /// Packets not written because their slice had reached `slice.max_bytes`.
    pub capped: AtomicU64,
    /// Slices abandoned after a write error (their sidecar says `"complete": false`).
    pub failed: AtomicU64,
    /// Slices recording now.
    pub open: AtomicU64,
}

/// Starts the writer thread (`outflow-slices`). It returns when every sender of `rx` is
/// gone, after finishing the open slices (`end_reason` `"shutdown"`) and a last retention
/// pass. `pools[w]` receives worker `w`'s staging buffers back, cleared.
pub fn spawn(
    cfg: SliceConfig,
    rx: Receiver<SliceMsg>,
    pools: Vec<Sender<Vec<u8>>>,
    stats: Arc<WriterStats>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("outflow-slices".into())
        .spawn(move || Writer::new(cfg, pools, stats).run(rx))
}

/// Logs errors: the first, then at most one per [`LOG_EVERY`], saying how many were not
/// logged in between. Counts every one.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, stats: &WriterStats, slice: &str, what: &str, err: &dyn Display) {
        stats.errors.fetch_add(1, Relaxed);
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::error!(
            slice,
            suppressed = self.suppressed,
            "pcap slice writer: {what}: {err}"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// What happened to one record offered to a slice.
enum Put {
    Written(u64),
    Capped,
    Lost,
}

/// One slice being recorded.
struct Slice {
    meta: Box<SliceMeta>,
    /// The pcap header's snaplen; longer records are cut to it.
    snaplen: u32,
    path: PathBuf,
    /// `None` once a write failed: the slice is abandoned.
    out: Option<BufWriter<File>>,
    /// The first error, for the sidecar.
    error: Option<String>,
    sha: Sha256,
    /// File size so far.
    bytes: u64,
    packets: u64,
    truncated: u64,
    /// Records refused by `slice.max_bytes`.
    capped: u64,
    /// Records that could not be written (after a failure).
    lost: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    /// Written to since the last flush.
    dirty: bool,
    /// One record (header + data) assembled here, so it reaches the file in one write: a
    /// download of a slice still recording never ends between a header and its data.
    scratch: Vec<u8>,
}

impl Slice {
    /// Creates `<dir>/<id>.pcap` (truncating a file left by an earlier run with the same
    /// id, whose stale sidecar is removed) and writes the global header.
    fn create(dir: &Path, meta: Box<SliceMeta>) -> io::Result<Slice> {
        fs::create_dir_all(dir)?;
        remove_if_exists(&dir.join(format!("{}.json", meta.id)))?;
        let path = dir.join(format!("{}.pcap", meta.id));
        let file = File::create(&path)?;
        let snaplen = if meta.snaplen == 0 {
            MAX_SNAPLEN
        } else {
            meta.snaplen
        };
        let h = super::pcap_header(meta.linktype, snaplen);
        let mut s = Slice {
            meta,
            snaplen,
            path,
            out: Some(BufWriter::with_capacity(BUF_BYTES, file)),
            error: None,
            sha: Sha256::new(),
            bytes: 0,
            packets: 0,
            truncated: 0,
            capped: 0,
            lost: 0,
            first_ts: None,
            last_ts: 0,
            dirty: false,
            scratch: Vec::new(),
        };
        s.write(&h)?;
        Ok(s)
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("slice already failed"));
        };
        if let Err(e) = out.write_all(b) {
            return Err(self.fail(e));
        }
        self.sha.update(b);
        self.bytes += b.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Abandons the file after an error, keeping the first error for the sidecar.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.out = None;
        if self.error.is_none() {
            self.error = Some(e.to_string());
        }
        e
    }

    fn failed(&self) -> bool {
        self.out.is_none()
    }

    /// Appends one record unless the slice failed or `max_bytes` would be exceeded. Once a
    /// record is refused by the cap every later one is too, so the file is a gap-free
    /// prefix of the flow.
    fn put(&mut self, r: &Record<'_>, max_bytes: u64) -> io::Result<Put> {
        if self.failed() {
            self.lost += 1;
            return Ok(Put::Lost);
        }
        let keep = r.data.len().min(self.snaplen as usize);
        let data = r.data.get(..keep).unwrap_or(r.data);
        let size = PCAP_RECORD_HEADER + keep as u64;
        if self.capped > 0 || self.bytes + size > max_bytes {
            self.capped += 1;
            return Ok(Put::Capped);
        }
        let incl = u32::try_from(keep).unwrap_or(self.snaplen);
        let orig = r.wire_len.max(incl);
        let clipped = Record { data, ..*r };
        let mut rec = std::mem::take(&mut self.scratch);
        rec.clear();
        rec.extend_from_slice(&super::pcap_record_header(&clipped));
        rec.extend_from_slice(data);
        let written = self.write(&rec);
        self.scratch = rec;
        if let Err(e) = written {
            self.lost += 1;
            return Err(e);
        }
        self.packets += 1;
        if r.flags & FLAG_PAYLOAD_CUT != 0 || incl < orig {
            self.truncated += 1;
        }
        self.first_ts.get_or_insert(r.ts_ns);
        self.last_ts = r.ts_ns;
        Ok(Put::Written(size))
    }

    /// Pushes buffered bytes to the file, so a download sees every whole record.
    fn flush(&mut self) -> io::Result<()> {
        self.dirty = false;
        match self.out.as_mut().map(BufWriter::flush) {
            Some(Err(e)) => Err(self.fail(e)),
            _ => Ok(()),
        }
    }

    /// Flushes, syncs and closes the pcap.
    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        let synced = match self.out.as_ref() {
            Some(out) => out.get_ref().sync_all(),
            None => return Ok(()),
        };
        match synced {
            Ok(()) => {
                self.out = None;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// The sidecar `<id>.json`. Field names are part of outflow's interface (`/api/slices`).
#[derive(Serialize)]
struct Sidecar<'a> {
    slice_id: &'a str,
    alert_id: &'a str,
    detector: &'a str,
    flow_id: u64,
    proto: String,
    src_ip: IpAddr,
    src_port: u16,
    dst_ip: IpAddr,
    dst_port: u16,
    alert_ts: String,
    first_packet: Option<String>,
    last_packet: Option<String>,
    /// Packets in the file.
    packets: u64,
    /// File size.
    bytes: u64,
    /// Packets in the file with less than their wire length.
    packets_truncated: u64,
    /// Packets of the flow missing from the file: dropped by the worker (no free buffer) or
    /// by the writer (write error).
    packets_dropped: u64,
    /// Packets left out because the file reached `slice.max_bytes`.
    truncated_by_cap: u64,
    end_reason: &'a str,
    superseded_by: Option<&'a str>,
    linktype: u16,
    snaplen: u32,
    /// SHA-256 of the whole file, hex; null when the slice failed.
    sha256: Option<String>,
    complete: bool,
    error: Option<&'a str>,
}

/// Writes `bytes` to `path` atomically: a temporary file, synced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
        return res;
    }
    // Make the rename durable; not every file system can sync a directory, and the
    // sidecar is already whole, so a failure here is not an error.
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

struct Writer {
    /// `None`: `slice.dir` is empty, slices are off.
    dir: Option<PathBuf>,
    max_bytes: u64,
    max_disk_bytes: u64,
    max_age: Duration,
    open: HashMap<(usize, u64), Slice>,
    /// The key of each open slice by its id (ids are unique among open slices).
    by_id: HashMap<String, (usize, u64)>,
    /// Slices written to by the batch being handled, to flush at its end (kept for its
    /// allocation).
    unflushed: Vec<(usize, u64)>,
    pools: Vec<Sender<Vec<u8>>>,
    stats: Arc<WriterStats>,
    log: ErrorLog,
    /// A slice completed since the last retention pass.
    retention_due: bool,
}

impl Writer {
    fn new(cfg: SliceConfig, pools: Vec<Sender<Vec<u8>>>, stats: Arc<WriterStats>) -> Self {
        Writer {
            dir: (!cfg.dir.is_empty()).then(|| PathBuf::from(&cfg.dir)),
            max_bytes: cfg.max_bytes,
            max_disk_bytes: cfg.max_disk_bytes,
            max_age: cfg.max_age,
            open: HashMap::new(),
            by_id: HashMap::new(),
            unflushed: Vec::new(),
            pools,
            stats,
            log: ErrorLog::default(),
            retention_due: false,
        }
    }

    fn run(mut self, rx: Receiver<SliceMsg>) {
        // The first pass runs at once: the directory may hold slices of an earlier run.
        let mut next_retention = Instant::now();
        loop {
            let wait = next_retention.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // After completions, once the burst is handled; otherwise on the timer.
            if (self.retention_due && rx.is_empty()) || Instant::now() >= next_retention {
                self.retention();
                next_retention = Instant::now() + RETENTION_EVERY;
            }
        }
        let mut keys: Vec<_> = self.open.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(s) = self.take_open(key) {
                self.finish(s, SliceEnd::Shutdown.name(), None, 0);
            }
        }
        self.retention();
    }

    fn handle(&mut self, msg: SliceMsg) {
        match msg {
            SliceMsg::Start { meta, records } => self.start(meta, &records),
            SliceMsg::Packets { worker, buf } => self.packets(worker, buf),
            SliceMsg::End {
                worker,
                flow_id,
                reason,
                dropped,
            } => {
                if let Some(s) = self.take_open((worker, flow_id)) {
                    self.finish(s, reason.name(), None, dropped);
                }
            }
        }
    }

    fn start(&mut self, meta: Box<SliceMeta>, recs: &[u8]) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        if !valid_id(&meta.id) {
            self.log.report(
                &self.stats,
                "",
                "invalid slice id (want 1..=128 of [A-Za-z0-9._-], no leading dot)",
                &format_args!("{:?}", meta.id),
            );
            self.stats
                .lost
                .fetch_add(records(recs).count() as u64, Relaxed);
            return;
        }
        // Supersede the flow's current slice, and any slice still writing the same file.
        let key = (meta.worker, meta.flow_id);
        let mut replaced = [
            self.open.contains_key(&key).then_some(key),
            self.by_id.get(&meta.id).copied(),
        ];
        replaced.sort_unstable();
        for k in replaced.into_iter().flatten() {
            if let Some(old) = self.take_open(k) {
                self.finish(old, SUPERSEDED, Some(&meta.id), 0);
            }
        }
        let mut s = match Slice::create(&dir, meta) {
            Ok(s) => s,
            Err(e) => {
                self.log.report(&self.stats, "", "cannot create slice", &e);
                self.stats
                    .lost
                    .fetch_add(records(recs).count() as u64, Relaxed);
                return;
            }
        };
        self.stats.started.fetch_add(1, Relaxed);
        let (mut packets, mut bytes, mut capped, mut lost) = (0, s.bytes, 0, 0);
        for r in records(recs) {
            match s.put(&r, self.max_bytes) {
                Ok(Put::Written(n)) => {
                    packets += 1;
                    bytes += n;
                }
                Ok(Put::Capped) => capped += 1,
                Ok(Put::Lost) => lost += 1,
                Err(e) => {
                    lost += 1;
                    self.slice_failed(&s.meta.id, "write failed", &e);
                }
            }
        }
        if let Err(e) = s.flush() {
            self.slice_failed(&s.meta.id, "flush failed", &e);
        }
        self.add_counts(packets, bytes, capped, lost);
        self.by_id.insert(s.meta.id.clone(), key);
        self.open.insert(key, s);
        self.stats.open.store(self.open.len() as u64, Relaxed);
    }

    /// Removes an open slice and its id from the index.
    fn take_open(&mut self, key: (usize, u64)) -> Option<Slice> {
        let s = self.open.remove(&key)?;
        if self.by_id.get(&s.meta.id) == Some(&key) {
            self.by_id.remove(&s.meta.id);
        }
        Some(s)
    }

    fn packets(&mut self, worker: usize, mut buf: Vec<u8>) {
        if self.dir.is_some() {
            let (mut packets, mut bytes, mut capped, mut lost) = (0, 0, 0, 0);
            let mut unflushed = std::mem::take(&mut self.unflushed);
            for r in records(&buf) {
                let key = (worker, r.flow_id);
                let Some(s) = self.open.get_mut(&key) else {
                    lost += 1;
                    continue;
                };
                let clean = !s.dirty;
                match s.put(&r, self.max_bytes) {
                    Ok(Put::Written(n)) => {
                        packets += 1;
                        bytes += n;
                    }
                    Ok(Put::Capped) => capped += 1,
                    Ok(Put::Lost) => lost += 1,
                    Err(e) => {
                        lost += 1;
                        self.stats.failed.fetch_add(1, Relaxed);
                        self.log.report(&self.stats, &s.meta.id, "write failed", &e);
                    }
                }
                if clean && s.dirty {
                    unflushed.push(key); // once per slice and batch: the flush cleans it
                }
            }
            for key in unflushed.drain(..) {
                let Some(s) = self.open.get_mut(&key).filter(|s| s.dirty) else {
                    continue;
                };
                if let Err(e) = s.flush() {
                    self.stats.failed.fetch_add(1, Relaxed);
                    self.log.report(&self.stats, &s.meta.id, "flush failed", &e);
                }
            }
            self.unflushed = unflushed;
            self.add_counts(packets, bytes, capped, lost);
        }
        buf.clear();
        if let Some(pool) = self.pools.get(worker) {
            let _ = pool.try_send(buf);
        }
    }

    fn slice_failed(&mut self, id: &str, what: &str, e: &io::Error) {
        self.stats.failed.fetch_add(1, Relaxed);
        self.log.report(&self.stats, id, what, e);
    }

    fn add_counts(&self, packets: u64, bytes: u64, capped: u64, lost: u64) {
        let st = &self.stats;
        st.packets.fetch_add(packets, Relaxed);
        st.bytes.fetch_add(bytes, Relaxed);
        st.capped.fetch_add(capped, Relaxed);
        st.lost.fetch_add(lost, Relaxed);
    }

    /// Closes the pcap and writes the sidecar. A slice that failed still gets one (saying
    /// `"complete": false` and why) when the disk allows, so the listing does not show it
    /// as recording forever.
    fn finish(&mut self, mut s: Slice, reason: &str, superseded_by: Option<&str>, dropped: u64) {
        self.stats.open.store(self.open.len() as u64, Relaxed);
        self.retention_due = true;
        let was_failed = s.failed();
        if let Err(e) = s.close() {
            if !was_failed {
                self.slice_failed(&s.meta.id, "closing failed", &e);
            }
        }
        let complete = s.error.is_none();
        let bytes = if complete {
            s.bytes
        } else {
            fs::metadata(&s.path).map_or(s.bytes, |m| m.len())
        };
        let m = &s.meta;
        let side = Sidecar {
            slice_id: &m.id,
            alert_id: &m.id,
            detector: m.detector,
            flow_id: m.flow_id,
            proto: proto_name(m.proto),
            src_ip: m.src,
            src_port: m.sport,
            dst_ip: m.dst,
            dst_port: m.dport,
            alert_ts: rfc3339(m.alert_ts_ns),
            first_packet: s.first_ts.map(rfc3339),
            last_packet: s.first_ts.map(|_| rfc3339(s.last_ts)),
            packets: s.packets,
            bytes,
            packets_truncated: s.truncated,
            packets_dropped: dropped + s.lost,
            truncated_by_cap: s.capped,
            end_reason: reason,
            superseded_by,
            linktype: m.linktype,
            snaplen: s.snaplen,
            sha256: complete.then(|| hex(&s.sha.clone().finalize())),
            complete,
            error: s.error.as_deref(),
        };
        let res = serde_json::to_vec_pretty(&side)
            .map_err(io::Error::other)
            .and_then(|mut json| {
                json.push(b'\n');
                write_atomic(&s.path.with_extension("json"), &json)
            });
        match res {
            Ok(()) if complete => {
                self.stats.completed.fetch_add(1, Relaxed);
            }
            Ok(()) => {}
            Err(e) => self
                .log
                .report(&self.stats, &s.meta.id, "cannot write sidecar", &e),
        }
    }

    fn retention(&mut self) {
        self.retention_due = false;
        let Some(dir) = self.dir.as_deref() else {
            return;
        };
        let keep: HashSet<String> = self.open.values().map(|s| s.meta.id.clone()).collect();
        match sweep(
            dir,
            self.max_disk_bytes,
            self.max_age,
            &keep,
            SystemTime::now(),
        ) {
            Ok(sw) => {
                self.stats.deleted.fetch_add(sw.deleted, Relaxed);
                self.stats.disk_bytes.store(sw.bytes_left, Relaxed);
                if let Some(e) = sw.first_error {
                    self.log
                        .report(&self.stats, "", "retention cannot delete", &e);
                }
            }
            Err(e) => self
                .log
                .report(&self.stats, "", "retention cannot list the directory", &e),
        }
    }
}

/// A slice's files as found in the directory.
#[derive(Debug, Default)]
struct Group {
    /// Size of the pcap, if there is one.
    pcap: Option<u64>,
    /// Size of the sidecar, if there is one.
    json: Option<u64>,
    /// Latest modification time of its files.
    mtime: Option<SystemTime>,
}

impl Group {
    fn bytes(&self) -> u64 {
        self.pcap.unwrap_or(0) + self.json.unwrap_or(0)
    }

    fn mtime(&self) -> SystemTime {
        self.mtime.unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The slices in `dir` by id: regular files `<id>.pcap` and `<id>.json` with a valid id.
/// Anything else (temporary sidecars, other files, symlinks) is not a slice. A missing
/// directory holds no slices.
fn scan(dir: &Path) -> io::Result<BTreeMap<String, Group>> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(groups),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (stem, is_pcap) = if let Some(stem) = name.strip_suffix(".pcap") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".json") {
            (stem, false)
        } else {
            continue;
        };
        if !valid_id(stem) {
            continue;
        }
        // Skip entries removed meanwhile, and anything but regular files.
        let Ok(md) = entry.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let g = groups.entry(stem.to_owned()).or_default();
        if is_pcap {
            g.pcap = Some(md.len());
        } else {
            g.json = Some(md.len());
        }
        if let Ok(t) = md.modified() {
            g.mtime = Some(g.mtime.map_or(t, |m| m.max(t)));
        }
    }
    Ok(groups)
}

/// Result of one retention pass.
#[derive(Debug, Default)]
struct Sweep {
    deleted: u64,
    bytes_left: u64,
    /// The first deletion that failed (the pass goes on with the others).
    first_error: Option<io::Error>,
}

fn sweep(
    dir: &Path,
    max_disk_bytes: u64,
    max_age: Duration,
    keep: &HashSet<String>,
    now: SystemTime,
) -> io::Result<Sweep> {
    let groups = scan(dir)?;
    let mut order: Vec<(SystemTime, &String, &Group)> =
        groups.iter().map(|(id, g)| (g.mtime(), id, g)).collect();
    order.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let cutoff = now.checked_sub(max_age);
    let mut total: u64 = groups.values().map(Group::bytes).sum();
    let mut sw = Sweep::default();
    // Oldest first: the expired ones, then as many more as the budget needs.
    for (mtime, id, g) in order {
        let expired = cutoff.is_some_and(|c| mtime < c);
        if !expired && total <= max_disk_bytes {
            break;
        }
        if keep.contains(id.as_str()) {
            continue;
        }
        let mut res = Ok(());
        // The pcap first: it holds the space, and a sidecar alone is not listed.
        for (ext, present) in [("pcap", g.pcap.is_some()), ("json", g.json.is_some())] {
            if present && res.is_ok() {
                res = remove_if_exists(&dir.join(format!("{id}.{ext}")));
            }
        }
        match res {
            Ok(()) => {
                sw.deleted += 1;
                total = total.saturating_sub(g.bytes());
            }
            Err(e) => {
                sw.first_error.get_or_insert(e);
            }
        }
    }
    sw.bytes_left = total;
    Ok(sw)
}

/// One retention pass over `dir`: deletes the slices (pcap and sidecar together) last
/// modified more than `max_age` ago, then the oldest (by modification time, then id) until
/// the slices' files total at most `max_disk_bytes`. Slices whose id is in `keep` (those
/// recording) are never deleted, but their bytes count.
///
/// Age is the files' modification time, not the sidecar's `alert_ts`: that is packet time,
/// and a replay of an old capture would otherwise have its slices deleted the moment they
/// complete.
///
/// Returns the number of slices deleted and the bytes left; an error if the directory
/// cannot be listed or a deletion failed (after trying all the others). A missing
/// directory is empty.
pub fn retention(
    dir: &Path,
    max_disk_bytes: u64,
    max_age: Duration,
    keep: &HashSet<String>,
) -> io::Result<(u64, u64)> {
    let sw = sweep(dir, max_disk_bytes, max_age, keep, SystemTime::now())?;
    match sw.first_error {
        Some(e) => Err(e),
        None => Ok((sw.deleted, sw.bytes_left)),
    }
}

/// The slices in `dir`, newest (last modified) first, for `GET /api/slices`: each
/// slice's sidecar when it has one (`"complete": true`, or `false` with an `error` for a
/// slice abandoned after a write error), otherwise `{"slice_id", "complete": false,
/// "bytes"}` for a slice still recording. Sidecars without a pcap are left out. A missing
/// directory gives an empty list.
pub fn list(dir: &Path) -> io::Result<Vec<serde_json::Value>> {
    let groups = scan(dir)?;
    let mut order: Vec<(SystemTime, &String, &Group)> = groups
        .iter()
        .filter(|(_, g)| g.pcap.is_some())
        .map(|(id, g)| (g.mtime(), id, g))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let out = order
        .into_iter()
        .map(|(_, id, g)| {
            g.json
                .and_then(|_| fs::read(dir.join(format!("{id}.json"))).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| {
                    serde_json::json!({
                        "slice_id": id,
                        "complete": false,
                        "bytes": g.pcap.unwrap_or(0),
                    })
                })
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slice::put_record;
    use crossbeam_channel::{bounded, Receiver};
    use serde_json::Value;
    use std::net::Ipv4Addr;
    use std::process::Command;
    use std::thread::JoinHandle;

    const T0: u64 = 1_700_000_000_123_456_789;

    fn cfg(dir: &Path) -> SliceConfig {
        SliceConfig {
            dir: dir.to_string_lossy().into_owned(),
            ..SliceConfig::default()
        }
    }

    fn meta(id: &str, worker: usize, flow_id: u64) -> Box<SliceMeta> {
        Box::new(SliceMeta {
            id: id.into(),
            detector: "large_outbound_transfer",
            worker,
            flow_id,
            proto: 17,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            sport: 40_000,
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            dport: 443,
            alert_ts_ns: T0 + 5_000,
            linktype: 1,
            snaplen: 65_535,
        })
    }

    /// An Ethernet/IPv4/UDP frame 10.0.0.5:40000 -> 203.0.113.9:443 with `n` payload bytes
    /// (checksums zero: Wireshark does not verify them by default).
    fn frame(n: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let ip_len = (20 + 8 + n) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 5, 203, 0, 113, 9]);
        f.extend_from_slice(&40_000u16.to_be_bytes());
        f.extend_from_slice(&443u16.to_be_bytes());
        f.extend_from_slice(&((8 + n) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..n).map(|i| i as u8));
        f
    }

    /// (flow, ts, wire_len, flags, data)
    type Rec = (u64, u64, u32, u16, Vec<u8>);

    fn buf_of(recs: &[Rec]) -> Vec<u8> {
        let mut b = Vec::with_capacity(1 << 16);
        for (flow_id, ts_ns, wire_len, flags, data) in recs {
            put_record(
                &mut b,
                &Record {
                    flow_id: *flow_id,
                    ts_ns: *ts_ns,
                    wire_len: *wire_len,
                    flags: *flags,
                    linktype: 1,
                    data,
                },
            );
        }
        b
    }

    struct Harness {
        tx: Sender<SliceMsg>,
        pool: Receiver<Vec<u8>>,
        stats: Arc<WriterStats>,
        handle: JoinHandle<()>,
    }

    /// A writer with two workers' pools; `pool` is worker 1's.
    fn harness(cfg: SliceConfig) -> Harness {
        let (tx, rx) = bounded(16);
        let (p0, _) = bounded(4);
        let (p1, pool) = bounded(4);
        let stats = Arc::new(WriterStats::default());
        let handle = spawn(cfg, rx, vec![p0, p1], stats.clone()).expect("spawn");
        Harness {
            tx,
            pool,
            stats,
            handle,
        }
    }

    impl Harness {
        fn send(&self, m: SliceMsg) {
            self.tx.send(m).expect("send");
        }

        fn stop(self) -> (Arc<WriterStats>, Receiver<Vec<u8>>) {
            drop(self.tx);
            self.handle.join().expect("writer thread panicked");
            (self.stats, self.pool)
        }
    }

    fn end(worker: usize, flow_id: u64, dropped: u64) -> SliceMsg {
        SliceMsg::End {
            worker,
            flow_id,
            reason: SliceEnd::FlowEnded,
            dropped,
        }
    }

    fn sidecar(dir: &Path, id: &str) -> Value {
        let b = fs::read(dir.join(format!("{id}.json"))).expect("sidecar");
        serde_json::from_slice(&b).expect("sidecar json")
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    /// Parses a nanosecond pcap by hand: (snaplen, linktype, records as (ts_ns, incl, orig,
    /// data)).
    #[allow(clippy::type_complexity)]
    fn parse_pcap(b: &[u8]) -> (u32, u32, Vec<(u64, u32, u32, Vec<u8>)>) {
        assert!(b.len() >= 24);
        assert_eq!(le32(b, 0), 0xa1b2_3c4d, "magic");
        assert_eq!(&b[0..4], &[0x4d, 0x3c, 0xb2, 0xa1], "little endian");
        assert_eq!(le16(b, 4), 2);
        assert_eq!(le16(b, 6), 4);
        assert_eq!(le32(b, 8), 0, "thiszone");
        assert_eq!(le32(b, 12), 0, "sigfigs");
        let (snaplen, linktype) = (le32(b, 16), le32(b, 20));
        let mut at = 24;
        let mut recs = Vec::new();
        while at < b.len() {
            let sec = le32(b, at) as u64;
            let nsec = le32(b, at + 4) as u64;
            assert!(nsec < 1_000_000_000);
            let incl = le32(b, at + 8);
            let orig = le32(b, at + 12);
            assert!(incl <= orig, "incl_len {incl} > orig_len {orig}");
            let data = b[at + 16..at + 16 + incl as usize].to_vec();
            recs.push((sec * 1_000_000_000 + nsec, incl, orig, data));
            at += 16 + incl as usize;
        }
        assert_eq!(at, b.len(), "no partial record");
        (snaplen, linktype, recs)
    }

    /// Runs capinfos and tshark on `path` when they are installed: no warnings, `packets`
    /// packets.
    fn wireshark_reads(path: &Path, packets: usize) {
        let Ok(out) = Command::new("capinfos").arg("-M").arg(path).output() else {
            eprintln!("capinfos not found: skipping");
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(out.status.success(), "capinfos: {stdout} {stderr}");
        assert!(
            !stderr.contains("warning") && !stderr.contains("damaged"),
            "{stderr}"
        );
        let n: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Number of packets:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {stdout}"));
        assert_eq!(n, packets, "{stdout}");
        assert!(stdout.contains("nanoseconds"), "{stdout}");
        let Ok(out) = Command::new("tshark").arg("-r").arg(path).output() else {
            eprintln!("tshark not found: skipping");
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(out.status.success(), "tshark: {stderr}");
        assert!(
            !stderr.contains("warning") && !stderr.contains("damaged"),
            "{stderr}"
        );
        assert_eq!(stdout.lines().count(), packets, "{stdout}");
    }

    #[test]
    fn writes_a_pcap_wireshark_reads_and_a_verifiable_sidecar() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("slices"); // created by the writer
        let h = harness(cfg(&dir));
        let start = buf_of(&[
            (7, T0, 60, 0, frame(18)),
            (7, T0 + 1_000, 1500, FLAG_PAYLOAD_CUT, frame(50)),
            (7, T0 + 2_000_000_001, 70, 0, frame(28)),
        ]);
        h.send(SliceMsg::Start {
            meta: meta("511-large_outbound_transfer-0", 1, 7),
            records: start,
        });
        let later = buf_of(&[
            (7, T0 + 3_000_000_000, 100, 0, frame(58)),
            (8, T0 + 3_000_000_001, 100, 0, frame(58)), // no slice: lost
            // wire_len smaller than the data: orig_len is raised to stay valid.
            (7, T0 + 4_000_000_007, 10, 0, frame(4)),
        ]);
        let cap = later.capacity();
        h.send(SliceMsg::Packets {
            worker: 1,
            buf: later,
        });
        h.send(end(1, 7, 2));
        let (stats, pool) = h.stop();

        let back = pool.try_recv().expect("buffer returned to worker 1's pool");
        assert!(back.is_empty());
        assert_eq!(back.capacity(), cap);

        let path = dir.join("511-large_outbound_transfer-0.pcap");
        let file = fs::read(&path).unwrap();
        let (snaplen, linktype, recs) = parse_pcap(&file);
        assert_eq!((snaplen, linktype), (65_535, 1));
        let want: [(u64, u32, Vec<u8>); 5] = [
            (T0, 60, frame(18)),
            (T0 + 1_000, 1500, frame(50)),
            (T0 + 2_000_000_001, 70, frame(28)),
            (T0 + 3_000_000_000, 100, frame(58)),
            (T0 + 4_000_000_007, 46, frame(4)),
        ];
        assert_eq!(recs.len(), 5);
        for ((ts, incl, orig, data), (wts, worig, wdata)) in recs.iter().zip(want.iter()) {
            assert_eq!(ts, wts);
            assert_eq!(*incl as usize, wdata.len());
            assert_eq!(orig, worig);
            assert_eq!(data, wdata);
        }

        let s = sidecar(&dir, "511-large_outbound_transfer-0");
        assert_eq!(s["slice_id"], "511-large_outbound_transfer-0");
        assert_eq!(s["alert_id"], "511-large_outbound_transfer-0");
        assert_eq!(s["detector"], "large_outbound_transfer");
        assert_eq!(s["flow_id"], 7);
        assert_eq!(s["proto"], "udp");
        assert_eq!(s["src_ip"], "10.0.0.5");
        assert_eq!(s["src_port"], 40_000);
        assert_eq!(s["dst_ip"], "203.0.113.9");
        assert_eq!(s["dst_port"], 443);
        assert_eq!(s["alert_ts"], rfc3339(T0 + 5_000));
        assert_eq!(s["first_packet"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(s["last_packet"], rfc3339(T0 + 4_000_000_007));
        assert_eq!(s["packets"], 5);
        assert_eq!(s["bytes"], file.len() as u64);
        assert_eq!(
            s["packets_truncated"], 1,
            "the flagged one (92 of 1500 bytes)"
        );
        assert_eq!(s["packets_dropped"], 2);
        assert_eq!(s["truncated_by_cap"], 0);
        assert_eq!(s["end_reason"], "flow_ended");
        assert_eq!(s["superseded_by"], Value::Null);
        assert_eq!(s["linktype"], 1);
        assert_eq!(s["snaplen"], 65_535);
        assert_eq!(s["complete"], true);
        assert_eq!(s["sha256"], hex(&Sha256::digest(&file)));
        assert!(!dir.join("511-large_outbound_transfer-0.json.tmp").exists());

        assert_eq!(stats.started.load(Relaxed), 1);
        assert_eq!(stats.completed.load(Relaxed), 1);
        assert_eq!(stats.packets.load(Relaxed), 5);
        assert_eq!(stats.bytes.load(Relaxed), file.len() as u64);
        assert_eq!(stats.lost.load(Relaxed), 1);
        assert_eq!(stats.errors.load(Relaxed), 0);
        assert_eq!(stats.open.load(Relaxed), 0);
        assert_eq!(stats.disk_bytes.load(Relaxed), fs_bytes(&dir));

        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0], s);

        wireshark_reads(&path, 5);
    }

    fn fs_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_second_alert_on_a_flow_supersedes_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let h = harness(cfg(tmp.path()));
        h.send(SliceMsg::Start {
            meta: meta("a", 1, 7),
            records: buf_of(&[(7, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Start {
            meta: meta("b", 1, 7),
            records: buf_of(&[(7, T0, 60, 0, frame(18)), (7, T0 + 1, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Packets {
            worker: 1,
            buf: buf_of(&[(7, T0 + 2, 60, 0, frame(18))]),
        });
        h.send(end(1, 7, 0));
        let (stats, _) = h.stop();
        let a = sidecar(tmp.path(), "a");
        assert_eq!(a["end_reason"], "superseded");
        assert_eq!(a["superseded_by"], "b");
        assert_eq!(a["packets"], 1);
        assert_eq!(a["complete"], true);
        let b = sidecar(tmp.path(), "b");
        assert_eq!(b["end_reason"], "flow_ended");
        assert_eq!(b["packets"], 3);
        assert_eq!(stats.completed.load(Relaxed), 2);
        assert_eq!(stats.lost.load(Relaxed), 0);
        wireshark_reads(&tmp.path().join("a.pcap"), 1);
        wireshark_reads(&tmp.path().join("b.pcap"), 3);
    }

    /// Many open slices: a new slice finds what it supersedes through the index, and a
    /// batch flushes only what it wrote to (no walk of the open slices per message).
    #[test]
    fn open_slices_are_found_by_key_and_id_without_a_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let (p0, _pool) = bounded(4);
        let mut w = Writer::new(cfg(tmp.path()), vec![p0], Arc::new(WriterStats::default()));
        let n = 300u64;
        for flow in 0..n {
            w.handle(SliceMsg::Start {
                meta: meta(&format!("s{flow}"), 0, flow),
                records: buf_of(&[(flow, T0, 60, 0, frame(18))]),
            });
        }
        assert_eq!((w.open.len(), w.by_id.len()), (n as usize, n as usize));
        // By key (a higher tier on flow 1) and by id (flow 2's id reused by a new flow).
        w.handle(SliceMsg::Start {
            meta: meta("t1", 0, 1),
            records: Vec::new(),
        });
        w.handle(SliceMsg::Start {
            meta: meta("s2", 0, n),
            records: Vec::new(),
        });
        assert_eq!(w.open.len(), n as usize);
        assert_eq!(w.by_id.get("t1"), Some(&(0, 1)));
        assert_eq!(w.by_id.get("s2"), Some(&(0, n)));
        assert!(!w.by_id.contains_key("s1") && !w.open.contains_key(&(0, 2)));
        assert_eq!(sidecar(tmp.path(), "s1")["superseded_by"], "t1");
        // A batch for two flows flushes those two.
        w.handle(SliceMsg::Packets {
            worker: 0,
            buf: buf_of(&[(5, T0 + 1, 60, 0, frame(18)), (5, T0 + 2, 60, 0, frame(18))]),
        });
        assert!(w.unflushed.is_empty() && w.open.values().all(|s| !s.dirty));
        w.handle(end(0, 5, 0));
        assert_eq!(sidecar(tmp.path(), "s5")["packets"], 3);
        assert_eq!(w.open.len(), w.by_id.len());
    }

    #[test]
    fn the_same_id_again_rewrites_the_slice() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("x.pcap"), vec![0xee; 5000]).unwrap();
        fs::write(tmp.path().join("x.json"), b"{\"complete\": true}").unwrap();
        let h = harness(cfg(tmp.path()));
        h.send(SliceMsg::Start {
            meta: meta("x", 0, 1),
            records: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        // While it records, the stale sidecar is gone: the listing says "recording".
        h.send(SliceMsg::Packets {
            worker: 0,
            buf: Vec::new(),
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::metadata(tmp.path().join("x.pcap")).unwrap().len() != 24 + 16 + 60 {
            assert!(Instant::now() < deadline, "slice not rewritten");
            std::thread::sleep(Duration::from_millis(5));
        }
        let l = list(tmp.path()).unwrap();
        assert_eq!(
            l,
            vec![serde_json::json!({"slice_id": "x", "complete": false, "bytes": 100})]
        );
        // Same id from another flow: the first is finished before the file is rewritten.
        h.send(SliceMsg::Start {
            meta: meta("x", 0, 2),
            records: buf_of(&[(2, T0, 60, 0, frame(18)), (2, T0, 60, 0, frame(18))]),
        });
        h.send(end(0, 2, 0));
        let (stats, _) = h.stop();
        let file = fs::read(tmp.path().join("x.pcap")).unwrap();
        assert_eq!(parse_pcap(&file).2.len(), 2);
        let s = sidecar(tmp.path(), "x");
        assert_eq!(s["sha256"], hex(&Sha256::digest(&file)));
        assert_eq!(s["packets"], 2);
        assert_eq!(stats.errors.load(Relaxed), 0);
    }

    #[test]
    fn max_bytes_is_a_hard_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let max = 24 + 2 * (16 + 60) + 10;
        let h = harness(SliceConfig {
            max_bytes: max,
            ..cfg(tmp.path())
        });
        h.send(SliceMsg::Start {
            meta: meta("c", 0, 3),
            records: buf_of(&[(3, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Packets {
            worker: 0,
            buf: buf_of(&[
                (3, T0 + 1, 60, 0, frame(18)),
                (3, T0 + 2, 60, 0, frame(18)), // would exceed
                (3, T0 + 3, 1, 0, vec![0]),    // would fit, but the slice is full
            ]),
        });
        h.send(SliceMsg::End {
            worker: 0,
            flow_id: 3,
            reason: SliceEnd::MaxBytes,
            dropped: 0,
        });
        let (stats, _) = h.stop();
        let file = fs::read(tmp.path().join("c.pcap")).unwrap();
        assert!(file.len() as u64 <= max);
        assert_eq!(parse_pcap(&file).2.len(), 2);
        let s = sidecar(tmp.path(), "c");
        assert_eq!(s["truncated_by_cap"], 2);
        assert_eq!(s["packets"], 2);
        assert_eq!(s["end_reason"], "max_bytes");
        assert_eq!(stats.capped.load(Relaxed), 2);
    }

    #[test]
    fn invalid_ids_and_unknown_flows_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = tmp.path().join("inner");
        let h = harness(cfg(&inner));
        h.send(SliceMsg::Start {
            meta: meta("../escape", 0, 1),
            records: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Packets {
            worker: 0,
            buf: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(end(0, 1, 0)); // unknown: ignored
        let (stats, _) = h.stop();
        assert_eq!(stats.errors.load(Relaxed), 1);
        assert_eq!(stats.started.load(Relaxed), 0);
        assert_eq!(stats.completed.load(Relaxed), 0);
        assert_eq!(stats.lost.load(Relaxed), 2);
        assert!(!tmp.path().join("escape.pcap").exists());
        assert!(!inner.exists());
    }

    #[test]
    fn no_dir_means_no_slices() {
        let h = harness(SliceConfig::default());
        h.send(SliceMsg::Start {
            meta: meta("a", 1, 1),
            records: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Packets {
            worker: 1,
            buf: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(end(1, 1, 0));
        let (stats, pool) = h.stop();
        assert!(pool.try_recv().is_ok(), "buffers still go back");
        for c in [&stats.started, &stats.lost, &stats.errors, &stats.completed] {
            assert_eq!(c.load(Relaxed), 0);
        }
    }

    #[test]
    fn an_unwritable_dir_counts_errors_and_keeps_going() {
        let tmp = tempfile::tempdir().unwrap();
        let not_a_dir = tmp.path().join("file");
        fs::write(&not_a_dir, b"x").unwrap();
        let h = harness(cfg(&not_a_dir));
        for id in ["a", "b"] {
            h.send(SliceMsg::Start {
                meta: meta(id, 1, 1),
                records: buf_of(&[(1, T0, 60, 0, frame(18))]),
            });
        }
        h.send(SliceMsg::Packets {
            worker: 1,
            buf: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(end(1, 1, 0));
        let (stats, pool) = h.stop();
        assert!(pool.try_recv().is_ok());
        // Two failed creations, plus retention passes that cannot list a file.
        assert!(stats.errors.load(Relaxed) >= 2);
        assert_eq!(stats.started.load(Relaxed), 0);
        assert_eq!(stats.lost.load(Relaxed), 3);
    }

    #[test]
    fn a_failed_slice_stops_writing_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let stats = Arc::new(WriterStats::default());
        let mut w = Writer::new(cfg(tmp.path()), Vec::new(), stats.clone());
        w.start(meta("g", 0, 9), &buf_of(&[(9, T0, 60, 0, frame(18))]));
        // The failure the writer would see on a full disk.
        let s = w.open.get_mut(&(0, 9)).unwrap();
        let _ = s.fail(io::Error::other("No space left on device"));
        w.packets(0, buf_of(&[(9, T0 + 1, 60, 0, frame(18))]));
        w.handle(end(0, 9, 1));
        assert_eq!(stats.lost.load(Relaxed), 1);
        assert_eq!(stats.completed.load(Relaxed), 0);
        let g = sidecar(tmp.path(), "g");
        assert_eq!(g["complete"], false);
        assert_eq!(g["sha256"], Value::Null);
        assert_eq!(g["error"], "No space left on device");
        assert_eq!(g["packets"], 1);
        assert_eq!(g["packets_dropped"], 2);
        assert_eq!(g["bytes"], 24 + 16 + 60);
        assert_eq!(list(tmp.path()).unwrap(), vec![g]);
    }

    #[test]
    fn shutdown_finishes_open_slices() {
        let tmp = tempfile::tempdir().unwrap();
        let h = harness(cfg(tmp.path()));
        h.send(SliceMsg::Start {
            meta: meta("s", 1, 4),
            records: buf_of(&[(4, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Packets {
            worker: 1,
            buf: buf_of(&[(4, T0 + 9, 60, 0, frame(18))]),
        });
        let (stats, _) = h.stop();
        let s = sidecar(tmp.path(), "s");
        assert_eq!(s["end_reason"], "shutdown");
        assert_eq!(s["complete"], true);
        assert_eq!(s["packets"], 2);
        let file = fs::read(tmp.path().join("s.pcap")).unwrap();
        assert_eq!(s["sha256"], hex(&Sha256::digest(&file)));
        assert_eq!(stats.completed.load(Relaxed), 1);
        wireshark_reads(&tmp.path().join("s.pcap"), 2);
    }

    #[test]
    fn the_writer_never_deletes_a_recording_slice() {
        let tmp = tempfile::tempdir().unwrap();
        let h = harness(SliceConfig {
            max_disk_bytes: 0,
            ..cfg(tmp.path())
        });
        h.send(SliceMsg::Start {
            meta: meta("open", 0, 1),
            records: buf_of(&[(1, T0, 60, 0, frame(18))]),
        });
        h.send(SliceMsg::Start {
            meta: meta("done", 0, 2),
            records: buf_of(&[(2, T0, 60, 0, frame(18))]),
        });
        h.send(end(0, 2, 0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.stats.deleted.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "retention did not run");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!tmp.path().join("done.pcap").exists());
        assert!(!tmp.path().join("done.json").exists());
        assert!(tmp.path().join("open.pcap").exists());
        assert_eq!(h.stats.disk_bytes.load(Relaxed), 24 + 16 + 60);
        let (stats, _) = h.stop();
        // At shutdown the slice is finished, then over budget like the rest.
        assert_eq!(stats.deleted.load(Relaxed), 2);
    }

    /// Writes a slice's two files, `size` bytes in all, modified `age` ago.
    fn old_slice(dir: &Path, id: &str, size: usize, age: Duration) {
        let t = SystemTime::now() - age;
        for (ext, n) in [("pcap", size - 100), ("json", 100)] {
            let p = dir.join(format!("{id}.{ext}"));
            fs::write(&p, vec![0u8; n]).unwrap();
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }

    fn exists(dir: &Path, id: &str) -> bool {
        dir.join(format!("{id}.pcap")).exists()
    }

    #[test]
    fn retention_deletes_the_oldest_first_to_fit_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        old_slice(d, "s1", 1000, Duration::from_secs(300));
        old_slice(d, "s2", 1000, Duration::from_secs(200));
        old_slice(d, "s3", 1000, Duration::from_secs(100));
        // Not slices: neither counted nor deleted.
        fs::write(d.join("notes.txt"), vec![0u8; 5000]).unwrap();
        fs::write(d.join(".hidden.pcap"), vec![0u8; 5000]).unwrap();
        fs::write(d.join("s1.json.tmp"), vec![0u8; 5000]).unwrap();
        let week = Duration::from_secs(7 * 86_400);

        let none = HashSet::new();
        assert_eq!(retention(d, 3000, week, &none).unwrap(), (0, 3000));
        assert_eq!(retention(d, 2500, week, &none).unwrap(), (1, 2000));
        assert!(!exists(d, "s1") && !d.join("s1.json").exists());
        assert!(exists(d, "s2") && exists(d, "s3"));

        // The oldest is recording: the next one goes instead.
        let keep: HashSet<String> = ["s2".to_string()].into();
        assert_eq!(retention(d, 1500, week, &keep).unwrap(), (1, 1000));
        assert!(exists(d, "s2") && !exists(d, "s3"));
        // Nothing else to delete: over budget, but the open slice stays.
        assert_eq!(retention(d, 0, week, &keep).unwrap(), (0, 1000));
        assert!(exists(d, "s2"));
        for f in ["notes.txt", ".hidden.pcap", "s1.json.tmp"] {
            assert!(d.join(f).exists(), "{f}");
        }
        // A missing directory holds nothing.
        assert_eq!(retention(&d.join("nope"), 0, week, &none).unwrap(), (0, 0));
    }

    #[test]
    fn retention_deletes_by_age_but_never_an_open_slice() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let day = Duration::from_secs(86_400);
        old_slice(d, "ancient", 1000, 10 * day);
        old_slice(d, "ancient-open", 1000, 10 * day);
        old_slice(d, "recent", 1000, day);
        // A sidecar without its pcap is a slice too.
        fs::remove_file(d.join("ancient.pcap")).unwrap();
        let keep: HashSet<String> = ["ancient-open".to_string()].into();
        assert_eq!(retention(d, u64::MAX, 7 * day, &keep).unwrap(), (1, 2000));
        assert!(!d.join("ancient.json").exists());
        assert!(exists(d, "ancient-open") && exists(d, "recent"));
    }

    #[test]
    fn list_is_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        old_slice(d, "old", 1000, Duration::from_secs(200));
        fs::write(d.join("old.json"), br#"{"slice_id":"old","complete":true}"#).unwrap();
        let t = SystemTime::now() - Duration::from_secs(200);
        File::options()
            .write(true)
            .open(d.join("old.json"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        old_slice(d, "new", 1000, Duration::from_secs(100));
        fs::remove_file(d.join("new.json")).unwrap();
        old_slice(d, "orphan", 1000, Duration::from_secs(1));
        fs::remove_file(d.join("orphan.pcap")).unwrap();
        let l = list(d).unwrap();
        assert_eq!(
            l,
            vec![
                serde_json::json!({"slice_id": "new", "complete": false, "bytes": 900}),
                serde_json::json!({"slice_id": "old", "complete": true}),
            ]
        );
        assert!(list(&d.join("missing")).unwrap().is_empty());
    }
}
