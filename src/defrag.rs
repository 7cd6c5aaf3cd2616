//! IP fragment reassembly for what the worker parses.
//!
//! Place in the data flow: capture → decode → reader ([`crate::capture::frag`]: later
//! fragments get their first fragment's ports; orphans are held until it comes) → worker:
//! a fragment is first counted in its flow like any packet, *then* offered here. When a
//! datagram is complete, its UDP payload ([`udp_payload`]) goes to the same parser call an
//! unfragmented datagram's payload goes to (DNS today; TLS and QUIC over UDP can take the
//! same path). Byte counting never depends on this module: a fragment's bytes are counted
//! whether or not it is reassembled.
//!
//! **Which datagrams.** Only a datagram whose first fragment the worker wants gets a slot
//! (the worker asks its parsers; for DNS, UDP to or from a DNS port by the extractor's own
//! port test). Every other fragment costs one map lookup that finds nothing. A later fragment
//! reaches the worker of its datagram's first fragment only once the reader knows the ports:
//! a later fragment that arrives *before* the first is counted where the reader sent it (the
//! port-0 flow of the address pair, perhaps on another worker), and the reader keeps a copy
//! and delivers it to the first fragment's worker right after the first fragment, marked
//! "held" so it is reassembled but not counted again. So a slot is always opened by the
//! first fragment, and keyed by (addresses, protocol, IP id, VLANs).
//!
//! **Bounds.** [`SLOTS`] buffers of [`MAX_DATAGRAM`] bytes per worker, allocated once
//! (8 × 64 KiB + 8 KiB of block maps ≈ 520 KiB per worker): a DNS message over UDP is at
//! most 65 507 bytes, and fragmented DNS datagrams complete within milliseconds, so a few
//! in flight per worker suffice. A datagram lives at most the reader's fragment timeout
//! (`flow.fragment_timeout`, 30 s by default like Linux's `ipfrag_time`) from its first
//! fragment; a later fragment cannot be attributed after that anyway. At most
//! [`MAX_PIECES`] fragments may bring new bytes to one datagram (see there). Slots live in a
//! map kept in creation order, and every datagram has the same lifetime, so the front is
//! always the next to expire and the one to evict when all slots are taken: lookup, expiry
//! and eviction are O(1); only the occupancy metric walks the slots.
//!
//! **Overlap policy: first fragment wins.** Bytes already received are kept; a later
//! fragment's bytes for the same range are compared, and if they differ the fragment is
//! counted in `overlaps` and its conflicting bytes ignored (its new bytes are kept). The same
//! holds for the datagram's end: the first fragment without "more fragments" fixes it, and a
//! fragment contradicting it is counted `bad` and ignored. Why overlapping fragments cannot
//! hide a DNS query from the sensor: the classic evasion (Ptacek and Newsham, 1998) makes the
//! sensor *drop* or mis-order a datagram the host accepts. Here nothing an overlap does can
//! drop a datagram or stop it completing: a conflict only adds a count, and the datagram is
//! parsed as soon as every byte up to its end is there, with the bytes that arrived first.
//! The DNS message event is therefore produced for every datagram that completes, and the
//! overlap is visible in `outflow_ip_reassembly_total{event="overlap"}`. A host applying
//! another policy might read different bytes in the overlapped ranges, but IPv6 hosts must
//! drop overlapping datagrams altogether (RFC 5722), and an IPv4 attacker who needs the
//! overlap to change what the resolver sees leaves the counter as evidence.
//!
//! **Malformed fragments** (each counted, never a panic): a fragment ending past 65 535
//! bytes (`too_big`); a zero-length fragment, a non-final fragment whose length is not a
//! multiple of 8 (RFC 791, RFC 8200 §4.5), and one contradicting the datagram's end
//! (`bad`); a fragment cut by the snaplen (`truncated`: its bytes are unknown). Duplicates
//! change nothing. The last fragment's end need not be 8-aligned.
//!
//! This module never allocates after [`Reassembler::new`], never reads the clock (packet time
//! is passed in) and never panics.

use crate::decode::{proto, Addr, Fragment, PacketMeta};
use hashlink::LinkedHashMap;

/// Reassembly slots per worker: datagrams in flight at once. When all are taken, the oldest
/// datagram is dropped (counted in `evicted`).
pub const SLOTS: usize = 8;
/// Largest fragmentable part of a datagram: the 16-bit IP length fields' limit. A fragment
/// ending beyond it is counted `too_big`.
pub const MAX_DATAGRAM: usize = 65_535;
/// Fragments that may bring new bytes to one datagram. Real fragmentation at any MTU of at
/// least 1 KiB needs at most 64 for the largest datagram; 128 also lets a query cut into
/// 8-byte pieces (the tiny-fragment trick of RFC 1858) of up to 1 KiB through. A datagram
/// needing more is dropped and counted `too_many`. Duplicates and overlaps that bring nothing
/// new do not count, so injecting copies of a datagram's fragments cannot get it dropped.
pub const MAX_PIECES: u16 = 128;

