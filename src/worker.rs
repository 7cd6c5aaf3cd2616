//! The per-packet path of one worker: flow lookup, live counters, TCP state, timers, and the
//! inline per-flow detectors.
//!
//! A worker owns its flow table outright; nothing here locks or reads the wall clock. Time is
//! the replay/capture clock carried by each packet. Output (flow records, alerts) is
//! appended to a pending buffer with an [`EventKey`] and handed to the output thread after
//! each batch. The keys are chosen so that every event's key depends only on the input, not
//! on which worker produced it or when, which is what lets the output thread merge the
//! workers' streams into the same order for any number of workers:
//!
//! - timer expiry of a flow: `(last activity clock + timeout, 0, flow id)`;
//! - anything caused by a packet (alert, eviction, interim record, port reuse):
//!   `(packet clock, 1, packet seq, n-th event of that packet)`;
//! - flows still open at the end: `(MAX, 2, flow id)`.

use crate::capture::BatchPacket;
use crate::config::Config;
use crate::decode::{proto, tcp_flags, Fragment, PacketMeta};
use crate::defrag::{DefragStats, Reassembler};
use crate::detect::{Detector, Direction, LargeTransfer};
use crate::dns::extract::ExtractStats;
use crate::dns::{DnsEvent, DnsExtractor};
use crate::event::{Event, EventKey, Volume, VOLUME_STEP};
use crate::flow::{
    Closed, DirCounters, EndReason, Flow, FlowExtra, FlowKey, FlowRecord, FlowTable, RecentClosed,
    RecentStats, Side, TcpState, TimerClass,
};

/// The return path of DNS event boxes, output thread → workers (a bounded MPMC channel:
/// when it is full the box is simply freed).
#[derive(Clone, Debug)]
pub struct DnsRecycler {
    /// The output thread's end.
    pub tx: crossbeam_channel::Sender<Box<DnsEvent>>,
    /// The workers' end.
    pub rx: crossbeam_channel::Receiver<Box<DnsEvent>>,
}

/// DNS event boxes a worker keeps for reuse, and the capacity of the return channel:
/// enough for the events in flight in the output queue and one batch.
pub const DNS_POOL: usize = 8192;

impl DnsRecycler {
    /// A new return path.
    pub fn new() -> DnsRecycler {
        let (tx, rx) = crossbeam_channel::bounded(DNS_POOL);
        DnsRecycler { tx, rx }
    }
}

impl Default for DnsRecycler {
    fn default() -> Self {
        DnsRecycler::new()
    }
}

/// Names of a worker's bounded tables, in the order of [`WorkerStats::tables`] (metric
/// labels): the flow table, its side map of carried counters, the DNS-over-TCP reassembly
/// slots, the flows recording a pcap slice, the recently closed TCP connections, the IP
/// reassembly slots, the name tap's stash of split ClientHellos / request heads and the QUIC
/// tap's Initial decryption states.
pub const WORKER_TABLES: [&str; 8] = [
    "flows",
    "flow_carry",
    "dns_tcp",
    "slice_recordings",
    "tcp_recent_closed",
    "ip_reassembly",
    "tap_stash",
    "quic_initials",
];

/// Counters owned by one worker (plain integers, no atomics; read when it finishes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Packets processed.
    pub packets: u64,
    /// IP bytes of those packets.
    pub ip_bytes: u64,
    /// Wire bytes of those packets (frame length on the wire).
    pub wire_bytes: u64,
    /// Flows created.
    pub flows_created: u64,
    /// Flow records by [`EndReason`] (indexed like `EndReason::ALL`).
    pub records: [u64; EndReason::ALL.len()],
    /// Alerts by [`Detector`] (indexed like `Detector::ALL`).
    pub alerts: [u64; Detector::ALL.len()],
    /// Most flows held at once.
    pub peak_flows: u64,
    /// DNS messages seen by this worker.
    pub dns: ExtractStats,
    /// IP fragment reassembly.
    pub defrag: DefragStats,
    /// Pcap slices started and packets they lost.
    pub slices: crate::slice::recorder::RecorderStats,
    /// The packet ring: (packets held, bytes used, capacity in bytes, packets evicted).
    pub ring: (u64, u64, u64, u64),
    /// Counters of a reused tuple's earlier connection that could not be carried into the
    /// new one because the table's side map was full (see `FlowTable::carry_dropped`).
    pub carry_dropped: u64,
    /// Closed TCP connections remembered, and late packets that joined them.
    pub recent: RecentStats,
    /// The TCP tap for TLS / HTTP names.
    pub tap: crate::proto::tap::TapStats,
    /// The QUIC tap (client Initials decrypted for the ClientHello's names).
    pub quic_tap: crate::proto::tap::QuicTapStats,
    /// (entries, capacity, entries evicted or refused because the table was full) of each
    /// table in [`WORKER_TABLES`], refreshed with the ring and slice counters.
    pub tables: [(u64, u64, u64); WORKER_TABLES.len()],
}

/// One worker's state.
pub struct Worker {
    table: FlowTable,
    /// Recently closed TCP connections, for late FIN/RST (see [`RecentClosed`]).
    recent: RecentClosed,
    direction: Direction,
    large: LargeTransfer,
    active_timeout_ns: u64,
    /// First age report point of open home ↔ external flows (`long_connection.min_duration
    /// / 64`; `u64::MAX` when the detector is off).
    age_base_ns: u64,
    dns: DnsExtractor,
    defrag: Reassembler,
    pending: Vec<(EventKey, Event)>,
    /// Packet ring and pcap slices of flagged flows.
    pub slices: crate::slice::recorder::Recorder,
    /// pcap LINKTYPE of the packets being processed (for the ring and slices).
    linktype: u16,
    /// Counters.
    pub stats: WorkerStats,
    /// The key of the latest expiry (see [`last_expiry`](Self::last_expiry)).
    last_expiry: Option<EventKey>,
    /// DNS event boxes ready for reuse (see [`Event::Dns`]). Boxes, not values: they are
    /// the allocations being reused.
    #[allow(clippy::vec_box)]
    dns_pool: Vec<Box<DnsEvent>>,
    /// The open flows at the end, by id, and how many of them are ended
    /// ([`finish_some`](Self::finish_some)).
    finish_order: Vec<(u64, u32)>,
    finish_at: usize,
    /// What the decoder unwraps (to list a new tunnelled flow's tunnels).
    decap: crate::decode::Decap,
    /// The tunnels and names of each tunnelled or named flow, by table slot: a null pointer
    /// (no allocation) for the others, so the array costs 8 bytes a flow and its pages stay
    /// unmapped until such a flow lands on them. Filled when the flow is created (the frame
    /// is decoded once more, for new tunnelled flows only) or named, moved into its final
    /// record: one box per such flow, never one per packet.
    #[allow(clippy::vec_box)]
    extras: Vec<Option<Box<FlowExtra>>>,
    /// Reads TLS ClientHellos and HTTP request heads from clients' first bytes.
    tcp_tap: crate::proto::tap::TcpTap,
    /// The QUIC tap: a fixed pool of Initial decryption states.
    quic_tap: crate::proto::tap::QuicTap,
}

/// Flow-id bit of a tunnel's outer flow. Flow ids are the sequence number of a flow's first
/// frame, and a tunnelled frame opens two flows (inner and outer); the bit keeps their ids
/// apart (sequence numbers never reach 2^55).
pub const OUTER_FLOW_ID_BIT: u64 = 1 << 55;

/// Events buffered per batch before they are handed on; sized so a batch never needs more.
const PENDING_CAPACITY: usize = 4096;

/// Events a chunk of expiries may add to the buffer before it is handed over.
pub const EXPIRE_CHUNK: usize = PENDING_CAPACITY / 2;

