//! UDP: request/response exchanges (real DNS messages when the server port is 53) and IPv4
//! fragmented datagrams.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use super::wire::{
    self, Direction, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MAX_IP_LEN, UDP_HEADER_LEN,
};
use super::{mix64, FlowExpect, Link, Packet, DEFAULT_START_NS};

/// Well-known DNS port: exchanges to it carry DNS messages.
const DNS_PORT: u16 = 53;

/// `requests` request/response pairs between one client port and one server port. Request `i`
/// is packet `2i`, its response packet `2i + 1`; packet `k` is at `start_ns + k * gap_ns`.
///
/// When the server port is 53 the payloads are well-formed DNS messages of exactly the asked
/// sizes: an A query for a benign-looking name under example.com (needs `request_size` in
/// 17..=271, not 18), answered with A records, a CNAME plus A records, or NXDOMAIN (needs
/// `response_size` = `request_size`, or at least 15 bytes more). Other sizes fall back to
/// pattern bytes, as do all other ports. Sizes are clamped to what fits in one IP packet.
#[derive(Clone, Debug)]
pub struct UdpExchange {
    /// The side that sends requests (flow "orig").
    pub client: SocketAddr,
    /// The side that answers (flow "resp"); port 53 means DNS payloads.
    pub server: SocketAddr,
    /// Link layer of every frame.
    pub link: Link,
    /// Time of the first request, ns since the Unix epoch.
    pub start_ns: u64,
    /// Request/response pairs.
    pub requests: u32,
    /// UDP payload bytes of each request.
    pub request_size: usize,
    /// UDP payload bytes of each response.
    pub response_size: usize,
    /// Time between consecutive packets (request to response, response to next request), ns.
    pub gap_ns: u64,
}

impl UdpExchange {
    /// Defaults: Ethernet without VLAN, start [`DEFAULT_START_NS`], 1 ms between packets.
    pub fn new(
        client: SocketAddr,
        server: SocketAddr,
        requests: u32,
        request_size: usize,
        response_size: usize,
    ) -> Self {
        UdpExchange {
            client,
            server,
            link: Link::ethernet(),
            start_ns: DEFAULT_START_NS,
            requests,
            request_size,
            response_size,
            gap_ns: 1_000_000,
        }
    }

    fn ip_hdr(&self) -> usize {
        if self.client.is_ipv6() || self.server.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        }
    }

    /// Largest payload that fits one IP packet: 65507 (IPv4), 65527 (IPv6).
    fn max_payload(&self) -> usize {
        let ip_hdr = if self.ip_hdr() == IPV4_HEADER_LEN {
            IPV4_HEADER_LEN
        } else {
            0 // the IPv6 payload length excludes the fixed header
        };
        MAX_IP_LEN - ip_hdr - UDP_HEADER_LEN
    }

    fn sizes(&self) -> (usize, usize) {
        let m = self.max_payload();
        (self.request_size.min(m), self.response_size.min(m))
    }

    /// The rendered frames, lazily.
    pub fn packets(&self) -> UdpPackets {
        let c = (self.client.ip(), self.client.port());
        let s = (self.server.ip(), self.server.port());
        let key = mix64(mix64(sock_key(self.client)) ^ sock_key(self.server));
        let (req, resp) = self.sizes();
        UdpPackets {
            c2s: Direction::new(&self.link, c, s, true),
            s2c: Direction::new(&self.link, s, c, false),
            start_ns: self.start_ns,
            gap_ns: self.gap_ns,
            k: 0,
            total: 2 * u64::from(self.requests),
            req,
            resp,
            dns: self.server.port() == DNS_PORT,
            key,
            id_c: key as u16,
            id_s: (key >> 16) as u16,
            scratch: Vec::new(),
        }
    }

    /// What a flow table must count for this exchange.
    pub fn expected(&self) -> FlowExpect {
        let n = u64::from(self.requests);
        let hdr = (self.ip_hdr() + UDP_HEADER_LEN) as u64;
        let (req, resp) = self.sizes();
        FlowExpect {
            orig_pkts: n,
            orig_ip_bytes: n * (hdr + req as u64),
            orig_payload_bytes: n * req as u64,
            resp_pkts: n,
            resp_ip_bytes: n * (hdr + resp as u64),
            resp_payload_bytes: n * resp as u64,
        }
    }
}

