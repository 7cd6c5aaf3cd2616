//! Worker side of DNS: recognise DNS packets, parse them, condense each message into a
//! fixed-size [`DnsEvent`].
//!
//! Runs on the capture path, so it never allocates after start-up: names are written into
//! inline buffers, answers into a fixed arena, and TCP reassembly uses a pool of buffers
//! allocated once per worker.
//!
//! The TCP slots are found and recycled without a scan: a `hashlink::LinkedHashMap` from
//! stream to slot, in last-segment order, gives the stream's slot in O(1) and the least
//! recently used one from its front. Its nodes are allocated at start-up (and recycled by
//! the map's free list), so a new stream allocates nothing.

use super::parser::{self, DnsError, Message, Name, Record};
use crate::decode::{proto, Addr, PacketMeta};
use hashlink::LinkedHashMap;

/// The maps' hasher: seeded per run (so keys cannot be aimed at one bucket) and several
/// times faster than SipHash on these address keys (measured: SipHash was the largest
/// single cost of a volume report under a flood of new sources).
type Fast = foldhash::fast::RandomState;

/// Answers kept per message for the transaction log. Responses with more (round-robin
/// pools) are counted in `ancount`; the first ones are what analysts read.
pub const MAX_ANSWERS: usize = 8;
/// Addresses kept per message for the IP→name map: the A/AAAA records the CNAME chain of
/// the question leads to.
pub const MAX_RESOLVED: usize = 8;
/// Bytes of answer names (CNAME/PTR/NS/MX/SRV targets) and rdata kept per message: eight
/// 63-byte names, or one 2048-bit DKIM key TXT (about 410 bytes) and a few names.
pub(crate) const ARENA: usize = 1024;
/// TXT/SPF rdata kept per record: a 2048-bit DKIM key or an SPF policy fits; a longer record
/// (a tunnel's downstream) is shown cut, its full length beside it.
pub const TXT_MAX: usize = 512;
/// NULL and unknown-type rdata kept per record, shown as hex: enough to recognise a tunnel's
/// framing (iodine sends NULL downstream) without a 64 KiB record bloating the log.
pub const HEX_MAX: usize = 64;
/// CNAME hops followed from the question name: real chains are 1–3 long; the bound makes the
/// walk constant-time on a hostile answer section.
const MAX_CHAIN: usize = 8;
/// Answer records considered for the CNAME chain: a chain and its addresses come first in
/// real responses; the bound keeps a hostile answer section cheap.
const CHAIN_RECORDS: usize = 16;
/// Messages taken from one TCP segment: a jumbo segment of 14-byte messages would
/// otherwise turn into hundreds of events; the rest are counted in `tcp_capped`.
const MAX_MSGS_PER_SEGMENT: usize = 64;

/// A DNS name as dotted lowercase text, inline, and which of its bytes were uppercase on the
/// wire: matching uses the lowercase form, the log shows both. The 32-byte bitmap is the case
/// at a bit per byte, instead of a second 255-byte copy.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(into = "NameBufWire", from = "NameBufWire")]
pub struct NameBuf {
    bytes: [u8; 255],
    len: u8,
    /// Bit `i` set: byte `i` was an ASCII uppercase letter.
    upper: [u8; 32],
}

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf {
            bytes: [0; 255],
            len: 0,
            upper: [0; 32],
        }
    }
}

/// A [`NameBuf`] on the event bus: the name's bytes, length first, rather than the whole
/// 255-byte buffer (equality ignores the bytes past the name, so nothing is lost), and the
/// case bitmap.
#[derive(serde::Serialize, serde::Deserialize)]
struct NameBufWire {
    name: crate::proto::Text<255>,
    upper: [u8; 32],
}

impl From<NameBuf> for NameBufWire {
    fn from(n: NameBuf) -> NameBufWire {
        NameBufWire {
            name: crate::proto::Text::new(n.as_bytes()),
            upper: n.upper,
        }
    }
}

impl From<NameBufWire> for NameBuf {
    fn from(w: NameBufWire) -> NameBuf {
        let mut n = NameBuf {
            upper: w.upper,
            ..NameBuf::default()
        };
        let b = w.name.as_bytes();
        if let Some(d) = n.bytes.get_mut(..b.len()) {
            d.copy_from_slice(b);
        }
        // A `Text<255>` holds at most 255 bytes.
        n.len = u8::try_from(b.len()).unwrap_or(u8::MAX);
        n
    }
}

