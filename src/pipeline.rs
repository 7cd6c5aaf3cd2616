//! Glue between a worker and the output thread, shared by replay and live capture.
//!
//! A [`Driver`] owns one [`Worker`], hands its events to the output thread and publishes its
//! counters. Offline it waits when the output channel is full (nothing may be lost); live it
//! never waits: an event that does not fit is dropped and counted, so a slow disk cannot
//! slow capture. Counters are plain integers on the worker, copied into a shared snapshot
//! every [`PUBLISH_EVERY`] packets and on every tick, never per packet, into its
//! [`WorkerShared`] slot, where the stats line, `/metrics` and the API's requests (top flows,
//! ring packets) meet it.

use crate::decode::DecodeError;
use crate::event::{EventKey, OutMsg};
use crate::flow::top::{TopBy, TopFlow};
use crate::slice::PcapFilter;
use crate::stats::{mono_ns, new_histogram, record, Windowed};
use crate::worker::{Worker, WorkerStats};
use crossbeam_channel::{Sender, TrySendError};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Longest a worker waits to hand over an alert when the output queue is full.
pub const ALERT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

pub use crate::capture::PUBLISH_EVERY;

/// Flows ended per step at end of input or shutdown, before their events are handed over.
const FINISH_BATCH: usize = 1024;

/// Longest a live worker spends ending its open flows once asked to stop. systemd kills a
/// service that has not exited `TimeoutStopSec` after SIGTERM, and a kill in the middle of
/// the state snapshot would lose the history; the flow tables are the one part of the stop
/// whose size is not bounded by a small table (up to 16 M flows a worker), so their part
/// is bounded in time. Ending flows and writing their records runs at about 750 000 flows a
/// second, so the default tables (2 × 262 144 flows) end well inside this; the flows of a
/// bigger table left when it runs out are counted (`flows_unended` in the final stats
/// line), not written.
pub const STOP_FLOWS_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);

/// A worker's counters at one moment, as the stats line and metrics see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Flow-stage counters.
    pub flows: WorkerStats,
    /// Flows in the table now.
    pub flows_active: u64,
    /// Flow table capacity.
    pub flows_capacity: u64,
    /// Frames seen by this worker's capture handle (live) .
    pub frames: u64,
    /// Frames this worker could not decode, by reason (live, fanout mode).
    pub decode_errors: [u64; DecodeError::ALL.len()],
    /// Packets the kernel received on this handle (libpcap `ps_recv`).
    pub kernel_received: u64,
    /// Packets the kernel dropped for lack of buffer space on this handle (`ps_drop`).
    pub kernel_dropped: u64,
    /// Packets the interface or driver dropped (`ps_ifdrop`).
    pub interface_dropped: u64,
    /// Events (flow records, DNS messages, volume reports) dropped because the output
    /// thread was behind.
    pub events_dropped: u64,
    /// Open flows a stopping live worker could not end within [`STOP_FLOWS_BUDGET`]: no
    /// record was written for them.
    pub flows_unended: u64,
    /// Alerts dropped after waiting [`ALERT_WAIT`] for the output thread.
    pub alerts_dropped: u64,
    /// Packets dropped inside outflow because this worker's queue was full (fallback mode).
    pub queue_dropped: u64,
    /// Fragment tables of this capture thread or fanout worker (see
    /// [`crate::capture::frag::READER_TABLES`]): (live entries, capacity, live entries
    /// overwritten) each.
    pub fragments: [crate::stats::Occupancy; 2],
    /// Tunnels, MPLS, PPPoE and offloaded frames this capture thread or fanout worker
    /// decoded.
    pub encap: crate::decode::EncapCounts,
}

/// Where a worker's counters are published; read by the stats line and /metrics.
pub type Published = Arc<WorkerShared>;

/// Runs one worker's output side.
pub struct Driver {
    /// The worker.
    pub worker: Worker,
    id: usize,
    out: Sender<OutMsg>,
    lossless: bool,
    /// Counters the worker itself cannot know (capture side), merged into publications.
    pub extra: Snapshot,
    published: Option<Published>,
    /// Worker time per packet (ns) since the last publication.
    processing: Histogram<u64>,
    /// The newest top-flows request answered.
    top_served: u64,
    /// The newest /api/pcap request answered.
    pcap_served: u64,
    /// When the packets being processed were read (see [`mono_ns`]); stamped on alerts
    /// for the detection-latency metric. 0 = stamp at hand-over.
    pub read_mono_ns: u64,
    /// DNS event boxes coming back from the output thread.
    dns_recycle: Option<crossbeam_channel::Receiver<Box<crate::dns::DnsEvent>>>,
    /// Time allowed to end the open flows at stop (live; `None` = end them all, as a
    /// replay must).
    stop_budget: Option<std::time::Duration>,
}

