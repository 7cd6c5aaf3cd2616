//! Tunnels: finds the packet inside an IP tunnel so that flows are tracked on the
//! innermost headers.
//!
//! Mirrored traffic rarely arrives bare: AWS Traffic Mirroring and Azure vTAP send VXLAN,
//! GCP Packet Mirroring and AWS Gateway Load Balancer send Geneve, Cisco/Arista remote SPAN
//! sends ERSPAN over GRE, and the mirrored network itself may carry GRE, IP-in-IP, Teredo or
//! GTP-U. [`next_layer`] looks at one decoded IP layer and, when it carries one of these,
//! says where the inner frame starts, what kind of frame it is and how the outer layer
//! looked (a [`TunnelHop`]). The loop in [`super::decode_frame`] repeats this up to
//! [`Decap::max_depth`] times.
//!
//! Each tunnel is switched on or off, and the UDP ones are matched on configured ports
//! ([`Decap`]); everything is a bounded read of fixed offsets, no allocation.

use super::link::{be16, NetProto};
use super::{proto, Addr, DecodeError, Fragment, PacketMeta};

/// GRE protocol types (IEEE EtherTypes plus the ERSPAN ones).
const GRE_IPV4: u16 = 0x0800;
const GRE_IPV6: u16 = 0x86dd;
const GRE_TEB: u16 = 0x6558;
const GRE_ERSPAN_1_2: u16 = 0x88be;
const GRE_ERSPAN_3: u16 = 0x22eb;
const GRE_MPLS: u16 = 0x8847;
/// IP protocol numbers of the IP tunnels.
const IPPROTO_GRE: u8 = 47;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// Most UDP ports one UDP tunnel type can be matched on.
pub const MAX_TUNNEL_PORTS: usize = 4;

/// A short, fixed set of UDP ports (empty = that tunnel is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ports: [u16; MAX_TUNNEL_PORTS],
    len: u8,
}

impl PortSet {
    /// The first [`MAX_TUNNEL_PORTS`] of `ports` (the config validates the count).
    pub fn new(ports: &[u16]) -> PortSet {
        let mut s = PortSet::default();
        for p in ports.iter().take(MAX_TUNNEL_PORTS) {
            if let Some(slot) = s.ports.get_mut(usize::from(s.len)) {
                *slot = *p;
                s.len += 1;
            }
        }
        s
    }

    /// No port: the tunnel is off.
    pub const EMPTY: PortSet = PortSet {
        ports: [0; MAX_TUNNEL_PORTS],
        len: 0,
    };

    const fn one(p: u16) -> PortSet {
        PortSet {
            ports: [p, 0, 0, 0],
            len: 1,
        }
    }

    #[inline]
    fn contains(&self, port: u16) -> bool {
        self.ports
            .iter()
            .take(usize::from(self.len))
            .any(|p| *p == port)
    }
}

/// What the decoder unwraps: each encapsulation on or off, UDP tunnels by port, and how
/// deep tunnels may nest. `Copy`, read on every packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decap {
    /// Tunnels unwrapped at most (GRE, ERSPAN, VXLAN, ... each count one; MPLS and PPPoE,
    /// being link layers, do not). A packet nested deeper is tracked on the deepest layer
    /// reached and counted as `too_deep`.
    pub max_depth: u8,
    /// Also keep a flow record of each tunnel's outermost connection (the mirror session
    /// or tunnel itself), as Zeek does; it is never reported as an upload.
    pub outer_flows: bool,
    /// GRE (RFC 2784/2890) version 0: IPv4, IPv6, transparent Ethernet bridging, MPLS.
    pub gre: bool,
    /// ERSPAN type I, II and III inside GRE.
    pub erspan: bool,
    /// IPv4/IPv6 inside IPv4/IPv6 (IP protocols 4 and 41: 4in4, 6in4, 4in6, 6in6).
    pub ip_in_ip: bool,
    /// MPLS label stacks (EtherType 0x8847/0x8848), with an Ethernet pseudowire behind a
    /// control word.
    pub mpls: bool,
    /// PPPoE session frames (EtherType 0x8864).
    pub pppoe: bool,
    /// VXLAN (RFC 7348) on these UDP destination ports.
    pub vxlan: PortSet,
    /// Geneve (RFC 8926) on these UDP destination ports.
    pub geneve: PortSet,
    /// GRE in UDP (RFC 8086) on these UDP destination ports.
    pub gre_udp: PortSet,
    /// Teredo (RFC 4380) on these UDP ports (either side).
    pub teredo: PortSet,
    /// GTP-U (3GPP TS 29.281) on these UDP ports (either side).
    pub gtp: PortSet,
}

