use super::*;
use etherparse::PacketBuilder;
use proptest::prelude::*;

fn tcp_v4(payload: usize, flags_syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 5], [203, 0, 113, 50], 64)
        .tcp(51234, 443, 1000, 65535);
    let b = if flags_syn { b.syn() } else { b.ack(1).psh() };
    let data = vec![0xab; payload];
    let mut out = Vec::with_capacity(b.size(payload));
    b.write(&mut out, &data).unwrap();
    out
}

#[test]
fn ethernet_ipv4_tcp() {
    let f = tcp_v4(100, false);
    let m = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
    assert_eq!(m.src, Addr::v4([10, 0, 0, 5]));
    assert_eq!(m.dst, Addr::v4([203, 0, 113, 50]));
    assert_eq!((m.sport, m.dport, m.proto), (51234, 443, proto::TCP));
    assert_eq!(m.ip_len, 20 + 20 + 100);
    assert_eq!(m.payload_len, 100);
    assert_eq!(m.tcp_flags, tcp_flags::ACK | tcp_flags::PSH);
    assert_eq!(m.l3_offset, 14);
    assert_eq!(m.payload_offset, 14 + 40);
    assert!(!m.ipv6);
}

#[test]
fn snaplen_cut_still_counts_wire_bytes() {
    let f = tcp_v4(1400, false);
    // Captured 96 bytes of a 1454-byte frame.
    let m = decode(LinkType::Ethernet, &f[..96], f.len() as u32).unwrap();
    assert_eq!(m.ip_len, 1440);
    assert_eq!(m.payload_len, 1400);
    // Cut after the first 14 bytes of the TCP header (options and window lost): the
    // ports and flags are still there.
    let m = decode(LinkType::Ethernet, &f[..48], f.len() as u32).unwrap();
    assert_eq!(
        (m.sport, m.dport, m.tcp_flags),
        (51234, 443, tcp_flags::ACK | tcp_flags::PSH)
    );
    assert_eq!(m.payload_len, 1400);
    // Cut inside the TCP header's first 14 bytes: reported as a capture truncation.
    assert_eq!(
        decode(LinkType::Ethernet, &f[..40], f.len() as u32),
        Err(DecodeError::TruncatedTransport)
    );
}

#[test]
fn vlan_and_qinq() {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .double_vlan(
            etherparse::VlanId::try_new(100).unwrap(),
            etherparse::VlanId::try_new(42).unwrap(),
        )
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 53);
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 30]).unwrap();
    let m = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
    assert_eq!(m.vlan, [100, 42]);
    assert_eq!(m.l3_offset, 22);
    assert_eq!(m.payload_len, 30);
    // A frame that ends inside a tag.
    assert_eq!(
        decode(LinkType::Ethernet, &f[..16], 16),
        Err(DecodeError::TruncatedLink)
    );
}

#[test]
fn ipv6_with_extension_headers_and_fragments() {
    // IPv6 / hop-by-hop (8 bytes) / fragment (first, more) / UDP.
    let mut ip = vec![0x60, 0, 0, 0];
    let udp_len = 8 + 16;
    let payload_len = 8 + 8 + udp_len;
    ip.extend_from_slice(&(payload_len as u16).to_be_bytes());
    ip.push(0); // next: hop-by-hop
    ip.push(64);
    ip.extend_from_slice(&[0xfd; 16]);
    ip.extend_from_slice(&[0x20; 16]);
    ip.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // HBH -> fragment, PadN
    ip.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 7]); // fragment: offset 0, M=1, id 7
    ip.extend_from_slice(&[0x13, 0x88, 0x00, 0x35]);
    ip.extend_from_slice(&(100u16).to_be_bytes()); // whole datagram's UDP length
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&[0u8; 16]);
    let m = decode(LinkType::RawIp, &ip, ip.len() as u32).unwrap();
    assert!(m.ipv6);
    assert_eq!(m.proto, proto::UDP);
    assert_eq!((m.sport, m.dport), (5000, 53));
    assert_eq!(m.fragment, Fragment::First { id: 7, data: 56 });
    assert_eq!(m.ip_len as usize, ip.len());
    assert_eq!(m.payload_len, 16);

    // The same fragment header with offset 8: no transport header follows.
    let mut later = ip.clone();
    later[50] = 0x00;
    later[51] = 0x40; // offset 8 (units of 8 bytes), M=0
    let m = decode(LinkType::RawIp, &later, later.len() as u32).unwrap();
    assert_eq!(
        m.fragment,
        Fragment::Later {
            id: 7,
            offset: 64,
            more: false
        }
    );
    assert_eq!((m.sport, m.dport), (0, 0));
    assert_eq!(m.payload_len as usize, udp_len);
}

