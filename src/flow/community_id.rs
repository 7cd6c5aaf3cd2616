//! Community ID v1 (corelight/community-id-spec): one string that names a flow the way
//! Zeek, Suricata, Arkime and Wireshark name it, so an analyst pivots between their logs and
//! outflow's with a string comparison.
//!
//! The worker hands on a flow's tuple ([`FlowTuple`], plain `Copy` data, no hashing); the
//! renderers (output thread, HTTP API) hash it with the configured seed
//! (`output.community_id_seed`) when they write a record. Never computed per packet, and
//! never allocating: the 30-character result lives in a fixed buffer ([`CommunityId`]).
//!
//! What is hashed (SHA-1), big-endian throughout: the seed (2 bytes), the source and the
//! destination address (4 or 16 bytes each), the IP protocol (1 byte), a zero byte, then
//! the source and destination port (2 bytes each) for TCP, UDP, SCTP, ICMP and ICMPv6 only.
//! The endpoints are first ordered so that the smaller (address, port) comes first, which
//! gives both directions of a flow the same id. ICMP and ICMPv6 have no ports: the message
//! type stands for the source port and, for the request/reply types Zeek pairs (echo,
//! timestamp, information, address mask, router and neighbour discovery, MLD, who-are-you,
//! home-agent discovery), the type of the counterpart message for the destination port, so
//! a request and its reply share an id. Any other message (errors, redirects) is "one-way":
//! its code is the destination port and the endpoints are never swapped. The id is `1:`
//! followed by the base64 of the digest.

use super::{Flow, FlowRecord};
use crate::decode::{proto, Addr};
use base64::Engine as _;
use sha1::Digest as _;
use std::net::IpAddr;

/// The spec's default seed, and outflow's (`output.community_id_seed`).
pub const DEFAULT_SEED: u16 = 0;

/// SCTP's IP protocol number: its ports are part of the id (RFC 9260 §3.1).
const SCTP: u8 = 132;

/// ICMP (RFC 792, 950) request/reply pairs, both ways: echo, router advertisement and
/// solicitation, timestamp, information, address mask (the spec's table, from Zeek).
const ICMP_PAIRS: [(u8, u8); 10] = [
    (8, 0),
    (0, 8),
    (13, 14),
    (14, 13),
    (15, 16),
    (16, 15),
    (10, 9),
    (9, 10),
    (17, 18),
    (18, 17),
];

/// ICMPv6 (RFC 4443, 4861, 2710, 6275) request/reply pairs, both ways: echo, MLD query and
/// report, router and neighbour solicitation and advertisement, who-are-you (node
/// information), home agent address discovery.
const ICMPV6_PAIRS: [(u8, u8); 12] = [
    (128, 129),
    (129, 128),
    (130, 131),
    (131, 130),
    (133, 134),
    (134, 133),
    (135, 136),
    (136, 135),
    (139, 140),
    (140, 139),
    (144, 145),
    (145, 144),
];

/// A flow as the Community ID sees it: protocol and the two endpoints, oriented as the
/// originator's first packet had them (for ICMP that orientation matters: see the module
/// documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowTuple {
    /// IP protocol.
    pub proto: u8,
    /// IPv6 (true) or IPv4.
    pub ipv6: bool,
    /// The originator (ICMP: the sender of the first message).
    pub src: Addr,
    /// The responder.
    pub dst: Addr,
    /// The originator's port (ICMP: the first message's type; 0 without ports).
    pub sport: u16,
    /// The responder's port (ICMP: the first message's code; 0 without ports).
    pub dport: u16,
}

impl FlowTuple {
    /// From std addresses (the family is the source's).
    pub fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowTuple {
        FlowTuple {
            proto,
            ipv6: src.is_ipv6(),
            src: Addr::from_ip(src),
            dst: Addr::from_ip(dst),
            sport,
            dport,
        }
    }

