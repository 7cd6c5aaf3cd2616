//! `outflow correlate`: the cross-flow stage fed from the bus instead of this process's
//! workers. The same [`Correlator`] as in a sensor, one per partition of the event stream
//! the process owns, each after a [`PartitionMerge`] of the sensors publishing there.
//!
//! Ownership: each partition has a lease in the key-value bucket [`bus::LEASES`], taken
//! with a create (compare-and-swap on "absent") and renewed with an update on the revision
//! it holds; the bucket's TTL (`bus.lease_ttl`) lets a dead correlator's leases lapse so
//! another takes its partitions over. A correlator that fails to renew stops processing
//! that partition at once. Live correlators announce themselves in [`bus::MEMBERS`]; each
//! claims at most its share (partitions / members, rounded up) and hands over what is
//! beyond it (state stored, lease given back), so a second correlator gets half.
//!
//! State: a partition's state is a function of its messages in stream order (the merge uses
//! no wall clock). Every `bus.snapshot_interval` the owner stores the partition's complete
//! state — the merge and the stage — with the stream sequence it covers, in the object
//! store [`bus::SNAPSHOTS`]; a new owner restores it and reads on from the next sequence
//! (without a snapshot, from the partition's first retained message). Either way it ends up
//! in exactly the state the previous owner had. What that owner already wrote is not
//! written again: the checkpoint in
//! [`bus::CHECKPOINTS`] holds the stream sequence up to which outputs went out (stored
//! after each message that produced any, once the alert file is flushed and the incident
//! subject acknowledged), and outputs of messages at or below it are dropped while
//! rebuilding. Incidents published to [`bus::INCIDENT_SUBJECT`] carry their id and
//! update as the de-duplication id, so even a crash between writing and checkpointing
//! does not publish one twice there.

use crate::bus::merge::{MergeState, PartitionMerge};
use crate::bus::wire::{self, Body};
use crate::bus::{self, BusError};
use crate::config::Config;
use crate::correlate::{Correlator, Finding, Output as StageOutput};
use crate::output::json::{alert_json, dns_alert_json, incident_json, leak_alert_json};
use crate::output::Output;
use crate::telemetry::record::AlertRecord;
use crate::telemetry::{BusCounters, Telemetry};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Events a partition's merge holds at most (a stalled sensor cannot grow it further).
const MERGE_CAPACITY: usize = 1 << 20;

/// How `outflow correlate` runs.
pub struct CorrelateOptions {
    /// Thresholds, windows, incidents; `bus.*` for the bus.
    pub config: Config,
    /// This correlator's name in the leases (unique among correlators).
    pub id: String,
    /// Incident lines (and per-detector lines with `incident.per_detector_lines`), appended.
    pub alerts_out: Option<Output>,
    /// Where /metrics and the API read from, when serving HTTP.
    pub telemetry: Option<Arc<Telemetry>>,
    /// Set to stop (SIGINT, SIGTERM): leases are given back so another correlator takes
    /// the partitions over at once.
    pub stop: Arc<AtomicBool>,
    /// Read every partition from its first retained message and write every output to the
    /// alert file again (after losing a file, or to compare runs): no leases, snapshots,
    /// checkpoints or incident subject — it runs beside the live correlators and changes
    /// nothing of theirs.
    pub rebuild: bool,
}

/// What a correlator did, when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelateReport {
    /// Partitions it held at the end.
    pub partitions: Vec<u32>,
    /// Incident lines written.
    pub incident_lines: u64,
    /// Findings made (written only with `incident.per_detector_lines`).
    pub findings: u64,
}

/// Errors of the correlator service.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An output could not be opened or written.
    #[error("{0}")]
    Output(#[from] std::io::Error),
}

/// A partition's state in the object store.
#[derive(serde::Serialize, serde::Deserialize)]
struct PartitionSnapshot {
    /// [`SNAPSHOT_VERSION`].
    version: u8,
    partition: u32,
    /// Every message up to this stream sequence is in the state.
    seq: u64,
    merge: MergeState,
    /// [`Correlator::snapshot`].
    correlator: Vec<u8>,
}

/// Format of [`PartitionSnapshot`]; another is ignored (the partition is rebuilt from the
/// stream).
const SNAPSHOT_VERSION: u8 = 1;