impl Worker {
    /// A worker with its table allocated.
    pub fn new(cfg: &Config) -> Worker {
        let f = &cfg.flow;
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut timeouts = [0u64; 5];
        timeouts[TimerClass::TcpUnestablished as usize] = ns(f.tcp_unestablished_timeout);
        timeouts[TimerClass::Tcp as usize] = ns(f.tcp_timeout);
        timeouts[TimerClass::TcpClosing as usize] = ns(f.tcp_close_linger);
        timeouts[TimerClass::Udp as usize] = ns(f.udp_timeout);
        timeouts[TimerClass::Other as usize] = ns(f.other_timeout);
        Worker {
            table: FlowTable::new(f.capacity_per_worker, timeouts),
            recent: RecentClosed::new(
                RecentClosed::capacity_for(f.capacity_per_worker),
                ns(f.tcp_recent_closed),
            ),
            direction: Direction::new(&cfg.home_nets, &cfg.allow.dst_cidrs, &cfg.allow.src_cidrs),
            large: LargeTransfer::new(&cfg.detect.large_transfer),
            active_timeout_ns: ns(f.active_timeout),
            age_base_ns: age_base(cfg),
            dns: DnsExtractor::new(cfg.dns.enabled, &cfg.dns.ports),
            defrag: Reassembler::new(ns(f.fragment_timeout)),
            pending: Vec::with_capacity(PENDING_CAPACITY),
            slices: crate::slice::recorder::Recorder::new(&cfg.slice),
            linktype: 1,
            stats: WorkerStats::default(),
            finish_order: Vec::new(),
            finish_at: 0,
            dns_pool: Vec::with_capacity(DNS_POOL),
            last_expiry: None,
            decap: cfg.decap.decap(),
            // Slots are numbered from 1. `vec![None; n]` of `Option<Box<_>>` is a zeroed
            // allocation (lazily mapped pages).
            extras: vec![None; f.capacity_per_worker.clamp(1, crate::flow::MAX_CAPACITY) + 1],
            tcp_tap: crate::proto::tap::TcpTap::new(
                f.capacity_per_worker.clamp(1, crate::flow::MAX_CAPACITY) + 1,
            ),
            quic_tap: crate::proto::tap::QuicTap::new(
                f.capacity_per_worker.clamp(1, crate::flow::MAX_CAPACITY) + 1,
            ),
        }
    }