    /// The tuple of a flow record: originator → responder, ICMP with the first message's
    /// type and code (what the record's ports show).
    pub fn of_record(r: &FlowRecord) -> FlowTuple {
        FlowTuple {
            proto: r.proto,
            ipv6: r.ipv6,
            src: r.orig_addr,
            dst: r.resp_addr,
            sport: r.orig_port,
            dport: r.resp_port,
        }
    }

    /// The tuple of a live flow, as [`FlowTuple::of_record`] gives it for the flow's record.
    pub fn of_flow(f: &Flow) -> FlowTuple {
        let k = &f.key;
        let (src, sport, dst, dport) = if f.orig_is_hi {
            (k.hi, k.hi_port, k.lo, k.lo_port)
        } else {
            (k.lo, k.lo_port, k.hi, k.hi_port)
        };
        // ICMP keys carry no ports; the first message's type/code stand in (as in records).
        let (sport, dport) = if sport == 0 && dport == 0 {
            f.first_ports
        } else {
            (sport, dport)
        };
        FlowTuple {
            proto: k.proto,
            ipv6: k.ipv6,
            src,
            dst,
            sport,
            dport,
        }
    }

    /// The Community ID v1 of this flow under `seed`.
    pub fn community_id(&self, seed: u16) -> CommunityId {
        let (sport, dport, one_way) = match self.proto {
            proto::ICMP => icmp_ports(&ICMP_PAIRS, self.sport, self.dport),
            proto::ICMPV6 => icmp_ports(&ICMPV6_PAIRS, self.sport, self.dport),
            _ => (self.sport, self.dport, false),
        };
        let ports = matches!(
            self.proto,
            proto::TCP | proto::UDP | SCTP | proto::ICMP | proto::ICMPV6
        );
        let (a, b) = ((self.src, sport), (self.dst, dport));
        let ((sa, sp), (da, dp)) = if one_way || a <= b { (a, b) } else { (b, a) };
        // 2 + 16 + 16 + 1 + 1 + 2 + 2 bytes at most.
        let mut input = [0u8; 40];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = input.get_mut(n..n + bytes.len()) {
                dst.copy_from_slice(bytes);
                n += bytes.len();
            }
        };
        put(&seed.to_be_bytes());
        let addr = |x: &Addr| -> ([u8; 16], usize) {
            if self.ipv6 {
                (x.0, 0)
            } else {
                (x.0, 12)
            }
        };
        let (sa, from) = addr(&sa);
        put(sa.get(from..).unwrap_or_default());
        let (da, from) = addr(&da);
        put(da.get(from..).unwrap_or_default());
        put(&[self.proto, 0]);
        if ports {
            put(&sp.to_be_bytes());
            put(&dp.to_be_bytes());
        }
        let digest = sha1::Sha1::digest(input.get(..n).unwrap_or_default());
        let mut id = [0u8; CommunityId::LEN];
        id[0] = b'1';
        id[1] = b':';
        // Base64 of 20 bytes is always 28 characters: the buffer fits exactly.
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(digest, &mut id[2..])
            .unwrap_or(0);
        debug_assert_eq!(written, CommunityId::LEN - 2);
        CommunityId(id)
    }
}

/// ICMP type and code as (source port, destination port, one-way), as the spec maps them.
fn icmp_ports(pairs: &[(u8, u8)], ty: u16, code: u16) -> (u16, u16, bool) {
    match pairs.iter().find(|(t, _)| u16::from(*t) == ty) {
        Some(&(_, reply)) => (ty, u16::from(reply), false),
        None => (ty, code, true),
    }
}

/// A Community ID string (`1:` and 28 base64 characters), held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommunityId([u8; CommunityId::LEN]);

impl CommunityId {
    /// Length of a v1 id: `1:` and the base64 of a 20-byte SHA-1 digest.
    pub const LEN: usize = 30;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl serde::Serialize for CommunityId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(proto: u8, src: &str, sport: u16, dst: &str, dport: u16, seed: u16) -> String {
        let t = FlowTuple::new(
            proto,
            src.parse().unwrap(),
            sport,
            dst.parse().unwrap(),
            dport,
        );
        t.community_id(seed).to_string()
    }

