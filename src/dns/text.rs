//! How DNS bytes become log text, on the output thread (this module allocates; the worker
//! never calls it).
//!
//! Label bytes and TXT character-strings are arbitrary octets (RFC 2181 §11): tunnels such
//! as iodine put raw binary in query names. They are written the way Zeek writes them in
//! dns.log: printable ASCII as is, every other byte as `\xNN`, and the backslash itself as
//! `\\`, so the text is readable, lossless and unambiguous (U+FFFD replacement would lose the
//! bytes and make distinct names look alike). Rdata we do not decode is shown as hex, bounded.

use std::fmt::Write as _;

/// Rdata bytes shown as hex for NULL and unknown types: enough to recognise a tunnel's
/// framing or a known signature, while a 64 KiB record cannot bloat a log line.
pub const HEX_MAX: usize = 64;

/// Appends `bytes` to `out`, printable ASCII as is, `\` as `\\`, anything else as `\xNN`.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// `bytes` escaped as by [`escape_into`].
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_into(&mut s, bytes);
    s
}

/// A dotted name (no trailing dot) as log text: escaped, and the root as `.` (RFC 1035 §3.1
/// writes the root as a lone dot; an empty field would read as "no name").
pub fn name(dotted: &[u8]) -> String {
    if dotted.is_empty() {
        return ".".to_string();
    }
    escape(dotted)
}

/// Appends the lowercase hex of `bytes` to `out`.
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_bytes_stay_others_are_escaped() {
        assert_eq!(escape(b"www.Example.com"), "www.Example.com");
        // Bytes of an iodine upstream label (base128: 0xbc..0xfd) and a control byte.
        assert_eq!(escape(b"a\xbc\xfd\x00z"), "a\\xbc\\xfd\\x00z");
        assert_eq!(escape(b"back\\slash \x7f"), "back\\\\slash \\x7f");
    }

    #[test]
    fn the_root_is_a_dot() {
        assert_eq!(name(b""), ".");
        assert_eq!(name(b"com"), "com");
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        let mut s = String::new();
        hex_into(&mut s, &[0x00, 0xab, 0x7f]);
        assert_eq!(s, "00ab7f");
    }
}
