//! QUIC client Initials (issue 15): the TLS ClientHello a QUIC client sends in its first
//! packets, read out of the encryption that hides it from a passive observer only in name.
//!
//! Why: a QUIC connection (HTTP/3: most of Google's, Cloudflare's and Meta's traffic, and
//! uploads to their storage) shows nothing of its destination but an address on a shared
//! CDN. The client's Initial packets are encrypted with keys any observer can derive from
//! the packet's own Destination Connection ID (RFC 9001 §5.2, "not confidential"), and they
//! carry the ClientHello with its server name and ALPN.
//!
//! How, per client-to-server UDP datagram ([`ClientInitials::feed`]):
//! 1. [`packet`] walks the datagram's long-header packets (several can be coalesced) and
//!    picks out the Initials of QUIC v1 (RFC 9000) and v2 (RFC 9369);
//! 2. [`crypto`] derives the client's Initial keys once per connection from the Destination
//!    Connection ID of its first Initial (HKDF-SHA256 with the version's salt), removes
//!    header protection (AES-128-ECB mask) and opens the payload (AES-128-GCM, nonce = IV ⊕
//!    packet number) in a stack buffer;
//! 3. [`frame`] walks the plaintext frames (PADDING, PING, ACK, CRYPTO, CONNECTION_CLOSE;
//!    anything else ends the walk);
//! 4. [`assembler`] puts the CRYPTO frames back in stream order in a fixed 4 KiB buffer, out
//!    of order and across packets and datagrams, and says when the first handshake message
//!    (type 1, ClientHello, with its 3-byte length) is whole.
//!
//! The ClientHello bytes then go to the TLS ClientHello parser (`proto::tls`), the same one
//! that reads TLS over TCP.
//!
//! Limits, on purpose:
//! - only the client's Initials: the server's (ServerHello) and every other packet type are
//!   protected with keys an observer does not have, or say nothing we keep;
//! - only the first ClientHello of a connection (a second one after a HelloRetryRequest is
//!   not read);
//! - only v1 and v2: draft versions (0xff0000xx), Google QUIC and unknown versions are
//!   recognised and reported as [`QuicError::UnsupportedVersion`] (a counter), not decrypted;
//! - an Initial over [`crypto::MAX_PACKET`] bytes and a ClientHello over
//!   [`assembler::CAPACITY`] are reported, not read.
//!
//! Nothing here allocates, locks, blocks, reads the clock or panics on any input: every
//! length from the wire is checked before it is used, and a packet that fails is a `Copy`
//! reason for a counter.

pub mod assembler;
pub mod crypto;
pub mod frame;
pub mod packet;

#[cfg(test)]
mod tests;

pub use assembler::{CryptoAssembler, HelloStatus};
pub use crypto::{InitialKeys, Opener};
pub use frame::{Frame, Frames};
pub use packet::{LongPacket, LongType, Packets};

/// A QUIC version whose Initials we decrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// QUIC version 1, 0x00000001 (RFC 9000, RFC 9001).
    V1,
    /// QUIC version 2, 0x6b3343cf (RFC 9369).
    V2,
}

impl Version {
    /// The version for a version field, if it is one we decrypt.
    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            0x0000_0001 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The version field.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
        }
    }

    /// The salt of the Initial secret (RFC 9001 §5.2, RFC 9369 §3.3.1).
    pub fn initial_salt(self) -> &'static [u8; 20] {
        match self {
            Version::V1 => &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8,
                0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26,
                0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// The HKDF labels of the packet key, IV and header protection key (RFC 9001 §5.1,
    /// RFC 9369 §3.3.2).
    pub fn labels(self) -> [&'static [u8]; 3] {
        match self {
            Version::V1 => [b"quic key", b"quic iv", b"quic hp"],
            Version::V2 => [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
        }
    }
}

/// Why a datagram gave no ClientHello bytes. Each is a counter; the datagram is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuicError {
    /// Not a long-header packet (a 1-RTT packet, or not QUIC at all).
    NotLongHeader,
    /// Long-header packets, but no Initial among them (Handshake, 0-RTT, Retry).
    NoInitial,
    /// A version we do not decrypt: drafts, Google QUIC, version negotiation, grease.
    UnsupportedVersion,
    /// A header field runs past the end of the datagram.
    Truncated,
    /// A connection ID longer than the 20 bytes v1 and v2 allow.
    BadConnectionId,
    /// Too short for the header protection sample and the AEAD tag (RFC 9001 §5.4.2).
    ShortPayload,
    /// An Initial longer than [`crypto::MAX_PACKET`].
    TooLarge,
    /// The AEAD tag did not verify: not this connection's client Initial keys (a server
    /// Initial, a stray packet), or damaged.
    Decrypt,
    /// A malformed frame, or one an Initial may not carry; the CRYPTO data before it is kept.
    BadFrame,
    /// The HKDF crate refused a length it accepts by definition; not expected.
    Keys,
}

