//! Capture: frames in, batches of decoded packets out to the workers.
//!
//! Offline, one reader thread ([`file`]) reads pcap/pcapng files with libpcap (plain, or
//! decompressed on the way by [`source`]), decodes each frame, gives later IP fragments the
//! ports of their first fragment ([`frag`]; orphans that precede it are held and delivered
//! after it for reassembly), and appends the packet to the batch of the worker chosen by
//! the packet's symmetric hash. Batches are
//! allocated once and cycle between the reader and the workers over bounded crossbeam
//! channels, so steady-state reading allocates nothing per packet.
//!
//! The reader also owns the replay clock: the highest packet timestamp seen so far. Every
//! packet carries it, and every few thousand packets all workers get a batch (possibly
//! empty) stamped with it, so a worker with no traffic still expires its flows on time.

/// Packets between two publications of a worker's counters.
pub const PUBLISH_EVERY: u64 = 1024;

pub mod dispatch;
pub mod file;
pub mod frag;
pub mod live;
pub mod progress;
pub mod source;

use crate::decode::PacketMeta;

/// One packet inside a [`Batch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchPacket {
    /// Position of the packet in the whole input (1-based, counting undecodable frames too,
    /// like Wireshark's frame number when replaying one file).
    pub seq: u64,
    /// The packet's own timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The replay clock at this packet: max(ts) so far. Timers run on this, so a capture
    /// whose timestamps step backwards cannot make time run backwards.
    pub clock_ns: u64,
    /// Length of the frame on the wire.
    pub wire_len: u32,
    /// Offset of the captured bytes in [`Batch::data`].
    pub data_start: u32,
    /// Captured length.
    pub cap_len: u32,
    /// The decoded headers.
    pub meta: PacketMeta,
    /// A second copy of a tunnelled frame, carrying the tunnel's outer headers to the
    /// worker of the tunnel's outer flow; it has no bytes and counts only in that flow
    /// (the frame itself is counted with its inner packet).
    pub outer_copy: bool,
    /// A later IP fragment that arrived before its datagram's first fragment, delivered
    /// again by the reader right after the first fragment, to the first fragment's worker,
    /// for reassembly only: it was counted when it arrived. Its bytes are the fragment's
    /// data alone (see [`frag`]).
    pub held: bool,
}

/// A reusable batch of packets for one worker.
#[derive(Debug)]
pub struct Batch {
    /// Captured bytes of the packets, back to back.
    pub data: Vec<u8>,
    /// The packets.
    pub packets: Vec<BatchPacket>,
    /// Replay clock when the batch was sent: the worker expires timers up to here after the
    /// packets.
    pub clock_ns: u64,
    /// Sequence number of the last frame read before the batch was sent.
    pub seq: u64,
    /// Link type of the frames (the file's), needed to write them back out as pcap.
    pub link: crate::decode::LinkType,
    /// When its first packet was read ([`crate::stats::mono_ns`]): the start of the
    /// detection-latency measurement for alerts it triggers. One clock read per batch.
    pub read_mono_ns: u64,
}

impl Batch {
    /// An empty batch with room for `packets` packets and `data_bytes` captured bytes.
    pub fn with_capacity(packets: usize, data_bytes: usize) -> Batch {
        Batch {
            data: Vec::with_capacity(data_bytes),
            packets: Vec::with_capacity(packets),
            clock_ns: 0,
            seq: 0,
            link: crate::decode::LinkType::Ethernet,
            read_mono_ns: 0,
        }
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.packets.clear();
    }

    /// Whether one more packet of `cap_len` bytes fits without reallocating.
    pub fn has_room(&self, cap_len: usize) -> bool {
        self.packets.len() < self.packets.capacity()
            && self.data.len() + cap_len <= self.data.capacity()
    }

    /// Captured bytes of a packet of this batch.
    pub fn bytes(&self, p: &BatchPacket) -> &[u8] {
        let start = p.data_start as usize;
        self.data
            .get(start..start + p.cap_len as usize)
            .unwrap_or(&[])
    }
}

/// A libpcap record's timestamp in ns since the epoch. Handles must be opened with
/// nanosecond precision, so `tv_usec` holds nanoseconds; times before 1970 clamp to 0.
/// `None` for a timestamp past the year 2554 (u64 nanoseconds overflow): such a record is
/// counted and skipped, since a clock pinned at the end of time would expire every flow
/// on every packet.
#[inline]
pub fn ts_ns(h: &pcap::PacketHeader) -> Option<u64> {
    u64::try_from(h.ts.tv_sec)
        .unwrap_or(0)
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(h.ts.tv_usec).unwrap_or(0))
        .filter(|t| *t < u64::MAX / 2)
}

/// The capture clock: the highest packet timestamp seen so far, so time never runs
/// backwards when a capture's timestamps do.
///
/// Big forward jumps are followed: real captures contain them (Zeek's `ssh.pcap` merges
/// sessions from 2011 to 2015 in one file). Live, timestamps come from the sensor's own
/// kernel, not from the wire, so traffic cannot move this clock; a replayed file is the
/// analyst's own input. A timestamp that does not fit in u64 nanoseconds is rejected by
/// [`ts_ns`] before it gets here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    now: u64,
}

impl Clock {
    /// The clock after seeing a packet stamped `ts_ns`.
    #[inline]
    pub fn observe(&mut self, ts_ns: u64) -> u64 {
        self.now = self.now.max(ts_ns);
        self.now
    }

    /// The current clock.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Moves the clock to at least `ns` (live: wall time on a quiet link).
    pub fn advance_to(&mut self, ns: u64) {
        self.now = self.now.max(ns);
    }
}
