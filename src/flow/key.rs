//! The direction-free flow key.

use crate::decode::{Addr, PacketMeta, TunnelTag};

/// Identifies a bidirectional flow: (protocol, sorted endpoints, VLAN ids). Both directions
/// of a conversation produce the same key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The smaller (address, port) endpoint.
    pub lo: Addr,
    /// The larger endpoint's address.
    pub hi: Addr,
    /// Port of `lo` (0 for ICMP and port-less protocols).
    pub lo_port: u16,
    /// Port of `hi`.
    pub hi_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// IPv6 (true) or IPv4.
    pub ipv6: bool,
    /// Outer and inner VLAN ids (0 = untagged). Part of the key: the same addresses on two
    /// VLANs are two networks.
    pub vlan: [u16; 2],
    /// The innermost tunnel id (VNI, ERSPAN session, GRE key) the packets came through, or
    /// the marker of a tunnel's own outer flow: the same private addresses behind two
    /// mirrored VPCs are two networks.
    pub tunnel: TunnelTag,
}

impl FlowKey {
    /// The key of a packet, and whether the packet's source is the key's `hi` endpoint.
    #[inline]
    pub fn of(meta: &PacketMeta) -> (FlowKey, bool) {
        let ((lo, lo_port), (hi, hi_port), src_is_hi) = meta.canonical();
        (
            FlowKey {
                lo,
                hi,
                lo_port,
                hi_port,
                proto: meta.proto,
                ipv6: meta.ipv6,
                vlan: meta.vlan,
                tunnel: meta.tunnel,
            },
            src_is_hi,
        )
    }
}
