//! Transport layer: TCP, UDP, SCTP, ICMP/ICMPv6 headers.

use super::{proto, DecodeError};
use etherparse::err::tcp::HeaderSliceError as TcpErr;
use etherparse::{TcpHeaderSlice, UdpHeaderSlice};

/// What the transport header tells the flow stage.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Transport {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub header_len: usize,
    pub payload_len: usize,
}

/// ICMP and ICMPv6 headers are 8 bytes (type, code, checksum, 4 bytes of rest-of-header);
/// what follows is counted as payload, as Zeek does.
const ICMP_HEADER_LEN: usize = 8;

/// SCTP's common header (RFC 9260 §3.1): ports, verification tag, checksum. Only the ports
/// are kept: they make SCTP associations flows of their own, as Zeek, Suricata and the
/// Community ID see them; the chunks after the header count as payload.
const SCTP_HEADER_LEN: usize = 12;

/// Decodes the transport header from `captured` (what the capture holds of the IP payload);
/// `wire` is the IP payload length on the wire. A first fragment carries a header whose
/// length fields describe the whole datagram, so those are not checked against `wire`.
pub(super) fn decode(
    ip_proto: u8,
    captured: &[u8],
    wire: usize,
    first_fragment: bool,
) -> Result<Transport, DecodeError> {
    // Where the capture holds fewer bytes than the wire carried, a short header is the
    // snaplen's doing; otherwise the packet itself is too short.
    let short = if captured.len() < wire {
        DecodeError::TruncatedTransport
    } else {
        DecodeError::BadTransportHeader
    };
    match ip_proto {
        proto::TCP => {
            let (sport, dport, flags, seq, header_len) = match TcpHeaderSlice::from_slice(captured)
            {
                Ok(tcp) => (
                    tcp.source_port(),
                    tcp.destination_port(),
                    flag_byte(&tcp),
                    tcp.sequence_number(),
                    tcp.slice().len(),
                ),
                Err(TcpErr::Content(_)) => return Err(DecodeError::BadTransportHeader),
                // A snaplen of 64-68 bytes (tcpdump's old default) often cuts the TCP
                // options, or with VLAN tags even the window field. Ports and flags sit in
                // the first 14 bytes, so read those ourselves rather than lose the packet.
                Err(TcpErr::Len(_)) => tcp_fixed_part(captured, wire).ok_or(short)?,
            };
            if header_len > wire {
                return Err(DecodeError::BadTransportHeader);
            }
            Ok(Transport {
                sport,
                dport,
                tcp_flags: flags,
                tcp_seq: seq,
                header_len,
                payload_len: wire - header_len,
            })
        }
        proto::UDP => {
            let udp = UdpHeaderSlice::from_slice(captured).map_err(|_| short)?;
            let udp_len = usize::from(udp.length());
            let payload_len = if first_fragment {
                wire.saturating_sub(8)
            } else {
                // The length field must cover the header and fit the IP payload (trailing
                // bytes past it are padding, which we do not count as payload).
                if udp_len < 8 || udp_len > wire {
                    return Err(DecodeError::BadTransportHeader);
                }
                udp_len - 8
            };
            Ok(Transport {
                sport: udp.source_port(),
                dport: udp.destination_port(),
                tcp_flags: 0,
                tcp_seq: 0,
                header_len: 8,
                payload_len,
            })
        }
        proto::ICMP | proto::ICMPV6 => match captured {
            [ty, code, ..] => Ok(Transport {
                sport: u16::from(*ty),
                dport: u16::from(*code),
                tcp_flags: 0,
                tcp_seq: 0,
                header_len: ICMP_HEADER_LEN.min(wire),
                payload_len: wire.saturating_sub(ICMP_HEADER_LEN),
            }),
            _ => Err(short),
        },
        proto::SCTP => match captured {
            [s0, s1, d0, d1, ..] if wire >= SCTP_HEADER_LEN => Ok(Transport {
                sport: u16::from_be_bytes([*s0, *s1]),
                dport: u16::from_be_bytes([*d0, *d1]),
                tcp_flags: 0,
                tcp_seq: 0,
                header_len: SCTP_HEADER_LEN,
                payload_len: wire - SCTP_HEADER_LEN,
            }),
            [_, _, _, _, ..] => Err(DecodeError::BadTransportHeader),
            _ => Err(short),
        },
        _ => Ok(Transport {
            payload_len: wire,
            ..Transport::default()
        }),
    }
}

/// Flags byte (FIN..URG) from a checked TCP header.
fn flag_byte(tcp: &TcpHeaderSlice<'_>) -> u8 {
    use super::tcp_flags::*;
    let mut flags = 0u8;
    for (set, bit) in [
        (tcp.fin(), FIN),
        (tcp.syn(), SYN),
        (tcp.rst(), RST),
        (tcp.psh(), PSH),
        (tcp.ack(), ACK),
        (tcp.urg(), URG),
    ] {
        if set {
            flags |= bit;
        }
    }
    flags
}

/// Ports, flags and header length from the first 14 bytes of a TCP header (ports, sequence
/// and ack numbers, data offset, flags) whose rest was not captured; only when the wire
/// carried more than the capture holds.
fn tcp_fixed_part(captured: &[u8], wire: usize) -> Option<(u16, u16, u8, u32, usize)> {
    if captured.len() >= wire {
        return None;
    }
    let fixed: &[u8; 14] = captured.get(..14)?.try_into().ok()?;
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < 20 {
        return None;
    }
    Some((
        u16::from_be_bytes([fixed[0], fixed[1]]),
        u16::from_be_bytes([fixed[2], fixed[3]]),
        fixed[13] & 0x3f,
        u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        header_len,
    ))
}