impl Driver {
    /// A driver for worker `id`. `lossless` makes it wait for the output thread (replay).
    pub fn new(
        worker: Worker,
        id: usize,
        out: Sender<OutMsg>,
        lossless: bool,
        published: Option<Published>,
    ) -> Driver {
        Driver {
            worker,
            id,
            out,
            lossless,
            extra: Snapshot::default(),
            published,
            processing: new_histogram(),
            top_served: 0,
            pcap_served: 0,
            read_mono_ns: 0,
            dns_recycle: None,
            stop_budget: None,
        }
    }

    /// Bounds the time [`Driver::finish`] spends ending flows (see [`STOP_FLOWS_BUDGET`]).
    pub fn set_stop_budget(&mut self, budget: std::time::Duration) {
        self.stop_budget = Some(budget);
    }

    /// Takes DNS event boxes back from the output thread over `rx` (see
    /// [`crate::event::Event::Dns`]).
    pub fn recycle_dns_from(&mut self, rx: crossbeam_channel::Receiver<Box<crate::dns::DnsEvent>>) {
        self.dns_recycle = Some(rx);
    }

    /// Records that `packets` packets took `ns` nanoseconds of this worker's time.
    #[inline]
    pub fn record_processing(&mut self, ns: u64, packets: u64) {
        if let Some(per) = ns.checked_div(packets) {
            record(&mut self.processing, per, packets);
        }
    }

    /// Processes a batch (see [`Worker::packets`]), handing events over whenever a mass
    /// expiry fills the worker's buffer.
    pub fn packets(&mut self, batch: &crate::capture::Batch) {
        let mut done = 0;
        while let Some(rest) = batch.packets.get(done..).filter(|r| !r.is_empty()) {
            done += self.worker.packets(rest, |p| batch.bytes(p));
            if done < batch.packets.len() {
                self.hand_over_expiries();
            }
        }
    }

    /// Expires the flows due at `clock_ns` a chunk at a time, each chunk handed over with
    /// its progress, so a mass expiry never piles up in memory.
    pub fn advance(&mut self, clock_ns: u64) {
        while !self
            .worker
            .advance_some(clock_ns, crate::worker::EXPIRE_CHUNK / 2)
        {
            self.hand_over_expiries();
        }
    }

    fn hand_over_expiries(&mut self) {
        self.flush();
        if let Some(k) = self.worker.last_expiry() {
            // Later expiries are due no earlier, but flows due at the same instant in two
            // timer classes do not come out in id order: promise only the instant.
            self.progress(EventKey {
                time_ns: k.time_ns,
                class: 0,
                id: 0,
                sub: 0,
            });
        }
    }

    /// Hands the worker's pending events to the output thread.
    #[inline]
    pub fn flush(&mut self) {
        if let Some(rx) = &self.dns_recycle {
            self.worker.refill_dns(rx);
        }
        let (out, lossless) = (&self.out, self.lossless);
        let mut dropped = 0u64;
        let mut alerts_dropped = 0u64;
        let read_ns = self.read_mono_ns;
        for (k, mut e) in self.worker.drain() {
            let alert = if let crate::event::Event::Alert(a) = &mut e {
                a.read_mono_ns = if read_ns == 0 { mono_ns() } else { read_ns };
                true
            } else {
                false
            };
            let msg = OutMsg::Event(k, e);
            if lossless {
                let _ = out.send(msg);
            } else if alert {
                // An alert fires once (its latch is set): it may wait for room behind a
                // flood of DNS events and flow records, briefly, rather than be lost.
                if out.send_timeout(msg, ALERT_WAIT).is_err() {
                    alerts_dropped += 1;
                }
            } else if let Err(TrySendError::Full(_)) = out.try_send(msg) {
                dropped += 1;
            }
        }
        self.extra.events_dropped += dropped;
        self.extra.alerts_dropped += alerts_dropped;
    }

    /// Tells the output thread this worker will produce no event below `upto`.
    pub fn progress(&mut self, upto: EventKey) {
        let msg = OutMsg::Progress {
            worker: self.id,
            upto,
        };
        if self.lossless {
            let _ = self.out.send(msg);
        } else {
            let _ = self.out.try_send(msg);
        }
    }

