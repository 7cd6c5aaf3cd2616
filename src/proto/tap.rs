//! The worker's TCP tap: looks at the first bytes a TCP client sends and finds a TLS
//! ClientHello or an HTTP/1.x request head in them.
//!
//! The first client segment is parsed in place; when it holds only the start of a hello or
//! a head (a ClientHello split over several segments, e.g. at MTU 300), its bytes go to a
//! stash: a fixed slab of [`STASH_SLOTS`] buffers of [`STASH_BYTES`], allocated at start,
//! taken from a free list and returned when the verdict is reached or the flow ends. When
//! every slot is taken, the slot held longest is evicted (counted) and its flow gets no name.
//!
//! Only in-order segments are reassembled: a segment that does not start where the stash
//! ends is counted in [`TapStats::out_of_order`] and the flow is given up (a retransmission
//! of bytes already held is ignored). Captures show clients send their first flight in
//! order; a reordered hello costs one flow its name, never memory.
//!
//! The tap stops after [`MAX_SEGMENTS`] segments or [`STASH_BYTES`] bytes, whichever comes
//! first, so a flow costs it nothing after its first few client segments.

use super::{http, tls, FlowNames};

/// Slots of the stash per worker: handshakes in progress at once. A split ClientHello
/// completes within one round trip of its first segment, so a few hundred cover thousands
/// of new TLS connections a second. 256 × 4 KiB = 1 MiB per worker.
pub const STASH_SLOTS: usize = 256;

/// Bytes a slot holds: a ClientHello up to [`tls::MAX_HANDSHAKE`] and its record header,
/// or the first 4 KiB of a request head ([`http::MAX_HEAD`]).
pub const STASH_BYTES: usize = 4096;

/// Client segments with payload the tap looks at before it gives up.
pub const MAX_SEGMENTS: u8 = 32;

/// Counters of the tap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Flows whose first client payload was looked at.
    pub looked: u64,
    /// ClientHellos parsed.
    pub tls: u64,
    /// Request heads parsed.
    pub http: u64,
    /// Flows whose first bytes needed the stash.
    pub stashed: u64,
    /// Stash slots taken from a handshake in progress because all were in use.
    pub evicted: u64,
    /// Flows given up because a segment came out of order.
    pub out_of_order: u64,
    /// Flows given up after [`MAX_SEGMENTS`] or [`STASH_BYTES`] without a verdict, or with a
    /// malformed hello.
    pub gave_up: u64,
    /// Segments of which only the part that fit the stash ([`STASH_BYTES`]) was kept.
    pub cut: u64,
}

impl TapStats {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &TapStats) {
        self.looked += o.looked;
        self.tls += o.tls;
        self.http += o.http;
        self.stashed += o.stashed;
        self.evicted += o.evicted;
        self.out_of_order += o.out_of_order;
        self.gave_up += o.gave_up;
        self.cut += o.cut;
    }
}

/// What the tap says about a segment.
// Returned once per looked-at segment, moved straight into its box: boxing it here would
// allocate for every verdict.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Keep offering this flow's client segments.
    More,
    /// Done, nothing found: stop looking.
    Done,
    /// Done, with these fields.
    Found(FlowNames),
}

/// What the stash keeps of one flow's first segments.
#[derive(Clone, Copy, Debug, Default)]
struct Stash {
    next_seq: u32,
    len: u16,
    segs: u8,
}

/// A fixed pool of per-flow slots, keyed by flow-table slot: taken from a free list,
/// returned at the verdict or the flow's end, and — when every slot is in use — taken round
/// robin from the one at the hand (so the one evicted is the one held longest, give or take).
/// Both taps keep their in-progress flows in one.
struct FlowSlots<S> {
    /// (flow id, table slot + 1 (0: free), state) of each pool slot.
    slots: Vec<(u64, u32, S)>,
    free: Vec<u16>,
    /// Pool slot + 1 of each flow-table slot (0: none). Zeroed memory, so its pages are only
    /// mapped where a flow used the pool.
    by_flow: Vec<u16>,
    hand: usize,
    /// Slots taken from a flow in progress because all were in use.
    evicted: u64,
}

