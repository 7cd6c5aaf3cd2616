//! DNS wire format: a zero-copy, bounded parser (RFC 1035 §4, RFC 3596 AAAA, RFC 6891 EDNS).
//!
//! [`Message::parse`] checks the 12-byte header, checks the question and answer counts against
//! the bytes that remain, then walks every question and resource record exactly once. A bad
//! record in the authority or additional section does not reject the message: that section
//! ends at its last good record and [`Message::damage`] says why. `parse` follows
//! and validates every name (owner names, and the names inside CNAME, NS, PTR, DNAME, MX and
//! SRV rdata), checks every RDLENGTH against the message and every TXT character-string against
//! its rdata. After that nothing can fail: the accessors and iterators of [`Message`], [`Name`]
//! and [`Record`] re-read bytes that `parse` has already checked. They still read with `get`,
//! never with an index, so a [`Record`] whose public fields were edited by hand gives short or
//! empty answers, never a panic.
//!
//! The input is the DNS message itself, header first: strip the 2-byte length prefix of DNS
//! over TCP before calling [`Message::parse`], because compression offsets count from the
//! first byte of the header.
//!
//! Names are views (message bytes + offset) walked as label slices; text is written into a
//! caller's fixed buffer ([`Name::write_lower`]). This module never allocates, locks, reads
//! the clock or panics.
//!
//! # Why a hostile message cannot loop or stall the parser
//!
//! * A compression pointer must point strictly before the start of the run of labels that
//!   contains it (and at or after the header). The starts of successive runs of one name
//!   therefore strictly decrease, so a loop cannot be written; [`MAX_POINTER_HOPS`] also caps
//!   pointer-to-pointer chains, so one name costs at most 127 labels + 128 hops = 255 steps.
//! * Question and answer counts are checked against the remaining bytes before any walking (a
//!   question takes at least 5 bytes, a record at least 11), and the authority and additional
//!   walks stop at their first bad record, so every record walked consumed at least 11 bytes:
//!   at most (65 535 − 12) / 11 = 5 956 records per message, each with at most two names
//!   (owner and rdata target). A 64 KiB message crafted for the worst case costs about 3 million
//!   label steps, a few milliseconds; a real message costs a few dozen.

// The compiler holds this file to its promise of no panics on wire data.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;
use std::iter::FusedIterator;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Size of the fixed header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// Questions accepted per message. Real messages carry exactly one (RFC 9619: QDCOUNT is
/// "usually" one, and no server answers more); 16 leaves room for odd but harmless software
/// while a hostile header cannot make us walk thousands of question names.
pub const MAX_QUESTIONS: u16 = 16;

/// Longest name in wire form, uncompressed, with its root byte (RFC 1035 §2.3.4).
pub const MAX_NAME_WIRE: usize = 255;

/// Longest name as dotted text without the trailing dot: 255 wire bytes less the first length
/// byte and the root byte.
pub const MAX_NAME_TEXT: usize = 253;

/// Compression pointers followed per name. A name has at most 127 labels (each takes at least
/// 2 of the 255 wire bytes); an encoder points at a label, so every run of a chain but the first
/// holds at least one label, and 127 + 1 hops never reject a name RFC 1035 can express. More
/// hops can only come from pointer-to-pointer chains, which no encoder emits.
pub const MAX_POINTER_HOPS: u8 = 128;

/// Smallest question on the wire: root name (1) + QTYPE (2) + QCLASS (2).
const MIN_QUESTION: usize = 5;

/// Smallest resource record: root name (1) + TYPE (2) + CLASS (2) + TTL (4) + RDLENGTH (2).
const MIN_RECORD: usize = 11;

/// Bytes between the end of an owner name and the rdata: TYPE, CLASS, TTL, RDLENGTH.
const RR_FIXED: usize = 10;