impl QuicError {
    /// Every reason, in a stable order (used to lay out counters).
    pub const ALL: [QuicError; 10] = [
        QuicError::NotLongHeader,
        QuicError::NoInitial,
        QuicError::UnsupportedVersion,
        QuicError::Truncated,
        QuicError::BadConnectionId,
        QuicError::ShortPayload,
        QuicError::TooLarge,
        QuicError::Decrypt,
        QuicError::BadFrame,
        QuicError::Keys,
    ];

    /// Stable snake_case name, used in summaries and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            QuicError::NotLongHeader => "not_long_header",
            QuicError::NoInitial => "no_initial",
            QuicError::UnsupportedVersion => "unsupported_version",
            QuicError::Truncated => "truncated",
            QuicError::BadConnectionId => "bad_connection_id",
            QuicError::ShortPayload => "short_payload",
            QuicError::TooLarge => "too_large",
            QuicError::Decrypt => "decrypt",
            QuicError::BadFrame => "bad_frame",
            QuicError::Keys => "keys",
        }
    }

    /// Index into a `[u64; QuicError::ALL.len()]` counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One QUIC connection's client side, from its first Initial until its ClientHello is whole:
/// the keys (derived once, from the Destination Connection ID of the first Initial seen),
/// the largest packet number opened, and the CRYPTO stream's first bytes. About 6 KiB; the
/// caller keeps one per QUIC flow it is still reading and drops it when [`Self::status`] is
/// no longer [`HelloStatus::Pending`].
#[derive(Clone, Debug)]
pub struct ClientInitials {
    opener: Option<Opener>,
    /// The Destination Connection ID the keys came from (RFC 9001 §5.2: the client's first;
    /// later Initials carry the server's choice, but keep these keys).
    odcid: [u8; packet::MAX_CID_LEN],
    odcid_len: u8,
    largest: Option<u64>,
    initials: u32,
    assembler: CryptoAssembler,
}

impl Default for ClientInitials {
    fn default() -> Self {
        Self::new()
    }
}

/// Client Initials opened from one datagram at most (see [`ClientInitials::feed`]).
pub const MAX_INITIALS_PER_DATAGRAM: u8 = 4;

impl ClientInitials {
    /// A connection with nothing seen yet.
    pub fn new() -> Self {
        ClientInitials {
            opener: None,
            odcid: [0; packet::MAX_CID_LEN],
            odcid_len: 0,
            largest: None,
            initials: 0,
            assembler: CryptoAssembler::new(),
        }
    }

    /// Forgets the connection (the slot is reused).
    pub fn reset(&mut self) {
        self.opener = None;
        self.odcid_len = 0;
        self.largest = None;
        self.initials = 0;
        self.assembler.reset();
    }

    fn odcid(&self) -> &[u8] {
        &self.odcid[..usize::from(self.odcid_len)]
    }

