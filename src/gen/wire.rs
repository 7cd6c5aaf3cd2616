//! Byte-level rendering: link headers, IPv4/IPv6 headers, TCP/UDP headers with their
//! checksums, and the payload pattern. Written by hand (not with etherparse's builder) so that
//! rendering cannot fail and reuses one buffer; the tests check every field against etherparse.

use std::net::IpAddr;
use std::sync::OnceLock;

use super::{Link, Rng};

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const TPID_8021Q: u16 = 0x8100;
pub(crate) const TPID_8021AD: u16 = 0x88a8;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const UDP_HEADER_LEN: usize = 8;

/// Largest IP packet: the 16-bit IPv4 total length / IPv6 payload length.
pub(crate) const MAX_IP_LEN: usize = 65_535;

/// Linux `PACKET_HOST` / `PACKET_OUTGOING`, the cooked-header packet types.
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
/// Interface index written in SLL2 headers.
const SLL2_IFINDEX: u32 = 2;

/// A locally administered MAC derived from an IP address: 02:00:a.b.c.d for IPv4,
/// 02:06:<last four bytes> for IPv6.
pub(crate) fn mac_of(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x00, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x02, 0x06, o[12], o[13], o[14], o[15]]
        }
    }
}

pub(crate) fn ethertype_of(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => ETHERTYPE_IPV4,
        IpAddr::V6(_) => ETHERTYPE_IPV6,
    }
}

/// The link header of a frame from `src` to `dst`. `outgoing` sets the cooked-header packet
/// type (client to server is written as "outgoing", as if captured on the client).
pub(crate) fn link_header(link: &Link, src: IpAddr, dst: IpAddr, outgoing: bool) -> Vec<u8> {
    let ethertype = ethertype_of(src);
    let src_mac = mac_of(src);
    let mut h = Vec::with_capacity(link.header_len());
    let pkttype = if outgoing {
        PACKET_OUTGOING
    } else {
        PACKET_HOST
    };
    match link {
        Link::Ethernet { vlans } => {
            h.extend_from_slice(&mac_of(dst));
            h.extend_from_slice(&src_mac);
            for (i, vid) in vlans.iter().enumerate() {
                let tpid = if i == 0 && vlans.len() > 1 {
                    TPID_8021AD
                } else {
                    TPID_8021Q
                };
                h.extend_from_slice(&tpid.to_be_bytes());
                h.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
            }
            h.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll => {
            h.extend_from_slice(&u16::from(pkttype).to_be_bytes());
            h.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            h.extend_from_slice(&6u16.to_be_bytes());
            h.extend_from_slice(&src_mac);
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll2 => {
            h.extend_from_slice(&ethertype.to_be_bytes());
            h.extend_from_slice(&[0, 0]); // reserved
            h.extend_from_slice(&SLL2_IFINDEX.to_be_bytes());
            h.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            h.push(pkttype);
            h.push(6);
            h.extend_from_slice(&src_mac);
            h.extend_from_slice(&[0, 0]);
        }
        Link::RawIp => {}
    }
    h
}

/// Addresses and per-direction constants of one side of a conversation.
#[derive(Clone, Debug)]
pub(crate) struct Direction {
    pub link: Vec<u8>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
}

impl Direction {
    /// A pair of one IPv4 and one IPv6 address is rendered as IPv6 (IPv4-mapped).
    pub fn new(link: &Link, src: (IpAddr, u16), dst: (IpAddr, u16), outgoing: bool) -> Self {
        let (src, dst) = if src.0.is_ipv6() != dst.0.is_ipv6() {
            (
                (IpAddr::V6(to_v6(src.0)), src.1),
                (IpAddr::V6(to_v6(dst.0)), dst.1),
            )
        } else {
            (src, dst)
        };
        Direction {
            link: link_header(link, src.0, dst.0, outgoing),
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            ttl: if outgoing { 64 } else { 54 },
        }
    }
}

/// Appends an IPv4 or IPv6 header for `l4_len` bytes of `proto` payload. `frag` is
/// (more fragments, offset in 8-byte units); IPv4 only. Returns nothing: lengths are clamped
/// by the callers to [`MAX_IP_LEN`].
pub(crate) fn push_ip_header(
    buf: &mut Vec<u8>,
    d: &Direction,
    proto: u8,
    l4_len: usize,
    ip_id: u16,
    dont_fragment: bool,
    frag: (bool, u16),
) {
    match (d.src, d.dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            let total = (IPV4_HEADER_LEN + l4_len).min(MAX_IP_LEN) as u16;
            let mut flags_off = frag.1 & 0x1fff;
            if dont_fragment {
                flags_off |= 0x4000;
            }
            if frag.0 {
                flags_off |= 0x2000;
            }
            let start = buf.len();
            buf.extend_from_slice(&[0x45, 0]);
            buf.extend_from_slice(&total.to_be_bytes());
            buf.extend_from_slice(&ip_id.to_be_bytes());
            buf.extend_from_slice(&flags_off.to_be_bytes());
            buf.extend_from_slice(&[d.ttl, proto, 0, 0]);
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&t.octets());
            let c = checksum(&buf[start..]);
            buf[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
        }
        (s, t) => {
            let s = to_v6(s);
            let t = to_v6(t);
            // Flow label: a stable function of the ports, like Linux's auto flow labels.
            let label = ((u32::from(d.sport) << 4) ^ u32::from(d.dport)) & 0x000f_ffff;
            buf.extend_from_slice(&(0x6000_0000u32 | label).to_be_bytes());
            buf.extend_from_slice(&(l4_len.min(MAX_IP_LEN) as u16).to_be_bytes());
            buf.extend_from_slice(&[proto, d.ttl]);
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&t.octets());
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Ones'-complement sum of the pseudo header for a transport checksum.
pub(crate) fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&t.octets(), acc);
        }
        (s, t) => {
            acc = sum_words(&to_v6(s).octets(), acc);
            acc = sum_words(&to_v6(t).octets(), acc);
        }
    }
    acc + u64::from(proto) + l4_len as u64
}