impl std::fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl PartialEq for NameBuf {
    fn eq(&self, o: &Self) -> bool {
        self.as_bytes() == o.as_bytes() && self.upper == o.upper
    }
}
impl Eq for NameBuf {}

impl NameBuf {
    fn of(name: &Name<'_>) -> NameBuf {
        let mut n = NameBuf::default();
        let len = name.write_original(&mut n.bytes);
        n.len = u8::try_from(len).unwrap_or(u8::MAX);
        for (i, b) in n.bytes.iter_mut().take(len).enumerate() {
            if b.is_ascii_uppercase() {
                if let Some(m) = n.upper.get_mut(i / 8) {
                    *m |= 1 << (i % 8);
                }
                b.make_ascii_lowercase();
            }
        }
        n
    }

    /// Writes the name with the case it had on the wire into `out` and returns it.
    pub fn original<'o>(&self, out: &'o mut [u8; 255]) -> &'o [u8] {
        let len = usize::from(self.len);
        for (i, (dst, &src)) in out.iter_mut().zip(self.bytes.iter()).take(len).enumerate() {
            let up = self
                .upper
                .get(i / 8)
                .is_some_and(|m| m & (1 << (i % 8)) != 0);
            *dst = if up { src.to_ascii_uppercase() } else { src };
        }
        out.get(..len).unwrap_or(&[])
    }

    /// A name from text, for tests that build events by hand (longer names are cut; the
    /// text is taken as lowercase).
    #[cfg(test)]
    pub(crate) fn from_text(text: &str) -> NameBuf {
        let mut n = NameBuf::default();
        let len = text.len().min(n.bytes.len());
        n.bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        n.len = u8::try_from(len).unwrap_or(u8::MAX);
        n
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// One answer record, condensed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AnswerData {
    /// A or AAAA.
    Addr(Addr, bool),
    /// A name target (CNAME, NS, PTR, MX, SRV, DNAME): `len` bytes at `off` in the arena.
    Name {
        /// Offset in [`DnsEvent::arena`].
        off: u16,
        /// Length.
        len: u8,
    },
    /// TXT/SPF, NULL or an unknown type: the first `len` bytes of its `total` rdata bytes,
    /// at `off` in the arena (at most [`TXT_MAX`] or [`HEX_MAX`]; fewer if the arena is full).
    Rdata {
        /// Offset in [`DnsEvent::arena`].
        off: u16,
        /// Bytes kept.
        len: u16,
        /// RDLENGTH.
        total: u16,
    },
    /// Anything else: its rdata length.
    Other(u16),
}

/// An answer: type, TTL, data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// Record type.
    pub rtype: u16,
    /// TTL, seconds.
    pub ttl: u32,
    /// Condensed rdata.
    pub data: AnswerData,
}

/// One DNS message seen on the wire, condensed on the worker for the analyser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsEvent {
    /// Packet timestamp (ns).
    pub ts_ns: u64,
    /// Flow carrying the message.
    pub flow_id: u64,
    /// 17 (UDP) or 6 (TCP).
    pub proto: u8,
    /// Address family.
    pub ipv6: bool,
    /// The client (asker): source of a query, destination of a response.
    pub client: Addr,
    /// Its port.
    pub client_port: u16,
    /// The server (resolver).
    pub server: Addr,
    /// Its port.
    pub server_port: u16,
    /// Why the message did not parse, if it did not (then only the addresses are valid).
    pub malformed: Option<DnsError>,
    /// A broken authority/additional section that was tolerated (answers are intact).
    pub damage: Option<DnsError>,
    /// Transaction id.
    pub id: u16,
    /// QR bit.
    pub response: bool,
    /// Opcode.
    pub opcode: u8,
    /// Response code (extended by EDNS when present).
    pub rcode: u16,
    /// AA, TC, RD, RA flags as bits 3..0.
    pub flags: u8,
    /// Whether there was a question.
    pub has_question: bool,
    /// First question's name (lowercase; [`NameBuf::original`] gives the wire's case).
    pub qname: NameBuf,
    /// First question's type.
    pub qtype: u16,
    /// First question's class.
    pub qclass: u16,
    /// Answer count from the header.
    pub ancount: u16,
    /// The first answers.
    pub answers: [Option<Answer>; MAX_ANSWERS],
    /// Names referenced by `answers`.
    // On the bus it travels up to its last non-zero byte: every event starts from a zeroed
    // arena (see `condense`), so that is exact, and an A/AAAA answer (most DNS traffic)
    // sends none of its 1 KiB (measured: 1189 → ~165 bytes per DNS event).
    #[serde(with = "arena_wire")]
    pub arena: [u8; ARENA],
    /// Addresses the question name resolves to (following CNAMEs), with TTLs.
    pub resolved: [Option<(Addr, bool, u32)>; MAX_RESOLVED],
}

