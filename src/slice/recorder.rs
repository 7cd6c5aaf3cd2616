//! The worker's side of slices: its packet ring, and the flows it is recording.
//!
//! Per packet the worker calls [`Recorder::keep`] (how many bytes to keep), pushes the packet
//! into the ring, and, if the flow is recording, [`Recorder::stage`]s it into a buffer from
//! its pool. Staging never allocates and never waits: with no free buffer (the writer is
//! behind) the packet is dropped from the slice and counted. Starting a slice (on an alert)
//! allocates once, for the ring packets it copies out.

use super::ring::PacketRing;
use super::{put_record, record_size, Record, SliceEnd, SliceMeta, SliceMsg, FLAG_PAYLOAD_CUT};
use crate::config::SliceConfig;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::HashMap;

/// Bytes of one staging buffer.
pub const STAGING_BYTES: usize = 256 * 1024;
/// Staging buffers per worker: 2 MiB in flight to the writer at most.
pub const STAGING_BUFFERS: usize = 8;

/// A worker's connection to the slice writer.
pub struct SliceLink {
    /// This worker's index (the writer returns buffers to `pools[worker]`).
    pub worker: usize,
    /// Messages to the writer.
    pub tx: Sender<SliceMsg>,
    /// Free staging buffers, returned by the writer.
    pub pool: Receiver<Vec<u8>>,
    /// Replay: wait for the writer instead of dropping (nothing may be lost offline).
    pub lossless: bool,
}

/// Depth of the workers → writer queue (messages; packet buffers are bounded by the pools).
pub const SLICE_QUEUE: usize = 1024;

/// The slice writer and the workers' links to it, for one run.
pub struct SliceSetup {
    writer: Option<std::thread::JoinHandle<()>>,
    links: Vec<Option<SliceLink>>,
}

impl SliceSetup {
    /// Starts the writer if `cfg.dir` is set and the rings are on; otherwise no worker
    /// gets a link and no slice is written.
    pub fn start(
        cfg: &SliceConfig,
        workers: usize,
        lossless: bool,
        stats: std::sync::Arc<super::writer::WriterStats>,
    ) -> std::io::Result<SliceSetup> {
        if cfg.dir.is_empty() || cfg.ring_bytes == 0 {
            return Ok(SliceSetup {
                writer: None,
                links: (0..workers).map(|_| None).collect(),
            });
        }
        let (tx, rx) = crossbeam_channel::bounded(SLICE_QUEUE);
        let Pools { returns, takes } = pools(workers);
        let writer = super::writer::spawn(cfg.clone(), rx, returns, stats)?;
        let links = takes
            .into_iter()
            .enumerate()
            .map(|(worker, pool)| {
                Some(SliceLink {
                    worker,
                    tx: tx.clone(),
                    pool,
                    lossless,
                })
            })
            .collect();
        Ok(SliceSetup {
            writer: Some(writer),
            links,
        })
    }

    /// Worker `id`'s link (once).
    pub fn link(&mut self, id: usize) -> Option<SliceLink> {
        self.links.get_mut(id).and_then(Option::take)
    }

    /// Waits for the writer to finish (after every worker, holding the senders, ended).
    pub fn join(mut self) {
        self.links.clear();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The staging-buffer pools of all workers, each already holding its preallocated buffers.
pub struct Pools {
    /// Where the writer returns worker `w`'s buffers.
    pub returns: Vec<Sender<Vec<u8>>>,
    /// Where worker `w` takes them.
    pub takes: Vec<Receiver<Vec<u8>>>,
}

/// The pools for `workers` workers.
pub fn pools(workers: usize) -> Pools {
    let (returns, takes) = (0..workers)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::bounded(STAGING_BUFFERS);
            for _ in 0..STAGING_BUFFERS {
                let _ = tx.try_send(Vec::with_capacity(STAGING_BYTES));
            }
            (tx, rx)
        })
        .unzip();
    Pools { returns, takes }
}