#[test]
fn ipv4_fragments() {
    let f = tcp_v4(100, false);
    let mut first = f.clone();
    first[14 + 6] = 0x20; // MF
    let m = decode(LinkType::Ethernet, &first, first.len() as u32).unwrap();
    assert!(matches!(m.fragment, Fragment::First { data: 20, .. }));
    assert_eq!(m.sport, 51234);
    let mut later = f.clone();
    later[14 + 7] = 10; // offset 80 bytes
    let m = decode(LinkType::Ethernet, &later, later.len() as u32).unwrap();
    assert_eq!(
        m.fragment,
        Fragment::Later {
            id: u32::from(u16::from_be_bytes([f[18], f[19]])),
            offset: 80,
            more: false
        }
    );
    assert_eq!((m.sport, m.dport), (0, 0));
    assert_eq!(m.payload_len, 120);
}

#[test]
fn cooked_and_raw_links() {
    let eth = tcp_v4(10, true);
    let ip = &eth[14..];
    // SLL: packet type, ARPHRD, addr len, addr[8], protocol.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(ip);
    // SLL2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr[8].
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(ip);
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(ip);
    let want = decode(LinkType::Ethernet, &eth, eth.len() as u32).unwrap();
    for (link, f) in [
        (LinkType::LinuxSll, &sll),
        (LinkType::LinuxSll2, &sll2),
        (LinkType::Loopback, &null),
        (LinkType::RawIp, &ip.to_vec()),
    ] {
        let m = decode(link, f, f.len() as u32).unwrap();
        assert_eq!(
            (m.src, m.dst, m.sport, m.dport, m.ip_len),
            (want.src, want.dst, want.sport, want.dport, want.ip_len),
            "{link:?}"
        );
        assert_eq!(m.tcp_flags, tcp_flags::SYN);
    }
    assert_eq!(LinkType::from_dlt(276), LinkType::LinuxSll2);
    assert_eq!(
        decode(LinkType::from_dlt(147), &eth, eth.len() as u32),
        Err(DecodeError::UnsupportedLinkType)
    );
}

#[test]
fn malformed_headers_have_reasons() {
    let f = tcp_v4(0, true);
    let mut ihl = f.clone();
    ihl[14] = 0x44; // IHL 4
    assert_eq!(
        decode(LinkType::Ethernet, &ihl, ihl.len() as u32),
        Err(DecodeError::BadIpHeader)
    );
    let mut total = f.clone();
    total[16] = 0;
    total[17] = 10; // total length 10 < 20
    assert_eq!(
        decode(LinkType::Ethernet, &total, total.len() as u32),
        Err(DecodeError::BadIpHeader)
    );
    let mut long = f.clone();
    // Total length 4096+ > frame. Cut by a snaplen (the wire had more than the capture
    // holds): the header is wrong.
    long[16] = 0x10;
    assert_eq!(
        decode(LinkType::Ethernet, &long, long.len() as u32 + 10),
        Err(DecodeError::IpLengthExceedsFrame)
    );
    // The whole frame captured, of ordinary size: a broken header all the same.
    assert_eq!(
        decode(LinkType::Ethernet, &long, long.len() as u32),
        Err(DecodeError::IpLengthExceedsFrame)
    );
    // A whole TCP frame larger than one MTU: a GRO super-frame, the length comes from the
    // frame.
    let mut gro = long.clone();
    gro.resize(14 + 3000, 0);
    gro[16..18].copy_from_slice(&4000u16.to_be_bytes());
    let m = decode(LinkType::Ethernet, &gro, gro.len() as u32).unwrap();
    assert!(m.len_from_frame);
    assert_eq!(m.ip_len, 3000);
    assert_eq!(m.payload_len, 3000 - 40);
    // TSO: IPv4 total length 0 on TCP.
    let mut tso = f.clone();
    tso[16] = 0;
    tso[17] = 0;
    let m = decode(LinkType::Ethernet, &tso, tso.len() as u32).unwrap();
    assert!(m.len_from_frame);
    assert_eq!(m.ip_len as usize, tso.len() - 14);
    let mut doff = f.clone();
    doff[14 + 20 + 12] = 0x40; // TCP data offset 4
    assert_eq!(
        decode(LinkType::Ethernet, &doff, doff.len() as u32),
        Err(DecodeError::BadTransportHeader)
    );
    let mut arp = f.clone();
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(
        decode(LinkType::Ethernet, &arp, arp.len() as u32),
        Err(DecodeError::NonIp)
    );
    assert_eq!(
        decode(LinkType::Ethernet, &f[..10], 10),
        Err(DecodeError::TruncatedLink)
    );
    assert_eq!(
        decode(LinkType::Ethernet, &f[..20], 60),
        Err(DecodeError::TruncatedIp)
    );
}

