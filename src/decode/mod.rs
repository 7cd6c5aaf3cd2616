//! Decode: raw frame bytes in, a small `Copy` [`PacketMeta`] out.
//!
//! This is the first stage after capture. It peels the link layer (Ethernet II with up to two
//! VLAN tags, Linux cooked SLL/SLL2, BSD loopback, raw IP), the network layer (IPv4, IPv6 with
//! extension headers) and the transport header (TCP, UDP, ICMP/ICMPv6), and records what the
//! flow stage needs: addresses, ports, lengths *as they were on the wire*, TCP flags and where
//! the payload starts in the captured bytes.
//!
//! Header views come from `etherparse` (`*HeaderSlice::from_slice` checks a header's length
//! once; its accessors cannot fail afterwards). The layering logic is ours because a sensor
//! must answer questions a generic parser does not: how many bytes crossed the wire even when
//! the capture was cut by a snaplen, and which fragment belongs to which flow.
//!
//! This stage never allocates, never locks, never reads the clock and never panics: every byte
//! sequence is valid input, and a frame that cannot be decoded returns a [`DecodeError`], a
//! `Copy` reason that the caller turns into a counter.

mod link;
mod net;
mod transport;
mod tunnel;

pub use link::LinkType;
pub use tunnel::{
    carrier_kind, Decap, Layer, PortSet, TunnelChain, TunnelHop, TunnelKind, TunnelTag, MAX_CHAIN,
    MAX_TUNNEL_PORTS,
};

/// Why a frame could not be decoded. Each reason is a counter in the replay summary and
/// (later) in `/metrics`; the frame itself is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The capture's link type is not one outflow decodes.
    UnsupportedLinkType,
    /// The frame ends inside the link-layer header (Ethernet, VLAN tag, cooked header).
    TruncatedLink,
    /// A well-formed frame that does not carry IP (ARP, LLDP, STP, ...).
    NonIp,
    /// The frame ends inside the IP header.
    TruncatedIp,
    /// The IP header contradicts itself: version, header length < 20, total length < header
    /// length, bad extension-header chain.
    BadIpHeader,
    /// The IP length field claims more bytes than the frame carried on the wire.
    IpLengthExceedsFrame,
    /// The frame (as captured) ends inside the TCP/UDP/ICMP header.
    TruncatedTransport,
    /// The transport header contradicts itself: TCP data offset < 5 or beyond the IP payload,
    /// UDP length < 8 or beyond the IP payload.
    BadTransportHeader,
    /// An encapsulation header (MPLS, PPPoE, GRE, ERSPAN, VXLAN, Geneve, GTP) that is
    /// broken or cut off. Inside an IP tunnel the packet still counts in the tunnel's
    /// outer flow; see [`Decoded::inner_error`].
    BadEncapsulation,
}

impl DecodeError {
    /// Every reason, in a stable order (used to lay out counters).
    pub const ALL: [DecodeError; 9] = [
        DecodeError::UnsupportedLinkType,
        DecodeError::TruncatedLink,
        DecodeError::NonIp,
        DecodeError::TruncatedIp,
        DecodeError::BadIpHeader,
        DecodeError::IpLengthExceedsFrame,
        DecodeError::TruncatedTransport,
        DecodeError::BadTransportHeader,
        DecodeError::BadEncapsulation,
    ];

    /// Stable snake_case name, used in summaries and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::UnsupportedLinkType => "unsupported_link_type",
            DecodeError::TruncatedLink => "truncated_link",
            DecodeError::NonIp => "non_ip",
            DecodeError::TruncatedIp => "truncated_ip",
            DecodeError::BadIpHeader => "bad_ip_header",
            DecodeError::IpLengthExceedsFrame => "ip_length_exceeds_frame",
            DecodeError::TruncatedTransport => "truncated_transport",
            DecodeError::BadTransportHeader => "bad_transport_header",
            DecodeError::BadEncapsulation => "bad_encapsulation",
        }
    }

    /// Index into a `[u64; DecodeError::ALL.len()]` counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Protocol name as in Zeek's conn.log (`tcp`, `udp`, `icmp`), or the number.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP | proto::ICMPV6 => "icmp".into(),
        n => n.to_string(),
    }
}

/// IP protocol numbers outflow treats specially.
pub mod proto {
    /// ICMP (IPv4).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
}