    /// Reads one UDP datagram the client sent: opens every client Initial in it and adds
    /// their CRYPTO frames to the stream. `Ok` with the ClientHello's status when at least
    /// one Initial was opened; otherwise the first reason it was not (the others are of the
    /// same datagram and say little more).
    pub fn feed(&mut self, datagram: &[u8]) -> Result<HelloStatus, QuicError> {
        let mut opened = false;
        let mut first_err: Option<QuicError> = None;
        if datagram.first().is_none_or(|b| b & 0x80 == 0) {
            return Err(QuicError::NotLongHeader);
        }
        // A client coalesces at most an Initial, a 0-RTT and a Handshake packet (RFC 9000
        // §12.2); a datagram of dozens of tiny Initials, each with its own connection id,
        // would cost a key derivation and a decryption each. Open at most this many.
        let mut tries = MAX_INITIALS_PER_DATAGRAM;
        for p in Packets::new(datagram) {
            let p = match p {
                Ok(p) => p,
                Err(e) => {
                    first_err.get_or_insert(e);
                    break;
                }
            };
            let Some((version, ty)) = p.known else {
                first_err.get_or_insert(QuicError::UnsupportedVersion);
                continue;
            };
            if ty != LongType::Initial {
                continue;
            }
            if tries == 0 {
                first_err.get_or_insert(QuicError::TooLarge);
                break;
            }
            tries -= 1;
            match self.open(version, &p) {
                Ok(()) => opened = true,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if opened {
            Ok(self.assembler.status())
        } else {
            Err(first_err.unwrap_or(QuicError::NoInitial))
        }
    }

    /// Opens one client Initial and adds its CRYPTO frames.
    fn open(&mut self, version: Version, p: &LongPacket<'_>) -> Result<(), QuicError> {
        if p.bytes.len() > crypto::MAX_PACKET {
            return Err(QuicError::TooLarge);
        }
        let mut buf = [0u8; crypto::MAX_PACKET];
        // Keys come from the first Initial's DCID and its version; a later version (v1 → v2
        // after compatible version negotiation, RFC 9368) keeps that DCID.
        if self.opener.as_ref().is_none_or(|o| o.version() != version) {
            let dcid = if self.odcid_len == 0 {
                p.dcid
            } else {
                self.odcid()
            };
            let o = Opener::client(version, dcid).ok_or(QuicError::Keys)?;
            if self.odcid_len == 0 {
                self.odcid[..p.dcid.len()].copy_from_slice(p.dcid);
                self.odcid_len = p.dcid.len() as u8;
            }
            self.opener = Some(o);
        }
        let Some(opener) = &self.opener else {
            return Err(QuicError::Keys);
        };
        let opened = match opener.open(p, self.largest, &mut buf) {
            Ok(o) => o,
            // After a Retry the client starts over with keys from the DCID the server chose
            // (RFC 9001 §5.2): try the packet's own DCID before giving up on it.
            Err(QuicError::Decrypt) if p.dcid != self.odcid() => {
                let o = Opener::client(version, p.dcid).ok_or(QuicError::Keys)?;
                let opened = o.open(p, None, &mut buf)?;
                self.odcid[..p.dcid.len()].copy_from_slice(p.dcid);
                self.odcid_len = p.dcid.len() as u8;
                self.opener = Some(o);
                self.largest = None;
                opened
            }
            Err(e) => return Err(e),
        };
        self.largest = Some(
            self.largest
                .map_or(opened.packet_number, |l| l.max(opened.packet_number)),
        );
        self.initials = self.initials.saturating_add(1);
        for f in Frames::new(opened.payload) {
            if let Frame::Crypto { offset, data } = f? {
                self.assembler.insert(offset, data);
            }
        }
        Ok(())
    }

    /// Where the ClientHello stands.
    pub fn status(&self) -> HelloStatus {
        self.assembler.status()
    }

    /// The whole ClientHello handshake message, once complete.
    pub fn client_hello(&self) -> Option<&[u8]> {
        self.assembler.client_hello()
    }

    /// The stream's assembler (its prefix when the ClientHello is too long, its drop count).
    pub fn assembler(&self) -> &CryptoAssembler {
        &self.assembler
    }

    /// The version of the keys in use, once an Initial was seen.
    pub fn version(&self) -> Option<Version> {
        self.opener.as_ref().map(Opener::version)
    }

    /// Client Initials opened so far.
    pub fn initials(&self) -> u32 {
        self.initials
    }
}
