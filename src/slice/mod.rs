//! Pcap slices: the packets of every flagged flow, for Wireshark.
//!
//! Each worker keeps a [`ring::PacketRing`]: a preallocated byte ring of its recent packets
//! (headers always, payload up to `slice.snaplen` for a flow's first `slice.full_packets`
//! packets and `slice.payload_bytes` after that), so the packets *before* an alert are still
//! there when it fires. On an alert the worker copies the flow's packets out of its ring
//! into a [`SliceMsg::Start`], then stages the flow's later packets into pooled buffers
//! ([`SliceMsg::Packets`]) until the flow ends or a cap is reached ([`SliceMsg::End`]). The
//! [`writer`] thread turns these into one classic pcap file per alert plus a JSON sidecar,
//! and enforces retention. Nothing on the capture path writes a file or waits: when the
//! writer falls behind, the worker finds no free buffer and drops (and counts) the packet.
//!
//! Workers and the writer exchange packets in one record format ([`Record`]): a 32-byte
//! little-endian header followed by the captured bytes, padded to 8 bytes.

pub mod recorder;
pub mod ring;
pub mod writer;

use std::net::IpAddr;

/// Bytes of a record header.
pub const RECORD_HEADER: usize = 32;

/// Record flag: the payload was cut by the `slice.payload_bytes` rule (not by the capture).
pub const FLAG_PAYLOAD_CUT: u16 = 1;

/// One packet in the record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The flow it belongs to.
    pub flow_id: u64,
    /// Capture timestamp, Unix ns.
    pub ts_ns: u64,
    /// Length on the wire (pcap `orig_len`).
    pub wire_len: u32,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// pcap LINKTYPE of the frame.
    pub linktype: u16,
    /// The bytes kept (pcap `incl_len` = its length).
    pub data: &'a [u8],
}

/// Space a record with `cap` data bytes takes.
#[inline]
pub fn record_size(cap: usize) -> usize {
    (RECORD_HEADER + cap + 7) & !7
}

/// Writes a record into `dst`, which must be exactly `record_size(r.data.len())` long.
#[inline]
pub fn encode_record(dst: &mut [u8], r: &Record<'_>) {
    let size = record_size(r.data.len());
    let mut header = [0u8; RECORD_HEADER];
    header[0..4].copy_from_slice(&(size as u32).to_le_bytes());
    header[4..8].copy_from_slice(&(r.data.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&r.flow_id.to_le_bytes());
    header[16..24].copy_from_slice(&r.ts_ns.to_le_bytes());
    header[24..28].copy_from_slice(&r.wire_len.to_le_bytes());
    header[28..30].copy_from_slice(&r.flags.to_le_bytes());
    header[30..32].copy_from_slice(&r.linktype.to_le_bytes());
    if let Some(h) = dst.get_mut(..RECORD_HEADER) {
        h.copy_from_slice(&header);
    }
    let end = RECORD_HEADER + r.data.len();
    if let Some(d) = dst.get_mut(RECORD_HEADER..end) {
        d.copy_from_slice(r.data);
    }
    if let Some(pad) = dst.get_mut(end..size) {
        pad.fill(0);
    }
}

/// Appends a record to `buf`. Callers on the capture path check the capacity first, so the
/// buffer never reallocates there.
#[inline]
pub fn put_record(buf: &mut Vec<u8>, r: &Record<'_>) {
    let size = record_size(r.data.len());
    let start = buf.len();
    buf.resize(start + size, 0);
    if let Some(dst) = buf.get_mut(start..) {
        encode_record(dst, r);
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Parses the record at the start of `b`: the record and its total size. `None` if `b` does
/// not start with a whole, consistent record (the caller stops there).
pub fn read_record(b: &[u8]) -> Option<(Record<'_>, usize)> {
    let size = usize::try_from(u32_at(b, 0)?).ok()?;
    let cap = usize::try_from(u32_at(b, 4)?).ok()?;
    if size < RECORD_HEADER || size != record_size(cap) || size > b.len() {
        return None;
    }
    Some((
        Record {
            flow_id: u64_at(b, 8)?,
            ts_ns: u64_at(b, 16)?,
            wire_len: u32_at(b, 24)?,
            flags: u16_at(b, 28)?,
            linktype: u16_at(b, 30)?,
            data: b.get(RECORD_HEADER..RECORD_HEADER + cap)?,
        },
        size,
    ))
}

/// Iterates over the records of a buffer, stopping at the first inconsistent one.
pub fn records(mut b: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let (r, size) = read_record(b)?;
        b = b.get(size..).unwrap_or(&[]);
        Some(r)
    })
}

/// Magic of a little-endian pcap with nanosecond timestamps: slices keep the capture's
/// timestamps exactly (libpcap, tshark and Wireshark read it).
pub const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;

/// The 24-byte pcap global header (version 2.4, nanosecond timestamps).
pub fn pcap_header(linktype: u16, snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&PCAP_MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&u32::from(linktype).to_le_bytes());
    h
}

