//! Ports for IP fragments, and orphan fragments held for reassembly.
//!
//! Only the first fragment of a datagram carries the TCP/UDP header. To count a later
//! fragment's bytes in the right flow (and send it to the right worker), the reader remembers
//! the ports of each first fragment, keyed by (addresses, protocol, IP identification), for
//! a short time. The map is a fixed array of slots indexed by hash, allocated once: a
//! colliding insert overwrites (and is counted), so a fragment flood cannot grow memory.
//! A later fragment whose first fragment was not seen (lost, overwritten or arriving out of
//! order) keeps ports 0: its bytes are counted in a (addresses, protocol, 0, 0) flow rather
//! than dropped, and counted as orphaned.
//!
//! Reassembly ([`crate::defrag`]) happens on the worker that owns the first fragment's flow,
//! which an orphan may not reach (it is dispatched by its port-0 flow). Counting must not
//! wait for the first fragment (that would reorder the flows' events), so when holding is
//! on (for the DNS ports, [`FragPorts::holding`]) the reader also keeps a *copy* of each
//! orphan UDP fragment's data, and when the first fragment arrives and its ports are wanted,
//! the dispatcher delivers the copies right after it, to its worker, marked `held`: the
//! worker reassembles them and does not count them again. Byte counting is exactly what it
//! is without holding. The copies sit in [`HELD_SLOTS`] datagram slots indexed by hash (like
//! the port map: a colliding orphan takes the slot, counted), each with room for
//! [`HELD_BYTES`] bytes in [`HELD_PIECES`] fragments: 512 KiB, allocated once. Live capture
//! in fanout mode does not hold: there the kernel reassembles before the fanout
//! (`PACKET_FANOUT_FLAG_DEFRAG`).
//!
//! Insertion, lookup and expiry touch exactly one slot (an expired slot is simply free for
//! the next insert), so no fragment costs a scan, whatever the flood; only the occupancy
//! metric scans, once per publication.

use crate::decode::{proto, Fragment, PacketMeta};
use crate::stats::Occupancy;
use std::hash::BuildHasher;

/// A datagram's identity, the same as the reassembler's.
type FragKey = crate::defrag::DatagramKey;

#[derive(Clone, Copy, Default)]
struct Slot {
    key: FragKey,
    sport: u16,
    dport: u16,
    /// The first fragment's tunnel tag: the decoder marks a UDP tunnel's first fragment as
    /// the tunnel's own flow by its port, which a later fragment only has from here.
    tunnel: crate::decode::TunnelTag,
    expires_ns: u64,
    used: bool,
}

/// Datagrams whose orphan fragments can be held at once.
pub const HELD_SLOTS: usize = 32;
/// Bytes of orphan fragment data held per datagram. DNS responses over UDP are at most
/// 4096 bytes at the common EDNS buffer sizes (1232 since DNS Flag Day 2020); 16 KiB also
/// covers the larger ones some resolvers allow. The first fragment's own bytes are not held.
pub const HELD_BYTES: usize = 16 * 1024;
/// Orphan fragments held per datagram: a 16 KiB datagram at the IPv6 minimum MTU is 14
/// fragments.
pub const HELD_PIECES: usize = 32;

/// Names of the reader's bounded tables, in the order of [`FragPorts::occupancy`]: the
/// first-fragment port map and the held orphan fragments.
pub const READER_TABLES: [&str; 2] = ["fragments", "fragments_held"];

/// Counters of the fragment map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    /// First fragments remembered.
    pub first: u64,
    /// Later fragments given their datagram's ports.
    pub matched: u64,
    /// Later fragments whose first fragment was not (or no longer) known.
    pub orphaned: u64,
    /// Live entries overwritten by a colliding first fragment.
    pub overwritten: u64,
    /// Orphan UDP fragments whose data was copied for reassembly.
    pub held: u64,
    /// Held fragments delivered after their first fragment, to its worker.
    pub replayed: u64,
    /// Orphan UDP fragments not held: their datagram's slot was full, or the snaplen cut
    /// them.
    pub not_held: u64,
    /// Datagrams with held fragments dropped for a colliding datagram's orphan.
    pub held_overwritten: u64,
}

