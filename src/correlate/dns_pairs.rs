//! The DNS analyser's (client, registered domain) table, built so that a flood cannot blind
//! the tunnel detector (issue 12, item 5).
//!
//! The table used to refuse new pairs while it was full of live windows: 40 000 lookups of
//! distinct domains in 10 s filled it, and a tunnel that started afterwards was never
//! tracked. Evicting the least recently used pair instead would let the same flood push a
//! tunnel out. So each pair is in one of three tiers, by what its queries have shown:
//!
//! - **cold**: one query, not suspicious: what a flood of distinct names is made of;
//! - **warm**: a second query, or one unique suspicious subdomain (benign pairs with a
//!   suspicious name exist: CDN and telemetry names);
//! - **hot**: two or more *unique* suspicious subdomains (a repeated name counts once, so a
//!   client retrying one odd name stays warm): no benign public capture has one under a
//!   domain (see `dns.min_suspicious_subdomains`); every tunnel capture has many.
//!
//! Pairs only move up. To make room the table takes, in this order:
//!
//! 1. when the new pair's client already holds its share (`dns.client_share` of the
//!    capacity, at least `dns.client_min_pairs`), that client's own coldest, idlest pair
//!    (counted `client_share`): one host cannot push out anyone else's pairs, however
//!    many names it looks up;
//! 2. when the table is full, pairs idle for a whole window, from the tier fronts (their
//!    window is empty, so nothing is lost: not counted as evictions);
//! 3. then the idlest pair of the coldest non-empty tier (counted `cold`, `warm`, `hot`).
//!
//! Each tier is a doubly linked list in last-query order (front: the idlest), and each
//! client's pairs of each tier are another list, all threaded through one slab by slot
//! number: touching, promoting and evicting a pair are a few array writes plus the key and
//! client lookups, never a scan. Freed slots keep their value, so a new pair reuses the
//! buffers of the one it replaces.

use crate::decode::Addr;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// See `analyse`: seeded per run, fast on address keys.
type Fast = foldhash::fast::RandomState;

/// A pair's key: the client and a keyed hash of the registered domain.
pub type PairKey = (Addr, u64);

/// What a pair's queries have shown so far; eviction takes the coldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// One query, not suspicious.
    Cold = 0,
    /// A second query, or one unique suspicious subdomain.
    Warm = 1,
    /// Two or more unique suspicious subdomains.
    Hot = 2,
}

/// Number of tiers.
pub const TIERS: usize = 3;

impl Tier {
    /// Every tier, coldest first.
    pub const ALL: [Tier; TIERS] = [Tier::Cold, Tier::Warm, Tier::Hot];

    /// The tier of a pair with `queries` queries and `suspicious` unique suspicious
    /// subdomains.
    pub fn of(queries: u32, suspicious: u32) -> Tier {
        if suspicious >= 2 {
            Tier::Hot
        } else if queries >= 2 || suspicious >= 1 {
            Tier::Warm
        } else {
            Tier::Cold
        }
    }

    /// Lowercase name (metric label).
    pub fn name(self) -> &'static str {
        match self {
            Tier::Cold => "cold",
            Tier::Warm => "warm",
            Tier::Hot => "hot",
        }
    }
}

/// Pairs removed from the table while still live, to make room, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairEvictions {
    /// The idlest cold pair of a full table.
    pub cold: u64,
    /// The idlest warm pair of a full table with no cold pair.
    pub warm: u64,
    /// The idlest hot pair of a full table of hot pairs only: tunnel state may be lost.
    pub hot: u64,
    /// A client's own pair, making room for its new one because it held its share.
    pub client_share: u64,
}

impl PairEvictions {
    /// Reason labels, in the order of [`PairEvictions::by_reason`].
    pub const REASONS: [&'static str; 4] = ["cold", "warm", "hot", "client_share"];

    /// Every eviction, whatever the reason.
    pub fn total(&self) -> u64 {
        self.cold + self.warm + self.hot + self.client_share
    }

    /// Counts in the order of [`PairEvictions::REASONS`].
    pub fn by_reason(&self) -> [u64; 4] {
        [self.cold, self.warm, self.hot, self.client_share]
    }
}

/// No slot.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Serialize, Deserialize)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

/// A list's two ends; `front` goes first.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Ends {
    front: u32,
    back: u32,
}

