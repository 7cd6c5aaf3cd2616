//! The HTTP server's connection table: which connections are open, which of them are idle
//! (oldest first), and how many requests of each class are in progress.
//!
//! A fixed-capacity slab allocated at start-up, with an intrusive doubly linked list through
//! the idle slots, so that admitting a connection, evicting the oldest idle one, starting and
//! ending a request and removing a connection are each O(1): no operation scans the table
//! (the per-event rule of `STYLE.md`, and a flood of connections is exactly when a scan would
//! hurt). A slot's generation changes whenever it is freed, so a [`Key`] held by a connection
//! that was evicted can never touch the connection that reuses its slot.
//!
//! "Idle" means no request in progress: a connection waiting for its first request, between
//! keep-alive requests, or still receiving a request head (a slowloris client is idle, and
//! evictable, however slowly it sends). The table does no I/O and reads no clock; the
//! caller closes what it is told to evict.

/// What a request is, for its in-progress budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `/metrics` and `/healthz`: the scrape and the probe, with their own reserved budget.
    Probe,
    /// Everything else (`/api/*`, and the 404s).
    Api,
}

impl Class {
    /// Every class, in label order.
    pub const ALL: [Class; 2] = [Class::Probe, Class::Api];

    /// The class of a request path.
    pub fn of(path: &str) -> Class {
        match path {
            "/metrics" | "/healthz" => Class::Probe,
            _ => Class::Api,
        }
    }

    /// Position in [`Class::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Class::Probe => 0,
            Class::Api => 1,
        }
    }

    /// The label value in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Class::Probe => "probe",
            Class::Api => "api",
        }
    }
}

/// A connection's place in the table: slot index and the slot's generation at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    index: u32,
    gen: u32,
}

/// No slot (end of the idle list).
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Idle,
    Busy(Class),
}

struct Slot<T> {
    gen: u32,
    state: State,
    /// Idle list neighbours (towards older, towards newer); NIL when not idle.
    prev: u32,
    next: u32,
    value: Option<T>,
}

/// Why a request could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The class's in-progress budget is full.
    Full,
    /// The connection is no longer in the table (it was evicted).
    Gone,
}

/// The connection table. `T` is what the caller needs to close an evicted connection.
pub struct Table<T> {
    slots: Vec<Slot<T>>,
    /// Free slot indices (a stack), allocated at start-up.
    free: Vec<u32>,
    /// Oldest idle slot, and newest.
    head: u32,
    tail: u32,
    open: usize,
    busy: [usize; 2],
    max_busy: [usize; 2],
}