#[derive(Clone, Copy, Default)]
struct Piece {
    /// Offset in the datagram, "more fragments", and where its bytes are in the slot.
    offset: u16,
    more: bool,
    at: u16,
    len: u16,
}

struct Held {
    key: FragKey,
    expires_ns: u64,
    used: bool,
    n: usize,
    bytes: usize,
    pieces: [Piece; HELD_PIECES],
    buf: Box<[u8]>,
}

/// Fixed-capacity map from a fragmented datagram to its ports, and the orphan fragments
/// held for reassembly.
pub struct FragPorts {
    slots: Vec<Slot>,
    mask: usize,
    timeout_ns: u64,
    hasher: foldhash::fast::FixedState,
    /// Ports whose datagrams' orphans are held (empty: none are).
    hold_ports: Vec<u16>,
    held: Vec<Held>,
    /// Counters.
    pub stats: FragStats,
}

/// What [`FragPorts::resolve`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Not a fragment.
    Unfragmented,
    /// A first fragment: its ports remembered.
    First,
    /// A later fragment given its first fragment's ports.
    Matched,
    /// A later fragment whose first fragment is not known: ports 0.
    Orphan,
}

impl FragPorts {
    /// A map with at least `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize, timeout_ns: u64) -> FragPorts {
        let n = capacity.max(1).next_power_of_two();
        FragPorts {
            slots: vec![Slot::default(); n],
            mask: n - 1,
            timeout_ns,
            hasher: foldhash::fast::FixedState::with_seed(0x6672_6167),
            hold_ports: Vec::new(),
            held: Vec::new(),
            stats: FragStats::default(),
        }
    }

    /// The map the config asks for (`flow.fragment_capacity`, `flow.fragment_timeout`),
    /// holding orphans for the DNS ports when `hold` (the dispatching reader; not a fanout
    /// worker, whose kernel reassembles).
    pub fn from_config(cfg: &crate::config::Config, hold: bool) -> FragPorts {
        let t = u64::try_from(cfg.flow.fragment_timeout.as_nanos()).unwrap_or(u64::MAX);
        let f = FragPorts::new(cfg.flow.fragment_capacity, t);
        if hold && cfg.dns.enabled {
            f.holding(&cfg.dns.ports)
        } else {
            f
        }
    }

    /// Holds orphan UDP fragments for datagrams whose first fragment uses one of `ports`
    /// (the DNS extractor's, by the same test: [`PacketMeta::uses_port`]). Allocates the
    /// held slots ([`HELD_SLOTS`] × [`HELD_BYTES`]).
    pub fn holding(mut self, ports: &[u16]) -> FragPorts {
        self.hold_ports = ports.to_vec();
        if self.hold_ports.is_empty() {
            return self;
        }
        self.held = (0..HELD_SLOTS)
            .map(|_| Held {
                key: FragKey::default(),
                expires_ns: 0,
                used: false,
                n: 0,
                bytes: 0,
                pieces: [Piece::default(); HELD_PIECES],
                buf: vec![0u8; HELD_BYTES].into_boxed_slice(),
            })
            .collect();
        self
    }

    /// For the table metrics, in [`READER_TABLES`] order: the port map's (entries not yet
    /// expired at `clock_ns`, capacity, live entries overwritten) and the held orphans'
    /// (datagrams held, slots, held datagrams overwritten). Scans the slots: called once per
    /// publication, not per packet.
    pub fn occupancy(&self, clock_ns: u64) -> [Occupancy; 2] {
        let live = self
            .slots
            .iter()
            .filter(|s| s.used && s.expires_ns >= clock_ns)
            .count();
        let held = self
            .held
            .iter()
            .filter(|h| h.used && h.expires_ns >= clock_ns)
            .count();
        [
            (live as u64, self.slots.len() as u64, self.stats.overwritten),
            (
                held as u64,
                self.held.len() as u64,
                self.stats.held_overwritten,
            ),
        ]
    }

    /// Keeps a copy of an orphan's data (`meta` decoded from `frame`) if holding is on and
    /// it is UDP: see the module documentation.
    pub fn hold(&mut self, meta: &PacketMeta, frame: &[u8], clock_ns: u64) {
        let (Some(key), Fragment::Later { offset, more, .. }) = (FragKey::of(meta), meta.fragment)
        else {
            return;
        };
        if self.held.is_empty() || meta.proto != proto::UDP {
            return;
        }
        let idx = (self.hasher.hash_one(key) as usize) % self.held.len();
        let Some(h) = self.held.get_mut(idx) else {
            return;
        };
        let live = h.used && h.expires_ns >= clock_ns;
        if !live || h.key != key {
            if live {
                self.stats.held_overwritten += 1;
            }
            h.key = key;
            h.used = true;
            h.n = 0;
            h.bytes = 0;
            h.expires_ns = clock_ns.saturating_add(self.timeout_ns);
        }
        let start = usize::from(meta.payload_offset);
        let len = meta.payload_len as usize;
        let data = frame.get(start..).and_then(|d| d.get(..len));
        let (Some(data), Some(piece), Some(dst)) = (
            data,
            h.pieces.get_mut(h.n),
            h.buf.get_mut(h.bytes..h.bytes + len),
        ) else {
            self.stats.not_held += 1;
            return;
        };
        dst.copy_from_slice(data);
        // Both fit in u16: the buffer is HELD_BYTES.
        *piece = Piece {
            offset,
            more,
            at: h.bytes as u16,
            len: len as u16,
        };
        h.n += 1;
        h.bytes += len;
        self.stats.held += 1;
    }

    /// The held orphans of `first`'s datagram, as (the packet to hand its worker, its
    /// bytes), if its ports are wanted; the slot is freed either way. Counts them as
    /// replayed.
    pub fn take_held<'a>(
        &'a mut self,
        first: &PacketMeta,
        clock_ns: u64,
    ) -> impl Iterator<Item = (PacketMeta, &'a [u8])> + 'a {
        let mut found: Option<&'a Held> = None;
        if let (Some(key), false) = (FragKey::of(first), self.held.is_empty()) {
            let idx = (self.hasher.hash_one(key) as usize) % self.held.len();
            let wanted = first.proto == proto::UDP && first.uses_port(&self.hold_ports);
            if let Some(h) = self.held.get_mut(idx) {
                if h.used && h.key == key && h.expires_ns >= clock_ns {
                    h.used = false;
                    if wanted {
                        self.stats.replayed += h.n as u64;
                        found = Some(h);
                    }
                }
            }
        }
        let first = *first;
        found.into_iter().flat_map(move |h| {
            h.pieces.iter().take(h.n).map(move |p| {
                let meta = PacketMeta {
                    fragment: Fragment::Later {
                        id: first.fragment.id().unwrap_or(0),
                        offset: p.offset,
                        more: p.more,
                    },
                    ip_len: 0,
                    l3_offset: 0,
                    payload_offset: 0,
                    payload_len: u32::from(p.len),
                    ..first
                };
                let at = usize::from(p.at);
                let bytes = h.buf.get(at..at + usize::from(p.len)).unwrap_or(&[]);
                (meta, bytes)
            })
        })
    }

    /// Records a first fragment's ports, or fills in a later fragment's; says which it was.
    #[inline]
    pub fn resolve(&mut self, meta: &mut PacketMeta, clock_ns: u64) -> Resolved {
        // The key keeps the upper-layer protocol for IPv6 too (as it always did here; the
        // held orphans and the reassembler go without it).
        let Some(key) = FragKey::with_proto(meta) else {
            return Resolved::Unfragmented;
        };
        let idx = (self.hasher.hash_one(key) as usize) & self.mask;
        let Some(slot) = self.slots.get_mut(idx) else {
            return Resolved::Orphan;
        };
        let live = slot.used && slot.expires_ns >= clock_ns;
        match meta.fragment {
            Fragment::First { .. } => {
                if live && slot.key != key {
                    self.stats.overwritten += 1;
                }
                *slot = Slot {
                    key,
                    sport: meta.sport,
                    dport: meta.dport,
                    tunnel: meta.tunnel,
                    expires_ns: clock_ns.saturating_add(self.timeout_ns),
                    used: true,
                };
                self.stats.first += 1;
                Resolved::First
            }
            Fragment::Later { .. } => {
                if live && slot.key == key {
                    meta.sport = slot.sport;
                    meta.dport = slot.dport;
                    meta.tunnel = slot.tunnel;
                    self.stats.matched += 1;
                    Resolved::Matched
                } else {
                    self.stats.orphaned += 1;
                    Resolved::Orphan
                }
            }
            Fragment::None => Resolved::Unfragmented,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    fn first(id: u32) -> PacketMeta {
        PacketMeta {
            src: Addr::v4([10, 0, 0, 1]),
            dst: Addr::v4([192, 0, 2, 1]),
            proto: 17,
            sport: 5_000,
            dport: 53,
            fragment: Fragment::First { id, data: 20 },
            ..PacketMeta::default()
        }
    }

    fn later(id: u32, offset: u16, more: bool, len: u32) -> PacketMeta {
        PacketMeta {
            sport: 0,
            dport: 0,
            fragment: Fragment::Later { id, offset, more },
            payload_offset: 20,
            payload_len: len,
            ..first(id)
        }
    }

    /// A UDP tunnel's first fragment, marked by the decoder as the tunnel's own flow (by its
    /// port), passes the mark to its later fragments with the ports: all of them count in
    /// the tunnel's flow, none in a plain one.
    #[test]
    fn later_fragments_take_the_first_fragments_tunnel_mark() {
        use crate::decode::{TunnelKind, TunnelTag};
        let outer = TunnelTag {
            kind: TunnelKind::Vxlan as u8 | TunnelTag::OUTER,
            id: 0,
        };
        let mut f = FragPorts::new(64, 10_000);
        let mut m = PacketMeta {
            tunnel: outer,
            ..first(9)
        };
        assert_eq!(f.resolve(&mut m, 1), Resolved::First);
        let mut l = later(9, 100, false, 100);
        assert_eq!(f.resolve(&mut l, 2), Resolved::Matched);
        assert_eq!(l.tunnel, outer);
    }

    /// Fragments of two mirrored networks behind different tunnels (VNI 1 and 2) that reuse
    /// the same addresses and IP id are two datagrams, as their flows are two flows (the
    /// tunnel tag is in the flow key): a later fragment must not take the ports of the
    /// other network's first fragment.
    #[test]
    fn fragments_behind_two_tunnels_are_two_datagrams() {
        use crate::decode::{TunnelKind, TunnelTag};
        let vni = |id| TunnelTag {
            kind: TunnelKind::Vxlan as u8,
            id,
        };
        let mut f = FragPorts::new(64, 10_000);
        let mut m = PacketMeta {
            tunnel: vni(1),
            ..first(7)
        };
        assert_eq!(f.resolve(&mut m, 1), Resolved::First);
        let mut l = PacketMeta {
            tunnel: vni(2),
            ..later(7, 100, false, 100)
        };
        assert_eq!(f.resolve(&mut l, 2), Resolved::Orphan);
        assert_eq!((l.sport, l.dport), (0, 0));
    }

    /// An orphan's data is kept until its first fragment comes; then it is handed out once,
    /// with the first fragment's ports, if they are wanted.
    #[test]
    fn orphans_are_held_until_their_first_fragment() {
        let mut f = FragPorts::new(64, 10_000).holding(&[53]);
        let frame: Vec<u8> = (0..120u8).collect();
        for (i, off) in [(0u16, 200u16), (1, 100)] {
            let mut m = later(7, off, i == 0, 100);
            assert_eq!(f.resolve(&mut m, 1), Resolved::Orphan);
            f.hold(&m, &frame, 1);
        }
        assert_eq!(f.occupancy(1)[1], (1, HELD_SLOTS as u64, 0));
        let mut m = first(7);
        assert_eq!(f.resolve(&mut m, 2), Resolved::First);
        let got: Vec<_> = f
            .take_held(&m, 2)
            .map(|(h, b)| (h.fragment, (h.sport, h.dport), b.to_vec()))
            .collect();
        let data = frame[20..].to_vec();
        assert_eq!(
            got,
            vec![
                (
                    Fragment::Later {
                        id: 7,
                        offset: 200,
                        more: true
                    },
                    (5_000, 53),
                    data.clone()
                ),
                (
                    Fragment::Later {
                        id: 7,
                        offset: 100,
                        more: false
                    },
                    (5_000, 53),
                    data
                ),
            ]
        );
        assert_eq!((f.stats.held, f.stats.replayed), (2, 2));
        // Handed out once.
        assert_eq!(f.take_held(&m, 2).count(), 0);
        assert_eq!(f.occupancy(2)[1].0, 0);
        // Not a DNS port: freed, not handed out.
        let mut o = later(8, 100, false, 100);
        f.resolve(&mut o, 3);
        f.hold(&o, &frame, 3);
        let mut m = PacketMeta {
            dport: 9999,
            ..first(8)
        };
        f.resolve(&mut m, 3);
        assert_eq!(f.take_held(&m, 3).count(), 0);
        assert_eq!((f.stats.held, f.stats.replayed), (3, 2));
        assert_eq!(f.occupancy(3)[1].0, 0);
        // Expired: nothing.
        f.hold(&o, &frame, 3);
        assert_eq!(f.take_held(&first(8), 3 + 10_001).count(), 0);
    }

    /// The held slots are bounded: too many pieces or bytes for one datagram are not held,
    /// a colliding datagram takes a live slot (counted), an unheld map holds nothing.
    #[test]
    fn held_slots_are_bounded() {
        let mut f = FragPorts::new(64, 10_000).holding(&[53]);
        let frame = vec![0u8; 1520];
        for i in 0..HELD_PIECES as u16 + 5 {
            f.hold(&later(1, 8 * (i + 1), true, 8), &frame, 1);
        }
        assert_eq!((f.stats.held, f.stats.not_held), (HELD_PIECES as u64, 5));
        let mut f = FragPorts::new(64, 10_000).holding(&[53]);
        for i in 0..20u16 {
            f.hold(&later(2, 1480 * (i + 1), true, 1480), &frame, 1);
        }
        assert_eq!(f.stats.held, (HELD_BYTES / 1480) as u64);
        // A snaplen-cut orphan is not held.
        f.hold(&later(3, 8, true, 1480), &frame[..100], 1);
        assert_eq!(f.stats.not_held, 20 - HELD_BYTES as u64 / 1480 + 1);
        // Many datagrams through 32 slots: every live slot taken is counted.
        let mut f = FragPorts::new(64, 10_000).holding(&[53]);
        for id in 0..1000 {
            f.hold(&later(id, 8, true, 8), &frame, 1);
        }
        let (live, cap, over) = f.occupancy(1)[1];
        assert_eq!(cap, HELD_SLOTS as u64);
        assert_eq!(live + over, 1000);
        let mut f = FragPorts::new(64, 10_000);
        f.hold(&later(1, 8, true, 8), &frame, 1);
        assert_eq!((f.stats.held, f.occupancy(1)[1]), (0, (0, 0, 0)));
    }

    /// A flood of first fragments: the array never grows, each insert touches its one slot,
    /// live collisions are counted, and expired slots are reused without counting.
    #[test]
    fn a_fragment_flood_overwrites_one_slot_per_insert() {
        let mut f = FragPorts::new(64, 10);
        let n = 20_000u32;
        for id in 0..n {
            f.resolve(&mut first(id), 0);
            assert_eq!(f.slots.len(), 64);
        }
        let [(live, cap, overwritten), _] = f.occupancy(0);
        assert_eq!(cap, 64);
        assert!(live <= 64);
        assert_eq!(f.stats.first, u64::from(n));
        // Every insert either took a free slot or overwrote a live one: one slot each.
        assert_eq!(overwritten + live, u64::from(n));
        // Past the timeout nothing is live: the next inserts overwrite nothing.
        for id in n..2 * n {
            f.resolve(&mut first(id), 1_000 + u64::from(id - n) * 100);
        }
        assert_eq!(f.stats.overwritten, overwritten);
    }
}