impl DnsEvent {
    /// Text of an answer's name target.
    pub fn name_of(&self, off: u16, len: u8) -> &[u8] {
        self.arena_bytes(off, u16::from(len))
    }

    /// Bytes of the arena (a name target or kept rdata).
    pub fn arena_bytes(&self, off: u16, len: u16) -> &[u8] {
        let off = usize::from(off);
        self.arena.get(off..off + usize::from(len)).unwrap_or(&[])
    }
}

/// Counters of the worker-side DNS stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Messages parsed.
    pub messages: u64,
    /// Messages that did not parse (malformed), by the parser's verdict.
    pub malformed: u64,
    /// Messages parsed with a broken authority/additional section (answers kept).
    pub damaged: u64,
    /// Packets whose DNS payload was cut by the snaplen (not parsed).
    pub truncated_capture: u64,
    /// TCP streams whose reassembly was abandoned (gap, oversize message, pool full).
    pub tcp_abandoned: u64,
    /// Of those, streams whose slot was taken by a new stream because all were busy: the
    /// pool's evictions.
    pub tcp_evicted: u64,
    /// TCP DNS messages skipped because one segment carried more than the cap.
    pub tcp_capped: u64,
}

/// TCP DNS messages longer than this are not reassembled (counted instead). Zone
/// transfers aside, responses are a few KB; 16 KiB keeps the pool small.
const TCP_MSG_MAX: usize = 16 * 1024;
/// Concurrent TCP DNS streams reassembled per worker; the least recently used is reused.
const TCP_SLOTS: usize = 128;

struct Slot {
    next_seq: u32,
    len: usize,
    buf: Box<[u8]>,
}

/// Recognises and condenses DNS messages for one worker.
pub struct DnsExtractor {
    enabled: bool,
    ports: Vec<u16>,
    slots: Vec<Slot>,
    /// (flow, side) → slot index, least recently used first.
    streams: LinkedHashMap<(u64, bool), usize, Fast>,
    /// Slots no stream has taken yet, lowest index last (popped first).
    free: Vec<usize>,
    /// Streams examined to find or recycle a slot: the work the slot test bounds by a
    /// constant per segment (a cheap plain counter, never reset).
    visited: u64,
    /// Counters.
    pub stats: ExtractStats,
}

impl DnsExtractor {
    /// An extractor for the given ports (53, and 5353 for mDNS if configured).
    pub fn new(enabled: bool, ports: &[u16]) -> DnsExtractor {
        let mut streams = LinkedHashMap::with_capacity_and_hasher(TCP_SLOTS, Fast::default());
        // Allocate the map's nodes now: removed nodes go to its free list and are reused,
        // so taking a slot on the capture path never allocates.
        for i in 0..TCP_SLOTS {
            streams.insert((i as u64, false), i);
        }
        while streams.pop_front().is_some() {}
        DnsExtractor {
            enabled,
            ports: ports.to_vec(),
            slots: (0..TCP_SLOTS)
                .map(|_| Slot {
                    next_seq: 0,
                    len: 0,
                    buf: vec![0u8; TCP_MSG_MAX + 2].into_boxed_slice(),
                })
                .collect(),
            streams,
            free: (0..TCP_SLOTS).rev().collect(),
            visited: 0,
            stats: ExtractStats::default(),
        }
    }

    /// TCP reassembly slots: (holding part of a message, capacity, streams evicted
    /// holding part of a message). Scans the 128 slots: called once per publication, not
    /// per packet.
    pub fn tcp_slots(&self) -> (u64, u64, u64) {
        let busy = self.slots.iter().filter(|s| s.len > 0).count();
        (busy as u64, self.slots.len() as u64, self.stats.tcp_evicted)
    }

