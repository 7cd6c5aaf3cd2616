//! Ports for IP fragments.
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
//! Insertion, lookup and expiry touch exactly one slot (an expired slot is simply free for
//! the next insert), so no fragment costs a scan, whatever the flood; only the occupancy
//! metric scans, once per publication.

use crate::decode::{Addr, Fragment, PacketMeta};
use std::hash::{BuildHasher, Hash};

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
struct FragKey {
    src: Addr,
    dst: Addr,
    proto: u8,
    id: u32,
    vlan: [u16; 2],
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: FragKey,
    sport: u16,
    dport: u16,
    expires_ns: u64,
    used: bool,
}

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
}

/// Fixed-capacity map from a fragmented datagram to its ports.
pub struct FragPorts {
    slots: Vec<Slot>,
    mask: usize,
    timeout_ns: u64,
    hasher: foldhash::fast::FixedState,
    /// Counters.
    pub stats: FragStats,
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
            stats: FragStats::default(),
        }
    }

    /// (entries not yet expired at `clock_ns`, capacity, live entries overwritten) for the
    /// table metrics. Scans the slots: called once per publication, not per packet.
    pub fn occupancy(&self, clock_ns: u64) -> (u64, u64, u64) {
        let live = self
            .slots
            .iter()
            .filter(|s| s.used && s.expires_ns >= clock_ns)
            .count();
        (live as u64, self.slots.len() as u64, self.stats.overwritten)
    }

    /// Records a first fragment's ports, or fills in a later fragment's.
    #[inline]
    pub fn resolve(&mut self, meta: &mut PacketMeta, clock_ns: u64) {
        let Some(id) = meta.fragment.id() else {
            return;
        };
        let key = FragKey {
            src: meta.src,
            dst: meta.dst,
            proto: meta.proto,
            id,
            vlan: meta.vlan,
        };
        let idx = (self.hasher.hash_one(key) as usize) & self.mask;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
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
                    expires_ns: clock_ns.saturating_add(self.timeout_ns),
                    used: true,
                };
                self.stats.first += 1;
            }
            Fragment::Later { .. } => {
                if live && slot.key == key {
                    meta.sport = slot.sport;
                    meta.dport = slot.dport;
                    self.stats.matched += 1;
                } else {
                    self.stats.orphaned += 1;
                }
            }
            Fragment::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (live, cap, overwritten) = f.occupancy(0);
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
