//! A bounded, zero-copy TLS ClientHello parser (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2).
//!
//! [`parse_client_hello`] reads one handshake message (type 1, its 3-byte length, the
//! body) and returns views into it: every length read off the wire is checked once against
//! the bytes that remain, after which the accessors cannot fail. Nothing here allocates;
//! lists (cipher suites, extensions, ALPN, supported versions, groups) are walked as slices.
//!
//! [`hello_from_stream`] finds that handshake message in a client's TCP byte stream, which
//! wraps it in TLS records (RFC 8446 §5.1): in one record (the usual case, parsed in place)
//! or fragmented over several (copied once into a caller-owned scratch buffer).

/// Why a ClientHello was not parsed. `Copy` and data-less, so a caller can count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TlsError {
    /// The bytes end before the message (or record) does: wait for more, if any come.
    #[error("truncated")]
    Truncated,
    /// Not a handshake record / not a ClientHello.
    #[error("not a client hello")]
    NotClientHello,
    /// A length inside the message overruns its container.
    #[error("bad length")]
    BadLength,
    /// The handshake message is longer than [`MAX_HANDSHAKE`].
    #[error("too long")]
    TooLong,
}

/// Largest ClientHello we reassemble from several records: 4 KiB less a record header.
/// Browsers send ~0.5–2 KiB (a post-quantum key share included, padding to 512 bytes at
/// most); a longer hello is hostile or exotic, and its server name is not worth more memory
/// per in-progress handshake.
pub const MAX_HANDSHAKE: usize = 4096 - 5;

/// TLS record content type of handshake messages (RFC 8446 §5.1).
pub const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
pub const CLIENT_HELLO: u8 = 1;

/// Extension numbers the parser reads (IANA "TLS ExtensionType Values").
pub mod ext {
    /// server_name (RFC 6066 §3).
    pub const SERVER_NAME: u16 = 0;
    /// supported_groups, named elliptic_curves before TLS 1.3 (RFC 8446 §4.2.7,
    /// RFC 8422 §5.1.1).
    pub const SUPPORTED_GROUPS: u16 = 10;
    /// ec_point_formats (RFC 8422 §5.1.2).
    pub const EC_POINT_FORMATS: u16 = 11;
    /// application_layer_protocol_negotiation (RFC 7301).
    pub const ALPN: u16 = 16;
    /// signature_algorithms (RFC 8446 §4.2.3).
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    /// supported_versions (RFC 8446 §4.2.1).
    pub const SUPPORTED_VERSIONS: u16 = 43;
}

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal. Ignored in versions, suites,
/// extensions and fingerprints.
#[inline]
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// A parsed ClientHello: views into the handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The cipher suites, 2 bytes each, in the client's order.
    pub cipher_suites: &'a [u8],
    /// The extensions block (type, length, data ...), already checked to split exactly.
    pub extensions: &'a [u8],
    /// The host_name of the server_name extension, if any (raw bytes, unchecked text).
    pub server_name: Option<&'a [u8]>,
    /// The ALPN protocol_name_list (each a length byte and name), checked; `None` without
    /// the extension.
    pub alpn: Option<&'a [u8]>,
    /// The supported_versions list (2 bytes each), checked.
    pub supported_versions: Option<&'a [u8]>,
    /// The signature_algorithms list (2 bytes each), checked.
    pub signature_algorithms: Option<&'a [u8]>,
    /// The supported_groups (elliptic_curves) list (2 bytes each), checked.
    pub supported_groups: Option<&'a [u8]>,
    /// The ec_point_formats list (1 byte each).
    pub ec_point_formats: Option<&'a [u8]>,
}

/// A cursor over a checked slice: each read checks the length once.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, TlsError> {
        let (&v, rest) = self.b.split_first().ok_or(TlsError::BadLength)?;
        self.b = rest;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, TlsError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TlsError> {
        if n > self.b.len() {
            return Err(TlsError::BadLength);
        }
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(v)
    }
    fn vec8(&mut self) -> Result<&'a [u8], TlsError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Result<&'a [u8], TlsError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Parses a handshake message that must be a ClientHello: `msg` starts with its type byte