impl<S: Copy + Default> FlowSlots<S> {
    fn new(n: usize, flow_slots: usize) -> Self {
        FlowSlots {
            slots: vec![(0, 0, S::default()); n],
            free: (0..n as u16).rev().collect(),
            by_flow: vec![0; flow_slots + 1],
            hand: 0,
            evicted: 0,
        }
    }

    fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The pool slot of flow `flow_id` in table slot `slot`, if it still holds one.
    fn of(&self, slot: u32, flow_id: u64) -> Option<usize> {
        let i = usize::from(self.by_flow.get(slot as usize).copied()?.checked_sub(1)?);
        let (id, owner, _) = self.slots.get(i)?;
        (*owner == slot.wrapping_add(1) && *id == flow_id).then_some(i)
    }

    fn state(&mut self, i: usize) -> Option<&mut S> {
        self.slots.get_mut(i).map(|s| &mut s.2)
    }

    /// A slot for the flow (its state reset), evicting the one at the hand when none is
    /// free.
    fn take(&mut self, slot: u32, flow_id: u64) -> Option<usize> {
        let i = match self.free.pop() {
            Some(i) => usize::from(i),
            None => {
                let n = self.slots.len().max(1);
                let i = self.hand % n;
                self.hand = i + 1;
                let owner = self.slots.get(i)?.1;
                if let Some(b) = self.by_flow.get_mut(owner.wrapping_sub(1) as usize) {
                    *b = 0;
                }
                self.evicted += 1;
                i
            }
        };
        *self.slots.get_mut(i)? = (flow_id, slot.wrapping_add(1), S::default());
        *self.by_flow.get_mut(slot as usize)? = i as u16 + 1;
        Some(i)
    }

    /// Frees the slot of the flow in table slot `slot`, if it has one.
    #[inline]
    fn release(&mut self, slot: u32) {
        // Read first: a write would map the page for every flow.
        let Some(b) = self.by_flow.get_mut(slot as usize) else {
            return;
        };
        if *b == 0 {
            return;
        }
        let i = *b - 1;
        *b = 0;
        if let Some(s) = self.slots.get_mut(usize::from(i)) {
            *s = (0, 0, S::default());
            self.free.push(i);
        }
    }
}

/// One worker's tap.
pub struct TcpTap {
    slots: FlowSlots<Stash>,
    bufs: Vec<u8>,
    scratch: Vec<u8>,
    /// Counters.
    pub stats: TapStats,
}

impl TcpTap {
    /// A tap for a flow table of `flow_slots` slots (numbered from 1).
    pub fn new(flow_slots: usize) -> TcpTap {
        TcpTap {
            slots: FlowSlots::new(STASH_SLOTS, flow_slots),
            bufs: vec![0; STASH_SLOTS * STASH_BYTES],
            scratch: vec![0; tls::MAX_HANDSHAKE],
            stats: TapStats::default(),
        }
    }

    /// (slots in use, capacity, evictions).
    pub fn occupancy(&self) -> (u64, u64, u64) {
        (
            self.slots.in_use() as u64,
            STASH_SLOTS as u64,
            self.stats.evicted,
        )
    }

    /// The first client segment with payload of flow `flow_id` (in table slot `slot`).
    pub fn first(&mut self, slot: u32, flow_id: u64, seq: u32, payload: &[u8]) -> Outcome {
        self.stats.looked += 1;
        match evaluate(payload, &mut self.scratch, false) {
            Eval::NeedMore => {}
            Eval::Found(n) => return self.found(n),
            Eval::Nothing => return Outcome::Done,
        }
        let Some(i) = self.slots.take(slot, flow_id) else {
            return Outcome::Done;
        };
        self.stats.evicted = self.slots.evicted;
        self.stats.stashed += 1;
        let n = payload.len().min(STASH_BYTES);
        if n < payload.len() {
            self.stats.cut += 1;
        }
        if let (Some(d), Some(s)) = (
            self.bufs.get_mut(i * STASH_BYTES..i * STASH_BYTES + n),
            payload.get(..n),
        ) {
            d.copy_from_slice(s);
        }
        if let Some(s) = self.slots.state(i) {
            s.len = n as u16;
            s.segs = 1;
            s.next_seq = seq.wrapping_add(n as u32);
        }
        Outcome::More
    }