impl Decap {
    /// Everything on, standard ports, depth 4.
    pub const DEFAULT: Decap = Decap {
        max_depth: 4,
        outer_flows: true,
        gre: true,
        erspan: true,
        ip_in_ip: true,
        mpls: true,
        pppoe: true,
        vxlan: PortSet::one(4789),
        geneve: PortSet::one(6081),
        gre_udp: PortSet::one(4754),
        teredo: PortSet::one(3544),
        gtp: PortSet::one(2152),
    };

    /// Nothing unwrapped: the frame's outermost IP layer is the packet.
    pub const NONE: Decap = Decap {
        max_depth: 0,
        outer_flows: false,
        gre: false,
        erspan: false,
        ip_in_ip: false,
        mpls: false,
        pppoe: false,
        vxlan: PortSet::EMPTY,
        geneve: PortSet::EMPTY,
        gre_udp: PortSet::EMPTY,
        teredo: PortSet::EMPTY,
        gtp: PortSet::EMPTY,
    };
}

impl Default for Decap {
    fn default() -> Decap {
        Decap::DEFAULT
    }
}

/// Kinds of IP tunnel, as flow records name them.
// The serde attributes are as they were (the logs name kinds with `TunnelKind::name`, which
// serde's snake_case differs from for ERSPAN: `erspan_i_i`); the event bus (postcard)
// carries the variant's index, not the name.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TunnelKind {
    /// Not a tunnel (the zero value).
    #[default]
    None = 0,
    /// GRE (id: its key, when present).
    Gre = 1,
    /// ERSPAN type I (no session id on the wire).
    ErspanI = 2,
    /// ERSPAN type II (id: the mirror session).
    ErspanII = 3,
    /// ERSPAN type III (id: the mirror session).
    ErspanIII = 4,
    /// VXLAN (id: the VNI).
    Vxlan = 5,
    /// Geneve (id: the VNI).
    Geneve = 6,
    /// IP in IP (4in4, 6in4, 4in6, 6in6).
    Ip = 7,
    /// GRE in UDP (id: its key, when present).
    GreUdp = 8,
    /// Teredo.
    Teredo = 9,
    /// GTP-U (id: the TEID of the packet that opened the flow).
    Gtp = 10,
}

impl TunnelKind {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::None => "none",
            TunnelKind::Gre => "gre",
            TunnelKind::ErspanI => "erspan_i",
            TunnelKind::ErspanII => "erspan_ii",
            TunnelKind::ErspanIII => "erspan_iii",
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Ip => "ip",
            TunnelKind::GreUdp => "gre_udp",
            TunnelKind::Teredo => "teredo",
            TunnelKind::Gtp => "gtp",
        }
    }

    fn from_u8(v: u8) -> TunnelKind {
        match v {
            1 => TunnelKind::Gre,
            2 => TunnelKind::ErspanI,
            3 => TunnelKind::ErspanII,
            4 => TunnelKind::ErspanIII,
            5 => TunnelKind::Vxlan,
            6 => TunnelKind::Geneve,
            7 => TunnelKind::Ip,
            8 => TunnelKind::GreUdp,
            9 => TunnelKind::Teredo,
            10 => TunnelKind::Gtp,
            _ => TunnelKind::None,
        }
    }

    /// The counter layer this tunnel is counted under.
    pub fn layer(self) -> Layer {
        match self {
            TunnelKind::None => Layer::Gre,
            TunnelKind::Gre => Layer::Gre,
            TunnelKind::ErspanI | TunnelKind::ErspanII | TunnelKind::ErspanIII => Layer::Erspan,
            TunnelKind::Vxlan => Layer::Vxlan,
            TunnelKind::Geneve => Layer::Geneve,
            TunnelKind::Ip => Layer::IpInIp,
            TunnelKind::GreUdp => Layer::GreUdp,
            TunnelKind::Teredo => Layer::Teredo,
            TunnelKind::Gtp => Layer::Gtp,
        }
    }
}

