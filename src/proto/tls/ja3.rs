//! JA3 client fingerprints (Salesforce, <https://github.com/salesforce/ja3>): the MD5 of
//! `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`, e.g.
//! `771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2` →
//! `0e870cb29dd59424064948532781a7f6` (suricata-verify `tls13-draft19`).
//!
//! - `SSLVersion`: the ClientHello's `legacy_version` field, not supported_versions (a TLS
//!   1.3 client says 771, as Suricata and Zeek's ja3 package print it);
//! - the four lists: values in decimal joined by `-`, in the client's (wire) order: the
//!   cipher suites, the extension types, the supported_groups (elliptic_curves, extension
//!   10) and the ec_point_formats (extension 11); GREASE values (RFC 8701) left out of the
//!   first three; a list the hello lacks (or whose extension does not split into 2-byte
//!   values) is an empty field, so a hello without extensions ends in `,,,`.
//!
//! MD5 because the spec defines the fingerprint as the MD5 of that string: Suricata's
//! `ja3.hash`, Zeek's ja3 package and threat feeds (abuse.ch SSLBL) all key on it. It is an
//! identifier, not a security function.
//!
//! Built without allocation: the string is written piece by piece straight into the hash
//! ([`write_string`]), so only the 32 hex digits are kept ([`Ja3`]). The string itself is
//! not carried on the flow: its length follows the hello's lists (up to ~12 KB for a hello
//! of [`super::MAX_HANDSHAKE`] bytes of 5-digit suites), so a bounded copy would have to be
//! cut, and a cut string no longer matches its hash; the hello is gone once the flow is
//! named. The hash is what rules and feeds match; [`ja3_string`] gives the string to tests
//! and tools that hold a hello.

use super::parser::{is_grease, ClientHello};
use md5::{Digest, Md5};

/// Length of a JA3 hash in hex.
pub const JA3_LEN: usize = 32;

/// A JA3 fingerprint: the MD5 of the JA3 string as 32 lower-case hex ASCII bytes, no
/// allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Ja3(pub [u8; JA3_LEN]);

impl Ja3 {
    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for Ja3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Ja3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The JA3 of a ClientHello. Its cost is one pass over the hello's lists.
pub fn ja3(h: &ClientHello<'_>) -> Ja3 {
    let mut md5 = Md5::new();
    write_string(h, |b| md5.update(b));
    let d = md5.finalize();
    let mut out = [b'0'; JA3_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(d.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    Ja3(out)
}

/// The JA3 string of a ClientHello (allocates: for tests and tools, not the packet path).
pub fn ja3_string(h: &ClientHello<'_>) -> String {
    let mut s = Vec::new();
    write_string(h, |b| s.extend_from_slice(b));
    // Only ASCII digits, `-` and `,` are written.
    String::from_utf8(s).unwrap_or_default()
}

/// Writes the JA3 string of `h` to `out` in pieces (see the module documentation).
pub fn write_string(h: &ClientHello<'_>, mut out: impl FnMut(&[u8])) {
    decimal(h.legacy_version, &mut out);
    out(b",");
    list(h.suites().filter(|v| !is_grease(*v)), &mut out);
    out(b",");
    list(h.extension_types().filter(|v| !is_grease(*v)), &mut out);
    out(b",");
    list(h.supported_groups().filter(|v| !is_grease(*v)), &mut out);
    out(b",");
    // One-byte values: none can be a GREASE value.
    list(h.ec_point_formats().map(u16::from), &mut out);
}

fn list(values: impl Iterator<Item = u16>, out: &mut impl FnMut(&[u8])) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out(b"-");
        }
        decimal(v, out);
    }
}

/// `v` in decimal, from a stack buffer (a u16 has at most 5 digits).
fn decimal(v: u16, out: &mut impl FnMut(&[u8])) {
    let mut buf = [0u8; 5];
    let mut at = buf.len();
    let mut v = v;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        at -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out(buf.get(at..).unwrap_or(&[]));
}
