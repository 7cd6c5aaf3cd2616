//! Fixed-capacity flow table: 132 bytes a flow plus a 4-byte hash bucket, O(1) everything.
//!
//! **Layout.** A slab of packed entries allocated once (`capacity` of them), a power-of-two
//! array of hash-bucket heads, and one intrusive doubly linked list per [`TimerClass`]. Each
//! entry is 33 `u32` words (132 bytes) holding the key, the counters and every link
//! ([`Entry`] documents the words); the worker works on an unpacked [`Flow`] it
//! [`load`](FlowTable::load)s and [`store`](FlowTable::store)s around each packet. Links are
//! 24-bit slot numbers plus one (0 = none), which caps a table at 2^24 − 1 flows: 16.7 M per
//! worker. The hash index is chained through the entries (a 24-bit link in each) from
//! `2^⌊log2 capacity⌋` heads, so the index costs at most 4 bytes a flow and never holds a
//! tombstone or grows, however much churn a flood brings; the free list runs through the
//! same links. Both arrays are allocated zeroed (zero is "empty" everywhere), which the
//! allocator serves from fresh, lazily mapped pages: a page is first touched when a flow is
//! first stored in it, so a short replay does not pay for zeroing a table sized for
//! millions.
//!
//! **Why packed.** Measured on a 1 M-flow flood, the old 216-byte entry plus a 20-byte
//! hashbrown index made the table 240 bytes a flow and every new flow two cache-line
//! misses into a table much larger than the cache; half the bytes were fields needed only
//! by some flows (sequence numbers of ICMP flows, carried counters of reused tuples) or
//! wider than any real count. Counters are stored saturating at 2^56 bytes (72 PB) and
//! 2^48 packets a direction, far beyond any flow; the flow id at 2^56.
//!
//! **Timers.** Touching a flow moves it to the head of its class's list, so each list is
//! ordered by last activity; because every class has a single idle timeout, the next flow
//! to expire in a class is always its list's tail. Expiry and LRU eviction are therefore
//! O(1) per flow, with no timer wheel and no scan (Retina uses a wheel because its
//! timeouts vary per connection; ours vary only per class). A flow's last activity is the
//! capture clock at its last packet, which is also its `last_ns`.
//!
//! **Carried counters** (a SYN reusing a just-closed tuple, see [`Flow::carried`]) are rare,
//! so they live in a small side map of `capacity / 256` entries (at least 64) rather than in
//! every entry; when it is full a new carry is dropped and counted
//! ([`FlowTable::carry_dropped`]), never an old one evicted.
//!
//! The table never grows: when it is full, the caller evicts the least recently seen flow
//! (the oldest tail across the lists) before inserting.

use super::{DirCounters, Flow, FlowKey, Side, TcpState};
use crate::decode::Addr;
use std::hash::BuildHasher;

/// Which idle timeout applies to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TimerClass {
    /// TCP, handshake not completed.
    TcpUnestablished = 0,
    /// TCP, established or half closed.
    Tcp = 1,
    /// TCP after FIN from both sides or RST: lingers briefly for late packets.
    TcpClosing = 2,
    /// UDP.
    Udp = 3,
    /// ICMP and other protocols.
    Other = 4,
}

impl TimerClass {
    fn from_bits(b: u32) -> TimerClass {
        match b {
            0 => TimerClass::TcpUnestablished,
            1 => TimerClass::Tcp,
            2 => TimerClass::TcpClosing,
            3 => TimerClass::Udp,
            _ => TimerClass::Other,
        }
    }
}

/// Number of timer classes.
pub const CLASSES: usize = 5;

/// Most flows one table can hold: links are 24-bit slot numbers plus one.
pub const MAX_CAPACITY: usize = (1 << 24) - 1;

/// "No slot" in a link, a list end or a bucket head.
const NIL: u32 = 0;
const LINK_MASK: u32 = 0x00ff_ffff;
const MAX56: u64 = (1 << 56) - 1;
const MAX48: u64 = (1 << 48) - 1;

/// Word indices of a packed entry. Addresses are stored as their 16 bytes in four
/// native-endian words (only compared and copied back, never interpreted).
mod w {
    /// Words 0..4: the key's `lo` address; 4..8: `hi`.
    pub const LO: usize = 0;
    pub const HI: usize = 4;
    /// `lo_port << 16 | hi_port`.
    pub const PORTS: usize = 8;
    /// `proto << 24 | vlan[0] << 12 | vlan[1]` (12-bit VLAN ids).
    pub const PV: usize = 9;
    /// The tunnel tag: its id, and its kind (low 8 bits; the rest is 0).
    pub const TUN_ID: usize = 10;
    pub const TUN_KIND: usize = 11;
    /// Words 0..=11 are the key (with the `ipv6` bit of [`MISC_A`]).
    pub const KEY_WORDS: usize = 12;
    /// 12, 13: first packet time (ns), low and high word.
    pub const FIRST: usize = 12;
    /// 14, 15: `latch count << 56 | (last activity − first packet)` (ns).
    pub const DUR: usize = 14;
    /// 16, 17: `orig_flags << 56 | flow id`.
    pub const ID: usize = 16;
    /// 18..=22 orig, 23..=27 resp: IP bytes (u64, 56 bits used, packet bits 40..48 above),
    /// payload bytes (u64, 56 bits, packet bits 32..40 above), packets bits 0..32.
    pub const ORIG: usize = 18;
    pub const RESP: usize = 23;
    /// 28, 29: TCP next sequence numbers (orig, resp); other protocols: first ports.
    pub const SEQ: usize = 28;
    /// 30: LRU previous (24 bits) | misc bits 0..8 above; 31: LRU next | misc bits 8..16;
    /// 32: hash chain / free list next | resp flags.
    pub const PREV: usize = 30;
    pub const NEXT: usize = 31;
    pub const CHAIN: usize = 32;
    pub const WORDS: usize = 33;
}

