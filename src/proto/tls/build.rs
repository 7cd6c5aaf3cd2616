//! ClientHello bytes from a description, for the capture generator (`outflow-gen`) and the
//! tests: the inverse of [`super::parse_client_hello`]. Not used on the packet path.

/// What to put in a ClientHello.
#[derive(Clone, Copy, Debug)]
pub struct HelloSpec<'a> {
    /// server_name host_name (written where extension 0 appears in `extensions`).
    pub sni: Option<&'a [u8]>,
    /// ALPN protocol names (extension 16).
    pub alpn: &'a [&'a [u8]],
    /// Cipher suites, in order.
    pub suites: &'a [u16],
    /// Extension types, in order. 0, 16, 13 and 43, and 10 and 11 when their lists are not
    /// empty, get their bodies from the other fields; any other type is written with an
    /// empty body.
    pub extensions: &'a [u16],
    /// signature_algorithms (extension 13).
    pub sig_algs: &'a [u16],
    /// supported_versions (extension 43).
    pub versions: &'a [u16],
    /// supported_groups (extension 10); empty: an empty body, as before the field existed,
    /// so the bytes of generated sessions stay as they were.
    pub groups: &'a [u16],
    /// ec_point_formats (extension 11); empty: an empty body.
    pub point_formats: &'a [u8],
}

/// The JA4 specification's example hello (FoxIO README): fingerprint
/// `t13d1516h2_8daaf6152771_e5627efa2ab1`, with the given name.
pub fn example_spec(sni: &[u8]) -> HelloSpec<'_> {
    HelloSpec {
        sni: Some(sni),
        alpn: &[b"h2", b"http/1.1"],
        suites: &[
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: &[
            0x0000, 0x0017, 0xff01, 0x000a, 0x000b, 0x0023, 0x0010, 0x0005, 0x000d, 0x0012, 0x0033,
            0x002d, 0x002b, 0x001b, 0x0015, 0x4469,
        ],
        sig_algs: &[
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ],
        versions: &[0x0a0a, 0x0304, 0x0303],
        groups: &[],
        point_formats: &[],
    }
}

/// A QUIC client's hello (TLS 1.3 only, ALPN h3, quic_transport_parameters), with the
/// given name: what the tests put in generated QUIC Initials.
pub fn quic_spec(sni: &[u8]) -> HelloSpec<'_> {
    HelloSpec {
        sni: Some(sni),
        alpn: &[b"h3"],
        suites: &[0x1301, 0x1302, 0x1303],
        extensions: &[0x0000, 0x0010, 0x000d, 0x002b, 0x0039],
        sig_algs: &[0x0403, 0x0804],
        versions: &[0x0304],
        groups: &[],
        point_formats: &[],
    }
}

fn put16(v: &mut Vec<u8>, x: usize) {
    v.extend_from_slice(&(x as u16).to_be_bytes());
}

/// The handshake message (type 1, length, body).
pub fn client_hello(s: &HelloSpec<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(11)));
    put16(&mut body, s.suites.len() * 2);
    for c in s.suites {
        body.extend_from_slice(&c.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    for &t in s.extensions {
        let mut d = Vec::new();
        match t {
            0 => {
                let n = s.sni.unwrap_or(&[]);
                put16(&mut d, n.len() + 3);
                d.push(0);
                put16(&mut d, n.len());
                d.extend_from_slice(n);
            }
            16 => {
                let len: usize = s.alpn.iter().map(|a| a.len() + 1).sum();
                put16(&mut d, len);
                for a in s.alpn {
                    d.push(a.len() as u8);
                    d.extend_from_slice(a);
                }
            }
            13 => {
                put16(&mut d, s.sig_algs.len() * 2);
                for a in s.sig_algs {
                    d.extend_from_slice(&a.to_be_bytes());
                }
            }
            10 if !s.groups.is_empty() => {
                put16(&mut d, s.groups.len() * 2);
                for g in s.groups {
                    d.extend_from_slice(&g.to_be_bytes());
                }
            }
            11 if !s.point_formats.is_empty() => {
                d.push(s.point_formats.len() as u8);
                d.extend_from_slice(s.point_formats);
            }
            43 => {
                d.push((s.versions.len() * 2) as u8);
                for v in s.versions {
                    d.extend_from_slice(&v.to_be_bytes());
                }
            }
            _ => {}
        }
        exts.extend_from_slice(&t.to_be_bytes());
        put16(&mut exts, d.len());
        exts.extend_from_slice(&d);
    }
    put16(&mut body, exts.len());
    body.extend_from_slice(&exts);
    let mut m = vec![1, 0, 0, 0];
    m[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(&body);
    m
}

/// `msg` in TLS handshake records of at most `max_fragment` bytes each.
pub fn records(msg: &[u8], max_fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in msg.chunks(max_fragment.max(1)) {
        out.extend_from_slice(&[22, 3, 1]);
        put16(&mut out, c.len());
        out.extend_from_slice(c);
    }
    out
}