#[test]
fn symmetric_hash_and_canonical_order() {
    let f = tcp_v4(10, false);
    let a = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
    let mut b = a;
    std::mem::swap(&mut b.src, &mut b.dst);
    std::mem::swap(&mut b.sport, &mut b.dport);
    assert_eq!(a.symmetric_hash(7), b.symmetric_hash(7));
    let (lo, hi, swapped) = a.canonical();
    let (lo2, hi2, swapped2) = b.canonical();
    assert_eq!((lo, hi), (lo2, hi2));
    assert_ne!(swapped, swapped2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Any bytes under any link type: a result, never a panic.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), link in 0usize..6, extra in 0u32..2000) {
        let link = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Loopback, LinkType::Unsupported(5)][link];
        let _ = decode(link, &data, data.len() as u32 + extra);
    }

    /// Real frames with bytes flipped and cut at any point: never a panic, and a decoded
    /// packet never claims more IP bytes than the wire carried.
    #[test]
    fn mutated_frames_never_panic(payload in 0usize..300, flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8), cut in 0usize..400) {
        let mut f = tcp_v4(payload, false);
        for (at, v) in flips {
            if let Some(b) = f.get_mut(at) { *b = v; }
        }
        let wire = f.len() as u32;
        let cut = cut.min(f.len());
        if let Ok(m) = decode(LinkType::Ethernet, &f[..cut], wire) {
            prop_assert!(m.ip_len as usize + m.l3_offset as usize <= wire as usize);
            prop_assert!(m.payload_len <= m.ip_len);
        }
    }

    /// Both directions of any flow get the same key hash.
    #[test]
    fn hash_is_symmetric(a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), sp in any::<u16>(), dp in any::<u16>(), proto in any::<u8>(), v6 in any::<bool>(), vlan in any::<[u16; 2]>()) {
        let m = PacketMeta { src: Addr(a), dst: Addr(b), sport: sp, dport: dp, proto, ipv6: v6, vlan, ..PacketMeta::default() };
        let r = PacketMeta { src: Addr(b), dst: Addr(a), sport: dp, dport: sp, ..m };
        prop_assert_eq!(m.symmetric_hash(9), r.symmetric_hash(9));
        prop_assert_eq!(m.canonical().0, r.canonical().0);
    }
}

// ---- review: tunnels ----