/// Counters of the worker's slice side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Slices started.
    pub started: u64,
    /// Packets of recording flows not staged: no free buffer (the writer was behind).
    pub dropped: u64,
    /// Slice messages (start/end) the writer's queue had no room for.
    pub lost_messages: u64,
}

struct Recording {
    started_ns: u64,
    bytes: u64,
    dropped: u64,
}

/// Ring + recordings of one worker.
pub struct Recorder {
    /// Recent packets.
    pub ring: PacketRing,
    snaplen: usize,
    full_packets: u64,
    payload_bytes: usize,
    max_bytes: u64,
    max_duration_ns: u64,
    max_recording: usize,
    link: Option<SliceLink>,
    recording: HashMap<u64, Recording>,
    staging: Option<Vec<u8>>,
    /// Counters.
    pub stats: RecorderStats,
}

impl Recorder {
    /// The ring allocated; no writer yet (see [`Recorder::attach`]).
    pub fn new(cfg: &SliceConfig) -> Recorder {
        Recorder {
            ring: PacketRing::new(cfg.ring_bytes),
            snaplen: cfg.snaplen as usize,
            full_packets: cfg.full_packets,
            payload_bytes: cfg.payload_bytes as usize,
            max_bytes: cfg.max_bytes,
            max_duration_ns: u64::try_from(cfg.max_duration.as_nanos()).unwrap_or(u64::MAX),
            max_recording: cfg.max_recording,
            link: None,
            recording: HashMap::new(),
            staging: None,
            stats: RecorderStats::default(),
        }
    }

    /// Connects to the slice writer: alerts start slices from now on.
    pub fn attach(&mut self, link: SliceLink) {
        self.link = Some(link);
    }

    /// Whether packets need to be looked at at all (ring or recordings).
    #[inline]
    pub fn active(&self) -> bool {
        self.ring.enabled() || !self.recording.is_empty()
    }

    /// Bytes of a packet to keep and whether the payload rule cut it: everything up to
    /// `snaplen` for a flow's first `full_packets` packets, then the headers and
    /// `payload_bytes` of payload.
    #[inline]
    pub fn keep(&self, frame_len: usize, payload_offset: usize, flow_pkts: u64) -> (usize, u16) {
        let snap = frame_len.min(self.snaplen);
        if flow_pkts <= self.full_packets {
            return (snap, 0);
        }
        let cut = payload_offset.saturating_add(self.payload_bytes);
        if cut < snap {
            (cut, FLAG_PAYLOAD_CUT)
        } else {
            (snap, 0)
        }
    }

    /// Starts a slice for an alert on flow `meta.flow_id`: sends the flow's packets still in
    /// the ring, and records the flow's later packets unless `max_recording` flows already
    /// are. Returns whether the slice exists (the writer got its start) and whether the
    /// flow is now recording.
    pub fn start(&mut self, mut meta: SliceMeta) -> (bool, bool) {
        let Some(link) = &self.link else {
            return (false, false);
        };
        meta.worker = link.worker;
        meta.snaplen = self.snaplen as u32;
        let flow_id = meta.flow_id;
        let alert_ns = meta.alert_ts_ns;
        let cap = usize::try_from(self.max_bytes)
            .unwrap_or(usize::MAX)
            .min(self.ring.used_bytes());
        let mut records = Vec::with_capacity(cap);
        self.ring.collect_flow(
            flow_id,
            &mut records,
            usize::try_from(self.max_bytes).unwrap_or(usize::MAX),
        );
        let bytes = records.len() as u64;
        let msg = SliceMsg::Start {
            meta: Box::new(meta),
            records,
        };
        // The writer thread drains this queue continuously; an alert is rare, so a full
        // queue means the writer is stuck: live, lose the slice rather than stall capture.
        let sent = if link.lossless {
            link.tx.send(msg).is_ok()
        } else {
            link.tx.try_send(msg).is_ok()
        };
        if !sent {
            self.stats.lost_messages += 1;
            return (false, false);
        }
        self.stats.started += 1;
        let already = self.recording.contains_key(&flow_id);
        if !already && self.recording.len() >= self.max_recording {
            self.send_end(flow_id, SliceEnd::TooMany, 0);
            return (true, false);
        }
        // A second alert on the same flow (a higher tier) starts a new slice; later packets
        // go to the newest (the writer closes the older one).
        self.recording.insert(
            flow_id,
            Recording {
                started_ns: alert_ns,
                bytes,
                dropped: 0,
            },
        );
        (true, true)
    }