/// Bits of the 16 misc bits (kept in the top bytes of the `PREV` and `NEXT` words).
mod m {
    pub const CLASS: u32 = 0b111; // bits 0..3
    pub const LIVE: u32 = 1 << 3;
    pub const IPV6: u32 = 1 << 4;
    pub const ORIG_IS_HI: u32 = 1 << 5;
    pub const TCP_SHIFT: u32 = 6; // 3 bits
    pub const OUT_SHIFT: u32 = 9; // 2 bits: 0 none, 1 orig, 2 resp
    pub const RESET: u32 = 1 << 11;
    pub const RECORDING: u32 = 1 << 12;
    pub const SEQ0: u32 = 1 << 13;
    pub const SEQ1: u32 = 1 << 14;
    pub const CARRY: u32 = 1 << 15;
}

/// Bit of the duration word that holds `Flow::tap` (the latch count above the 56 bits of
/// duration needs 6 bits, at most 32).
const TAP_BIT: u64 = 1 << 63;

/// One packed flow: see [`w`] for the words. 132 bytes, 4-byte aligned.
type Entry = [u32; w::WORDS];

#[inline]
fn get64(e: &Entry, i: usize) -> u64 {
    u64::from(e[i]) | u64::from(e[i + 1]) << 32
}

#[inline]
fn set64(e: &mut Entry, i: usize, v: u64) {
    e[i] = v as u32;
    e[i + 1] = (v >> 32) as u32;
}

#[inline]
fn misc(e: &Entry) -> u32 {
    e[w::PREV] >> 24 | (e[w::NEXT] >> 24) << 8
}

#[inline]
fn set_misc(e: &mut Entry, bits: u32) {
    e[w::PREV] = (e[w::PREV] & LINK_MASK) | (bits & 0xff) << 24;
    e[w::NEXT] = (e[w::NEXT] & LINK_MASK) | (bits >> 8 & 0xff) << 24;
}

#[inline]
fn link(e: &Entry, i: usize) -> u32 {
    e[i] & LINK_MASK
}

#[inline]
fn set_link(e: &mut Entry, i: usize, v: u32) {
    e[i] = (e[i] & !LINK_MASK) | (v & LINK_MASK);
}