/// Tunnel seeds of the fuzz corpus (one frame each, Ethernet).
const TUNNEL_SEEDS: [&[u8]; 10] = [
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_erspan3_tcp.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_geneve_tcp.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_gre_erspan1_icmp.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_gre_erspan2_icmp.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_gre_gre_icmp.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_gtpu_ipv6.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_mpls.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_pppoe_ipv6.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_teredo.bin"),
    include_bytes!("../../fuzz/corpus/decode_frame/seed-eth_vxlan_icmp.bin"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Tunnelled frames with bytes flipped, cut, any wire length and any depth: never a
    /// panic, the tunnel list agrees with the depth, and no packet claims more IP bytes
    /// than the wire carried.
    #[test]
    fn mutated_tunnel_frames_hold_together(
        seed in 0usize..TUNNEL_SEEDS.len(),
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        cut in 0usize..200,
        extra in 0u32..3000,
        depth in 0u8..=8,
        outer_flows in any::<bool>(),
    ) {
        let mut f = TUNNEL_SEEDS[seed].to_vec();
        for (at, v) in flips {
            if let Some(b) = f.get_mut(at) { *b = v; }
        }
        let wire = f.len() as u32 + extra;
        let cut = cut.min(f.len());
        let decap = Decap { max_depth: depth, outer_flows, ..Decap::DEFAULT };
        for data in [&f[..], &f[..cut]] {
            let Ok(d) = decode_frame(LinkType::Ethernet, data, wire, &decap) else { continue };
            let chain = tunnel_chain(LinkType::Ethernet, data, wire, &decap);
            if d.inner_error.is_none() {
                prop_assert_eq!(usize::from(chain.len), usize::from(d.meta.encap.depth).min(MAX_CHAIN));
                prop_assert!(d.meta.encap.depth <= depth);
            }
            for m in std::iter::once(&d.meta).chain(d.outer.iter()) {
                prop_assert!(m.ip_len as usize + m.l3_offset as usize <= wire as usize);
                prop_assert!(m.payload_len <= m.ip_len);
            }
            prop_assert!(d.outer.is_none() || outer_flows);
        }
    }
}

/// A snaplen-cut VXLAN frame: the inner packet's wire length comes from the outer UDP
/// length, not from what was captured.
#[test]
fn snaplen_cut_vxlan_counts_the_inner_wire_length() {
    let inner = tcp_v4(1400, false);
    let cut = 14 + 20 + 20; // inner headers only
    let f = crate::gen::wrap_cut(
        crate::gen::Wrap::Vxlan { vni: 9 },
        &inner[..cut],
        inner.len(),
        1,
    );
    let wire = (f.len() - cut + inner.len()) as u32;
    let d = decode_frame(LinkType::Ethernet, &f, wire, &Decap::DEFAULT).unwrap();
    assert_eq!(d.inner_error, None);
    assert_eq!(d.meta.ip_len, 1440);
    assert_eq!(d.meta.payload_len, 1400);
    assert_eq!(d.meta.tunnel.id, 9);
    let o = d.outer.unwrap();
    assert_eq!(o.ip_len as usize, wire as usize - 14);
}

/// The fragments of a tunnel's outer packet (GRE over a 1500-byte path carrying
/// full-size frames: every one is fragmented) are not decapsulated (no outer
/// reassembly), and they are not marked as the tunnel's outer flow either: they form an
/// ordinary GRE flow with the same addresses, which is eligible to be reported as an
/// upload, while the README says the tunnel's own flow "is never outbound". GRE and
/// IP-in-IP fragments are recognisable by the IP protocol alone.
#[test]
fn fragments_of_a_gre_packet_count_in_the_tunnels_outer_flow() {
    let inner = tcp_v4(1400, false);
    // Ethernet + IPv4 (proto 47) + GRE (IPv4) + the inner IP packet.
    let mut payload = vec![0, 0, 0x08, 0x00];
    payload.extend_from_slice(&inner[14..]);
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 5], [203, 0, 113, 50], 64)
        .write(&mut f, etherparse::IpNumber(47), &payload)
        .unwrap();
    let whole = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &Decap::DEFAULT).unwrap();
    assert!(whole.outer.unwrap().tunnel.is_outer());
    let p = crate::gen::Packet { ts_ns: 0, frame: f };
    let frags = crate::gen::fragment_packet(&p, 14, 1000, 77);
    assert_eq!(frags.len(), 2);
    for fr in &frags {
        let d = decode_frame(
            LinkType::Ethernet,
            &fr.frame,
            fr.frame.len() as u32,
            &Decap::DEFAULT,
        )
        .unwrap();
        assert_ne!(d.meta.fragment, Fragment::None);
        assert!(
            d.meta.tunnel.is_outer(),
            "fragment {:?} is a plain flow",
            d.meta.fragment
        );
    }
}