const EMPTY: Ends = Ends {
    front: NIL,
    back: NIL,
};

/// Which of a slot's two memberships a list threads through.
#[derive(Clone, Copy)]
enum Chain {
    /// The table-wide list of the slot's tier.
    Tier,
    /// Its client's list of that tier.
    Own,
}

#[derive(Serialize, Deserialize)]
struct Slot<V> {
    key: PairKey,
    tier: Tier,
    last_ns: u64,
    tier_links: Links,
    own_links: Links,
    value: V,
}

/// A client's pairs: how many, and its list of each tier.
#[derive(Serialize, Deserialize)]
struct Client {
    count: u32,
    lists: [Ends; TIERS],
}

fn links<V>(slots: &mut [Slot<V>], i: u32, c: Chain) -> Option<&mut Links> {
    let s = slots.get_mut(i as usize)?;
    Some(match c {
        Chain::Tier => &mut s.tier_links,
        Chain::Own => &mut s.own_links,
    })
}

fn unlink<V>(slots: &mut [Slot<V>], ends: &mut Ends, i: u32, c: Chain) {
    let Some(l) = links(slots, i, c) else {
        return;
    };
    let Links { prev, next } = std::mem::replace(l, UNLINKED);
    match links(slots, prev, c) {
        Some(p) => p.next = next,
        None => ends.front = next,
    }
    match links(slots, next, c) {
        Some(n) => n.prev = prev,
        None => ends.back = prev,
    }
}

fn push_back<V>(slots: &mut [Slot<V>], ends: &mut Ends, i: u32, c: Chain) {
    let old = ends.back;
    let Some(l) = links(slots, i, c) else {
        return;
    };
    *l = Links {
        prev: old,
        next: NIL,
    };
    match links(slots, old, c) {
        Some(p) => p.next = i,
        None => ends.front = i,
    }
    ends.back = i;
}

/// The tiered, per-client-bounded pair table. See the module documentation.
///
/// In a correlator snapshot ([`crate::correlate::snapshot`]) as its slab (free slots with
/// their stale values: a reused slot is reset, so they are never read), free list, lists
/// and counters; the index is rebuilt from the slab, and the limits are the config's.
#[derive(Serialize, Deserialize)]
pub struct PairTable<V> {
    #[serde(skip)]
    index: HashMap<PairKey, u32, Fast>,
    slots: Vec<Slot<V>>,
    /// Slots of removed pairs, reused (with their values' buffers) before the slab grows.
    free: Vec<u32>,
    tiers: [Ends; TIERS],
    #[serde(with = "super::snapshot::table")]
    clients: HashMap<Addr, Client, Fast>,
    #[serde(skip)]
    capacity: usize,
    #[serde(skip)]
    share: usize,
    /// Entries examined to find what to expire or evict: the work the tests bound by a
    /// constant per insert (a plain counter, never reset).
    pub visited: u64,
    /// Live pairs removed to make room.
    pub evicted: PairEvictions,
    /// Idle pairs (empty window) removed to make room.
    pub expired: u64,
}

/// A client's share of a table of `capacity` pairs: `fraction` of it, at least `min`, at
/// most all of it, and never 0.
pub fn client_share(capacity: usize, fraction: f64, min: usize) -> usize {
    let part = (capacity as f64 * fraction).floor();
    let part = if part.is_finite() && part > 0.0 {
        part as usize
    } else {
        0
    };
    part.max(min).min(capacity).max(1)
}

impl<V> PairTable<V> {
    /// An empty table of `capacity` pairs, each client holding at most `share` of them.
    /// Nothing is allocated until pairs arrive.
    pub fn new(capacity: usize, share: usize) -> PairTable<V> {
        PairTable {
            index: HashMap::with_hasher(Fast::default()),
            slots: Vec::new(),
            free: Vec::new(),
            tiers: [EMPTY; TIERS],
            clients: HashMap::with_hasher(Fast::default()),
            capacity: capacity.max(1),
            share: share.max(1),
            visited: 0,
            evicted: PairEvictions::default(),
            expired: 0,
        }
    }

