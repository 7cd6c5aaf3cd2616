//! One malformed Ethernet frame per decoder failure class. Each frame is valid up to the one
//! defect its name says (header checksums are right where the header is complete), so a
//! decoder that rejects it can only be rejecting that defect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{
    self, Direction, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP, TPID_8021Q,
};
use super::{Link, Rng};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ETH_LEN: usize = 14;

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&wire::mac_of(IpAddr::V4(DST)));
    f.extend_from_slice(&wire::mac_of(IpAddr::V4(SRC)));
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A valid Ethernet/IPv4 frame carrying `l4` as protocol `proto` (transport bytes as given).
fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let d = Direction::new(
        &Link::ethernet(),
        (IpAddr::V4(SRC), 40_000),
        (IpAddr::V4(DST), 443),
        true,
    );
    let mut f = d.link.clone();
    wire::push_ip_header(&mut f, &d, proto, l4.len(), 0x0101, true, (false, 0));
    f.extend_from_slice(l4);
    f
}

/// Rewrites the IPv4 header checksum after a field was changed (over 20 bytes).
fn fix_ipv4_checksum(f: &mut [u8]) {
    let h = &mut f[ETH_LEN..ETH_LEN + 20];
    h[10] = 0;
    h[11] = 0;
    let c = wire::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

fn set_total_len(f: &mut [u8], len: u16) {
    f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&len.to_be_bytes());
    fix_ipv4_checksum(f);
}

/// A 20-byte TCP header (ACK, ports 40000 -> 443), checksum left 0.
fn tcp_header() -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    t[2..4].copy_from_slice(&443u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10;
    t[14..16].copy_from_slice(&65_535u16.to_be_bytes());
    t
}

/// Named malformed frames, one per failure class, in a fixed order. Names are snake_case and
/// stable (tests key on them): `eth_short`, `unknown_ethertype`, `arp`, `ipv4_truncated`,
/// `ipv4_ihl_lt_5`, `ipv4_total_len_lt_header`, `ipv4_total_len_gt_frame`, `ip_version_7`,
/// `ipv6_truncated`, `ipv6_ext_truncated`, `tcp_truncated`, `tcp_data_offset_lt_5`,
/// `udp_truncated`, `udp_length_lt_8`, `vlan_truncated`, `random_bytes` (200 bytes from
/// `seed`).
pub fn malformed_frames(seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();

    // Shorter than an Ethernet header.
    out.push(("eth_short", eth(ETHERTYPE_IPV4)[..10].to_vec()));

    // IEEE 802.1 local experimental ethertype: not something we decode.
    let mut f = eth(0x88b5);
    f.extend_from_slice(&[0u8; 46]);
    out.push(("unknown_ethertype", f));

    // A well-formed ARP request (who has 10.0.0.1? tell 10.0.0.99): not IP.
    let mut f = eth(ETHERTYPE_ARP);
    f[..6].copy_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&wire::mac_of(IpAddr::V4(SRC)));
    f.extend_from_slice(&SRC.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&[0; 18]); // pad to the 60-byte minimum
    out.push(("arp", f));

    // 12 bytes of an IPv4 header.
    let mut f = ipv4(IPPROTO_TCP, &tcp_header());
    f.truncate(ETH_LEN + 12);
    out.push(("ipv4_truncated", f));

    // IHL 4 (16 bytes): below the 20-byte minimum.
    let mut f = ipv4(IPPROTO_TCP, &tcp_header());
    f[ETH_LEN] = 0x44;
    fix_ipv4_checksum(&mut f);
    out.push(("ipv4_ihl_lt_5", f));

    // Total length 16 < 20-byte header.
    let mut f = ipv4(IPPROTO_TCP, &tcp_header());
    set_total_len(&mut f, 16);
    out.push(("ipv4_total_len_lt_header", f));

    // Total length 1500, 40 bytes present.
    let mut f = ipv4(IPPROTO_TCP, &tcp_header());
    set_total_len(&mut f, 1500);
    out.push(("ipv4_total_len_gt_frame", f));

    // Version 7 under the IPv4 ethertype.
    let mut f = ipv4(IPPROTO_TCP, &tcp_header());
    f[ETH_LEN] = 0x75;
    fix_ipv4_checksum(&mut f);
    out.push(("ip_version_7", f));

    // 20 bytes of a 40-byte IPv6 header.
    let v6 = Direction::new(
        &Link::ethernet(),
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99)),
            40_000,
        ),
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            443,
        ),
        true,
    );
    let mut f = v6.link.clone();
    wire::push_ip_header(&mut f, &v6, IPPROTO_TCP, 20, 0, false, (false, 0));
    f.extend_from_slice(&tcp_header());
    f.truncate(ETH_LEN + 20);
    out.push(("ipv6_truncated", f));

    // Hop-by-hop header announcing 16 bytes; payload length (and frame) hold only 4.
    let mut f = v6.link.clone();
    wire::push_ip_header(&mut f, &v6, 0, 4, 0, false, (false, 0));
    f.extend_from_slice(&[IPPROTO_UDP, 1, 0, 0]);
    out.push(("ipv6_ext_truncated", f));

    // 10 bytes of TCP header; IP lengths consistent.
    out.push(("tcp_truncated", ipv4(IPPROTO_TCP, &tcp_header()[..10])));

    // TCP data offset 4 (16 bytes) < 5.
    let mut t = tcp_header();
    t[12] = 4 << 4;
    out.push(("tcp_data_offset_lt_5", ipv4(IPPROTO_TCP, &t)));

    // 4 bytes of UDP header.
    out.push((
        "udp_truncated",
        ipv4(IPPROTO_UDP, &[0x9c, 0x40, 0x00, 0x35]),
    ));

    // UDP length field 4 < 8, with a full header and 4 payload bytes.
    out.push((
        "udp_length_lt_8",
        ipv4(
            IPPROTO_UDP,
            &[0x9c, 0x40, 0x00, 0x35, 0, 4, 0, 0, 1, 2, 3, 4],
        ),
    ));

    // 802.1Q TPID followed by only 2 of the 4 tag bytes.
    let mut f = eth(TPID_8021Q);
    f.extend_from_slice(&[0x00, 0x2a]);
    out.push(("vlan_truncated", f));

    let mut f = vec![0u8; 200];
    Rng::new(seed).fill(&mut f);
    out.push(("random_bytes", f));

    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::SlicedPacket;

    #[test]
    fn each_class_is_there_and_fails_as_named() {
        let frames = malformed_frames(1);
        let names: Vec<&str> = frames.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 16, "unique names");
        for (name, f) in &frames {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            let strict = SlicedPacket::from_ethernet(f);
            match *name {
                // Decodable frames that carry no IP.
                "unknown_ethertype" | "arp" => {
                    let p = strict.unwrap();
                    assert!(p.net.is_none() || matches!(p.net, Some(etherparse::NetSlice::Arp(_))));
                }
                "random_bytes" => assert_eq!(f.len(), 200),
                _ => assert!(strict.is_err(), "{name} must not parse"),
            }
        }
        assert_eq!(malformed_frames(1), frames, "deterministic");
        assert_ne!(malformed_frames(2).last(), frames.last());
    }

    #[test]
    fn complete_ipv4_headers_have_valid_checksums() {
        for (name, f) in malformed_frames(0) {
            let is_v4 = f.len() >= ETH_LEN + 20 && f[12..14] == [0x08, 0x00];
            if is_v4 {
                assert_eq!(wire::checksum(&f[ETH_LEN..ETH_LEN + 20]), 0, "{name}");
            }
        }
    }
}