fn sock_key(a: SocketAddr) -> u64 {
    let ip = match a.ip() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            mix64(x as u64) ^ (x >> 64) as u64
        }
    };
    mix64(ip ^ (u64::from(a.port()) << 40))
}

/// Iterator over an exchange's rendered frames; owns what it needs.
#[derive(Clone, Debug)]
pub struct UdpPackets {
    c2s: Direction,
    s2c: Direction,
    start_ns: u64,
    gap_ns: u64,
    k: u64,
    total: u64,
    req: usize,
    resp: usize,
    dns: bool,
    key: u64,
    id_c: u16,
    id_s: u16,
    scratch: Vec<u8>,
}

impl UdpPackets {
    /// Time of the next packet, if any.
    pub fn peek_ts(&self) -> Option<u64> {
        (self.k < self.total).then(|| {
            self.start_ns
                .saturating_add(self.k.saturating_mul(self.gap_ns))
        })
    }

    /// Packets not yet returned.
    pub fn remaining(&self) -> u64 {
        self.total - self.k
    }

    /// Renders the next packet into `buf` (cleared first) and returns its time.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let ts = self.peek_ts()?;
        let k = self.k;
        self.k += 1;
        let i = k / 2;
        let is_request = k % 2 == 0;
        let size = if is_request { self.req } else { self.resp };
        self.scratch.clear();
        let mut ok = false;
        if self.dns {
            let salt = mix64(self.key ^ i);
            let id = (self.key >> 48) as u16 ^ i as u16;
            ok = dns_query(&mut self.scratch, self.req, id, salt);
            if ok && !is_request {
                let query = std::mem::take(&mut self.scratch);
                ok = dns_response(&mut self.scratch, &query, size, salt);
            }
        }
        buf.clear();
        let (d, id) = if is_request {
            (&self.c2s, &mut self.id_c)
        } else {
            (&self.s2c, &mut self.id_s)
        };
        if ok {
            wire::push_udp(buf, d, *id, &self.scratch);
        } else {
            let base = if is_request { 0 } else { 1 << 40 };
            wire::push_udp_pattern(buf, d, *id, base + i * size as u64, size);
        }
        *id = id.wrapping_add(1);
        Some(ts)
    }
}

impl Iterator for UdpPackets {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        let mut frame = Vec::new();
        let ts_ns = self.next_into(&mut frame)?;
        Some(Packet { ts_ns, frame })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        (r, Some(r))
    }
}

/// Label text: ordinary words, so names do not look like tunnelled data.
const WORDS: [&[u8]; 12] = [
    b"www", b"api", b"cdn", b"img", b"static", b"mail", b"login", b"assets", b"update", b"news",
    b"shop", b"docs",
];
const QUERY_SUFFIX: &[u8] = b"\x07example\x03com\x00";
const CNAME_SUFFIX: &[u8] = b"\x03cdn\x07example\x03net\x00";
/// DNS header length.
const DNS_HEADER_LEN: usize = 12;
/// Longest encoded domain name (RFC 1035 2.3.4).
const MAX_NAME_LEN: usize = 255;
/// Type, class, TTL and RDLENGTH of a resource record.
const RR_FIXED_LEN: usize = 10;
/// An A record whose owner is a 2-byte compression pointer.
const A_RECORD_LEN: usize = 2 + RR_FIXED_LEN + 4;

/// Appends a domain name of exactly `len` encoded bytes (length-prefixed labels and the root
/// byte), ending in `suffix` when it fits. False if no name has that length (0, 2, > 255).
fn push_name(out: &mut Vec<u8>, len: usize, salt: u64, suffix: &[u8]) -> bool {
    if len == 0 || len == 2 || len > MAX_NAME_LEN {
        return false;
    }
    let suffix = if len >= suffix.len() && len - suffix.len() != 1 {
        suffix
    } else {
        &[0]
    };
    let mut body = len - suffix.len();
    let mut label = 0usize;
    while body > 0 {
        // A label takes 1 + (1..=63) bytes; never leave a single byte behind.
        let mut take = body.min(64);
        if body - take == 1 {
            take -= 1;
        }
        let n = take - 1;
        out.push(n as u8);
        let word = WORDS[(salt as usize).wrapping_add(label) % WORDS.len()];
        for c in 0..n {
            out.push(match word.get(c) {
                Some(b) => *b,
                None => b'0' + ((salt as usize).wrapping_add(c) % 10) as u8,
            });
        }
        body -= take;
        label += 1;
    }
    out.extend_from_slice(suffix);
    true
}