    /// New limits (SIGHUP). Pairs above them go as new pairs arrive, one or more per
    /// insert, each once.
    pub fn set_limits(&mut self, capacity: usize, share: usize) {
        self.capacity = capacity.max(1);
        self.share = share.max(1);
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Most pairs held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most pairs one client holds at once.
    pub fn share(&self) -> usize {
        self.share
    }

    /// Pairs `client` holds.
    pub fn client_pairs(&self, client: Addr) -> usize {
        self.clients.get(&client).map_or(0, |c| c.count as usize)
    }

    /// Clients holding pairs.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The slot of `key`, made the most recently used of its lists, its last query at
    /// `now_ns`; `None` if the pair is not held.
    pub fn touch(&mut self, key: &PairKey, now_ns: u64) -> Option<u32> {
        let i = *self.index.get(key)?;
        let s = self.slots.get_mut(i as usize)?;
        s.last_ns = now_ns;
        let t = s.tier as usize;
        let tier = self.tiers.get_mut(t)?;
        if tier.back != i {
            unlink(&mut self.slots, tier, i, Chain::Tier);
            push_back(&mut self.slots, tier, i, Chain::Tier);
        }
        if let Some(own) = self
            .clients
            .get_mut(&key.0)
            .and_then(|c| c.lists.get_mut(t))
        {
            if own.back != i {
                unlink(&mut self.slots, own, i, Chain::Own);
                push_back(&mut self.slots, own, i, Chain::Own);
            }
        }
        Some(i)
    }

    /// The value in slot `i`.
    pub fn get(&self, i: u32) -> Option<&V> {
        self.slots.get(i as usize).map(|s| &s.value)
    }

    /// The value in slot `i`, mutably.
    pub fn get_mut(&mut self, i: u32) -> Option<&mut V> {
        self.slots.get_mut(i as usize).map(|s| &mut s.value)
    }

    /// The tier of slot `i`.
    pub fn tier(&self, i: u32) -> Option<Tier> {
        self.slots.get(i as usize).map(|s| s.tier)
    }

    /// Moves slot `i` up to `tier` (at the back of its new lists); a lower or equal tier
    /// changes nothing.
    pub fn promote(&mut self, i: u32, tier: Tier) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        if tier <= s.tier {
            return;
        }
        let (old, client) = (s.tier as usize, s.key.0);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        s.tier = tier;
        let new = tier as usize;
        if let Some(e) = self.tiers.get_mut(old) {
            unlink(&mut self.slots, e, i, Chain::Tier);
        }
        if let Some(e) = self.tiers.get_mut(new) {
            push_back(&mut self.slots, e, i, Chain::Tier);
        }
        if let Some(e) = c.lists.get_mut(old) {
            unlink(&mut self.slots, e, i, Chain::Own);
        }
        if let Some(e) = c.lists.get_mut(new) {
            push_back(&mut self.slots, e, i, Chain::Own);
        }
    }