/// Header field offsets (RFC 1035 §4.1.1), all inside the 12 bytes `parse` copied.
mod field {
    pub const ID: usize = 0;
    pub const FLAGS_HI: usize = 2;
    pub const FLAGS_LO: usize = 3;
    pub const QDCOUNT: usize = 4;
    pub const ANCOUNT: usize = 6;
    pub const NSCOUNT: usize = 8;
    pub const ARCOUNT: usize = 10;
}

/// Record types whose rdata the parser looks into.
pub mod rtype {
    /// IPv4 address (RFC 1035).
    pub const A: u16 = 1;
    /// Authoritative name server (RFC 1035).
    pub const NS: u16 = 2;
    /// Canonical name (RFC 1035).
    pub const CNAME: u16 = 5;
    /// Domain name pointer (RFC 1035).
    pub const PTR: u16 = 12;
    /// Mail exchange (RFC 1035).
    pub const MX: u16 = 15;
    /// Null record: any rdata (RFC 1035), what iodine carries downstream in.
    pub const NULL: u16 = 10;
    /// Text strings (RFC 1035).
    pub const TXT: u16 = 16;
    /// IPv6 address (RFC 3596).
    pub const AAAA: u16 = 28;
    /// Service location (RFC 2782).
    pub const SRV: u16 = 33;
    /// Delegation name (RFC 6672).
    pub const DNAME: u16 = 39;
    /// EDNS pseudo-record (RFC 6891).
    pub const OPT: u16 = 41;
    /// Sender Policy Framework, TXT format (RFC 7208, obsolete type).
    pub const SPF: u16 = 99;
}

/// Why a message was rejected. A `Copy` reason, so the caller can count it per message
/// (metric label: [`DnsError::name`]) without building anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DnsError {
    /// Shorter than the 12-byte header.
    TooShort,
    /// The header's counts need more bytes than the message has (5 per question, 11 per
    /// record).
    CountsExceedMessage,
    /// A length byte of 64–127 (top bits `01`): a label longer than the 63 bytes RFC 1035
    /// allows, or the RFC 6891 extended-label type that nobody sends (RFC 2673 bit-string
    /// labels were retired by RFC 6891).
    LabelTooLong,
    /// A name longer than 255 bytes in uncompressed wire form.
    NameTooLong,
    /// A length byte of 128–191 (top bits `10`), a label type RFC 1035 §4.1.4 reserves.
    BadLabelType,
    /// A compression pointer to the start of its own run of labels or later: the only way to
    /// write a loop, so refused.
    PointerForward,
    /// A compression pointer into the header or past the end of the message.
    PointerOutOfBounds,
    /// More than [`MAX_POINTER_HOPS`] pointers in one name.
    TooManyPointers,
    /// A question, record, name or rdata runs past the end of the message.
    RecordTruncated,
    /// Rdata that does not match its type: a CNAME/NS/PTR/DNAME/MX/SRV name that does not fill
    /// the rdata exactly, or TXT character-strings that overrun it.
    BadRdata,
    /// QDCOUNT above [`MAX_QUESTIONS`].
    TooManyQuestions,
}

impl DnsError {
    /// Every reason, in a stable order (used to lay out counters).
    pub const ALL: [DnsError; 11] = [
        DnsError::TooShort,
        DnsError::CountsExceedMessage,
        DnsError::LabelTooLong,
        DnsError::NameTooLong,
        DnsError::BadLabelType,
        DnsError::PointerForward,
        DnsError::PointerOutOfBounds,
        DnsError::TooManyPointers,
        DnsError::RecordTruncated,
        DnsError::BadRdata,
        DnsError::TooManyQuestions,
    ];

    /// Stable snake_case name, used in summaries and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DnsError::TooShort => "too_short",
            DnsError::CountsExceedMessage => "counts_exceed_message",
            DnsError::LabelTooLong => "label_too_long",
            DnsError::NameTooLong => "name_too_long",
            DnsError::BadLabelType => "bad_label_type",
            DnsError::PointerForward => "pointer_forward",
            DnsError::PointerOutOfBounds => "pointer_out_of_bounds",
            DnsError::TooManyPointers => "too_many_pointers",
            DnsError::RecordTruncated => "record_truncated",
            DnsError::BadRdata => "bad_rdata",
            DnsError::TooManyQuestions => "too_many_questions",
        }
    }

    /// Index into a `[u64; DnsError::ALL.len()]` counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for DnsError {}