/// Ethernet + IPv4 (172.31.0.10 → 172.31.0.99) + UDP to `dport` carrying `payload`.
fn outer_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([9; 6], [8; 6])
        .ipv4([172, 31, 0, 10], [172, 31, 0, 99], 64)
        .udp(49152, dport)
        .write(&mut f, payload)
        .unwrap();
    f
}

/// Ethernet + IPv4 + IP protocol `proto` carrying `payload`.
fn outer_ip(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([9; 6], [8; 6])
        .ipv4([172, 31, 0, 10], [172, 31, 0, 99], 64)
        .write(&mut f, etherparse::IpNumber(proto), payload)
        .unwrap();
    f
}

/// The inner TCP packet of `tcp_v4` decoded inside a tunnel: same addresses, ports, lengths.
fn assert_inner(d: &Decoded, kind: Option<TunnelKind>, depth: u8) {
    let m = &d.meta;
    assert_eq!(d.inner_error, None);
    assert_eq!(
        (m.src, m.dst),
        (Addr::v4([10, 0, 0, 5]), Addr::v4([203, 0, 113, 50]))
    );
    assert_eq!(
        (m.sport, m.dport, m.ip_len, m.payload_len),
        (51234, 443, 140, 100)
    );
    assert_eq!(m.encap.depth, depth);
    if let Some(k) = kind {
        assert!(m.encap.layers & k.layer().bit() != 0, "{:?}", m.encap);
    }
}

/// GRE in UDP (RFC 8086) with a key, Geneve carrying IPv4 directly, GTP-U with an extension
/// header, and MPLS/PPPoE link layers: each unwraps to the same inner packet.
#[test]
fn each_tunnel_type_unwraps_to_the_inner_packet() {
    let inner = tcp_v4(100, false);
    let ip = &inner[14..];
    let dflt = Decap::DEFAULT;

    // GRE-in-UDP: K bit, key 0x01020304, protocol IPv4.
    let mut p = vec![0x20, 0x00, 0x08, 0x00, 1, 2, 3, 4];
    p.extend_from_slice(ip);
    let f = outer_udp(4754, &p);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_inner(&d, Some(TunnelKind::GreUdp), 1);
    assert_eq!(d.meta.tunnel.id, 0x0102_0304);
    assert_eq!(d.outer.unwrap().tunnel.tunnel_kind(), TunnelKind::GreUdp);

    // Geneve, protocol IPv4, VNI 77, no options.
    let mut p = vec![0x00, 0x00, 0x08, 0x00, 0, 0, 77, 0];
    p.extend_from_slice(ip);
    let f = outer_udp(6081, &p);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_inner(&d, Some(TunnelKind::Geneve), 1);
    assert_eq!(d.meta.tunnel.id, 77);

    // GTP-U G-PDU with the E flag and one 4-byte extension header (PDU session container).
    let mut p = vec![0x34, 0xff, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0x85];
    p.extend_from_slice(&[1, 0x10, 0x01, 0x00]); // length 1 (4 bytes), ..., next type 0
    p.extend_from_slice(ip);
    let f = outer_udp(2152, &p);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_inner(&d, Some(TunnelKind::Gtp), 1);
    let chain = tunnel_chain(LinkType::Ethernet, &f, f.len() as u32, &dflt);
    assert_eq!(chain.hops()[0].id, Some(0xdead_beef));
    // GTP keys nothing: the TEID differs per direction.
    assert_eq!(d.meta.tunnel, TunnelTag::default());

    // MPLS: two labels, then an Ethernet pseudowire behind the control word.
    let mut f = vec![2; 12];
    f.extend_from_slice(&[0x88, 0x47, 0, 0x01, 0x00, 64, 0, 0x02, 0x01, 64]);
    f.extend_from_slice(&[0, 0, 0, 0]); // control word
    f.extend_from_slice(&inner);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_inner(&d, None, 0);
    assert!(d.meta.encap.layers & Layer::Mpls.bit() != 0);
    // MPLS straight to IPv4 (first nibble 4).
    let mut f = vec![2; 12];
    f.extend_from_slice(&[0x88, 0x47, 0, 0x01, 0x01, 64]);
    f.extend_from_slice(ip);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_eq!(d.meta.ip_len, 140);

    // PPPoE session, PPP protocol IPv4.
    let mut f = vec![2; 12];
    let len = (ip.len() + 2) as u16;
    f.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x07]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x21]);
    f.extend_from_slice(ip);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &dflt).unwrap();
    assert_eq!((d.meta.sport, d.meta.ip_len), (51234, 140));
    assert!(d.meta.encap.layers & Layer::Pppoe.bit() != 0);
    // Switched off, both are what they were before: not IP.
    let off = Decap {
        mpls: false,
        pppoe: false,
        ..Decap::DEFAULT
    };
    assert_eq!(
        decode_frame(LinkType::Ethernet, &f, f.len() as u32, &off),
        Err(DecodeError::NonIp)
    );
}

