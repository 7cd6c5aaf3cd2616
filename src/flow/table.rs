//! Fixed-capacity flow table with timer lists.
//!
//! Layout: a slab of entries allocated once (`capacity` of them), a `hashbrown::HashTable`
//! of slab indices (the key is stored once, in the slab), and one intrusive doubly linked
//! list per [`TimerClass`]. Touching a flow moves it to the head of its class's list, so
//! each list is ordered by last activity; because every class has a single idle timeout,
//! the next flow to expire in a class is always its list's tail. Expiry and LRU eviction
//! are therefore O(1) per flow, with no timer wheel and no scan (Retina uses a wheel because
//! its timeouts vary per connection; ours vary only per class).
//!
//! The table never grows: when it is full, the caller evicts the least recently seen flow
//! (the oldest tail across the lists) before inserting.

use super::{Flow, FlowKey};
use hashbrown::HashTable;
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

/// Number of timer classes.
pub const CLASSES: usize = 5;
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Entry {
    flow: Flow,
    /// Clock of the last packet (ns): what the idle timeout counts from.
    touched_ns: u64,
    prev: u32,
    next: u32,
    class: u8,
    live: bool,
}

/// A worker's flow table. See the module documentation.
pub struct FlowTable {
    entries: Vec<Entry>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    head: [u32; CLASSES],
    tail: [u32; CLASSES],
    timeout_ns: [u64; CLASSES],
    len: usize,
}

impl FlowTable {
    /// A table for `capacity` flows; `timeout_ns[c]` is the idle timeout of class `c`.
    /// All memory is allocated here.
    pub fn new(capacity: usize, timeout_ns: [u64; CLASSES]) -> FlowTable {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        FlowTable {
            entries: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            // Twice the flows: with at most half the buckets live, hashbrown always finds
            // room by rehashing in place, never by growing, however much churn (a SYN flood
            // at capacity) leaves tombstones behind.
            index: HashTable::with_capacity(capacity.saturating_mul(2)),
            // Random seed: the table's iteration order never reaches the output, and an
            // attacker cannot precompute colliding keys.
            hasher: foldhash::fast::RandomState::default(),
            head: [NIL; CLASSES],
            tail: [NIL; CLASSES],
            timeout_ns,
            len: 0,
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
        self.entries.capacity()
    }

    /// Bytes the table allocated at start-up (slab, free list, hash index). Constant for
    /// the table's life: it never grows.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.index.allocation_size()
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

    /// Slot of the flow with this key.
    #[inline]
    pub fn find(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(hash, |&i| {
                entries
                    .get(i as usize)
                    .is_some_and(|e| e.live && e.flow.key == *key)
            })
            .copied()
    }

    /// The flow in a slot. Slots come from [`find`](Self::find)/[`insert`](Self::insert).
    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Flow> {
        self.entries
            .get(slot as usize)
            .filter(|e| e.live)
            .map(|e| &e.flow)
    }

    /// The flow in a slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Flow> {
        self.entries
            .get_mut(slot as usize)
            .filter(|e| e.live)
            .map(|e| &mut e.flow)
    }

    /// Inserts a new flow (its key must not be present) in class `class`, touched at
    /// `clock_ns`. Returns `None` when the table is full: evict first.
    pub fn insert(
        &mut self,
        hash: u64,
        flow: Flow,
        class: TimerClass,
        clock_ns: u64,
    ) -> Option<u32> {
        let entry = Entry {
            flow,
            touched_ns: clock_ns,
            prev: NIL,
            next: NIL,
            class: class as u8,
            live: true,
        };
        let slot = if let Some(slot) = self.free.pop() {
            *self.entries.get_mut(slot as usize)? = entry;
            slot
        } else if self.entries.len() < self.entries.capacity() {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            return None;
        };
        let entries = &self.entries;
        let hasher = &self.hasher;
        // Never reallocates: the index was created with room for `capacity` keys, and
        // hashbrown rehashes in place when deletions leave tombstones.
        self.index.insert_unique(hash, slot, |&i| {
            entries
                .get(i as usize)
                .map_or(0, |e| hasher.hash_one(e.flow.key))
        });
        self.len += 1;
        self.link_head(slot, class as usize);
        Some(slot)
    }

