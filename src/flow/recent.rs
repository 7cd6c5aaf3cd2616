//! Recently closed TCP connections, so that a FIN or RST arriving after a connection's close
//! linger joins the connection it belongs to.
//!
//! **Role in the data flow.** A worker removes a closed connection (FIN both ways, or RST)
//! from its [`FlowTable`](super::FlowTable) once `flow.tcp_close_linger` has passed, and
//! writes its record. A retransmitted FIN or RST after that finds no flow and would start a
//! new one whose originator is its sender: often the external host, giving a second,
//! reversed record and, to the cross-flow detectors, an "inbound connection" to a home
//! host's ephemeral port. So the worker remembers each closed connection here for
//! `flow.tcp_recent_closed` (its orientation, home side and flow id); a TCP packet without
//! SYN that would create a flow and matches an entry creates it with the remembered
//! orientation and home side, and its record links to the first one (`continues`). A packet
//! with SYN never joins: a SYN on the tuple is a new connection.
//!
//! **Why a link and not the same flow id.** Zeek logs a late FIN or RST as a conn.log
//! entry of its own with a new uid (flipped to the client as originator when the server's
//! port is a well-known one: history `^r` in its Teredo baseline). outflow does the same,
//! taking the orientation from the connection itself rather than from a port list, so flow
//! ids stay unique (alert ids, slice packets and `/api/pcap?flow=` rely on that); the late
//! record's `continues` names the first record's id, so an analyst comparing with Zeek
//! finds one record per Zeek entry, and the join between them.
//!
//! **Memory and time.** A fixed array of slots indexed by the key's hash, allocated once
//! (zeroed, so mapped only as it is used): `capacity_per_worker / 16` of them (at least 64,
//! rounded up to a power of two), 32 bytes each (a 64-bit tag of the key, the flow id, the
//! expiry, flags), plus 16 bytes of link each: 3 bytes per flow of table capacity (the
//! table itself costs 126). Insertion and lookup touch one slot. A colliding insert
//! overwrites a live entry (counted): a flood of closing connections cannot grow memory,
//! and at worst costs a later late packet its join (it then starts a flow of its own, as
//! without this table). Expiry is lazy (an expired slot is free for the next insert); each
//! insert also sweeps two slots ahead of a rotating hand, so the entries gauge follows the
//! live entries without a scan. The links of the late flows still open (late flow id →
//! first record's id) live in a second array of the same size, in buckets of four: late
//! flows are few, and a full bucket loses a link (counted) rather than grow. Only a packet
//! that would create a TCP flow without SYN pays a lookup; a packet whose flow exists pays
//! nothing. Nothing here allocates after start-up, locks, or reads the clock: time is the
//! packet clock passed in.

use super::{FlowKey, Side};
use std::hash::BuildHasher;

/// Fewest slots, whatever the flow table's size: room for the connections that close
/// within a retransmission timeout of each other on a small sensor.
pub const MIN_SLOTS: usize = 64;

/// Flow-table capacity per slot: one slot per 16 flows of capacity costs 3 bytes per flow
/// (the table costs 126); with the default table (16 384 slots) that is as many entries as
/// two minutes of closings at ~130 a second per worker. Busier workers see more entries
/// overwritten before their window ends (`outflow_table_evictions_total`).
pub const FLOWS_PER_SLOT: usize = 16;

/// Links per bucket of the late-flow link array.
const WAYS: usize = 4;

/// What a late packet takes from the connection it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// True when the connection's originator is the key's `hi` endpoint.
    pub orig_is_hi: bool,
    /// Id of the connection's first record (a late flow that closes in turn passes on the
    /// id it continues, so every late record links to the first one).
    pub flow_id: u64,
    /// The connection's home side, if it was outbound.
    pub outbound: Option<Side>,
}

/// A slot: the key's tag, the flow id, the packet clock (ns) up to which the entry is
/// live, and flag bits. Plain words rather than a struct so that the array is allocated
/// zeroed (zero is "free") and its pages are mapped only when a closing first lands in
/// them, like the flow table's: a table sized for millions costs nothing until used.
type Slot = [u64; 4];
const TAG: usize = 0;
const ID: usize = 1;
const EXPIRES: usize = 2;
const FLAGS: usize = 3;
const USED: u64 = 1;
const ORIG_IS_HI: u64 = 2;
/// Two bits: 0 not outbound, 1 orig, 2 resp.
const OUT_SHIFT: u32 = 2;

/// A late flow still open, and the first record's id it continues. A `late` of 0 is a
/// free link: flow ids are packet sequence numbers, which start at 1.
type Link = [u64; 2];

