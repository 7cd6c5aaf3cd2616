//! The protocols the worker taps for names: one folder per protocol, each a bounded
//! zero-copy parser plus the extraction of the few fields we keep ([`tls`], [`http`],
//! [`quic`] Initial decryption for the ClientHello inside), and
//! the per-worker TCP tap ([`tap`]) that feeds them a client's first bytes.
//!
//! What is kept per flow is [`FlowNames`]; a flow's name, once found, also goes to the
//! cross-flow stage as a [`FlowName`] so `dst_fqdn` can fall back to it.
//!
//! Nothing here reads the clock, locks, or allocates per packet: the tap's reassembly
//! buffers are allocated at start, and a flow's [`FlowNames`] box once per named flow.

pub mod http;
pub mod quic;
pub mod tap;
pub mod tls;

use crate::decode::Addr;

/// A short text kept in place (no allocation): `N` bytes at most, longer input cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    len: u16,
    buf: [u8; N],
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text {
            len: 0,
            buf: [0; N],
        }
    }
}

impl<const N: usize> Text<N> {
    /// `b`, cut to `N` bytes.
    pub fn new(b: &[u8]) -> Self {
        let mut t = Text::default();
        let n = b.len().min(N);
        if let (Some(d), Some(s)) = (t.buf.get_mut(..n), b.get(..n)) {
            d.copy_from_slice(s);
        }
        t.len = n as u16;
        t
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes if not empty.
    pub fn get(&self) -> Option<&[u8]> {
        (!self.is_empty()).then(|| self.as_bytes())
    }
}

// On the event bus a text is its bytes, length first, not its whole `N`-byte buffer (most
// names are far shorter than 255 bytes). That is exact: `Text::new` and `Default` leave the
// buffer past `len` zeroed, and nothing else writes it, so the text rebuilt from the bytes
// compares equal. A decoder refuses more than `N` bytes rather than cutting them, so a
// corrupt length is an error and not a different text.
impl<const N: usize> serde::Serialize for Text<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Text<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(TextVisitor::<N>)
    }
}

/// Builds a [`Text`] from bytes, or from a sequence of byte values (what self-describing
/// formats such as JSON make of bytes).
struct TextVisitor<const N: usize>;