    /// Copies the counters and the processing-time histogram into the shared place, and
    /// answers a pending top-flows request. One lock each per publication, never per packet.
    pub fn publish(&mut self) {
        self.worker.flush_slices();
        let Some(p) = &self.published else {
            return;
        };
        let snap = Snapshot {
            flows: self.worker.stats,
            flows_active: self.worker.active_flows() as u64,
            flows_capacity: self.worker.table().capacity() as u64,
            ..self.extra
        };
        if let Ok(mut g) = p.snap.lock() {
            *g = snap;
        }
        if !self.processing.is_empty() {
            if let Ok(mut h) = p.processing.lock() {
                h.add(&self.processing);
            }
            self.processing.reset();
        }
        if let Some((generation, by)) = p.top.pending(self.top_served) {
            self.top_served = generation;
            let flows = self.worker.top_flows(by, crate::flow::top::TOP_MAX);
            if let Ok(mut a) = p.top.answer.lock() {
                a.generation = generation;
                a.by = Some(by);
                a.flows = flows;
            }
        }
        if let Some((generation, filter)) = p.pcap.pending(self.pcap_served) {
            self.pcap_served = generation;
            let max = filter.max_bytes.min(crate::slice::PCAP_MAX);
            let records = self.worker.ring_query(&filter, max);
            if let Ok(mut a) = p.pcap.answer.lock() {
                *a = (generation, records);
            }
        }
    }

    /// Says that this worker's capture loop has stopped reading (see
    /// [`crate::telemetry::WorkerShared::capture_stopped`]).
    pub fn capture_stopped(&self) {
        if let Some(p) = &self.published {
            p.capture_stopped.store(true, Ordering::Relaxed);
        }
    }

    /// Answers pending top-flows and pcap requests (an idle worker calls this while it
    /// waits for packets).
    pub fn serve_requests(&mut self) {
        if self.published.as_ref().is_some_and(|p| {
            p.top.pending(self.top_served).is_some() || p.pcap.pending(self.pcap_served).is_some()
        }) {
            self.publish();
        }
    }

    /// Ends every open flow, hands everything over and says so; then, with the hand-over
    /// to the output thread closed, serves the output thread's slice requests from this
    /// worker's ring until it is done (see [`crate::slice::recorder::Recorder::serve_until_closed`]).
    /// Returns the counters.
    pub fn finish(self) -> Snapshot {
        let (snap, slices) = self.finish_events();
        slices.serve_until_closed();
        snap
    }

    fn finish_events(mut self) -> (Snapshot, crate::slice::recorder::Recorder) {
        // The last events are not droppable: wait for room even live. Flows are ended a
        // batch at a time, each batch handed over before the next is built, so the bounded
        // queue to the output thread holds the memory in check (back-pressure), whatever
        // the table holds. A live stop has a deadline (systemd's), which also bounds the
        // wait for room; what does not fit is counted.
        let until = self.stop_budget.map(|b| std::time::Instant::now() + b);
        let out = &self.out;
        let send = |msg: OutMsg| match until {
            Some(u) => out.send_deadline(msg, u).is_ok(),
            None => out.send(msg).is_ok(),
        };
        loop {
            if until.is_some_and(|u| std::time::Instant::now() >= u) {
                self.extra.flows_unended = self.worker.active_flows() as u64;
                if self.extra.flows_unended > 0 {
                    tracing::warn!(
                        worker = self.id,
                        flows = self.extra.flows_unended,
                        budget = ?self.stop_budget,
                        "stopping: the time to end open flows ran out; these flows get no record"
                    );
                }
                break;
            }
            let last = self.worker.finish_some(FINISH_BATCH);
            for (k, e) in self.worker.drain() {
                if !send(OutMsg::Event(k, e)) {
                    self.extra.events_dropped += 1;
                }
            }
            let Some(id) = last else {
                break;
            };
            send(OutMsg::Progress {
                worker: self.id,
                upto: EventKey {
                    time_ns: u64::MAX,
                    class: 2,
                    id,
                    sub: u32::MAX,
                },
            });
        }
        // Done must arrive (the output thread waits for every worker's), deadline or not.
        let _ = self.out.send(OutMsg::Done { worker: self.id });
        self.publish();
        if let Some(p) = &self.published {
            p.alive.store(false, Ordering::Relaxed);
        }
        let snap = Snapshot {
            flows: self.worker.stats,
            flows_active: 0,
            flows_capacity: self.worker.table().capacity() as u64,
            ..self.extra
        };
        let off = crate::config::SliceConfig {
            ring_bytes: 0,
            ..crate::config::SliceConfig::default()
        };
        let slices = std::mem::replace(
            &mut self.worker.slices,
            crate::slice::recorder::Recorder::new(&off),
        );
        // `self` (with its sender to the output thread) is dropped here, so the output
        // thread can finish while this worker still answers its slice requests.
        (snap, slices)
    }
}

/// A worker's answer to the latest top-flows request it saw.
#[derive(Debug, Default)]
pub struct TopAnswer {
    /// The request it answers.
    pub generation: u64,
    /// The ranking it used.
    pub by: Option<TopBy>,
    /// Its best flows, best first, at most [`TOP_MAX`].
    pub flows: Vec<TopFlow>,
}