    /// Inserts `key` as a cold pair of client `key.0` whose last query is at `now_ns`,
    /// first making room as the module documentation says; pairs whose last query is
    /// before `horizon_ns` are idle. The value comes from `new`, or
    /// `reuse` resets the value of a freed slot. Returns its slot (a key already held is
    /// only touched).
    pub fn insert(
        &mut self,
        key: PairKey,
        now_ns: u64,
        horizon_ns: u64,
        new: impl FnOnce() -> V,
        reuse: impl FnOnce(&mut V),
    ) -> Option<u32> {
        if let Some(i) = self.touch(&key, now_ns) {
            return Some(i); // already held: nothing to make room for
        }
        self.make_room(key.0, horizon_ns);
        let i = match self.free.pop() {
            Some(i) => {
                let s = self.slots.get_mut(i as usize)?;
                reuse(&mut s.value);
                s.key = key;
                s.tier = Tier::Cold;
                s.last_ns = now_ns;
                s.tier_links = UNLINKED;
                s.own_links = UNLINKED;
                i
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow by doubling, but never past the capacity: the slab holds at most
                    // `capacity` slots (a pair is ~1 KB).
                    let room = self.capacity.saturating_sub(self.slots.len()).max(1);
                    self.slots.reserve_exact(self.slots.len().max(16).min(room));
                }
                let i = u32::try_from(self.slots.len()).ok().filter(|i| *i != NIL)?;
                self.slots.push(Slot {
                    key,
                    tier: Tier::Cold,
                    last_ns: now_ns,
                    tier_links: UNLINKED,
                    own_links: UNLINKED,
                    value: new(),
                });
                i
            }
        };
        self.index.insert(key, i);
        let c = self.clients.entry(key.0).or_insert(Client {
            count: 0,
            lists: [EMPTY; TIERS],
        });
        c.count += 1;
        let cold = Tier::Cold as usize;
        if let Some(e) = c.lists.get_mut(cold) {
            push_back(&mut self.slots, e, i, Chain::Own);
        }
        if let Some(e) = self.tiers.get_mut(cold) {
            push_back(&mut self.slots, e, i, Chain::Tier);
        }
        Some(i)
    }

    /// Frees room for one more pair of `client`.
    fn make_room(&mut self, client: Addr, horizon_ns: u64) {
        // The client's own share first: its coldest tier's idlest pair. A share of the
        // whole table is no limit: a full table is the global rule's to handle.
        while self.share < self.capacity {
            let Some(c) = self.clients.get(&client) else {
                break;
            };
            if (c.count as usize) < self.share {
                break;
            }
            let Some(v) = c.lists.iter().map(|e| e.front).find(|f| *f != NIL) else {
                break;
            };
            self.visited += 1;
            let idle = self
                .slots
                .get(v as usize)
                .is_some_and(|s| s.last_ns < horizon_ns);
            self.remove(v);
            if idle {
                self.expired += 1;
            } else {
                self.evicted.client_share += 1;
            }
        }
        if self.len() < self.capacity {
            return;
        }
        // Full: pairs idle for a window go first, from the tier fronts (each popped once).
        for t in 0..TIERS {
            while let Some(f) = self.tiers.get(t).map(|e| e.front).filter(|f| *f != NIL) {
                self.visited += 1;
                if self
                    .slots
                    .get(f as usize)
                    .is_none_or(|s| s.last_ns >= horizon_ns)
                {
                    break;
                }
                self.remove(f);
                self.expired += 1;
            }
        }
        // Still full: the idlest pair of the coldest tier.
        while self.len() >= self.capacity {
            let Some((t, f)) = Tier::ALL
                .iter()
                .filter_map(|t| {
                    let f = self.tiers.get(*t as usize)?.front;
                    (f != NIL).then_some((*t, f))
                })
                .next()
            else {
                break;
            };
            self.visited += 1;
            self.remove(f);
            match t {
                Tier::Cold => self.evicted.cold += 1,
                Tier::Warm => self.evicted.warm += 1,
                Tier::Hot => self.evicted.hot += 1,
            }
        }
    }

    /// Removes the pair in slot `i` from its lists, the index and its client's count.
    fn remove(&mut self, i: u32) {
        let Some(s) = self.slots.get(i as usize) else {
            return;
        };
        let (key, t) = (s.key, s.tier as usize);
        if self.index.remove(&key).is_none() {
            return; // already free
        }
        if let Some(e) = self.tiers.get_mut(t) {
            unlink(&mut self.slots, e, i, Chain::Tier);
        }
        if let Some(c) = self.clients.get_mut(&key.0) {
            if let Some(e) = c.lists.get_mut(t) {
                unlink(&mut self.slots, e, i, Chain::Own);
            }
            c.count = c.count.saturating_sub(1);
            if c.count == 0 {
                self.clients.remove(&key.0);
            }
        }
        self.free.push(i);
    }
}