    /// Whether a packet is DNS by its ports.
    #[inline]
    pub fn is_dns(&self, m: &PacketMeta) -> bool {
        self.enabled && (m.proto == proto::UDP || m.proto == proto::TCP) && m.uses_port(&self.ports)
    }

    /// Whether a fragmented datagram is worth reassembling for DNS: the same port test as
    /// [`is_dns`](Self::is_dns), on its first fragment, UDP only (TCP segments are not
    /// fragmented by well-behaved senders, and DNS over TCP is reassembled as a stream).
    #[inline]
    pub fn wants_datagram(&self, first: &PacketMeta) -> bool {
        self.enabled && first.proto == proto::UDP && first.uses_port(&self.ports)
    }

    /// The ports this extractor takes as DNS (none when DNS is disabled).
    pub fn ports(&self) -> &[u16] {
        if self.enabled {
            &self.ports
        } else {
            &[]
        }
    }

    /// Handles one DNS packet's payload; calls `emit` for each complete message.
    /// `frame` is the captured frame; `from_orig` tells the TCP side.
    pub fn packet(
        &mut self,
        m: &PacketMeta,
        frame: &[u8],
        ts_ns: u64,
        flow_id: u64,
        from_orig: bool,
        mut emit: impl FnMut(DnsEvent),
    ) {
        let start = usize::from(m.payload_offset);
        let wire = m.payload_len as usize;
        let payload = frame.get(start..).unwrap_or(&[]);
        let payload = payload.get(..wire.min(payload.len())).unwrap_or(&[]);
        if payload.len() < wire {
            self.stats.truncated_capture += 1;
            return;
        }
        if m.proto == proto::UDP {
            self.datagram(m, payload, ts_ns, flow_id, &mut emit);
        } else if !payload.is_empty() {
            self.tcp(m, payload, ts_ns, flow_id, from_orig, &mut emit);
        }
    }

    fn tcp(
        &mut self,
        m: &PacketMeta,
        payload: &[u8],
        ts_ns: u64,
        flow_id: u64,
        side: bool,
        emit: &mut impl FnMut(DnsEvent),
    ) {
        // A segment of a stream with a slot makes it the most recently used.
        let found = self.streams.to_back(&(flow_id, side)).copied();
        if found.is_none() && whole_messages(payload) {
            // The common case: the segment holds complete messages only. Parse them in place
            // without taking a reassembly slot, so many concurrent streams do not evict each
            // other (and the result does not depend on which worker holds which stream).
            let mut rest = payload;
            let mut taken = 0usize;
            while let Some((msg, next)) = split_message(rest) {
                rest = next;
                if taken == MAX_MSGS_PER_SEGMENT {
                    self.stats.tcp_capped += 1;
                    continue;
                }
                taken += 1;
                let ev = condense(m, msg, ts_ns, flow_id);
                self.count(&ev);
                emit(ev);
            }
            return;
        }
        let idx = match found {
            Some(i) => i,
            None => {
                // A free slot, or the least recently used stream's, takes the new stream.
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        let Some((_, i)) = self.streams.pop_front() else {
                            return; // no slots at all (TCP_SLOTS is not 0)
                        };
                        self.visited += 1;
                        if self.slots.get(i).is_some_and(|s| s.len > 0) {
                            self.stats.tcp_abandoned += 1;
                            self.stats.tcp_evicted += 1;
                        }
                        i
                    }
                };
                self.streams.insert((flow_id, side), i);
                if let Some(s) = self.slots.get_mut(i) {
                    s.next_seq = m.tcp_seq;
                    s.len = 0;
                }
                i
            }
        };
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if m.tcp_seq != slot.next_seq {
            let behind = slot.next_seq.wrapping_sub(m.tcp_seq) as i32;
            if behind > 0 && (behind as usize) >= payload.len() {
                return; // a retransmission of what we already have
            }
            // A gap: what is buffered can no longer be completed.
            if slot.len > 0 {
                self.stats.tcp_abandoned += 1;
            }
            slot.len = 0;
        }
        slot.next_seq = m.tcp_seq.wrapping_add(payload.len() as u32);
        let room = slot.buf.len() - slot.len;
        if payload.len() > room {
            self.stats.tcp_abandoned += 1;
            slot.len = 0;
            return;
        }
        if let Some(dst) = slot.buf.get_mut(slot.len..slot.len + payload.len()) {
            dst.copy_from_slice(payload);
        }
        slot.len += payload.len();
        // Every complete length-prefixed message in the buffer (RFC 1035 §4.2.2).
        let mut consumed = 0usize;
        let (mut ok, mut bad, mut abandoned, mut taken, mut capped) = (0u64, 0u64, 0u64, 0, 0u64);
        loop {
            let rest = slot.buf.get(consumed..slot.len).unwrap_or(&[]);
            let Some(&[hi, lo]) = rest.get(..2).and_then(|b| <&[u8; 2]>::try_from(b).ok()) else {
                break;
            };
            let need = usize::from(u16::from_be_bytes([hi, lo]));
            if need > TCP_MSG_MAX {
                abandoned += 1;
                consumed = slot.len;
                break;
            }
            let Some(msg) = rest.get(2..2 + need) else {
                break;
            };
            consumed += 2 + need;
            if taken == MAX_MSGS_PER_SEGMENT {
                capped += 1;
                continue;
            }
            taken += 1;
            let ev = condense(m, msg, ts_ns, flow_id);
            if ev.damage.is_some() {
                self.stats.damaged += 1;
            }
            if ev.malformed.is_some() {
                bad += 1;
            } else {
                ok += 1;
            }
            emit(ev);
        }
        if consumed > 0 {
            slot.buf.copy_within(consumed..slot.len, 0);
            slot.len -= consumed;
        }
        self.stats.messages += ok;
        self.stats.malformed += bad;
        self.stats.tcp_abandoned += abandoned;
        self.stats.tcp_capped += capped;
    }

    /// Parses one UDP datagram's payload: the whole payload of an unfragmented packet
    /// (from [`packet`](Self::packet)) or of a reassembled datagram (`m` is then its first
    /// fragment's headers; see [`crate::defrag`]).
    pub fn datagram(
        &mut self,
        m: &PacketMeta,
        msg: &[u8],
        ts_ns: u64,
        flow_id: u64,
        emit: &mut impl FnMut(DnsEvent),
    ) {
        let ev = condense(m, msg, ts_ns, flow_id);
        self.count(&ev);
        emit(ev);
    }

    fn count(&mut self, ev: &DnsEvent) {
        if ev.damage.is_some() {
            self.stats.damaged += 1;
        }
        if ev.malformed.is_some() {
            self.stats.malformed += 1;
        } else {
            self.stats.messages += 1;
        }
    }
}