/// Adds `data` as big-endian 16-bit words to a ones'-complement accumulator. `data` must start
/// at an even offset of the checksummed range; an odd tail is padded with a zero byte.
pub(crate) fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(w));
        acc = s + u64::from(carry);
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an accumulator to the final 16-bit checksum (complemented).
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub(crate) fn checksum(data: &[u8]) -> u16 {
    fold(sum_words(data, 0))
}

/// TCP header fields of one segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpFields {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// MSS option value (SYN segments); `None` for a 20-byte header.
    pub mss_option: Option<u16>,
}

/// Appends a whole IP/TCP packet (link header first) carrying `payload`.
pub(crate) fn push_tcp(buf: &mut Vec<u8>, d: &Direction, ip_id: u16, f: TcpFields, payload: &[u8]) {
    push_tcp_summed(buf, d, ip_id, f, payload, None);
}

/// [`push_tcp`] carrying [`payload`]`(offset, len)`, its checksum taken from
/// [`payload_sum`] instead of a pass over the bytes.
pub(crate) fn push_tcp_pattern(
    buf: &mut Vec<u8>,
    d: &Direction,
    ip_id: u16,
    f: TcpFields,
    offset: u64,
    len: usize,
) {
    let sum = payload_sum(offset, len);
    push_tcp_summed(buf, d, ip_id, f, payload(offset, len), Some(sum));
}