impl<V> PairTable<V> {
    /// Checks a table read from a snapshot and rebuilds its index: the free list names
    /// distinct slots, each held pair's key is held once, and the tier lists and the
    /// clients' lists link every held slot exactly once, in its tier and client, with
    /// counts that agree. `value` checks each slot's value. (A list that did not link up
    /// could send eviction round a loop for good.)
    pub(crate) fn checked(
        mut self,
        value: impl Fn(&V) -> Result<(), String>,
    ) -> Result<PairTable<V>, String> {
        let n = self.slots.len();
        if n >= NIL as usize {
            return Err(format!("{n} slots"));
        }
        let mut free = vec![false; n];
        for &i in &self.free {
            match free.get_mut(i as usize) {
                Some(f) if !*f => *f = true,
                _ => return Err(format!("free slot {i} past the slab or listed twice")),
            }
        }
        let mut index = HashMap::with_capacity_and_hasher(n - self.free.len(), Fast::default());
        for (i, (s, f)) in self.slots.iter().zip(&free).enumerate() {
            value(&s.value)?;
            if !*f && index.insert(s.key, i as u32).is_some() {
                return Err("a pair is held in two slots".into());
            }
        }
        let held = index.len();
        let mut seen = vec![false; n];
        let mut linked = 0;
        for (t, ends) in self.tiers.iter().enumerate() {
            linked += walk(&self.slots, &free, &mut seen, *ends, Chain::Tier, |s| {
                s.tier as usize == t
            })?;
        }
        if linked != held {
            return Err(format!("{held} pairs held, {linked} in the tier lists"));
        }
        let mut seen = vec![false; n];
        let mut owned = 0;
        for (addr, c) in &self.clients {
            let mut count = 0;
            for (t, ends) in c.lists.iter().enumerate() {
                count += walk(&self.slots, &free, &mut seen, *ends, Chain::Own, |s| {
                    s.key.0 == *addr && s.tier as usize == t
                })?;
            }
            if count == 0 || count != c.count as usize {
                return Err(format!("a client counts {} pairs, lists {count}", c.count));
            }
            owned += count;
        }
        if owned != held {
            return Err(format!("{held} pairs held, {owned} in the clients' lists"));
        }
        self.index = index;
        Ok(self)
    }

    /// Takes the state of `restored` (from [`PairTable::checked`]), keeping this table's
    /// limits.
    pub(crate) fn adopt(&mut self, restored: PairTable<V>) {
        let PairTable {
            index,
            slots,
            free,
            tiers,
            clients,
            capacity: _,
            share: _,
            visited,
            evicted,
            expired,
        } = restored;
        self.index = index;
        self.slots = slots;
        self.free = free;
        self.tiers = tiers;
        self.clients = clients;
        self.visited = visited;
        self.evicted = evicted;
        self.expired = expired;
    }
}