/// One owned partition.
struct Part {
    correlator: Correlator,
    merge: PartitionMerge,
    /// The last message applied.
    last_seq: u64,
    /// The sequence the last stored snapshot covers, and when it was taken.
    snap_seq: u64,
    snap_at: std::time::Instant,
    /// The lease's revision, for the next compare-and-swap.
    revision: u64,
    /// When the lease was last renewed (or claimed).
    renewed: std::time::Instant,
    /// The checkpoint key's revision (0: none yet), for its compare-and-swap.
    ck_rev: u64,
    /// Outputs of messages up to this sequence were written by an earlier owner.
    emitted_upto: u64,
    /// Tells this ownership's messages from those of an earlier one still in the channel.
    generation: u64,
    reader: tokio::task::JoinHandle<()>,
}

/// A message read from a partition.
struct Read {
    partition: u32,
    generation: u64,
    seq: u64,
    payload: bytes::Bytes,
}

/// Runs the correlator until `opts.stop` is set.
pub fn run(opts: CorrelateOptions) -> Result<CorrelateReport, ClusterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BusError::Start {
            what: "the correlator's runtime",
            source,
        })?;
    rt.block_on(serve(opts))
}

async fn kv_bucket(
    js: &jetstream::Context,
    name: &str,
    ttl: Option<Duration>,
) -> Result<kv::Store, BusError> {
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    // The bucket's stream is created here with the layout the client's key-value API
    // expects (`KV_<bucket>` on `$KV.<bucket>.>`, one message per key, roll-ups, direct
    // gets): the client's own `create_key_value` first asks for the account's API level,
    // whose reply a 2.9 server (Debian's) words in a way this client cannot parse.
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(format!("outflow {name}")),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl.unwrap_or_default(),
        // A key rewritten within the TTL must never be taken for a duplicate.
        duplicate_window: ttl.map_or(Duration::from_secs(120), |t| {
            t.min(Duration::from_secs(120))
        }),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js(format!("create key-value bucket {name}"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| BusError::js(format!("open key-value bucket {name}"), e))
}

/// Stores partition `p`'s state (after message `part.last_seq`).
async fn save_snapshot(
    store: &jetstream::object_store::ObjectStore,
    p: u32,
    part: &mut Part,
    c: &BusCounters,
) {
    let started = std::time::Instant::now();
    let snap = match part.correlator.snapshot() {
        Ok(correlator) => PartitionSnapshot {
            version: SNAPSHOT_VERSION,
            partition: p,
            seq: part.last_seq,
            merge: part.merge.state(),
            correlator,
        },
        Err(e) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(partition = p, "cannot snapshot: {e}");
            return;
        }
    };
    let bytes = match postcard::to_stdvec(&snap) {
        Ok(b) => b,
        Err(e) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(partition = p, "cannot encode the snapshot: {e}");
            return;
        }
    };
    match store
        .put(lease_key(p).as_str(), &mut bytes.as_slice())
        .await
    {
        Ok(_) => {
            part.snap_seq = part.last_seq;
            part.snap_at = std::time::Instant::now();
            c.snapshots.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                partition = p,
                seq = part.last_seq,
                bytes = bytes.len(),
                ms = started.elapsed().as_millis() as u64,
                "snapshot stored"
            );
        }
        Err(e) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(partition = p, "cannot store the snapshot: {e}");
        }
    }
}

/// Partition `p`'s stored state, if there is a usable one.
async fn load_snapshot(
    store: &jetstream::object_store::ObjectStore,
    p: u32,
) -> Option<PartitionSnapshot> {
    use tokio::io::AsyncReadExt;
    let mut obj = store.get(lease_key(p).as_str()).await.ok()?;
    let mut bytes = Vec::new();
    if let Err(e) = obj.read_to_end(&mut bytes).await {
        tracing::warn!(
            partition = p,
            "cannot read its snapshot ({e}): rebuilding from the stream"
        );
        return None;
    }
    match postcard::from_bytes::<PartitionSnapshot>(&bytes) {
        Ok(s) if s.version == SNAPSHOT_VERSION && s.partition == p => Some(s),
        Ok(_) => {
            tracing::warn!(
                partition = p,
                "snapshot of another version or partition: rebuilding from the stream"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                partition = p,
                "unusable snapshot ({e}): rebuilding from the stream"
            );
            None
        }
    }
}

