//! TLS: the client's ClientHello, parsed in place ([`parser`]), and its JA4 and JA3
//! fingerprints ([`ja4()`], [`ja3()`]). Used by the worker's TCP tap and, on decrypted QUIC
//! Initial CRYPTO bytes, by the QUIC tap: [`parse_client_hello`] takes the handshake message
//! itself.

pub mod build;
pub mod ja3;
pub mod ja4;
pub mod parser;

pub use ja3::{ja3, ja3_string, Ja3};
pub use ja4::{ja4, Ja4, Transport};
pub use parser::{
    hello_from_stream, is_grease, parse_client_hello, ClientHello, StreamStatus, TlsError,
    MAX_HANDSHAKE,
};

/// A name for a TLS version as offered (`TLSv13`, `TLSv12`, ..., Zeek's spelling; a TLS 1.3
/// draft as `TLSv13-draft19`; anything else `unknown`).
pub fn version_name(v: u16) -> &'static str {
    const DRAFTS: [&str; 29] = [
        "TLSv13-draft0",
        "TLSv13-draft1",
        "TLSv13-draft2",
        "TLSv13-draft3",
        "TLSv13-draft4",
        "TLSv13-draft5",
        "TLSv13-draft6",
        "TLSv13-draft7",
        "TLSv13-draft8",
        "TLSv13-draft9",
        "TLSv13-draft10",
        "TLSv13-draft11",
        "TLSv13-draft12",
        "TLSv13-draft13",
        "TLSv13-draft14",
        "TLSv13-draft15",
        "TLSv13-draft16",
        "TLSv13-draft17",
        "TLSv13-draft18",
        "TLSv13-draft19",
        "TLSv13-draft20",
        "TLSv13-draft21",
        "TLSv13-draft22",
        "TLSv13-draft23",
        "TLSv13-draft24",
        "TLSv13-draft25",
        "TLSv13-draft26",
        "TLSv13-draft27",
        "TLSv13-draft28",
    ];
    match v {
        0x0304 => "TLSv13",
        0x0303 => "TLSv12",
        0x0302 => "TLSv11",
        0x0301 => "TLSv10",
        0x0300 => "SSLv3",
        0x0002 => "SSLv2",
        0x7f00..=0x7f1c => DRAFTS
            .get(usize::from(v & 0xff))
            .copied()
            .unwrap_or("unknown"),
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