/// The EDNS parameters of a message's first OPT record (RFC 6891 §6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (the OPT record's CLASS field).
    pub udp_size: u16,
    /// EDNS version (0 is the only one defined; a server answers others with BADVERS).
    pub version: u8,
    /// DNSSEC OK bit.
    pub do_bit: bool,
}

/// A parsed DNS message: the bytes it was parsed from, and where each section starts.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    header: [u8; HEADER_LEN],
    an_start: usize,
    ns_start: usize,
    ar_start: usize,
    edns: Option<Edns>,
    /// Upper 8 bits of the 12-bit extended RCODE, from the OPT record's TTL.
    ext_rcode: u8,
    /// Authority and additional records that parsed (see [`Message::damage`]).
    ns_valid: u16,
    ar_valid: u16,
    damage: Option<DnsError>,
}

impl<'a> Message<'a> {
    /// Checks the header and walks every question and record once, validating every name,
    /// record length and the rdata of the types with helpers. Bytes after the last record are
    /// ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, DnsError> {
        let header: [u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DnsError::TooShort)?;
        let count = |at: usize| usize::from(be16(&header, at).unwrap_or(0));
        let (qd, an, ns, ar) = (
            count(field::QDCOUNT),
            count(field::ANCOUNT),
            count(field::NSCOUNT),
            count(field::ARCOUNT),
        );
        // Four u16 counts times at most 11 bytes stay below 2^22, so saturation never happens;
        // it only keeps the arithmetic obviously safe. Only the question and answer sections
        // must fit: a broken authority/additional section is tolerated (see below).
        let needed = qd
            .saturating_mul(MIN_QUESTION)
            .saturating_add(an.saturating_mul(MIN_RECORD));
        if needed > buf.len().saturating_sub(HEADER_LEN) {
            return Err(DnsError::CountsExceedMessage);
        }
        if qd > usize::from(MAX_QUESTIONS) {
            return Err(DnsError::TooManyQuestions);
        }

        let mut pos = HEADER_LEN;
        for _ in 0..qd {
            let end = check_name(buf, pos)?;
            pos = end.checked_add(4).ok_or(DnsError::RecordTruncated)?;
            if pos > buf.len() {
                return Err(DnsError::RecordTruncated);
            }
        }
        let an_start = pos;
        for _ in 0..an {
            pos = check_record(buf, pos)?.1;
        }
        // Junk after the answers (a truncated OPT record, bogus counts) must not cost the
        // answers themselves: resolvers and Suricata (its Redmine #7228) keep them. The
        // authority and additional sections stop at their first bad record, and the damage
        // is reported by `damage()`.
        let ns_start = pos;
        let mut damage = None;
        let mut ns_valid = 0u16;
        for _ in 0..ns {
            match check_record(buf, pos) {
                Ok((_, next)) => {
                    pos = next;
                    ns_valid = ns_valid.saturating_add(1);
                }
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            }
        }
        let ar_start = pos;
        let mut edns = None;
        let mut ext_rcode = 0;
        let mut ar_valid = 0u16;
        let ar_walk = if damage.is_some() { 0 } else { ar };
        for _ in 0..ar_walk {
            let (rec, next) = match check_record(buf, pos) {
                Ok(r) => r,
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            };
            ar_valid = ar_valid.saturating_add(1);
            // RFC 6891 §6.1.1: more than one OPT is a FORMERR for a server; a sensor reads
            // the first and ignores the rest.
            if rec.rtype == rtype::OPT && edns.is_none() {
                let [ext, version, flags, _] = rec.ttl.to_be_bytes();
                ext_rcode = ext;
                edns = Some(Edns {
                    udp_size: rec.rclass,
                    version,
                    do_bit: flags & 0x80 != 0,
                });
            }
            pos = next;
        }