/// IP-in-IP nested six deep with `max_depth` 4: tracked on the fifth header (the deepest
/// reached), counted as too deep; and 0 turns unwrapping off altogether.
#[test]
fn nesting_beyond_the_depth_is_counted_not_followed() {
    let inner = tcp_v4(100, false);
    let mut ip = inner[14..].to_vec();
    for _ in 0..6 {
        let f = outer_ip(4, &ip);
        ip = f[14..].to_vec();
    }
    let mut f = vec![9; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &Decap::DEFAULT).unwrap();
    assert_eq!(d.meta.encap.depth, 4);
    assert!(d.meta.encap.too_deep);
    assert_eq!(
        d.meta.proto, 4,
        "the deepest layer reached is still IP-in-IP"
    );
    let mut counts = EncapCounts::default();
    counts.count(&d);
    assert_eq!(counts.too_deep, 1);
    let chain = tunnel_chain(LinkType::Ethernet, &f, f.len() as u32, &Decap::DEFAULT);
    assert_eq!(chain.len, 4);
    // Depth 6 allowed: the TCP packet inside.
    let six = Decap {
        max_depth: 6,
        ..Decap::DEFAULT
    };
    let d = decode_frame(LinkType::Ethernet, &f, f.len() as u32, &six).unwrap();
    assert_inner(&d, Some(TunnelKind::Ip), 6);
    assert!(!d.meta.encap.too_deep);
    // The chain keeps the outermost MAX_CHAIN hops.
    assert_eq!(
        tunnel_chain(LinkType::Ethernet, &f, f.len() as u32, &six).len as usize,
        MAX_CHAIN
    );
}

/// The first frame of Zeek's `Traces/communityid/sctp.pcap` (an SCTP INIT,
/// 192.168.170.8:7 → 192.168.170.56:7).
const SCTP_INIT: &str = "00600845e45500e018b10cad0800451000400000400040846498c0a8aa08c0a8aa38\
    00070007000000003761a74601000020432325440000ffff001100115cfe379fc0000004000c000600050000";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sctp_ports_are_read() {
    let f = hex(SCTP_INIT);
    let m = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
    assert_eq!((m.proto, m.sport, m.dport), (proto::SCTP, 7, 7));
    assert_eq!(m.ip_len, 64);
    // The 12-byte common header; the INIT chunk is payload.
    assert_eq!(m.payload_len, 64 - 20 - 12);
    assert_eq!(usize::from(m.payload_offset), 14 + 20 + 12);
    // Shorter than the common header: malformed, or cut by the snaplen.
    let mut short = f[..14 + 20 + 8].to_vec();
    short[17] = 28;
    assert_eq!(
        decode(LinkType::Ethernet, &short, short.len() as u32),
        Err(DecodeError::BadTransportHeader)
    );
    assert_eq!(
        decode(LinkType::Ethernet, &f[..14 + 20 + 2], f.len() as u32),
        Err(DecodeError::TruncatedTransport)
    );
}