/// (1) and 3-byte length. Bytes after the message are ignored. [`TlsError::Truncated`]
/// when `msg` ends before the length says the message does.
///
/// This is the entry point for QUIC too: the CRYPTO frames of a client's Initial packets
/// carry the same message without TLS records (RFC 9001 §4.3).
pub fn parse_client_hello(msg: &[u8]) -> Result<ClientHello<'_>, TlsError> {
    let (&typ, rest) = msg.split_first().ok_or(TlsError::Truncated)?;
    if typ != CLIENT_HELLO {
        return Err(TlsError::NotClientHello);
    }
    let len = match rest {
        [a, b, c, ..] => usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c),
        _ => return Err(TlsError::Truncated),
    };
    // A ClientHello's fixed part alone is 38 bytes (version, random, three length fields).
    if len < 38 {
        return Err(TlsError::BadLength);
    }
    let body = rest.get(3..3 + len).ok_or(TlsError::Truncated)?;
    let mut r = Reader { b: body };
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let sid = r.vec8()?;
    if sid.len() > 32 {
        return Err(TlsError::BadLength);
    }
    let cipher_suites = r.vec16()?;
    if cipher_suites.len() % 2 != 0 {
        return Err(TlsError::BadLength);
    }
    r.vec8()?; // compression methods
               // No extensions block at all is legal before TLS 1.3 (SSLv3-era hellos).
    let extensions = if r.b.is_empty() { &[][..] } else { r.vec16()? };
    let mut h = ClientHello {
        legacy_version,
        cipher_suites,
        extensions,
        server_name: None,
        alpn: None,
        supported_versions: None,
        signature_algorithms: None,
        supported_groups: None,
        ec_point_formats: None,
    };
    let mut e = Reader { b: extensions };
    while !e.b.is_empty() {
        let typ = e.u16()?;
        let data = e.vec16()?;
        match typ {
            ext::SERVER_NAME if h.server_name.is_none() => h.server_name = sni(data),
            ext::ALPN if h.alpn.is_none() => h.alpn = alpn_list(data),
            ext::SUPPORTED_VERSIONS if h.supported_versions.is_none() => {
                h.supported_versions = even(Reader { b: data }.vec8().ok());
            }
            ext::SIGNATURE_ALGORITHMS if h.signature_algorithms.is_none() => {
                h.signature_algorithms = even(Reader { b: data }.vec16().ok());
            }
            ext::SUPPORTED_GROUPS if h.supported_groups.is_none() => {
                h.supported_groups = even(Reader { b: data }.vec16().ok());
            }
            ext::EC_POINT_FORMATS if h.ec_point_formats.is_none() => {
                h.ec_point_formats = Reader { b: data }.vec8().ok();
            }
            _ => {}
        }
    }
    Ok(h)
}

fn even(s: Option<&[u8]>) -> Option<&[u8]> {
    s.filter(|s| s.len() % 2 == 0)
}

/// The first host_name (type 0) of a server_name extension (RFC 6066 §3); an empty name is
/// no name.
fn sni(data: &[u8]) -> Option<&[u8]> {
    let mut list = Reader {
        b: Reader { b: data }.vec16().ok()?,
    };
    while !list.b.is_empty() {
        let typ = list.u8().ok()?;
        let name = list.vec16().ok()?;
        if typ == 0 {
            return (!name.is_empty()).then_some(name);
        }
    }
    None
}

/// The protocol_name_list of an ALPN extension, checked to split into names.
fn alpn_list(data: &[u8]) -> Option<&[u8]> {
    let list = Reader { b: data }.vec16().ok()?;
    let mut r = Reader { b: list };
    while !r.b.is_empty() {
        r.vec8().ok()?;
    }
    Some(list)
}

impl<'a> ClientHello<'a> {
    /// The cipher suites as numbers.
    pub fn suites(&self) -> impl Iterator<Item = u16> + 'a {
        pairs(self.cipher_suites)
    }

    /// The extension types, in the client's order (GREASE included).
    pub fn extension_types(&self) -> impl Iterator<Item = u16> + 'a {
        let mut r = Reader { b: self.extensions };
        std::iter::from_fn(move || {
            let t = r.u16().ok()?;
            r.vec16().ok()?;
            Some(t)
        })
    }

    /// The signature algorithms, in the client's order.
    pub fn signature_algorithms(&self) -> impl Iterator<Item = u16> + 'a {
        pairs(self.signature_algorithms.unwrap_or(&[]))
    }

    /// The supported groups (named curves), in the client's order (GREASE included).
    pub fn supported_groups(&self) -> impl Iterator<Item = u16> + 'a {
        pairs(self.supported_groups.unwrap_or(&[]))
    }

    /// The EC point formats, in the client's order.
    pub fn ec_point_formats(&self) -> impl Iterator<Item = u8> + 'a {
        self.ec_point_formats.unwrap_or(&[]).iter().copied()
    }

    /// The ALPN protocol names, in the client's order.
    pub fn alpn_protocols(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader {
            b: self.alpn.unwrap_or(&[]),
        };
        std::iter::from_fn(move || r.vec8().ok())
    }

    /// The first ALPN protocol name offered.
    pub fn first_alpn(&self) -> Option<&'a [u8]> {
        self.alpn_protocols().next()
    }

    /// The highest version offered: the largest non-GREASE entry of supported_versions,
    /// or `legacy_version` without that extension. TLS 1.3 drafts (0x7fxx) rank below 1.3
    /// but above 1.2 (the version they would become).
    pub fn version(&self) -> u16 {
        let rank = |v: u16| match v {
            0x7f00..=0x7fff => 0x0303_8000u32 | u32::from(v & 0xff),
            _ => u32::from(v) << 16,
        };
        pairs(self.supported_versions.unwrap_or(&[]))
            .filter(|v| !is_grease(*v))
            .max_by_key(|v| rank(*v))
            .unwrap_or(self.legacy_version)
    }
}