        Ok(Message {
            buf,
            header,
            an_start,
            ns_start,
            ar_start,
            edns,
            ext_rcode,
            ns_valid,
            ar_valid,
            damage,
        })
    }

    /// A problem in the authority or additional section that `parse` tolerated: those
    /// sections end at the last good record; header, questions and answers are intact.
    pub fn damage(&self) -> Option<DnsError> {
        self.damage
    }

    /// Transaction ID.
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.header[field::ID], self.header[field::ID + 1]])
    }

    /// QR bit: a response, not a query.
    pub fn is_response(&self) -> bool {
        self.header[field::FLAGS_HI] & 0x80 != 0
    }

    /// OPCODE (0 query, 4 notify, 5 update).
    pub fn opcode(&self) -> u8 {
        (self.header[field::FLAGS_HI] >> 3) & 0x0F
    }

    /// AA: authoritative answer.
    pub fn aa(&self) -> bool {
        self.header[field::FLAGS_HI] & 0x04 != 0
    }

    /// TC: truncated (the client should retry over TCP).
    pub fn tc(&self) -> bool {
        self.header[field::FLAGS_HI] & 0x02 != 0
    }

    /// RD: recursion desired.
    pub fn rd(&self) -> bool {
        self.header[field::FLAGS_HI] & 0x01 != 0
    }

    /// RA: recursion available.
    pub fn ra(&self) -> bool {
        self.header[field::FLAGS_LO] & 0x80 != 0
    }

    /// Response code: the header's 4 bits, extended by the OPT record's upper 8 bits when the
    /// message has one (RFC 6891 §6.1.3), so BADVERS reads as 16.
    pub fn rcode(&self) -> u16 {
        u16::from(self.ext_rcode) << 4 | u16::from(self.header[field::FLAGS_LO] & 0x0F)
    }

    /// QDCOUNT.
    pub fn qdcount(&self) -> u16 {
        self.count(field::QDCOUNT)
    }

    /// ANCOUNT.
    pub fn ancount(&self) -> u16 {
        self.count(field::ANCOUNT)
    }

    /// NSCOUNT.
    pub fn nscount(&self) -> u16 {
        self.count(field::NSCOUNT)
    }

    /// ARCOUNT (including the OPT pseudo-record).
    pub fn arcount(&self) -> u16 {
        self.count(field::ARCOUNT)
    }

    /// The first OPT record's EDNS parameters, if the additional section has one.
    pub fn edns(&self) -> Option<Edns> {
        self.edns
    }

    /// The question section.
    pub fn questions(&self) -> Questions<'a> {
        Questions {
            buf: self.buf,
            pos: HEADER_LEN,
            left: self.qdcount(),
        }
    }

    /// The answer section.
    pub fn answers(&self) -> Records<'a> {
        Records {
            buf: self.buf,
            pos: self.an_start,
            left: self.ancount(),
        }
    }

    /// The authority section.
    pub fn authorities(&self) -> Records<'a> {
        Records {
            buf: self.buf,
            pos: self.ns_start,
            left: self.ns_valid,
        }
    }

    /// The additional section, OPT pseudo-record included.
    pub fn additionals(&self) -> Records<'a> {
        Records {
            buf: self.buf,
            pos: self.ar_start,
            left: self.ar_valid,
        }
    }

    fn count(&self, at: usize) -> u16 {
        be16(&self.header, at).unwrap_or(0)
    }
}

impl fmt::Debug for Message<'_> {
    /// The header and counts; the bytes themselves would flood a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id())
            .field("response", &self.is_response())
            .field("opcode", &self.opcode())
            .field("rcode", &self.rcode())
            .field("qdcount", &self.qdcount())
            .field("ancount", &self.ancount())
            .field("nscount", &self.nscount())
            .field("arcount", &self.arcount())
            .field("edns", &self.edns)
            .finish()
    }
}