    /// Applies new detector thresholds and allowlists (SIGHUP). Flow state is kept; the
    /// home/allowlist classification of flows already open is not revisited.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.direction = Direction::new(&cfg.home_nets, &cfg.allow.dst_cidrs, &cfg.allow.src_cidrs);
        self.large = LargeTransfer::new(&cfg.detect.large_transfer);
        self.age_base_ns = age_base(cfg);
    }

    /// The link type of the packets that follow (a batch's, or a live handle's).
    #[inline]
    pub fn set_link(&mut self, link: crate::decode::LinkType) {
        self.linktype = u16::try_from(link.linktype()).unwrap_or(0);
    }

    /// Hands staged slice packets to the writer and refreshes the ring, slice and table
    /// counters (once per batch or tick).
    pub fn flush_slices(&mut self) {
        self.slices.send_staging();
        self.slices.retry_ends();
        self.slices.serve_requests();
        self.stats.slices = self.slices.stats;
        self.stats.carry_dropped = self.table.carry_dropped();
        self.stats.recent = self.recent.stats;
        self.stats.tap = self.tcp_tap.stats;
        self.stats.quic_tap = self.quic_tap.stats;
        let evicted = EndReason::ALL
            .iter()
            .position(|r| *r == EndReason::Evicted)
            .and_then(|i| self.stats.records.get(i))
            .copied()
            .unwrap_or(0);
        self.stats.tables = [
            (
                self.table.len() as u64,
                self.table.capacity() as u64,
                evicted,
            ),
            self.table.carry_occupancy(),
            self.dns.tcp_slots(),
            self.slices.recordings(),
            self.recent.occupancy(),
            self.defrag.occupancy(),
            self.tcp_tap.occupancy(),
            self.quic_tap.occupancy(),
        ];
        let r = &self.slices.ring;
        self.stats.ring = (
            r.len() as u64,
            r.used_bytes() as u64,
            r.capacity() as u64,
            r.stats.evicted,
        );
    }

    /// Takes back a DNS event box for reuse (see [`Event::Dns`]).
    #[inline]
    pub fn recycle_dns(&mut self, b: Box<DnsEvent>) {
        if self.dns_pool.len() < DNS_POOL {
            self.dns_pool.push(b);
        }
    }

    /// Takes back the boxes the output thread returned, up to the pool's size.
    pub fn refill_dns(&mut self, from: &crossbeam_channel::Receiver<Box<DnsEvent>>) {
        while self.dns_pool.len() < DNS_POOL {
            match from.try_recv() {
                Ok(b) => self.dns_pool.push(b),
                Err(_) => break,
            }
        }
    }

    /// Whether events are waiting to be drained.
    #[inline]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Flows currently tracked.
    pub fn active_flows(&self) -> usize {
        self.table.len()
    }

    /// The flow table (read-only), for tests and the stats line.
    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// The `limit` active outbound flows ranking highest by `by`, best first (the live
    /// "what is leaving right now" view). Scans the table: called only on request.
    pub fn top_flows(
        &self,
        by: crate::flow::top::TopBy,
        limit: usize,
    ) -> Vec<crate::flow::top::TopFlow> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // A min-heap of the best `limit` seen so far: O(n log limit), no big sort.
        // Worst first: the lowest rank, and among equals the highest flow id (the final
        // order breaks ties by ascending flow id).
        let mut heap: BinaryHeap<Reverse<(u64, Reverse<u64>, u32)>> = BinaryHeap::new();
        for slot in self.table.slots() {
            let Some(f) = self.table.load(slot) else {
                continue;
            };
            // Ranked on the flow's own counters: a TopFlow is built only for the winners.
            let (Some(side), Some(out)) = (f.outbound, f.out_total()) else {
                continue;
            };
            let inbound = match side {
                Side::Orig => &f.resp,
                Side::Resp => &f.orig,
            };
            heap.push(Reverse((
                by.rank(&out, inbound, f.first_ns, f.last_ns),
                Reverse(f.id),
                slot,
            )));
            if heap.len() > limit {
                heap.pop();
            }
        }
        let mut out: Vec<crate::flow::top::TopFlow> = heap
            .into_iter()
            .filter_map(|Reverse((_, _, slot))| {
                let mut t = self.table.load(slot).as_ref().and_then(top_flow)?;
                let names = self.extras.get(slot as usize).and_then(|n| n.as_deref());
                if let Some(n) = names.and_then(|e| e.names.as_ref()) {
                    let text =
                        |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                    t.server_name = text(n.server_name.get());
                    t.http_host = text(n.http_host.get());
                    t.alpn = text(n.alpn.get());
                    t.ja4 = n.ja4.map(|j| j.as_str().to_string());
                    t.ja3 = n.ja3.map(|j| j.as_str().to_string());
                    t.http_method = text(n.http_method.get());
                }
                Some(t)
            })
            .collect();
        out.sort_by(|a, b| b.rank(by).cmp(&a.rank(by)).then(a.flow_id.cmp(&b.flow_id)));
        out
    }

    /// The ring's packets matching `f`, as records, oldest first, at most `max` bytes.
    /// Scans the ring (decoding a packet only for address or port filters): on request only.
    pub fn ring_query(&self, f: &crate::slice::PcapFilter, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let tuple = f.src.is_some()
            || f.dst.is_some()
            || f.sport.is_some()
            || f.dport.is_some()
            || f.proto.is_some();
        self.slices.ring.for_each(|r| {
            if f.flow.is_some_and(|id| id != r.flow_id)
                || f.since_ns.is_some_and(|t| r.ts_ns < t)
                || f.until_ns.is_some_and(|t| r.ts_ns > t)
                || out.len() + crate::slice::record_size(r.data.len()) > max
            {
                return;
            }
            if tuple {
                let link = crate::decode::LinkType::from_dlt(i32::from(r.linktype));
                let Ok(m) = crate::decode::decode(link, r.data, r.wire_len) else {
                    return;
                };
                let (a, b) = (m.src.to_ip(m.ipv6), m.dst.to_ip(m.ipv6));
                let fwd = f.src.is_none_or(|x| x == a)
                    && f.dst.is_none_or(|x| x == b)
                    && f.sport.is_none_or(|x| x == m.sport)
                    && f.dport.is_none_or(|x| x == m.dport);
                let rev = f.src.is_none_or(|x| x == b)
                    && f.dst.is_none_or(|x| x == a)
                    && f.sport.is_none_or(|x| x == m.dport)
                    && f.dport.is_none_or(|x| x == m.sport);
                if !(fwd || rev) || f.proto.is_some_and(|p| p != m.proto) {
                    return;
                }
            }
            crate::slice::put_record(&mut out, r);
        });
        out
    }

    /// Events produced since the last drain, in production order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (EventKey, Event)> {
        self.pending.drain(..)
    }

    /// Processes a batch of packets in order. The flow-table memory of each packet is
    /// fetched a few packets ahead in three stages (bucket head, then the chain's first
    /// entry, then the LRU neighbours it will be relinked between), so the cache misses of
    /// a table much larger than the cache overlap the work on earlier packets instead of
    /// stalling it: measured on a 250 k-flow capture, the misses were two thirds of the
    /// worker's time.
    ///
    /// Returns how many packets were processed: fewer than all when the flows due before
    /// the next one would overfill the event buffer. The caller then hands the events over
    /// and calls again with the rest (see [`advance_some`](Self::advance_some)).
    pub fn packets<'a>(
        &mut self,
        packets: &'a [BatchPacket],
        bytes: impl Fn(&'a BatchPacket) -> &'a [u8],
    ) -> usize {
        const BUCKET_AHEAD: usize = 6;
        const CHAIN_AHEAD: usize = 4;
        const NEIGHBOURS_AHEAD: usize = 2;
        // Each packet's key and hash, computed once at the first stage and kept until the
        // packet itself is processed (a ring a little longer than the pipeline).
        const RING: usize = 8;
        let mut ring = [(FlowKey::default(), false, 0u64); RING];
        let table = &self.table;
        let keyed = |p: &BatchPacket| {
            let (k, hi) = FlowKey::of(&p.meta);
            (k, hi, table.hash(&k))
        };
        for (i, p) in packets.iter().take(BUCKET_AHEAD).enumerate() {
            if let Some(r) = ring.get_mut(i % RING) {
                *r = keyed(p);
            }
        }
        for (i, p) in packets.iter().enumerate() {
            if let Some(q) = packets.get(i + BUCKET_AHEAD) {
                let (k, hi) = FlowKey::of(&q.meta);
                let h = self.table.hash(&k);
                self.table.prefetch_bucket(h);
                if let Some(r) = ring.get_mut((i + BUCKET_AHEAD) % RING) {
                    *r = (k, hi, h);
                }
            }
            if let Some(&(_, _, h)) = ring.get((i + CHAIN_AHEAD) % RING) {
                self.table.prefetch_chain(h);
            }
            if let Some((k, _, h)) = ring.get((i + NEIGHBOURS_AHEAD) % RING) {
                self.table.prefetch_neighbours(*h, k);
            }
            let Some(&(key, src_is_hi, hash)) = ring.get(i % RING) else {
                continue;
            };
            // Two events per expiry at most (record and volume report).
            let room = EXPIRE_CHUNK.saturating_sub(self.pending.len()) / 2;
            if !self.advance_some(p.clock_ns, room) {
                return i;
            }
            self.packet_keyed(p, bytes(p), key, src_is_hi, hash);
        }
        packets.len()
    }

    /// Processes one decoded packet; `frame` is its captured bytes (for DNS).
    #[inline]
    pub fn packet(&mut self, p: &BatchPacket, frame: &[u8]) {
        self.advance(p.clock_ns);
        let (key, src_is_hi) = FlowKey::of(&p.meta);
        let hash = self.table.hash(&key);
        self.packet_keyed(p, frame, key, src_is_hi, hash);
    }

    /// [`packet`](Self::packet) with the packet's flow key, side and key hash computed,
    /// and the flows due before it already expired.
    #[inline]
    fn packet_keyed(
        &mut self,
        p: &BatchPacket,
        frame: &[u8],
        key: FlowKey,
        src_is_hi: bool,
        hash: u64,
    ) {
        // The one test reassembly costs an unfragmented packet.
        if p.meta.fragment != Fragment::None {
            self.fragment(p, frame, key, src_is_hi, hash);
            return;
        }
        self.track(p, frame, key, src_is_hi, hash, true);
    }

    /// An IP fragment: counted in its flow like any packet (unless the reader delivered it
    /// again for reassembly only), then offered to the reassembler, never to the parsers
    /// directly: a fragment's payload is not a message.
    #[inline(never)]
    fn fragment(
        &mut self,
        p: &BatchPacket,
        frame: &[u8],
        key: FlowKey,
        src_is_hi: bool,
        hash: u64,
    ) {
        if p.held {
            self.reassemble(p, frame, None, HELD_SUB);
        } else if let Some((flow_id, sub)) = self.track(p, frame, key, src_is_hi, hash, false) {
            self.reassemble(p, frame, Some(flow_id), sub);
        }
    }

    /// Offers a fragment to the reassembler; `flow_id` is the flow it was counted in (`None`
    /// for a held fragment). A first fragment the DNS extractor wants opens a datagram; a
    /// completed datagram's UDP payload goes to the extractor's datagram parser, the same
    /// call an unfragmented packet's payload goes to. Its events follow the packet's own
    /// (`sub` onwards).
    fn reassemble(&mut self, p: &BatchPacket, frame: &[u8], flow_id: Option<u64>, mut sub: u32) {
        let m = &p.meta;
        let open = flow_id.filter(|_| self.dns.wants_datagram(m));
        let (dns, pending, pool) = (&mut self.dns, &mut self.pending, &mut self.dns_pool);
        self.defrag
            .offer(m, frame, p.clock_ns, open, |first, flow_id, datagram| {
                let Some(payload) = crate::defrag::udp_payload(first, datagram) else {
                    return false;
                };
                dns.datagram(first, payload, p.ts_ns, flow_id, &mut |ev| {
                    queue_dns(pool, pending, packet_key(p, &mut sub), ev)
                });
                true
            });
        self.stats.dns = self.dns.stats;
        self.stats.defrag = self.defrag.stats;
    }

    /// Drops the datagrams being reassembled whose time ran out by `clock_ns`. Per batch
    /// (and tick), so the counters at the end of input do not depend on which worker got
    /// which fragment.
    pub fn expire_fragments(&mut self, clock_ns: u64) {
        self.defrag.expire(clock_ns);
        self.stats.defrag = self.defrag.stats;
    }

    /// Counts a packet in its flow, runs the detectors and (with `tap`) the parsers on its
    /// payload; returns the flow's id and the sub-key for the packet's next event, or `None`
    /// if no flow could be made.
    #[inline(always)]
    fn track(
        &mut self,
        p: &BatchPacket,
        frame: &[u8],
        key: FlowKey,
        src_is_hi: bool,
        hash: u64,
        tap: bool,
    ) -> Option<(u64, u32)> {
        let m = &p.meta;
        if !p.outer_copy {
            // A tunnelled frame counts once, with its inner packet.
            self.stats.packets += 1;
            self.stats.ip_bytes += u64::from(m.ip_len);
            self.stats.wire_bytes += u64::from(p.wire_len);
        }
        // The outer copy has its frame's sequence number: its events take keys after the
        // inner packet's, which may be made on another worker.
        let mut sub = if p.outer_copy { OUTER_SUB } else { 0 };

        let mut slot = self.table.find(hash, &key);
        let mut flow = slot.and_then(|s| self.table.load(s));
        let mut carried = None;
        if let (Some(s), Some(old)) = (slot, flow) {
            // A new SYN on a connection that already closed is a new connection reusing
            // the port pair: end the old one now rather than merge them. Unless its
            // sequence number continues the old connection: then it is a retransmission
            // or a forgery the endpoints will ignore, and it stays in the old flow.
            let syn_only = m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            let reuse = m.proto == proto::TCP
                && syn_only
                && matches!(old.tcp, TcpState::Closed | TcpState::Reset)
                && !in_window(old.next_seq[sender(&old, src_is_hi)], m.tcp_seq);
            if reuse {
                if let Some(old) = self.table.remove(s) {
                    let reason = closing_reason(&old);
                    let extras = self.take_extras(s);
                    self.emit_record(&old, reason, packet_key(p, &mut sub), extras);
                    // The outbound count continues across the reuse (see Flow::carried).
                    carried = old.out_total().map(|c| (c, old.latch));
                }
                slot = None;
                flow = None;
            }
        }
        let (slot, mut flow) = match (slot, flow) {
            (Some(s), Some(f)) => (s, f),
            _ => self.create(p, frame, key, src_is_hi, hash, &mut sub)?,
        };
        if let Some((c, latch)) = carried {
            if flow.outbound.is_some() {
                flow.carried = c;
                flow.latch = latch;
            }
        }

        // The clock of the flow's previous packet (its own clock if it starts here).
        let prev_ns = flow.last_ns;
        let from = if src_is_hi == flow.orig_is_hi {
            Side::Orig
        } else {
            Side::Resp
        };
        // The taps look at a client's first TCP segment with payload or first UDP datagram
        // (QUIC), and at the next ones only while they ask for them (`flow.tap`): for any
        // other packet, these tests.
        let look = (m.proto == proto::TCP || m.proto == proto::UDP)
            && from == Side::Orig
            && m.payload_len > 0
            && (flow.tap || flow.orig.payload_bytes == 0)
            && tap
            && !p.outer_copy;
        let (c, flags) = match from {
            Side::Orig => (&mut flow.orig, &mut flow.orig_flags),
            Side::Resp => (&mut flow.resp, &mut flow.resp_flags),
        };
        count(c, m);
        *flags |= m.tcp_flags;
        flow.last_ns = p.clock_ns;
        if m.proto == proto::TCP {
            track_tcp(&mut flow, from, m);
        }
        if look {
            self.tap_client(p, frame, slot, &mut flow, &mut sub);
        }
        let class = timer_class(&flow);
        let alert = self.large.on_packet(&mut flow, from, p.ts_ns);
        let volume = step_volume(&flow, from, m.ip_len, p.ts_ns);
        // An open home ↔ external flow's age report: when this packet takes its age past a
        // report point. Young flows (nearly all) cost one comparison.
        let age = flow.outbound.is_some()
            && age_crossed(
                prev_ns.saturating_sub(flow.first_ns),
                p.clock_ns.saturating_sub(flow.first_ns),
                self.age_base_ns,
            );
        // Interim records fall on a grid of active timeouts from the flow's first packet:
        // one is due when this packet is the first past a grid line.
        let t = self.active_timeout_ns.max(1);
        let base = flow.first_ns;
        let interim = p.clock_ns.saturating_sub(base) / t > prev_ns.saturating_sub(base) / t;
        let snapshot = flow;
        self.table.store(slot, &flow);
        if flow.carried != DirCounters::default() {
            // What the table kept (its side map may have been full: counted once, here).
            flow.carried = self.table.load(slot).map(|f| f.carried).unwrap_or_default();
        }
        self.table.touch(slot, class, p.clock_ns);
        if self.slices.active() && !p.outer_copy {
            let (keep, flags) = self.slices.keep(
                frame.len(),
                usize::from(m.payload_offset),
                snapshot.orig.pkts + snapshot.resp.pkts,
            );
            let rec = crate::slice::Record {
                flow_id: snapshot.id,
                ts_ns: p.ts_ns,
                wire_len: p.wire_len,
                flags,
                linktype: self.linktype,
                data: frame.get(..keep).unwrap_or(frame),
            };
            self.slices.ring.push(&rec);
            if snapshot.recording && self.slices.stage(&rec).is_some() {
                flow.recording = false;
                self.table.store(slot, &flow);
            }
        }
        if tap && !p.outer_copy && self.dns.is_dns(m) {
            let pending = &mut self.pending;
            let pool = &mut self.dns_pool;
            self.dns
                .packet(m, frame, p.ts_ns, snapshot.id, from == Side::Orig, |ev| {
                    queue_dns(pool, pending, packet_key(p, &mut sub), ev)
                });
            self.stats.dns = self.dns.stats;
        }

        if let Some(v) = volume {
            self.pending
                .push((packet_key(p, &mut sub), Event::Volume(v)));
        }
        if age {
            // The capture clock the crossing was judged on (a packet's own timestamp may step
            // back), so the report lands on the point that was crossed.
            let v = volume_of(&snapshot, p.clock_ns, 0, 0, false);
            self.pending.push((packet_key(p, &mut sub), Event::Age(v)));
        }
        if let Some(mut a) = alert {
            if let Some(n) = self.stats.alerts.get_mut(a.detector as usize) {
                *n += 1;
            }
            if let Some(e) = self.extras.get(slot as usize).and_then(|e| e.as_deref()) {
                a.tunnel = e.tunnel.map(Box::new);
                a.names = e.names.map(Box::new);
            }
            if crate::slice::valid_id(&a.id) {
                let (exists, recording) = self.slices.start(crate::slice::SliceMeta {
                    id: a.id.clone(),
                    detector: a.detector.name(),
                    worker: 0,
                    flow_id: snapshot.id,
                    proto: a.proto,
                    src: a.src,
                    sport: a.sport,
                    dst: a.dst,
                    dport: a.dport,
                    alert_ts_ns: a.ts_ns,
                    linktype: self.linktype,
                    snaplen: 0,
                });
                if exists {
                    a.slice_id = Some(a.id.clone());
                }
                if recording {
                    flow.recording = true;
                    self.table.store(slot, &flow);
                }
            }
            self.pending
                .push((packet_key(p, &mut sub), Event::Alert(Box::new(a))));
        }
        if interim {
            let extras = self.extras.get(slot as usize).cloned().flatten();
            self.emit_record(
                &snapshot,
                EndReason::ActiveTimeout,
                packet_key(p, &mut sub),
                extras,
            );
        }
        Some((snapshot.id, sub))
    }

    /// Expires every flow whose idle timeout ends at or before `clock_ns`.
    #[inline]
    pub fn advance(&mut self, clock_ns: u64) {
        while !self.advance_some(clock_ns, usize::MAX) {}
    }

    /// Expires at most `max` of the flows whose idle timeout ends at or before `clock_ns`,
    /// in expiry order; true when none is left due. A gap in the traffic can make every
    /// open flow due at once (millions): the driver expires them a chunk at a time and
    /// hands each chunk over (see [`last_expiry`](Self::last_expiry)), so the events of a
    /// mass expiry never pile up anywhere.
    #[inline]
    pub fn advance_some(&mut self, clock_ns: u64, max: usize) -> bool {
        for _ in 0..max {
            let Some((at, slot)) = self.table.next_expiry() else {
                return true;
            };
            if at > clock_ns {
                return true;
            }
            let closing = self.table.class_of(slot) == Some(TimerClass::TcpClosing);
            let Some(flow) = self.table.remove(slot) else {
                return true;
            };
            // Floods expire flows by the million: fetch the next ones' memory now.
            self.table.prefetch_expiry();
            let reason = if closing {
                closing_reason(&flow)
            } else {
                EndReason::Idle
            };
            let key = EventKey {
                time_ns: at,
                class: 0,
                id: flow.id,
                sub: 0,
            };
            self.last_expiry = Some(key);
            let extras = self.take_extras(slot);
            let continues = self.emit_record(&flow, reason, key, extras);
            if closing {
                self.remember_closed(&flow, continues, at);
            }
        }
        self.table.next_expiry().is_none_or(|(at, _)| at > clock_ns)
    }

    /// The key of the latest expiry. Every expiry after it is due at the same instant or
    /// later, and packet events sort after the timers up to their clock, so its time is
    /// the progress to report after handing over a chunk of expiries.
    pub fn last_expiry(&self) -> Option<EventKey> {
        self.last_expiry
    }

    /// Ends every open flow (end of input or shutdown).
    pub fn finish(&mut self) {
        while self.finish_some(usize::MAX).is_some() {}
    }

    /// Ends up to `max` open flows (end of input or shutdown), in flow-id order; returns
    /// the id of the last one ended, or `None` when none is left. Called in batches with
    /// the events handed over (and progress reported up to that id) in between, so the
    /// output stage can write each batch at once: ending a million open flows never holds
    /// a million records anywhere. The order is the events' key order, which is what lets
    /// the output release them batch by batch; sorting the live flows costs 16 bytes a
    /// flow, once.
    pub fn finish_some(&mut self, max: usize) -> Option<u64> {
        if self.finish_order.is_empty() && self.finish_at == 0 {
            let table = &self.table;
            // Sized exactly: collecting would grow by doubling, and the abandoned buffers
            // of a 10 M-flow table's list showed up as 300 MB of extra peak RSS.
            let mut order = Vec::with_capacity(table.len());
            order.extend(
                table
                    .slots()
                    .filter_map(|s| table.id_of(s).map(|id| (id, s))),
            );
            order.sort_unstable();
            self.finish_order = order;
        }
        let mut last = None;
        for _ in 0..max {
            let Some(&(id, slot)) = self.finish_order.get(self.finish_at) else {
                break;
            };
            self.finish_at += 1;
            last = Some(id);
            // A connection that already closed ends as it closed, even if its linger had
            // not run out when the input did.
            let closing = self.table.class_of(slot) == Some(TimerClass::TcpClosing);
            if let Some(flow) = self.table.remove(slot) {
                let reason = if closing {
                    closing_reason(&flow)
                } else {
                    EndReason::EndOfInput
                };
                let key = EventKey {
                    time_ns: u64::MAX,
                    class: 2,
                    id: flow.id,
                    sub: 0,
                };
                let extras = self.take_extras(slot);
                self.emit_record(&flow, reason, key, extras);
            }
        }
        if last.is_none() {
            self.finish_order = Vec::new();
            self.finish_at = 0;
        }
        last
    }

    /// The tunnel list and names of the flow that was in `slot` (removed or being
    /// removed); frees its tap stash.
    #[inline]
    fn take_extras(&mut self, slot: u32) -> Option<Box<FlowExtra>> {
        // Read first: `take` writes, and a write would make the array's page resident for
        // every flow, tunnelled (named) or not (8 bytes a flow).
        let extra = match self.extras.get_mut(slot as usize) {
            Some(t) if t.is_some() => t.take(),
            _ => None,
        };
        self.tcp_tap.release(slot);
        self.quic_tap.release(slot);
        extra
    }

    /// Offers a client's TCP segment with payload or UDP datagram to its tap (the flow's
    /// first, or one it asked for); stores what it finds and sends the name on.
    #[inline(never)]
    fn tap_client(
        &mut self,
        p: &BatchPacket,
        frame: &[u8],
        slot: u32,
        flow: &mut Flow,
        sub: &mut u32,
    ) {
        use crate::proto::tap::Outcome;
        let m = &p.meta;
        let off = usize::from(m.payload_offset);
        let payload = frame.get(off..).unwrap_or(&[]);
        let payload = payload.get(..m.payload_len as usize).unwrap_or(payload);
        let udp = m.proto == proto::UDP;
        let outcome = if payload.is_empty() {
            Outcome::Done
        } else if udp {
            self.quic_tap.datagram(slot, flow.id, !flow.tap, payload)
        } else if flow.tap {
            self.tcp_tap.more(slot, flow.id, m.tcp_seq, payload)
        } else {
            self.tcp_tap.first(slot, flow.id, m.tcp_seq, payload)
        };
        flow.tap = outcome == Outcome::More;
        if !flow.tap {
            if udp {
                self.quic_tap.release(slot);
            } else {
                self.tcp_tap.release(slot);
            }
        }
        let Outcome::Found(names) = outcome else {
            return;
        };
        if let Some((name, source)) = names.name() {
            let k = &flow.key;
            let (client, server, server_port) = if flow.orig_is_hi {
                (k.hi, k.lo, k.lo_port)
            } else {
                (k.lo, k.hi, k.hi_port)
            };
            let ev = crate::proto::FlowName {
                ts_ns: p.ts_ns,
                flow_id: flow.id,
                ipv6: k.ipv6,
                client,
                server,
                server_port,
                name: crate::proto::Text::new(name),
                source,
            };
            self.pending
                .push((packet_key(p, sub), Event::Name(Box::new(ev))));
        }
        if let Some(e) = self.extras.get_mut(slot as usize) {
            e.get_or_insert_with(Box::default).names = Some(names);
        }
    }

    fn create(
        &mut self,
        p: &BatchPacket,
        frame: &[u8],
        key: FlowKey,
        src_is_hi: bool,
        hash: u64,
        sub: &mut u32,
    ) -> Option<(u32, Flow)> {
        if self.table.is_full() {
            let victim = self.table.least_recent()?;
            if let Some(old) = self.table.remove(victim) {
                let extras = self.take_extras(victim);
                let continues =
                    self.emit_record(&old, EndReason::Evicted, packet_key(p, sub), extras);
                // Evicted during its linger: late packets may still come.
                if matches!(old.tcp, TcpState::Closed | TcpState::Reset) {
                    self.remember_closed(&old, continues, p.clock_ns);
                }
            }
        }
        let m = &p.meta;
        // A TCP packet without SYN on the tuple of a connection that closed moments ago (a
        // FIN or RST retransmitted after the linger) belongs to that connection: it keeps
        // its originator and home side. A SYN is a new connection and never joins.
        let joined = if m.proto == proto::TCP && m.tcp_flags & tcp_flags::SYN == 0 {
            self.recent.find(&key, p.clock_ns)
        } else {
            None
        };
        // The originator sent the SYN. A SYN-ACK as first packet means we missed the SYN
        // and the sender is the responder; otherwise the first packet's sender originates.
        let synack = m.proto == proto::TCP
            && m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK;
        let src_is_orig = match joined {
            Some(c) => src_is_hi == c.orig_is_hi,
            None => !synack,
        };
        let orig_is_hi = src_is_hi == src_is_orig;
        let (orig, resp) = if src_is_orig {
            (m.src, m.dst)
        } else {
            (m.dst, m.src)
        };
        let first_ports = if src_is_orig {
            (m.sport, m.dport)
        } else {
            (m.dport, m.sport)
        };
        let outer = key.tunnel.is_outer();
        let outbound = match joined {
            Some(c) => c.outbound,
            // A tunnel's own flow (the mirror session) is transport, never an upload: its
            // bytes are counted again in the flows inside it.
            None if outer => None,
            None => self.direction.outbound(orig, resp, m.ipv6),
        };
        let flow = Flow {
            key,
            id: if outer {
                p.seq | OUTER_FLOW_ID_BIT
            } else {
                p.seq
            },
            orig_is_hi,
            first_ns: p.ts_ns,
            last_ns: p.ts_ns,
            orig: DirCounters::default(),
            resp: DirCounters::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: if m.proto == proto::TCP {
                TcpState::SynSent
            } else {
                TcpState::NotTcp
            },
            first_ports,
            outbound,
            latch: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            carried: DirCounters::default(),
            tap: false,
        };
        let slot = self
            .table
            .insert(hash, flow, timer_class(&flow), p.clock_ns)?;
        if let Some(c) = joined {
            self.recent.join(flow.id, c.flow_id);
        }
        self.stats.flows_created += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.table.len() as u64);
        if m.encap.depth > 0 && !outer {
            let link = crate::decode::LinkType::from_dlt(i32::from(self.linktype));
            let chain = crate::decode::tunnel_chain(link, frame, p.wire_len, &self.decap);
            if let Some(t) = self.extras.get_mut(slot as usize) {
                *t = Some(Box::new(FlowExtra {
                    tunnel: Some(chain),
                    names: None,
                }));
            }
        }
        Some((
            slot,
            Flow {
                last_ns: p.clock_ns,
                ..flow
            },
        ))
    }

    /// Remembers a closed connection that leaves the table at `clock_ns`, for late packets;
    /// `continues` is the first record's id if it was itself a late flow.
    fn remember_closed(&mut self, flow: &Flow, continues: Option<u64>, clock_ns: u64) {
        let closed = Closed {
            orig_is_hi: flow.orig_is_hi,
            flow_id: continues.unwrap_or(flow.id),
            outbound: flow.outbound,
        };
        self.recent.remember(&flow.key, closed, clock_ns);
    }

    /// Writes a flow's record (with its tunnel list, if any); returns the id of the first
    /// record it continues, if it is a late flow (see [`RecentClosed`]).
    fn emit_record(
        &mut self,
        flow: &Flow,
        reason: EndReason,
        key: EventKey,
        extra: Option<Box<FlowExtra>>,
    ) -> Option<u64> {
        if flow.recording {
            use crate::slice::SliceEnd;
            let end = match reason {
                EndReason::ActiveTimeout => None,
                EndReason::Fin | EndReason::Rst => Some(SliceEnd::FlowEnded),
                EndReason::Idle => Some(SliceEnd::Idle),
                EndReason::Evicted => Some(SliceEnd::Evicted),
                EndReason::EndOfInput => Some(SliceEnd::EndOfInput),
            };
            if let Some(e) = end {
                self.slices.end(flow.id, e);
            }
        }
        if let Some(i) = EndReason::ALL.iter().position(|r| *r == reason) {
            self.stats.records[i] += 1;
        }
        // The unreported rest of an outbound flow's volume is not sent: it is a function of
        // the record (see `end_volume`), which the output stage applies after the record.
        // Half the events of a flood of one-packet flows.
        let continues = self
            .recent
            .continues(flow.id, reason != EndReason::ActiveTimeout);
        self.pending.push((
            key,
            Event::Flow(FlowRecord {
                continues: continues.and_then(std::num::NonZeroU64::new),
                extra,
                ..FlowRecord::of(flow, reason)
            }),
        ));
        continues
    }
}