fn pairs(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// How far a client's TLS byte stream has got towards a whole ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// Not TLS: the first record is not a handshake record of a TLS/SSL 3 version.
    NotTls,
    /// A handshake record begins, the ClientHello is not complete yet.
    NeedMore,
}

/// Finds the ClientHello at the start of a client's TCP byte stream (TLS records). When the
/// message lies in the first record, it is parsed in place; when records fragment it
/// (RFC 8446 §5.1 allows any split), their fragments are copied into `scratch` (which must
/// hold [`MAX_HANDSHAKE`] bytes) and it is parsed there.
///
/// `Err(Ok(NeedMore))` when the stream stops before the message ends, `Err(Ok(NotTls))`
/// when it is not a TLS handshake, `Err(Err(e))` for a malformed hello.
pub fn hello_from_stream<'a>(
    stream: &'a [u8],
    scratch: &'a mut [u8],
) -> Result<ClientHello<'a>, Result<StreamStatus, TlsError>> {
    let mut r = Reader { b: stream };
    let mut filled = 0usize;
    let mut need: Option<usize> = None;
    let mut first = true;
    loop {
        let Some(hdr) = r.b.get(..5) else {
            return Err(if first && !stream.is_empty() && !looks_tls(stream) {
                Ok(StreamStatus::NotTls)
            } else {
                Ok(StreamStatus::NeedMore)
            });
        };
        if !looks_tls(hdr) {
            return Err(if first {
                Ok(StreamStatus::NotTls)
            } else {
                Err(TlsError::NotClientHello)
            });
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        r.b = r.b.get(5..).unwrap_or(&[]);
        let avail = r.b.len().min(len);
        let frag = r.b.get(..avail).unwrap_or(&[]);
        if first {
            // The message's own length, from its 4-byte header once we have it.
            if let [1, a, b, c, ..] = *frag {
                let n = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
                if n <= frag.len() {
                    return parse_client_hello(frag).map_err(Err);
                }
                if n > MAX_HANDSHAKE || n > scratch.len() {
                    return Err(Err(TlsError::TooLong));
                }
                need = Some(n);
            } else if frag.first().is_some_and(|&t| t != CLIENT_HELLO) {
                return Err(Ok(StreamStatus::NotTls));
            }
            first = false;
        }
        let room = scratch.len().saturating_sub(filled);
        let take = frag.len().min(room);
        if let (Some(dst), Some(src)) = (scratch.get_mut(filled..filled + take), frag.get(..take)) {
            dst.copy_from_slice(src);
        }
        filled += take;
        if need.is_none() {
            if let [1, a, b, c, ..] = *scratch.get(..filled).unwrap_or(&[]) {
                let n = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
                if n > MAX_HANDSHAKE || n > scratch.len() {
                    return Err(Err(TlsError::TooLong));
                }
                need = Some(n);
            }
        }
        if let Some(n) = need {
            if filled >= n {
                return parse_client_hello(&scratch[..filled]).map_err(Err);
            }
        }
        if avail < len {
            return Err(Ok(StreamStatus::NeedMore));
        }
        r.b = r.b.get(len..).unwrap_or(&[]);
    }
}

/// Whether bytes start like a TLS handshake record: content type 22, version 3.x (SSL 3 to
/// TLS 1.3 all say 3.0–3.4 here). Checks only the bytes present.
pub fn looks_tls(b: &[u8]) -> bool {
    b.first().is_none_or(|&t| t == CONTENT_HANDSHAKE)
        && b.get(1).is_none_or(|&v| v == 3)
        && b.get(2).is_none_or(|&v| v <= 4)
}