    /// A later client segment with payload of a flow the tap asked for more of.
    pub fn more(&mut self, slot: u32, flow_id: u64, seq: u32, payload: &[u8]) -> Outcome {
        let Some(i) = self.slots.of(slot, flow_id) else {
            // Its stash slot was evicted.
            return Outcome::Done;
        };
        let Some(s) = self.slots.state(i) else {
            return Outcome::Done;
        };
        let ahead = seq.wrapping_sub(s.next_seq) as i32;
        if ahead < 0 && ahead.unsigned_abs() as usize >= payload.len() {
            return Outcome::More; // a retransmission of bytes held
        }
        if ahead != 0 {
            self.stats.out_of_order += 1;
            self.release(slot);
            return Outcome::Done;
        }
        let at = usize::from(s.len);
        let n = payload.len().min(STASH_BYTES - at);
        if n < payload.len() {
            self.stats.cut += 1;
        }
        s.len += n as u16;
        s.segs = s.segs.saturating_add(1);
        s.next_seq = s.next_seq.wrapping_add(n as u32);
        let (len, segs) = (usize::from(s.len), s.segs);
        let base = i * STASH_BYTES;
        if let (Some(d), Some(p)) = (
            self.bufs.get_mut(base + at..base + at + n),
            payload.get(..n),
        ) {
            d.copy_from_slice(p);
        }
        let final_ = len >= STASH_BYTES || segs >= MAX_SEGMENTS;
        let bytes = self.bufs.get(base..base + len).unwrap_or(&[]);
        let out = match evaluate(bytes, &mut self.scratch, final_) {
            Eval::NeedMore if !final_ => return Outcome::More,
            Eval::Found(n) => self.found(n),
            Eval::NeedMore | Eval::Nothing => {
                self.stats.gave_up += 1;
                Outcome::Done
            }
        };
        self.release(slot);
        out
    }

    /// Frees the stash of the flow in table slot `slot`, if it has one (its verdict came, or
    /// it ended).
    #[inline]
    pub fn release(&mut self, slot: u32) {
        self.slots.release(slot);
    }

    fn found(&mut self, n: FlowNames) -> Outcome {
        if n.tls_version.is_some() {
            self.stats.tls += 1;
        } else {
            self.stats.http += 1;
        }
        Outcome::Found(n)
    }
}

#[allow(clippy::large_enum_variant)] // see `Outcome`
enum Eval {
    NeedMore,
    Nothing,
    Found(FlowNames),
}

/// The verdict on a client's first bytes: a ClientHello (content type 22 first), else a
/// request head, else nothing. With `final_`, no more bytes will come.
fn evaluate(b: &[u8], scratch: &mut [u8], final_: bool) -> Eval {
    if b.first() == Some(&tls::parser::CONTENT_HANDSHAKE) {
        return match tls::hello_from_stream(b, scratch) {
            Ok(h) => Eval::Found(FlowNames::from_hello(&h, tls::Transport::Tcp)),
            Err(Ok(tls::StreamStatus::NeedMore)) if !final_ => Eval::NeedMore,
            Err(_) => Eval::Nothing,
        };
    }
    match http::parse_request(b, final_) {
        http::Head::Request(r) => Eval::Found(FlowNames::from_request(&r)),
        http::Head::NeedMore if !final_ => Eval::NeedMore,
        _ => Eval::Nothing,
    }
}

/// Connections whose client Initials the QUIC tap decrypts at once, per worker: a client's
/// ClientHello is whole within its first one or two datagrams, so a slot is held for a
/// round trip at most. 64 × ~6 KiB ≈ 390 KiB per worker.
pub const QUIC_SLOTS: usize = 64;

/// Client datagrams of one connection the QUIC tap looks at before it gives up.
pub const QUIC_MAX_DATAGRAMS: u8 = 8;

/// Smallest UDP payload carrying a client Initial: RFC 9000 §14.1 pads every datagram with
/// a client Initial to at least 1200 bytes, so anything shorter is not looked at.
pub const QUIC_MIN_INITIAL: usize = 1200;

/// Counters of the QUIC tap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicTapStats {
    /// Flows whose first client datagram looked like a QUIC v1/v2 Initial.
    pub looked: u64,
    /// ClientHellos read from decrypted Initials.
    pub hellos: u64,
    /// Slots taken from a connection in progress because all were in use.
    pub evicted: u64,
    /// Flows given up: no ClientHello within [`QUIC_MAX_DATAGRAMS`], a packet that did not
    /// decrypt, or a ClientHello that did not parse.
    pub gave_up: u64,
}