/// An outbound flow as the top-flows view shows it; `None` if it is not outbound.
fn top_flow(f: &Flow) -> Option<crate::flow::top::TopFlow> {
    let side = f.outbound?;
    let other = match side {
        Side::Orig => Side::Resp,
        Side::Resp => Side::Orig,
    };
    let (src, sport, dst, dport) = crate::detect::large_transfer::endpoints(f, side);
    Some(crate::flow::top::TopFlow {
        flow_id: f.id,
        proto: f.key.proto,
        src,
        sport,
        dst,
        dport,
        vlan: f.key.vlan,
        first_ns: f.first_ns,
        last_ns: f.last_ns,
        out: f.out_total().unwrap_or_default(),
        inbound: *f.side(other),
        state: tcp_state(f).name(),
        tuple: crate::flow::FlowTuple::of_flow(f),
        server_name: None,
        http_host: None,
        alpn: None,
        ja4: None,
        ja3: None,
        http_method: None,
    })
}

/// Volume reports fall on a grid of [`VOLUME_STEP`] IP bytes in each direction: a report
/// is sent by the packet that carries a direction's count past a multiple of the step, and
/// says how many whole steps were passed; the flow's end reports the rest. What has been
/// reported is therefore a function of the counters alone (the flow table keeps no
/// "reported" field), and the reports of a flow always sum to its totals.
fn step_volume(f: &Flow, from: Side, ip_len: u32, ts_ns: u64) -> Option<Volume> {
    let side = f.outbound?;
    let now = f.side(from).ip_bytes;
    let before = now.saturating_sub(u64::from(ip_len));
    let steps = now / VOLUME_STEP - before / VOLUME_STEP;
    if steps == 0 {
        return None;
    }
    let d = steps * VOLUME_STEP;
    let (d_out, d_in) = if from == side { (d, 0) } else { (0, d) };
    Some(volume_of(f, ts_ns, d_out, d_in, false))
}