    /// Stages a packet of a recording flow. Returns why recording must stop, if a cap was
    /// reached (the caller clears the flow's flag; the end has been sent).
    #[inline]
    pub fn stage(&mut self, r: &Record<'_>) -> Option<SliceEnd> {
        let size = record_size(r.data.len());
        let end = match self.recording.get(&r.flow_id) {
            None => return Some(SliceEnd::FlowEnded),
            Some(rec) if rec.bytes.saturating_add(size as u64) > self.max_bytes => {
                Some(SliceEnd::MaxBytes)
            }
            Some(rec) if r.ts_ns.saturating_sub(rec.started_ns) > self.max_duration_ns => {
                Some(SliceEnd::MaxDuration)
            }
            Some(_) => None,
        };
        if let Some(reason) = end {
            self.end(r.flow_id, reason);
            return Some(reason);
        }
        if self
            .staging
            .as_ref()
            .is_some_and(|b| b.capacity() - b.len() < size)
        {
            self.send_staging();
        }
        if self.staging.is_none() {
            self.staging = self.link.as_ref().and_then(|l| {
                if l.lossless {
                    l.pool.recv().ok()
                } else {
                    l.pool.try_recv().ok()
                }
            });
        }
        let staged = match self.staging.as_mut() {
            Some(buf) if buf.capacity() - buf.len() >= size => {
                put_record(buf, r);
                true
            }
            _ => false,
        };
        if let Some(rec) = self.recording.get_mut(&r.flow_id) {
            if staged {
                rec.bytes += size as u64;
            } else {
                rec.dropped += 1;
            }
        }
        if !staged {
            self.stats.dropped += 1;
        }
        None
    }

    /// Hands the staged packets to the writer (each batch, and before an end).
    pub fn send_staging(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        let Some(buf) = self.staging.take() else {
            return;
        };
        if buf.is_empty() {
            self.staging = Some(buf);
            return;
        }
        let msg = SliceMsg::Packets {
            worker: link.worker,
            buf,
        };
        let sent = if link.lossless {
            link.tx
                .send(msg)
                .map_err(|e| TrySendError::Disconnected(e.into_inner()))
        } else {
            link.tx.try_send(msg)
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(SliceMsg::Packets { mut buf, .. }))
            | Err(TrySendError::Disconnected(SliceMsg::Packets { mut buf, .. })) => {
                let lost = super::records(&buf).count() as u64;
                self.stats.dropped += lost;
                buf.clear();
                self.staging = Some(buf);
            }
            Err(_) => {}
        }
    }

    /// Ends the slice of `flow_id` if it is recording (flow ended, or a cap).
    pub fn end(&mut self, flow_id: u64, reason: SliceEnd) {
        if let Some(rec) = self.recording.remove(&flow_id) {
            self.send_staging();
            self.send_end(flow_id, reason, rec.dropped);
        }
    }

    fn send_end(&mut self, flow_id: u64, reason: SliceEnd, dropped: u64) {
        let Some(link) = &self.link else {
            return;
        };
        let msg = SliceMsg::End {
            worker: link.worker,
            flow_id,
            reason,
            dropped,
        };
        let sent = if link.lossless {
            link.tx.send(msg).is_ok()
        } else {
            link.tx.try_send(msg).is_ok()
        };
        if !sent {
            self.stats.lost_messages += 1;
        }
    }
}