/// One entry of the question section.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// QNAME.
    pub name: Name<'a>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS (the top bit is the mDNS unicast-response bit).
    pub qclass: u16,
}

/// One resource record.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Owner name.
    pub name: Name<'a>,
    /// TYPE.
    pub rtype: u16,
    /// CLASS (for OPT: the UDP payload size).
    pub rclass: u16,
    /// TTL in seconds (for OPT: extended RCODE, version and flags).
    pub ttl: u32,
    /// RDATA, exactly RDLENGTH bytes.
    pub rdata: &'a [u8],
    /// Offset of `rdata` in the message, needed to follow compressed names inside it.
    pub rdata_offset: usize,
}

impl<'a> Record<'a> {
    /// The address of an A record with 4 bytes of rdata.
    pub fn a(&self) -> Option<Ipv4Addr> {
        if self.rtype != rtype::A {
            return None;
        }
        <[u8; 4]>::try_from(self.rdata).ok().map(Ipv4Addr::from)
    }

    /// The address of an AAAA record with 16 bytes of rdata.
    pub fn aaaa(&self) -> Option<Ipv6Addr> {
        if self.rtype != rtype::AAAA {
            return None;
        }
        <[u8; 16]>::try_from(self.rdata).ok().map(Ipv6Addr::from)
    }

    /// The name a CNAME, NS, PTR or DNAME record holds, the exchange of an MX record or the
    /// target of an SRV record. `None` for other types and for empty rdata (RFC 2136 update
    /// deletions).
    pub fn target(&self) -> Option<Name<'a>> {
        let skip = target_offset(self.rtype)?;
        if self.rdata.len() <= skip {
            return None;
        }
        Some(Name {
            buf: self.name.buf,
            start: self.rdata_offset.checked_add(skip)?,
        })
    }

    /// The character-strings of a TXT (or SPF) record; empty for other types.
    pub fn txt(&self) -> CharacterStrings<'a> {
        CharacterStrings {
            rest: if is_txt(self.rtype) { self.rdata } else { &[] },
        }
    }
}