fn addr_words(a: &Addr) -> [u32; 4] {
    let b = &a.0;
    let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

fn words_addr(ws: &[u32]) -> Addr {
    let mut b = [0u8; 16];
    for (chunk, x) in b.chunks_exact_mut(4).zip(ws) {
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    Addr(b)
}

/// The key's words, in the order they are stored.
#[inline]
fn key_words(k: &FlowKey) -> [u32; w::KEY_WORDS] {
    let (lo, hi) = (addr_words(&k.lo), addr_words(&k.hi));
    [
        lo[0],
        lo[1],
        lo[2],
        lo[3],
        hi[0],
        hi[1],
        hi[2],
        hi[3],
        u32::from(k.lo_port) << 16 | u32::from(k.hi_port),
        u32::from(k.proto) << 24
            | u32::from(k.vlan[0] & 0xfff) << 12
            | u32::from(k.vlan[1] & 0xfff),
        k.tunnel.id,
        u32::from(k.tunnel.kind),
    ]
}

/// Asks the CPU to bring the cache line holding `r` closer; no effect on memory contents.
#[inline]
#[allow(unsafe_code)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint with no architectural effect: it cannot fault, read
    // into a register or write, and `r` is a valid reference anyway. SSE is part of the
    // x86_64 baseline, so the instruction always exists.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Prefetches the cache lines of an entry (132 bytes span three lines).
#[inline]
fn prefetch_entry(e: &Entry) {
    for i in [0, 15, w::WORDS - 1] {
        if let Some(x) = e.get(i) {
            prefetch(x);
        }
    }
}

/// Whether an entry holds this key. A fold over the twelve words rather than slice equality,
/// which calls `memcmp` (measured: 13% of a worker's time on a flow-heavy capture).
#[inline]
fn same_key(e: &Entry, kw: &[u32; w::KEY_WORDS]) -> bool {
    let mut diff = 0;
    for (a, b) in e.iter().zip(kw) {
        diff |= a ^ b;
    }
    diff == 0
}

/// The key stored in an entry.
#[inline]
fn key_of(e: &Entry) -> FlowKey {
    FlowKey {
        lo: words_addr(&e[w::LO..w::LO + 4]),
        hi: words_addr(&e[w::HI..w::HI + 4]),
        lo_port: (e[w::PORTS] >> 16) as u16,
        hi_port: e[w::PORTS] as u16,
        proto: (e[w::PV] >> 24) as u8,
        ipv6: misc(e) & m::IPV6 != 0,
        vlan: [(e[w::PV] >> 12 & 0xfff) as u16, (e[w::PV] & 0xfff) as u16],
        tunnel: crate::decode::TunnelTag {
            kind: e[w::TUN_KIND] as u8,
            id: e[w::TUN_ID],
        },
    }
}

fn pack_dir(e: &mut Entry, at: usize, c: &DirCounters) {
    let pkts = c.pkts.min(MAX48);
    set64(e, at, c.ip_bytes.min(MAX56) | (pkts >> 40) << 56);
    set64(
        e,
        at + 2,
        c.payload_bytes.min(MAX56) | (pkts >> 32 & 0xff) << 56,
    );
    e[at + 4] = pkts as u32;
}

fn unpack_dir(e: &Entry, at: usize) -> DirCounters {
    let (a, b) = (get64(e, at), get64(e, at + 2));
    DirCounters {
        pkts: u64::from(e[at + 4]) | (b >> 56) << 32 | (a >> 56) << 40,
        ip_bytes: a & MAX56,
        payload_bytes: b & MAX56,
    }
}

const TCP_STATES: [TcpState; 7] = [
    TcpState::NotTcp,
    TcpState::SynSent,
    TcpState::SynReceived,
    TcpState::Established,
    TcpState::HalfClosed,
    TcpState::Closed,
    TcpState::Reset,
];

fn tcp_bits(s: TcpState) -> u32 {
    TCP_STATES.iter().position(|x| *x == s).unwrap_or(0) as u32
}

/// Work done by eviction and expiry, for the tests that prove both are O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableWork {
    /// Entries looked at to find an eviction victim or the next expiry (list tails).
    pub visited: u64,
    /// Victims or expiries found.
    pub found: u64,
}

/// A worker's flow table. See the module documentation.
pub struct FlowTable {
    /// The entries, `w::WORDS` words each. A flat `Vec<u32>` rather than `Vec<Entry>`:
    /// `vec![0u32; n]` is always a zeroed (lazily mapped) allocation, while an array
    /// element is zero-filled eagerly in unoptimised builds.
    words: Vec<u32>,
    capacity: usize,
    /// Slots ever used: `entries[fresh..]` are still untouched zero pages.
    fresh: u32,
    /// Head of the free list (slot + 1), through the `CHAIN` link.
    free: u32,
    heads: Vec<u32>,
    mask: u64,
    hasher: foldhash::fast::RandomState,
    head: [u32; CLASSES],
    tail: [u32; CLASSES],
    timeout_ns: [u64; CLASSES],
    len: usize,
    carried: hashbrown::HashMap<u32, DirCounters, foldhash::fast::RandomState>,
    carry_capacity: usize,
    carry_dropped: u64,
    work: std::cell::Cell<TableWork>,
}

impl FlowTable {
    /// A table for `capacity` flows (at most [`MAX_CAPACITY`]); `timeout_ns[c]` is the idle
    /// timeout of class `c`. All memory is allocated here, zeroed and untouched.
    pub fn new(capacity: usize, timeout_ns: [u64; CLASSES]) -> FlowTable {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // Largest power of two not above half the capacity: chains hold two to four
        // entries when the table is full (Suricata's flow hash runs fuller), and the heads
        // cost at most 2 bytes a flow, which keeps the whole table within 136.
        let half = (capacity / 2).max(1);
        let buckets = 1usize << (usize::BITS - 1 - half.leading_zeros());
        let carry_capacity = (capacity / 256).max(64);
        FlowTable {
            // `vec![zero; n]` of plain integers is a zeroed allocation: fresh pages the
            // kernel maps on first write.
            words: vec![0u32; capacity * w::WORDS],
            capacity,
            fresh: 0,
            free: NIL,
            heads: vec![NIL; buckets],
            mask: buckets as u64 - 1,
            // Random seed: the table's iteration order never reaches the output, and an
            // attacker cannot precompute keys that share a chain.
            hasher: foldhash::fast::RandomState::default(),
            head: [NIL; CLASSES],
            tail: [NIL; CLASSES],
            timeout_ns,
            len: 0,
            carried: hashbrown::HashMap::with_capacity_and_hasher(
                carry_capacity,
                foldhash::fast::RandomState::default(),
            ),
            carry_capacity,
            carry_dropped: 0,
            work: std::cell::Cell::new(TableWork::default()),
        }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the table allocated at start-up (entries, bucket heads, the carry map).
    /// Constant for the table's life: it never grows.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * std::mem::size_of::<u32>()
            + self.heads.len() * std::mem::size_of::<u32>()
            + self.carried.allocation_size()
    }

    /// Carried counters that could not be kept because the side map was full.
    pub fn carry_dropped(&self) -> u64 {
        self.carry_dropped
    }

    /// The carried-counters side map: (entries, capacity, carries dropped because it was
    /// full).
    pub fn carry_occupancy(&self) -> (u64, u64, u64) {
        (
            self.carried.len() as u64,
            self.carry_capacity as u64,
            self.carry_dropped,
        )
    }

    /// Eviction and expiry work so far (see [`TableWork`]).
    pub fn work(&self) -> TableWork {
        self.work.get()
    }

    /// True when an insert needs an eviction first.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// Hash of a key, for [`find`](Self::find) and [`insert`](Self::insert).
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The entry of a slot number plus one (0 = none).
    #[inline]
    fn entry(&self, slot1: u32) -> Option<&Entry> {
        let at = (slot1 as usize).checked_sub(1)? * w::WORDS;
        self.words.get(at..at + w::WORDS)?.try_into().ok()
    }

    #[inline]
    fn entry_mut(&mut self, slot1: u32) -> Option<&mut Entry> {
        let at = (slot1 as usize).checked_sub(1)? * w::WORDS;
        self.words.get_mut(at..at + w::WORDS)?.try_into().ok()
    }

    #[inline]
    fn live(&self, slot: u32) -> Option<&Entry> {
        self.entry(slot.wrapping_add(1))
            .filter(|e| misc(e) & m::LIVE != 0)
    }

    /// Slot of the flow with this key.
    #[inline]
    pub fn find(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        let kw = key_words(key);
        let v6 = if key.ipv6 { m::IPV6 } else { 0 };
        let mut at = *self.heads.get((hash & self.mask) as usize)?;
        while let Some(e) = self.entry(at) {
            if same_key(e, &kw) && misc(e) & m::IPV6 == v6 {
                return Some(at - 1);
            }
            at = link(e, w::CHAIN);
        }
        None
    }

    /// Cache hint: fetch the bucket head of `hash` (the first of three prefetch stages a
    /// batch runs a few packets ahead, see `Worker::packets`).
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        if let Some(h) = self.heads.get((hash & self.mask) as usize) {
            prefetch(h);
        }
    }

    /// Cache hint: fetch the first entry of `hash`'s chain (its head should be cached by
    /// now: [`prefetch_bucket`](Self::prefetch_bucket) ran earlier).
    #[inline]
    pub fn prefetch_chain(&self, hash: u64) {
        let head = self.heads.get((hash & self.mask) as usize).copied();
        if let Some(e) = head.and_then(|h| self.entry(h)) {
            prefetch_entry(e);
        }
    }

    /// Cache hint: fetch the LRU neighbours of the flow with this key, which touching it
    /// will relink (its entry should be cached by now).
    #[inline]
    pub fn prefetch_neighbours(&self, hash: u64, key: &FlowKey) {
        let Some(slot) = self.find(hash, key) else {
            return;
        };
        if let Some(e) = self.entry(slot + 1) {
            for l in [link(e, w::PREV), link(e, w::NEXT)] {
                if let Some(n) = self.entry(l) {
                    if let Some(x) = n.get(w::PREV) {
                        prefetch(x);
                    }
                }
            }
        }
    }

    /// Cache hint for expiry, which walks the lists from their tails: fetch each tail's
    /// bucket head (its removal unchains it) and the entry behind it (the next tail).
    #[inline]
    pub fn prefetch_expiry(&self) {
        for &t in &self.tail {
            let Some(e) = self.entry(t) else {
                continue;
            };
            if let Some(p) = self.entry(link(e, w::PREV)) {
                prefetch_entry(p);
            }
            self.prefetch_bucket(self.hash(&key_of(e)));
        }
    }

    /// The flow in a slot, unpacked. Slots come from [`find`](Self::find) and
    /// [`insert`](Self::insert).
    #[inline]
    pub fn load(&self, slot: u32) -> Option<Flow> {
        let e = self.live(slot)?;
        let bits = misc(e);
        let key = key_of(e);
        let first_ns = get64(e, w::FIRST);
        let dur = get64(e, w::DUR);
        let id = get64(e, w::ID);
        let orig_is_hi = bits & m::ORIG_IS_HI != 0;
        let tcp = *TCP_STATES
            .get((bits >> m::TCP_SHIFT & 0b111) as usize)
            .unwrap_or(&TcpState::NotTcp);
        let (next_seq, first_ports) = if key.proto == crate::decode::proto::TCP {
            let seq = |bit: u32, i: usize| (bits & bit != 0).then_some(e[i]);
            let ports = if orig_is_hi {
                (key.hi_port, key.lo_port)
            } else {
                (key.lo_port, key.hi_port)
            };
            ([seq(m::SEQ0, w::SEQ), seq(m::SEQ1, w::SEQ + 1)], ports)
        } else {
            ([None; 2], (e[w::SEQ] as u16, e[w::SEQ + 1] as u16))
        };
        let carried = if bits & m::CARRY != 0 {
            self.carried.get(&slot).copied().unwrap_or_default()
        } else {
            DirCounters::default()
        };
        let latch_n = (dur >> 56 & 0x3f) as u32;
        Some(Flow {
            key,
            id: id & MAX56,
            orig_is_hi,
            first_ns,
            last_ns: first_ns.saturating_add(dur & MAX56),
            orig: unpack_dir(e, w::ORIG),
            resp: unpack_dir(e, w::RESP),
            orig_flags: (id >> 56) as u8,
            resp_flags: (e[w::CHAIN] >> 24) as u8,
            tcp,
            first_ports,
            outbound: match bits >> m::OUT_SHIFT & 0b11 {
                1 => Some(Side::Orig),
                2 => Some(Side::Resp),
                _ => None,
            },
            latch: (1u64 << latch_n.min(32)).wrapping_sub(1) as u32,
            next_seq,
            reset: bits & m::RESET != 0,
            recording: bits & m::RECORDING != 0,
            carried,
            tap: dur & TAP_BIT != 0,
        })
    }

    /// Writes back a flow's mutable state (everything but its key, id and first packet
    /// time, which never change) into its slot; the last activity is `flow.last_ns`.
    #[inline]
    pub fn store(&mut self, slot: u32, flow: &Flow) {
        let carry = flow.carried != DirCounters::default();
        if carry && !self.carried.contains_key(&slot) {
            if self.carried.len() < self.carry_capacity {
                self.carried.insert(slot, flow.carried);
            } else {
                self.carry_dropped += 1;
            }
        } else if carry {
            if let Some(c) = self.carried.get_mut(&slot) {
                *c = flow.carried;
            }
        }
        let kept = carry && self.carried.contains_key(&slot);
        let Some(e) = self.entry_mut(slot.wrapping_add(1)) else {
            return;
        };
        write_state(e, flow, kept);
    }

    /// Inserts a new flow (its key must not be present) in class `class`; its last
    /// activity is `clock_ns`. Returns `None` when the table is full: evict first.
    pub fn insert(
        &mut self,
        hash: u64,
        flow: Flow,
        class: TimerClass,
        clock_ns: u64,
    ) -> Option<u32> {
        let slot1 = if self.free != NIL {
            let s = self.free;
            self.free = self.entry(s).map_or(NIL, |e| link(e, w::CHAIN));
            s
        } else if (self.fresh as usize) < self.capacity {
            self.fresh += 1;
            self.fresh
        } else {
            return None;
        };
        let bucket = (hash & self.mask) as usize;
        let flow = Flow {
            last_ns: clock_ns,
            ..flow
        };
        {
            let e = self.entry_mut(slot1)?;
            *e = [0; w::WORDS];
            e[..w::KEY_WORDS].copy_from_slice(&key_words(&flow.key));
            set64(e, w::FIRST, flow.first_ns);
            write_state(e, &flow, false);
            set_misc(e, misc(e) | m::LIVE | class as u32);
        }
        // Appended at the chain's end, so each chain runs oldest first: the flow to expire
        // or evict, the oldest, is then usually its chain's head and unchains without a
        // walk (measured: walking to it was 86% of `remove` under a flood). The walk here
        // is free in practice: `find` has just brought the chain into the cache.
        let mut last = NIL;
        let mut at = self.heads.get(bucket).copied().unwrap_or(NIL);
        while let Some(e) = self.entry(at) {
            last = at;
            at = link(e, w::CHAIN);
        }
        match self.entry_mut(last) {
            Some(e) => set_link(e, w::CHAIN, slot1),
            None => {
                if let Some(h) = self.heads.get_mut(bucket) {
                    *h = slot1;
                }
            }
        }
        self.len += 1;
        self.link_head(slot1, class as usize);
        if flow.carried != DirCounters::default() {
            self.store(slot1 - 1, &flow);
        }
        Some(slot1 - 1)
    }

    /// Records activity at `clock_ns`: the flow moves to the head of `class`'s list.
    #[inline]
    pub fn touch(&mut self, slot: u32, class: TimerClass, clock_ns: u64) {
        let slot1 = slot + 1;
        let Some(e) = self.entry_mut(slot1) else {
            return;
        };
        let first = get64(e, w::FIRST);
        let dur = get64(e, w::DUR);
        set64(
            e,
            w::DUR,
            (dur & !MAX56) | clock_ns.saturating_sub(first).min(MAX56),
        );
        let old = (misc(e) & m::CLASS) as usize;
        if self.head[old] == slot1 && old == class as usize {
            return;
        }
        self.unlink(slot1);
        self.link_head(slot1, class as usize);
    }

    /// The id of the flow in a slot.
    #[inline]
    pub fn id_of(&self, slot: u32) -> Option<u64> {
        Some(get64(self.live(slot)?, w::ID) & MAX56)
    }

    /// Last activity (capture clock, ns) of a flow.
    #[inline]
    pub fn touched(&self, slot: u32) -> Option<u64> {
        let e = self.live(slot)?;
        Some(get64(e, w::FIRST).saturating_add(get64(e, w::DUR) & MAX56))
    }

    /// Removes a flow, returning it.
    pub fn remove(&mut self, slot: u32) -> Option<Flow> {
        let flow = self.load(slot)?;
        let slot1 = slot + 1;
        let bucket = (self.hash(&flow.key) & self.mask) as usize;
        // Unchain: walk the bucket's chain (one or two entries on average) to the link
        // that points at this slot.
        let next = self.entry(slot1).map_or(NIL, |e| link(e, w::CHAIN));
        let mut at = self.heads.get(bucket).copied().unwrap_or(NIL);
        if at == slot1 {
            if let Some(h) = self.heads.get_mut(bucket) {
                *h = next;
            }
        } else {
            while let Some(e) = self.entry(at) {
                let n = link(e, w::CHAIN);
                if n == slot1 {
                    if let Some(p) = self.entry_mut(at) {
                        set_link(p, w::CHAIN, next);
                    }
                    break;
                }
                at = n;
            }
        }
        self.unlink(slot1);
        if misc(self.entry(slot1)?) & m::CARRY != 0 {
            self.carried.remove(&slot);
        }
        let free = self.free;
        if let Some(e) = self.entry_mut(slot1) {
            set_misc(e, 0);
            set_link(e, w::CHAIN, free);
        }
        self.free = slot1;
        self.len -= 1;
        Some(flow)
    }

    /// The flow that expires first and when: the minimum over the classes' tails of
    /// (last activity + class timeout).
    #[inline]
    pub fn next_expiry(&self) -> Option<(u64, u32)> {
        let mut best: Option<(u64, u32)> = None;
        let mut work = self.work.get();
        for c in 0..CLASSES {
            let t = self.tail[c];
            if let Some(at) = self.touched(t.wrapping_sub(1)) {
                work.visited += 1;
                let at = at.saturating_add(self.timeout_ns[c]);
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, t - 1));
                }
            }
        }
        work.found += u64::from(best.is_some());
        self.work.set(work);
        best
    }

    /// The least recently seen flow (eviction victim when full).
    pub fn least_recent(&self) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        let mut work = self.work.get();
        for c in 0..CLASSES {
            let t = self.tail[c];
            if let Some(at) = self.touched(t.wrapping_sub(1)) {
                work.visited += 1;
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, t - 1));
                }
            }
        }
        work.found += u64::from(best.is_some());
        self.work.set(work);
        best.map(|(_, s)| s)
    }

    /// Timer class a flow is in.
    pub fn class_of(&self, slot: u32) -> Option<TimerClass> {
        let e = self.live(slot)?;
        Some(TimerClass::from_bits(misc(e) & m::CLASS))
    }

    /// Slots of all live flows (for the final flush and on-request views; order
    /// unspecified). Only the slots ever used are visited.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.words
            .chunks_exact(w::WORDS)
            .take(self.fresh as usize)
            .enumerate()
            .filter_map(|(i, e)| <&Entry>::try_from(e).ok().map(|e| (i, e)))
            .filter(|(_, e)| misc(e) & m::LIVE != 0)
            .map(|(i, _)| i as u32)
    }

    fn link_head(&mut self, slot1: u32, class: usize) {
        let old_head = self.head[class];
        if let Some(e) = self.entry_mut(slot1) {
            set_link(e, w::PREV, NIL);
            set_link(e, w::NEXT, old_head);
            let bits = (misc(e) & !m::CLASS) | class as u32;
            set_misc(e, bits);
        }
        if let Some(h) = self.entry_mut(old_head) {
            set_link(h, w::PREV, slot1);
        } else {
            self.tail[class] = slot1;
        }
        self.head[class] = slot1;
    }

    fn unlink(&mut self, slot1: u32) {
        let Some(e) = self.entry(slot1) else {
            return;
        };
        let (prev, next, class) = (
            link(e, w::PREV),
            link(e, w::NEXT),
            (misc(e) & m::CLASS) as usize,
        );
        match self.entry_mut(prev) {
            Some(p) => set_link(p, w::NEXT, next),
            None => self.head[class] = next,
        }
        match self.entry_mut(next) {
            Some(n) => set_link(n, w::PREV, prev),
            None => self.tail[class] = prev,
        }
        if let Some(e) = self.entry_mut(slot1) {
            set_link(e, w::PREV, NIL);
            set_link(e, w::NEXT, NIL);
        }
    }
}