/// Each partition's stage holds the state of its share of the home hosts: its bounded
/// tables are sized to twice that share of the configured capacity (room for an uneven
/// split), at least 4096 — not the full capacity each, which made a correlator of 8
/// partitions 8 times the memory of one stage (763 MB measured on 2 M events).
fn scale_tables(cfg: &mut Config, partitions: u32) {
    let n = partitions.max(1) as usize;
    let scale = |c: &mut usize| *c = (*c).min(((*c * 2).div_ceil(n)).max(4096));
    scale(&mut cfg.dns.pair_capacity);
    scale(&mut cfg.dns.name_map_capacity);
    scale(&mut cfg.dns.transaction_capacity);
    scale(&mut cfg.detect.baseline.capacity);
    scale(&mut cfg.cloud.capacity);
    scale(&mut cfg.incident.capacity);
    scale(&mut cfg.detect.host_window.capacity);
    scale(&mut cfg.detect.data_leak.capacity);
}

/// Live keys of a bucket (the members); 1 when they cannot be listed, so a correlator
/// that cannot see the others still serves every partition.
async fn count_keys(kv: &kv::Store) -> usize {
    let listed = tokio::time::timeout(Duration::from_secs(2), async {
        match kv.keys().await {
            Ok(keys) => Some(keys.filter_map(|k| async move { k.ok() }).count().await),
            Err(_) => None,
        }
    })
    .await;
    listed.ok().flatten().unwrap_or(1)
}

fn lease_key(p: u32) -> String {
    format!("p{p}")
}

/// Writes what the stage produced: lines to the alert file and the API, incidents to the
/// subject.
struct Sinks {
    file: Option<std::io::BufWriter<Box<dyn Write + Send>>>,
    /// Incident lines to syslog (`output.syslog.target`), on its own thread as in a sensor.
    syslog: Option<crate::output::deliver::SinkHandle>,
    telemetry: Option<Arc<Telemetry>>,
    per_detector_lines: bool,
    seed: u16,
    report: CorrelateReport,
    /// Incident lines waiting for the subject's acknowledgement.
    publish: Vec<(String, String)>,
}

impl Sinks {
    fn finding(&mut self, f: &Finding) {
        self.report.findings += 1;
        let (detector, ts, json) = match f {
            Finding::Flow(a) => (a.detector, a.ts_ns, alert_json(a, self.seed)),
            Finding::Leak(a) => (a.detector, a.ts_ns, leak_alert_json(a)),
            Finding::Dns(a) => (a.detector, a.ts_ns, dns_alert_json(a)),
        };
        let rec = Arc::new(AlertRecord::from_json(detector, ts, json, 0));
        if self.per_detector_lines {
            self.line(&rec.json);
        }
        if let Some(t) = &self.telemetry {
            t.store.push(rec);
        }
    }

    fn line(&mut self, json: &str) {
        if let Some(w) = self.file.as_mut() {
            let r = w
                .write_all(json.as_bytes())
                .and_then(|()| w.write_all(b"\n"));
            if let Err(e) = r {
                tracing::error!("cannot write the alert file: {e}");
            }
        }
    }

    /// Whether `o` is written somewhere durable (and so needs a checkpoint).
    fn writes(&self, o: &StageOutput) -> bool {
        match o {
            StageOutput::Incident(_) => true,
            StageOutput::Finding(_) => self.per_detector_lines && self.file.is_some(),
            StageOutput::Flow(_) | StageOutput::DnsRecord(_) | StageOutput::DnsDone(_) => false,
        }
    }

    /// Writes one output; `id` (partition, stream sequence, position) names it on the
    /// incident subject, the same whoever writes it.
    fn output(&mut self, o: StageOutput, id: &str) {
        match o {
            StageOutput::Finding(f) => self.finding(&f),
            StageOutput::Incident(u) => {
                self.report.incident_lines += 1;
                let json = incident_json(&u, self.seed);
                self.line(&json);
                self.publish.push((id.to_string(), json.clone()));
                let rec = Arc::new(AlertRecord::from_incident(&u, json));
                if let Some(s) = &self.syslog {
                    s.deliver(Arc::clone(&rec));
                }
                if let Some(t) = &self.telemetry {
                    t.incidents.push(rec);
                }
            }
            // Flow and DNS records are the sensors' (they wrote them where they saw them).
            StageOutput::Flow(_) | StageOutput::DnsRecord(_) | StageOutput::DnsDone(_) => {}
        }
    }

