//! Initial packet protection (RFC 9001 §5): the client's Initial keys derived from the
//! Destination Connection ID of its first Initial, header protection removed with AES-128 in
//! ECB over a 16-byte sample (§5.4.3), the payload opened with AES-128-GCM (§5.3) in a
//! caller's buffer. QUIC v2 (RFC 9369 §3.3) changes only the salt and the labels.
//!
//! Crates: RustCrypto's `hkdf`, `aes` and `aes-gcm` (see `Cargo.toml` for why not ring). The
//! AEAD is opened with `decrypt_in_place_detached`, which works on a `&mut [u8]`: nothing
//! here allocates.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use aes_gcm::{AeadInPlace, Aes128Gcm};
use hkdf::Hkdf;
use sha2::Sha256;

use super::packet::LongPacket;
use super::{QuicError, Version};

/// The largest Initial packet we open. RFC 9000 §14.1 pads client Initials to at least 1200
/// bytes and nearly all stay below the 1500-byte Ethernet MTU; 4 KiB leaves room for jumbo
/// paths and loopback captures while the copy stays on the stack. Larger ones are counted
/// (`TooLarge`) and skipped.
pub const MAX_PACKET: usize = 4096;

/// Bytes of ciphertext sampled for header protection (RFC 9001 §5.4.2).
const SAMPLE_LEN: usize = 16;
/// The AES-GCM tag at the end of every payload.
const TAG_LEN: usize = 16;

/// Key material of one direction's Initial keys, as the RFCs' test vectors print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialKeys {
    /// `client in` secret (RFC 9001 §5.2), from which the three below come.
    pub secret: [u8; 32],
    /// AEAD key (`quic key` / `quicv2 key`).
    pub key: [u8; 16],
    /// AEAD IV (`quic iv` / `quicv2 iv`).
    pub iv: [u8; 12],
    /// Header protection key (`quic hp` / `quicv2 hp`).
    pub hp: [u8; 16],
}

/// HKDF-Expand-Label of TLS 1.3 (RFC 8446 §7.1) with an empty context, into `out`. The
/// `HkdfLabel` is built on the stack: our labels are at most `tls13 quicv2 key` long.
fn expand_label(hk: &Hkdf<Sha256>, label: &[u8], out: &mut [u8]) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let mut info = [0u8; 2 + 1 + 6 + 32 + 1];
    let out_len = u16::try_from(out.len()).ok()?;
    let label_len = PREFIX.len() + label.len();
    let n = 2 + 1 + label_len + 1;
    let info = info.get_mut(..n)?;
    info.get_mut(..2)?.copy_from_slice(&out_len.to_be_bytes());
    *info.get_mut(2)? = u8::try_from(label_len).ok()?;
    info.get_mut(3..3 + PREFIX.len())?.copy_from_slice(PREFIX);
    info.get_mut(3 + PREFIX.len()..3 + label_len)?
        .copy_from_slice(label);
    // The last byte, the empty context's length, stays 0.
    hk.expand(info, out).ok()
}

impl InitialKeys {
    /// The client's Initial keys for a connection whose client chose `dcid` as the
    /// Destination Connection ID of its first Initial (RFC 9001 §5.2; RFC 9369 §3.3.1–2).
    ///
    /// `None` only if the HKDF crate refused a length it accepts by definition (a 32-byte
    /// PRK, outputs of at most 32 bytes): an `Option` keeps the path free of panics.
    pub fn client(version: Version, dcid: &[u8]) -> Option<InitialKeys> {
        let (_, hk) = Hkdf::<Sha256>::extract(Some(version.initial_salt()), dcid);
        let mut secret = [0u8; 32];
        expand_label(&hk, b"client in", &mut secret)?;
        let hk = Hkdf::<Sha256>::from_prk(&secret).ok()?;
        let [key_label, iv_label, hp_label] = version.labels();
        let mut k = InitialKeys {
            secret,
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        };
        expand_label(&hk, key_label, &mut k.key)?;
        expand_label(&hk, iv_label, &mut k.iv)?;
        expand_label(&hk, hp_label, &mut k.hp)?;
        Some(k)
    }
}