/// The first age report point: `long_connection.min_duration / 64`, so `min_duration` is
/// the 7th point and its doublings the ones after.
fn age_base(cfg: &Config) -> u64 {
    let lc = &cfg.detect.long_connection;
    if lc.enabled {
        (u64::try_from(lc.min_duration.as_nanos()).unwrap_or(u64::MAX) / 64).max(1)
    } else {
        u64::MAX
    }
}

/// Whether a flow's age went past a report point `base × 2^k` between its previous packet
/// (`prev` ns old) and this one (`now` ns old). Stateless: each point is crossed by exactly
/// one packet, so no per-flow latch is needed.
#[inline]
fn age_crossed(prev: u64, now: u64, base: u64) -> bool {
    if now < base {
        return false;
    }
    prev < base || (now / base).ilog2() > (prev / base).ilog2()
}

fn volume_of(f: &Flow, ts_ns: u64, out_bytes: u64, in_bytes: u64, end: bool) -> Volume {
    let side = f.outbound.unwrap_or(Side::Orig);
    let other = match side {
        Side::Orig => Side::Resp,
        Side::Resp => Side::Orig,
    };
    let k = &f.key;
    let side_is_hi = (side == Side::Orig) == f.orig_is_hi;
    let (src, sport, dst, dport) = if side_is_hi {
        (k.hi, k.hi_port, k.lo, k.lo_port)
    } else {
        (k.lo, k.lo_port, k.hi, k.hi_port)
    };
    Volume {
        ts_ns,
        flow_id: f.id,
        ipv6: k.ipv6,
        src,
        dst,
        dport,
        sport,
        proto: k.proto,
        home_is_orig: side == Side::Orig,
        out_total: f.side(side).ip_bytes,
        in_total: f.side(other).ip_bytes,
        out_bytes,
        in_bytes,
        end,
        flow_start_ns: f.first_ns,
    }
}

