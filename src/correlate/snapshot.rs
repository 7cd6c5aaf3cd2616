//! A complete, exact snapshot of the cross-flow stage ([`Correlator::snapshot`] and
//! [`Correlator::restore`]): a correlator that takes over a partition starts from its
//! predecessor's last snapshot and reads only the events that followed it, instead of the
//! whole retained stream.
//!
//! Every part that the events change is in it: the DNS analyser's (client, domain) windows
//! (the whole pair table: slots, free list, tier and client lists, counters), NXDOMAIN
//! windows, IP→name map, pending transactions and the seed of its domain-key hash; the leak
//! stage's host windows and their closing queue, data-leak groups, baselines (with the
//! active list), service statistics and clock; the cloud windows; the long-connection
//! statistics and alerted flows; the incident book (open incidents in their order, indexes,
//! held news, sequence numbers); the stage's clock and counters. What the config gives
//! (thresholds, capacities, catalogues, compiled allowlists) is not: a snapshot is restored
//! into a correlator built from the same config, which keeps its own. Nor are the
//! process's own parts: where slices are requested, the `state.dir` file, whether DNS
//! records are built, whether the stage is a bus sensor's local one.
//!
//! Each analyser derives `Serialize`/`Deserialize` with its config fields skipped;
//! restoring deserializes whole analysers (config fields at their defaults), checks them
//! ([`Restore::checked`]) and then moves their state fields into the live ones
//! ([`Restore::adopt`]), which destructure every field by name: a field added later does
//! not compile until it is put on one side or the other.
//!
//! Tables are written as the sequence of their entries in iteration order ([`table`]): an
//! insertion-ordered map comes back in the same order, so evictions and expiry go as they
//! would have; a hash map's order carries no meaning (none is iterated for an output: see
//! the module documentation of each analyser) and it is rebuilt with this process's seed.
//!
//! Format: a version byte ([`SNAPSHOT_FORMAT`]), then one zstd frame (with its content
//! checksum) of the postcard encoding. Postcard names no field: any change to a snapshotted
//! type's fields or variants changes what the bytes mean, and must raise the version.
//!
//! Why compressed (zstd level 3): measured on the events of `tests/snapshot.rs` (`cargo
//! test --test snapshot sizes -- --nocapture`), the state of a generated stream of 30 000
//! flows (~6000 DNS windows, ~16 000 learnt names, ~10 000 baselines, 100 open incidents)
//! is 3.6 MB of postcard and 0.67 MB compressed (5.5×; 4.8× at level 1, 5.5× at 5), the
//! demo capture's 2.3 KB and 0.8 KB. zstd's own benchmark on that state gives ~300 MB/s
//! compressing and ~1.4 GB/s decompressing at level 3: about 12 ms and 3 ms for it, little
//! beside the postcard encoding itself and nothing beside the hours of replay a snapshot
//! saves, for a fifth of the bytes to store and send. What compresses: the DNS windows'
//! bitmaps (mostly zero words), repeated names, addresses and times that share their high
//! bytes. The frame's checksum also catches a snapshot damaged in storage, which postcard
//! alone might read as another valid state.

use super::Correlator;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hash};
use std::io::{Read, Write};
use std::marker::PhantomData;

/// Version of the snapshot format, its first byte. Format 2: an incident's client names list
/// its flows' JA3 fingerprints (`ja3s`), and an incident remembers how many of its flows
/// were the previous process's (a sensor resumed from `state.dir`).
pub const SNAPSHOT_FORMAT: u8 = 2;

/// Largest state a snapshot holds, uncompressed (1 GiB): [`Correlator::snapshot`] refuses
/// to write a larger one and [`Correlator::restore`] stops decompressing there, so a small
/// hostile frame cannot expand into all memory. The default capacities make at most a few
/// hundred MB.
pub const MAX_STATE_BYTES: usize = 1 << 30;

