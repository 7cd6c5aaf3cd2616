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
/// Staging buffers per worker: 8 MiB in flight to the writer at most. A recorded upload
/// at 50 000 full-size packets a second is 75 MB/s to disk: 2 MiB covered a 27 ms stall of
/// the disk, and the 30-minute soak (scripts/soak.sh) lost 4% of its uploads' slice
/// packets to ordinary writeback stalls; 8 MiB covers 110 ms. Allocated but not touched
/// until a slice records, so idle it costs no resident memory.
pub const STAGING_BUFFERS: usize = 32;

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
    /// Slices the output thread asks for (alerts it raises on a flow that has ended):
    /// cut from the ring by whichever worker holds the flow's packets.
    pub requests: Receiver<SliceMeta>,
}

/// Depth of each worker's queue of slice requests from the output thread.
pub const REQUEST_QUEUE: usize = 1024;

/// The output thread's end of the slice requests: each goes to every worker (flow ids are
/// unique per run, so only the one holding the flow's packets answers).
#[derive(Clone, Debug)]
pub struct SliceRequester {
    to: Vec<Sender<SliceMeta>>,
}

impl SliceRequester {
    /// Asks every worker for a ring-only slice. Never waits (a worker may itself be waiting
    /// on the output thread); returns false if a worker's queue had no room.
    pub fn request(&self, meta: &SliceMeta) -> bool {
        let mut all = true;
        for tx in &self.to {
            all &= tx.try_send(meta.clone()).is_ok();
        }
        all
    }
}

impl SliceLink {
    /// Hands a message to the writer: waits in replay, never live.
    fn send(&self, msg: SliceMsg) -> Result<(), TrySendError<SliceMsg>> {
        if self.lossless {
            self.tx
                .send(msg)
                .map_err(|e| TrySendError::Disconnected(e.into_inner()))
        } else {
            self.tx.try_send(msg)
        }
    }
}

/// Depth of the workers → writer queue (messages; packet buffers are bounded by the pools).
pub const SLICE_QUEUE: usize = 1024;