    /// The reference implementation's test vectors (pycommunityid `tests/communityid_test.py`,
    /// the spec's recommended guide): (proto, src, sport, dst, dport, seed 0, seed 1). ICMP
    /// ports are the type and code.
    #[rustfmt::skip]
    const VECTORS: &[(u8, &str, u16, &str, u16, &str, &str)] = &[
        // ICMP echo request and its reply share an id.
        (1, "192.168.0.89", 8, "192.168.0.1", 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
        (1, "192.168.0.1", 0, "192.168.0.89", 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
        // Type 20 is not paired: one-way, the code counts.
        (1, "192.168.0.89", 20, "192.168.0.1", 0, "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=", "1:lCXHHxavE1Vq3oX9NH5ladQg02o="),
        (1, "192.168.0.89", 20, "192.168.0.1", 1, "1:tz/fHIDUHs19NkixVVoOZywde+I=", "1:Ie3wmFyxiEyikbsbcO03d2nh+PM="),
        // An echo reply's code is ignored.
        (1, "192.168.0.1", 0, "192.168.0.89", 20, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
        // Neighbour solicitation and advertisement.
        (58, "fe80::200:86ff:fe05:80da", 135, "fe80::260:97ff:fe07:69ea", 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
        (58, "fe80::260:97ff:fe07:69ea", 136, "fe80::200:86ff:fe05:80da", 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
        // Time exceeded is one-way: each direction its own id.
        (58, "3ffe:507:0:1:260:97ff:fe07:69ea", 3, "3ffe:507:0:1:200:86ff:fe05:80da", 0, "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=", "1:OlOWx9psIbBFi7lOCw/4MhlKR9M="),
        (58, "3ffe:507:0:1:200:86ff:fe05:80da", 3, "3ffe:507:0:1:260:97ff:fe07:69ea", 0, "1:/OGBt9BN1ofenrmSPWYicpij2Vc=", "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE="),
        (132, "192.168.170.8", 7, "192.168.170.56", 80, "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
        (132, "192.168.170.56", 80, "192.168.170.8", 7, "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
        (6, "128.232.110.120", 34855, "66.35.250.204", 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
        (6, "66.35.250.204", 80, "128.232.110.120", 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
        // pycommunityid issue 3: ports compare as numbers (10 < 11569), not as text.
        (6, "10.0.0.1", 10, "10.0.0.2", 11569, "1:SXBGMX1lBOwhhoDrZynfROxnhnM=", "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo="),
        (17, "192.168.1.52", 54585, "8.8.8.8", 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
        (17, "8.8.8.8", 53, "192.168.1.52", 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
        // RSVP (46) has no ports: addresses and protocol only.
        (46, "10.1.24.4", 0, "10.1.12.1", 0, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
        (46, "10.1.12.1", 0, "10.1.24.4", 0, "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
    ];

    #[test]
    fn reference_vectors() {
        for &(p, src, sport, dst, dport, seed0, seed1) in VECTORS {
            assert_eq!(id(p, src, sport, dst, dport, 0), seed0, "{p} {src} {dst}");
            assert_eq!(id(p, src, sport, dst, dport, 1), seed1, "{p} {src} {dst}");
        }
    }

    /// The spec's baseline (community-id-spec `baseline/baseline_deflt.json`, seed 0) for
    /// the tuples the vectors above do not cover.
    #[test]
    #[rustfmt::skip]
    fn spec_baseline() {
        for (p, src, sport, dst, dport, want) in [
            (58, "fe80::260:97ff:fe07:69ea", 135, "fe80::200:86ff:fe05:80da", 136, "1:zavyT/cezQr1fmImYCwYnMXbgck="),
            (58, "3ffe:501:1800:2345::2", 3, "3ffe:507:0:1:200:86ff:fe05:80da", 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="),
            (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", 1, "3ffe:507:0:1:200:86ff:fe05:80da", 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0="),
            (58, "3ffe:501:0:1001::2", 129, "3ffe:507:0:1:200:86ff:fe05:80da", 128, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
            (58, "fe80::200:86ff:fe05:80da", 133, "ff02::2", 134, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="),
            (58, "fe80::260:97ff:fe07:69ea", 134, "ff02::1", 133, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
            (1, "10.0.0.1", 11, "10.0.0.2", 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM="),
            (6, "2607:f8b0:400c:c03::1a", 25, "2001:470:e5bf:dead:4957:2174:e82c:4887", 63943, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
            (132, "192.168.170.56", 7, "192.168.170.8", 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
            (46, "10.1.12.2", 0, "10.1.12.1", 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
        ] {
            assert_eq!(id(p, src, sport, dst, dport, DEFAULT_SEED), want, "{p} {src} {dst}");
        }
    }

    #[test]
    fn a_record_and_its_flow_give_the_same_tuple() {
        use crate::decode::PacketMeta;
        use crate::flow::{EndReason, FlowKey, TcpState};
        // An ICMP echo reply seen first, from the hi endpoint: the record shows its
        // type/code and the id is the echo pair's.
        let meta = PacketMeta {
            src: Addr::v4([192, 168, 0, 89]),
            dst: Addr::v4([192, 168, 0, 1]),
            proto: proto::ICMP,
            sport: 8,
            dport: 0,
            ..PacketMeta::default()
        };
        let (key, src_is_hi) = FlowKey::of(&meta);
        let flow = Flow {
            key,
            id: 1,
            orig_is_hi: src_is_hi,
            first_ns: 0,
            last_ns: 0,
            orig: Default::default(),
            resp: Default::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: TcpState::NotTcp,
            first_ports: (8, 0),
            outbound: None,
            latch: 0,
            next_seq: [None; 2],
            reset: false,
            recording: false,
            carried: Default::default(),
            tap: false,
        };
        let t = FlowTuple::of_flow(&flow);
        assert_eq!(
            t,
            FlowTuple::of_record(&FlowRecord::of(&flow, EndReason::Idle))
        );
        assert_eq!(t.community_id(0).as_str(), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
    }

    proptest! {
        /// Both directions of a TCP, UDP or SCTP flow, and of an ICMP request and its
        /// reply, have one id.
        #[test]
        fn direction_free(
            a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), ipv6 in any::<bool>(),
            sp in any::<u16>(), dp in any::<u16>(), p in prop::sample::select(vec![6u8, 17, 132]),
            seed in any::<u16>(), pair in 0usize..ICMPV6_PAIRS.len(),
        ) {
            let (a, b) = if ipv6 {
                (Addr(a), Addr(b))
            } else {
                (Addr::v4([a[0], a[1], a[2], a[3]]), Addr::v4([b[0], b[1], b[2], b[3]]))
            };
            let t = FlowTuple { proto: p, ipv6, src: a, dst: b, sport: sp, dport: dp };
            let r = FlowTuple { src: b, dst: a, sport: dp, dport: sp, ..t };
            prop_assert_eq!(t.community_id(seed), r.community_id(seed));
            let (pr, table) = if ipv6 {
                (proto::ICMPV6, &ICMPV6_PAIRS[..])
            } else {
                (proto::ICMP, &ICMP_PAIRS[..])
            };
            let (req, rep) = table[pair % table.len()];
            let q = FlowTuple { proto: pr, sport: req.into(), dport: 0, ..t };
            let s = FlowTuple { proto: pr, src: b, dst: a, sport: rep.into(), dport: 0, ..t };
            prop_assert_eq!(q.community_id(seed), s.community_id(seed));
            prop_assert_eq!(q.community_id(seed).as_str().len(), CommunityId::LEN);
        }
    }
}