/// Counters of the recently-closed table (plain integers owned by the worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentStats {
    /// Closed connections remembered.
    pub inserted: u64,
    /// Flows started by a late TCP packet (no SYN) that joined a remembered connection.
    pub joined: u64,
    /// Live entries overwritten by a colliding insert (the table's evictions).
    pub overwritten: u64,
    /// Late flows whose link to the first record was lost because their bucket of links
    /// was full (their record has no `continues`; the orientation is still right).
    pub links_lost: u64,
}

/// Fixed-capacity map from a closed connection's key to what a late packet needs of it.
pub struct RecentClosed {
    slots: Vec<Slot>,
    mask: usize,
    /// Slots holding an entry that has not been seen expired.
    held: usize,
    /// The sweep's position.
    hand: usize,
    links: Vec<Link>,
    /// Buckets of links minus one.
    link_mask: usize,
    /// Links in use: 0 almost always, which makes [`continues`](Self::continues) one
    /// comparison for every record but a late flow's.
    linked: usize,
    timeout_ns: u64,
    /// Picks the slot. A fixed seed, as for the fragment map: which closings overwrite
    /// each other, and so which late packets join, is the same in every replay of a capture.
    place: foldhash::fast::FixedState,
    /// The 64-bit tag a slot keeps instead of the key (a quarter of its size). A random
    /// seed: an attacker cannot craft a key whose tag matches another connection's, and an
    /// accidental match of two keys in one slot has odds of 2^-64.
    tag: foldhash::fast::RandomState,
    /// Counters.
    pub stats: RecentStats,
}

impl RecentClosed {
    /// Slots for a flow table of `flow_capacity` flows (see [`FLOWS_PER_SLOT`], [`MIN_SLOTS`]).
    pub fn capacity_for(flow_capacity: usize) -> usize {
        (flow_capacity / FLOWS_PER_SLOT)
            .max(MIN_SLOTS)
            .next_power_of_two()
    }

    /// A table of at least `capacity` slots (rounded up to a power of two, at least
    /// [`WAYS`]) whose entries stay `timeout_ns` after the close; 0 turns joining off.
    pub fn new(capacity: usize, timeout_ns: u64) -> RecentClosed {
        let n = capacity.max(WAYS).next_power_of_two();
        RecentClosed {
            // Arrays of plain integers: zeroed allocations, mapped on first write.
            slots: vec![[0u64; 4]; n],
            mask: n - 1,
            held: 0,
            hand: 0,
            links: vec![[0u64; 2]; n],
            link_mask: n / WAYS - 1,
            linked: 0,
            timeout_ns,
            place: foldhash::fast::FixedState::with_seed(0x7265_6365_6e74),
            tag: foldhash::fast::RandomState::default(),
            stats: RecentStats::default(),
        }
    }

