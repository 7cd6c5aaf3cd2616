//! Network layer: IPv4 and IPv6 (with extension headers and fragments).

use super::link::NetProto;
use super::transport;
use super::{Addr, DecodeError, Fragment, PacketMeta};
use etherparse::err::ipv4::HeaderSliceError as V4Err;
use etherparse::err::ipv6::HeaderSliceError as V6Err;
use etherparse::{
    IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

/// IPv6 extension headers walked before giving up. RFC 8200 §4.1 expects at most one of each
/// (two destination-options headers), i.e. 6-7 in a legitimate packet; long chains are an
/// evasion technique (RFC 7112) and a bound keeps the walk constant-time.
const MAX_IPV6_EXT_HEADERS: usize = 8;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;
const IPV6_HIP: u8 = 139;
const IPV6_SHIM6: u8 = 140;

/// Decodes an IP packet. `ip` is the captured bytes from the IP header on; `wire_len` is how
/// many bytes followed the link header on the wire.
///
/// `whole` says the capture holds the frame as it was on the wire (no snaplen cut): then a
/// length field larger than a TCP frame bigger than one MTU (see [`GRO_MIN_IP_BYTES`]), or
/// an IPv4 total length of 0 on TCP, is a segmentation-offloaded frame (GRO / TSO: the NIC or kernel merged segments, or left
/// the length to the hardware that never ran), and the length is taken from the frame, as
/// Zeek and Wireshark do. Such packets are marked [`PacketMeta::len_from_frame`].
pub(super) fn decode_ip(
    proto: NetProto,
    ip: &[u8],
    wire_len: usize,
    whole: bool,
) -> Result<PacketMeta, DecodeError> {
    let version = match proto {
        NetProto::Ipv4 => 4,
        NetProto::Ipv6 => 6,
        NetProto::ByVersion => ip.first().ok_or(DecodeError::TruncatedIp)? >> 4,
    };
    match version {
        4 => decode_v4(ip, wire_len, whole),
        6 => decode_v6(ip, wire_len, whole),
        _ => Err(DecodeError::BadIpHeader),
    }
}

fn decode_v4(ip: &[u8], wire_len: usize, whole: bool) -> Result<PacketMeta, DecodeError> {
    let hdr = Ipv4HeaderSlice::from_slice(ip).map_err(|e| match e {
        V4Err::Len(_) => DecodeError::TruncatedIp,
        V4Err::Content(_) => DecodeError::BadIpHeader,
    })?;
    let hlen = hdr.slice().len();
    let mut total = usize::from(hdr.total_len());
    let mut len_from_frame = false;
    if total == 0 && hdr.protocol().0 == super::proto::TCP && wire_len >= hlen {
        // TSO: the stack leaves the total length to the NIC, so a sensor on the sending
        // host captures 0 there. The frame says how long the segment is.
        total = wire_len;
        len_from_frame = true;
    }
    if total < hlen {
        return Err(DecodeError::BadIpHeader);
    }
    if total > wire_len {
        if !(whole && gro_sized(wire_len, hdr.protocol().0)) || wire_len < hlen {
            return Err(DecodeError::IpLengthExceedsFrame);
        }
        // GRO: a merged super-frame whose header does not describe it.
        total = wire_len;
        len_from_frame = true;
    }
    let wire_payload = total - hlen;
    let captured = ip.get(hlen..total.min(ip.len())).unwrap_or(&[]);
    let offset = hdr.fragments_offset().value();
    let id = u32::from(hdr.identification());
    let fragment = match (offset, hdr.more_fragments()) {
        (0, false) => Fragment::None,
        // The IPv4 header is at most 60 bytes.
        (0, true) => Fragment::First {
            id,
            data: hlen as u16,
        },
        // 13 bits of 8-byte units: at most 65 528 bytes.
        (o, more) => Fragment::Later {
            id,
            offset: o.wrapping_mul(8),
            more,
        },
    };
    let meta = PacketMeta {
        src: Addr::v4(hdr.source()),
        dst: Addr::v4(hdr.destination()),
        ipv6: false,
        proto: hdr.protocol().0,
        ip_len: total as u32,
        fragment,
        len_from_frame,
        ..PacketMeta::default()
    };
    finish(meta, hlen, captured, wire_payload)
}

fn decode_v6(ip: &[u8], wire_len: usize, whole: bool) -> Result<PacketMeta, DecodeError> {
    let hdr = Ipv6HeaderSlice::from_slice(ip).map_err(|e| match e {
        V6Err::Len(_) => DecodeError::TruncatedIp,
        V6Err::Content(_) => DecodeError::BadIpHeader,
    })?;
    let mut total = 40 + usize::from(hdr.payload_length());
    let mut len_from_frame = false;
    if total > wire_len {
        if !(whole && gro_sized(wire_len, hdr.next_header().0)) {
            return Err(DecodeError::IpLengthExceedsFrame);
        }
        // GRO super-frame (see `decode_ip`).
        total = wire_len;
        len_from_frame = true;
    }
    let mut meta = PacketMeta {
        src: Addr::v6(hdr.source()),
        dst: Addr::v6(hdr.destination()),
        ipv6: true,
        ip_len: total as u32,
        len_from_frame,
        ..PacketMeta::default()
    };

    // Walk the extension-header chain over the captured bytes.
    let mut next = hdr.next_header().0;
    let mut off = 40usize;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        let rest = ip.get(off..total.min(ip.len())).unwrap_or(&[]);
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_HIP
            | IPV6_SHIM6 => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest)
                    .map_err(|_| ext_error(off, total, ip.len()))?;
                next = ext.next_header().0;
                ext.slice().len()
            }
            IPV6_AUTH => {
                let ext = IpAuthHeaderSlice::from_slice(rest)
                    .map_err(|_| ext_error(off, total, ip.len()))?;
                next = ext.next_header().0;
                ext.slice().len()
            }
            IPV6_FRAGMENT => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|_| ext_error(off, total, ip.len()))?;
                next = frag.next_header().0;
                let id = frag.identification();
                let data = u16::try_from(off + frag.slice().len()).unwrap_or(u16::MAX);
                match (frag.fragment_offset().value(), frag.more_fragments()) {
                    // An atomic fragment (RFC 6946): a whole datagram.
                    (0, false) => {}
                    (0, true) => meta.fragment = Fragment::First { id, data },
                    (o, more) => {
                        meta.fragment = Fragment::Later {
                            id,
                            offset: o.wrapping_mul(8),
                            more,
                        }
                    }
                }
                frag.slice().len()
            }
            // ESP (50): the rest is encrypted; anything else is the upper layer.
            _ => {
                meta.proto = next;
                let captured = ip.get(off..total.min(ip.len())).unwrap_or(&[]);
                return finish(meta, off, captured, total - off);
            }
        };
        off += len;
        if off > total {
            return Err(DecodeError::BadIpHeader);
        }
        if matches!(meta.fragment, Fragment::Later { .. }) {
            // What follows a non-first fragment header is data, not a header.
            meta.proto = next;
            let captured = ip.get(off..total.min(ip.len())).unwrap_or(&[]);
            return finish(meta, off, captured, total - off);
        }
    }
    Err(DecodeError::BadIpHeader)
}