impl<'de, const N: usize> serde::de::Visitor<'de> for TextVisitor<N> {
    type Value = Text<N>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at most {N} bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Text<N>, E> {
        if v.len() > N {
            return Err(E::invalid_length(v.len(), &self));
        }
        Ok(Text::new(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Text<N>, A::Error> {
        let mut t = Text::<N>::default();
        let mut n = 0usize;
        while let Some(b) = seq.next_element::<u8>()? {
            match t.buf.get_mut(n) {
                Some(slot) => *slot = b,
                None => return Err(serde::de::Error::invalid_length(n + 1, &self)),
            }
            n += 1;
        }
        // `n` <= N <= u16::MAX for every text kept (NAME_MAX is the largest).
        t.len = u16::try_from(n).map_err(|_| serde::de::Error::invalid_length(n, &self))?;
        Ok(t)
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Longest name kept: a DNS name is at most 253 characters in text (RFC 1035 §2.3.4); a
/// longer SNI or Host is cut.
pub const NAME_MAX: usize = 255;
/// Bytes of the first ALPN value kept (registered ids are at most 17 bytes, `http/1.1`).
pub const ALPN_MAX: usize = 32;

/// What the worker found in a flow's first client bytes (see `FlowRecord::names`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowNames {
    /// TLS SNI host_name (or, from the QUIC tap, the QUIC ClientHello's).
    pub server_name: Text<NAME_MAX>,
    /// The first ALPN protocol offered.
    pub alpn: Text<ALPN_MAX>,
    /// JA4 fingerprint of the ClientHello.
    pub ja4: Option<tls::Ja4>,
    /// JA3 fingerprint (MD5 hex) of the ClientHello, TCP or QUIC alike. Only the hash: see
    /// [the `ja3` module](mod@tls::ja3) for why the JA3 string is not kept.
    pub ja3: Option<tls::Ja3>,
    /// Highest TLS version the client offered.
    pub tls_version: Option<u16>,
    /// The ClientHello came in a QUIC Initial (the name's source is `quic_sni`).
    pub quic: bool,
    /// HTTP/1.x Host header of the first request.
    pub http_host: Text<NAME_MAX>,
    /// Its method.
    pub http_method: Text<{ http::MAX_METHOD }>,
    /// The first bytes of its request target.
    pub http_uri: Text<{ http::URI_KEEP }>,
    /// Its Content-Length.
    pub http_content_length: Option<u64>,
}

impl FlowNames {
    /// The fields of a ClientHello.
    pub fn from_hello(h: &tls::ClientHello<'_>, transport: tls::Transport) -> FlowNames {
        FlowNames {
            server_name: Text::new(h.server_name.unwrap_or(&[])),
            alpn: Text::new(h.first_alpn().unwrap_or(&[])),
            ja4: tls::ja4(h, transport),
            ja3: Some(tls::ja3(h)),
            tls_version: Some(h.version()),
            quic: transport == tls::Transport::Quic,
            ..FlowNames::default()
        }
    }

    /// The fields of a request head.
    pub fn from_request(r: &http::Request<'_>) -> FlowNames {
        FlowNames {
            http_host: Text::new(r.host.unwrap_or(&[])),
            http_method: Text::new(r.method),
            http_uri: Text::new(r.uri),
            http_content_length: r.content_length,
            ..FlowNames::default()
        }
    }

    /// The destination name these fields give, and where it came from.
    pub fn name(&self) -> Option<(&[u8], NameSource)> {
        if let Some(n) = self.server_name.get() {
            let src = if self.quic {
                NameSource::QuicSni
            } else {
                NameSource::Sni
            };
            return Some((n, src));
        }
        // `Host: :80` leaves no name once the port is taken off (found by the
        // `http_request` fuzz target): no name rather than an empty one.
        self.http_host
            .get()
            .map(host_only)
            .filter(|h| !h.is_empty())
            .map(|h| (h, NameSource::HttpHost))
    }

    /// `tls_version` as text.
    pub fn tls_version_name(&self) -> Option<&'static str> {
        self.tls_version.map(tls::version_name)
    }
}

/// A Host header without its port (`example.com:8080`, `[::1]:80`).
pub fn host_only(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        return h;
    }
    match h.iter().rposition(|&c| c == b':') {
        Some(i)
            if h.get(i + 1..)
                .is_some_and(|p| p.iter().all(u8::is_ascii_digit)) =>
        {
            h.get(..i).unwrap_or(h)
        }
        _ => h,
    }
}

/// Where a destination name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NameSource {
    /// A DNS answer the client received.
    Dns,
    /// TLS server_name.
    Sni,
    /// HTTP Host header.
    HttpHost,
    /// The server_name of a ClientHello in a QUIC Initial.
    QuicSni,
}

impl NameSource {
    /// Every source, in a stable order.
    pub const ALL: [NameSource; 4] = [
        NameSource::Dns,
        NameSource::Sni,
        NameSource::HttpHost,
        NameSource::QuicSni,
    ];

    /// The source whose [`NameSource::name`] is `name`.
    pub fn from_name(name: &str) -> Option<NameSource> {
        NameSource::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Stable name used in JSON (`dst_fqdn_source`).
    pub fn name(self) -> &'static str {
        match self {
            NameSource::Dns => "dns",
            NameSource::Sni => "sni",
            NameSource::HttpHost => "http_host",
            NameSource::QuicSni => "quic_sni",
        }
    }
}

/// A flow's destination name, as the worker found it: sent once per named flow so the
/// cross-flow stage learns (client, server) → name when no DNS answer named the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowName {
    /// Timestamp of the packet that completed the name (ns).
    pub ts_ns: u64,
    /// The flow.
    pub flow_id: u64,
    /// Address family.
    pub ipv6: bool,
    /// The client (the flow's originator).
    pub client: Addr,
    /// The server.
    pub server: Addr,
    /// Its port.
    pub server_port: u16,
    /// The name (SNI, or Host without its port).
    pub name: Text<NAME_MAX>,
    /// Where it came from.
    pub source: NameSource,
}