/// Request/answer slot for the top-flows view of one worker.
#[derive(Debug, Default)]
pub struct TopSlot {
    /// `generation << 8 | TopBy code` of the newest request.
    wanted: AtomicU64,
    /// The newest answer.
    pub answer: Mutex<TopAnswer>,
}

impl TopSlot {
    /// Raises a request; returns its generation.
    pub fn request(&self, generation: u64, by: TopBy) -> u64 {
        self.wanted
            .store(generation << 8 | by.code(), Ordering::Release);
        generation
    }

    /// The newest request (generation, ranking), or None if none is pending beyond `served`.
    pub fn pending(&self, served: u64) -> Option<(u64, TopBy)> {
        let w = self.wanted.load(Ordering::Acquire);
        let generation = w >> 8;
        (generation > served).then(|| (generation, TopBy::from_code(w & 0xff)))
    }
}

/// Request/answer slot for `/api/pcap` on one worker.
#[derive(Debug, Default)]
pub struct PcapSlot {
    wanted: AtomicU64,
    request: Mutex<PcapFilter>,
    /// (generation answered, records).
    pub answer: Mutex<(u64, Vec<u8>)>,
}

impl PcapSlot {
    /// Raises a request.
    pub fn request(&self, generation: u64, f: PcapFilter) {
        // An answer that came too late for the previous request is not kept around.
        if let Ok(mut a) = self.answer.lock() {
            a.1 = Vec::new();
        }
        if let Ok(mut r) = self.request.lock() {
            *r = f;
        }
        self.wanted.store(generation, Ordering::Release);
    }

    /// The newest request beyond `served`, if any. One atomic load when there is none.
    pub fn pending(&self, served: u64) -> Option<(u64, PcapFilter)> {
        let generation = self.wanted.load(Ordering::Acquire);
        if generation <= served {
            return None;
        }
        let f = self.request.lock().ok()?.clone();
        Some((generation, f))
    }
}

/// One worker's (or capture thread's) published state.
#[derive(Debug)]
pub struct WorkerShared {
    /// Counters at the last publication.
    pub snap: Mutex<Snapshot>,
    /// Worker time per packet, in ns, merged from the worker at each publication.
    pub processing: Mutex<Windowed>,
    /// Top-flows requests and answers.
    pub top: TopSlot,
    /// `/api/pcap` requests and answers.
    pub pcap: PcapSlot,
    /// False once the worker's thread has ended.
    pub alive: AtomicBool,
    /// Set by a live capture loop the moment it stops reading (interface gone, capture
    /// error or shutdown), before the flows are ended: the control loop and
    /// `outflow_capturing` see a lost interface at once, not after the flush.
    pub capture_stopped: AtomicBool,
}

impl Default for WorkerShared {
    fn default() -> Self {
        WorkerShared {
            snap: Mutex::default(),
            processing: Mutex::default(),
            top: TopSlot::default(),
            pcap: PcapSlot::default(),
            alive: AtomicBool::new(true),
            capture_stopped: AtomicBool::new(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::tests::udp_packet;

    /// A driver holding `n` open flows, and the receiving end of its output channel.
    fn driver_with_flows(n: u32) -> (Driver, crossbeam_channel::Receiver<OutMsg>) {
        let cfg = crate::config::Config::default();
        let mut w = Worker::new(&cfg);
        for i in 0..n {
            let b = i.to_be_bytes();
            udp_packet(&mut w, [10, b[1], b[2], b[3]], u64::from(i) + 1);
        }
        let _ = w.drain().count();
        assert_eq!(w.active_flows(), n as usize);
        let (tx, rx) = crossbeam_channel::unbounded();
        (Driver::new(w, 0, tx, false, None), rx)
    }

    fn flow_ends(rx: &crossbeam_channel::Receiver<OutMsg>) -> (usize, bool) {
        let mut ends = 0;
        let mut done = false;
        for m in rx.try_iter() {
            match m {
                OutMsg::Event(_, crate::event::Event::Flow(_)) => ends += 1,
                OutMsg::Done { .. } => done = true,
                _ => {}
            }
        }
        (ends, done)
    }

    /// A live stop ends flows only within its budget: what is left is counted, and the
    /// output thread is still told the worker is done (it would wait for ever otherwise).
    #[test]
    fn a_live_stop_ends_flows_within_its_budget() {
        let (mut d, rx) = driver_with_flows(5000);
        d.set_stop_budget(std::time::Duration::ZERO);
        let snap = d.finish();
        assert_eq!(snap.flows_unended, 5000);
        assert_eq!(flow_ends(&rx), (0, true));

        // Without a budget (replay), every flow ends, in batches.
        let (d, rx) = driver_with_flows(5000);
        let snap = d.finish();
        assert_eq!(snap.flows_unended, 0);
        assert_eq!(flow_ends(&rx), (5000, true));
    }
}