/// Iterator over the question section.
#[derive(Clone, Debug)]
pub struct Questions<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> Iterator for Questions<'a> {
    type Item = Question<'a>;

    fn next(&mut self) -> Option<Question<'a>> {
        if self.left == 0 {
            return None;
        }
        let q = question_at(self.buf, self.pos);
        match q {
            Some((q, next)) => {
                self.pos = next;
                self.left = self.left.saturating_sub(1);
                Some(q)
            }
            None => {
                // Unreachable after `parse`; stop rather than report garbage.
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

impl FusedIterator for Questions<'_> {}

/// Iterator over one section's resource records.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        let rec = skip_name(self.buf, self.pos).and_then(|end| record_at(self.buf, self.pos, end));
        match rec {
            Some((rec, next)) => {
                self.pos = next;
                self.left = self.left.saturating_sub(1);
                Some(rec)
            }
            None => {
                // Unreachable after `parse`; stop rather than report garbage.
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

impl FusedIterator for Records<'_> {}

/// Iterator over the character-strings of TXT rdata (RFC 1035 §3.3.14): each is a length
/// byte and that many bytes.
#[derive(Clone, Debug)]
pub struct CharacterStrings<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for CharacterStrings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        match tail.split_at_checked(usize::from(len)) {
            Some((s, rest)) => {
                self.rest = rest;
                Some(s)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

impl FusedIterator for CharacterStrings<'_> {}

/// A possibly compressed name: the message bytes and the offset where the name starts.
/// Only the parser makes one, after validating it.
#[derive(Clone, Copy)]
pub struct Name<'a> {
    buf: &'a [u8],
    start: usize,
}

impl<'a> Name<'a> {
    /// The labels, first (leftmost) to last, following compression pointers. The root is not
    /// a label: the root name yields nothing.
    pub fn labels(&self) -> Labels<'a> {
        Labels::new(self.buf, self.start)
    }

    /// Writes the dotted text form, ASCII lowercased, without a trailing dot (the root is
    /// empty) and returns its length, at most [`MAX_NAME_TEXT`]. Label bytes are copied as
    /// they are: a label holding `.` or binary is not escaped (use [`Name::labels`] when that
    /// matters).
    pub fn write_lower(&self, out: &mut [u8; MAX_NAME_WIRE]) -> usize {
        self.write_dotted(out, true)
    }

    /// Like [`Name::write_lower`], keeping the case the sender used (RFC 4343 §4.1: case is
    /// preserved on the wire; DNS 0x20 randomises it, and a tunnel may encode data in it).
    pub fn write_original(&self, out: &mut [u8; MAX_NAME_WIRE]) -> usize {
        self.write_dotted(out, false)
    }

    fn write_dotted(&self, out: &mut [u8; MAX_NAME_WIRE], lower: bool) -> usize {
        let mut n = 0;
        for label in self.labels() {
            if n > 0 {
                match out.get_mut(n) {
                    Some(dot) => *dot = b'.',
                    None => break,
                }
                n = n.saturating_add(1);
            }
            let end = n.saturating_add(label.len());
            let Some(dst) = out.get_mut(n..end) else {
                break;
            };
            dst.copy_from_slice(label);
            if lower {
                dst.make_ascii_lowercase();
            }
            n = end;
        }
        n
    }

    /// Length of the dotted text form (what [`Name::write_lower`] returns).
    pub fn len_text(&self) -> usize {
        let (count, bytes) = self.labels().fold((0usize, 0usize), |(c, b), l| {
            (c.saturating_add(1), b.saturating_add(l.len()))
        });
        bytes.saturating_add(count).saturating_sub(1)
    }

    /// Number of labels (0 for the root).
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Same labels, ASCII case ignored (RFC 4343). Works across messages.
    pub fn eq_ignore_case(&self, other: &Name<'_>) -> bool {
        if std::ptr::eq(self.buf, other.buf) && self.start == other.start {
            return true;
        }
        let mut a = self.labels();
        let mut b = other.labels();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
                _ => return false,
            }
        }
    }

    /// Equal to a dotted name such as `b"www.example.com"`, ASCII case ignored; one trailing
    /// dot is accepted, and `b""` or `b"."` is the root.
    pub fn eq_text(&self, dotted: &[u8]) -> bool {
        let mut rest = match dotted.split_last() {
            Some((b'.', head)) => head,
            _ => dotted,
        };
        let mut first = true;
        for label in self.labels() {
            if !first {
                match rest.split_first() {
                    Some((b'.', tail)) => rest = tail,
                    _ => return false,
                }
            }
            first = false;
            match rest.split_at_checked(label.len()) {
                Some((head, tail)) if head.eq_ignore_ascii_case(label) => rest = tail,
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; MAX_NAME_WIRE];
        let len = self.write_lower(&mut text);
        let shown = text.get(..len).unwrap_or_default();
        write!(f, "Name(\"{}\")", shown.escape_ascii())
    }
}

/// Iterator over a name's labels, following compression pointers backwards.
///
/// The same walk validates names in [`Message::parse`]; on bytes that break a rule it stops
/// (and `parse` reports why), so it is safe on any input.
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    buf: &'a [u8],
    /// Next length byte to read.
    pos: usize,
    /// Where the current run of labels began: a pointer must point before it.
    run_start: usize,
    /// Pointers followed so far.
    hops: u8,
    /// Uncompressed wire length of the labels yielded so far, length bytes included.
    wire_len: usize,
    /// End of the name's bytes in place (after its root byte or first pointer), once known.
    in_place_end: usize,
    done: bool,
}

impl<'a> Labels<'a> {
    fn new(buf: &'a [u8], start: usize) -> Labels<'a> {
        Labels {
            buf,
            pos: start,
            run_start: start,
            hops: 0,
            wire_len: 0,
            in_place_end: start,
            done: false,
        }
    }

    /// One label, `Ok(None)` at the root, or why the name is invalid.
    fn step(&mut self) -> Result<Option<&'a [u8]>, DnsError> {
        loop {
            let len = *self.buf.get(self.pos).ok_or(DnsError::RecordTruncated)?;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    if self.hops == 0 {
                        self.in_place_end = self.pos.saturating_add(1);
                    }
                    return Ok(None);
                }
                0x00 => {
                    let start = self.pos.saturating_add(1);
                    let end = start.saturating_add(usize::from(len));
                    // Room must remain for the root byte.
                    self.wire_len = self.wire_len.saturating_add(1 + usize::from(len));
                    if self.wire_len >= MAX_NAME_WIRE {
                        return Err(DnsError::NameTooLong);
                    }
                    let label = self.buf.get(start..end).ok_or(DnsError::RecordTruncated)?;
                    self.pos = end;
                    return Ok(Some(label));
                }
                0xC0 => {
                    let low = *self
                        .buf
                        .get(self.pos.saturating_add(1))
                        .ok_or(DnsError::RecordTruncated)?;
                    let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                    if self.hops == 0 {
                        self.in_place_end = self.pos.saturating_add(2);
                    }
                    if target < HEADER_LEN || target >= self.buf.len() {
                        return Err(DnsError::PointerOutOfBounds);
                    }
                    if target >= self.run_start {
                        return Err(DnsError::PointerForward);
                    }
                    self.hops = self.hops.saturating_add(1);
                    if self.hops > MAX_POINTER_HOPS {
                        return Err(DnsError::TooManyPointers);
                    }
                    self.pos = target;
                    self.run_start = target;
                }
                0x40 => return Err(DnsError::LabelTooLong),
                _ => return Err(DnsError::BadLabelType),
            }
        }
    }
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(label)) => Some(label),
            Ok(None) | Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