/// 8-byte blocks of a datagram: fragment offsets are multiples of 8, so a block is either
/// received or not (only the last one may be short).
const BLOCKS: usize = MAX_DATAGRAM.div_ceil(8);
const MAP_WORDS: usize = BLOCKS.div_ceil(64);

/// The maps' hasher, seeded per run (keys come from the wire).
type Fast = foldhash::fast::RandomState;

/// Identifies a datagram (RFC 791: source, destination, protocol, identification; RFC 8200:
/// source, destination, 32-bit identification, no protocol, since what follows the fragment
/// header may be another extension header in later fragments and the transport protocol in
/// the first), plus the VLANs and the tunnel tag: mirrors of two VLANs or two tunnels may
/// reuse addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    src: Addr,
    dst: Addr,
    proto: u8,
    id: u32,
    vlan: [u16; 2],
    tunnel: crate::decode::TunnelTag,
}

impl DatagramKey {
    /// The key of a fragment's datagram; `None` for an unfragmented packet.
    pub fn of(m: &PacketMeta) -> Option<DatagramKey> {
        Some(DatagramKey {
            proto: if m.ipv6 { 0 } else { m.proto },
            ..DatagramKey::with_proto(m)?
        })
    }

    /// [`of`](Self::of) keeping the upper-layer protocol for IPv6 too: the key of the
    /// reader's port map, which must tell a UDP datagram's ports from a TCP one's.
    pub fn with_proto(m: &PacketMeta) -> Option<DatagramKey> {
        Some(DatagramKey {
            src: m.src,
            dst: m.dst,
            proto: m.proto,
            id: m.fragment.id()?,
            vlan: m.vlan,
            tunnel: m.tunnel.identity(),
        })
    }
}

/// Counters of one worker's reassembly (summed over workers in the summary and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Datagrams given a slot (their first fragment was wanted).
    pub started: u64,
    /// Datagrams completed and handed to the parser.
    pub reassembled: u64,
    /// Datagrams dropped incomplete because their time ran out.
    pub timeouts: u64,
    /// Datagrams dropped incomplete to free a slot for a new one (all slots taken).
    pub evicted: u64,
    /// Datagrams dropped because they needed more than [`MAX_PIECES`] fragments.
    pub too_many: u64,
    /// Fragments whose bytes conflicted with bytes already received (the first ones kept).
    pub overlaps: u64,
    /// Fragments ending beyond [`MAX_DATAGRAM`] (ignored).
    pub too_big: u64,
    /// Fragments ignored as malformed: zero length, a non-final length not a multiple of 8,
    /// an end contradicting the datagram's, or a completed datagram whose UDP length does
    /// not fit it.
    pub bad: u64,
    /// Fragments of a datagram being reassembled that the snaplen cut (ignored).
    pub truncated: u64,
}

impl DefragStats {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &DefragStats) {
        self.started += o.started;
        self.reassembled += o.reassembled;
        self.timeouts += o.timeouts;
        self.evicted += o.evicted;
        self.too_many += o.too_many;
        self.overlaps += o.overlaps;
        self.too_big += o.too_big;
        self.bad += o.bad;
        self.truncated += o.truncated;
    }

    /// (name, value) of every counter, in a stable order: the summary's and the metric's
    /// `event` labels.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("started", self.started),
            ("reassembled", self.reassembled),
            ("timeout", self.timeouts),
            ("evicted", self.evicted),
            ("too_many", self.too_many),
            ("overlap", self.overlaps),
            ("too_big", self.too_big),
            ("bad", self.bad),
            ("truncated", self.truncated),
        ]
    }
}

struct Slot {
    /// The first fragment's decoded headers: addresses, ports, where its data started.
    first: PacketMeta,
    /// The flow the first fragment was counted in.
    flow_id: u64,
    expires_ns: u64,
    /// The datagram's length, once a fragment without "more fragments" said it.
    end: Option<u32>,
    /// Highest end of any fragment received.
    high: u32,
    /// Blocks received.
    filled: u32,
    /// Fragments that brought new bytes.
    pieces: u16,
    /// Received blocks, one bit each.
    map: Box<[u64; MAP_WORDS]>,
    buf: Box<[u8]>,
}

/// What a fragment did to its slot.
enum Added {
    Pending,
    Complete,
    /// The datagram must be dropped (too many pieces).
    Drop,
}

