//! A correlator's merge of one partition: the events of several sensors, interleaved in the
//! stream as they were published, put back in packet-time order before the cross-flow stage
//! sees them.
//!
//! Each sensor publishes progress marks ("nothing below this packet time will follow"). An
//! event is released once its time is below every sensor's mark — except sensors whose mark
//! is more than `max_lateness` behind the most advanced one (stalled, or dead without a
//! last word), which stop holding the others back; their events that arrive after the merge
//! has passed their time are counted late and fed at once. A sensor that ends its input
//! (replay) says so and never holds anything back again, until it starts a new run.
//!
//! Every decision depends only on the order of messages in the partition, never on a wall
//! clock: a correlator that takes a partition over and reads it again from the start makes
//! exactly the same releases, which is what makes its rebuilt state the one that was lost.

use crate::event::{Event, EventKey};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// One sensor as seen in a partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Sensor {
    name: String,
    run: u64,
    watermark_ns: u64,
    done: bool,
    tag: u16,
    /// The next message number expected from this run (0: none seen yet).
    next_msg: u64,
    /// Numbers above `next_msg` already taken (a re-send after a lost acknowledgement
    /// lands behind the messages that followed it), kept until the gap closes.
    ahead: Vec<u64>,
}

impl Sensor {
    /// A run not heard from yet: no progress, no message numbers.
    fn new(name: String, run: u64, tag: u16) -> Sensor {
        Sensor {
            name,
            run,
            watermark_ns: 0,
            done: false,
            tag,
            next_msg: 0,
            ahead: Vec::new(),
        }
    }
}

/// Heap order: packet time, then the sensor (by first appearance in the partition), then
/// the sensor's own event order.
type Key = (u64, u32, u8, u64, u32);

/// A merge's state in a partition snapshot (see [`PartitionMerge::state`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MergeState {
    sensors: Vec<Sensor>,
    held: Vec<(Key, Event)>,
    released_ns: u64,
    late: u64,
    forced: u64,
    duplicates: u64,
    runs: u16,
}

/// The merge of one partition; see the module documentation.
pub struct PartitionMerge {
    sensors: Vec<Sensor>,
    by_name: HashMap<String, u32>,
    heap: BinaryHeap<Reverse<(Key, u32)>>,
    slab: Vec<Option<Event>>,
    free: Vec<u32>,
    /// Time of the latest released event: an event below it is late.
    released_ns: u64,
    max_lateness_ns: u64,
    capacity: usize,
    /// Events that arrived after their time had been passed (fed as they came).
    pub late: u64,
    /// Events released early because the merge held `capacity` events.
    pub forced: u64,
    /// Messages dropped as copies of ones already taken.
    pub duplicates: u64,
    /// Runs seen: each (sensor, run) gets the next flow-id tag.
    runs: u16,
}