impl FusedIterator for Labels<'_> {}

/// Standard mnemonic of a record type (IANA "Resource Record (RR) TYPEs"), or `""` for a type
/// without one: the caller then writes `TYPE<n>` (RFC 3597 §5).
pub fn type_name(rtype: u16) -> &'static str {
    match rtype {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        19 => "X25",
        20 => "ISDN",
        21 => "RT",
        22 => "NSAP",
        23 => "NSAP-PTR",
        24 => "SIG",
        25 => "KEY",
        26 => "PX",
        27 => "GPOS",
        28 => "AAAA",
        29 => "LOC",
        30 => "NXT",
        31 => "EID",
        32 => "NIMLOC",
        33 => "SRV",
        34 => "ATMA",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        38 => "A6",
        39 => "DNAME",
        40 => "SINK",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        56 => "NINFO",
        57 => "RKEY",
        58 => "TALINK",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "NID",
        105 => "L32",
        106 => "L64",
        107 => "LP",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "*",
        256 => "URI",
        257 => "CAA",
        258 => "AVC",
        259 => "DOA",
        260 => "AMTRELAY",
        261 => "RESINFO",
        32768 => "TA",
        32769 => "DLV",
        _ => "",
    }
}

/// Big-endian u16 at `at`, if in bounds.
fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Big-endian u32 at `at`, if in bounds.
fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Walks the name at `start` to its end, checking every rule; returns the offset just past
/// its bytes in place (its root byte or its first pointer).
fn check_name(buf: &[u8], start: usize) -> Result<usize, DnsError> {
    let mut labels = Labels::new(buf, start);
    while labels.step()?.is_some() {}
    Ok(labels.in_place_end)
}

/// End of the in-place bytes of a name `parse` has validated, without following pointers.
fn skip_name(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *buf.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return pos.checked_add(1),
            0x00 => pos = pos.checked_add(1 + usize::from(len))?,
            0xC0 => return pos.checked_add(2),
            _ => return None,
        }
    }
}