/// Where an IP packet sits in a fragmented datagram, and what a reassembler needs to put it
/// back (see `crate::defrag`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    None,
    /// Offset 0, more fragments follow: carries the transport header and so the ports.
    First {
        /// IP identification (IPv4: 16 bits; IPv6 fragment header: 32 bits).
        id: u32,
        /// Where the fragmentable part starts, counted from the IP header: after the IPv4
        /// header, or right after the IPv6 fragment header (extension headers that follow
        /// it belong to the datagram and are reassembled with it).
        data: u16,
    },
    /// Offset > 0: no transport header; its ports are those of the `First` fragment with the
    /// same (addresses, protocol, id), if that was seen. Its data starts at
    /// [`PacketMeta::payload_offset`] and is [`PacketMeta::payload_len`] bytes on the wire.
    Later {
        /// IP identification.
        id: u32,
        /// Offset of its data in the datagram's fragmentable part, in bytes (a multiple of
        /// 8, at most 65 528).
        offset: u16,
        /// The "more fragments" flag: false on the datagram's last fragment.
        more: bool,
    },
}

impl Fragment {
    /// The IP identification of a fragment.
    #[inline]
    pub fn id(self) -> Option<u32> {
        match self {
            Fragment::None => None,
            Fragment::First { id, .. } | Fragment::Later { id, .. } => Some(id),
        }
    }
}

/// An IP address in 16 bytes: IPv6 as is, IPv4 in the IPv4-mapped form `::ffff:a.b.c.d`.
/// One fixed-size representation keeps flow keys `Copy`, hashable and comparable without
/// branching on the family.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// From the 4 bytes of an IPv4 address.
    pub fn v4(a: [u8; 4]) -> Addr {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a);
        Addr(b)
    }

    /// From the 16 bytes of an IPv6 address.
    pub fn v6(a: [u8; 16]) -> Addr {
        Addr(a)
    }

    /// Back to a std address of the given family.
    pub fn to_ip(self, ipv6: bool) -> std::net::IpAddr {
        if ipv6 {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(self.0))
        } else {
            let [.., a, b, c, d] = self.0;
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
        }
    }

    /// From a std address (IPv4 is stored mapped).
    pub fn from_ip(ip: std::net::IpAddr) -> Addr {
        match ip {
            std::net::IpAddr::V4(a) => Addr::v4(a.octets()),
            std::net::IpAddr::V6(a) => Addr::v6(a.octets()),
        }
    }
}

/// What the flow stage needs to know about one decoded packet. `Copy` and allocation-free so
/// that it can sit in a reusable batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// True for IPv6, false for IPv4.
    pub ipv6: bool,
    /// IP protocol (IPv6: the upper-layer protocol after extension headers).
    pub proto: u8,
    /// Source port (TCP/UDP/SCTP), ICMP type, or 0.
    pub sport: u16,
    /// Destination port (TCP/UDP/SCTP), ICMP code, or 0.
    pub dport: u16,
    /// Outer and inner 802.1Q VLAN ids, 0 where absent.
    pub vlan: [u16; 2],
    /// TCP flags (byte 13), 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number, 0 for other protocols.
    pub tcp_seq: u32,
    /// Bytes of the IP packet on the wire: the IPv4 total-length field, or 40 + the IPv6
    /// payload length. This, not the captured length, is what byte counters add up, so a
    /// small snaplen loses no bytes (Zeek's `orig_ip_bytes` counts the same way).
    pub ip_len: u32,
    /// Bytes of transport payload on the wire, from the length fields (TCP: IP payload minus
    /// the TCP header; UDP: its length field minus 8; other protocols: the IP payload).
    /// For a non-first fragment it is the fragment's IP payload.
    pub payload_len: u32,
    /// Offset of the IP header in the captured frame.
    pub l3_offset: u16,
    /// Offset of the transport payload in the captured frame (may be beyond the captured
    /// length when the snaplen cut it off).
    pub payload_offset: u16,
    /// Fragmentation state of the IP packet.
    pub fragment: Fragment,
    /// The IP length came from the frame, not the header: a segmentation-offloaded
    /// frame (TSO: IPv4 total length 0 on TCP; GRO: a length beyond a frame the capture
    /// holds whole). Not an error; counted on its own.
    pub len_from_frame: bool,
    /// The innermost tunnel id on the packet's way (part of the flow key), or the marker
    /// of a tunnel's own outer flow.
    pub tunnel: TunnelTag,
    /// Encapsulations peeled to reach this packet.
    pub encap: Encap,
}

/// What the decoder unwrapped to reach a packet (counters, not flow identity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encap {
    /// [`Layer`] bits of every encapsulation peeled.
    pub layers: u16,
    /// IP tunnels unwrapped.
    pub depth: u8,
    /// Another tunnel was inside, deeper than `max_depth`: the packet is tracked on the
    /// deepest layer reached.
    pub too_deep: bool,
}

/// One end of a conversation: address and port (0 where the protocol has none).
pub type Endpoint = (Addr, u16);