/// IP bytes beyond which a frame can only be an offloaded super-frame: one standard Ethernet
/// MTU. GRO merges TCP segments, so a length field that disagrees with a frame larger than
/// any single segment is the offload's doing; in a frame of ordinary size it is a broken
/// header (tcpdump's `ipv4_invalid_total_length` capture), and stays an error.
const GRO_MIN_IP_BYTES: usize = 1500;

fn gro_sized(wire_len: usize, proto: u8) -> bool {
    wire_len > GRO_MIN_IP_BYTES && proto == super::proto::TCP
}

/// An extension header that does not parse: cut off by the snaplen, or malformed.
fn ext_error(off: usize, total: usize, captured: usize) -> DecodeError {
    if captured < total && off < total {
        DecodeError::TruncatedIp
    } else {
        DecodeError::BadIpHeader
    }
}

/// Fills in the transport part. `l4_offset` is the upper-layer header's offset from the IP
/// header; `captured` its captured bytes; `wire_payload` its length on the wire.
fn finish(
    mut meta: PacketMeta,
    l4_offset: usize,
    captured: &[u8],
    wire_payload: usize,
) -> Result<PacketMeta, DecodeError> {
    let t = match meta.fragment {
        // No transport header in a later fragment: all of it is payload.
        Fragment::Later { .. } => transport::Transport {
            header_len: 0,
            payload_len: wire_payload,
            ..transport::Transport::default()
        },
        Fragment::First { .. } => transport::decode(meta.proto, captured, wire_payload, true)?,
        Fragment::None => transport::decode(meta.proto, captured, wire_payload, false)?,
    };
    meta.sport = t.sport;
    meta.dport = t.dport;
    meta.tcp_flags = t.tcp_flags;
    meta.tcp_seq = t.tcp_seq;
    meta.payload_len = t.payload_len as u32;
    meta.payload_offset = u16::try_from(l4_offset + t.header_len).unwrap_or(u16::MAX);
    Ok(meta)
}
