//! QUIC long-header packets in one UDP datagram (RFC 9000 §17.2), coalesced packets included
//! (RFC 9000 §12.2): a zero-copy walk that checks every length against the datagram before
//! it slices, and never allocates.
//!
//! Only versions 1 and 2 are laid out past the version-independent fields (RFC 8999 §5.1):
//! other versions (drafts, Google QUIC, greased ones) are reported once with their
//! connection IDs and end the walk, since their packet layout is not ours to guess.

use super::{QuicError, Version};

/// The most bytes a connection ID has in QUIC v1 and v2 (RFC 9000 §17.2). RFC 8999 allows up
/// to 255 in other versions; we never read past the version for those.
pub const MAX_CID_LEN: usize = 20;

/// A QUIC variable-length integer (RFC 9000 §16) at the start of `b`: its value and length.
pub fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(1..len)?;
    let v = bytes
        .iter()
        .fold(u64::from(first & 0x3f), |v, &x| (v << 8) | u64::from(x));
    Some((v, len))
}

/// A forward-only reader over a byte slice: every read checks what is left.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Cursor { b, at: 0 }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or_default()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let v = self.b.get(self.at..end)?;
        self.at = end;
        Some(v)
    }

    pub(crate) fn varint(&mut self) -> Option<u64> {
        let (v, len) = varint(self.rest())?;
        self.at += len;
        Some(v)
    }

    /// A varint that is a length of bytes still to come in this slice.
    pub(crate) fn len_varint(&mut self) -> Option<usize> {
        let v = self.varint()?;
        usize::try_from(v).ok()
    }
}

/// The type of a long-header packet, independent of the version's bit encoding (RFC 9000
/// §17.2 for v1, RFC 9369 §3.2 for v2, which moved the codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongType {
    /// Carries the client's and the server's first CRYPTO data (the TLS ClientHello).
    Initial,
    /// Early data; protected with keys we do not have.
    ZeroRtt,
    /// Protected with handshake keys we do not have.
    Handshake,
    /// A server's Retry: no Length field, so it ends the datagram.
    Retry,
}

impl LongType {
    /// The type encoded in the two type bits of the first byte under `version`.
    pub fn from_bits(version: Version, bits: u8) -> LongType {
        match (version, bits & 3) {
            (Version::V1, 0) | (Version::V2, 1) => LongType::Initial,
            (Version::V1, 1) | (Version::V2, 2) => LongType::ZeroRtt,
            (Version::V1, 2) | (Version::V2, 3) => LongType::Handshake,
            _ => LongType::Retry,
        }
    }
}

/// One long-header packet of a datagram, header fields read, payload still protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongPacket<'a> {
    /// The version field, as on the wire.
    pub version: u32,
    /// `Some` for QUIC v1 and v2, the versions whose packets we lay out.
    pub known: Option<(Version, LongType)>,
    /// Destination Connection ID.
    pub dcid: &'a [u8],
    /// Source Connection ID.
    pub scid: &'a [u8],
    /// The Initial's token (empty for other types).
    pub token: &'a [u8],
    /// The packet from its first byte to the end of its Length field's span (for a Retry or
    /// an unknown version: to the end of the datagram). Still protected.
    pub bytes: &'a [u8],
    /// Where the (protected) packet number starts in `bytes`; 0 when there is none (Retry,
    /// unknown version).
    pub pn_offset: usize,
}

impl LongPacket<'_> {
    /// True for a v1 or v2 Initial.
    pub fn is_initial(&self) -> bool {
        matches!(self.known, Some((_, LongType::Initial)))
    }

    /// The version, when it is one we decrypt.
    pub fn known_version(&self) -> Option<Version> {
        self.known.map(|(v, _)| v)
    }
}

/// The long-header packets of one UDP datagram, in order. Stops quietly at a short-header
/// packet (a coalesced 1-RTT packet, or zero padding after the last packet: RFC 9000 §12.2
/// lets both end a datagram) and after a Retry or an unknown version; stops after yielding an
/// error.
#[derive(Clone, Debug)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

impl<'a> Packets<'a> {
    /// Walks `datagram`, a UDP payload.
    pub fn new(datagram: &'a [u8]) -> Self {
        Packets { rest: datagram }
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<LongPacket<'a>, QuicError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = *self.rest.first()?;
        if first & 0x80 == 0 {
            self.rest = &[];
            return None;
        }
        let r = parse_one(self.rest);
        self.rest = match &r {
            Ok((_, rest)) => rest,
            Err(_) => &[],
        };
        Some(r.map(|(p, _)| p))
    }
}

/// One long-header packet at the start of `b` (first bit already known to be 1) and what
/// follows it.
fn parse_one(b: &[u8]) -> Result<(LongPacket<'_>, &[u8]), QuicError> {
    let mut c = Cursor::new(b);
    let first = c.u8().ok_or(QuicError::Truncated)?;
    let version = c
        .take(4)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(QuicError::Truncated)?;
    let dcid_len = usize::from(c.u8().ok_or(QuicError::Truncated)?);
    let dcid = c.take(dcid_len).ok_or(QuicError::Truncated)?;
    let scid_len = usize::from(c.u8().ok_or(QuicError::Truncated)?);
    let scid = c.take(scid_len).ok_or(QuicError::Truncated)?;
    let Some(v) = Version::from_wire(version) else {
        // Version negotiation (version 0), drafts, Google QUIC: the rest is not ours to read.
        let p = LongPacket {
            version,
            known: None,
            dcid,
            scid,
            token: &[],
            bytes: b,
            pn_offset: 0,
        };
        return Ok((p, &[]));
    };
    if dcid_len > MAX_CID_LEN || scid_len > MAX_CID_LEN {
        return Err(QuicError::BadConnectionId);
    }
    let ty = LongType::from_bits(v, first >> 4);
    let mut token: &[u8] = &[];
    match ty {
        LongType::Retry => {
            let p = LongPacket {
                version,
                known: Some((v, ty)),
                dcid,
                scid,
                token,
                bytes: b,
                pn_offset: 0,
            };
            return Ok((p, &[]));
        }
        LongType::Initial => {
            let n = c.len_varint().ok_or(QuicError::Truncated)?;
            token = c.take(n).ok_or(QuicError::Truncated)?;
        }
        LongType::ZeroRtt | LongType::Handshake => {}
    }
    let len = c.len_varint().ok_or(QuicError::Truncated)?;
    let pn_offset = c.at;
    c.take(len).ok_or(QuicError::Truncated)?;
    let (bytes, rest) = b.split_at(c.at);
    let p = LongPacket {
        version,
        known: Some((v, ty)),
        dcid,
        scid,
        token,
        bytes,
        pn_offset,
    };
    Ok((p, rest))
}
