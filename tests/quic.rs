//! QUIC client Initials from public captures: every connection's client datagrams, fed to
//! `proto::quic::ClientInitials`, give a whole ClientHello whose server name and ALPN equal
//! what Zeek's quic.log / ssl.log and suricata-verify's eve checks say about the same
//! capture. Skipped when `../shared/pcaps` is absent.
//!
//! The ClientHello is read here by a test-only extension walk; the sensor's parser is
//! `proto::tls` (issue 15, TLS).

mod common;

use outflow::decode::{decode, LinkType};
use outflow::proto::quic::{
    ClientInitials, Frame, Frames, HelloStatus, Opener, Packets, QuicError,
};
use std::collections::BTreeMap;

/// The extensions of a ClientHello handshake message (RFC 8446 §4.1.2), in order.
fn extensions(hello: &[u8]) -> Vec<(u16, &[u8])> {
    assert_eq!(hello[0], 1, "not a ClientHello");
    let mut at = 4 + 2 + 32; // header, legacy_version, random
    at += 1 + usize::from(hello[at]); // legacy_session_id
    at += 2 + usize::from(u16::from_be_bytes([hello[at], hello[at + 1]])); // cipher_suites
    at += 1 + usize::from(hello[at]); // legacy_compression_methods
    let end = at + 2 + usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    assert_eq!(end, hello.len(), "extensions end the ClientHello");
    at += 2;
    let mut out = Vec::new();
    while at < end {
        let ty = u16::from_be_bytes([hello[at], hello[at + 1]]);
        let len = usize::from(u16::from_be_bytes([hello[at + 2], hello[at + 3]]));
        out.push((ty, &hello[at + 4..at + 4 + len]));
        at += 4 + len;
    }
    out
}

/// server_name's host_name (RFC 6066 §3).
fn sni(data: &[u8]) -> String {
    assert_eq!(data[2], 0, "host_name");
    let n = usize::from(u16::from_be_bytes([data[3], data[4]]));
    String::from_utf8(data[5..5 + n].to_vec()).unwrap()
}

/// application_layer_protocol_negotiation's names (RFC 7301 §3.1).
fn alpn(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 2;
    while at < data.len() {
        let n = usize::from(data[at]);
        out.push(String::from_utf8(data[at + 1..at + 1 + n].to_vec()).unwrap());
        at += 1 + n;
    }
    out
}

/// What one client connection gave.
#[derive(Debug)]
struct Conn {
    /// The record (1-based, as suricata's `pcap_cnt`) whose datagram completed the hello.
    complete_at: Option<usize>,
    /// Client datagrams fed, and the reasons of those that gave nothing.
    fed: usize,
    errors: Vec<QuicError>,
    hello: Option<Vec<u8>>,
    /// The first client datagram.
    first: Vec<u8>,
}

/// The CRYPTO frames' (offset, length) of the first Initial in a client's first datagram,
/// in the order they were sent.
fn crypto_frames(datagram: &[u8]) -> Vec<(u64, usize)> {
    let p = Packets::new(datagram).next().unwrap().unwrap();
    let o = Opener::client(p.known_version().unwrap(), p.dcid).unwrap();
    let mut buf = [0u8; 4096];
    let opened = o.open(&p, None, &mut buf).unwrap();
    Frames::new(opened.payload)
        .filter_map(|f| match f.unwrap() {
            Frame::Crypto { offset, data } => Some((offset, data.len())),
            _ => None,
        })
        .collect()
}