/// One worker's QUIC tap: decrypts a UDP client's first Initial datagrams
/// ([`super::quic::ClientInitials`]) and reads the ClientHello inside with the TLS parser.
/// The connection states are a fixed pool allocated at start, taken from a free list and
/// returned at the verdict or the flow's end; when all are in use, the one held longest
/// is evicted (counted) and its flow gets no name.
pub struct QuicTap {
    conns: Vec<super::quic::ClientInitials>,
    /// The pool; each slot's state is the datagrams looked at.
    slots: FlowSlots<u8>,
    /// Counters.
    pub stats: QuicTapStats,
}

impl QuicTapStats {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &QuicTapStats) {
        self.looked += o.looked;
        self.hellos += o.hellos;
        self.evicted += o.evicted;
        self.gave_up += o.gave_up;
    }
}

impl QuicTap {
    /// A tap for a flow table of `flow_slots` slots (numbered from 1).
    pub fn new(flow_slots: usize) -> QuicTap {
        QuicTap {
            conns: (0..QUIC_SLOTS)
                .map(|_| super::quic::ClientInitials::new())
                .collect(),
            slots: FlowSlots::new(QUIC_SLOTS, flow_slots),
            stats: QuicTapStats::default(),
        }
    }

    /// (slots in use, capacity, evictions).
    pub fn occupancy(&self) -> (u64, u64, u64) {
        (
            self.slots.in_use() as u64,
            QUIC_SLOTS as u64,
            self.stats.evicted,
        )
    }

    /// Whether a UDP payload can be a datagram with a client Initial of QUIC v1 or v2: long
    /// header with the fixed bit, a known version, padded to 1200 bytes. One look at five
    /// bytes, so every other UDP flow's first datagram costs nothing more.
    pub fn looks_initial(payload: &[u8]) -> bool {
        let (Some(&b0), Some(v)) = (payload.first(), payload.get(1..5)) else {
            return false;
        };
        let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        payload.len() >= QUIC_MIN_INITIAL
            && b0 & 0xc0 == 0xc0
            && super::quic::Version::from_wire(version).is_some()
    }

    /// A client datagram of flow `flow_id` (table slot `slot`): its first (`first`), or one
    /// the tap asked for.
    pub fn datagram(&mut self, slot: u32, flow_id: u64, first: bool, payload: &[u8]) -> Outcome {
        let i = if first {
            if !Self::looks_initial(payload) {
                return Outcome::Done;
            }
            self.stats.looked += 1;
            let Some(i) = self.slots.take(slot, flow_id) else {
                return Outcome::Done;
            };
            self.stats.evicted = self.slots.evicted;
            if let Some(c) = self.conns.get_mut(i) {
                c.reset();
            }
            i
        } else {
            match self.slots.of(slot, flow_id) {
                Some(i) => i,
                None => return Outcome::Done, // evicted
            }
        };
        let (Some(conn), Some(datagrams)) = (self.conns.get_mut(i), self.slots.state(i)) else {
            return Outcome::Done;
        };
        *datagrams = datagrams.saturating_add(1);
        let datagrams = *datagrams;
        let status = conn.feed(payload);
        let out = match status {
            Ok(super::quic::HelloStatus::Complete) => {
                match conn.client_hello().map(tls::parse_client_hello) {
                    Some(Ok(h)) => {
                        self.stats.hellos += 1;
                        Outcome::Found(FlowNames::from_hello(&h, tls::Transport::Quic))
                    }
                    _ => {
                        self.stats.gave_up += 1;
                        Outcome::Done
                    }
                }
            }
            // A later datagram of the handshake (or a coalesced one) that is not an Initial
            // is normal while the ClientHello is incomplete; the datagram budget bounds it.
            Ok(super::quic::HelloStatus::Pending) | Err(_)
                if datagrams < QUIC_MAX_DATAGRAMS && conn.initials() > 0 =>
            {
                return Outcome::More;
            }
            _ => {
                self.stats.gave_up += 1;
                Outcome::Done
            }
        };
        self.release(slot);
        out
    }

    /// Frees the pool slot of the flow in table slot `slot`, if it has one.
    #[inline]
    pub fn release(&mut self, slot: u32) {
        self.slots.release(slot);
    }
}