/// What an opened Initial holds: its packet number and its plaintext frames.
#[derive(Debug)]
pub struct Opened<'b> {
    /// The full packet number (RFC 9000 §A.3), from the truncated one on the wire.
    pub packet_number: u64,
    /// The decrypted payload: the packet's frames.
    pub payload: &'b [u8],
}

/// The client's Initial keys of one connection, ready to open its Initial packets. Built
/// once per connection (a few HMACs and two AES key schedules), then used per packet.
#[derive(Clone)]
pub struct Opener {
    version: Version,
    aead: Aes128Gcm,
    hp: Aes128,
    iv: [u8; 12],
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// The opener for a client's Initials under `version` whose keys come from `dcid`.
    pub fn client(version: Version, dcid: &[u8]) -> Option<Opener> {
        let k = InitialKeys::client(version, dcid)?;
        Some(Opener {
            version,
            aead: Aes128Gcm::new(GenericArray::from_slice(&k.key)),
            hp: Aes128::new(GenericArray::from_slice(&k.hp)),
            iv: k.iv,
        })
    }

    /// The version whose keys these are.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The header protection mask for a ciphertext sample (RFC 9001 §5.4.3): the first five
    /// bytes of AES-128-ECB(hp, sample).
    pub fn header_mask(&self, sample: &[u8; SAMPLE_LEN]) -> [u8; 5] {
        let mut block = GenericArray::clone_from_slice(sample);
        self.hp.encrypt_block(&mut block);
        let mut m = [0u8; 5];
        m.copy_from_slice(&block[..5]);
        m
    }

    /// Removes header protection from the Initial `pkt`, reconstructs its packet number
    /// against `largest` (the largest one opened so far in this connection) and decrypts its
    /// payload into `buf` (a copy of the packet is made there; `buf` must hold it).
    pub fn open<'b>(
        &self,
        pkt: &LongPacket<'_>,
        largest: Option<u64>,
        buf: &'b mut [u8],
    ) -> Result<Opened<'b>, QuicError> {
        let len = pkt.bytes.len();
        let pn_at = pkt.pn_offset;
        // The sample starts 4 bytes after the start of the packet number, whatever its real
        // length (RFC 9001 §5.4.2), so the packet must reach 20 bytes past it.
        let sample_at = pn_at.checked_add(4).ok_or(QuicError::ShortPayload)?;
        let sample: &[u8; SAMPLE_LEN] = pkt
            .bytes
            .get(sample_at..sample_at + SAMPLE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(QuicError::ShortPayload)?;
        let buf = buf.get_mut(..len).ok_or(QuicError::TooLarge)?;
        buf.copy_from_slice(pkt.bytes);
        let mask = self.header_mask(sample);
        // Long header: the low four bits of the first byte are protected (§5.4.1).
        buf[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(buf[0] & 0x03) + 1;
        let mut truncated = 0u64;
        for i in 0..pn_len {
            // In range: the sample check put at least 20 bytes after `pn_at`.
            buf[pn_at + i] ^= mask[1 + i];
            truncated = (truncated << 8) | u64::from(buf[pn_at + i]);
        }
        let pn = decode_packet_number(largest, truncated, pn_len * 8);
        let body_at = pn_at + pn_len;
        let tag_at = len
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= body_at)
            .ok_or(QuicError::ShortPayload)?;
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        let (aad, body) = buf.split_at_mut(body_at);
        let (body, tag) = body.split_at_mut(tag_at - body_at);
        self.aead
            .decrypt_in_place_detached(
                GenericArray::from_slice(&nonce),
                aad,
                body,
                GenericArray::from_slice(tag),
            )
            .map_err(|_| QuicError::Decrypt)?;
        Ok(Opened {
            packet_number: pn,
            payload: body,
        })
    }
}

/// The full packet number from its truncated encoding of `bits` bits (RFC 9000 §A.3), next
/// to the largest one seen (none yet: the first packet, expected 0).
pub fn decode_packet_number(largest: Option<u64>, truncated: u64, bits: usize) -> u64 {
    const MAX: u64 = (1 << 62) - 1;
    let expected = largest.map_or(0, |l| l.saturating_add(1)).min(MAX);
    let win = 1u64 << bits.min(32);
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | (truncated & mask);
    if candidate.saturating_add(hwin) <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(hwin) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}