    /// Bytes allocated at start-up (both arrays); constant for the table's life.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
            + self.links.len() * std::mem::size_of::<Link>()
    }

    /// (entries held, capacity, live entries overwritten) for the table metrics. Entries
    /// held include expired ones the sweep has not reached yet.
    pub fn occupancy(&self) -> (u64, u64, u64) {
        (
            self.held as u64,
            self.slots.len() as u64,
            self.stats.overwritten,
        )
    }

    /// The slot a key uses. Fixed for a key (fixed seed), so tests can build keys that
    /// collide.
    pub fn slot_of(&self, key: &FlowKey) -> usize {
        (self.place.hash_one(key) as usize) & self.mask
    }

    /// Remembers a connection that closed at `clock_ns` (its linger ran out, or it was
    /// evicted while closing).
    pub fn remember(&mut self, key: &FlowKey, closed: Closed, clock_ns: u64) {
        if self.timeout_ns == 0 {
            return;
        }
        let idx = self.slot_of(key);
        let tag = self.tag.hash_one(key);
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let used = slot[FLAGS] & USED != 0;
        if used && clock_ns <= slot[EXPIRES] && slot[TAG] != tag {
            self.stats.overwritten += 1;
        }
        if !used {
            self.held += 1;
        }
        let out = match closed.outbound {
            None => 0,
            Some(Side::Orig) => 1,
            Some(Side::Resp) => 2,
        };
        *slot = [
            tag,
            closed.flow_id,
            clock_ns.saturating_add(self.timeout_ns),
            USED | if closed.orig_is_hi { ORIG_IS_HI } else { 0 } | out << OUT_SHIFT,
        ];
        self.stats.inserted += 1;
        for _ in 0..2 {
            self.hand = (self.hand + 1) & self.mask;
            if let Some(s) = self.slots.get_mut(self.hand) {
                if s[FLAGS] & USED != 0 && s[EXPIRES] < clock_ns {
                    *s = [0; 4];
                    self.held -= 1;
                }
            }
        }
    }

    /// The remembered connection of `key`, if it closed less than the window before
    /// `clock_ns`. The caller checks that the packet is TCP without SYN.
    #[inline]
    pub fn find(&self, key: &FlowKey, clock_ns: u64) -> Option<Closed> {
        let s = self.slots.get(self.slot_of(key))?;
        if s[FLAGS] & USED == 0 || clock_ns > s[EXPIRES] || s[TAG] != self.tag.hash_one(key) {
            return None;
        }
        Some(Closed {
            orig_is_hi: s[FLAGS] & ORIG_IS_HI != 0,
            flow_id: s[ID],
            outbound: match s[FLAGS] >> OUT_SHIFT & 0b11 {
                1 => Some(Side::Orig),
                2 => Some(Side::Resp),
                _ => None,
            },
        })
    }

    /// Records that flow `late_id` joined the connection whose first record is `root`.
    pub fn join(&mut self, late_id: u64, root: u64) {
        self.stats.joined += 1;
        let bucket = self.bucket(late_id);
        let Some(ways) = self.links.get_mut(bucket) else {
            return;
        };
        match ways.iter_mut().find(|l| l[0] == 0) {
            Some(free) => {
                *free = [late_id, root];
                self.linked += 1;
            }
            None => {
                // Four late flows open at once in one bucket: the first way's link goes.
                self.stats.links_lost += 1;
                if let Some(first) = ways.first_mut() {
                    *first = [late_id, root];
                }
            }
        }
    }

    /// The first record's id that flow `flow_id` continues, if it joined one; `end` when
    /// this is the flow's final record (the link is then freed).
    #[inline]
    pub fn continues(&mut self, flow_id: u64, end: bool) -> Option<u64> {
        if self.linked == 0 || flow_id == 0 {
            return None;
        }
        let bucket = self.bucket(flow_id);
        let link = self
            .links
            .get_mut(bucket)?
            .iter_mut()
            .find(|l| l[0] == flow_id)?;
        let root = link[1];
        if end {
            *link = [0; 2];
            self.linked -= 1;
        }
        Some(root)
    }

    /// The links of a late flow's bucket, as an index range.
    fn bucket(&self, late_id: u64) -> std::ops::Range<usize> {
        let b = (self.place.hash_one(late_id) as usize) & self.link_mask;
        b * WAYS..b * WAYS + WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            lo: Addr::v4([10, 0, 0, 5]),
            hi: Addr::v4([203, 0, 113, 50]),
            lo_port: port,
            hi_port: 443,
            proto: 6,
            ..FlowKey::default()
        }
    }

    fn closed(id: u64) -> Closed {
        Closed {
            orig_is_hi: false,
            flow_id: id,
            outbound: Some(Side::Orig),
        }
    }

    #[test]
    fn sizes_follow_the_flow_table() {
        assert_eq!(RecentClosed::capacity_for(262_144), 16_384);
        assert_eq!(RecentClosed::capacity_for(10), MIN_SLOTS);
        assert_eq!(RecentClosed::capacity_for(100_000), 8_192);
        let r = RecentClosed::new(RecentClosed::capacity_for(262_144), 1);
        assert_eq!(r.memory_bytes(), 16_384 * (32 + 16));
    }

    /// An entry is found for its key only, until the window has passed.
    #[test]
    fn an_entry_is_found_within_its_window() {
        let mut r = RecentClosed::new(64, 100);
        r.remember(&key(1), closed(7), 1_000);
        assert_eq!(r.find(&key(1), 1_000), Some(closed(7)));
        assert_eq!(r.find(&key(1), 1_100), Some(closed(7)));
        assert_eq!(r.find(&key(1), 1_101), None);
        assert_eq!(r.find(&key(2), 1_000), None);
        let other = Closed {
            orig_is_hi: true,
            flow_id: 9,
            outbound: Some(Side::Resp),
        };
        r.remember(&key(3), other, 1_000);
        assert_eq!(r.find(&key(3), 1_000), Some(other));
        let none = Closed {
            outbound: None,
            ..other
        };
        r.remember(&key(3), none, 1_000);
        assert_eq!(r.find(&key(3), 1_000), Some(none));
        assert_eq!(r.stats.inserted, 3);
        // Window 0: nothing is remembered.
        let mut off = RecentClosed::new(64, 0);
        off.remember(&key(1), closed(7), 1_000);
        assert_eq!(off.find(&key(1), 1_000), None);
        assert_eq!(off.stats.inserted, 0);
    }

    /// A flood of closings never grows the array; each insert touches its one slot, live
    /// collisions are counted, and the sweep frees what expired.
    #[test]
    fn a_flood_overwrites_one_slot_per_insert() {
        let mut r = RecentClosed::new(64, 10);
        let n = 20_000u16;
        for p in 0..n {
            r.remember(&key(p), closed(u64::from(p) + 1), 0);
            assert_eq!(r.slots.len(), 64);
        }
        let (held, cap, overwritten) = r.occupancy();
        assert_eq!((held, cap), (64, 64));
        // Every insert took a free slot or overwrote a live one (or refreshed its own key).
        assert!(overwritten + held <= u64::from(n));
        assert!(overwritten > u64::from(n) / 2);
        // Inserts a window apart overwrite nothing, and the sweep frees expired slots:
        // after 32 inserts (64 slots swept), only what they filled is held.
        for p in 0..32u16 {
            r.remember(&key(p), closed(1), 1_000 + u64::from(p) * 100);
        }
        assert_eq!(r.stats.overwritten, overwritten);
        assert!(r.held <= 32, "{}", r.held);
    }

    /// Keys that share a slot overwrite each other, one count per live entry replaced.
    #[test]
    fn colliding_keys_are_counted() {
        let mut r = RecentClosed::new(64, 1_000);
        let first = r.slot_of(&key(0));
        let same: Vec<u16> = (1..u16::MAX)
            .filter(|p| r.slot_of(&key(*p)) == first)
            .take(3)
            .collect();
        r.remember(&key(0), closed(1), 0);
        for (i, p) in same.iter().enumerate() {
            r.remember(&key(*p), closed(i as u64 + 2), 10);
        }
        assert_eq!(r.stats.overwritten, 3);
        assert_eq!(r.find(&key(0), 10), None);
        // Refreshing the same key is not an overwrite.
        r.remember(&key(same[2]), closed(9), 20);
        assert_eq!(r.stats.overwritten, 3);
    }

    /// A late flow's link is found until its final record, and records of other flows
    /// never find one.
    #[test]
    fn links_last_until_the_final_record() {
        let mut r = RecentClosed::new(64, 1_000);
        assert_eq!(r.continues(5, false), None);
        r.join(50, 1);
        assert_eq!(r.continues(49, true), None);
        assert_eq!(r.continues(50, false), Some(1), "an interim record");
        assert_eq!(r.continues(50, true), Some(1));
        assert_eq!(r.continues(50, true), None, "freed");
        assert_eq!(r.linked, 0);
        assert_eq!(r.stats.joined, 1);
    }

    /// More late flows open at once than a bucket holds: the surplus links are lost and
    /// counted, and the count of links in use stays exact.
    #[test]
    fn a_full_bucket_loses_links_not_memory() {
        let mut r = RecentClosed::new(64, 1_000);
        let b = r.bucket(1);
        let ids: Vec<u64> = (1..100_000u64)
            .filter(|i| r.bucket(*i) == b)
            .take(6)
            .collect();
        for id in &ids {
            r.join(*id, 1000 + id);
        }
        assert_eq!(r.stats.links_lost, 2);
        assert_eq!(r.linked, WAYS);
        let found = ids
            .iter()
            .filter(|id| r.continues(**id, true) == Some(1000 + **id))
            .count();
        assert_eq!(found, WAYS);
        assert_eq!(r.linked, 0);
        assert_eq!(r.links.len(), 64);
    }

    /// A table sized for the largest flow table is allocated zeroed: its pages become
    /// resident only as closings land in them.
    #[test]
    fn a_big_table_is_not_resident_until_used() {
        use crate::flow::tests_support::rss_kib;
        let Some(before) = rss_kib() else {
            return; // not Linux
        };
        let mut r = RecentClosed::new(RecentClosed::capacity_for(crate::flow::MAX_CAPACITY), 1);
        assert_eq!(r.memory_bytes(), (1 << 20) * 48);
        for p in 0..1000 {
            r.remember(&key(p), closed(1), 0);
        }
        let grown = rss_kib().unwrap_or(0).saturating_sub(before);
        assert!(
            grown < 16 * 1024,
            "a 48 MiB table made {grown} KiB resident"
        );
        drop(r);
    }
}