#[inline]
fn count(c: &mut DirCounters, m: &PacketMeta) {
    c.pkts += 1;
    c.ip_bytes += u64::from(m.ip_len);
    c.payload_bytes += u64::from(m.payload_len);
}

/// Boxes a DNS event, reusing a box the output thread returned, and queues it.
#[allow(clippy::vec_box)] // the boxes are the allocations being reused (see `Event::Dns`)
fn queue_dns(
    pool: &mut Vec<Box<DnsEvent>>,
    pending: &mut Vec<(EventKey, Event)>,
    key: EventKey,
    ev: DnsEvent,
) {
    let b = match pool.pop() {
        Some(mut b) => {
            *b = ev;
            b
        }
        // Only until the boxes come back from the output thread.
        None => Box::new(ev),
    };
    pending.push((key, Event::Dns(b)));
}

/// First event sub-key of a held fragment. The reader gives held fragments the sequence
/// number of the first fragment they follow, so their events need keys after that packet's
/// own (a handful); at most one datagram completes per first fragment.
const HELD_SUB: u32 = 1 << 16;

/// First event sub-key of a tunnelled frame's outer copy ([`BatchPacket::outer_copy`]): it
/// shares the frame's sequence number with the inner packet, whose events (on this or
/// another worker) take the sub-keys from 0.
const OUTER_SUB: u32 = 1 << 24;

fn packet_key(p: &BatchPacket, sub: &mut u32) -> EventKey {
    let k = EventKey {
        time_ns: p.clock_ns,
        class: 1,
        id: p.seq,
        sub: *sub,
    };
    *sub += 1;
    k
}

/// Window within which a RST or SYN sequence number counts as part of a connection: the
/// largest unscaled TCP window. Endpoints ignore RSTs outside their receive window (RFC 793,
/// RFC 5961), so the sensor must too, or a forged RST would end the flow it is counting.
const SEQ_WINDOW: u32 = 65_535;

/// Whether `seq` is within [`SEQ_WINDOW`] of `next` (serial-number arithmetic).
fn in_window(next: Option<u32>, seq: u32) -> bool {
    next.is_some_and(|n| {
        let d = seq.wrapping_sub(n);
        d <= SEQ_WINDOW || d >= SEQ_WINDOW.wrapping_neg()
    })
}

