//! Link layer: finds where the IP header starts and collects VLAN ids.

use super::{Decap, DecodeError, Layer};
use etherparse::{Ethernet2HeaderSlice, LinuxSllHeaderSlice, SingleVlanHeaderSlice};

/// Link types outflow decodes, from the capture file's (or interface's) DLT / LINKTYPE value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// DLT_EN10MB (1): Ethernet II, with optional 802.1Q / 802.1ad tags.
    Ethernet,
    /// DLT_NULL (0) and DLT_LOOP (108): 4-byte address family, then IP.
    Loopback,
    /// DLT_RAW (12, 14), LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): bare IP.
    RawIp,
    /// LINKTYPE_LINUX_SLL (113): Linux "cooked" capture v1, 16-byte header.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux "cooked" capture v2, 20-byte header.
    LinuxSll2,
    /// Anything else: every frame is counted as `unsupported_link_type`.
    Unsupported(i32),
}

impl LinkType {
    /// Maps a DLT / LINKTYPE number to a link type.
    pub fn from_dlt(dlt: i32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            0 | 108 => LinkType::Loopback,
            12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            other => LinkType::Unsupported(other),
        }
    }

    /// The LINKTYPE number written into pcap files (slices, tests).
    pub fn linktype(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::Loopback => 0,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::Unsupported(n) => n as u32,
        }
    }
}

/// The network protocol a link header announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NetProto {
    Ipv4,
    Ipv6,
    /// No type field (raw IP, loopback): read the IP version nibble.
    ByVersion,
}