/// Encapsulations the decoder counts, one bit each in [`super::Encap::layers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Layer {
    /// GRE.
    Gre = 0,
    /// ERSPAN I/II/III.
    Erspan = 1,
    /// VXLAN.
    Vxlan = 2,
    /// Geneve.
    Geneve = 3,
    /// IP in IP.
    IpInIp = 4,
    /// GRE in UDP.
    GreUdp = 5,
    /// Teredo.
    Teredo = 6,
    /// GTP-U.
    Gtp = 7,
    /// MPLS.
    Mpls = 8,
    /// PPPoE.
    Pppoe = 9,
}

impl Layer {
    /// Every layer, in counter order.
    pub const ALL: [Layer; 10] = [
        Layer::Gre,
        Layer::Erspan,
        Layer::Vxlan,
        Layer::Geneve,
        Layer::IpInIp,
        Layer::GreUdp,
        Layer::Teredo,
        Layer::Gtp,
        Layer::Mpls,
        Layer::Pppoe,
    ];

    /// Its bit in a layer set.
    #[inline]
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Stable snake_case name (metric label, summary).
    pub fn name(self) -> &'static str {
        match self {
            Layer::Gre => "gre",
            Layer::Erspan => "erspan",
            Layer::Vxlan => "vxlan",
            Layer::Geneve => "geneve",
            Layer::IpInIp => "ip_in_ip",
            Layer::GreUdp => "gre_udp",
            Layer::Teredo => "teredo",
            Layer::Gtp => "gtp",
            Layer::Mpls => "mpls",
            Layer::Pppoe => "pppoe",
        }
    }
}

/// The tunnel part of a flow key: the innermost tunnel id on the packet's way (VXLAN or
/// Geneve VNI, ERSPAN session, GRE key) and its kind. Mirrors of two VPCs may reuse the
/// same private addresses; their VNIs keep the flows apart. The outer addresses are *not*
/// part of it: both directions of a connection may travel in different outer flows (a
/// VXLAN source port is a hash of the inner flow), and Zeek keeps them one connection too.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct TunnelTag {
    /// [`TunnelKind`] as a number, plus [`TunnelTag::OUTER`] for a tunnel's own outer flow.
    pub kind: u8,
    /// The id (0 where the tunnel has none).
    pub id: u32,
}

impl TunnelTag {
    /// Bit of `kind` marking the outer flow of a tunnel (the mirror session itself).
    pub const OUTER: u8 = 0x80;

    /// Whether this is the outer flow of a tunnel.
    #[inline]
    pub fn is_outer(self) -> bool {
        self.kind & Self::OUTER != 0
    }

    /// The tag as part of a datagram's identity: the outer-flow mark is not identity (a UDP
    /// tunnel's later fragments get it only once the reader has given them their first
    /// fragment's ports), so it is left out.
    #[inline]
    pub fn identity(self) -> TunnelTag {
        if self.is_outer() {
            TunnelTag::default()
        } else {
            self
        }
    }

    /// The tunnel kind.
    pub fn tunnel_kind(self) -> TunnelKind {
        TunnelKind::from_u8(self.kind & !Self::OUTER)
    }
}

/// One tunnel a packet came through: the outer headers, as in Zeek's `tunnel.log`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelHop {
    /// Kind of tunnel.
    pub kind: TunnelKind,
    /// The outer IP version.
    pub ipv6: bool,
    /// Outer source address.
    pub src: Addr,
    /// Outer destination address.
    pub dst: Addr,
    /// Outer UDP source port (UDP tunnels), else 0.
    pub sport: u16,
    /// Outer UDP destination port (UDP tunnels), else 0.
    pub dport: u16,
    /// VNI, ERSPAN session, GRE key or GTP TEID, where the tunnel has one.
    pub id: Option<u32>,
}