/// The question whose name starts at `pos`, and the offset after it.
fn question_at(buf: &[u8], pos: usize) -> Option<(Question<'_>, usize)> {
    let end = skip_name(buf, pos)?;
    let q = Question {
        name: Name { buf, start: pos },
        qtype: be16(buf, end)?,
        qclass: be16(buf, end.checked_add(2)?)?,
    };
    Some((q, end.checked_add(4)?))
}

/// The record whose owner name spans `start..name_end`, and the offset after it.
fn record_at(buf: &[u8], start: usize, name_end: usize) -> Option<(Record<'_>, usize)> {
    let rdlen = usize::from(be16(buf, name_end.checked_add(8)?)?);
    let rdata_offset = name_end.checked_add(RR_FIXED)?;
    let next = rdata_offset.checked_add(rdlen)?;
    let rec = Record {
        name: Name { buf, start },
        rtype: be16(buf, name_end)?,
        rclass: be16(buf, name_end.checked_add(2)?)?,
        ttl: be32(buf, name_end.checked_add(4)?)?,
        rdata: buf.get(rdata_offset..next)?,
        rdata_offset,
    };
    Some((rec, next))
}

/// Validates the record at `pos` (owner name, fixed fields, RDLENGTH, typed rdata) and returns
/// it with the offset after it.
fn check_record(buf: &[u8], pos: usize) -> Result<(Record<'_>, usize), DnsError> {
    let name_end = check_name(buf, pos)?;
    let (rec, next) = record_at(buf, pos, name_end).ok_or(DnsError::RecordTruncated)?;
    check_rdata(buf, &rec)?;
    Ok((rec, next))
}

/// Checks the rdata of the types [`Record`] has helpers for, so the helpers cannot fail.
fn check_rdata(buf: &[u8], rec: &Record<'_>) -> Result<(), DnsError> {
    if rec.rdata.is_empty() {
        // RFC 2136 update deletions (class ANY/NONE) carry no rdata; nothing to read.
        return Ok(());
    }
    if let Some(skip) = target_offset(rec.rtype) {
        if rec.rdata.len() <= skip {
            return Err(DnsError::BadRdata);
        }
        let rdata_end = rec
            .rdata_offset
            .checked_add(rec.rdata.len())
            .ok_or(DnsError::BadRdata)?;
        let start = rec
            .rdata_offset
            .checked_add(skip)
            .ok_or(DnsError::BadRdata)?;
        // Walk over the message cut at the rdata's end: the name's bytes in place, and every
        // byte a pointer leads to, must come before it, so the walk `target()` repeats over
        // the whole message reads exactly the same bytes.
        let upto = buf.get(..rdata_end).ok_or(DnsError::BadRdata)?;
        let end = check_name(upto, start).map_err(|e| match e {
            DnsError::RecordTruncated => DnsError::BadRdata,
            other => other,
        })?;
        // The name must fill the rest of the rdata: trailing bytes would be a hidden channel.
        if end != rdata_end {
            return Err(DnsError::BadRdata);
        }
    } else if is_txt(rec.rtype) {
        let mut rest = rec.rdata;
        while let Some((&len, tail)) = rest.split_first() {
            rest = tail.get(usize::from(len)..).ok_or(DnsError::BadRdata)?;
        }
    }
    Ok(())
}

/// Where the name starts inside the rdata of a type that holds one.
fn target_offset(rtype: u16) -> Option<usize> {
    match rtype {
        rtype::CNAME | rtype::NS | rtype::PTR | rtype::DNAME => Some(0),
        // PREFERENCE (RFC 1035 §3.3.9).
        rtype::MX => Some(2),
        // PRIORITY, WEIGHT, PORT (RFC 2782).
        rtype::SRV => Some(6),
        _ => None,
    }
}

fn is_txt(rtype: u16) -> bool {
    rtype == rtype::TXT || rtype == rtype::SPF
}

#[cfg(test)]
mod tests;