/// Result of peeling the link layer.
pub(super) struct L2 {
    pub ip_offset: usize,
    pub ether_type: NetProto,
    pub vlan: [u16; 2],
    /// Link-level encapsulations peeled on the way ([`super::Layer`] bits: MPLS, PPPoE).
    pub layers: u16,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MULTICAST: u16 = 0x8848;
const ETH_PPPOE_SESSION: u16 = 0x8864;
/// PPP protocol numbers carried in PPPoE session frames (RFC 1332, RFC 5072).
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// MPLS labels peeled before giving up. Real stacks are 1-4 deep (VPN + transport +
/// entropy labels); the bound keeps a frame of nothing but labels constant-time.
const MAX_MPLS_LABELS: usize = 8;
/// Ethernet frames unwrapped inside one link layer (an Ethernet pseudowire inside MPLS).
/// One is what real networks carry; the bound stops a crafted nest from looping.
const MAX_LINK_NESTING: usize = 2;
/// Tags peeled before giving up. Two (QinQ) are common on carrier links; more are legal but
/// rare, and a bound stops a frame of nothing but tags from costing more than a few reads.
const MAX_VLAN_TAGS: usize = 4;
/// SLL2 header length (protocol type, reserved, ifindex, ARPHRD, packet type, addr len, addr).
const SLL2_LEN: usize = 20;

pub(super) fn peel(link: LinkType, data: &[u8], decap: &Decap) -> Result<L2, DecodeError> {
    match link {
        LinkType::Ethernet => peel_ethernet(data, 0, decap),
        LinkType::LinuxSll => {
            let sll =
                LinuxSllHeaderSlice::from_slice(data).map_err(|_| DecodeError::TruncatedLink)?;
            // The protocol type field (bytes 14..16) holds the EtherType for IP frames.
            let proto = be16(sll.slice(), 14).ok_or(DecodeError::TruncatedLink)?;
            peel_ether_type(data, sll.slice().len(), proto, decap)
        }
        LinkType::LinuxSll2 => {
            // etherparse has no SLL2 view; the protocol type is the first field.
            if data.len() < SLL2_LEN {
                return Err(DecodeError::TruncatedLink);
            }
            let proto = be16(data, 0).ok_or(DecodeError::TruncatedLink)?;
            peel_ether_type(data, SLL2_LEN, proto, decap)
        }
        LinkType::Loopback => {
            // The 4-byte family is in the capturing host's byte order and its value for IPv6
            // differs between BSDs, so the IP version nibble is the reliable signal.
            if data.len() < 4 {
                return Err(DecodeError::TruncatedLink);
            }
            Ok(L2 {
                ip_offset: 4,
                ether_type: NetProto::ByVersion,
                vlan: [0; 2],
                layers: 0,
            })
        }
        LinkType::RawIp => Ok(L2 {
            ip_offset: 0,
            ether_type: NetProto::ByVersion,
            vlan: [0; 2],
            layers: 0,
        }),
        LinkType::Unsupported(_) => Err(DecodeError::UnsupportedLinkType),
    }
}

/// An Ethernet II header at `offset`.
fn peel_ethernet(data: &[u8], offset: usize, decap: &Decap) -> Result<L2, DecodeError> {
    let rest = data.get(offset..).ok_or(DecodeError::TruncatedLink)?;
    let eth = Ethernet2HeaderSlice::from_slice(rest).map_err(|_| DecodeError::TruncatedLink)?;
    peel_ether_type(data, offset + eth.slice().len(), eth.ether_type().0, decap)
}

/// Walks what follows an EtherType: VLAN tags, MPLS label stacks (with an Ethernet
/// pseudowire behind a control word) and PPPoE session headers, until IP.
fn peel_ether_type(
    data: &[u8],
    mut offset: usize,
    mut ether_type: u16,
    decap: &Decap,
) -> Result<L2, DecodeError> {
    let mut vlan = [0u16; 2];
    let mut tags = 0usize;
    let mut layers = 0u16;
    let mut nested = 0usize;
    loop {
        match ether_type {
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
                if tags == MAX_VLAN_TAGS {
                    return Err(DecodeError::TruncatedLink);
                }
                let rest = data.get(offset..).ok_or(DecodeError::TruncatedLink)?;
                let tag = SingleVlanHeaderSlice::from_slice(rest)
                    .map_err(|_| DecodeError::TruncatedLink)?;
                if let Some(slot) = vlan.get_mut(tags) {
                    *slot = tag.vlan_identifier().value();
                }
                tags += 1;
                ether_type = tag.ether_type().0;
                offset += tag.slice().len();
            }
            ETH_MPLS | ETH_MPLS_MULTICAST if decap.mpls => {
                layers |= Layer::Mpls.bit();
                offset = mpls_stack_end(data, offset)?;
                // RFC 4385: what follows the stack is not typed. IP starts with its version
                // nibble; an Ethernet pseudowire with the control word starts with nibble 0.
                // Without a control word a pseudowire's first byte is a MAC address, which
                // may start with 4 or 6 too: that ambiguity is resolved as IP, like
                // Wireshark and Suricata do.
                match data.get(offset).map(|b| b >> 4) {
                    Some(4) => ether_type = ETH_IPV4,
                    Some(6) => ether_type = ETH_IPV6,
                    Some(0) if nested < MAX_LINK_NESTING => {
                        nested += 1;
                        let eth_at = offset + 4;
                        let rest = data.get(eth_at..).ok_or(DecodeError::TruncatedLink)?;
                        let eth = Ethernet2HeaderSlice::from_slice(rest)
                            .map_err(|_| DecodeError::TruncatedLink)?;
                        offset = eth_at + eth.slice().len();
                        ether_type = eth.ether_type().0;
                    }
                    Some(_) => return Err(DecodeError::NonIp),
                    None => return Err(DecodeError::TruncatedLink),
                }
            }
            ETH_PPPOE_SESSION if decap.pppoe => {
                layers |= Layer::Pppoe.bit();
                // RFC 2516: ver/type, code, session id, length; then the PPP protocol.
                let proto = be16(data, offset + 6).ok_or(DecodeError::TruncatedLink)?;
                offset += 8;
                ether_type = match proto {
                    PPP_IPV4 => ETH_IPV4,
                    PPP_IPV6 => ETH_IPV6,
                    // LCP, IPCP, CHAP...: session control, not IP.
                    _ => return Err(DecodeError::NonIp),
                };
            }
            ETH_IPV4 => {
                return Ok(L2 {
                    ip_offset: offset,
                    ether_type: NetProto::Ipv4,
                    vlan,
                    layers,
                })
            }
            ETH_IPV6 => {
                return Ok(L2 {
                    ip_offset: offset,
                    ether_type: NetProto::Ipv6,
                    vlan,
                    layers,
                })
            }
            _ => return Err(DecodeError::NonIp),
        }
    }
}

/// Offset just past the bottom-of-stack label of the MPLS stack at `offset`.
fn mpls_stack_end(data: &[u8], mut offset: usize) -> Result<usize, DecodeError> {
    for _ in 0..MAX_MPLS_LABELS {
        let label = data
            .get(offset..offset + 4)
            .ok_or(DecodeError::TruncatedLink)?;
        offset += 4;
        // Bit 8 of the third byte: bottom of stack.
        if label.get(2).is_some_and(|b| b & 0x01 == 1) {
            return Ok(offset);
        }
    }
    Err(DecodeError::BadEncapsulation)
}

/// An MPLS label stack inside a tunnel (GRE protocol 0x8847).
pub(super) fn peel_mpls(data: &[u8], offset: usize, decap: &Decap) -> Result<L2, DecodeError> {
    peel_ether_type(data, offset, ETH_MPLS, decap)
}

/// The Ethernet frame inside a tunnel (VXLAN, Geneve, GRE transparent bridging, ERSPAN).
pub(super) fn peel_inner_ethernet(
    data: &[u8],
    offset: usize,
    decap: &Decap,
) -> Result<L2, DecodeError> {
    peel_ethernet(data, offset, decap)
}

/// Big-endian u16 at `at`, if the slice holds it.
pub(super) fn be16(data: &[u8], at: usize) -> Option<u16> {
    match data.get(at..at.checked_add(2)?)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}