/// [`push_tcp`]; `payload_sum`: the payload's word sum when known (the header before it has
/// an even length, so the payload starts on a word).
fn push_tcp_summed(
    buf: &mut Vec<u8>,
    d: &Direction,
    ip_id: u16,
    f: TcpFields,
    payload: &[u8],
    payload_sum: Option<u64>,
) {
    buf.extend_from_slice(&d.link);
    let tcp_len = if f.mss_option.is_some() { 24 } else { 20 } + payload.len();
    push_ip_header(buf, d, IPPROTO_TCP, tcp_len, ip_id, true, (false, 0));
    let start = buf.len();
    buf.extend_from_slice(&d.sport.to_be_bytes());
    buf.extend_from_slice(&d.dport.to_be_bytes());
    buf.extend_from_slice(&f.seq.to_be_bytes());
    buf.extend_from_slice(&f.ack.to_be_bytes());
    let offset_words: u8 = if f.mss_option.is_some() { 6 } else { 5 };
    buf.extend_from_slice(&[offset_words << 4, f.flags]);
    buf.extend_from_slice(&f.window.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if let Some(mss) = f.mss_option {
        buf.extend_from_slice(&[2, 4]);
        buf.extend_from_slice(&mss.to_be_bytes());
    }
    let acc = pseudo_header_sum(d.src, d.dst, IPPROTO_TCP, tcp_len);
    let c = fold(sum_with(buf, start, payload, payload_sum, acc));
    buf[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
}

/// Appends `payload` to `buf` and returns the word sum of `buf[start..]` added to `acc`:
/// over the bytes, or the header's plus `payload_sum` when given (the header from `start`
/// must then have an even length).
fn sum_with(
    buf: &mut Vec<u8>,
    start: usize,
    payload: &[u8],
    payload_sum: Option<u64>,
    acc: u64,
) -> u64 {
    let header = buf.len();
    buf.extend_from_slice(payload);
    match payload_sum {
        Some(p) => {
            debug_assert_eq!((header - start) % 2, 0, "the payload starts on a word");
            let (s, carry) = sum_words(&buf[start..header], acc).overflowing_add(p);
            s + u64::from(carry)
        }
        None => sum_words(&buf[start..], acc),
    }
}

/// Appends a whole IP/UDP packet (link header first) carrying `payload`.
pub(crate) fn push_udp(buf: &mut Vec<u8>, d: &Direction, ip_id: u16, payload: &[u8]) {
    push_udp_summed(buf, d, ip_id, payload, None);
}

/// [`push_udp`] carrying [`payload`]`(offset, len)`, its checksum taken from
/// [`payload_sum`] instead of a pass over the bytes.
pub(crate) fn push_udp_pattern(
    buf: &mut Vec<u8>,
    d: &Direction,
    ip_id: u16,
    offset: u64,
    len: usize,
) {
    let sum = payload_sum(offset, len);
    push_udp_summed(buf, d, ip_id, payload(offset, len), Some(sum));
}

/// [`push_udp`]; `payload_sum`: the payload's word sum when known.
fn push_udp_summed(
    buf: &mut Vec<u8>,
    d: &Direction,
    ip_id: u16,
    payload: &[u8],
    payload_sum: Option<u64>,
) {
    buf.extend_from_slice(&d.link);
    let udp_len = UDP_HEADER_LEN + payload.len();
    push_ip_header(buf, d, IPPROTO_UDP, udp_len, ip_id, false, (false, 0));
    let start = buf.len();
    buf.extend_from_slice(&d.sport.to_be_bytes());
    buf.extend_from_slice(&d.dport.to_be_bytes());
    buf.extend_from_slice(&(udp_len.min(MAX_IP_LEN) as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    let acc = pseudo_header_sum(d.src, d.dst, IPPROTO_UDP, udp_len);
    let c = match fold(sum_with(buf, start, payload, payload_sum, acc)) {
        0 => 0xffff, // 0 means "no checksum" in UDP
        c => c,
    };
    buf[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
}

/// Period of the payload pattern; at least one maximal payload.
const PATTERN_PERIOD: usize = 64 * 1024;
const _: () = assert!(PATTERN_PERIOD >= MAX_IP_LEN);

fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut v = vec![0u8; PATTERN_PERIOD];
        Rng::new(0x006f_7574_666c_6f77).fill(&mut v);
        // The tail repeats the head, so byte i is pattern[i % period] for any slice.
        v.extend_from_within(..MAX_IP_LEN);
        v
    })
}

/// Payload bytes: a fixed pseudo-random (high entropy, like TLS records) pattern, indexed by
/// the byte's offset in its stream. Returns `len` bytes (at most [`MAX_IP_LEN`]).
pub(crate) fn payload(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    &pattern()[start..start + len.min(MAX_IP_LEN)]
}

/// The word sum ([`sum_words`] from 0) of [`payload`]`(offset, len)`, from prefix sums of the
/// pattern's words: O(1) instead of a pass over up to 64 KiB. A debug build sums about
/// 225 MB a second: a 1.5 GB upload took 6.7 s to render with a pass, 0.7 s without.
pub(crate) fn payload_sum(offset: u64, len: usize) -> u64 {
    // prefix[p][k]: the sum of the first k big-endian words starting at pattern byte p
    // (words p..p+2, p+2..p+4, ...), for either parity of the start.
    static PREFIX: OnceLock<[Vec<u64>; 2]> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let p = pattern();
        [0, 1].map(|parity| {
            let mut sums = vec![0u64];
            let mut acc = 0u64;
            for w in p[parity..].chunks_exact(2) {
                acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
                sums.push(acc);
            }
            sums
        })
    });
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    let len = len.min(MAX_IP_LEN);
    let (sums, first) = (&prefix[start % 2], start / 2);
    let words = len / 2;
    let mut acc = sums[first + words] - sums[first];
    if len % 2 == 1 {
        acc += u64::from(pattern()[start + len - 1]) << 8;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_payloads_sum_is_the_sum_of_its_bytes() {
        let period = PATTERN_PERIOD as u64;
        for offset in [
            0,
            1,
            2,
            7,
            1460,
            period - 1,
            period,
            period + 3,
            5 * period - 2,
        ] {
            for len in [
                0,
                1,
                2,
                3,
                1460,
                8972,
                8973,
                MAX_IP_LEN - 1,
                MAX_IP_LEN,
                70_000,
            ] {
                let want = fold(sum_words(payload(offset, len), 0));
                assert_eq!(fold(payload_sum(offset, len)), want, "{offset} {len}");
            }
        }
    }
}