/// A DNS A query of exactly `size` bytes. False if impossible.
fn dns_query(out: &mut Vec<u8>, size: usize, id: u16, salt: u64) -> bool {
    let Some(name_len) = size.checked_sub(DNS_HEADER_LEN + 4) else {
        return false;
    };
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
    if !push_name(out, name_len, salt, QUERY_SUFFIX) {
        return false;
    }
    out.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    true
}

/// The response to `query`, exactly `size` bytes. False if impossible.
fn dns_response(out: &mut Vec<u8>, query: &[u8], size: usize, salt: u64) -> bool {
    let Some(extra) = size.checked_sub(query.len()) else {
        return false;
    };
    // Answer plan: k A records, optionally preceded by a CNAME with a `cname_len`-byte target.
    let (k, cname_len) = if extra % A_RECORD_LEN == 0 {
        (extra / A_RECORD_LEN, 0)
    } else {
        let fixed = 2 + RR_FIXED_LEN;
        let Some(rest) = extra.checked_sub(fixed + 3) else {
            return false;
        };
        let rest = rest + 3; // bytes for the target name plus A records
        let mut k = rest.saturating_sub(MAX_NAME_LEN).div_ceil(A_RECORD_LEN);
        if k == 0 && rest >= A_RECORD_LEN + 3 {
            k = 1; // prefer CNAME + A, as resolvers answer
        }
        (k, rest - k * A_RECORD_LEN)
    };
    let answers = k + usize::from(cname_len > 0);
    let Ok(ancount) = u16::try_from(answers) else {
        return false;
    };
    out.extend_from_slice(&query[..2]);
    let rcode = if answers == 0 { 3 } else { 0 }; // NXDOMAIN when nothing answers
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[DNS_HEADER_LEN..]);
    let mut owner = 0xc000 | DNS_HEADER_LEN as u16; // the question name
    if cname_len > 0 {
        out.extend_from_slice(&owner.to_be_bytes());
        out.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0x0e, 0x10]); // CNAME, IN, TTL 3600
        out.extend_from_slice(&(cname_len as u16).to_be_bytes());
        owner = 0xc000 | out.len() as u16;
        if !push_name(out, cname_len, salt.rotate_left(7), CNAME_SUFFIX) {
            return false;
        }
    }
    for j in 0..k {
        out.extend_from_slice(&owner.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4]); // A, IN, TTL 60
        out.extend_from_slice(&[198, 51, 100, (salt as usize + j) as u8]);
    }
    out.len() == size
}

/// Gap between consecutive fragments, ns.
const FRAGMENT_GAP_NS: u64 = 10_000;