    /// Makes what was written durable before the checkpoint says so: the file flushed
    /// (a killed process loses nothing the kernel has), the incidents acknowledged on the
    /// subject — retried until `deadline` (the lease's safe end). False: not all were.
    async fn commit(
        &mut self,
        js: &jetstream::Context,
        c: &BusCounters,
        deadline: std::time::Instant,
    ) -> bool {
        if let Some(w) = self.file.as_mut() {
            if let Err(e) = w.flush() {
                tracing::error!("cannot write the alert file: {e}");
            }
        }
        let pending = std::mem::take(&mut self.publish);
        for (id, json) in pending {
            let payload = bytes::Bytes::from(json);
            loop {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.as_str());
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let attempt = tokio::time::timeout(left, async {
                    js.publish_with_headers(bus::INCIDENT_SUBJECT, h, payload.clone())
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
                match attempt {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) if std::time::Instant::now() < deadline => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(incident = %id, "publish failed ({e}); retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(incident = %id, "not acknowledged on {} in time", bus::INCIDENT_SUBJECT);
                        return false;
                    }
                }
            }
        }
        true
    }
}

async fn serve(opts: CorrelateOptions) -> Result<CorrelateReport, ClusterError> {
    let mut cfg = opts.config.clone();
    // The state is the stream: no snapshot file.
    cfg.state.dir.clear();
    let b = cfg.bus.clone();
    let counters = Arc::new(BusCounters::default());
    if let Some(t) = &opts.telemetry {
        let _ = t.bus.set(Arc::clone(&counters));
    }
    let client = bus::connect(&b.url, &format!("outflow correlator {}", opts.id), false).await?;
    counters.connected.store(true, Ordering::Relaxed);
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client.clone());
    let partitions = bus::ensure_stream(&js, b.partitions, b.retention).await?;
    scale_tables(&mut cfg, partitions);
    let leases = kv_bucket(&js, bus::LEASES, Some(b.lease_ttl)).await?;
    let checkpoints = kv_bucket(&js, bus::CHECKPOINTS, None).await?;
    let members = kv_bucket(&js, bus::MEMBERS, Some(b.lease_ttl)).await?;
    let member_key = format!("m_{}", opts.id);
    let snapshots = match js.get_object_store(bus::SNAPSHOTS).await {
        Ok(s) => s,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: bus::SNAPSHOTS.to_string(),
                description: Some("outflow partition snapshots".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js(format!("create object store {}", bus::SNAPSHOTS), e))?,
    };
    js.get_or_create_stream(jetstream::stream::Config {
        name: bus::INCIDENT_STREAM.to_string(),
        subjects: vec![bus::INCIDENT_SUBJECT.to_string()],
        max_age: b.retention,
        duplicate_window: bus::DEDUP_WINDOW.min(b.retention),
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js(format!("get or create stream {}", bus::INCIDENT_STREAM), e))?;
    let syslog = if cfg.output.syslog.target.is_empty() {
        None
    } else {
        {
            let t = crate::output::syslog::SyslogTransport::new(&cfg.output.syslog)?;
            let h = crate::output::deliver::SinkHandle::spawn(
                Box::new(t),
                crate::output::deliver::Mode::Lossy,
                cfg.output.sink_queue.max(1),
            )?;
            if let Some(t) = &opts.telemetry {
                if let Ok(mut g) = t.sinks.lock() {
                    g.push((h.name(), h.counters()));
                }
            }
            Some(h)
        }
    };
    let mut sinks = Sinks {
        syslog,
        file: opts
            .alerts_out
            .as_ref()
            .map(|o| o.open(true).map(std::io::BufWriter::new))
            .transpose()?,
        telemetry: opts.telemetry.clone(),
        per_detector_lines: cfg.incident.per_detector_lines,
        seed: cfg.output.community_id_seed,
        report: CorrelateReport::default(),
        publish: Vec::new(),
    };
    tracing::info!(id = %opts.id, partitions, url = %b.url, "correlator started");

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(8192);
    let mut owned: BTreeMap<u32, Part> = BTreeMap::new();
    let mut generation = 0u64;
    let mut tick = tokio::time::interval(b.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outs: Vec<StageOutput> = Vec::new();
    // Outputs are written only while the lease is surely ours: renewed less than two
    // thirds of its TTL ago, leaving a third for the write, the flush and the checkpoint.
    let fresh_for = b.lease_ttl * 2 / 3;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if opts.stop.load(Ordering::Relaxed) {
                    break;
                }
                if !opts.rebuild {
                    for (&p, part) in owned.iter_mut() {
                        if part.last_seq > part.snap_seq && part.snap_at.elapsed() >= b.snapshot_interval {
                            save_snapshot(&snapshots, p, part, &counters).await;
                        }
                    }
                }
                counters.connected.store(
                    client.connection_state() == async_nats::connection::State::Connected,
                    Ordering::Relaxed,
                );
                // Renew what we hold. A failed compare-and-swap whose reply was lost leaves
                // our own entry: read it back before giving the partition up.
                let mut lost = Vec::new();
                for (&p, part) in owned.iter_mut() {
                    if opts.rebuild {
                        part.renewed = std::time::Instant::now();
                        continue;
                    }
                    match leases.update(lease_key(p), opts.id.clone().into(), part.revision).await {
                        Ok(r) => {
                            part.revision = r;
                            part.renewed = std::time::Instant::now();
                        }
                        Err(e) => match leases.entry(lease_key(p)).await {
                            Ok(Some(en)) if en.value.as_ref() == opts.id.as_bytes()
                                && en.operation == kv::Operation::Put =>
                            {
                                part.revision = en.revision;
                            }
                            _ => {
                                tracing::warn!(partition = p, "lease lost: {e}");
                                lost.push(p);
                            }
                        },
                    }
                }
                for p in lost {
                    counters.lease_losses.fetch_add(1, Ordering::Relaxed);
                    if let Some(part) = owned.remove(&p) {
                        part.reader.abort();
                    }
                }
                // This correlator's share: the partitions over the live correlators, rounded
                // up. Beyond it, partitions are handed over (state stored, lease given back)
                // to the correlators that have fewer.
                let share = if opts.rebuild {
                    partitions as usize
                } else {
                    if members.put(member_key.as_str(), opts.id.clone().into()).await.is_err() {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let n = count_keys(&members).await.max(1);
                    (partitions as usize).div_ceil(n)
                };
                while owned.len() > share {
                    let Some(&p) = owned.keys().next_back() else {
                        break;
                    };
                    if let Some(mut part) = owned.remove(&p) {
                        part.reader.abort();
                        if part.last_seq > part.snap_seq {
                            save_snapshot(&snapshots, p, &mut part, &counters).await;
                        }
                        let _ = leases
                            .delete_expect_revision(lease_key(p), Some(part.revision))
                            .await;
                        tracing::info!(partition = p, share, "partition handed over");
                    }
                }
                // Claim what nobody holds, up to the share.
                for p in 0..partitions {
                    if owned.contains_key(&p) {
                        continue;
                    }
                    if owned.len() >= share {
                        break;
                    }
                    let revision = if opts.rebuild {
                        0
                    } else {
                        match leases.create(lease_key(p), opts.id.clone().into()).await {
                            Ok(r) => r,
                            Err(_) => continue,
                        }
                    };
                    let stored = if opts.rebuild {
                        Ok(None)
                    } else {
                        checkpoints.entry(lease_key(p)).await
                    };
                    let (emitted_upto, ck_rev) = match stored {
                        Ok(Some(en)) if en.operation == kv::Operation::Put => (
                            std::str::from_utf8(&en.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0),
                            en.revision,
                        ),
                        Ok(_) => (0, 0),
                        Err(e) => {
                            // Without the checkpoint, rebuilding would write everything
                            // again: give the lease back and try later.
                            tracing::warn!(partition = p, "cannot read its checkpoint: {e}");
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            let _ = leases.delete_expect_revision(lease_key(p), Some(revision)).await;
                            continue;
                        }
                    };
                    generation += 1;
                    let mut correlator = Correlator::new(Some(&cfg), false, None);
                    let mut merge = PartitionMerge::new(b.max_lateness, MERGE_CAPACITY, &b.sensors);
                    let mut from = 0u64;
                    let snap = if opts.rebuild { None } else { load_snapshot(&snapshots, p).await };
                    if let Some(s) = snap {
                        match correlator.restore(&s.correlator) {
                            Ok(()) => {
                                merge = PartitionMerge::from_state(s.merge, b.max_lateness, MERGE_CAPACITY);
                                from = s.seq;
                            }
                            Err(e) => {
                                tracing::warn!(partition = p, "unusable snapshot ({e}): rebuilding from the stream");
                                correlator = Correlator::new(Some(&cfg), false, None);
                            }
                        }
                    }
                    let reader = tokio::spawn(read_partition(
                        js.clone(),
                        p,
                        generation,
                        from + 1,
                        tx.clone(),
                        Arc::clone(&counters),
                    ));
                    tracing::info!(partition = p, emitted_upto, snapshot_seq = from, "partition claimed");
                    owned.insert(p, Part {
                        correlator,
                        merge,
                        last_seq: from,
                        snap_seq: from,
                        snap_at: std::time::Instant::now(),
                        revision,
                        renewed: std::time::Instant::now(),
                        emitted_upto,
                        ck_rev,
                        generation,
                        reader,
                    });
                }
                counters.partitions_owned.store(owned.len() as u64, Ordering::Relaxed);
            }
            Some(m) = rx.recv() => {
                let p = m.partition;
                let Some(part) = owned.get_mut(&p).filter(|x| x.generation == m.generation) else {
                    continue;
                };
                let emit = m.seq > part.emitted_upto;
                let events = take(part, &m.payload, &counters, &mut outs);
                part.last_seq = m.seq;
                counters.consumed.fetch_add(events, Ordering::Relaxed);
                if !emit {
                    counters.replayed.fetch_add(events, Ordering::Relaxed);
                    outs.clear();
                    continue;
                }
                if !outs.iter().any(|o| sinks.writes(o)) {
                    // Records and boxes only: nothing to write, nothing to checkpoint.
                    outs.clear();
                    continue;
                }
                if part.renewed.elapsed() >= fresh_for {
                    // The lease may lapse while we write: leave the partition (and these
                    // outputs) to whoever holds it next, from the checkpoint.
                    tracing::warn!(partition = p, "lease not renewed in time; letting the partition go");
                    counters.lease_losses.fetch_add(1, Ordering::Relaxed);
                    outs.clear();
                    if let Some(part) = owned.remove(&p) {
                        part.reader.abort();
                    }
                    continue;
                }
                for (i, o) in outs.drain(..).enumerate() {
                    sinks.output(o, &format!("p{p}-{}-{i}", m.seq));
                }
                let deadline = part.renewed + fresh_for;
                if opts.rebuild {
                    // Only the file: no subject, no checkpoint (see `CorrelateOptions`).
                    sinks.publish.clear();
                    if let Some(w) = sinks.file.as_mut() {
                        if let Err(e) = w.flush() {
                            tracing::error!("cannot write the alert file: {e}");
                        }
                    }
                    part.emitted_upto = m.seq;
                    continue;
                }
                // The checkpoint moves only by compare-and-swap on the revision this owner
                // read or wrote: a stale owner cannot overwrite a newer one's.
                let committed = sinks.commit(&js, &counters, deadline).await;
                let value: bytes::Bytes = m.seq.to_string().into();
                let put = if !committed {
                    Err("incidents not acknowledged".to_string())
                } else if part.ck_rev == 0 {
                    checkpoints.create(lease_key(p), value).await.map_err(|e| e.to_string())
                } else {
                    checkpoints
                        .update(lease_key(p), value, part.ck_rev)
                        .await
                        .map_err(|e| e.to_string())
                };
                match put {
                    Ok(r) => {
                        part.ck_rev = r;
                        part.emitted_upto = m.seq;
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(partition = p, "cannot store its checkpoint ({e}); letting the partition go");
                        if let Some(part) = owned.remove(&p) {
                            part.reader.abort();
                        }
                    }
                }
            }
        }
    }
    // Give the partitions back, each with its state as of now: another correlator takes
    // them over at once (not after the TTL) and reads only what follows.
    let mut report = std::mem::take(&mut sinks.report);
    for (p, mut part) in owned {
        part.reader.abort();
        if !opts.rebuild {
            if part.last_seq > part.snap_seq {
                save_snapshot(&snapshots, p, &mut part, &counters).await;
            }
            let _ = leases
                .delete_expect_revision(lease_key(p), Some(part.revision))
                .await;
        }
        report.partitions.push(p);
    }
    if !opts.rebuild {
        let _ = members.delete(member_key.as_str()).await;
    }
    if let Some(w) = sinks.file.as_mut() {
        let _ = w.flush();
    }
    if let Some(s) = sinks.syslog.take() {
        if let Some(e) = s.close_within(Duration::from_secs(5)) {
            tracing::warn!("syslog: {e}");
        }
    }
    tracing::info!(id = %opts.id, "correlator stopped");
    Ok(report)
}

