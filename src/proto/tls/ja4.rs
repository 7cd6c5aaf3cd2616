//! JA4 client fingerprints (FoxIO, <https://github.com/FoxIO-LLC/ja4>, "JA4: TLS Client
//! Fingerprinting"): `t13d1516h2_8daaf6152771_e5627efa2ab1`.
//!
//! - `ja4_a`: transport (`t` TCP, `q` QUIC), the highest version offered (`13`, `12`, ...,
//!   `00` unknown), `d` with a server_name extension or `i` without, the counts of cipher
//!   suites and of extensions (GREASE left out, two digits, at most 99), and the first and
//!   last characters of the first ALPN value (`00` without ALPN);
//! - `ja4_b`: the first 12 hex digits of the SHA-256 of the cipher suites, sorted, as 4-digit
//!   lower-case hex joined by commas (`000000000000` without suites);
//! - `ja4_c`: the same of the extensions, sorted, without SNI (0) and ALPN (16), then `_` and
//!   the signature algorithms in the client's order (no `_` without any).
//!
//! Built without allocation: the lists are sorted in fixed stack arrays and hashed as they
//! are written out.

use super::parser::{is_grease, ClientHello};
use sha2::{Digest, Sha256};

/// How the ClientHello travelled: the first letter of the fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS over TCP (`t`).
    Tcp,
    /// QUIC (`q`), the ClientHello taken from the Initial packets' CRYPTO frames.
    Quic,
}

/// Length of a JA4 string.
pub const JA4_LEN: usize = 36;

/// Most cipher suites or extensions a fingerprint sorts. A real client offers well under
/// 100 of each; a hello within [`super::MAX_HANDSHAKE`] (4 KiB) bytes cannot hold more
/// than ~2000 suites, so only a hostile hello handed straight to [`ja4`] reaches this, and
/// it gets no fingerprint.
pub const MAX_SORTED: usize = 2048;

/// A JA4 fingerprint: 36 ASCII bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Ja4(#[serde(with = "serde_big_array::BigArray")] pub [u8; JA4_LEN]);

impl Ja4 {
    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Ja4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two characters JA4 gives a TLS version.
pub fn version_code(v: u16) -> [u8; 2] {
    match v {
        0x0304 => *b"13",
        0x0303 => *b"12",
        0x0302 => *b"11",
        0x0301 => *b"10",
        0x0300 => *b"s3",
        0x0002 => *b"s2",
        0xfeff => *b"d1",
        0xfefd => *b"d2",
        0xfefc => *b"d3",
        _ => *b"00",
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The JA4 of a ClientHello; `None` only past [`MAX_SORTED`] suites or extensions.
pub fn ja4(h: &ClientHello<'_>, transport: Transport) -> Option<Ja4> {
    let mut out = [b'0'; JA4_LEN];
    let mut suites = [0u16; MAX_SORTED];
    let mut n_suites = 0usize;
    for s in h.suites().filter(|s| !is_grease(*s)) {
        *suites.get_mut(n_suites)? = s;
        n_suites += 1;
    }
    let mut exts = [0u16; MAX_SORTED];
    let (mut n_exts, mut n_all) = (0usize, 0usize);
    let mut sni = false;
    for e in h.extension_types().filter(|e| !is_grease(*e)) {
        n_all += 1;
        match e {
            0 => sni = true,
            16 => {}
            _ => {
                *exts.get_mut(n_exts)? = e;
                n_exts += 1;
            }
        }
    }
    out[0] = match transport {
        Transport::Tcp => b't',
        Transport::Quic => b'q',
    };
    out[1..3].copy_from_slice(&version_code(h.version()));
    out[3] = if sni { b'd' } else { b'i' };
    out[4..6].copy_from_slice(&two_digits(n_suites));
    out[6..8].copy_from_slice(&two_digits(n_all));
    out[8..10].copy_from_slice(&alpn_chars(h.first_alpn()));
    out[10] = b'_';
    out[23] = b'_';
    let suites = suites.get_mut(..n_suites)?;
    suites.sort_unstable();
    if !suites.is_empty() {
        let mut sha = Sha256::new();
        hash_list(&mut sha, suites.iter().copied());
        put_hash(&mut out[11..23], sha);
    }
    let exts = exts.get_mut(..n_exts)?;
    exts.sort_unstable();
    if !exts.is_empty() {
        let mut sha = Sha256::new();
        hash_list(&mut sha, exts.iter().copied());
        if h.signature_algorithms().next().is_some() {
            sha.update(b"_");
            hash_list(&mut sha, h.signature_algorithms());
        }
        put_hash(&mut out[24..36], sha);
    }
    Some(Ja4(out))
}

fn two_digits(n: usize) -> [u8; 2] {
    let n = n.min(99) as u8;
    [b'0' + n / 10, b'0' + n % 10]
}

/// First and last character of the first ALPN value; when either is not an ASCII letter or
/// digit, the first hex digit of its first byte and the last hex digit of its last byte.
fn alpn_chars(alpn: Option<&[u8]>) -> [u8; 2] {
    let Some((&first, rest)) = alpn.and_then(|a| a.split_first()) else {
        return *b"00";
    };
    let last = rest.last().copied().unwrap_or(first);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        [first, last]
    } else {
        [HEX[usize::from(first >> 4)], HEX[usize::from(last & 0xf)]]
    }
}

fn hash_list(sha: &mut Sha256, list: impl Iterator<Item = u16>) {
    for (i, v) in list.enumerate() {
        if i > 0 {
            sha.update(b",");
        }
        let b = v.to_be_bytes();
        sha.update([
            HEX[usize::from(b[0] >> 4)],
            HEX[usize::from(b[0] & 0xf)],
            HEX[usize::from(b[1] >> 4)],
            HEX[usize::from(b[1] & 0xf)],
        ]);
    }
}

fn put_hash(out: &mut [u8], sha: Sha256) {
    let d = sha.finalize();
    for (i, o) in out.iter_mut().enumerate() {
        let byte = d.get(i / 2).copied().unwrap_or(0);
        *o = HEX[usize::from(if i % 2 == 0 { byte >> 4 } else { byte & 0xf })];
    }
}