/// Feeds each client→server UDP datagram of the capture to its connection's
/// `ClientInitials` until the ClientHello is whole. The client of a connection is the side
/// that sent to port 443.
fn client_hellos(rel: &str) -> Option<BTreeMap<String, Conn>> {
    let path = common::shared_pcaps()?.join(rel);
    let (_, recs) = common::pcap_records(&std::fs::read(path).unwrap());
    let mut state: BTreeMap<String, (ClientInitials, Conn)> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        let wire = u32::from_le_bytes(r[12..16].try_into().unwrap());
        let frame = &r[16..];
        let Ok(m) = decode(LinkType::Ethernet, frame, wire) else {
            continue;
        };
        if m.proto != 17 || m.dport != 443 {
            continue;
        }
        let at = usize::from(m.payload_offset);
        let payload = &frame[at..at + m.payload_len as usize];
        let key = format!("{}:{}", m.src.to_ip(m.ipv6), m.sport);
        let (c, conn) = state.entry(key).or_insert_with(|| {
            (
                ClientInitials::new(),
                Conn {
                    complete_at: None,
                    fed: 0,
                    errors: Vec::new(),
                    hello: None,
                    first: payload.to_vec(),
                },
            )
        });
        if conn.complete_at.is_some() {
            continue;
        }
        conn.fed += 1;
        match c.feed(payload) {
            Ok(HelloStatus::Complete) => {
                conn.complete_at = Some(i + 1);
                conn.hello = c.client_hello().map(<[u8]>::to_vec);
            }
            Ok(_) => {}
            Err(e) => conn.errors.push(e),
        }
    }
    Some(state.into_iter().map(|(k, (_, c))| (k, c)).collect())
}

/// The one connection of a capture: its SNI, its ALPN list, the extension types in order.
fn only_hello(rel: &str) -> Option<(Conn, String, Vec<String>, Vec<u16>)> {
    let mut conns = client_hellos(rel)?;
    assert_eq!(conns.len(), 1, "{rel}: {conns:?}");
    let (_, conn) = conns.pop_first().unwrap();
    let hello = conn
        .hello
        .clone()
        .unwrap_or_else(|| panic!("{rel}: {conn:?}"));
    let ext = extensions(&hello);
    let name = sni(ext.iter().find(|e| e.0 == 0).unwrap().1);
    let protos = alpn(ext.iter().find(|e| e.0 == 16).unwrap().1);
    let types = ext.iter().map(|e| e.0).collect();
    Some((conn, name, protos, types))
}

/// suricata-verify `quic-ietf` (a QUIC v1 client of msquic.net): test.yaml checks
/// `quic.extensions[1]` = server_name "msquic.net", `[2]` = alpn "h3-29".
#[test]
fn suricata_quic_ietf() {
    let Some((conn, name, protos, types)) = only_hello("suricata-verify/quic-ietf/input.pcap")
    else {
        return;
    };
    assert_eq!(name, "msquic.net");
    assert_eq!((types[1], types[2]), (0, 16));
    assert_eq!(protos[0], "h3-29");
    assert_eq!(conn.complete_at, Some(1));
}

/// suricata-verify `quic-frag` (Redmine #7556): the ClientHello's CRYPTO frames span the
/// client's first two Initial datagrams; test.yaml checks the event at `pcap_cnt` 2 with
/// `quic.extensions[0]` = status_request and `[4]` = alpn "h3". The server name is not in
/// the test: token.services.mozilla.com is what this ClientHello carries.
#[test]
fn suricata_quic_frag_spans_two_datagrams() {
    let Some((conn, name, protos, types)) = only_hello("suricata-verify/quic-frag/input.pcap")
    else {
        return;
    };
    assert_eq!(conn.complete_at, Some(2), "{conn:?}");
    assert_eq!(conn.fed, 2);
    assert_eq!((types[0], types[4]), (5, 16));
    assert_eq!(protos[0], "h3");
    assert_eq!(name, "token.services.mozilla.com");
}

/// Zeek `scripts/base/protocols/quic/chromium`: quic.log server_name api.cirrus-ci.com,
/// client_protocol h3.
#[test]
fn zeek_quic_chromium() {
    let Some((conn, name, protos, _)) = only_hello(
        "zeek/scripts__base__protocols__quic__chromium/chromium-115.0.5790.110-api-cirrus-com.pcap",
    ) else {
        return;
    };
    assert_eq!(name, "api.cirrus-ci.com");
    assert_eq!(protos, ["h3"]);
    assert_eq!(conn.complete_at, Some(1));
}

/// Zeek `scripts/base/protocols/quic/firefox`: quic.log server_name blog.cloudflare.com,
/// client_protocol h3.
#[test]
fn zeek_quic_firefox() {
    let Some((_, name, protos, _)) = only_hello(
        "zeek/scripts__base__protocols__quic__firefox/firefox-102.13.0esr-blog-cloudflare-com.pcap",
    ) else {
        return;
    };
    assert_eq!(name, "blog.cloudflare.com");
    assert_eq!(protos[0], "h3");
}