/// The slice writer and the workers' links to it, for one run.
pub struct SliceSetup {
    writer: Option<std::thread::JoinHandle<()>>,
    links: Vec<Option<SliceLink>>,
    requester: Option<SliceRequester>,
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
                requester: None,
            });
        }
        let (tx, rx) = crossbeam_channel::bounded(SLICE_QUEUE);
        let Pools { returns, takes } = pools(workers);
        let writer = super::writer::spawn(cfg.clone(), rx, returns, stats)?;
        let (req_tx, req_rx): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| crossbeam_channel::bounded(REQUEST_QUEUE))
            .unzip();
        let links = takes
            .into_iter()
            .zip(req_rx)
            .enumerate()
            .map(|(worker, (pool, requests))| {
                Some(SliceLink {
                    worker,
                    tx: tx.clone(),
                    pool,
                    lossless,
                    requests,
                })
            })
            .collect();
        Ok(SliceSetup {
            writer: Some(writer),
            links,
            requester: Some(SliceRequester { to: req_tx }),
        })
    }

    /// The output thread's end of the slice requests (once), if slices are written.
    pub fn requester(&mut self) -> Option<SliceRequester> {
        self.requester.take()
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
    /// Alerts whose flow was not recorded because `slice.max_recording` flows already
    /// were (their slice holds the ring's packets only).
    pub refused: u64,
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
    /// Ends the writer's queue had no room for, retried each batch: a lost end would leave
    /// its slice open (and listed as recording) until shutdown. Preallocated.
    pending_ends: Vec<(u64, SliceEnd, u64)>,
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
            pending_ends: Vec::with_capacity(2 * cfg.max_recording.max(1)),
            stats: RecorderStats::default(),
        }
    }

    /// Flows recording: (now, `slice.max_recording`, alerts refused because it was full).
    pub fn recordings(&self) -> (u64, u64, u64) {
        (
            self.recording.len() as u64,
            self.max_recording as u64,
            self.stats.refused,
        )
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
    pub fn start(&mut self, meta: SliceMeta) -> (bool, bool) {
        self.start_with(meta, true)
    }

    /// As [`Recorder::start`]; `record` false cuts a slice of the ring's packets only (a
    /// flow that has ended).
    fn start_with(&mut self, mut meta: SliceMeta, record: bool) -> (bool, bool) {
        let Some(worker) = self.link.as_ref().map(|l| l.worker) else {
            return (false, false);
        };
        meta.worker = worker;
        meta.snaplen = self.snaplen as u32;
        let flow_id = meta.flow_id;
        let alert_ns = meta.alert_ts_ns;
        // A second tier on a flow already recording: its staged packets belong to the
        // older slice, and must reach the writer before the new one supersedes it.
        if self.recording.contains_key(&flow_id) {
            self.send_staging();
        }
        let Some(link) = &self.link else {
            return (false, false);
        };
        let max = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        // Sized exactly (a counting pass over the ring): an alert costs one allocation of
        // what its slice holds, not of the cap.
        let mut size = 0usize;
        self.ring.for_each(|r| {
            let s = record_size(r.data.len());
            if r.flow_id == flow_id && size + s <= max {
                size += s;
            }
        });
        let mut records = Vec::with_capacity(size);
        self.ring.collect_flow(flow_id, &mut records, max);
        let bytes = records.len() as u64;
        let msg = SliceMsg::Start {
            meta: Box::new(meta),
            records,
        };
        // The writer thread drains this queue continuously; an alert is rare, so a full
        // queue means the writer is stuck: live, lose the slice rather than stall capture.
        if link.send(msg).is_err() {
            self.stats.lost_messages += 1;
            return (false, false);
        }
        self.stats.started += 1;
        if !record {
            self.send_end(flow_id, SliceEnd::FlowEnded, 0);
            return (true, false);
        }
        let already = self.recording.contains_key(&flow_id);
        if !already && self.recording.len() >= self.max_recording {
            self.stats.refused += 1;
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
        match link.send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(SliceMsg::Packets { mut buf, .. }))
            | Err(TrySendError::Disconnected(SliceMsg::Packets { mut buf, .. })) => {
                // Each slice's sidecar must own up to its gap.
                for r in super::records(&buf) {
                    self.stats.dropped += 1;
                    if let Some(rec) = self.recording.get_mut(&r.flow_id) {
                        rec.dropped += 1;
                    }
                }
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
        if link.send(msg).is_err() {
            if self.pending_ends.len() < self.pending_ends.capacity() {
                self.pending_ends.push((flow_id, reason, dropped));
            } else {
                self.stats.lost_messages += 1;
            }
        }
    }

    /// Cuts the slices the output thread asked for, for flows whose packets this worker's
    /// ring holds (each batch; the flows have ended, so a slice is the ring's packets only).
    pub fn serve_requests(&mut self) {
        loop {
            let Some(meta) = self.link.as_ref().and_then(|l| l.requests.try_recv().ok()) else {
                return;
            };
            self.cut(meta);
        }
    }

    /// After the worker's last packet: serves requests until the output thread is done
    /// (it closes the queue), so alerts raised at the very end still get their slices.
    pub fn serve_until_closed(mut self) {
        self.send_staging();
        self.retry_ends();
        loop {
            let Some(meta) = self.link.as_ref().and_then(|l| l.requests.recv().ok()) else {
                return;
            };
            self.cut(meta);
            self.retry_ends();
        }
    }

    fn cut(&mut self, mut meta: SliceMeta) {
        let mut first: Option<(u16, Vec<u8>, u32)> = None;
        self.ring.for_each(|r| {
            if first.is_none() && r.flow_id == meta.flow_id {
                first = Some((r.linktype, r.data.to_vec(), r.wire_len));
            }
        });
        let Some((linktype, data, wire_len)) = first else {
            return; // not this worker's flow, or the ring no longer holds it
        };
        // The 5-tuple, oriented from the alert's source, from the flow's first packet.
        let link = crate::decode::LinkType::from_dlt(i32::from(linktype));
        if let Ok(m) = crate::decode::decode(link, &data, wire_len) {
            meta.proto = m.proto;
            let (a, b) = (m.src.to_ip(m.ipv6), m.dst.to_ip(m.ipv6));
            if meta.src == b {
                (meta.sport, meta.dport) = (m.dport, m.sport);
                meta.dst = a;
            } else {
                (meta.sport, meta.dport) = (m.sport, m.dport);
                meta.src = a;
                meta.dst = b;
            }
        }
        meta.linktype = linktype;
        self.start_with(meta, false);
    }

    /// Retries the ends the writer had no room for (each batch).
    pub fn retry_ends(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        while let Some(&(flow_id, reason, dropped)) = self.pending_ends.first() {
            let msg = SliceMsg::End {
                worker: link.worker,
                flow_id,
                reason,
                dropped,
            };
            if link.send(msg).is_err() {
                return;
            }
            self.pending_ends.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorder for worker 0 attached to a writer channel of `queue` messages (the
    /// receiving end returned) and its buffer pool (the writer's return side returned).
    fn attached(
        cfg: &SliceConfig,
        queue: usize,
    ) -> (Recorder, Receiver<SliceMsg>, Vec<Sender<Vec<u8>>>) {
        let mut r = Recorder::new(cfg);
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let Pools { returns, mut takes } = pools(1);
        r.attach(SliceLink {
            worker: 0,
            tx,
            pool: takes.remove(0),
            lossless: false,
            requests: crossbeam_channel::never(),
        });
        (r, rx, returns)
    }
    use std::net::IpAddr;

    fn meta(flow_id: u64) -> SliceMeta {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        SliceMeta {
            id: format!("{flow_id}-large_outbound_transfer-0"),
            detector: "large_outbound_transfer",
            worker: 0,
            flow_id,
            proto: 6,
            src: ip,
            sport: 1,
            dst: ip,
            dport: 2,
            alert_ts_ns: 1_000,
            linktype: 1,
            snaplen: 0,
        }
    }

    fn rec(flow_id: u64, ts_ns: u64, data: &[u8]) -> Record<'_> {
        Record {
            flow_id,
            ts_ns,
            wire_len: data.len() as u32,
            flags: 0,
            linktype: 1,
            data,
        }
    }

    /// A writer that never drains: live capture must drop and count, never wait.
    #[test]
    fn a_stuck_writer_costs_packets_not_time() {
        let cfg = SliceConfig {
            ring_bytes: 1 << 20,
            ..SliceConfig::default()
        };
        let (mut r, rx, returns) = attached(&cfg, 2);
        let data = vec![0u8; 1400];
        r.ring.push(&rec(7, 900, &data));
        assert_eq!(r.start(meta(7)), (true, true));
        let started = std::time::Instant::now();
        for i in 0..20_000u64 {
            assert_eq!(r.stage(&rec(7, 1_000 + i, &data)), None);
            if i % 100 == 0 {
                r.send_staging();
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // One queue slot went to the start, one to a staging buffer; the other buffers
        // (8 MiB, ~5 900 of these records) filled and stayed staged or were refused: the
        // rest was dropped.
        assert!(r.stats.dropped > 10_000, "{:?}", r.stats);
        assert_eq!(r.stats.started, 1);
        // A second slice cannot even be announced: counted, no slice id.
        r.ring.push(&rec(8, 900, &data));
        assert_eq!(r.start(meta(8)), (false, false));
        assert_eq!(r.stats.lost_messages, 1);
        drop((rx, returns));
    }

    #[test]
    fn caps_end_the_recording() {
        let cfg = SliceConfig {
            ring_bytes: 1 << 20,
            max_bytes: 10_000,
            ..SliceConfig::default()
        };
        let (mut r, rx, returns) = attached(&cfg, 64);
        let data = vec![0u8; 1000];
        assert_eq!(r.start(meta(7)), (true, true));
        let mut ended = None;
        for i in 0..100u64 {
            if let Some(e) = r.stage(&rec(7, 1_000 + i, &data)) {
                ended = Some((i, e));
                break;
            }
        }
        // 1032-byte records: 9 fit in 10 000 bytes, the 10th ends the slice.
        assert_eq!(ended, Some((9, SliceEnd::MaxBytes)));
        let msgs: Vec<SliceMsg> = rx.try_iter().collect();
        assert!(matches!(msgs.first(), Some(SliceMsg::Start { .. })));
        assert!(matches!(
            msgs.last(),
            Some(SliceMsg::End {
                reason: SliceEnd::MaxBytes,
                ..
            })
        ));
        let staged: usize = msgs
            .iter()
            .map(|m| match m {
                SliceMsg::Packets { buf, .. } => crate::slice::records(buf).count(),
                _ => 0,
            })
            .sum();
        assert_eq!(staged, 9);
        drop(returns);
    }

    /// The recordings table: alerts on more flows than `max_recording` get a slice of the
    /// ring's packets only, and each refusal is counted; a second alert on a flow already
    /// recording is not a refusal, and an ended recording makes room.
    #[test]
    fn recordings_beyond_max_recording_are_refused_and_counted() {
        let cfg = SliceConfig {
            ring_bytes: 1 << 20,
            max_recording: 3,
            ..SliceConfig::default()
        };
        let (mut r, _rx, _r) = attached(&cfg, 1024);
        for flow in 0..10u64 {
            let recording = flow < 3;
            assert_eq!(r.start(meta(flow)), (true, recording), "flow {flow}");
        }
        assert_eq!(r.recordings(), (3, 3, 7));
        assert_eq!(
            r.start(meta(1)),
            (true, true),
            "a higher tier on a recording flow"
        );
        r.end(0, SliceEnd::FlowEnded);
        assert_eq!(r.start(meta(10)), (true, true));
        assert_eq!(r.start(meta(11)), (true, false));
        assert_eq!(r.recordings(), (3, 3, 8));
        assert_eq!(r.stats.refused, 8);
    }

    #[test]
    fn keep_applies_the_payload_rule_after_the_first_packets() {
        let cfg = SliceConfig {
            snaplen: 1000,
            full_packets: 3,
            payload_bytes: 10,
            ..SliceConfig::default()
        };
        let r = Recorder::new(&cfg);
        assert_eq!(r.keep(1500, 54, 3), (1000, 0));
        assert_eq!(r.keep(1500, 54, 4), (64, FLAG_PAYLOAD_CUT));
        assert_eq!(r.keep(60, 54, 4), (60, 0));
    }
}