impl PartitionMerge {
    /// A merge waiting at most `max_lateness` for a slow sensor and holding at most
    /// `capacity` events, waiting from the start for the sensors in `expected`
    /// (`bus.sensors`).
    pub fn new(max_lateness: std::time::Duration, capacity: usize, expected: &[String]) -> Self {
        let mut m = PartitionMerge {
            sensors: Vec::new(),
            by_name: HashMap::new(),
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            released_ns: 0,
            max_lateness_ns: u64::try_from(max_lateness.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            late: 0,
            forced: 0,
            duplicates: 0,
            runs: 0,
        };
        for name in expected {
            // Run 0 is no real run: its first message starts its watermark again.
            m.sensor(name, 0);
        }
        m
    }

    /// The sensor's index, registering it (or its new run, which starts its watermark
    /// again: a restarted sensor's clock is behind where its previous run ended).
    fn sensor(&mut self, name: &str, run: u64) -> u32 {
        let i = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let i = self.sensors.len() as u32;
                self.by_name.insert(name.to_string(), i);
                let tag = self.next_tag();
                self.sensors.push(Sensor::new(name.to_string(), run, tag));
                return i;
            }
        };
        let fresh = self.sensors.get(i as usize).is_some_and(|s| s.run != run);
        if fresh {
            // A new run numbers its flows from 1 again: a tag of its own keeps them
            // apart from the previous run's flows still open in the stage.
            let tag = self.next_tag();
            if let Some(s) = self.sensors.get_mut(i as usize) {
                *s = Sensor::new(std::mem::take(&mut s.name), run, tag);
            }
        }
        i
    }

    /// Tags in order of first appearance in the partition (deterministic in stream
    /// order), wrapping after 65535 runs.
    fn next_tag(&mut self) -> u16 {
        self.runs = self.runs.checked_add(1).unwrap_or(1);
        self.runs
    }

    /// Whether message `msg` of `sensor`'s `run` is new (not a copy of one already taken).
    /// The first message seen of a run sets where its numbering stands (its start may
    /// have left the stream).
    pub fn admit(&mut self, sensor: &str, run: u64, msg: u64) -> bool {
        let i = self.sensor(sensor, run);
        let Some(s) = self.sensors.get_mut(i as usize) else {
            return true;
        };
        if s.next_msg == 0 || msg == s.next_msg {
            s.next_msg = msg + 1;
            // Close the gap with what was taken ahead of it.
            s.ahead.sort_unstable();
            while s.ahead.first() == Some(&s.next_msg) {
                s.ahead.remove(0);
                s.next_msg += 1;
            }
            return true;
        }
        if msg < s.next_msg || s.ahead.contains(&msg) {
            self.duplicates += 1;
            return false;
        }
        // Ahead of a gap (the missing one is being re-sent): taken, and remembered.
        if s.ahead.len() < 4096 {
            s.ahead.push(msg);
        } else {
            // A gap that never closes (lost for good): stop waiting for it.
            s.ahead.clear();
            s.next_msg = msg + 1;
        }
        true
    }

    /// Takes one event of `sensor`. Returns it back when it is late (its time already
    /// passed): the caller feeds it at once.
    pub fn event(&mut self, sensor: &str, run: u64, key: EventKey, mut ev: Event) -> Option<Event> {
        let i = self.sensor(sensor, run);
        if let Some(s) = self.sensors.get(i as usize) {
            super::tag_event(&mut ev, s.tag);
            if let Event::Alert(a) = &mut ev {
                // Finding ids are per sensor: name it.
                a.id = format!("{}:{}", s.name, a.id);
            }
        }
        if key.time_ns < self.released_ns {
            self.late += 1;
            return Some(ev);
        }
        let slot = match self.free.pop() {
            Some(j) => {
                if let Some(s) = self.slab.get_mut(j as usize) {
                    *s = Some(ev);
                }
                j
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((
            (key.time_ns, i, key.class, key.id, key.sub),
            slot,
        )));
        None
    }

    /// Takes a progress mark of `sensor`.
    pub fn mark(&mut self, sensor: &str, run: u64, watermark_ns: u64, done: bool) {
        let i = self.sensor(sensor, run);
        if let Some(s) = self.sensors.get_mut(i as usize) {
            s.watermark_ns = s.watermark_ns.max(watermark_ns);
            s.done |= done;
        }
    }

    /// Events with a time below this may be released: the lowest watermark among the
    /// sensors still running and not stalled; `u64::MAX` when every sensor is done.
    pub fn release_point(&self) -> u64 {
        let running = self.sensors.iter().filter(|s| !s.done);
        let Some(most) = running.clone().map(|s| s.watermark_ns).max() else {
            return if self.sensors.is_empty() { 0 } else { u64::MAX };
        };
        running
            .map(|s| s.watermark_ns)
            .filter(|w| w.saturating_add(self.max_lateness_ns) >= most)
            .min()
            .unwrap_or(most)
    }

    /// The next event that may be released, in order.
    pub fn pop(&mut self) -> Option<Event> {
        let point = self.release_point();
        let over = self.heap.len() > self.capacity;
        let &Reverse(((t, ..), _)) = self.heap.peek()?;
        if t >= point && point != u64::MAX {
            if !over {
                return None;
            }
            self.forced += 1;
        }
        let Reverse(((t, ..), slot)) = self.heap.pop()?;
        self.released_ns = self.released_ns.max(t);
        self.free.push(slot);
        self.slab.get_mut(slot as usize)?.take()
    }

    /// What the merge holds, for a snapshot of its partition: the sensors in order of
    /// appearance, the held events in release order, the release time and the counters.
    pub fn state(&self) -> MergeState {
        let mut held: Vec<(Key, u32)> = self.heap.iter().map(|Reverse(x)| *x).collect();
        held.sort_unstable();
        MergeState {
            sensors: self.sensors.clone(),
            held: held
                .into_iter()
                .filter_map(|(k, slot)| {
                    let ev = self.slab.get(slot as usize)?.clone()?;
                    Some((k, ev))
                })
                .collect(),
            released_ns: self.released_ns,
            late: self.late,
            forced: self.forced,
            duplicates: self.duplicates,
            runs: self.runs,
        }
    }

    /// A merge continuing from `state` (limits from the configuration in force).
    pub fn from_state(
        state: MergeState,
        max_lateness: std::time::Duration,
        capacity: usize,
    ) -> Self {
        let mut m = PartitionMerge::new(max_lateness, capacity, &[]);
        for (i, s) in state.sensors.iter().enumerate() {
            m.by_name.insert(s.name.clone(), i as u32);
        }
        m.sensors = state.sensors;
        for (k, ev) in state.held {
            m.slab.push(Some(ev));
            m.heap.push(Reverse((k, (m.slab.len() - 1) as u32)));
        }
        m.released_ns = state.released_ns;
        m.late = state.late;
        m.forced = state.forced;
        m.duplicates = state.duplicates;
        m.runs = state.runs;
        m
    }

    /// Events held now.
    pub fn held(&self) -> usize {
        self.heap.len()
    }

    /// Packet time the merge has reached, for the stage's clock on a quiet partition: the
    /// release point while it is a real time (not before any mark, not "all done").
    pub fn clock_ns(&self) -> Option<u64> {
        let p = self.release_point();
        (p != 0 && p != u64::MAX).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Volume;

    fn key(t: u64, id: u64) -> EventKey {
        EventKey {
            time_ns: t,
            class: 1,
            id,
            sub: 0,
        }
    }

    fn ev(t: u64) -> Event {
        Event::Volume(Volume {
            ts_ns: t,
            flow_id: t,
            ipv6: false,
            src: crate::decode::Addr::v4([10, 0, 0, 1]),
            dst: crate::decode::Addr::v4([192, 0, 2, 1]),
            dport: 443,
            sport: 40000,
            proto: 6,
            home_is_orig: true,
            out_total: 0,
            in_total: 0,
            out_bytes: 0,
            in_bytes: 0,
            end: false,
            flow_start_ns: 0,
        })
    }

    fn times(m: &mut PartitionMerge) -> Vec<u64> {
        std::iter::from_fn(|| m.pop())
            .map(|e| match e {
                Event::Volume(v) => v.ts_ns,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn two_sensors_merge_by_packet_time_behind_both_watermarks() {
        let s = std::time::Duration::from_secs(10);
        let mut m = PartitionMerge::new(s, 1000, &[]);
        for t in [1, 5, 9] {
            assert!(m.event("a", 1, key(t, t), ev(t)).is_none());
        }
        for t in [2, 3] {
            assert!(m.event("b", 7, key(t, t), ev(t)).is_none());
        }
        m.mark("a", 1, 10, false);
        // b has not said how far it is: nothing goes.
        assert_eq!(times(&mut m), Vec::<u64>::new());
        m.mark("b", 7, 4, false);
        assert_eq!(times(&mut m), vec![1, 2, 3]);
        m.mark("b", 7, 0, true);
        assert_eq!(times(&mut m), vec![5, 9]);
        // An event below what was released is late: handed back, counted.
        assert!(m.event("b", 7, key(4, 4), ev(4)).is_some());
        assert_eq!(m.late, 1);
    }

    #[test]
    fn a_stalled_sensor_stops_holding_the_others_back() {
        let ns = 1_000_000_000;
        let mut m = PartitionMerge::new(std::time::Duration::from_secs(10), 1000, &[]);
        m.mark("dead", 1, ns, false);
        m.mark("live", 1, ns, false);
        m.event("live", 1, key(5 * ns, 1), ev(5 * ns));
        m.mark("live", 1, 6 * ns, false);
        assert_eq!(times(&mut m), Vec::<u64>::new());
        m.mark("live", 1, 12 * ns, false);
        assert_eq!(times(&mut m), vec![5 * ns]);
        // A new run of a finished sensor holds the merge again once it catches up.
        m.mark("live", 2, 13 * ns, false);
        assert_eq!(m.release_point(), 13 * ns);
    }

    #[test]
    fn an_expected_sensor_holds_the_merge_before_it_is_heard_from() {
        let mut m = PartitionMerge::new(
            std::time::Duration::from_secs(3600),
            1000,
            &["b".to_string()],
        );
        m.event("a", 1, key(5, 5), ev(5));
        m.mark("a", 1, 0, true);
        // a is done, but b (expected, silent) holds everything.
        assert_eq!(times(&mut m), Vec::<u64>::new());
        m.event("b", 9, key(3, 3), ev(3));
        m.mark("b", 9, 0, true);
        assert_eq!(times(&mut m), vec![3, 5]);
        assert_eq!(m.late, 0);
    }

    #[test]
    fn a_merge_restored_from_its_state_releases_the_same() {
        let mut a = PartitionMerge::new(std::time::Duration::from_secs(10), 100, &[]);
        for t in [4, 1, 3] {
            a.event("x", 1, key(t, t), ev(t));
        }
        a.event("y", 2, key(2, 2), ev(2));
        a.mark("x", 1, 10, false);
        let st = a.state();
        let bytes = postcard::to_stdvec(&st).unwrap();
        let back: MergeState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, st);
        let mut b = PartitionMerge::from_state(back, std::time::Duration::from_secs(10), 100);
        for m in [&mut a, &mut b] {
            m.mark("y", 2, 0, true);
        }
        assert_eq!(times(&mut a), vec![1, 2, 3, 4]);
        assert_eq!(times(&mut b), vec![1, 2, 3, 4]);
        assert_eq!(b.release_point(), 10);
    }

    #[test]
    fn copies_are_dropped_and_a_resent_message_behind_its_followers_is_taken_once() {
        let mut m = PartitionMerge::new(std::time::Duration::from_secs(10), 100, &[]);
        // The first seen sets the numbering (earlier ones may have left the stream).
        assert!(m.admit("a", 1, 7));
        assert!(m.admit("a", 1, 8));
        assert!(!m.admit("a", 1, 8));
        // 9 lost its acknowledgement; 10 and 11 were stored first, then 9 again, twice.
        assert!(m.admit("a", 1, 10));
        assert!(m.admit("a", 1, 11));
        assert!(!m.admit("a", 1, 10));
        assert!(m.admit("a", 1, 9));
        assert!(!m.admit("a", 1, 9));
        assert!(!m.admit("a", 1, 11));
        assert!(m.admit("a", 1, 12));
        assert_eq!(m.duplicates, 4);
        // A new run numbers from 1 again.
        assert!(m.admit("a", 2, 1));
    }

    #[test]
    fn each_run_of_each_sensor_tags_its_flows_apart() {
        let mut m = PartitionMerge::new(std::time::Duration::from_secs(3600), 100, &[]);
        let id = |e: Option<Event>| match e {
            Some(Event::Volume(v)) => v.flow_id,
            _ => 0,
        };
        m.mark("a", 1, 0, true);
        m.event("a", 1, key(1, 1), ev(1));
        m.event("b", 1, key(1, 2), ev(1));
        m.mark("b", 1, 0, true);
        let (a, b) = (id(m.pop()), id(m.pop()));
        assert_eq!((a >> 48, b >> 48), (1, 2));
        assert_eq!(a & 0xffff_ffff_ffff, b & 0xffff_ffff_ffff);
        m.event("a", 2, key(5, 1), ev(5));
        m.mark("a", 2, 0, true);
        assert_eq!(id(m.pop()) >> 48, 3);
    }

    #[test]
    fn a_full_merge_releases_its_oldest() {
        let mut m = PartitionMerge::new(std::time::Duration::from_secs(10), 2, &[]);
        m.mark("slow", 1, 0, false);
        for t in 1..=3 {
            m.event("a", 1, key(t, t), ev(t));
        }
        assert_eq!(times(&mut m), vec![1]);
        assert_eq!(m.forced, 1);
        assert_eq!(m.held(), 2);
    }
}