/// Per-worker reassembly of the fragmented datagrams its parsers want; see the module
/// documentation.
pub struct Reassembler {
    slots: Vec<Slot>,
    /// Datagram → slot, in creation order (the front expires first).
    live: LinkedHashMap<DatagramKey, usize, Fast>,
    /// Slots no datagram holds.
    free: Vec<usize>,
    timeout_ns: u64,
    /// Counters.
    pub stats: DefragStats,
}

impl Reassembler {
    /// A reassembler whose datagrams live `timeout_ns` from their first fragment, its
    /// buffers allocated now.
    pub fn new(timeout_ns: u64) -> Reassembler {
        let mut live = LinkedHashMap::with_capacity_and_hasher(SLOTS, Fast::default());
        // Allocate the map's nodes now: removed nodes go to its free list and are reused,
        // so opening a slot on the capture path never allocates.
        for i in 0..SLOTS {
            live.insert(
                DatagramKey {
                    id: i as u32,
                    ..DatagramKey::default()
                },
                i,
            );
        }
        while live.pop_front().is_some() {}
        Reassembler {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    first: PacketMeta::default(),
                    flow_id: 0,
                    expires_ns: 0,
                    end: None,
                    high: 0,
                    filled: 0,
                    pieces: 0,
                    map: Box::new([0; MAP_WORDS]),
                    buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
                })
                .collect(),
            live,
            free: (0..SLOTS).rev().collect(),
            timeout_ns: timeout_ns.max(1),
            stats: DefragStats::default(),
        }
    }

    /// (datagrams being reassembled, slots, datagrams evicted for lack of a slot) for the
    /// table metrics.
    pub fn occupancy(&self) -> (u64, u64, u64) {
        (
            self.live.len() as u64,
            self.slots.len() as u64,
            self.stats.evicted,
        )
    }

    /// Drops the datagrams whose time ran out by `clock_ns` (from the front: creation order
    /// is expiry order). Called per fragment and per batch.
    pub fn expire(&mut self, clock_ns: u64) {
        while let Some((_, &i)) = self.live.front() {
            if self.slots.get(i).is_none_or(|s| s.expires_ns > clock_ns) {
                return;
            }
            self.live.pop_front();
            self.free.push(i);
            self.stats.timeouts += 1;
        }
    }

    /// Offers one fragment (`m` decoded from `frame`). `open` is the flow id to record when
    /// `m` is a first fragment the caller wants reassembled and no slot exists yet; `None`
    /// for fragments that may only join a datagram already being reassembled. When the
    /// fragment completes its datagram, `done` gets the first fragment's headers, the flow
    /// it was counted in and the datagram's fragmentable part (for UDP, see [`udp_payload`]),
    /// and returns false if the datagram turned out unusable (counted `bad`).
    pub fn offer(
        &mut self,
        m: &PacketMeta,
        frame: &[u8],
        clock_ns: u64,
        open: Option<u64>,
        done: impl FnOnce(&PacketMeta, u64, &[u8]) -> bool,
    ) {
        let Some(key) = DatagramKey::of(m) else {
            return;
        };
        self.expire(clock_ns);
        let Some((offset, more, start, len)) = piece(m) else {
            return;
        };
        let idx = match self.live.get(&key).copied() {
            Some(i) => i,
            None => match open {
                Some(flow_id) if matches!(m.fragment, Fragment::First { .. }) => {
                    match self.open(key, m, flow_id, clock_ns) {
                        Some(i) => i,
                        None => return,
                    }
                }
                _ => return,
            },
        };
        // Only fragments of a datagram being reassembled get here: the rest is not our
        // business, and not counted.
        let end = usize::from(offset) + len;
        let data = frame.get(start..).and_then(|d| d.get(..len));
        let verdict = if end > MAX_DATAGRAM {
            self.stats.too_big += 1;
            return;
        } else if let Some(data) = data {
            let Some(slot) = self.slots.get_mut(idx) else {
                return;
            };
            match add(slot, &mut self.stats, u32::from(offset), more, data) {
                Some(v) => v,
                None => {
                    self.stats.bad += 1;
                    return;
                }
            }
        } else {
            self.stats.truncated += 1;
            return;
        };
        match verdict {
            Added::Pending => {}
            Added::Drop => {
                self.stats.too_many += 1;
                self.release(&key, idx);
            }
            Added::Complete => {
                self.stats.reassembled += 1;
                if let Some(s) = self.slots.get(idx) {
                    let total = s.end.unwrap_or(0) as usize;
                    if !done(&s.first, s.flow_id, s.buf.get(..total).unwrap_or(&[])) {
                        self.stats.bad += 1;
                    }
                }
                self.release(&key, idx);
            }
        }
    }

    /// A slot for a new datagram: a free one, else the oldest datagram's.
    fn open(
        &mut self,
        key: DatagramKey,
        m: &PacketMeta,
        flow_id: u64,
        clock_ns: u64,
    ) -> Option<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                // Expired ones are gone already (see `offer`): this one is live.
                let (_, i) = self.live.pop_front()?;
                self.stats.evicted += 1;
                i
            }
        };
        let s = self.slots.get_mut(i)?;
        s.first = *m;
        s.flow_id = flow_id;
        s.expires_ns = clock_ns.saturating_add(self.timeout_ns);
        s.end = None;
        s.high = 0;
        s.filled = 0;
        s.pieces = 0;
        s.map.fill(0);
        self.live.insert(key, i);
        self.stats.started += 1;
        Some(i)
    }

    fn release(&mut self, key: &DatagramKey, idx: usize) {
        if self.live.remove(key).is_some() {
            self.free.push(idx);
        }
    }
}

