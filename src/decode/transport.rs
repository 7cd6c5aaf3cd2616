//! Transport layer: TCP, UDP, ICMP/ICMPv6 headers.

use super::{proto, DecodeError};
use etherparse::err::tcp::HeaderSliceError as TcpErr;
use etherparse::{TcpHeaderSlice, UdpHeaderSlice};

/// What the transport header tells the flow stage.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Transport {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub header_len: usize,
    pub payload_len: usize,
}

/// ICMP and ICMPv6 headers are 8 bytes (type, code, checksum, 4 bytes of rest-of-header);
/// what follows is counted as payload, as Zeek does.
const ICMP_HEADER_LEN: usize = 8;

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
            let tcp = TcpHeaderSlice::from_slice(captured).map_err(|e| match e {
                TcpErr::Len(_) => short,
                TcpErr::Content(_) => DecodeError::BadTransportHeader,
            })?;
            let header_len = tcp.slice().len();
            if header_len > wire {
                return Err(DecodeError::BadTransportHeader);
            }
            let mut flags = 0u8;
            for (set, bit) in [
                (tcp.fin(), super::tcp_flags::FIN),
                (tcp.syn(), super::tcp_flags::SYN),
                (tcp.rst(), super::tcp_flags::RST),
                (tcp.psh(), super::tcp_flags::PSH),
                (tcp.ack(), super::tcp_flags::ACK),
                (tcp.urg(), super::tcp_flags::URG),
            ] {
                if set {
                    flags |= bit;
                }
            }
            Ok(Transport {
                sport: tcp.source_port(),
                dport: tcp.destination_port(),
                tcp_flags: flags,
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
                header_len: 8,
                payload_len,
            })
        }
        proto::ICMP | proto::ICMPV6 => match captured {
            [ty, code, ..] => Ok(Transport {
                sport: u16::from(*ty),
                dport: u16::from(*code),
                tcp_flags: 0,
                header_len: ICMP_HEADER_LEN.min(wire),
                payload_len: wire.saturating_sub(ICMP_HEADER_LEN),
            }),
            _ => Err(short),
        },
        _ => Ok(Transport {
            payload_len: wire,
            ..Transport::default()
        }),
    }
}