impl PacketMeta {
    /// Ports as used in flow keys: ICMP type/code describe a message, not a conversation, so
    /// all ICMP between two hosts is one flow (its record shows the first message's
    /// type/code).
    #[inline]
    pub fn key_ports(&self) -> (u16, u16) {
        match self.proto {
            proto::ICMP | proto::ICMPV6 => (0, 0),
            _ => (self.sport, self.dport),
        }
    }

    /// Whether either port is one of `ports`: how a parser decides which packets are its
    /// own (the DNS extractor, and the reader choosing which fragments to hold for it).
    #[inline]
    pub fn uses_port(&self, ports: &[u16]) -> bool {
        ports.iter().any(|p| *p == self.sport || *p == self.dport)
    }

    /// The packet's two endpoints in canonical (sorted) order, and whether the source is the
    /// second one. Both directions of a conversation give the same pair, which is what
    /// makes the flow key and the dispatch hash symmetric.
    #[inline]
    pub fn canonical(&self) -> (Endpoint, Endpoint, bool) {
        let (sp, dp) = self.key_ports();
        let a = (self.src, sp);
        let b = (self.dst, dp);
        if a <= b {
            (a, b, false)
        } else {
            (b, a, true)
        }
    }

    /// Direction-free hash of (endpoints, protocol, VLANs): both directions of a flow give
    /// the same value, so the dispatcher sends them to the same worker. The dispatcher seeds
    /// it randomly per run, so nobody can aim a flood of flows at one worker.
    #[inline]
    pub fn symmetric_hash(&self, seed: u64) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let (lo, hi, _) = self.canonical();
        let mut h = foldhash::fast::FixedState::with_seed(seed).build_hasher();
        lo.hash(&mut h);
        hi.hash(&mut h);
        (self.proto, self.ipv6, self.vlan, self.tunnel).hash(&mut h);
        h.finish()
    }
}

/// Decodes one captured frame with every encapsulation on ([`Decap::DEFAULT`]): the
/// innermost packet, or why there is none. `data` is what was captured, `wire_len` how
/// long the frame was on the wire (the pcap record's original length).
#[inline]
pub fn decode(link: LinkType, data: &[u8], wire_len: u32) -> Result<PacketMeta, DecodeError> {
    decode_frame(link, data, wire_len, &Decap::DEFAULT).map(|d| d.meta)
}

/// One frame decoded: the packet the flow stage tracks and, for a tunnelled frame, the
/// tunnel's outermost packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The innermost packet; or, when what a tunnel carried could not be decoded, the
    /// tunnel's outermost packet (marked as its outer flow), so no byte goes uncounted.
    pub meta: PacketMeta,
    /// The outermost packet of a tunnelled frame, marked as the tunnel's outer flow
    /// ([`TunnelTag::OUTER`]), when [`Decap::outer_flows`] asks for those flows.
    pub outer: Option<PacketMeta>,
    /// Why the inside of a tunnel could not be decoded (then `meta` is the outer packet).
    pub inner_error: Option<DecodeError>,
}

/// Decodes one captured frame, unwrapping what `decap` switches on.
#[inline]
pub fn decode_frame(
    link: LinkType,
    data: &[u8],
    wire_len: u32,
    decap: &Decap,
) -> Result<Decoded, DecodeError> {
    decode_layers(link, data, wire_len, decap, &mut ())
}

/// The tunnels a frame came through, outermost first (what a flow record lists). Called
/// once per new tunnelled flow, not per packet.
pub fn tunnel_chain(link: LinkType, data: &[u8], wire_len: u32, decap: &Decap) -> TunnelChain {
    let mut chain = TunnelChain::default();
    let _ = decode_layers(link, data, wire_len, decap, &mut chain);
    chain
}