/// The 16-byte pcap record header of a record: `incl_len` is what was kept, `orig_len` the
/// length on the wire (never below `incl_len`), so truncation is visible to every reader.
pub fn pcap_record_header(r: &Record<'_>) -> [u8; 16] {
    let mut h = [0u8; 16];
    let secs = u32::try_from(r.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
    let nanos = (r.ts_ns % 1_000_000_000) as u32;
    let incl = r.data.len() as u32;
    h[0..4].copy_from_slice(&secs.to_le_bytes());
    h[4..8].copy_from_slice(&nanos.to_le_bytes());
    h[8..12].copy_from_slice(&incl.to_le_bytes());
    h[12..16].copy_from_slice(&r.wire_len.max(incl).to_le_bytes());
    h
}

/// A whole pcap file from records, in the order given; records of another link type than
/// `linktype` are skipped (a pcap has one). Returns the file and the packets in it.
pub fn pcap_file(list: &[Record<'_>], linktype: u16, snaplen: u32) -> (Vec<u8>, usize) {
    let kept = || list.iter().filter(|r| r.linktype == linktype);
    let size: usize = kept().map(|r| 16 + r.data.len()).sum();
    let mut out = Vec::with_capacity(24 + size);
    out.extend_from_slice(&pcap_header(linktype, snaplen));
    let mut n = 0;
    for r in kept() {
        out.extend_from_slice(&pcap_record_header(r));
        out.extend_from_slice(r.data);
        n += 1;
    }
    (out, n)
}

/// What a slice is about: written into its sidecar and the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceMeta {
    /// Slice id: the alert id (validated: `[A-Za-z0-9._-]`, not starting with a dot).
    pub id: String,
    /// The alert's detector name.
    pub detector: &'static str,
    /// Worker that owns the flow (packets arrive tagged with it).
    pub worker: usize,
    /// Flow id.
    pub flow_id: u64,
    /// IP protocol.
    pub proto: u8,
    /// Source (the home host) and port.
    pub src: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination and port.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// When the alert fired (Unix ns).
    pub alert_ts_ns: u64,
    /// pcap LINKTYPE of the slice.
    pub linktype: u16,
    /// pcap snaplen header field.
    pub snaplen: u32,
}

/// Why a slice stopped recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceEnd {
    /// The flow ended (FIN or RST).
    FlowEnded,
    /// The flow went idle past its timeout.
    Idle,
    /// The flow was evicted from a full flow table (it may go on as a new, unrecorded flow).
    Evicted,
    /// The input ended (replay) or the sensor stopped with the flow open.
    EndOfInput,
    /// `slice.max_bytes` reached.
    MaxBytes,
    /// `slice.max_duration` reached.
    MaxDuration,
    /// The sensor stopped.
    Shutdown,
    /// The worker was already recording `slice.max_recording` flows: the slice holds only
    /// the packets its ring still had.
    TooMany,
}

impl SliceEnd {
    /// Name in the sidecar.
    pub fn name(self) -> &'static str {
        match self {
            SliceEnd::FlowEnded => "flow_ended",
            SliceEnd::Idle => "idle",
            SliceEnd::Evicted => "evicted",
            SliceEnd::EndOfInput => "end_of_input",
            SliceEnd::MaxBytes => "max_bytes",
            SliceEnd::MaxDuration => "max_duration",
            SliceEnd::Shutdown => "shutdown",
            SliceEnd::TooMany => "max_recording",
        }
    }
}

/// Messages from the workers to the slice writer.
#[derive(Debug)]
pub enum SliceMsg {
    /// A new slice: its packets still in the worker's ring, in order.
    Start {
        /// What it is.
        meta: Box<SliceMeta>,
        /// Records (possibly empty).
        records: Vec<u8>,
    },
    /// Later packets of recording flows, from one worker's staging pool; the writer
    /// returns the buffer (cleared) to that worker's pool.
    Packets {
        /// The worker (index into the pools).
        worker: usize,
        /// Records.
        buf: Vec<u8>,
    },
    /// A slice is complete.
    End {
        /// The worker.
        worker: usize,
        /// The flow.
        flow_id: u64,
        /// Why.
        reason: SliceEnd,
        /// Packets of this flow the worker dropped because no buffer was free.
        dropped: u64,
    },
}

/// Whether `id` may name a slice file: 1..=128 of `[A-Za-z0-9._-]`, not starting with a
/// dot. This is what keeps `/api/slices/{id}.pcap` inside `slice.dir`.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Which packets `/api/pcap` wants from the rings. Address and port filters match either
/// direction (both halves of a conversation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcapFilter {
    /// Only this flow.
    pub flow: Option<u64>,
    /// One endpoint's address.
    pub src: Option<IpAddr>,
    /// The other endpoint's address.
    pub dst: Option<IpAddr>,
    /// Port at `src`.
    pub sport: Option<u16>,
    /// Port at `dst`.
    pub dport: Option<u16>,
    /// IP protocol.
    pub proto: Option<u8>,
    /// Packets at or after (Unix ns).
    pub since_ns: Option<u64>,
    /// Packets at or before (Unix ns).
    pub until_ns: Option<u64>,
    /// Most bytes of records this worker may return (its share of [`PCAP_MAX`]).
    pub max_bytes: usize,
}

/// Most bytes of records all workers together return for one `/api/pcap` request (each
/// gets an equal share); the response says when it was cut.
pub const PCAP_MAX: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stop_at_garbage() {
        let mut buf = Vec::with_capacity(1024);
        for i in 0..5u64 {
            let data: Vec<u8> = (0..i as u8 * 3).collect();
            put_record(
                &mut buf,
                &Record {
                    flow_id: i,
                    ts_ns: 1000 + i,
                    wire_len: 1500,
                    flags: (i % 2) as u16,
                    linktype: 1,
                    data: &data,
                },
            );
        }
        assert_eq!(buf.len() % 8, 0);
        let got: Vec<_> = records(&buf).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[4].data.len(), 12);
        assert_eq!(got[3].flags, 1);
        buf.extend_from_slice(&[0xff; 40]);
        assert_eq!(records(&buf).count(), 5);
        assert_eq!(records(&buf[..buf.len() - 41]).count(), 4);
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        for ok in ["511-large_outbound_transfer-0", "a", "x.y_z-1"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "a%2f",
            &"x".repeat(129),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
