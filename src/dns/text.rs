//! How DNS bytes become log text, on the output thread (this module allocates; the worker
//! never calls it).
//!
//! Label bytes and TXT character-strings are arbitrary octets (RFC 2181 §11): tunnels such
//! as iodine put raw binary in query names. They are written the way Zeek writes them in
//! dns.log: printable ASCII as is, every other byte as `\xNN`, and the backslash itself as
//! `\\`, so the text is readable, lossless and unambiguous (U+FFFD replacement would lose the
//! bytes and make distinct names look alike). Rdata we do not decode is shown as hex, bounded.

use std::fmt::Write as _;

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

/// TXT (or SPF: `type_text`) rdata as Zeek's dns.log writes it: `TXT <len> <string>` per
/// character-string, joined by spaces, strings escaped. `kept` is the first bytes of `total`; a cut record ends with
/// ` ... (<total> bytes)` (its last string may then be shorter than its length says).
pub fn txt(type_text: &str, kept: &[u8], total: usize) -> String {
    let mut out = String::with_capacity(kept.len() + 8);
    let mut rest = kept;
    while let Some((&len, tail)) = rest.split_first() {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{type_text} {len} ");
        let (s, next) = tail.split_at(usize::from(len).min(tail.len()));
        escape_into(&mut out, s);
        rest = next;
    }
    if kept.len() < total {
        let _ = write!(out, " ... ({total} bytes)");
    }
    out
}

/// Rdata shown as hex: `<TYPE> <total> bytes <hex>`, ending in `...` when only the first
/// bytes were kept.
pub fn hex_rdata(type_text: &str, kept: &[u8], total: usize) -> String {
    let mut out = String::with_capacity(type_text.len() + 16 + 2 * kept.len());
    let _ = write!(out, "{type_text} {total} bytes ");
    hex_into(&mut out, kept);
    if kept.len() < total {
        out.push_str("...");
    }
    out
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
    fn txt_strings_as_zeek_writes_them() {
        assert_eq!(
            txt("TXT", b"\x03v=1\x00\x02a\x01", 8),
            "TXT 3 v=1 TXT 0  TXT 2 a\\x01"
        );
        // Cut after 4 of 10 bytes: the string says 9, 3 bytes of it were kept.
        assert_eq!(txt("SPF", b"\x09abc", 10), "SPF 9 abc ... (10 bytes)");
    }

    #[test]
    fn rdata_as_bounded_hex() {
        assert_eq!(hex_rdata("NULL", &[0xde, 0xad], 2), "NULL 2 bytes dead");
        assert_eq!(
            hex_rdata("TYPE65534", &[1, 2], 300),
            "TYPE65534 300 bytes 0102..."
        );
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        let mut s = String::new();
        hex_into(&mut s, &[0x00, 0xab, 0x7f]);
        assert_eq!(s, "00ab7f");
    }
}