fn decode_layers(
    link: LinkType,
    data: &[u8],
    wire_len: u32,
    decap: &Decap,
    hops: &mut impl tunnel::HopSink,
) -> Result<Decoded, DecodeError> {
    // Where the current layer's frame ends on the wire, counted from `data[0]`. The
    // captured slice may be shorter (snaplen); the wire length may not be smaller than what
    // was captured.
    let mut end = (wire_len as usize).max(data.len());
    let mut l2 = link::peel(link, data, decap)?;
    let mut layers = l2.layers;
    let mut vlan = l2.vlan;
    let mut tag = TunnelTag::default();
    let mut outer: Option<PacketMeta> = None;
    let mut depth = 0u8;
    loop {
        let ip_data = data.get(l2.ip_offset..).ok_or(DecodeError::TruncatedLink)?;
        let wire_ip_len = end.saturating_sub(l2.ip_offset);
        let whole = data.len() >= end;
        let mut meta = match net::decode_ip(l2.ether_type, ip_data, wire_ip_len, whole) {
            Ok(m) => m,
            Err(e) => return inner_failed(outer, e, layers, depth),
        };
        meta.vlan = vlan;
        meta.l3_offset = u16::try_from(l2.ip_offset).unwrap_or(u16::MAX);
        meta.payload_offset = meta.payload_offset.saturating_add(meta.l3_offset);
        let next = match tunnel::next_layer(&meta, data, decap) {
            None => None,
            Some(Ok(n)) if depth < decap.max_depth => Some(n),
            Some(Ok(_)) => {
                meta.encap.too_deep = true;
                None
            }
            // A broken tunnel header inside a tunnel: the outer flow counts it. At the
            // outermost layer the packet is what it looks like (a GRE or UDP packet).
            Some(Err(e)) if outer.is_some() => return inner_failed(outer, e, layers, depth),
            Some(Err(_)) => None,
        };
        let Some(n) = next else {
            meta.tunnel = tag;
            if outer.is_none() {
                tunnel::mark_outer_fragment(&mut meta, decap);
            }
            meta.encap.layers = layers;
            meta.encap.depth = depth;
            let outer = outer.filter(|_| decap.outer_flows);
            return Ok(Decoded {
                meta,
                outer,
                inner_error: None,
            });
        };
        if outer.is_none() {
            let mut o = meta;
            let kind = tunnel::carrier_kind(&meta, decap).unwrap_or(n.hop.kind);
            o.tunnel = TunnelTag {
                kind: kind as u8 | TunnelTag::OUTER,
                id: 0,
            };
            o.encap.layers = layers;
            outer = Some(o);
        }
        hops.push(n.hop);
        layers |= n.hop.kind.layer().bit();
        depth += 1;
        if let Some(id) = n.key_id {
            tag = TunnelTag {
                kind: n.hop.kind as u8,
                id,
            };
        }
        end = n.end.min(end);
        l2 = match n.inner {
            tunnel::Inner::Ethernet => match link::peel_inner_ethernet(data, n.offset, decap) {
                Ok(l) => {
                    vlan = l.vlan;
                    l
                }
                Err(e) => return inner_failed(outer, e, layers, depth),
            },
            tunnel::Inner::Mpls => match link::peel_mpls(data, n.offset, decap) {
                Ok(l) => l,
                Err(e) => return inner_failed(outer, e, layers, depth),
            },
            tunnel::Inner::Ip(p) => link::L2 {
                ip_offset: n.offset,
                ether_type: p,
                vlan,
                layers: 0,
            },
        };
        layers |= l2.layers;
    }
}

/// The inside of a tunnel did not decode: the frame counts as a packet of the tunnel's
/// outer flow.
fn inner_failed(
    outer: Option<PacketMeta>,
    e: DecodeError,
    layers: u16,
    depth: u8,
) -> Result<Decoded, DecodeError> {
    match outer {
        Some(mut o) => {
            o.encap.layers = layers;
            o.encap.depth = depth;
            Ok(Decoded {
                meta: o,
                outer: None,
                inner_error: Some(e),
            })
        }
        None => Err(e),
    }
}

/// Counters of what the decoder unwrapped; one per reader or fanout worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapCounts {
    /// Frames that went through each encapsulation, indexed like [`Layer::ALL`].
    pub layers: [u64; Layer::ALL.len()],
    /// Frames with a tunnel nested deeper than the configured depth.
    pub too_deep: u64,
    /// Tunnelled frames whose inside did not decode (counted in the tunnel's outer flow).
    pub inner_errors: u64,
    /// Packets whose IP length came from the frame (TSO/GRO offloaded frames).
    pub len_from_frame: u64,
}

impl EncapCounts {
    /// Counts one decoded frame.
    #[inline]
    pub fn count(&mut self, d: &Decoded) {
        let m = &d.meta;
        if m.encap.layers != 0 {
            for (i, l) in Layer::ALL.iter().enumerate() {
                if m.encap.layers & l.bit() != 0 {
                    if let Some(c) = self.layers.get_mut(i) {
                        *c += 1;
                    }
                }
            }
        }
        self.too_deep += u64::from(m.encap.too_deep);
        self.inner_errors += u64::from(d.inner_error.is_some());
        self.len_from_frame += u64::from(m.len_from_frame);
    }

    /// Adds another reader's counters.
    pub fn add(&mut self, o: &EncapCounts) {
        for (a, b) in self.layers.iter_mut().zip(o.layers.iter()) {
            *a += b;
        }
        self.too_deep += o.too_deep;
        self.inner_errors += o.inner_errors;
        self.len_from_frame += o.len_from_frame;
    }
}

#[cfg(test)]
mod tests;
