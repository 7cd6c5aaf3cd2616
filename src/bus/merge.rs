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
#[derive(Clone, Debug)]
struct Sensor {
    run: u64,
    watermark_ns: u64,
    done: bool,
    tag: u8,
}

/// Heap order: packet time, then the sensor (by first appearance in the partition), then
/// the sensor's own event order.
type Key = (u64, u32, u8, u64, u32);

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
                self.sensors.push(Sensor {
                    run,
                    watermark_ns: 0,
                    done: false,
                    tag: super::sensor_tag(name),
                });
                return i;
            }
        };
        if let Some(s) = self.sensors.get_mut(i as usize) {
            if s.run != run {
                *s = Sensor {
                    run,
                    watermark_ns: 0,
                    done: false,
                    tag: s.tag,
                };
            }
        }
        i
    }

    /// Takes one event of `sensor`. Returns it back when it is late (its time already
    /// passed): the caller feeds it at once.
    pub fn event(&mut self, sensor: &str, run: u64, key: EventKey, mut ev: Event) -> Option<Event> {
        let i = self.sensor(sensor, run);
        if let Some(s) = self.sensors.get(i as usize) {
            super::tag_event(&mut ev, s.tag);
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