/// One IPv4 UDP datagram of `payload` bytes (clamped to 65507) split into Ethernet frames of
/// at most `frag_payload` IP payload bytes (rounded down to a multiple of 8, at least 8). The
/// first fragment carries the UDP header (ports, length of the whole datagram, checksum over
/// the whole datagram); the others only IP. Fragments are `FRAGMENT_GAP_NS` (10 µs) apart from
/// `ts_ns`; with `first_last` the first fragment is sent last. A datagram that fits in one
/// fragment is sent unfragmented.
pub fn fragmented_udp(
    client: SocketAddrV4,
    server: SocketAddrV4,
    ts_ns: u64,
    ip_id: u16,
    payload: usize,
    frag_payload: usize,
    first_last: bool,
) -> Vec<Packet> {
    let payload = payload.min(MAX_IP_LEN - IPV4_HEADER_LEN - UDP_HEADER_LEN);
    let frag = (frag_payload / 8 * 8).max(8);
    let c = (IpAddr::V4(*client.ip()), client.port());
    let s = (IpAddr::V4(*server.ip()), server.port());
    // Render the whole datagram once (raw IP), then cut its UDP part.
    let raw = Direction::new(&Link::RawIp, c, s, true);
    let mut whole = Vec::new();
    wire::push_udp(&mut whole, &raw, ip_id, wire::payload(0, payload));
    let datagram = &whole[IPV4_HEADER_LEN..];
    let eth = Direction::new(&Link::ethernet(), c, s, true);
    let count = datagram.len().div_ceil(frag);
    let mut order: Vec<usize> = (0..count).collect();
    if first_last && count > 1 {
        order.rotate_left(1);
    }
    order
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let chunk = &datagram[i * frag..datagram.len().min((i + 1) * frag)];
            let more = i + 1 < count;
            let offset = (i * frag / 8) as u16;
            let mut frame = Vec::with_capacity(14 + IPV4_HEADER_LEN + chunk.len());
            frame.extend_from_slice(&eth.link);
            wire::push_ip_header(
                &mut frame,
                &eth,
                IPPROTO_UDP,
                chunk.len(),
                ip_id,
                false,
                (more, offset),
            );
            frame.extend_from_slice(chunk);
            Packet {
                ts_ns: ts_ns + n as u64 * FRAGMENT_GAP_NS,
                frame,
            }
        })
        .collect()
}

/// IPv6 fragment header length (RFC 8200 §4.5).
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;