/// Index of the side that sent a packet whose source is the key's `hi` end or not.
fn sender(f: &Flow, src_is_hi: bool) -> usize {
    if src_is_hi == f.orig_is_hi {
        0
    } else {
        1
    }
}

/// Updates sequence tracking and the TCP state for a packet from `from`.
fn track_tcp(f: &mut Flow, from: Side, m: &PacketMeta) {
    let i = Flow::idx(from);
    let flags = m.tcp_flags;
    if flags & tcp_flags::RST != 0 {
        // Honour a RST only if it fits the sender's sequence space (or we have not seen
        // enough to tell).
        let next = f.next_seq.get(i).copied().flatten();
        if next.is_none() || in_window(next, m.tcp_seq) {
            f.reset = true;
        }
    } else if m.payload_len > 0 && f.reset {
        // Data after a RST: the endpoints did not act on it.
        f.reset = false;
    }
    let len = m
        .payload_len
        .wrapping_add(u32::from(flags & tcp_flags::SYN != 0))
        .wrapping_add(u32::from(flags & tcp_flags::FIN != 0));
    let end = m.tcp_seq.wrapping_add(len);
    if let Some(slot) = f.next_seq.get_mut(i) {
        *slot = Some(match *slot {
            Some(n) if (end.wrapping_sub(n) as i32) <= 0 => n,
            _ => end,
        });
    }
    f.tcp = tcp_state(f);
}

/// TCP state from the flags each side has sent so far.
fn tcp_state(f: &Flow) -> TcpState {
    let all = f.orig_flags | f.resp_flags;
    if f.reset {
        TcpState::Reset
    } else if f.orig_flags & f.resp_flags & tcp_flags::FIN != 0 {
        TcpState::Closed
    } else if all & tcp_flags::FIN != 0 {
        TcpState::HalfClosed
    } else if f.orig_flags & tcp_flags::SYN == 0 {
        // Joined mid-connection. Established once both sides have spoken; until then the
        // short timeout applies, so a flood of one-packet "mid-stream" flows cannot hold
        // table slots for the full TCP timeout.
        if f.orig.pkts > 0 && f.resp.pkts > 0 {
            TcpState::Established
        } else {
            TcpState::SynSent
        }
    } else if f.resp_flags & tcp_flags::SYN == 0 {
        TcpState::SynSent
    } else if f.orig_flags & tcp_flags::ACK == 0 {
        TcpState::SynReceived
    } else {
        TcpState::Established
    }
}

fn timer_class(f: &Flow) -> TimerClass {
    match f.tcp {
        TcpState::NotTcp if f.key.proto == proto::UDP => TimerClass::Udp,
        TcpState::NotTcp => TimerClass::Other,
        TcpState::SynSent | TcpState::SynReceived => TimerClass::TcpUnestablished,
        TcpState::Established | TcpState::HalfClosed => TimerClass::Tcp,
        TcpState::Closed | TcpState::Reset => TimerClass::TcpClosing,
    }
}