/// Feeds one bus message to a partition's merge and stage; what the stage produced is
/// appended to `outs`. Returns the events it carried.
fn take(part: &mut Part, payload: &[u8], c: &BusCounters, outs: &mut Vec<StageOutput>) -> u64 {
    let env = match wire::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("bus: skipping a message: {e}");
            return 0;
        }
    };
    let mut events = 0;
    if !part.merge.admit(env.sensor, env.run, env.msg) {
        // A copy of a message already taken: re-sent after its acknowledgement was lost,
        // later than the bus's de-duplication window remembers.
        c.duplicates.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let late_before = part.merge.late;
    match env.body {
        Body::Events(batch) => {
            for b in batch {
                events += 1;
                match b
                    .map_err(|e| e.to_string())
                    .and_then(|b| crate::event::decode(b).map_err(|e| e.to_string()))
                {
                    Ok((key, ev)) => {
                        if let Some(ev) = part.merge.event(env.sensor, env.run, key, ev) {
                            part.correlator.on_event(ev, &mut |o| outs.push(o));
                        }
                    }
                    Err(e) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(sensor = env.sensor, "bus: skipping an event: {e}");
                    }
                }
            }
        }
        Body::Mark { watermark_ns, done } => {
            part.merge.mark(env.sensor, env.run, watermark_ns, done);
        }
    }
    c.late
        .fetch_add(part.merge.late - late_before, Ordering::Relaxed);
    while let Some(ev) = part.merge.pop() {
        part.correlator.on_event(ev, &mut |o| outs.push(o));
    }
    if let Some(now) = part.merge.clock_ns() {
        part.correlator.tick(now, &mut |o| outs.push(o));
    }
    events
}

