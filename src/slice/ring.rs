//! A worker's ring of recent packets: one preallocated byte buffer, records laid end to end.
//!
//! Written by hand rather than with a crate because the hot path needs exactly this: a
//! variable-size record appended with one copy into memory allocated once, the oldest
//! records evicted to make room, and the index kept inside the records themselves (each
//! starts with its size), so the ring's memory is exactly its budget whatever the packet
//! mix. Records never straddle the end of the buffer: one that does not fit in the tail
//! space wraps to the start, and `end_mark` remembers where the older data stops.

use super::{read_record, record_size, Record, RECORD_HEADER};

/// Counters of a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Packets stored.
    pub stored: u64,
    /// Packets evicted to make room (the ring's history horizon moving on).
    pub evicted: u64,
}

/// A bounded ring of packet records.
pub struct PacketRing {
    buf: Box<[u8]>,
    /// Offset of the oldest record.
    tail: usize,
    /// Offset where the next record goes.
    head: usize,
    /// When wrapped: the end of the older records (those from `tail`).
    end_mark: usize,
    /// Records are in [tail, end_mark) then [0, head) (else in [tail, head)).
    wrapped: bool,
    count: usize,
    /// Counters.
    pub stats: RingStats,
}

impl PacketRing {
    /// A ring of `bytes` bytes (0 = disabled: pushes are ignored). Allocated here, once.
    pub fn new(bytes: usize) -> PacketRing {
        PacketRing {
            buf: vec![0u8; bytes & !7].into_boxed_slice(),
            tail: 0,
            head: 0,
            end_mark: 0,
            wrapped: false,
            count: 0,
            stats: RingStats::default(),
        }
    }

    /// Whether the ring keeps anything.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.buf.len() >= RECORD_HEADER
    }

    /// Its fixed size in bytes: it never holds more.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held by records (including the space lost before a wrap).
    pub fn used_bytes(&self) -> usize {
        if self.count == 0 {
            0
        } else if self.wrapped {
            self.buf.len() - self.tail + self.head
        } else {
            self.head - self.tail
        }
    }

    fn evict_one(&mut self) {
        let size = self
            .buf
            .get(self.tail..)
            .and_then(read_record)
            .map_or(0, |(_, s)| s);
        if size == 0 || self.count == 0 {
            // Cannot happen with records written by `push`; start over rather than loop.
            self.reset();
            return;
        }
        self.tail += size;
        self.count -= 1;
        self.stats.evicted += 1;
        if self.count == 0 {
            self.reset();
        } else if self.wrapped && self.tail >= self.end_mark {
            self.tail = 0;
            self.wrapped = false;
        }
    }

    fn reset(&mut self) {
        self.tail = 0;
        self.head = 0;
        self.end_mark = 0;
        self.wrapped = false;
        self.count = 0;
    }

    /// Appends a packet, evicting the oldest as needed. No allocation.
    #[inline]
    pub fn push(&mut self, r: &Record<'_>) {
        let size = record_size(r.data.len());
        if size > self.buf.len() {
            return; // only when disabled: snaplen is far below any enabled ring size
        }
        loop {
            if self.count == 0 {
                self.reset();
            }
            let (start, limit) = if self.wrapped {
                (self.head, self.tail)
            } else {
                (self.head, self.buf.len())
            };
            if start + size <= limit {
                if let Some(dst) = self.buf.get_mut(start..start + size) {
                    super::encode_record(dst, r);
                }
                self.head = start + size;
                self.count += 1;
                self.stats.stored += 1;
                return;
            }
            if !self.wrapped && size <= self.tail {
                // No room at the end, room at the start: wrap.
                self.end_mark = self.head;
                self.head = 0;
                self.wrapped = true;
                continue;
            }
            self.evict_one();
        }
    }

    /// Calls `f` on every record, oldest first.
    pub fn for_each(&self, mut f: impl FnMut(&Record<'_>)) {
        if self.count == 0 {
            return;
        }
        let (first, second) = if self.wrapped {
            (self.tail..self.end_mark, 0..self.head)
        } else {
            (self.tail..self.head, 0..0)
        };
        for range in [first, second] {
            if let Some(b) = self.buf.get(range) {
                for r in super::records(b) {
                    f(&r);
                }
            }
        }
    }

    /// Appends the records of flow `flow_id` to `out`, oldest first; at most `max` bytes.
    pub fn collect_flow(&self, flow_id: u64, out: &mut Vec<u8>, max: usize) {
        self.for_each(|r| {
            if r.flow_id == flow_id && out.len() + record_size(r.data.len()) <= max {
                super::put_record(out, r);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(flow_id: u64, ts_ns: u64, data: &[u8]) -> Record<'_> {
        Record {
            flow_id,
            ts_ns,
            wire_len: data.len() as u32,
            flags: 0,
            linktype: 1,
            data,
        }
    }

    #[test]
    fn keeps_the_newest_in_order() {
        let mut r = PacketRing::new(1024);
        let data = [7u8; 40]; // 72-byte records: 14 fit in 1024
        for i in 0..100u64 {
            r.push(&rec(i % 3, i, &data));
            assert!(r.used_bytes() <= r.capacity());
        }
        let mut ts = Vec::new();
        r.for_each(|x| ts.push(x.ts_ns));
        assert_eq!(ts.len(), r.len());
        assert_eq!(*ts.last().unwrap(), 99);
        assert!(ts.windows(2).all(|w| w[1] == w[0] + 1), "{ts:?}");
        assert!(ts.len() >= 12, "{}", ts.len());
        assert_eq!(r.stats.stored, 100);
        assert_eq!(r.stats.evicted as usize, 100 - ts.len());
        let mut out = Vec::new();
        r.collect_flow(1, &mut out, usize::MAX);
        assert!(crate::slice::records(&out).all(|x| x.flow_id == 1 && x.ts_ns % 3 == 1));
    }

    #[test]
    fn disabled_ring_ignores_pushes() {
        let mut r = PacketRing::new(0);
        assert!(!r.enabled());
        r.push(&rec(1, 1, &[1, 2, 3]));
        assert!(r.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the sizes, the ring stays within its bytes, returns the most recent
        /// records in order with their bytes intact, and nothing older than what it evicted.
        #[test]
        fn holds_a_contiguous_suffix(sizes in proptest::collection::vec(0usize..700, 1..400), cap in 1024usize..8192) {
            let mut r = PacketRing::new(cap);
            for (i, s) in sizes.iter().enumerate() {
                let data = vec![(i % 251) as u8; *s];
                r.push(&rec(i as u64, i as u64, &data));
                prop_assert!(r.used_bytes() <= r.capacity());
            }
            let mut seen = Vec::new();
            r.for_each(|x| {
                assert!(x.data.iter().all(|b| *b == (x.ts_ns % 251) as u8));
                assert_eq!(x.data.len(), sizes[x.ts_ns as usize]);
                seen.push(x.ts_ns);
            });
            prop_assert_eq!(seen.len(), r.len());
            let n = sizes.len() as u64;
            let expect: Vec<u64> = (n - seen.len() as u64..n).collect();
            prop_assert_eq!(seen, expect);
            prop_assert_eq!(r.stats.evicted + r.len() as u64, n);
        }
    }
}