    /// Records activity: the flow moves to the head of `class`'s list.
    #[inline]
    pub fn touch(&mut self, slot: u32, class: TimerClass, clock_ns: u64) {
        let Some(e) = self.entries.get_mut(slot as usize) else {
            return;
        };
        e.touched_ns = clock_ns;
        let old = e.class as usize;
        if self.head[old] == slot && old == class as usize {
            return;
        }
        self.unlink(slot);
        self.link_head(slot, class as usize);
    }

    /// Removes a flow, returning it.
    pub fn remove(&mut self, slot: u32) -> Option<Flow> {
        let e = *self.entries.get(slot as usize).filter(|e| e.live)?;
        let hash = self.hasher.hash_one(e.flow.key);
        if let Ok(found) = self.index.find_entry(hash, |&i| i == slot) {
            found.remove();
        }
        self.unlink(slot);
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.live = false;
        }
        self.free.push(slot);
        self.len -= 1;
        Some(e.flow)
    }

    /// The flow that expires first and when: the minimum over the classes' tails of
    /// (last activity + class timeout).
    #[inline]
    pub fn next_expiry(&self) -> Option<(u64, u32)> {
        let mut best: Option<(u64, u32)> = None;
        for c in 0..CLASSES {
            let t = self.tail[c];
            if let Some(e) = self.entries.get(t as usize) {
                let at = e.touched_ns.saturating_add(self.timeout_ns[c]);
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, t));
                }
            }
        }
        best
    }

    /// The least recently seen flow (eviction victim when full).
    pub fn least_recent(&self) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        for c in 0..CLASSES {
            let t = self.tail[c];
            if let Some(e) = self.entries.get(t as usize) {
                if best.is_none_or(|(b, _)| e.touched_ns < b) {
                    best = Some((e.touched_ns, t));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// Timer class a flow is in.
    pub fn class_of(&self, slot: u32) -> Option<TimerClass> {
        let e = self.entries.get(slot as usize).filter(|e| e.live)?;
        Some(match e.class {
            0 => TimerClass::TcpUnestablished,
            1 => TimerClass::Tcp,
            2 => TimerClass::TcpClosing,
            3 => TimerClass::Udp,
            _ => TimerClass::Other,
        })
    }

    /// Slots of all live flows (for the final flush; order unspecified).
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.live)
            .map(|(i, _)| i as u32)
    }

    fn link_head(&mut self, slot: u32, class: usize) {
        let old_head = self.head[class];
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.prev = NIL;
            e.next = old_head;
            e.class = class as u8;
        }
        if let Some(h) = self.entries.get_mut(old_head as usize) {
            h.prev = slot;
        } else {
            self.tail[class] = slot;
        }
        self.head[class] = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let Some(e) = self.entries.get(slot as usize) else {
            return;
        };
        let (prev, next, class) = (e.prev, e.next, e.class as usize);
        match self.entries.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head[class] = next,
        }
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail[class] = prev,
        }
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.prev = NIL;
            e.next = NIL;
        }
    }
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
            first_ports: (0, 0),
            outbound: None,
            latch: 0,
            interim_ns: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            reported: [0; 2],
            carried: Default::default(),
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

    #[test]
    fn memory_per_flow_is_bounded() {
        let t = FlowTable::new(1 << 20, [1; CLASSES]);
        let per_flow = t.memory_bytes() / (1 << 20);
        // Measured 2026-11-23: 240 bytes per flow (Entry 216 + free list 4 + index 20).
        assert!(per_flow <= 256, "{per_flow} bytes per flow");
        println!(
            "bytes per flow: {per_flow} (entry {})",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn churn_at_capacity_never_grows_the_index() {
        // A SYN flood at capacity: every insert evicts the least recent flow, leaving a
        // tombstone in the index each time.
        let cap = 4096;
        let mut t = FlowTable::new(cap, [u64::MAX / 4; CLASSES]);
        let before = t.memory_bytes();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut f = flow(x as u32);
            f.key.lo_port = (x >> 32) as u16;
            if t.is_full() {
                let v = t.least_recent().unwrap();
                t.remove(v).unwrap();
            }
            let h = t.hash(&f.key);
            t.insert(h, f, TimerClass::TcpUnestablished, i).unwrap();
        }
        assert_eq!(t.len(), cap);
        assert_eq!(t.memory_bytes(), before, "the table grew under churn");
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
    }
}