/// Reads partition `p` from its first retained message, forever, into `tx`.
async fn read_partition(
    js: jetstream::Context,
    p: u32,
    generation: u64,
    from: u64,
    tx: tokio::sync::mpsc::Sender<Read>,
    c: Arc<BusCounters>,
) {
    let mut next = from.max(1);
    loop {
        let reading = async {
            let stream = js
                .get_stream(bus::STREAM)
                .await
                .map_err(|e| BusError::js(format!("get stream {}", bus::STREAM), e))?;
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: bus::subject(p),
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| BusError::js(format!("consumer on {}", bus::subject(p)), e))?;
            let mut msgs = consumer
                .messages()
                .await
                .map_err(|e| BusError::js(format!("read {}", bus::subject(p)), e))?;
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| BusError::js(format!("read {}", bus::subject(p)), e))?;
                let seq = match m.info() {
                    Ok(i) => i.stream_sequence,
                    Err(e) => return Err(BusError::js("message metadata", e)),
                };
                next = seq + 1;
                let r = Read {
                    partition: p,
                    generation,
                    seq,
                    payload: m.message.payload.clone(),
                };
                if tx.send(r).await.is_err() {
                    return Ok(());
                }
            }
            Ok::<(), BusError>(())
        };
        match reading.await {
            Ok(()) => return,
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = p, "{e}; reading again from sequence {next}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_gets_tables_for_twice_its_share_of_the_hosts() {
        let mut c = Config::default();
        scale_tables(&mut c, 8);
        assert_eq!(c.dns.pair_capacity, 32768 * 2 / 8);
        assert_eq!(c.dns.name_map_capacity, 262144 * 2 / 8);
        // Never below 4096, never above what was configured.
        let mut small = Config::default();
        small.incident.capacity = 1000;
        small.dns.pair_capacity = 6000;
        scale_tables(&mut small, 64);
        assert_eq!(small.incident.capacity, 1000);
        assert_eq!(small.dns.pair_capacity, 4096);
        let mut one = Config::default();
        scale_tables(&mut one, 1);
        assert_eq!(one, Config::default());
    }
}