impl<T> Table<T> {
    /// A table of `capacity` connections allowing `max_probe` and `max_api` requests in
    /// progress. Both budgets together must stay below the capacity, so that a full table
    /// always has an idle connection to evict (and accept never has to wait); they are
    /// lowered to fit if they do not.
    pub fn new(capacity: usize, max_probe: usize, max_api: usize) -> Table<T> {
        let capacity = capacity.clamp(3, NIL as usize - 1);
        let max_probe = max_probe.clamp(1, capacity - 2);
        let max_api = max_api.clamp(1, capacity - 1 - max_probe);
        Table {
            slots: (0..capacity)
                .map(|_| Slot {
                    gen: 0,
                    state: State::Free,
                    prev: NIL,
                    next: NIL,
                    value: None,
                })
                .collect(),
            // Popped from the end: slot 0 is used first.
            free: (0..capacity as u32).rev().collect(),
            head: NIL,
            tail: NIL,
            open: 0,
            busy: [0; 2],
            max_busy: [max_probe, max_api],
        }
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Requests of `class` in progress.
    pub fn busy(&self, class: Class) -> usize {
        self.busy[class.index()]
    }

    /// The in-progress budget of `class` (after [`Table::new`]'s adjustment).
    pub fn max_busy(&self, class: Class) -> usize {
        self.max_busy[class.index()]
    }

    /// Admits a new connection as the newest idle one. When the table is full, the oldest
    /// idle connection is removed first and its value returned, for the caller to close.
    /// `Err(value)` if there was no idle connection to evict, which [`Table::new`]'s budgets
    /// rule out; the caller then closes the new connection instead.
    pub fn admit(&mut self, value: T) -> Result<(Key, Option<T>), T> {
        let evicted = if self.free.is_empty() {
            self.evict_oldest_idle()
        } else {
            None
        };
        let Some(index) = self.free.pop() else {
            return Err(value);
        };
        let slot = &mut self.slots[index as usize];
        slot.state = State::Idle;
        slot.value = Some(value);
        let key = Key {
            index,
            gen: slot.gen,
        };
        self.open += 1;
        self.push_idle(index);
        Ok((key, evicted))
    }

    /// Removes the oldest idle connection, if any, and returns its value.
    pub fn evict_oldest_idle(&mut self) -> Option<T> {
        let index = self.head;
        if index == NIL {
            return None;
        }
        self.unlink(index);
        self.release(index)
    }

    /// A request of `class` starts on `key`'s connection: it leaves the idle list unless the
    /// class's budget is full.
    pub fn start(&mut self, key: Key, class: Class) -> Result<(), Refused> {
        let Some(index) = self.live(key) else {
            return Err(Refused::Gone);
        };
        if self.slots[index as usize].state != State::Idle {
            // One request at a time per HTTP/1 connection; a second start is a bug upstream,
            // refused rather than counted twice.
            return Err(Refused::Full);
        }
        let c = class.index();
        if self.busy[c] >= self.max_busy[c] {
            return Err(Refused::Full);
        }
        self.unlink(index);
        self.slots[index as usize].state = State::Busy(class);
        self.busy[c] += 1;
        Ok(())
    }

    /// The request on `key`'s connection is over: it becomes the newest idle connection.
    pub fn end(&mut self, key: Key) {
        let Some(index) = self.live(key) else { return };
        if let State::Busy(class) = self.slots[index as usize].state {
            self.busy[class.index()] -= 1;
            self.slots[index as usize].state = State::Idle;
            self.push_idle(index);
        }
    }

    /// The connection closed: frees its slot. False if it was already gone (evicted).
    pub fn remove(&mut self, key: Key) -> bool {
        let Some(index) = self.live(key) else {
            return false;
        };
        match self.slots[index as usize].state {
            State::Idle => self.unlink(index),
            State::Busy(class) => self.busy[class.index()] -= 1,
            State::Free => return false,
        }
        drop(self.release(index));
        true
    }

    /// The oldest idle connection's value (the next to be evicted).
    pub fn oldest_idle(&self) -> Option<&T> {
        self.slots.get(self.head as usize)?.value.as_ref()
    }

    fn live(&self, key: Key) -> Option<u32> {
        let slot = self.slots.get(key.index as usize)?;
        (slot.gen == key.gen && slot.state != State::Free).then_some(key.index)
    }

    /// Frees an open slot already taken off the idle list and the busy counts.
    fn release(&mut self, index: u32) -> Option<T> {
        let slot = &mut self.slots[index as usize];
        slot.state = State::Free;
        slot.gen = slot.gen.wrapping_add(1);
        self.open -= 1;
        self.free.push(index);
        slot.value.take()
    }

    fn push_idle(&mut self, index: u32) {
        let old_tail = self.tail;
        {
            let slot = &mut self.slots[index as usize];
            slot.prev = old_tail;
            slot.next = NIL;
        }
        if old_tail == NIL {
            self.head = index;
        } else {
            self.slots[old_tail as usize].next = index;
        }
        self.tail = index;
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let slot = &mut self.slots[index as usize];
            let pn = (slot.prev, slot.next);
            slot.prev = NIL;
            slot.next = NIL;
            pn
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_picks_the_oldest_idle_connection() {
        let mut t: Table<&str> = Table::new(4, 1, 1);
        let (a, _) = t.admit("a").unwrap();
        let (b, _) = t.admit("b").unwrap();
        let (c, _) = t.admit("c").unwrap();
        let (d, none) = t.admit("d").unwrap();
        assert_eq!(none, None);
        assert_eq!(t.open(), 4);
        // a is serving a request: not idle, not evictable. b's request ended after c was
        // admitted, so b is now newer than c.
        assert_eq!(t.start(a, Class::Api), Ok(()));
        assert_eq!(t.start(b, Class::Probe), Ok(()));
        t.end(b);
        assert_eq!(t.oldest_idle(), Some(&"c"));
        let (e, evicted) = t.admit("e").unwrap();
        assert_eq!(evicted, Some("c"));
        assert_eq!(t.open(), 4);
        // The evicted connection's key is dead, even though its slot now holds "e".
        assert_eq!(t.start(c, Class::Api), Err(Refused::Gone));
        assert!(!t.remove(c));
        // Then d (idle since admission), then b, then e; a is never chosen.
        assert_eq!(t.admit("f").unwrap().1, Some("d"));
        assert_eq!(t.admit("g").unwrap().1, Some("b"));
        assert_eq!(t.admit("h").unwrap().1, Some("e"));
        assert!(t.remove(a));
        assert_eq!(t.open(), 3);
        let _ = (d, e);
    }

    #[test]
    fn each_class_has_its_own_in_progress_budget() {
        // 2 probes and 3 API requests at most, in a table of 8.
        let mut t: Table<u32> = Table::new(8, 2, 3);
        let keys: Vec<Key> = (0..8).map(|i| t.admit(i).unwrap().0).collect();
        for k in &keys[..3] {
            assert_eq!(t.start(*k, Class::Api), Ok(()));
        }
        assert_eq!(t.start(keys[3], Class::Api), Err(Refused::Full));
        // The API budget is exhausted; the scrape and the probe still start.
        assert_eq!(t.start(keys[3], Class::Probe), Ok(()));
        assert_eq!(t.start(keys[4], Class::Probe), Ok(()));
        assert_eq!(t.start(keys[5], Class::Probe), Err(Refused::Full));
        // Every budget full, the table full: a new connection still gets in, evicting the
        // oldest idle one (5, 6 and 7 are idle; 5 is oldest).
        assert_eq!(t.admit(100).unwrap().1, Some(5));
        assert_eq!(t.busy(Class::Api), 3);
        assert_eq!(t.busy(Class::Probe), 2);
        t.end(keys[0]);
        assert_eq!(t.busy(Class::Api), 2);
        assert_eq!(t.start(keys[6], Class::Api), Ok(()));
        // Removing a busy connection frees its budget.
        assert!(t.remove(keys[6]));
        assert_eq!(t.busy(Class::Api), 2);
    }

    #[test]
    fn budgets_are_lowered_to_leave_an_idle_connection() {
        let t: Table<()> = Table::new(10, 8, 8);
        assert_eq!(t.max_busy(Class::Probe), 8);
        assert_eq!(t.max_busy(Class::Api), 1);
        let mut t: Table<u32> = Table::new(3, 5, 5);
        assert_eq!(t.max_busy(Class::Probe) + t.max_busy(Class::Api), 2);
        let k: Vec<Key> = (0..3).map(|i| t.admit(i).unwrap().0).collect();
        assert_eq!(t.start(k[0], Class::Probe), Ok(()));
        assert_eq!(t.start(k[1], Class::Api), Ok(()));
        assert_eq!(t.admit(9).unwrap().1, Some(2));
    }

    #[test]
    fn a_long_run_keeps_the_counts_and_list_consistent() {
        // Admit, start, end and remove in a fixed pseudo-random pattern; the open count,
        // the busy counts and the idle list must agree with a naive model throughout.
        let mut t: Table<u64> = Table::new(16, 3, 5);
        let mut model: Vec<(Key, u64, Option<Class>, u64)> = Vec::new(); // key, id, busy, idle since
        let mut clock = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for id in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            clock += 1;
            match x % 4 {
                0 => {
                    let (k, ev) = t.admit(id).expect("room");
                    if let Some(v) = ev {
                        let oldest = model
                            .iter()
                            .filter(|m| m.2.is_none())
                            .min_by_key(|m| m.3)
                            .map(|m| m.1);
                        assert_eq!(Some(v), oldest);
                        model.retain(|m| m.1 != v);
                    }
                    model.push((k, id, None, clock));
                }
                1 if !model.is_empty() => {
                    let i = (x as usize / 4) % model.len();
                    let class = if x & 64 == 0 {
                        Class::Api
                    } else {
                        Class::Probe
                    };
                    let m = &mut model[i];
                    let room = m.2.is_none() && t.busy(class) < t.max_busy(class);
                    let r = t.start(m.0, class);
                    if room {
                        assert_eq!(r, Ok(()));
                        m.2 = Some(class);
                    } else {
                        assert_eq!(r, Err(Refused::Full));
                    }
                }
                2 if !model.is_empty() => {
                    let i = (x as usize / 4) % model.len();
                    t.end(model[i].0);
                    if model[i].2.take().is_some() {
                        model[i].3 = clock;
                    }
                }
                _ if !model.is_empty() => {
                    let i = (x as usize / 4) % model.len();
                    assert!(t.remove(model[i].0));
                    model.swap_remove(i);
                }
                _ => {}
            }
            assert_eq!(t.open(), model.len());
            for c in [Class::Api, Class::Probe] {
                assert_eq!(t.busy(c), model.iter().filter(|m| m.2 == Some(c)).count());
            }
        }
    }
}