/// zstd level: 3 is zstd's default, the knee of its speed/size curve on this data.
const LEVEL: i32 = 3;

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateSnapshotError {
    /// No bytes at all: not even the version byte.
    #[error("empty correlator snapshot (no version byte)")]
    Empty,
    /// Another format version.
    #[error("correlator snapshot of format version {found}, this build reads version {expected}")]
    Version {
        /// The snapshot's version byte.
        found: u8,
        /// [`SNAPSHOT_FORMAT`].
        expected: u8,
    },
    /// The state is larger than [`MAX_STATE_BYTES`] (writing), or decompresses past it.
    #[error("correlator state larger than {limit} bytes")]
    TooLarge {
        /// [`MAX_STATE_BYTES`].
        limit: usize,
    },
    /// Compressing failed, or the compressed frame is cut short, corrupt or fails its
    /// checksum.
    #[error("correlator snapshot: compressed state unreadable")]
    Compression(#[source] std::io::Error),
    /// Serialising the state failed (postcard's error).
    #[error("encoding the correlator state")]
    Encode(#[source] postcard::Error),
    /// The decompressed bytes are not a state of this format (postcard's error).
    #[error("correlator snapshot: malformed state")]
    Decode(#[source] postcard::Error),
    /// Bytes were left after the state.
    #[error("correlator snapshot: {0} bytes left after the state")]
    Trailing(usize),
    /// The state decodes, but its parts do not agree (a list that does not link up, a
    /// total that is not its events' sum, a key twice...).
    #[error("correlator snapshot: inconsistent state: {0}")]
    Inconsistent(String),
    /// The snapshot was taken of a stage configured otherwise: it has an analyser this one
    /// has not, or lacks one this one has.
    #[error("correlator snapshot does not fit this stage: {0}")]
    Mismatch(String),
}

/// Restoring one part: what [`Correlator::restore`] does with each analyser, in two steps
/// so that a snapshot rejected by any part leaves the whole stage unchanged.
pub(crate) trait Restore: Sized {
    /// Checks a deserialized part (config fields at their defaults) and completes what is
    /// derived from the rest (indexes); an error names what is wrong.
    fn checked(self) -> Result<Self, String>;
    /// Takes the state fields of `restored` (from [`Restore::checked`]), keeping this
    /// part's config fields.
    fn adopt(&mut self, restored: Self);
}

/// A table of a snapshotted struct: `#[serde(with = "snapshot::table")]` writes it as the
/// sequence of its entries in iteration order and reads it back with every key once.
pub(crate) mod table {
    use super::*;

    /// A table that is built entry by entry.
    pub(crate) trait Table: Default {
        /// One entry as written: `(key, value)`, or the key of a set.
        type Entry;
        /// Adds an entry at the back; false (and no change) if its key is already there.
        fn put(&mut self, e: Self::Entry) -> bool;
        /// Room for `n` more entries.
        fn room(&mut self, n: usize);
    }

    impl<K: Eq + Hash, V, S: BuildHasher + Default> Table for hashbrown::HashMap<K, V, S> {
        type Entry = (K, V);
        fn put(&mut self, (k, v): (K, V)) -> bool {
            !self.contains_key(&k) && self.insert(k, v).is_none()
        }
        fn room(&mut self, n: usize) {
            self.reserve(n);
        }
    }

    impl<K: Eq + Hash, V, S: BuildHasher + Default> Table for std::collections::HashMap<K, V, S> {
        type Entry = (K, V);
        fn put(&mut self, (k, v): (K, V)) -> bool {
            !self.contains_key(&k) && self.insert(k, v).is_none()
        }
        fn room(&mut self, n: usize) {
            self.reserve(n);
        }
    }

    impl<K: Eq + Hash, V, S: BuildHasher + Default> Table for hashlink::LinkedHashMap<K, V, S> {
        type Entry = (K, V);
        fn put(&mut self, (k, v): (K, V)) -> bool {
            !self.contains_key(&k) && self.insert(k, v).is_none()
        }
        fn room(&mut self, n: usize) {
            self.reserve(n);
        }
    }

    impl<K: Eq + Hash, S: BuildHasher + Default> Table for hashlink::LinkedHashSet<K, S> {
        type Entry = K;
        fn put(&mut self, k: K) -> bool {
            self.insert(k)
        }
        fn room(&mut self, n: usize) {
            self.reserve(n);
        }
    }

    /// A table that is written entry by entry, in its iteration order.
    pub(crate) trait Entries {
        /// Writes the entries (their count first).
        fn write<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error>;
    }

    impl<K: Serialize, V: Serialize, S> Entries for hashbrown::HashMap<K, V, S> {
        fn write<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
            s.collect_seq(self)
        }
    }

    impl<K: Serialize, V: Serialize, S> Entries for std::collections::HashMap<K, V, S> {
        fn write<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
            s.collect_seq(self)
        }
    }

    impl<K: Serialize, V: Serialize, S> Entries for hashlink::LinkedHashMap<K, V, S> {
        fn write<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
            s.collect_seq(self)
        }
    }

    impl<K: Serialize, S> Entries for hashlink::LinkedHashSet<K, S> {
        fn write<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
            s.collect_seq(self)
        }
    }

    /// Writes the entries in iteration order (their count first).
    pub(crate) fn serialize<M: Entries, Z: Serializer>(m: &M, s: Z) -> Result<Z::Ok, Z::Error> {
        m.write(s)
    }

    /// Reads what [`serialize`] wrote; a key seen twice is an error. Room is made as
    /// entries arrive (a count read from hostile bytes reserves at most 4096 up front).
    pub(crate) fn deserialize<'de, M, D>(d: D) -> Result<M, D::Error>
    where
        M: Table,
        M::Entry: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        struct Entries<M>(PhantomData<M>);
        impl<'de, M> Visitor<'de> for Entries<M>
        where
            M: Table,
            M::Entry: Deserialize<'de>,
        {
            type Value = M;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of table entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<M, A::Error> {
                let mut m = M::default();
                m.room(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(e) = seq.next_element()? {
                    if !m.put(e) {
                        return Err(serde::de::Error::custom("a table key appears twice"));
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_seq(Entries(PhantomData))
    }
}

/// The stage's state as written: each analyser whole (its config fields are skipped) and
/// the stage's own clock and counters. One definition for both directions, so the fields
/// are read in the order they were written.
#[derive(Serialize, Deserialize)]
struct State<D, L, C, G, I, S> {
    clock_ns: u64,
    stats: S,
    dns: Option<D>,
    leak: Option<L>,
    cloud: Option<C>,
    long: Option<G>,
    incidents: I,
}

/// [`State`] of references to the live stage's parts, as written.
type StateRef<'a> = State<
    &'a super::dns::DnsAnalyser,
    &'a super::leak::LeakAnalyser,
    &'a super::cloud::CloudDetector,
    &'a super::long_conn::LongConnections,
    &'a super::incident::IncidentBook,
    &'a super::CorrelateStats,
>;

/// A writer that takes at most `left` bytes: past them it fails, so a state beyond
/// [`MAX_STATE_BYTES`] is refused while it is written, as [`Correlator::snapshot`] refuses
/// it. Keeps the first error, which postcard does not hand back.
struct Limited<W> {
    inner: W,
    left: usize,
    error: Option<CorrelateSnapshotError>,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            self.error = Some(CorrelateSnapshotError::TooLarge {
                limit: MAX_STATE_BYTES,
            });
            return Err(std::io::Error::other("state larger than the limit"));
        }
        let n = self.inner.write(buf).inspect_err(|e| {
            self.error
                .get_or_insert(CorrelateSnapshotError::Compression(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                )));
        })?;
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How a snapshot's parts must fit the stage restoring it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Exactly: a correlator taking a partition over runs the same config.
    Exact,
    /// A sensor resuming from `state.dir` after a restart, whose config may have changed
    /// since: a part the stage no longer runs is dropped, one it now runs starts empty, and
    /// the cloud windows are dropped when `cloud` is false (another catalogue). The
    /// stage's own counters stay (they count what this process saw).
    Resume {
        /// The snapshot's cloud windows fit this stage's catalogue.
        cloud: bool,
    },
}

/// An `Option` part of the snapshot checked against the live stage's: both present, or
/// both absent (with [`Fit::Exact`]; with [`Fit::Resume`] a part on one side only is left
/// out).
fn part<T: Restore>(
    name: &str,
    live: Option<&T>,
    got: Option<T>,
    fit: Fit,
) -> Result<Option<T>, CorrelateSnapshotError> {
    match (live, got, fit) {
        (Some(_), Some(t), _) => t
            .checked()
            .map(Some)
            .map_err(|e| CorrelateSnapshotError::Inconsistent(format!("{name}: {e}"))),
        (None, None, _) => Ok(None),
        (Some(_), None, Fit::Resume { .. }) => {
            tracing::info!("the state snapshot has no {name} state: it starts empty");
            Ok(None)
        }
        (None, Some(_), Fit::Resume { .. }) => {
            tracing::info!("the state snapshot's {name} state is dropped: that part is off");
            Ok(None)
        }
        (Some(_), None, Fit::Exact) => Err(CorrelateSnapshotError::Mismatch(format!(
            "it has no {name} state, this stage runs that part"
        ))),
        (None, Some(_), Fit::Exact) => Err(CorrelateSnapshotError::Mismatch(format!(
            "it has {name} state, this stage does not run that part"
        ))),
    }
}

fn adopt<T: Restore>(live: Option<&mut T>, got: Option<T>) {
    if let (Some(l), Some(g)) = (live, got) {
        l.adopt(g);
    }
}

/// The content of a zstd frame, up to `limit` bytes: a frame that holds more is refused
/// once `limit` is passed (memory grows with what is read, never to a size the frame
/// claims).
fn decompress(frame: &[u8], limit: usize) -> Result<Vec<u8>, CorrelateSnapshotError> {
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(frame)
        .map_err(CorrelateSnapshotError::Compression)?
        .take(limit as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(CorrelateSnapshotError::Compression)?;
    if raw.len() > limit {
        return Err(CorrelateSnapshotError::TooLarge { limit });
    }
    Ok(raw)
}

impl Correlator {
    /// The complete state (every window, table, incident, clock and counter), for a
    /// correlator to resume exactly where this one was. Config-derived parts are not in it:
    /// restore into a Correlator built from the same config.
    pub fn snapshot(&self) -> Result<Vec<u8>, CorrelateSnapshotError> {
        self.snapshot_to(Vec::new())
    }

    /// Writes what [`Correlator::snapshot`] returns to `w` (the same format; the zstd frame
    /// may differ in bytes), streaming: the state is encoded straight into the compressor,
    /// so writing it holds no copy of it in memory — a sensor's state at full tables is
    /// hundreds of MB, and it is written every `state.snapshot_interval`. Errors of `w`
    /// come back as [`CorrelateSnapshotError::Compression`].
    pub fn snapshot_to<W: Write>(&self, mut w: W) -> Result<W, CorrelateSnapshotError> {
        w.write_all(&[SNAPSHOT_FORMAT])
            .map_err(CorrelateSnapshotError::Compression)?;
        let mut enc = zstd::stream::write::Encoder::new(w, LEVEL)
            .map_err(CorrelateSnapshotError::Compression)?;
        enc.include_checksum(true)
            .map_err(CorrelateSnapshotError::Compression)?;
        let mut limited = Limited {
            inner: enc,
            left: MAX_STATE_BYTES,
            error: None,
        };
        // postcard writes a field, often a byte, at a time: buffered, the compressor is
        // called per 64 KiB instead of per field.
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut limited);
        let encoded = self.with_state(|st| {
            postcard::to_io(st, &mut buffered)
                .map(drop)
                .map_err(CorrelateSnapshotError::Encode)
        });
        let flushed = buffered.flush();
        drop(buffered);
        // The writer's own error says more than postcard's "buffer full".
        if let Some(e) = limited.error.take() {
            return Err(e);
        }
        encoded?;
        flushed.map_err(CorrelateSnapshotError::Compression)?;
        limited
            .inner
            .finish()
            .map_err(CorrelateSnapshotError::Compression)
    }

    /// Calls `f` with the state as written: every part, by reference.
    fn with_state<T>(
        &self,
        f: impl FnOnce(&StateRef<'_>) -> Result<T, CorrelateSnapshotError>,
    ) -> Result<T, CorrelateSnapshotError> {
        // Every field by name: one added later must be put in the snapshot or left out here.
        let Correlator {
            dns,
            leak,
            cloud,
            long,
            slices: _,
            state: _,
            incidents,
            clock_ns,
            stats,
            local_only: _,
            resumed_clock: _,
            state_lock: _,
        } = self;
        let st = State {
            clock_ns: *clock_ns,
            stats,
            dns: dns.as_ref(),
            leak: leak.as_ref(),
            cloud: cloud.as_ref(),
            long: long.as_ref(),
            incidents,
        };
        f(&st)
    }

    /// Replaces this stage's state with a snapshot's. After it, feeding the events that
    /// followed the snapshot gives exactly the outputs the original gave. On an error the
    /// stage is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), CorrelateSnapshotError> {
        self.restore_fit(bytes, Fit::Exact)
    }

    /// [`Correlator::restore`] with the parts fitting the stage as `fit` says
    /// ([`Fit::Resume`] for a sensor resuming from `state.dir`).
    pub(crate) fn restore_fit(
        &mut self,
        bytes: &[u8],
        fit: Fit,
    ) -> Result<(), CorrelateSnapshotError> {
        let (&found, frame) = bytes.split_first().ok_or(CorrelateSnapshotError::Empty)?;
        if found != SNAPSHOT_FORMAT {
            return Err(CorrelateSnapshotError::Version {
                found,
                expected: SNAPSHOT_FORMAT,
            });
        }
        self.restore_raw(&decompress(frame, MAX_STATE_BYTES)?, fit)
    }

    /// Restores a state from its postcard encoding (the snapshot's frame decompressed).
    pub(crate) fn restore_raw(
        &mut self,
        raw: &[u8],
        fit: Fit,
    ) -> Result<(), CorrelateSnapshotError> {
        type Owned = State<
            super::dns::DnsAnalyser,
            super::leak::LeakAnalyser,
            super::cloud::CloudDetector,
            super::long_conn::LongConnections,
            super::incident::IncidentBook,
            super::CorrelateStats,
        >;
        let (st, rest) =
            postcard::take_from_bytes::<Owned>(raw).map_err(CorrelateSnapshotError::Decode)?;
        if !rest.is_empty() {
            return Err(CorrelateSnapshotError::Trailing(rest.len()));
        }
        // Every part is checked before any is taken: a snapshot refused leaves the stage as
        // it was.
        let dns = part("dns", self.dns.as_ref(), st.dns, fit)?;
        let leak = part("leak", self.leak.as_ref(), st.leak, fit)?;
        let cloud_fits = fit != (Fit::Resume { cloud: false });
        let cloud = part(
            "cloud",
            self.cloud.as_ref(),
            st.cloud.filter(|_| cloud_fits),
            fit,
        )?;
        let long = part("long_connection", self.long.as_ref(), st.long, fit)?;
        let incidents = st
            .incidents
            .checked()
            .map_err(|e| CorrelateSnapshotError::Inconsistent(format!("incidents: {e}")))?;
        adopt(self.dns.as_mut(), dns);
        adopt(self.leak.as_mut(), leak);
        adopt(self.cloud.as_mut(), cloud);
        adopt(self.long.as_mut(), long);
        self.incidents.adopt(incidents);
        self.clock_ns = st.clock_ns;
        self.stats = st.stats;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame that decompresses past the limit is cut off there, not read into memory;
    /// one within it, or cut short, or damaged, is read or refused as such.
    #[test]
    fn decompression_stops_at_the_limit_and_checks_the_frame() {
        let limit = 1 << 20;
        let zeros = std::io::repeat(0).take(limit as u64 + 1);
        let bomb = zstd::stream::encode_all(zeros, 3).unwrap_or_default();
        assert!(bomb.len() < 1024, "{}", bomb.len());
        assert!(matches!(
            decompress(&bomb, limit),
            Err(CorrelateSnapshotError::TooLarge { limit: l }) if l == limit
        ));
        let fits = zstd::stream::encode_all(std::io::repeat(7).take(1000), 3).unwrap_or_default();
        assert_eq!(decompress(&fits, limit).ok(), Some(vec![7; 1000]));

        let mut c = zstd::bulk::Compressor::new(LEVEL).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.include_checksum(true).is_ok());
        let data: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        let frame = c.compress(&data).unwrap_or_default();
        assert_eq!(decompress(&frame, limit).ok(), Some(data));
        for cut in [1, 4, frame.len() / 2, frame.len() - 1] {
            let short = frame.get(..frame.len() - cut).unwrap_or_default();
            assert!(decompress(short, limit).is_err(), "cut {cut}");
        }
        let mut bad = frame.clone();
        if let Some(b) = bad.get_mut(frame.len() - 2) {
            *b ^= 0x40; // the checksum
        }
        assert!(decompress(&bad, limit).is_err());
    }
}
