//! Link layer: finds where the IP header starts and collects VLAN ids.

use super::DecodeError;
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
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
/// Tags peeled before giving up. Two (QinQ) are common on carrier links; more are legal but
/// rare, and a bound stops a frame of nothing but tags from costing more than a few reads.
const MAX_VLAN_TAGS: usize = 4;
/// SLL2 header length (protocol type, reserved, ifindex, ARPHRD, packet type, addr len, addr).
const SLL2_LEN: usize = 20;

pub(super) fn peel(link: LinkType, data: &[u8]) -> Result<L2, DecodeError> {
    match link {
        LinkType::Ethernet => {
            let eth =
                Ethernet2HeaderSlice::from_slice(data).map_err(|_| DecodeError::TruncatedLink)?;
            peel_ether_type(data, eth.slice().len(), eth.ether_type().0)
        }
        LinkType::LinuxSll => {
            let sll =
                LinuxSllHeaderSlice::from_slice(data).map_err(|_| DecodeError::TruncatedLink)?;
            // The protocol type field (bytes 14..16) holds the EtherType for IP frames.
            let proto = be16(sll.slice(), 14).ok_or(DecodeError::TruncatedLink)?;
            peel_ether_type(data, sll.slice().len(), proto)
        }
        LinkType::LinuxSll2 => {
            // etherparse has no SLL2 view; the protocol type is the first field.
            if data.len() < SLL2_LEN {
                return Err(DecodeError::TruncatedLink);
            }
            let proto = be16(data, 0).ok_or(DecodeError::TruncatedLink)?;
            peel_ether_type(data, SLL2_LEN, proto)
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
            })
        }
        LinkType::RawIp => Ok(L2 {
            ip_offset: 0,
            ether_type: NetProto::ByVersion,
            vlan: [0; 2],
        }),
        LinkType::Unsupported(_) => Err(DecodeError::UnsupportedLinkType),
    }
}

fn peel_ether_type(data: &[u8], mut offset: usize, mut ether_type: u16) -> Result<L2, DecodeError> {
    let mut vlan = [0u16; 2];
    let mut tags = 0usize;
    while matches!(ether_type, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
        if tags == MAX_VLAN_TAGS {
            return Err(DecodeError::TruncatedLink);
        }
        let rest = data.get(offset..).ok_or(DecodeError::TruncatedLink)?;
        let tag =
            SingleVlanHeaderSlice::from_slice(rest).map_err(|_| DecodeError::TruncatedLink)?;
        if let Some(slot) = vlan.get_mut(tags) {
            *slot = tag.vlan_identifier().value();
        }
        tags += 1;
        ether_type = tag.ether_type().0;
        offset += tag.slice().len();
    }
    let ether_type = match ether_type {
        ETH_IPV4 => NetProto::Ipv4,
        ETH_IPV6 => NetProto::Ipv6,
        _ => return Err(DecodeError::NonIp),
    };
    Ok(L2 {
        ip_offset: offset,
        ether_type,
        vlan,
    })
}

/// Big-endian u16 at `at`, if the slice holds it.
pub(super) fn be16(data: &[u8], at: usize) -> Option<u16> {
    match data.get(at..at.checked_add(2)?)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}