/// Splits one unfragmented IP packet as the generator writes it (`link_len` bytes of link
/// header, then IPv4 without options or IPv6 without extension headers) into fragments of
/// at most `frag_payload` data bytes (rounded down to a multiple of 8, at least 8), in
/// order, all at the packet's time. IPv4 fragments carry the low 16 bits of `id` as their
/// identification; IPv6 fragments get a fragment header with `id`. A packet that fits in one
/// fragment, or that is not IP, is returned as it is.
pub fn fragment_packet(p: &Packet, link_len: usize, frag_payload: usize, id: u32) -> Vec<Packet> {
    let frag = (frag_payload / 8 * 8).max(8);
    let Some(ip) = p.frame.get(link_len..) else {
        return vec![p.clone()];
    };
    let (v6, hdr) = match ip.first().map(|b| b >> 4) {
        Some(4) => (false, IPV4_HEADER_LEN),
        Some(6) => (true, IPV6_HEADER_LEN),
        _ => return vec![p.clone()],
    };
    let (Some(head), Some(data)) = (ip.get(..hdr), ip.get(hdr..)) else {
        return vec![p.clone()];
    };
    if data.len() <= frag {
        return vec![p.clone()];
    }
    let link = &p.frame[..link_len];
    let count = data.len().div_ceil(frag);
    (0..count)
        .map(|i| {
            let chunk = &data[i * frag..data.len().min((i + 1) * frag)];
            let more = i + 1 < count;
            let offset = (i * frag) as u16; // in bytes; a multiple of 8
            let mut frame = link.to_vec();
            let mut h = head.to_vec();
            if v6 {
                let next = h[6];
                h[4..6].copy_from_slice(
                    &((IPV6_FRAGMENT_HEADER_LEN + chunk.len()) as u16).to_be_bytes(),
                );
                h[6] = 44;
                frame.extend_from_slice(&h);
                frame.extend_from_slice(&[next, 0]);
                frame.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
                frame.extend_from_slice(&id.to_be_bytes());
            } else {
                h[2..4].copy_from_slice(&((IPV4_HEADER_LEN + chunk.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                let flags = (offset / 8) | if more { 0x2000 } else { 0 };
                h[6..8].copy_from_slice(&flags.to_be_bytes());
                h[10..12].copy_from_slice(&[0, 0]);
                let c = wire::checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                frame.extend_from_slice(&h);
            }
            frame.extend_from_slice(chunk);
            Packet {
                ts_ns: p.ts_ns,
                frame,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// A strict DNS walk: header, question, answers (names with backward pointers only);
    /// returns (qname, ancount, rcode) and checks every byte is consumed.
    fn walk_dns(m: &[u8]) -> (String, u16, u8) {
        fn name(m: &[u8], mut at: usize, out: &mut String) -> usize {
            let mut end = None;
            let mut hops = 0;
            loop {
                let len = m[at] as usize;
                if len & 0xc0 == 0xc0 {
                    let ptr = ((len & 0x3f) << 8) | m[at + 1] as usize;
                    assert!(ptr < at, "pointer must point backwards");
                    end.get_or_insert(at + 2);
                    at = ptr;
                    hops += 1;
                    assert!(hops < 10);
                    continue;
                }
                if len == 0 {
                    return end.unwrap_or(at + 1);
                }
                assert!(len <= 63);
                let label = std::str::from_utf8(&m[at + 1..at + 1 + len]).unwrap();
                assert!(label.bytes().all(|b| b.is_ascii_alphanumeric()));
                out.push_str(label);
                out.push('.');
                at += 1 + len;
            }
        }
        assert!(m.len() >= 12);
        assert_eq!(u16::from_be_bytes([m[4], m[5]]), 1);
        let an = u16::from_be_bytes([m[6], m[7]]);
        let mut q = String::new();
        let mut at = name(m, 12, &mut q);
        assert!(q.len() <= 254);
        at += 4;
        for _ in 0..an {
            let mut owner = String::new();
            at = name(m, at, &mut owner);
            let rtype = u16::from_be_bytes([m[at], m[at + 1]]);
            let rdlen = u16::from_be_bytes([m[at + 8], m[at + 9]]) as usize;
            at += 10;
            if rtype == 5 {
                let mut target = String::new();
                assert_eq!(name(m, at, &mut target), at + rdlen);
            } else {
                assert_eq!((rtype, rdlen), (1, 4));
            }
            at += rdlen;
        }
        assert_eq!(at, m.len(), "every byte consumed");
        (q, an, m[3] & 0x0f)
    }

    fn udp_payload(frame: &[u8]) -> (bool, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not udp")
        };
        let ok = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                u.to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
            }
            Some(NetSlice::Ipv6(ip)) => {
                u.to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                    .unwrap()
                    == u.checksum()
            }
            _ => false,
        };
        (ok, u.payload().to_vec())
    }

    #[test]
    fn expected_matches_packets() {
        let v4 = ("10.0.0.5:40000", "10.0.0.1:53");
        let v6 = ("[fd00::5]:40000", "[fd00::1]:53");
        let other = ("10.0.0.5:40000", "192.0.2.9:4500");
        for (c, s) in [v4, v6, other] {
            for (n, req, resp) in [
                (0, 40, 90),
                (1, 0, 0),
                (3, 33, 49),
                (2, 17, 17),
                (2, 18, 100),
                (5, 40, 140),
                (1, 271, 1000),
                (1, 60, 70_000),
            ] {
                let x = UdpExchange::new(c.parse().unwrap(), s.parse().unwrap(), n, req, resp);
                let mut e = FlowExpect::default();
                let pkts: Vec<Packet> = x.packets().collect();
                for (k, p) in pkts.iter().enumerate() {
                    assert_eq!(p.ts_ns, x.start_ns + k as u64 * x.gap_ns);
                    let parsed = SlicedPacket::from_ethernet(&p.frame).unwrap();
                    let ip_len = match &parsed.net {
                        Some(NetSlice::Ipv4(ip)) => u64::from(ip.header().total_len()),
                        Some(NetSlice::Ipv6(ip)) => 40 + u64::from(ip.header().payload_length()),
                        _ => panic!(),
                    };
                    let (sum_ok, payload) = udp_payload(&p.frame);
                    assert!(sum_ok, "udp checksum");
                    let pl = payload.len() as u64;
                    if k % 2 == 0 {
                        e.orig_pkts += 1;
                        e.orig_ip_bytes += ip_len;
                        e.orig_payload_bytes += pl;
                    } else {
                        e.resp_pkts += 1;
                        e.resp_ip_bytes += ip_len;
                        e.resp_payload_bytes += pl;
                    }
                }
                assert_eq!(e, x.expected(), "{c} {s} {n} {req} {resp}");
            }
        }
    }

    #[test]
    fn dns_payloads_are_valid_dns() {
        let c: SocketAddr = "10.0.0.7:53000".parse().unwrap();
        let s: SocketAddr = "10.0.0.1:53".parse().unwrap();
        for req in (17..=271).filter(|r| *r != 18) {
            for resp in [
                req,
                req + 15,
                req + 16,
                req + 17,
                req + 30,
                req + 64,
                req + 600,
            ] {
                let x = UdpExchange::new(c, s, 2, req, resp);
                let pkts: Vec<Packet> = x.packets().collect();
                let (_, q) = udp_payload(&pkts[0].frame);
                let (_, r) = udp_payload(&pkts[1].frame);
                assert_eq!((q.len(), r.len()), (req, resp));
                let (qname, qan, _) = walk_dns(&q);
                let (rname, an, rcode) = walk_dns(&r);
                assert_eq!(qan, 0);
                assert_eq!(qname, rname);
                assert_eq!(q[..2], r[..2], "same id");
                assert_eq!(rcode == 3, an == 0);
                if req >= 40 {
                    assert!(qname.ends_with("example.com."), "{qname}");
                }
                // Next request has another id.
                let (_, q2) = udp_payload(&pkts[2].frame);
                assert_ne!(q[..2], q2[..2]);
            }
        }
        // 40-byte query, 56-byte answer (one A record): typical.
        let x = UdpExchange::new(c, s, 1, 40, 56);
        let pkts: Vec<Packet> = x.packets().collect();
        let (_, r) = udp_payload(&pkts[1].frame);
        let (name, an, _) = walk_dns(&r);
        assert_eq!(an, 1);
        assert!(
            name.ends_with(".example.com.") && name.len() == 23,
            "{name}"
        );
    }

    #[test]
    fn fragments_reassemble() {
        let c: SocketAddrV4 = "10.0.0.7:40001".parse().unwrap();
        let s: SocketAddrV4 = "198.51.100.53:4500".parse().unwrap();
        for (payload, frag, first_last) in [
            (4000, 1480, false),
            (4000, 1480, true),
            (3000, 1000, true), // rounded down to 1000 - 1000 % 8 = 1000
            (100, 1480, true),  // fits: unfragmented
            (70_000, 8000, false),
        ] {
            let frags = fragmented_udp(c, s, 1_000, 0x1234, payload, frag, first_last);
            let want_payload = payload.min(65_507);
            let mut parts = Vec::new();
            for (i, p) in frags.iter().enumerate() {
                assert_eq!(p.ts_ns, 1_000 + i as u64 * FRAGMENT_GAP_NS);
                let sl = SlicedPacket::from_ethernet(&p.frame).unwrap();
                let Some(NetSlice::Ipv4(ip)) = &sl.net else {
                    panic!()
                };
                let h = ip.header();
                assert_eq!(h.identification(), 0x1234);
                assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                assert_eq!(usize::from(h.total_len()), p.frame.len() - 14);
                let off = usize::from(h.fragments_offset().value()) * 8;
                parts.push((off, h.more_fragments(), ip.payload().payload.to_vec()));
            }
            if first_last && frags.len() > 1 {
                assert!(parts.last().unwrap().0 == 0, "first fragment sent last");
                assert!(parts[0].0 > 0);
            }
            parts.sort_by_key(|p| p.0);
            let mut datagram = Vec::new();
            for (i, (off, more, data)) in parts.iter().enumerate() {
                assert_eq!(*off, datagram.len(), "contiguous");
                assert_eq!(*more, i + 1 < parts.len());
                if *more {
                    assert!(data.len() <= frag && data.len() % 8 == 0);
                }
                datagram.extend_from_slice(data);
            }
            assert_eq!(datagram.len(), 8 + want_payload);
            assert_eq!(
                usize::from(u16::from_be_bytes([datagram[4], datagram[5]])),
                datagram.len()
            );
            assert_eq!(&datagram[..4], &[0x9c, 0x41, 0x11, 0x94]); // ports 40001, 4500
            let acc = wire::pseudo_header_sum(
                IpAddr::V4(*c.ip()),
                IpAddr::V4(*s.ip()),
                IPPROTO_UDP,
                datagram.len(),
            );
            assert_eq!(
                wire::fold(wire::sum_words(&datagram, acc)),
                0,
                "udp checksum"
            );
        }
    }
}
