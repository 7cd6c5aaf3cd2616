//! `outflow correlate`: the cross-flow stage fed from the bus instead of this process's
//! workers. The same [`Correlator`] as in a sensor, one per partition of the event stream
//! the process owns, each after a [`PartitionMerge`] of the sensors publishing there.
//!
//! Ownership: each partition has a lease in the key-value bucket [`bus::LEASES`], taken
//! with a create (compare-and-swap on "absent") and renewed with an update on the revision
//! it holds; the bucket's TTL (`bus.lease_ttl`) lets a dead correlator's leases lapse so
//! another takes its partitions over. A correlator that fails to renew stops processing
//! that partition at once.
//!
//! State: a partition's state is a function of its messages in stream order (the merge uses
//! no wall clock), so it is rebuilt by reading the partition from its first retained
//! message. What a previous owner already wrote is not written again: the checkpoint in
//! [`bus::CHECKPOINTS`] holds the stream sequence up to which outputs went out (stored
//! after each message that produced any, once the alert file is flushed and the incident
//! subject acknowledged), and outputs of messages at or below it are dropped while
//! rebuilding. Incidents published to [`bus::INCIDENT_SUBJECT`] carry their id and
//! update as the de-duplication id, so even a crash between writing and checkpointing
//! does not publish one twice there.

use crate::bus::merge::PartitionMerge;
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
    /// Ignore the checkpoints: write every output of the retained stream again (into a
    /// fresh file after one was lost, or to compare runs).
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

/// One owned partition.
struct Part {
    correlator: Correlator,
    merge: PartitionMerge,
    /// The lease's revision, for the next compare-and-swap.
    revision: u64,
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

fn lease_key(p: u32) -> String {
    format!("p{p}")
}

/// Writes what the stage produced: lines to the alert file and the API, incidents to the
/// subject.
struct Sinks {
    file: Option<std::io::BufWriter<Box<dyn Write + Send>>>,
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

    fn output(&mut self, o: StageOutput) {
        match o {
            StageOutput::Finding(f) => self.finding(&f),
            StageOutput::Incident(u) => {
                self.report.incident_lines += 1;
                let json = incident_json(&u, self.seed);
                self.line(&json);
                let id = format!("{}.{}.{}", u.incident.id, u.update.name(), u.ts_ns);
                self.publish.push((id, json.clone()));
                if let Some(t) = &self.telemetry {
                    t.incidents
                        .push(Arc::new(AlertRecord::from_incident(&u, json)));
                }
            }
            // Flow and DNS records are the sensors' (they wrote them where they saw them).
            StageOutput::Flow(_) | StageOutput::DnsRecord(_) | StageOutput::DnsDone(_) => {}
        }
    }

    /// Makes what was written durable before the checkpoint says so: the file flushed
    /// (a killed process loses nothing the kernel has), the incidents acknowledged.
    async fn commit(&mut self, js: &jetstream::Context, c: &BusCounters) {
        if let Some(w) = self.file.as_mut() {
            if let Err(e) = w.flush() {
                tracing::error!("cannot write the alert file: {e}");
            }
        }
        for (id, json) in self.publish.drain(..) {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id.as_str());
            let sent = js
                .publish_with_headers(bus::INCIDENT_SUBJECT, h, json.into())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if !acked {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(incident = %id, "bus: incident not acknowledged on {}", bus::INCIDENT_SUBJECT);
            }
        }
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
    let leases = kv_bucket(&js, bus::LEASES, Some(b.lease_ttl)).await?;
    let checkpoints = kv_bucket(&js, bus::CHECKPOINTS, None).await?;
    js.get_or_create_stream(jetstream::stream::Config {
        name: bus::INCIDENT_STREAM.to_string(),
        subjects: vec![bus::INCIDENT_SUBJECT.to_string()],
        max_age: b.retention,
        duplicate_window: bus::DEDUP_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js(format!("get or create stream {}", bus::INCIDENT_STREAM), e))?;
    let mut sinks = Sinks {
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
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if opts.stop.load(Ordering::Relaxed) {
                    break;
                }
                counters.connected.store(
                    client.connection_state() == async_nats::connection::State::Connected,
                    Ordering::Relaxed,
                );
                // Renew what we hold; a failed compare-and-swap means it is no longer ours.
                let mut lost = Vec::new();
                for (&p, part) in owned.iter_mut() {
                    match leases.update(lease_key(p), opts.id.clone().into(), part.revision).await {
                        Ok(r) => part.revision = r,
                        Err(e) => {
                            tracing::warn!(partition = p, "lease lost: {e}");
                            lost.push(p);
                        }
                    }
                }
                for p in lost {
                    counters.lease_losses.fetch_add(1, Ordering::Relaxed);
                    if let Some(part) = owned.remove(&p) {
                        part.reader.abort();
                    }
                }
                // Claim what nobody holds.
                for p in 0..partitions {
                    if owned.contains_key(&p) {
                        continue;
                    }
                    let Ok(revision) = leases.create(lease_key(p), opts.id.clone().into()).await else {
                        continue;
                    };
                    let stored = if opts.rebuild {
                        Ok(None)
                    } else {
                        checkpoints.get(lease_key(p)).await
                    };
                    let emitted_upto = match stored {
                        Ok(v) => v
                            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
                            .unwrap_or(0),
                        Err(e) => {
                            // Without the checkpoint, rebuilding would write everything
                            // again: give the lease back and try later.
                            tracing::warn!(partition = p, "cannot read its checkpoint: {e}");
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            let _ = leases.delete(lease_key(p)).await;
                            continue;
                        }
                    };
                    generation += 1;
                    let reader = tokio::spawn(read_partition(
                        js.clone(),
                        p,
                        generation,
                        tx.clone(),
                        Arc::clone(&counters),
                    ));
                    tracing::info!(partition = p, emitted_upto, "partition claimed");
                    owned.insert(p, Part {
                        correlator: Correlator::new(Some(&cfg), false, None),
                        merge: PartitionMerge::new(b.max_lateness, MERGE_CAPACITY, &b.sensors),
                        revision,
                        emitted_upto,
                        generation,
                        reader,
                    });
                }
                counters.partitions_owned.store(owned.len() as u64, Ordering::Relaxed);
            }
            Some(m) = rx.recv() => {
                let Some(part) = owned.get_mut(&m.partition).filter(|x| x.generation == m.generation) else {
                    continue;
                };
                let emit = m.seq > part.emitted_upto;
                let events = take(part, &m.payload, &counters, &mut outs);
                counters.consumed.fetch_add(events, Ordering::Relaxed);
                if !emit {
                    counters.replayed.fetch_add(events, Ordering::Relaxed);
                }
                if outs.is_empty() {
                    continue;
                }
                if emit {
                    for o in outs.drain(..) {
                        sinks.output(o);
                    }
                    sinks.commit(&js, &counters).await;
                    part.emitted_upto = m.seq;
                    let put = checkpoints
                        .put(lease_key(m.partition), m.seq.to_string().into())
                        .await;
                    if let Err(e) = put {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(partition = m.partition, "cannot store its checkpoint: {e}");
                    }
                } else {
                    outs.clear();
                }
            }
        }
    }
    // Give the partitions back: another correlator takes them over now, not after the TTL.
    let mut report = std::mem::take(&mut sinks.report);
    for (p, part) in owned {
        part.reader.abort();
        let _ = leases.delete(lease_key(p)).await;
        report.partitions.push(p);
    }
    sinks.commit(&js, &counters).await;
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
    tx: tokio::sync::mpsc::Sender<Read>,
    c: Arc<BusCounters>,
) {
    let mut next = 1u64;
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