/// Packs a flow's mutable state into its entry, keeping the links, the class and the
/// live bit.
#[inline]
fn write_state(e: &mut Entry, f: &Flow, carry: bool) {
    let first = get64(e, w::FIRST);
    let latch_n = u64::from(f.latch.trailing_ones());
    set64(
        e,
        w::DUR,
        latch_n << 56
            | f.last_ns.saturating_sub(first).min(MAX56)
            | if f.tap { TAP_BIT } else { 0 },
    );
    set64(e, w::ID, u64::from(f.orig_flags) << 56 | (f.id & MAX56));
    pack_dir(e, w::ORIG, &f.orig);
    pack_dir(e, w::RESP, &f.resp);
    let old = misc(e);
    let mut bits = old & (m::CLASS | m::LIVE);
    if f.key.ipv6 {
        bits |= m::IPV6;
    }
    if f.orig_is_hi {
        bits |= m::ORIG_IS_HI;
    }
    bits |= tcp_bits(f.tcp) << m::TCP_SHIFT;
    bits |= match f.outbound {
        None => 0,
        Some(Side::Orig) => 1,
        Some(Side::Resp) => 2,
    } << m::OUT_SHIFT;
    if f.reset {
        bits |= m::RESET;
    }
    if f.recording {
        bits |= m::RECORDING;
    }
    if carry {
        bits |= m::CARRY;
    }
    if f.key.proto == crate::decode::proto::TCP {
        if let Some(s) = f.next_seq[0] {
            bits |= m::SEQ0;
            e[w::SEQ] = s;
        }
        if let Some(s) = f.next_seq[1] {
            bits |= m::SEQ1;
            e[w::SEQ + 1] = s;
        }
    } else {
        e[w::SEQ] = u32::from(f.first_ports.0);
        e[w::SEQ + 1] = u32::from(f.first_ports.1);
    }
    set_misc(e, bits);
    e[w::CHAIN] = (e[w::CHAIN] & LINK_MASK) | u32::from(f.resp_flags) << 24;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    fn flow(n: u32) -> Flow {
        Flow {
            key: FlowKey {
                lo: Addr::v4([10, 0, 0, 1]),
                hi: Addr::v4(n.to_be_bytes()),
                lo_port: 1,
                hi_port: 2,
                proto: 17,
                ..FlowKey::default()
            },
            id: u64::from(n),
            orig_is_hi: false,
            first_ns: 0,
            last_ns: 0,
            orig: Default::default(),
            resp: Default::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: Default::default(),
            first_ports: (1, 2),
            outbound: None,
            latch: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            carried: Default::default(),
            tap: false,
        }
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut t = FlowTable::new(2, [10; CLASSES]);
        let f1 = flow(1);
        let h1 = t.hash(&f1.key);
        let s1 = t.insert(h1, f1, TimerClass::Udp, 0).unwrap();
        assert_eq!(t.find(h1, &f1.key), Some(s1));
        let f2 = flow(2);
        let h2 = t.hash(&f2.key);
        t.insert(h2, f2, TimerClass::Udp, 1).unwrap();
        assert!(t.is_full());
        assert!(t
            .insert(t.hash(&flow(3).key), flow(3), TimerClass::Udp, 2)
            .is_none());
        assert_eq!(t.least_recent(), Some(s1));
        assert_eq!(t.remove(s1).unwrap().id, 1);
        assert_eq!(t.find(h1, &f1.key), None);
        let f3 = flow(3);
        let s3 = t.insert(t.hash(&f3.key), f3, TimerClass::Udp, 3).unwrap();
        assert_eq!(s3, s1, "freed slot is reused");
        assert_eq!(t.len(), 2);
    }

    /// Every field survives a store and a load, at the widths the entry keeps.
    #[test]
    fn packing_round_trips() {
        let mut t = FlowTable::new(16, [10; CLASSES]);
        let mut f = flow(7);
        f.key = FlowKey {
            lo: Addr([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            hi: Addr([
                0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef,
            ]),
            lo_port: 443,
            hi_port: 51234,
            proto: 6,
            ipv6: true,
            vlan: [4094, 7],
            tunnel: crate::decode::TunnelTag {
                kind: 0x85,
                id: u32::MAX,
            },
        };
        f.id = (1 << 56) - 1;
        f.orig_is_hi = true;
        f.first_ns = 1_700_000_000_123_456_789;
        f.orig = DirCounters {
            pkts: (1 << 48) - 1,
            ip_bytes: (1 << 56) - 1,
            payload_bytes: 123_456_789_012,
        };
        f.resp = DirCounters {
            pkts: 5_000_000_000,
            ip_bytes: 7,
            payload_bytes: 0,
        };
        f.orig_flags = 0x1b;
        f.resp_flags = 0x12;
        f.tcp = TcpState::HalfClosed;
        f.outbound = Some(Side::Orig);
        f.latch = 0b111;
        f.next_seq = [Some(0xffff_fff0), None];
        f.reset = true;
        f.recording = true;
        f.carried = DirCounters {
            pkts: 3,
            ip_bytes: 4,
            payload_bytes: 5,
        };
        let h = t.hash(&f.key);
        let s = t.insert(h, f, TimerClass::Tcp, f.first_ns + 5).unwrap();
        let mut want = f;
        want.last_ns = f.first_ns + 5;
        want.first_ports = (51234, 443); // TCP: the originator's and responder's ports
        assert_eq!(t.load(s), Some(want));
        assert_eq!(t.find(h, &f.key), Some(s));
        // Saturation, not wrap-around, beyond the stored widths.
        want.orig.ip_bytes = u64::MAX;
        want.orig.pkts = u64::MAX;
        want.last_ns = f.first_ns + 10;
        t.store(s, &want);
        let got = t.load(s).unwrap();
        assert_eq!(got.orig.ip_bytes, (1 << 56) - 1);
        assert_eq!(got.orig.pkts, (1 << 48) - 1);
        assert_eq!(got.last_ns, f.first_ns + 10);
        // The same addresses as IPv4-mapped IPv6 are another key.
        let mut k4 = f.key;
        k4.ipv6 = false;
        assert_eq!(t.find(t.hash(&k4), &k4), None);
        // ICMP keeps its first message's type/code.
        let mut icmp = flow(9);
        icmp.key.proto = 1;
        icmp.first_ports = (8, 0);
        let s2 = t
            .insert(t.hash(&icmp.key), icmp, TimerClass::Other, 0)
            .unwrap();
        assert_eq!(t.load(s2).unwrap().first_ports, (8, 0));
    }

    #[test]
    fn memory_per_flow_is_bounded() {
        for cap in [1 << 20, 1_000_000, 4_000_000, 10_000_000] {
            let t = FlowTable::new(cap, [1; CLASSES]);
            let per_flow = t.memory_bytes() as f64 / cap as f64;
            // Measured 2026-11-26: 132-byte entry (124 before the tunnel tag joined the key)
            // + at most 2 bytes of heads + the carry map
            // (1/256 of the flows at ~60 bytes): 126.2 bytes at 2^20 flows.
            assert!(per_flow <= 136.0, "{cap}: {per_flow} bytes per flow");
            println!("{cap} flows: {per_flow:.1} bytes per flow");
        }
        assert_eq!(std::mem::size_of::<Entry>(), 132);
    }

    #[test]
    fn churn_at_capacity_never_grows_and_evicts_in_constant_work() {
        // A SYN flood at capacity: every insert evicts the least recent flow.
        let cap = 4096;
        let mut t = FlowTable::new(cap, [u64::MAX / 4; CLASSES]);
        let before = t.memory_bytes();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let n = 300_000u64;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut f = flow(x as u32);
            f.key.lo_port = (x >> 32) as u16;
            if t.find(t.hash(&f.key), &f.key).is_some() {
                continue;
            }
            if t.is_full() {
                let v = t.least_recent().unwrap();
                t.remove(v).unwrap();
            }
            let h = t.hash(&f.key);
            t.insert(h, f, TimerClass::TcpUnestablished, i).unwrap();
            assert!(t.len() <= cap);
        }
        assert_eq!(t.len(), cap);
        assert_eq!(t.memory_bytes(), before, "the table grew under churn");
        // Each eviction looks at the tails of the five lists and nothing else.
        let work = t.work();
        assert!(work.found >= n - cap as u64 - 100);
        assert!(
            work.visited <= work.found * CLASSES as u64,
            "eviction visited {} entries for {} victims",
            work.visited,
            work.found
        );
    }

    #[test]
    fn expiry_follows_class_timeouts_and_touches() {
        let mut t = FlowTable::new(8, [100, 1000, 5, 50, 50]);
        let a = t.insert(1, flow(1), TimerClass::Tcp, 0).unwrap();
        let b = t.insert(2, flow(2), TimerClass::Udp, 10).unwrap();
        assert_eq!(t.next_expiry(), Some((60, b)));
        t.touch(b, TimerClass::Udp, 2000);
        assert_eq!(t.next_expiry(), Some((1000, a)));
        t.touch(a, TimerClass::TcpClosing, 2001);
        assert_eq!(t.next_expiry(), Some((2006, a)));
        assert_eq!(t.least_recent(), Some(b));
        assert_eq!(t.load(a).unwrap().last_ns, 2001);
    }

    #[test]
    fn carry_map_is_bounded_and_counts_drops() {
        let mut t = FlowTable::new(128, [10; CLASSES]);
        let mut slots = Vec::new();
        for i in 0..65 {
            let mut f = flow(i);
            f.carried.ip_bytes = 100 + u64::from(i);
            slots.push(t.insert(t.hash(&f.key), f, TimerClass::Udp, 0).unwrap());
        }
        // 64 carries fit; the 65th is dropped and counted, the others are kept.
        assert_eq!(t.carry_dropped(), 1);
        assert_eq!(t.carry_occupancy(), (64, 64, 1));
        assert_eq!(t.load(slots[64]).unwrap().carried, DirCounters::default());
        assert_eq!(t.load(slots[5]).unwrap().carried.ip_bytes, 105);
        // Ending a flow frees its carry for the next one.
        t.remove(slots[0]).unwrap();
        let mut f = flow(1000);
        f.carried.ip_bytes = 9;
        let s = t.insert(t.hash(&f.key), f, TimerClass::Udp, 0).unwrap();
        assert_eq!(t.load(s).unwrap().carried.ip_bytes, 9);
        assert_eq!(t.carry_dropped(), 1);
    }

    /// The table's pages are untouched until flows are stored in them: allocating a table
    /// for 4 M flows (~500 MB) must not add that to the resident set.
    #[test]
    fn a_big_table_is_not_resident_until_used() {
        use crate::flow::tests_support::rss_kib;
        let Some(before) = rss_kib() else {
            return; // not Linux
        };
        let mut t = FlowTable::new(4_000_000, [10; CLASSES]);
        for i in 0..1000 {
            let f = flow(i);
            t.insert(t.hash(&f.key), f, TimerClass::Udp, 0).unwrap();
        }
        let grown = rss_kib().unwrap_or(0).saturating_sub(before);
        assert!(
            grown < 64 * 1024,
            "allocating a 4 M-flow table made {grown} KiB resident"
        );
        drop(t);
    }
}

/// Review: the table against a model under random churn (insert, store/touch, evict,
/// expire, remove) with a tiny capacity, so chains, the free list and slot reuse are
/// exercised hard.
#[cfg(test)]
mod model {
    use super::*;
    use std::collections::HashMap;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn key(r: &mut Rng) -> FlowKey {
        let a = r.below(3) as u8;
        let b = r.below(3) as u8;
        let ipv6 = r.below(2) == 0;
        // The same 16 bytes as an IPv4 (mapped) and an IPv6 key.
        let lo = Addr::v4([10, 0, 0, a]);
        let hi = Addr::v4([10, 0, 1, b]);
        let proto = [1u8, 6, 17][r.below(3) as usize];
        let (lo_port, hi_port) = if proto == 1 {
            (0, 0)
        } else {
            (r.below(3) as u16, 80)
        };
        FlowKey {
            lo,
            hi,
            lo_port,
            hi_port,
            proto,
            ipv6,
            vlan: [r.below(2) as u16 * 4095, r.below(2) as u16 * 7],
            tunnel: crate::decode::TunnelTag {
                kind: r.below(2) as u8 * 5,
                id: r.below(2) as u32,
            },
        }
    }

    fn random_state(r: &mut Rng, f: &mut Flow, clock: u64) {
        f.last_ns = clock;
        f.orig.pkts = r.below(1 << 48);
        f.orig.ip_bytes = r.below(1 << 56);
        f.orig.payload_bytes = r.below(1 << 56);
        f.resp.pkts = r.below(1 << 20);
        f.resp.ip_bytes = r.below(1 << 30);
        f.orig_flags = r.next() as u8;
        f.resp_flags = r.next() as u8;
        f.outbound = [None, Some(Side::Orig), Some(Side::Resp)][r.below(3) as usize];
        f.latch = ((1u64 << r.below(33)) - 1) as u32;
        f.reset = r.below(2) == 0;
        f.recording = r.below(2) == 0;
        if r.below(4) == 0 {
            f.carried = DirCounters {
                pkts: r.below(100) + 1,
                ip_bytes: r.below(1000),
                payload_bytes: 0,
            };
        }
        if f.key.proto == 6 {
            f.tcp = TCP_STATES[1 + r.below(6) as usize];
            f.next_seq = [
                (r.below(2) == 0).then(|| r.next() as u32),
                (r.below(2) == 0).then(|| r.next() as u32),
            ];
        }
    }

    fn new_flow(r: &mut Rng, k: FlowKey, id: u64, clock: u64) -> Flow {
        let orig_is_hi = r.below(2) == 0;
        let first_ports = if k.proto == 6 {
            if orig_is_hi {
                (k.hi_port, k.lo_port)
            } else {
                (k.lo_port, k.hi_port)
            }
        } else if k.proto == 1 {
            (r.below(256) as u16, r.below(256) as u16)
        } else if orig_is_hi {
            (k.hi_port, k.lo_port)
        } else {
            (k.lo_port, k.hi_port)
        };
        let mut f = Flow {
            key: k,
            id,
            orig_is_hi,
            first_ns: clock.saturating_sub(r.below(3)),
            last_ns: clock,
            orig: DirCounters::default(),
            resp: DirCounters::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: if k.proto == 6 {
                TcpState::SynSent
            } else {
                TcpState::NotTcp
            },
            first_ports,
            outbound: None,
            latch: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            carried: DirCounters::default(),
            tap: false,
        };
        random_state(r, &mut f, clock);
        f
    }

    fn class(r: &mut Rng) -> TimerClass {
        TimerClass::from_bits(r.below(5) as u32)
    }

    fn check(t: &FlowTable, model: &HashMap<FlowKey, (u32, Flow, TimerClass)>) {
        assert_eq!(t.len(), model.len());
        for (k, (s, f, c)) in model {
            assert_eq!(t.find(t.hash(k), k), Some(*s), "find {k:?}");
            assert_eq!(t.load(*s).as_ref(), Some(f), "load {k:?}");
            assert_eq!(t.class_of(*s), Some(*c));
        }
        // Lists: every live flow on exactly its class's list, sorted by activity, links
        // symmetric.
        let mut seen = 0;
        for c in 0..CLASSES {
            let mut at = t.head[c];
            let mut prev = NIL;
            let mut last_touch = u64::MAX;
            while let Some(e) = t.entry(at) {
                assert_eq!(link(e, w::PREV), prev);
                assert_eq!((misc(e) & m::CLASS) as usize, c);
                let touched = t.touched(at - 1).unwrap();
                assert!(touched <= last_touch);
                last_touch = touched;
                seen += 1;
                prev = at;
                at = link(e, w::NEXT);
                assert!(seen <= t.capacity());
            }
            assert_eq!(t.tail[c], prev);
        }
        assert_eq!(seen, model.len());
        // Free list: only dead entries, and with the live ones and the fresh ones it
        // accounts for every slot.
        let mut free = 0;
        let mut at = t.free;
        while let Some(e) = t.entry(at) {
            assert_eq!(misc(e) & m::LIVE, 0);
            free += 1;
            at = link(e, w::CHAIN);
            assert!(free <= t.capacity());
        }
        assert_eq!(free + model.len(), t.fresh as usize);
        assert_eq!(t.slots().count(), model.len());
    }

    #[test]
    fn random_churn_matches_a_model() {
        for seed in 1..40u64 {
            let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491));
            let cap = 1 + r.below(12) as usize;
            let timeouts = [30, 100, 5, 50, 50];
            let mut t = FlowTable::new(cap, timeouts);
            let mut model: HashMap<FlowKey, (u32, Flow, TimerClass)> = HashMap::new();
            let mut clock = 1000u64;
            let mut id = 0u64;
            for _ in 0..3000 {
                clock += r.below(4);
                match r.below(10) {
                    0..=5 => {
                        let k = key(&mut r);
                        let h = t.hash(&k);
                        match t.find(h, &k) {
                            Some(s) => {
                                let (ms, mut f, _) = model[&k];
                                assert_eq!(s, ms);
                                assert_eq!(t.load(s), Some(f));
                                random_state(&mut r, &mut f, clock);
                                let c = class(&mut r);
                                t.store(s, &f);
                                t.touch(s, c, clock);
                                model.insert(k, (s, f, c));
                            }
                            None => {
                                assert!(!model.contains_key(&k));
                                if t.is_full() {
                                    let v = t.least_recent().unwrap();
                                    let oldest =
                                        model.values().map(|(_, f, _)| f.last_ns).min().unwrap();
                                    let gone = t.remove(v).unwrap();
                                    assert_eq!(gone.last_ns, oldest);
                                    assert_eq!(model.remove(&gone.key).unwrap().1, gone);
                                }
                                id += 1;
                                let f = new_flow(&mut r, k, id, clock);
                                let c = class(&mut r);
                                let s = t.insert(h, f, c, clock).unwrap();
                                model.insert(k, (s, f, c));
                            }
                        }
                    }
                    6 | 7 => {
                        while let Some((at, s)) = t.next_expiry() {
                            let want = model
                                .values()
                                .map(|(_, f, c)| f.last_ns + timeouts[*c as usize])
                                .min()
                                .unwrap();
                            assert_eq!(at, want);
                            if at > clock {
                                break;
                            }
                            let gone = t.remove(s).unwrap();
                            assert_eq!(model.remove(&gone.key).unwrap().1, gone);
                        }
                    }
                    _ => {
                        if let Some(k) = model
                            .keys()
                            .nth(r.below(model.len().max(1) as u64) as usize)
                            .copied()
                        {
                            let (s, f, _) = model.remove(&k).unwrap();
                            assert_eq!(t.remove(s), Some(f));
                            assert_eq!(t.remove(s), None);
                        }
                    }
                }
                check(&t, &model);
            }
        }
    }
}