fn closing_reason(f: &Flow) -> EndReason {
    if f.tcp == TcpState::Reset {
        EndReason::Rst
    } else {
        EndReason::Fin
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::Addr;
    use crate::event::end_volume;

    fn outbound_flow() -> Flow {
        Flow {
            key: FlowKey {
                lo: Addr::v4([10, 0, 0, 5]),
                hi: Addr::v4([203, 0, 113, 50]),
                lo_port: 51234,
                hi_port: 443,
                proto: proto::TCP,
                ..FlowKey::default()
            },
            id: 7,
            orig_is_hi: false,
            first_ns: 0,
            last_ns: 0,
            orig: DirCounters::default(),
            resp: DirCounters::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: TcpState::Established,
            first_ports: (51234, 443),
            outbound: Some(Side::Orig),
            latch: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            carried: DirCounters::default(),
            tap: false,
        }
    }

    /// The Ethernet frame `f`, stamped `ts_ns`, through `Worker::packet` as packet `seq`
    /// of its batch.
    pub(crate) fn feed(w: &mut Worker, seq: u64, ts_ns: u64, f: &[u8]) {
        use crate::decode::{decode, LinkType};
        let meta = decode(LinkType::Ethernet, f, f.len() as u32).unwrap();
        let p = BatchPacket {
            seq,
            ts_ns,
            clock_ns: ts_ns,
            wire_len: f.len() as u32,
            data_start: 0,
            cap_len: f.len() as u32,
            meta,
            outer_copy: false,
            held: false,
        };
        w.packet(&p, f);
    }

    /// One UDP packet from `src` to 198.51.100.1:9999 through `Worker::packet`, stamped
    /// 1 s + `seq` ns.
    pub(crate) fn udp_packet(w: &mut Worker, src: [u8; 4], seq: u64) {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, [198, 51, 100, 1], 64)
            .udp(40_000, 9999)
            .write(&mut f, &[0; 20])
            .unwrap();
        feed(w, seq, 1_000_000_000 + seq, &f);
    }

    /// An open TLS upload's `/api/flows/top` row carries what its ClientHello named: server
    /// name, ALPN, JA4 and JA3 (the JA4 README's example hello; its JA3 is the MD5 of
    /// `771,4865-...-53,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21-17513,,`).
    #[test]
    fn top_flows_rows_carry_the_client_hello_names() {
        let mut s = crate::gen::tls_session(
            "10.0.0.5:41000".parse().unwrap(),
            "162.125.6.20:443".parse().unwrap(),
            &crate::proto::tls::build::example_spec(b"content.dropboxapi.com"),
            2,
            1_000_000,
            1_000,
        );
        s.start_ns = 1_700_000_000_000_000_000;
        let mut w = Worker::new(&Config::default());
        // The handshake, the hello and part of the upload: the flow is still open.
        for (seq, pkt) in s.packets().take(40).enumerate() {
            feed(&mut w, seq as u64, pkt.ts_ns, &pkt.frame);
        }
        let top = w.top_flows(crate::flow::top::TopBy::OutBytes, 10);
        assert_eq!(top.len(), 1, "{top:?}");
        let t = &top[0];
        assert_eq!(t.server_name.as_deref(), Some("content.dropboxapi.com"));
        assert_eq!(t.alpn.as_deref(), Some("h2"));
        assert_eq!(
            t.ja4.as_deref(),
            Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
        );
        assert_eq!(t.ja3.as_deref(), Some("055de28834d66f42ea035fb88a209260"));
    }

    /// Volume reports fall on the 256 KiB grid of each direction and, with the end report,
    /// add up to the flow's IP bytes exactly, whatever the packet sizes.
    #[test]
    fn volume_reports_sum_to_the_flow_totals() {
        let mut f = outbound_flow();
        let (mut out, mut inb, mut reports) = (0u64, 0u64, 0);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 40 + (x % 1461) as u32;
            let from = if x % 5 == 0 { Side::Resp } else { Side::Orig };
            let c = match from {
                Side::Orig => &mut f.orig,
                Side::Resp => &mut f.resp,
            };
            c.pkts += 1;
            c.ip_bytes += u64::from(len);
            if let Some(v) = step_volume(&f, from, len, i) {
                assert!(!v.end);
                assert_eq!(v.out_bytes % VOLUME_STEP, 0);
                assert_eq!(v.in_bytes % VOLUME_STEP, 0);
                assert!(v.out_bytes > 0 || v.in_bytes > 0);
                // Reported so far never runs ahead of the counters.
                assert!(out + v.out_bytes <= f.orig.ip_bytes);
                assert!(inb + v.in_bytes <= f.resp.ip_bytes);
                out += v.out_bytes;
                inb += v.in_bytes;
                reports += 1;
            }
        }
        let end = end_volume(&FlowRecord::of(&f, EndReason::Fin)).expect("a remainder");
        assert!(end.end);
        assert_eq!(out + end.out_bytes, f.orig.ip_bytes);
        assert_eq!(inb + end.in_bytes, f.resp.ip_bytes);
        assert_eq!(end.out_total, f.orig.ip_bytes);
        assert_eq!((end.src, end.sport), (f.key.lo, 51234));
        assert_eq!((end.dst, end.dport), (f.key.hi, 443));
        assert!(end.home_is_orig);
        assert!(end_volume(&FlowRecord::of(&f, EndReason::ActiveTimeout)).is_none());
        // One report per whole step crossed in either direction, no more.
        assert_eq!(
            reports,
            f.orig.ip_bytes / VOLUME_STEP + f.resp.ip_bytes / VOLUME_STEP
        );
        // Not an outbound flow: nothing is reported.
        f.outbound = None;
        assert!(end_volume(&FlowRecord::of(&f, EndReason::Fin)).is_none());
        assert!(step_volume(&f, Side::Orig, 1 << 20, 0).is_none());
    }

    /// A mass expiry comes out a chunk at a time, in time order, and loses nothing.
    #[test]
    fn mass_expiry_is_handed_over_in_chunks() {
        let mut w = Worker::new(&Config::default());
        let n = 5000u32;
        for i in 0..n {
            udp_packet(&mut w, [10, 1, (i >> 8) as u8, i as u8], u64::from(i) + 1);
        }
        assert_eq!(w.drain().count(), 0);
        let (mut records, mut chunks, mut last) = (0u32, 0, None);
        loop {
            let done = w.advance_some(u64::MAX / 2, 1000);
            let events: Vec<_> = w.drain().collect();
            assert!(events.len() <= 2000);
            for (k, e) in events {
                if let Event::Flow(r) = e {
                    assert_eq!(r.reason, EndReason::Idle);
                    records += 1;
                }
                assert!(last.is_none_or(|l: u64| l <= k.time_ns), "time order");
                last = Some(k.time_ns);
            }
            chunks += 1;
            if done {
                break;
            }
        }
        assert_eq!(records, n);
        assert_eq!(chunks, 5);
        assert!(w.last_expiry().is_some());
        assert_eq!(w.active_flows(), 0);
    }

    /// The flow table: a flood of new flows on a full table evicts one flow per new flow,
    /// each evicted flow is written with the reason `evicted`, and the worker's table
    /// counters (what /metrics and the summary show) say exactly how many.
    #[test]
    fn flow_table_evictions_are_counted_exactly() {
        let mut cfg = Config::default();
        cfg.flow.capacity_per_worker = 100;
        let mut w = Worker::new(&cfg);
        let n = 1000u32;
        for i in 0..n {
            udp_packet(&mut w, [10, 1, (i >> 8) as u8, i as u8], u64::from(i) + 1);
        }
        let evicted = w
            .drain()
            .filter(|(_, e)| matches!(e, Event::Flow(r) if r.reason == EndReason::Evicted))
            .count();
        assert_eq!(evicted, 900);
        w.flush_slices();
        assert_eq!(w.stats.tables[0], (100, 100, 900));
        assert_eq!(WORKER_TABLES[0], "flows");
    }

    /// The QUIC tap's decryption states: 68 connections whose first client Initial carries
    /// only the first third of a ClientHello each hold a state; the pool has 64, so the last
    /// four take the states held longest. The table shows 64 in use and 4 evictions, the
    /// tap's own counter agrees, and ending the flows frees every state.
    #[test]
    fn quic_initial_states_are_a_table() {
        use crate::proto::tap::QUIC_SLOTS;
        use crate::proto::tls::build::{client_hello, example_spec};
        let hello = client_hello(&example_spec(b"content.dropboxapi.com"));
        let mut w = Worker::new(&Config::default());
        let n = QUIC_SLOTS as u64 + 4;
        for i in 0..n {
            let start = 1_700_000_000_000_000_000 + i * 1_000_000;
            let first = crate::gen::quic::quic_connection(
                format!("10.0.4.{}:{}", i + 1, 50_000 + i).parse().unwrap(),
                "162.125.6.21:443".parse().unwrap(),
                crate::proto::quic::Version::V1,
                &hello,
                3,
                0,
                0,
                start,
                1_000_000,
            )
            .swap_remove(0);
            feed(&mut w, i, first.ts_ns, &first.frame);
        }
        w.flush_slices();
        assert_eq!(WORKER_TABLES[7], "quic_initials");
        assert_eq!(w.stats.tables[7], (64, 64, 4));
        let q = w.stats.quic_tap;
        assert_eq!((q.looked, q.hellos, q.gave_up, q.evicted), (68, 0, 0, 4));
        w.finish();
        w.flush_slices();
        assert_eq!(w.stats.tables[7], (0, 64, 4), "every state freed");
    }

    /// A tunnelled frame gives two packets with the same sequence number: the inner one and
    /// the outer copy (on the worker of the tunnel's own flow). The events each makes must
    /// still have distinct keys: the output merges workers by key, and two equal keys from
    /// two workers come out in arrival order, which breaks the byte-identical output for
    /// any worker count. Here the table is full, so both packets of each frame evict a flow.
    #[test]
    fn inner_and_outer_copy_events_have_distinct_keys() {
        use crate::decode::{decode_frame, Decap, LinkType};
        let mut cfg = Config::default();
        cfg.flow.capacity_per_worker = 4;
        let mut w = Worker::new(&cfg);
        let mut keys = Vec::new();
        for i in 0..20u64 {
            let mut inner = Vec::new();
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 1, 0, i as u8], [198, 51, 100, 1], 64)
                .udp(40_000, 9999)
                .write(&mut inner, &[0; 20])
                .unwrap();
            let f = crate::gen::wrap(crate::gen::Wrap::Vxlan { vni: 5 }, &inner, i as u32);
            let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &Decap::DEFAULT).unwrap();
            let t = 1_000_000_000 + i;
            let p = BatchPacket {
                seq: i + 1,
                ts_ns: t,
                clock_ns: t,
                wire_len: f.len() as u32,
                data_start: 0,
                cap_len: f.len() as u32,
                meta: d.meta,
                outer_copy: false,
                held: false,
            };
            w.packet(&p, &f);
            let o = BatchPacket {
                meta: d.outer.unwrap(),
                outer_copy: true,
                ..p
            };
            w.packet(&o, &[]);
            keys.extend(w.drain().map(|(k, _)| k));
        }
        assert!(keys.len() >= 30, "{} events", keys.len());
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "duplicate event keys: {keys:?}");
    }

    /// Ending the open flows twice (a second end of input) ends the flows opened between.
    #[test]
    fn a_second_finish_ends_flows_opened_after_the_first() {
        let mut w = Worker::new(&Config::default());
        udp_packet(&mut w, [10, 1, 0, 1], 1);
        w.finish();
        assert_eq!(w.drain().count(), 1);
        udp_packet(&mut w, [10, 1, 0, 2], 2);
        w.finish();
        assert_eq!(w.drain().count(), 1, "the second finish ended nothing");
        assert_eq!(w.active_flows(), 0);
    }

    /// Each report point `base × 2^k` is crossed by exactly one packet, whatever the gaps.
    #[test]
    fn age_report_points_are_crossed_once_each() {
        let base = 100;
        let mut crossed = Vec::new();
        let mut prev = 0;
        for now in (0..2_000).step_by(7).chain([2_000, 6_500, 6_501]) {
            if age_crossed(prev, now, base) {
                crossed.push(now);
            }
            prev = now;
        }
        // 100, 200, 400, 800, 1600, then one jump past 3200 and 6400 at once: one report.
        assert_eq!(crossed, [105, 203, 406, 805, 1603, 6_500]);
        assert!(!age_crossed(0, 99, base));
        assert!(!age_crossed(150, 199, base));
        assert!(!age_crossed(5, 5, u64::MAX), "off");
    }

    /// Events are copied into the worker's buffer, the channel and the output's merge
    /// heap: they must stay small (a DNS event, ~1 KiB, is boxed for that).
    #[test]
    fn events_stay_small() {
        let size = std::mem::size_of::<Event>();
        println!("Event: {size} bytes");
        // 128 before the flow record's tunnel tag and tunnel-list pointer (16 bytes).
        assert!(size <= 144, "Event is {size} bytes");
    }
}