/// Zeek `scripts/base/protocols/quic/fragmented-crypto` ("fragmented and unordered CRYPTO
/// frames"): Chrome cut its ClientHello into several CRYPTO frames sent out of order in one
/// Initial; ssl.log server_name www.google.de.
#[test]
fn zeek_quic_fragmented_crypto() {
    let Some((conn, name, _, _)) = only_hello(
        "zeek/scripts__base__protocols__quic__fragmented-crypto/chromium-115.0.5790.110-google-de-fragmented.pcap",
    ) else {
        return;
    };
    assert_eq!(name, "www.google.de");
    assert_eq!(conn.complete_at, Some(1));
    let frames = crypto_frames(&conn.first);
    assert!(frames.len() > 2, "{frames:?}");
    assert!(
        frames.windows(2).any(|w| w[1].0 < w[0].0),
        "unordered: {frames:?}"
    );
    let total: usize = frames.iter().map(|f| f.1).sum();
    assert!(total >= conn.hello.as_ref().unwrap().len());
}

/// The JA3 string of a ClientHello message (Salesforce's spec), read by this file's own
/// walk: legacy_version, then cipher suites, extension types, supported_groups and
/// ec_point_formats in wire order, GREASE (RFC 8701's sixteen values) left out.
fn ja3_string(hello: &[u8]) -> String {
    let grease: Vec<u16> = (0..16).map(|i| 0x0a0a + 0x1010 * i).collect();
    let join = |v: &mut dyn Iterator<Item = u16>| {
        v.filter(|x| !grease.contains(x))
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("-")
    };
    let be = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let version = be(&hello[4..6]);
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(hello[at]);
    let n = usize::from(be(&hello[at..]));
    let suites = join(&mut hello[at + 2..at + 2 + n].chunks(2).map(be));
    let ext = extensions(hello);
    let types = join(&mut ext.iter().map(|e| e.0));
    let data = |t: u16| ext.iter().find(|e| e.0 == t).map_or(&[][..], |e| e.1);
    let groups = data(10);
    let groups = join(&mut groups.get(2..).unwrap_or(&[]).chunks(2).map(be));
    let formats = data(11).get(1..).unwrap_or(&[]);
    let formats = join(&mut formats.iter().map(|&f| u16::from(f)));
    format!("{version},{suites},{types},{groups},{formats}")
}

/// The QUIC tap gives a flow the JA3 of the ClientHello in its Initials, computed as for
/// TCP (Suricata logs `ja3` for QUIC too): on each capture, outflow's flow record carries
/// the MD5 of the JA3 string this file reads from the same decrypted hello.
#[test]
fn quic_flows_carry_the_ja3_of_their_client_hello() {
    use md5::{Digest, Md5};
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    for rel in [
        "suricata-verify/quic-ietf/input.pcap",
        "suricata-verify/quic-frag/input.pcap",
        "zeek/scripts__base__protocols__quic__chromium/chromium-115.0.5790.110-api-cirrus-com.pcap",
        "zeek/scripts__base__protocols__quic__firefox/firefox-102.13.0esr-blog-cloudflare-com.pcap",
        "zeek/scripts__base__protocols__quic__fragmented-crypto/chromium-115.0.5790.110-google-de-fragmented.pcap",
    ] {
        let (conn, ..) = only_hello(rel).unwrap();
        let s = ja3_string(conn.hello.as_ref().unwrap());
        let want: String = Md5::digest(&s).iter().map(|b| format!("{b:02x}")).collect();
        let rep = common::replay(&outflow::config::Config::default(), 1, &[root.join(rel)]);
        let got: Vec<_> = rep
            .flows
            .iter()
            .filter_map(|r| r.names().filter(|n| n.quic))
            .map(|n| n.ja3.map(|j| j.as_str().to_string()))
            .collect();
        println!("{rel}: {s} -> {want}");
        assert_eq!(got, [Some(want)], "{rel}: {s}");
    }
}
