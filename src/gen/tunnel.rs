//! Tunnel wrappers for generated captures: the frames of a session, as a cloud or SPAN
//! mirror would deliver them (VXLAN, Geneve, ERSPAN type III), so tests can check that
//! flows are tracked and alerts raised on the inner headers.

use etherparse::{IpNumber, Ipv4Header};

/// How to wrap each Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// VXLAN to UDP 4789 with this VNI (AWS Traffic Mirroring, Azure vTAP).
    Vxlan {
        /// The VNI.
        vni: u32,
    },
    /// Geneve to UDP 6081 with this VNI and one 8-byte option (GCP, AWS GWLB add options).
    Geneve {
        /// The VNI.
        vni: u32,
    },
    /// ERSPAN type III in GRE (sequence numbers on) with this session id, with the
    /// optional 8-byte platform subheader.
    ErspanIII {
        /// The mirror session (10 bits).
        session: u16,
    },
}

/// Outer addresses of generated mirror traffic: the mirror source and the sensor.
pub const MIRROR_SRC: [u8; 4] = [172, 31, 0, 10];
/// The sensor's address on the mirror network.
pub const MIRROR_DST: [u8; 4] = [172, 31, 0, 99];

/// Wraps one Ethernet frame (`inner`, the `seq`-th of the capture) in Ethernet + IPv4 +
/// the tunnel, from [`MIRROR_SRC`] to [`MIRROR_DST`]. The UDP source port is a hash of the
/// inner frame's addresses, as VXLAN senders do.
pub fn wrap(w: Wrap, inner: &[u8], seq: u32) -> Vec<u8> {
    wrap_cut(w, inner, inner.len(), seq)
}

/// [`wrap`] for a frame a snaplen cut: `inner` is what was captured of a frame that was
/// `inner_len` bytes on the wire; the outer length fields describe the whole frame (write
/// the result with an original length of `len() - inner.len() + inner_len`).
pub fn wrap_cut(w: Wrap, inner: &[u8], inner_len: usize, seq: u32) -> Vec<u8> {
    let inner_len = inner_len.max(inner.len());
    let mut payload = Vec::with_capacity(inner.len() + 40);
    let (proto, udp_dport) = match w {
        Wrap::Vxlan { vni } => {
            payload.extend_from_slice(&[0x08, 0, 0, 0]);
            payload.extend_from_slice(&(vni << 8).to_be_bytes());
            (IpNumber::UDP, Some(4789u16))
        }
        Wrap::Geneve { vni } => {
            // Version 0, 2 words of options; protocol: transparent Ethernet bridging.
            payload.extend_from_slice(&[0x02, 0, 0x65, 0x58]);
            payload.extend_from_slice(&(vni << 8).to_be_bytes());
            // One option: class 0x0103, type 0x80, length 1 word, 4 bytes of data.
            payload.extend_from_slice(&[0x01, 0x03, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef]);
            (IpNumber::UDP, Some(6081))
        }
        Wrap::ErspanIII { session } => {
            // GRE: S bit, protocol 0x22eb; sequence number.
            payload.extend_from_slice(&[0x10, 0x00, 0x22, 0xeb]);
            payload.extend_from_slice(&seq.to_be_bytes());
            // ERSPAN III: version 2, VLAN 0 | COS, BSO, T, session | timestamp | SGT,
            // P, FT=0 (Ethernet), HW id, D, Gra, O=1 | platform subheader (8 bytes).
            payload.extend_from_slice(&(0x2000_0000u32 | u32::from(session & 0x3ff)).to_be_bytes());
            payload.extend_from_slice(&seq.wrapping_mul(1000).to_be_bytes());
            payload.extend_from_slice(&[0, 0, 0x00, 0x01]);
            payload.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
            (IpNumber::GRE, None)
        }
    };
    payload.extend_from_slice(inner);
    let mut frame = Vec::with_capacity(payload.len() + 42);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x10, 0x08, 0x00]);
    let l4_len = payload.len() - inner.len() + inner_len + if udp_dport.is_some() { 8 } else { 0 };
    let ip = Ipv4Header::new(l4_len as u16, 64, proto, MIRROR_SRC, MIRROR_DST)
        .map(|mut h| {
            h.header_checksum = h.calc_header_checksum();
            h
        })
        .unwrap_or_default();
    // A header that does not serialise cannot happen for these sizes (< 64 KiB).
    let _ = ip.write(&mut frame);
    if let Some(dport) = udp_dport {
        let sport = 49152 | (fold(inner) & 0x3fff);
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&(l4_len as u16).to_be_bytes());
        // Checksum 0: allowed for UDP over IPv4, and what VXLAN senders use.
        frame.extend_from_slice(&[0, 0]);
    }
    frame.extend_from_slice(&payload);
    frame
}

/// A direction-free fold of the inner IPv4 addresses (bytes 26..34 of an untagged frame).
fn fold(inner: &[u8]) -> u16 {
    let a = inner.get(26..30).unwrap_or(&[]);
    let b = inner.get(30..34).unwrap_or(&[]);
    let sum = |x: &[u8]| {
        x.iter()
            .fold(0u16, |h, v| h.wrapping_mul(31).wrapping_add(u16::from(*v)))
    };
    sum(a) ^ sum(b)
}