/// The tunnels a flow's first packet came through, outermost first.
// All `MAX_CHAIN` hops travel, set or not: the derive keeps the round trip exact (`PartialEq`
// compares them all). An unset hop costs 37 bytes in postcard (two 16-byte addresses), and
// only a tunnelled flow's record or alert carries a chain at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelChain {
    /// The hops; only the first `len` are set.
    pub hops: [TunnelHop; MAX_CHAIN],
    /// Number of hops set.
    pub len: u8,
}

/// Hops a [`TunnelChain`] keeps: the configured depth may be larger, a record then lists
/// the outermost ones.
pub const MAX_CHAIN: usize = 4;

impl TunnelChain {
    /// The hops set.
    pub fn hops(&self) -> &[TunnelHop] {
        self.hops.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Where the decoder collects hops: nowhere on the hot path, a chain at flow creation.
pub(super) trait HopSink {
    fn push(&mut self, hop: TunnelHop);
}

impl HopSink for () {
    #[inline]
    fn push(&mut self, _: TunnelHop) {}
}

impl HopSink for TunnelChain {
    fn push(&mut self, hop: TunnelHop) {
        if let Some(slot) = self.hops.get_mut(usize::from(self.len)) {
            *slot = hop;
            self.len += 1;
        }
    }
}

/// How the inner frame starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inner {
    /// An Ethernet frame.
    Ethernet,
    /// An IP packet.
    Ip(NetProto),
    /// An MPLS label stack (GRE protocol 0x8847).
    Mpls,
}

/// The next layer inside a tunnel.
pub(super) struct Next {
    pub inner: Inner,
    /// Offset of the inner frame in the captured bytes.
    pub offset: usize,
    /// Offset where the inner frame ends on the wire (the outer payload's end).
    pub end: usize,
    pub hop: TunnelHop,
    /// The id that goes into the flow key, if this tunnel has one.
    pub key_id: Option<u32>,
}

/// If the decoded layer `m` carries a tunnel that `decap` unwraps, where its inside is.
/// `Err` when it does carry one whose header is broken or cut off.
#[inline]
pub(super) fn next_layer(
    m: &PacketMeta,
    data: &[u8],
    decap: &Decap,
) -> Option<Result<Next, DecodeError>> {
    if m.fragment != Fragment::None {
        // A fragment holds only part of the inner packet: it stays an outer packet.
        return None;
    }
    let start = usize::from(m.payload_offset);
    let end = start + m.payload_len as usize;
    let hop = |kind: TunnelKind, id: Option<u32>| TunnelHop {
        kind,
        ipv6: m.ipv6,
        src: m.src,
        dst: m.dst,
        sport: if m.proto == proto::UDP { m.sport } else { 0 },
        dport: if m.proto == proto::UDP { m.dport } else { 0 },
        id,
    };
    match m.proto {
        IPPROTO_GRE if decap.gre || decap.erspan => Some(
            gre(data, start, end, decap, TunnelKind::Gre).map(|(n, kind, id)| Next {
                hop: hop(kind, id),
                ..n
            }),
        ),
        IPPROTO_IPIP | IPPROTO_IPV6 if decap.ip_in_ip => Some(Ok(Next {
            inner: Inner::Ip(if m.proto == IPPROTO_IPIP {
                NetProto::Ipv4
            } else {
                NetProto::Ipv6
            }),
            offset: start,
            end,
            hop: hop(TunnelKind::Ip, None),
            key_id: None,
        })),
        proto::UDP => udp(m, data, start, end, decap).map(|r| {
            r.map(|(n, kind, id)| Next {
                hop: hop(kind, id),
                ..n
            })
        }),
        _ => None,
    }
}

/// The tunnel an outermost packet carries, judged by its IP protocol and ports alone: what
/// names a tunnel's own (outer) flow. GRE is `Gre` whatever it carries (ERSPAN included),
/// so the flow is the same for its fragments, whose GRE header only the first one holds.
pub fn carrier_kind(m: &PacketMeta, decap: &Decap) -> Option<TunnelKind> {
    match m.proto {
        IPPROTO_GRE if decap.gre || decap.erspan => Some(TunnelKind::Gre),
        IPPROTO_IPIP | IPPROTO_IPV6 if decap.ip_in_ip => Some(TunnelKind::Ip),
        proto::UDP if decap.vxlan.contains(m.dport) => Some(TunnelKind::Vxlan),
        proto::UDP if decap.geneve.contains(m.dport) => Some(TunnelKind::Geneve),
        proto::UDP if decap.gre_udp.contains(m.dport) => Some(TunnelKind::GreUdp),
        proto::UDP if decap.gtp.contains(m.dport) || decap.gtp.contains(m.sport) => {
            Some(TunnelKind::Gtp)
        }
        proto::UDP if decap.teredo.contains(m.dport) || decap.teredo.contains(m.sport) => {
            Some(TunnelKind::Teredo)
        }
        _ => None,
    }
}

/// A fragment of a tunnel packet (its inside cannot be read without reassembling the outer
/// packet) counts in the tunnel's own flow, never as a plain flow that could look like an
/// upload. The decoder marks what it can tell (GRE, IP-in-IP, a UDP tunnel's first
/// fragment); a UDP tunnel's later fragments take the mark with their first fragment's
/// ports (`capture::frag`).
#[inline]
pub(super) fn mark_outer_fragment(m: &mut PacketMeta, decap: &Decap) {
    if m.fragment != Fragment::None && m.encap.depth == 0 && m.tunnel == TunnelTag::default() {
        if let Some(k) = carrier_kind(m, decap) {
            m.tunnel = TunnelTag {
                kind: k as u8 | TunnelTag::OUTER,
                id: 0,
            };
        }
    }
}

type Found = (Next, TunnelKind, Option<u32>);

fn placeholder(inner: Inner, offset: usize, end: usize, key_id: Option<u32>) -> Next {
    Next {
        inner,
        offset,
        end,
        hop: TunnelHop::default(),
        key_id,
    }
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    match data.get(at..at.checked_add(4)?)? {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

fn byte(data: &[u8], at: usize) -> Result<u8, DecodeError> {
    data.get(at).copied().ok_or(DecodeError::BadEncapsulation)
}

/// GRE version 0 at `start` (RFC 2784 with the RFC 2890 key and sequence number).
fn gre(
    data: &[u8],
    start: usize,
    end: usize,
    decap: &Decap,
    kind: TunnelKind,
) -> Result<Found, DecodeError> {
    let flags = be16(data, start).ok_or(DecodeError::BadEncapsulation)?;
    let ptype = be16(data, start + 2).ok_or(DecodeError::BadEncapsulation)?;
    if flags & 0x0007 != 0 {
        // Version 1 is PPTP's enhanced GRE (PPP inside): not unwrapped, the GRE flow stays.
        return Err(DecodeError::BadEncapsulation);
    }
    if flags & 0x4000 != 0 {
        // The routing bit (RFC 1701 source routing) is deprecated; nobody sends it.
        return Err(DecodeError::BadEncapsulation);
    }
    let mut off = start + 4;
    if flags & 0x8000 != 0 {
        off += 4; // checksum + reserved
    }
    let mut key = None;
    if flags & 0x2000 != 0 {
        key = Some(be32(data, off).ok_or(DecodeError::BadEncapsulation)?);
        off += 4;
    }
    let seq = flags & 0x1000 != 0;
    if seq {
        off += 4;
    }
    if off > end {
        return Err(DecodeError::BadEncapsulation);
    }
    let inner = match ptype {
        GRE_IPV4 if decap.gre => Inner::Ip(NetProto::Ipv4),
        GRE_IPV6 if decap.gre => Inner::Ip(NetProto::Ipv6),
        GRE_TEB if decap.gre => Inner::Ethernet,
        GRE_MPLS if decap.gre && decap.mpls => Inner::Mpls,
        // ERSPAN type I has no sequence number and no header; type II has both.
        GRE_ERSPAN_1_2 if decap.erspan && !seq => {
            return Ok((
                placeholder(Inner::Ethernet, off, end, None),
                TunnelKind::ErspanI,
                None,
            ))
        }
        GRE_ERSPAN_1_2 if decap.erspan => {
            let session = erspan_session(data, off, 1)?;
            return Ok((
                placeholder(Inner::Ethernet, off + 8, end, Some(session)),
                TunnelKind::ErspanII,
                Some(session),
            ));
        }
        GRE_ERSPAN_3 if decap.erspan => {
            let session = erspan_session(data, off, 2)?;
            // Word 2: SGT(16) P(1) FT(5) HwID(6) D(1) Gra(2) O(1).
            let b10 = byte(data, off + 10)?;
            let b11 = byte(data, off + 11)?;
            if (b10 >> 2) & 0x1f != 0 {
                // Frame type other than Ethernet (IP-only mirrors are rare): not unwrapped.
                return Err(DecodeError::BadEncapsulation);
            }
            let sub = if b11 & 0x01 != 0 { 8 } else { 0 };
            return Ok((
                placeholder(Inner::Ethernet, off + 12 + sub, end, Some(session)),
                TunnelKind::ErspanIII,
                Some(session),
            ));
        }
        _ => return Err(DecodeError::BadEncapsulation),
    };
    Ok((placeholder(inner, off, end, key), kind, key))
}

/// The session id of an ERSPAN II/III header at `off`, checking its version field.
fn erspan_session(data: &[u8], off: usize, version: u8) -> Result<u32, DecodeError> {
    let w0 = be32(data, off).ok_or(DecodeError::BadEncapsulation)?;
    if (w0 >> 28) as u8 != version {
        return Err(DecodeError::BadEncapsulation);
    }
    Ok(w0 & 0x3ff)
}

/// The UDP tunnels.
fn udp(
    m: &PacketMeta,
    data: &[u8],
    start: usize,
    end: usize,
    decap: &Decap,
) -> Option<Result<Found, DecodeError>> {
    if decap.vxlan.contains(m.dport) {
        return Some(vxlan(data, start, end));
    }
    if decap.geneve.contains(m.dport) {
        return Some(geneve(data, start, end));
    }
    if decap.gre_udp.contains(m.dport) {
        return Some(gre(data, start, end, decap, TunnelKind::GreUdp));
    }
    if decap.gtp.contains(m.dport) || decap.gtp.contains(m.sport) {
        return gtp(data, start, end);
    }
    if decap.teredo.contains(m.dport) || decap.teredo.contains(m.sport) {
        return teredo(data, start, end, false);
    }
    if decap.teredo.len != 0 && !m.ipv6 {
        // Once qualified, a Teredo client talks to relays and peers on any port (Zeek's
        // baseline has a relay on 32900). Off the Teredo port only a payload that is
        // exactly one IPv6 packet to or from a Teredo address (2001::/32) counts.
        return teredo(data, start, end, true);
    }
    None
}

/// VXLAN (RFC 7348): 8 bytes, the I flag set, a 24-bit VNI, then Ethernet.
fn vxlan(data: &[u8], start: usize, end: usize) -> Result<Found, DecodeError> {
    let flags = byte(data, start)?;
    let w1 = be32(data, start + 4).ok_or(DecodeError::BadEncapsulation)?;
    if flags & 0x08 == 0 || start + 8 > end {
        return Err(DecodeError::BadEncapsulation);
    }
    let vni = w1 >> 8;
    Ok((
        placeholder(Inner::Ethernet, start + 8, end, Some(vni)),
        TunnelKind::Vxlan,
        Some(vni),
    ))
}

/// Geneve (RFC 8926): 8 bytes plus options (skipped), a protocol type, a 24-bit VNI.
fn geneve(data: &[u8], start: usize, end: usize) -> Result<Found, DecodeError> {
    let b0 = byte(data, start)?;
    if b0 >> 6 != 0 {
        return Err(DecodeError::BadEncapsulation);
    }
    let opt_len = usize::from(b0 & 0x3f) * 4;
    let ptype = be16(data, start + 2).ok_or(DecodeError::BadEncapsulation)?;
    let vni = be32(data, start + 4).ok_or(DecodeError::BadEncapsulation)? >> 8;
    let inner_at = start + 8 + opt_len;
    if inner_at > end {
        return Err(DecodeError::BadEncapsulation);
    }
    let inner = match ptype {
        GRE_TEB => Inner::Ethernet,
        GRE_IPV4 => Inner::Ip(NetProto::Ipv4),
        GRE_IPV6 => Inner::Ip(NetProto::Ipv6),
        _ => return Err(DecodeError::BadEncapsulation),
    };
    Ok((
        placeholder(inner, inner_at, end, Some(vni)),
        TunnelKind::Geneve,
        Some(vni),
    ))
}

/// GTP-U (3GPP TS 29.281): only G-PDUs (message type 255) carry user packets; other
/// messages (echo, error indication) leave the packet an ordinary UDP one.
fn gtp(data: &[u8], start: usize, end: usize) -> Option<Result<Found, DecodeError>> {
    let b0 = *data.get(start)?;
    let msg = *data.get(start + 1)?;
    // Version 1, protocol type GTP (not GTP').
    if b0 >> 5 != 1 || b0 & 0x10 == 0 || msg != 0xff {
        return None;
    }
    let teid = be32(data, start + 4)?;
    let mut off = start + 8;
    if b0 & 0x07 != 0 {
        // Sequence number, N-PDU number and next-extension type follow (4 bytes).
        let mut next_ext = *data.get(off + 3)?;
        off += 4;
        // Extension headers: a length in 4-byte units, the last byte the next type.
        for _ in 0..8 {
            if next_ext == 0 {
                break;
            }
            let units = usize::from(*data.get(off)?);
            if units == 0 {
                return Some(Err(DecodeError::BadEncapsulation));
            }
            off += units * 4;
            next_ext = *data.get(off - 1)?;
        }
        if next_ext != 0 {
            return Some(Err(DecodeError::BadEncapsulation));
        }
    }
    if off >= end {
        return Some(Err(DecodeError::BadEncapsulation));
    }
    let inner = match data.get(off)? >> 4 {
        4 => Inner::Ip(NetProto::Ipv4),
        6 => Inner::Ip(NetProto::Ipv6),
        _ => return Some(Err(DecodeError::BadEncapsulation)),
    };
    Some(Ok((
        placeholder(inner, off, end, None),
        TunnelKind::Gtp,
        Some(teid),
    )))
}

/// Teredo (RFC 4380): optional authentication and origin-indication headers, then an IPv6
/// packet that must fill the UDP payload exactly. Anything else on the port (qualification
/// bubbles are IPv6 too; other traffic is not) stays an ordinary UDP packet.
fn teredo(
    data: &[u8],
    start: usize,
    end: usize,
    any_port: bool,
) -> Option<Result<Found, DecodeError>> {
    let mut off = start;
    if be16(data, off)? == 0x0001 {
        let id_len = usize::from(*data.get(off + 2)?);
        let au_len = usize::from(*data.get(off + 3)?);
        off += 4 + id_len + au_len + 9;
    }
    if be16(data, off)? == 0x0000 {
        off += 8;
    }
    let version = data.get(off)? >> 4;
    let payload_len = usize::from(be16(data, off + 4)?);
    if version != 6 || off + 40 + payload_len != end {
        return None;
    }
    if any_port {
        let teredo_prefix = |at: usize| data.get(at..at + 4) == Some(&[0x20, 0x01, 0, 0][..]);
        if !teredo_prefix(off + 8) && !teredo_prefix(off + 24) {
            return None;
        }
    }
    Some(Ok((
        placeholder(Inner::Ip(NetProto::Ipv6), off, end, None),
        TunnelKind::Teredo,
        None,
    )))
}