/// Rdata bytes kept for the log, by type: TXT/SPF (decoded as strings), NULL and types
/// without a mnemonic (shown as hex). Other types are logged by type and length.
fn rdata_kept(rtype: u16) -> Option<usize> {
    match rtype {
        parser::rtype::TXT | parser::rtype::SPF => Some(TXT_MAX),
        parser::rtype::NULL => Some(HEX_MAX),
        t if parser::type_name(t).is_empty() => Some(HEX_MAX),
        _ => None,
    }
}

/// FNV-1a over a name's lowercase labels (with a separator), for cheap comparisons.
fn name_hash(n: &Name<'_>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for label in n.labels() {
        for &b in label {
            h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ u64::from(b'.')).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The first length-prefixed message of a TCP DNS stream and the bytes after it.
fn split_message(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&[hi, lo], rest) = b.split_first_chunk::<2>()?;
    let n = usize::from(u16::from_be_bytes([hi, lo]));
    (n <= rest.len()).then(|| rest.split_at(n))
}

/// Whether `b` is exactly a sequence of complete length-prefixed messages.
fn whole_messages(mut b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    while !b.is_empty() {
        match split_message(b) {
            Some((_, rest)) => b = rest,
            None => return false,
        }
    }
    true
}

/// Parses one message and condenses it.
fn condense(m: &PacketMeta, msg: &[u8], ts_ns: u64, flow_id: u64) -> DnsEvent {
    let mut ev = DnsEvent {
        ts_ns,
        flow_id,
        proto: m.proto,
        ipv6: m.ipv6,
        client: m.src,
        client_port: m.sport,
        server: m.dst,
        server_port: m.dport,
        malformed: None,
        damage: None,
        id: 0,
        response: false,
        opcode: 0,
        rcode: 0,
        flags: 0,
        has_question: false,
        qname: NameBuf::default(),
        qtype: 0,
        qclass: 0,
        ancount: 0,
        answers: [None; MAX_ANSWERS],
        arena: [0; ARENA],
        resolved: [None; MAX_RESOLVED],
    };
    let msg = match Message::parse(msg) {
        Ok(msg) => msg,
        Err(e) => {
            ev.malformed = Some(e);
            return ev;
        }
    };
    ev.id = msg.id();
    ev.damage = msg.damage();
    ev.response = msg.is_response();
    if ev.response {
        std::mem::swap(&mut ev.client, &mut ev.server);
        std::mem::swap(&mut ev.client_port, &mut ev.server_port);
    }
    ev.opcode = msg.opcode();
    ev.rcode = msg.rcode();
    ev.flags = u8::from(msg.aa()) << 3
        | u8::from(msg.tc()) << 2
        | u8::from(msg.rd()) << 1
        | u8::from(msg.ra());
    ev.ancount = msg.ancount();
    let question = msg.questions().next();
    if let Some(q) = &question {
        ev.has_question = true;
        ev.qname = NameBuf::of(&q.name);
        ev.qtype = q.qtype;
        ev.qclass = q.qclass;
    }

    // Answers for the log.
    let mut arena_len = 0usize;
    for (slot, rec) in ev.answers.iter_mut().zip(msg.answers()) {
        let data = match (rec.a(), rec.aaaa(), rec.target()) {
            (Some(a), _, _) => AnswerData::Addr(Addr::v4(a.octets()), false),
            (_, Some(a), _) => AnswerData::Addr(Addr::v6(a.octets()), true),
            (_, _, Some(t)) => {
                let mut tmp = [0u8; 255];
                let len = t.write_lower(&mut tmp);
                match (ev.arena.get_mut(arena_len..arena_len + len), tmp.get(..len)) {
                    (Some(dst), Some(src)) => {
                        dst.copy_from_slice(src);
                        let d = AnswerData::Name {
                            off: arena_len as u16,
                            len: len as u8,
                        };
                        arena_len += len;
                        d
                    }
                    _ => AnswerData::Other(rec.rdata.len() as u16),
                }
            }
            _ => match rdata_kept(rec.rtype) {
                Some(cap) if !rec.rdata.is_empty() => {
                    let take = cap.min(rec.rdata.len()).min(ARENA - arena_len);
                    match (
                        ev.arena.get_mut(arena_len..arena_len + take),
                        rec.rdata.get(..take),
                    ) {
                        (Some(dst), Some(src)) if take > 0 => {
                            dst.copy_from_slice(src);
                            let d = AnswerData::Rdata {
                                off: arena_len as u16,
                                len: take as u16,
                                total: rec.rdata.len() as u16,
                            };
                            arena_len += take;
                            d
                        }
                        _ => AnswerData::Other(rec.rdata.len() as u16),
                    }
                }
                _ => AnswerData::Other(rec.rdata.len() as u16),
            },
        };
        *slot = Some(Answer {
            rtype: rec.rtype,
            ttl: rec.ttl,
            data,
        });
    }

    // Addresses of the question name, following its CNAME chain (responses only). Only the
    // first CHAIN_RECORDS answers are considered; names are compared by a hash of their
    // lowercase labels computed once per record, confirmed with a byte comparison on a
    // match. A hostile answer section (a reversed chain among look-alike names) thus costs
    // a bounded number of hash comparisons instead of a quadratic number of name walks, and
    // nothing large is initialised per message.
    if let (Some(q), true) = (question, ev.response && ev.ancount > 0) {
        let mut owners = [0u64; CHAIN_RECORDS];
        let mut recs: [Option<Record<'_>>; CHAIN_RECORDS] = [None; CHAIN_RECORDS];
        for ((o, slot), r) in owners.iter_mut().zip(recs.iter_mut()).zip(msg.answers()) {
            *o = name_hash(&r.name);
            *slot = Some(r);
        }
        let mut chain: [Option<(u64, Name<'_>)>; MAX_CHAIN] = [None; MAX_CHAIN];
        chain[0] = Some((name_hash(&q.name), q.name));
        let mut links = 1usize;
        let linked = |chain: &[Option<(u64, Name<'_>)>], h: u64, n: &Name<'_>| {
            chain
                .iter()
                .flatten()
                .any(|(ch, cn)| *ch == h && cn.eq_ignore_case(n))
        };
        // Each pass can add one link; MAX_CHAIN passes bound the walk.
        for _ in 0..MAX_CHAIN {
            let mut grew = false;
            for (o, r) in owners.iter().zip(recs.iter()) {
                let Some(r) = r else { break };
                if r.rtype != 5 || links >= MAX_CHAIN || !linked(&chain[..links], *o, &r.name) {
                    continue;
                }
                if let Some(t) = r.target() {
                    let th = name_hash(&t);
                    if !linked(&chain[..links], th, &t) {
                        chain[links] = Some((th, t));
                        links += 1;
                        grew = true;
                    }
                }
            }
            if !grew {
                break;
            }
        }
        let mut n = 0usize;
        for (o, r) in owners.iter().zip(recs.iter()) {
            let Some(r) = r else { break };
            if n == MAX_RESOLVED {
                break;
            }
            let addr = match (r.a(), r.aaaa()) {
                (Some(a), _) => (Addr::v4(a.octets()), false),
                (_, Some(a)) => (Addr::v6(a.octets()), true),
                _ => continue,
            };
            if !linked(&chain[..links], *o, &r.name) {
                continue;
            }
            ev.resolved[n] = Some((addr.0, addr.1, r.ttl));
            n += 1;
        }
    }
    ev
}

/// The answer arena on the wire: its bytes up to the last non-zero one, as a sequence;
/// read back into a zeroed arena. Longer than [`ARENA`] is an error, not a truncation.
mod arena_wire {
    use super::ARENA;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &[u8; ARENA], s: S) -> Result<S::Ok, S::Error> {
        let used = a.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        s.collect_seq(a.get(..used).unwrap_or_default())
    }

    struct Arena;

    impl<'de> Visitor<'de> for Arena {
        type Value = [u8; ARENA];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {ARENA} arena bytes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut a = [0u8; ARENA];
            let mut n = 0;
            while let Some(b) = seq.next_element::<u8>()? {
                *a.get_mut(n)
                    .ok_or_else(|| A::Error::invalid_length(n + 1, &self))? = b;
                n += 1;
            }
            Ok(a)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; ARENA], D::Error> {
        d.deserialize_seq(Arena)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP DNS segment holding the first 3 bytes of a 32-byte message: it needs a slot.
    const PARTIAL: [u8; 5] = [0x00, 0x20, 0x12, 0x34, 0x01];

    fn meta() -> PacketMeta {
        PacketMeta {
            proto: proto::TCP,
            sport: 40_000,
            dport: 53,
            tcp_seq: 1_000,
            payload_offset: 0,
            payload_len: PARTIAL.len() as u32,
            ..PacketMeta::default()
        }
    }

    #[test]
    fn tcp_slots_recycle_the_least_recent_stream_in_constant_work() {
        let mut x = DnsExtractor::new(true, &[53]);
        let m = meta();
        let n = 20_000u64;
        for flow in 1..=n {
            x.packet(&m, &PARTIAL, flow, flow, true, |_| {});
            // Stream 1 keeps retransmitting: the most recently used, never recycled.
            x.packet(&m, &PARTIAL, flow, 1, true, |_| {});
            assert!(x.streams.len() <= TCP_SLOTS);
        }
        assert!(x.streams.contains_key(&(1, true)));
        assert!(!x.streams.contains_key(&(2, true)));
        assert_eq!(
            x.tcp_slots(),
            (TCP_SLOTS as u64, TCP_SLOTS as u64, n - TCP_SLOTS as u64)
        );
        assert!(x.visited <= n, "visited {}", x.visited);
    }

    #[test]
    fn an_event_stays_under_two_kib() {
        // The worker pools DNS_POOL boxed events: their size is the pool's memory.
        let size = std::mem::size_of::<DnsEvent>();
        eprintln!("DnsEvent: {size} bytes");
        assert!(size <= 2048, "{size}");
    }

    #[test]
    fn free_slots_are_taken_lowest_first() {
        let mut x = DnsExtractor::new(true, &[53]);
        let m = meta();
        for flow in 0..3u64 {
            x.packet(&m, &PARTIAL, flow, flow, false, |_| {});
        }
        let taken: Vec<_> = x.streams.values().copied().collect();
        assert_eq!(taken, vec![0, 1, 2]);
        assert_eq!(x.tcp_slots().0, 3);
    }
}