/// Walks one list from `ends.front`: every slot on it held, not seen on another list of
/// the same kind, `belongs` to it, its `prev` link the slot before; the list ends at
/// `ends.back`. Returns its length.
fn walk<V>(
    slots: &[Slot<V>],
    free: &[bool],
    seen: &mut [bool],
    ends: Ends,
    c: Chain,
    belongs: impl Fn(&Slot<V>) -> bool,
) -> Result<usize, String> {
    let (mut prev, mut i, mut len) = (NIL, ends.front, 0);
    while i != NIL {
        let (Some(s), Some(false), Some(mark)) = (
            slots.get(i as usize),
            free.get(i as usize).copied(),
            seen.get_mut(i as usize),
        ) else {
            return Err(format!("a list links slot {i}: past the slab or free"));
        };
        if *mark || !belongs(s) {
            return Err(format!("a list links slot {i}: again, or of another list"));
        }
        *mark = true;
        let l = match c {
            Chain::Tier => s.tier_links,
            Chain::Own => s.own_links,
        };
        if l.prev != prev {
            return Err(format!("slot {i} links back to {}, not {prev}", l.prev));
        }
        (prev, i, len) = (i, l.next, len + 1);
    }
    if ends.back != prev {
        return Err(format!("a list ends at {prev}, its end says {}", ends.back));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: u32, domain: u64) -> PairKey {
        (Addr::v4(client.to_be_bytes()), domain)
    }

    fn table(capacity: usize, share: usize) -> PairTable<u64> {
        PairTable::new(capacity, share)
    }

    fn put(t: &mut PairTable<u64>, k: PairKey, now: u64) -> u32 {
        let i = t.insert(k, now, 0, || k.1, |v| *v = k.1).unwrap();
        assert_eq!(t.get(i), Some(&k.1));
        i
    }

    /// The lists agree with the index, the tiers and the clients' counts.
    fn check(t: &PairTable<u64>) {
        let mut seen = 0usize;
        for tier in Tier::ALL {
            let mut i = t.tiers[tier as usize].front;
            let mut prev = NIL;
            while i != NIL {
                let s = &t.slots[i as usize];
                assert_eq!(s.tier, tier);
                assert_eq!(s.tier_links.prev, prev);
                assert_eq!(t.index.get(&s.key), Some(&i));
                prev = i;
                i = s.tier_links.next;
                seen += 1;
            }
            assert_eq!(t.tiers[tier as usize].back, prev);
        }
        assert_eq!(seen, t.len());
        let mut owned = 0usize;
        for (addr, c) in &t.clients {
            let mut n = 0u32;
            for tier in Tier::ALL {
                let mut i = c.lists[tier as usize].front;
                while i != NIL {
                    let s = &t.slots[i as usize];
                    assert_eq!((s.key.0, s.tier), (*addr, tier));
                    i = s.own_links.next;
                    n += 1;
                }
            }
            assert_eq!(n, c.count);
            assert!(c.count as usize <= t.share);
            owned += n as usize;
        }
        assert_eq!(owned, t.len());
        assert!(t.len() <= t.capacity);
    }

    #[test]
    fn a_full_table_evicts_cold_then_warm_then_hot() {
        let mut t = table(6, 6);
        let hot = put(&mut t, key(1, 1), 1);
        t.promote(hot, Tier::Hot);
        let warm = put(&mut t, key(1, 2), 2);
        t.promote(warm, Tier::Warm);
        for d in 3..=6 {
            put(&mut t, key(2, d), d);
        }
        check(&t);
        // Two clients' cold pairs go first, idlest first: 3, 4, 5, 6, then the new ones.
        for d in 7..=12 {
            put(&mut t, key(3, d), d);
            check(&t);
        }
        assert_eq!(t.evicted.cold, 6);
        assert!(t.index.contains_key(&key(1, 1)) && t.index.contains_key(&key(1, 2)));
        assert_eq!(t.client_pairs(Addr::v4(2u32.to_be_bytes())), 0);
        assert_eq!(t.clients(), 2, "a client with no pair left is forgotten");
        // Only warm and hot left once the cold ones are promoted.
        for d in 9..=12 {
            let i = t.touch(&key(3, d), 20).unwrap();
            t.promote(i, Tier::Hot);
        }
        put(&mut t, key(4, 1), 21);
        assert_eq!(t.evicted.warm, 1, "the warm pair before any hot one");
        assert!(!t.index.contains_key(&key(1, 2)));
        // The new cold pair, then the idlest hot pair.
        put(&mut t, key(4, 2), 22);
        assert_eq!(t.evicted.cold, 7);
        let i = t.touch(&key(4, 2), 22).unwrap();
        t.promote(i, Tier::Hot);
        put(&mut t, key(4, 3), 23);
        assert_eq!(t.evicted.hot, 1);
        assert!(!t.index.contains_key(&key(1, 1)), "the idlest hot pair");
        check(&t);
        assert_eq!(t.evicted.total(), 9);
    }

    #[test]
    fn a_client_over_its_share_loses_its_own_coldest_pair() {
        let mut t = table(100, 4);
        let tunnel = put(&mut t, key(1, 0), 0);
        t.promote(tunnel, Tier::Hot);
        // Another client's cold pair, older than all of client 1's flood.
        put(&mut t, key(2, 0), 0);
        for d in 1..1000u64 {
            put(&mut t, key(1, d), d);
            check(&t);
        }
        assert_eq!(t.client_pairs(Addr::v4(1u32.to_be_bytes())), 4);
        assert_eq!(t.evicted.client_share, 999 - 3);
        assert_eq!(t.evicted.cold + t.evicted.warm + t.evicted.hot, 0);
        assert!(t.index.contains_key(&key(1, 0)), "its hot pair stays");
        assert!(t.index.contains_key(&key(2, 0)), "nobody else's pair goes");
        // Within its own tier, the idlest goes: touching a cold pair keeps it.
        let kept = key(1, 997);
        for d in 1000..1010u64 {
            t.touch(&kept, d);
            put(&mut t, key(1, d), d);
        }
        assert!(t.index.contains_key(&kept));
        check(&t);
    }

    #[test]
    fn idle_pairs_make_room_without_counting_as_evictions() {
        let mut t = table(10, 10);
        for d in 0..10u64 {
            put(&mut t, key(1, d), d);
        }
        let hot = t.touch(&key(1, 0), 5).unwrap();
        t.promote(hot, Tier::Hot);
        // Everything last queried before 7 is idle at horizon 7: 1..=6 (cold) and 0 (hot).
        for d in 10..17u64 {
            t.insert(key(2, d), d, 7, || d, |v| *v = d).unwrap();
        }
        assert_eq!(t.expired, 7);
        assert_eq!(t.evicted.total(), 0);
        assert!(!t.index.contains_key(&key(1, 0)));
        check(&t);
    }

    #[test]
    fn lowered_limits_are_reached_as_pairs_arrive() {
        let mut t = table(100, 100);
        for d in 0..100u64 {
            put(&mut t, key(1, d), d);
        }
        t.set_limits(10, 5);
        put(&mut t, key(1, 100), 100);
        assert_eq!(t.len(), 5);
        put(&mut t, key(2, 0), 101);
        assert_eq!(t.len(), 6);
        assert_eq!(t.evicted.client_share, 96);
        check(&t);
    }

    /// A flood at capacity from many clients: every insert evicts one pair, the work per
    /// insert is bounded by a constant (the three tier fronts, the client's lists and the
    /// victim), and slots are reused rather than allocated.
    #[test]
    fn eviction_is_constant_work_per_insert() {
        let cap = 1000;
        let mut t = table(cap, 100);
        let n = 200_000u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 64) as u32, i);
            let s = t.insert(k, i, 0, || i, |v| *v = i).unwrap();
            // Some pairs get a second query or a suspicious one.
            if x % 3 == 0 {
                t.promote(s, Tier::Warm);
            }
            if x % 7 == 0 {
                t.promote(s, Tier::Hot);
            }
            assert!(t.len() <= cap);
        }
        check(&t);
        assert_eq!(t.slots.len(), cap, "the slab never outgrows the capacity");
        assert_eq!(t.evicted.total(), n - cap as u64, "one eviction per insert");
        assert!(t.visited <= 5 * n, "visited {}", t.visited);
    }

    /// Inserting a key already held makes no room and no second entry: the lists stay
    /// consistent even if a caller forgets to touch first.
    #[test]
    fn inserting_a_held_key_only_touches_it() {
        let mut t = table(2, 2);
        let a = put(&mut t, key(1, 1), 1);
        let hot = t.touch(&key(1, 1), 1).unwrap();
        t.promote(hot, Tier::Hot);
        put(&mut t, key(1, 2), 2);
        let again = t.insert(key(1, 1), 3, 0, || 9, |v| *v = 9).unwrap();
        assert_eq!((again, t.get(a), t.tier(a)), (a, Some(&1), Some(Tier::Hot)));
        assert_eq!((t.len(), t.evicted.total()), (2, 0));
        check(&t);
    }

    /// A table read back from its snapshot encoding holds the same pairs in the same lists
    /// and makes room exactly as the original does (full: idle, then cold before warm
    /// before hot; a client over its share), reusing the same free slots; one whose lists
    /// or free list do not hold together is refused.
    #[test]
    fn a_restored_table_makes_room_as_the_original_and_a_broken_one_is_refused() {
        let mut a = table(12, 4);
        for d in 0..40u64 {
            let i = put(&mut a, key((d % 5) as u32, d), d);
            if d % 7 == 0 {
                a.promote(i, Tier::Warm);
            }
            if d % 11 == 0 {
                a.promote(i, Tier::Hot);
            }
        }
        // A full table whose idle pairs all go at once: free slots are left.
        a.insert(key(7, 1000), 40, 36, || 1000, |v| *v = 1000);
        check(&a);
        assert!(a.free.len() > 2, "idle pairs left free slots");
        let bytes = postcard::to_stdvec(&a).unwrap();
        let read = || postcard::from_bytes::<PairTable<u64>>(&bytes).unwrap();
        let mut b = table(12, 4);
        put(&mut b, key(9, 9), 0); // replaced by the restored state
        b.adopt(read().checked(|_| Ok(())).unwrap());
        check(&b);
        assert_eq!((b.len(), b.clients()), (a.len(), a.clients()));
        for d in 40..200u64 {
            let k = key((d % 7) as u32, d % 60);
            let (i, j) = (put(&mut a, k, d), put(&mut b, k, d));
            assert_eq!(i, j, "same slot for {k:?}");
            if d % 9 == 0 {
                a.promote(i, Tier::Hot);
                b.promote(j, Tier::Hot);
            }
            // Some pairs idle for a window: expired, not evicted.
            let (ia, ib) = (
                a.insert(key(8, d), d, d.saturating_sub(3), || 0, |_| ()),
                b.insert(key(8, d), d, d.saturating_sub(3), || 0, |_| ()),
            );
            assert_eq!(ia, ib);
            assert_eq!((a.evicted, a.expired), (b.evicted, b.expired));
        }
        check(&b);

        let refused = |f: &dyn Fn(&mut PairTable<u64>)| {
            let mut t = read();
            f(&mut t);
            t.checked(|_| Ok(())).is_err()
        };
        let held = |t: &PairTable<u64>| t.index.is_empty() && t.tiers[0].front != NIL;
        assert!(held(&read()), "the index is rebuilt, not read");
        let front = read().tiers[0].front as usize;
        assert!(refused(&|t| t.slots[front].tier_links.next = front as u32)); // a loop
        assert!(refused(&|t| t.slots[front].tier_links.next = 1000)); // past the slab
        assert!(refused(&|t| t.slots[front].own_links.prev = 3));
        assert!(refused(&|t| t.tiers[0].back = NIL));
        assert!(refused(&|t| t.slots[front].tier = Tier::Hot));
        assert!(refused(&|t| t.free.push(front as u32))); // held and free
        assert!(refused(&|t| t.free.push(t.free[0])));
        assert!(refused(&|t| t.free.push(999)));
        assert!(refused(&|t| {
            let k = t.slots[front].key;
            let other = (front + 1) % t.slots.len();
            t.slots[other].key = k; // one pair in two slots
        }));
        assert!(refused(&|t| {
            for c in t.clients.values_mut() {
                c.count += 1;
            }
        }));
        assert!(refused(&|t| t.clients.clear()));
        assert!(read()
            .checked(|v| if *v == 39 { Err("no".into()) } else { Ok(()) })
            .is_err());
    }

    #[test]
    fn shares_are_a_fraction_with_a_floor() {
        assert_eq!(client_share(32_768, 0.125, 64), 4096);
        assert_eq!(client_share(100, 0.125, 64), 64);
        assert_eq!(client_share(10, 0.125, 64), 10);
        assert_eq!(client_share(100, 1.0, 1), 100);
        assert_eq!(client_share(3, 0.01, 0), 1);
    }

    #[test]
    fn tiers_follow_queries_and_suspicion() {
        assert_eq!(Tier::of(1, 0), Tier::Cold);
        assert_eq!(Tier::of(2, 0), Tier::Warm);
        assert_eq!(Tier::of(1, 1), Tier::Warm);
        assert_eq!(Tier::of(500, 1), Tier::Warm);
        assert_eq!(Tier::of(2, 2), Tier::Hot);
    }
}