/// (offset in the datagram, more fragments, start in the frame, length on the wire) of a
/// fragment's data; `None` for an unfragmented packet or a first fragment whose headers do
/// not add up.
fn piece(m: &PacketMeta) -> Option<(u16, bool, usize, usize)> {
    match m.fragment {
        Fragment::None => None,
        Fragment::First { data, .. } => {
            let start = usize::from(m.l3_offset) + usize::from(data);
            // The transport payload ends where the fragment does (see `decode::net`).
            let end = usize::from(m.payload_offset) + m.payload_len as usize;
            Some((0, true, start, end.checked_sub(start)?))
        }
        Fragment::Later { offset, more, .. } => Some((
            offset,
            more,
            usize::from(m.payload_offset),
            m.payload_len as usize,
        )),
    }
}

/// Adds a fragment's bytes to a slot, first fragment wins (see the module documentation).
/// `None` for a malformed fragment (ignored, counted `bad` by the caller).
fn add(s: &mut Slot, st: &mut DefragStats, offset: u32, more: bool, data: &[u8]) -> Option<Added> {
    let len = u32::try_from(data.len()).ok()?;
    let end = offset.checked_add(len)?;
    // Offsets from the wire are in 8-byte units; one that is not came from elsewhere.
    if len == 0 || (more && len % 8 != 0) || offset % 8 != 0 {
        return None;
    }
    match (more, s.end) {
        // Past the end another fragment fixed, or a second, different end.
        (true, Some(e)) if end > e => return None,
        (false, Some(e)) if end != e => return None,
        // An end before bytes already received.
        (false, None) if end < s.high => return None,
        _ => {}
    }
    let (mut new, mut conflict) = (0u32, false);
    for b in offset / 8..end.div_ceil(8) {
        let lo = (b * 8) as usize;
        let hi = ((b * 8 + 8).min(end)) as usize;
        let from = lo - offset as usize;
        let (Some(src), Some(dst)) = (data.get(from..from + (hi - lo)), s.buf.get_mut(lo..hi))
        else {
            return None;
        };
        let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
        let word = s.map.get_mut(w)?;
        if *word & bit != 0 {
            conflict |= dst != src;
        } else {
            dst.copy_from_slice(src);
            *word |= bit;
            new += 1;
        }
    }
    if conflict {
        st.overlaps += 1;
    }
    if !more {
        s.end = Some(end);
    }
    s.high = s.high.max(end);
    if new > 0 {
        s.filled += new;
        s.pieces += 1;
        if s.pieces > MAX_PIECES {
            return Some(Added::Drop);
        }
    }
    Some(match s.end {
        Some(e) if s.filled == e.div_ceil(8) => Added::Complete,
        _ => Added::Pending,
    })
}

/// The UDP payload of a reassembled datagram: the fragmentable part starts where the first
/// fragment's data did, the UDP header sits right before the first fragment's payload
/// offset, and its length field (which covers the whole datagram) bounds the payload.
/// `None` when the datagram is not UDP or its UDP length does not fit it.
pub fn udp_payload<'a>(first: &PacketMeta, datagram: &'a [u8]) -> Option<&'a [u8]> {
    let Fragment::First { data, .. } = first.fragment else {
        return None;
    };
    if first.proto != proto::UDP {
        return None;
    }
    let start = usize::from(first.l3_offset) + usize::from(data);
    // Extension headers after an IPv6 fragment header come before the UDP header.
    let header = usize::from(first.payload_offset)
        .checked_sub(start)?
        .checked_sub(8)?;
    let udp = datagram.get(header..)?;
    let &[_, _, _, _, hi, lo, ..] = udp else {
        return None;
    };
    let udp_len = usize::from(u16::from_be_bytes([hi, lo]));
    if udp_len < 8 {
        return None;
    }
    udp.get(8..udp_len)
}

#[cfg(test)]
mod tests;
