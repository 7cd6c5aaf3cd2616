//! TCP sessions: a schedule of segments computed by index (so counts and the segment at any
//! position are arithmetic), and a renderer that turns each segment into a frame.

use std::net::{IpAddr, SocketAddr};

use super::wire::{self, Direction, TcpFields, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MAX_IP_LEN};
use super::{mix64, FlowExpect, Link, Packet, DEFAULT_START_NS};

/// TCP flag bit FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag bit SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag bit RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag bit PSH (set on the last data segment of each direction).
pub const TCP_PSH: u8 = 0x08;
/// TCP flag bit ACK.
pub const TCP_ACK: u8 = 0x10;

const TCP_HEADER_LEN: u64 = 20;
/// SYN and SYN-ACK carry a 4-byte MSS option.
const SYN_OPTIONS_LEN: u64 = 4;
/// Advertised receive window (no window scaling).
const WINDOW: u16 = 65_535;

/// How a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Client FIN/ACK, server FIN/ACK, client ACK.
    Fin,
    /// Client RST/ACK.
    Rst,
    /// No teardown: the capture ends with the connection open.
    None,
}

/// One TCP connection, described by what it transfers; [`TcpSession::packets`] renders it.
///
/// Packet order: SYN, SYN-ACK, ACK (if `syn`); the client's `upload` bytes in `mss` segments
/// (the first [`TcpSession::first_client_bytes`] in segments of their own), the server acking every `ack_every` segments and after the last; then the server's
/// `download` bytes, the client acking likewise; then the teardown of `close`. Packet `k` is
/// at `start_ns + k * gap_ns`.
#[derive(Clone, Debug)]
pub struct TcpSession {
    /// The side that opens the connection (flow "orig"). Both addresses are IPv4 or both IPv6.
    pub client: SocketAddr,
    /// The side that accepts the connection (flow "resp").
    pub server: SocketAddr,
    /// Link layer of every frame.
    pub link: Link,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: u64,
    /// TCP payload bytes client to server.
    pub upload: u64,
    /// TCP payload bytes server to client.
    pub download: u64,
    /// Payload bytes per full segment; clamped to 1..=65495 (IPv4) or 1..=65515 (IPv6).
    pub mss: u16,
    /// Time between consecutive packets of this session, ns.
    pub gap_ns: u64,
    /// The receiver sends one pure ACK per this many data segments (0 is taken as 1).
    pub ack_every: u32,
    /// How the session ends.
    pub close: Close,
    /// False: the capture starts mid-connection (no handshake).
    pub syn: bool,
    /// Bytes the client's stream starts with (a TLS ClientHello, an HTTP request head); the
    /// rest of `upload` is the usual pattern. They are part of `upload` (raised to their
    /// length if smaller) and go in segments of their own, of at most `first_mss` bytes, so
    /// the next segment starts with the bytes after them. Empty: none.
    pub first_client_bytes: Vec<u8>,
    /// Payload bytes per segment of `first_client_bytes` (a hello split over several
    /// segments); 0 means `mss`.
    pub first_mss: u16,
}

impl TcpSession {
    /// Defaults: Ethernet without VLAN, start [`DEFAULT_START_NS`], MSS 1460, 10 µs between
    /// packets, one ACK per 2 segments, FIN close, with handshake.
    pub fn new(client: SocketAddr, server: SocketAddr, upload: u64, download: u64) -> Self {
        TcpSession {
            client,
            server,
            link: Link::ethernet(),
            start_ns: DEFAULT_START_NS,
            upload,
            download,
            mss: 1460,
            gap_ns: 10_000,
            ack_every: 2,
            close: Close::Fin,
            syn: true,
            first_client_bytes: Vec::new(),
            first_mss: 0,
        }
    }

    fn is_v6(&self) -> bool {
        self.client.is_ipv6() || self.server.is_ipv6()
    }

    fn plan(&self) -> Plan {
        let v6 = self.is_v6();
        let ip_hdr = if v6 { IPV6_HEADER_LEN } else { IPV4_HEADER_LEN } as u64;
        let max_mss = if v6 {
            MAX_IP_LEN as u64 - TCP_HEADER_LEN
        } else {
            MAX_IP_LEN as u64 - IPV4_HEADER_LEN as u64 - TCP_HEADER_LEN
        };
        let mss = u64::from(self.mss).clamp(1, max_mss);
        let ack_every = u64::from(self.ack_every.max(1));
        let head = self.first_client_bytes.len() as u64;
        let head_mss = match self.first_mss {
            0 => mss,
            m => u64::from(m).clamp(1, max_mss),
        };
        let upload = self.upload.max(head);
        let n_head = head.div_ceil(head_mss);
        let n_up = n_head + (upload - head).div_ceil(mss);
        let n_down = self.download.div_ceil(mss);
        let up_block = n_up + n_up.div_ceil(ack_every);
        let down_block = n_down + n_down.div_ceil(ack_every);
        let hs = if self.syn { 3 } else { 0 };
        let teardown = match self.close {
            Close::Fin => 3,
            Close::Rst => 1,
            Close::None => 0,
        };
        let key = mix64(addr_key(self.client) ^ mix64(addr_key(self.server)));
        Plan {
            start_ns: self.start_ns,
            gap_ns: self.gap_ns,
            close: self.close,
            upload,
            download: self.download,
            mss,
            head,
            head_mss,
            n_head,
            ack_every,
            n_up,
            n_down,
            up_block,
            down_block,
            hs,
            total: hs + up_block + down_block + teardown,
            isn_c: key as u32,
            isn_s: (key >> 32) as u32,
            ip_hdr,
        }
    }

    /// Number of packets the session has.
    pub fn total_packets(&self) -> u64 {
        self.plan().total
    }

    /// The segments as metadata only (nothing rendered): cheap even for huge sessions.
    pub fn segments(&self) -> TcpSegments {
        TcpSegments {
            plan: self.plan(),
            k: 0,
        }
    }

    /// The rendered frames, lazily: memory does not grow with the session's size.
    pub fn packets(&self) -> TcpPackets {
        let c = (self.client.ip(), self.client.port());
        let s = (self.server.ip(), self.server.port());
        let key = mix64(addr_key(self.server) ^ mix64(addr_key(self.client)));
        TcpPackets {
            segs: self.segments(),
            head: self.first_client_bytes.clone(),
            c2s: Direction::new(&self.link, c, s, true),
            s2c: Direction::new(&self.link, s, c, false),
            id_c: key as u16,
            id_s: (key >> 16) as u16,
        }
    }

    /// What a flow table must count for this session, computed without rendering it.
    pub fn expected(&self) -> FlowExpect {
        let p = self.plan();
        let hdr = p.ip_hdr + TCP_HEADER_LEN;
        let syn = u64::from(p.hs > 0);
        let (close_c, close_s) = match p.close {
            Close::Fin => (2, 1),
            Close::Rst => (1, 0),
            Close::None => (0, 0),
        };
        let orig_pkts = 2 * syn + p.n_up + p.n_down.div_ceil(p.ack_every) + close_c;
        let resp_pkts = syn + p.n_up.div_ceil(p.ack_every) + p.n_down + close_s;
        FlowExpect {
            orig_pkts,
            orig_ip_bytes: orig_pkts * hdr + syn * SYN_OPTIONS_LEN + p.upload,
            orig_payload_bytes: p.upload,
            resp_pkts,
            resp_ip_bytes: resp_pkts * hdr + syn * SYN_OPTIONS_LEN + p.download,
            resp_payload_bytes: p.download,
        }
    }
}

/// A stable 64-bit key of a socket address, for deriving ISNs and IP ids.
fn addr_key(a: SocketAddr) -> u64 {
    let mut k = u64::from(a.port());
    match a.ip() {
        IpAddr::V4(v4) => k = mix64(k ^ (u64::from(u32::from(v4)) << 16)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            k = mix64(k ^ mix64(x as u64) ^ ((x >> 64) as u64).rotate_left(17));
        }
    }
    k
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    start_ns: u64,
    gap_ns: u64,
    close: Close,
    upload: u64,
    download: u64,
    mss: u64,
    /// Bytes of `first_client_bytes`, their segment size and segment count.
    head: u64,
    head_mss: u64,
    n_head: u64,
    ack_every: u64,
    n_up: u64,
    n_down: u64,
    up_block: u64,
    down_block: u64,
    hs: u64,
    total: u64,
    isn_c: u32,
    isn_s: u32,
    ip_hdr: u64,
}

/// One segment of a session's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the packet in its session.
    pub index: u64,
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Direction: client to server.
    pub from_client: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number; 0 when the ACK flag is clear.
    pub ack: u32,
    /// `TCP_*` flag bits.
    pub flags: u8,
    /// Offset of the first payload byte in its direction's stream.
    pub payload_offset: u64,
    /// TCP payload bytes.
    pub payload_len: u32,
    /// IP total length (IPv4 total length, or IPv6 40 + payload length).
    pub ip_len: u32,
}

/// Position inside an upload or download block.
enum InBlock {
    Data(u64),
    /// Pure ACK sent after data segment `i`.
    AckAfter(u64),
}

fn in_block(j: u64, n: u64, ack_every: u64) -> InBlock {
    let group = j / (ack_every + 1);
    let r = j % (ack_every + 1);
    let first = group * ack_every;
    let count = ack_every.min(n - first);
    if r < count {
        InBlock::Data(first + r)
    } else {
        InBlock::AckAfter(first + count - 1)
    }
}

impl Plan {
    /// Offset and length of client data segment `i` (`i < n_up`): the head's segments first,
    /// then `mss` segments of the rest.
    fn up_segment(&self, i: u64) -> (u64, u64) {
        if i < self.n_head {
            let off = i * self.head_mss;
            (off, self.head_mss.min(self.head - off))
        } else {
            let off = self.head + (i - self.n_head) * self.mss;
            (off, self.mss.min(self.upload - off))
        }
    }

    /// Segment `k`; `k < total`.
    fn segment(&self, k: u64) -> Segment {
        let c_base = u64::from(self.isn_c) + 1;
        let s_base = u64::from(self.isn_s) + 1;
        let seq32 = |x: u64| x as u32; // sequence space is modulo 2^32
        let mut s = Segment {
            index: k,
            ts_ns: self.start_ns.saturating_add(k.saturating_mul(self.gap_ns)),
            from_client: true,
            seq: 0,
            ack: 0,
            flags: TCP_ACK,
            payload_offset: 0,
            payload_len: 0,
            ip_len: 0,
        };
        let mut options = 0;
        if k < self.hs {
            options = SYN_OPTIONS_LEN;
            match k {
                0 => {
                    s.seq = self.isn_c;
                    s.flags = TCP_SYN;
                }
                1 => {
                    s.from_client = false;
                    s.seq = self.isn_s;
                    s.ack = seq32(c_base);
                    s.flags = TCP_SYN | TCP_ACK;
                }
                _ => {
                    options = 0;
                    s.seq = seq32(c_base);
                    s.ack = seq32(s_base);
                }
            }
        } else if k - self.hs < self.up_block {
            match in_block(k - self.hs, self.n_up, self.ack_every) {
                InBlock::Data(i) => {
                    let (off, len) = self.up_segment(i);
                    s.seq = seq32(c_base + off);
                    s.ack = seq32(s_base);
                    s.payload_offset = off;
                    s.payload_len = len as u32;
                    if i + 1 == self.n_up {
                        s.flags |= TCP_PSH;
                    }
                }
                InBlock::AckAfter(i) => {
                    let (off, len) = self.up_segment(i);
                    s.from_client = false;
                    s.seq = seq32(s_base);
                    s.ack = seq32(c_base + off + len);
                }
            }
        } else if k - self.hs - self.up_block < self.down_block {
            let j = k - self.hs - self.up_block;
            match in_block(j, self.n_down, self.ack_every) {
                InBlock::Data(i) => {
                    let off = i * self.mss;
                    s.from_client = false;
                    s.seq = seq32(s_base + off);
                    s.ack = seq32(c_base + self.upload);
                    s.payload_offset = off;
                    s.payload_len = self.mss.min(self.download - off) as u32;
                    if i + 1 == self.n_down {
                        s.flags |= TCP_PSH;
                    }
                }
                InBlock::AckAfter(i) => {
                    s.seq = seq32(c_base + self.upload);
                    s.ack = seq32(s_base + ((i + 1) * self.mss).min(self.download));
                }
            }
        } else {
            let c_next = c_base + self.upload;
            let s_next = s_base + self.download;
            match (self.close, k - self.hs - self.up_block - self.down_block) {
                (Close::Fin, 0) => {
                    s.seq = seq32(c_next);
                    s.ack = seq32(s_next);
                    s.flags = TCP_FIN | TCP_ACK;
                }
                (Close::Fin, 1) => {
                    s.from_client = false;
                    s.seq = seq32(s_next);
                    s.ack = seq32(c_next + 1);
                    s.flags = TCP_FIN | TCP_ACK;
                }
                (Close::Fin, _) => {
                    s.seq = seq32(c_next + 1);
                    s.ack = seq32(s_next + 1);
                }
                _ => {
                    s.seq = seq32(c_next);
                    s.ack = seq32(s_next);
                    s.flags = TCP_RST | TCP_ACK;
                }
            }
        }
        s.ip_len = (self.ip_hdr + TCP_HEADER_LEN + options + u64::from(s.payload_len)) as u32;
        s
    }
}

/// Iterator over a session's [`Segment`]s. Random access is cheap: `nth` jumps.
#[derive(Clone, Debug)]
pub struct TcpSegments {
    plan: Plan,
    k: u64,
}

impl TcpSegments {
    /// Time of the next segment, if any.
    pub fn peek_ts(&self) -> Option<u64> {
        (self.k < self.plan.total).then(|| {
            self.plan
                .start_ns
                .saturating_add(self.k.saturating_mul(self.plan.gap_ns))
        })
    }

    /// Segments not yet returned.
    pub fn remaining(&self) -> u64 {
        self.plan.total - self.k
    }
}

impl Iterator for TcpSegments {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.k >= self.plan.total {
            return None;
        }
        let s = self.plan.segment(self.k);
        self.k += 1;
        Some(s)
    }

    fn nth(&mut self, n: usize) -> Option<Segment> {
        self.k = self.k.saturating_add(n as u64).min(self.plan.total);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        (r, usize::try_from(self.remaining()).ok())
    }
}

/// Iterator over a session's rendered frames. Owns everything it needs (no borrow of the
/// session), so many can be kept in a scheduler.
#[derive(Clone, Debug)]
pub struct TcpPackets {
    segs: TcpSegments,
    /// The session's `first_client_bytes`.
    head: Vec<u8>,
    c2s: Direction,
    s2c: Direction,
    id_c: u16,
    id_s: u16,
}

impl TcpPackets {
    /// Time of the next packet, if any.
    pub fn peek_ts(&self) -> Option<u64> {
        self.segs.peek_ts()
    }

    /// Packets not yet returned.
    pub fn remaining(&self) -> u64 {
        self.segs.remaining()
    }

    /// Renders the next packet into `buf` (cleared first) and returns its time; `None` at the
    /// end. Lets a writer reuse one buffer instead of allocating per packet.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let s = self.segs.next()?;
        buf.clear();
        let (d, id) = if s.from_client {
            (&self.c2s, &mut self.id_c)
        } else {
            (&self.s2c, &mut self.id_s)
        };
        let mss_option = (s.flags & TCP_SYN != 0).then_some(self.segs.plan.mss as u16);
        let fields = TcpFields {
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            window: WINDOW,
            mss_option,
        };
        let (off, len) = (s.payload_offset, s.payload_len as usize);
        match usize::try_from(off)
            .ok()
            .and_then(|o| self.head.get(o..o + len))
        {
            // A head segment lies wholly inside the head (see `Plan::up_segment`).
            Some(h) if s.from_client => wire::push_tcp(buf, d, *id, fields, h),
            _ => wire::push_tcp_pattern(buf, d, *id, fields, off, len),
        }
        *id = id.wrapping_add(1);
        Some(s.ts_ns)
    }
}

impl Iterator for TcpPackets {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        let mut frame = Vec::new();
        let ts_ns = self.next_into(&mut frame)?;
        Some(Packet { ts_ns, frame })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.segs.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    fn v4() -> (SocketAddr, SocketAddr) {
        (
            "10.0.0.5:51234".parse().unwrap(),
            "203.0.113.50:443".parse().unwrap(),
        )
    }

    fn v6() -> (SocketAddr, SocketAddr) {
        (
            "[fd00::10]:40000".parse().unwrap(),
            "[2001:db8::20]:443".parse().unwrap(),
        )
    }

    fn links() -> Vec<Link> {
        vec![
            Link::ethernet(),
            Link::Ethernet { vlans: vec![42] },
            Link::Ethernet {
                vlans: vec![100, 42],
            },
            Link::Sll,
            Link::Sll2,
            Link::RawIp,
        ]
    }

    /// Parses a frame of `link` with etherparse (SLL2, which etherparse lacks, is checked by
    /// hand and then parsed from the IP header).
    fn parse<'a>(link: &Link, frame: &'a [u8]) -> SlicedPacket<'a> {
        match link {
            Link::Ethernet { vlans } => {
                let p = SlicedPacket::from_ethernet(frame).unwrap();
                assert_eq!(p.vlan_ids().len(), vlans.len());
                for (got, want) in p.vlan_ids().iter().zip(vlans) {
                    assert_eq!(got.value(), *want);
                }
                if vlans.len() == 2 {
                    assert_eq!(&frame[12..14], &[0x88, 0xa8]);
                    assert_eq!(&frame[16..18], &[0x81, 0x00]);
                }
                assert!(matches!(p.link, Some(LinkSlice::Ethernet2(_))));
                p
            }
            Link::Sll => {
                let p = SlicedPacket::from_linux_sll(frame).unwrap();
                assert!(matches!(p.link, Some(LinkSlice::LinuxSll(_))));
                p
            }
            Link::Sll2 => {
                let proto = u16::from_be_bytes([frame[0], frame[1]]);
                assert!(proto == 0x0800 || proto == 0x86dd);
                assert_eq!(&frame[2..4], &[0, 0]);
                assert_eq!(&frame[8..10], &[0, 1]);
                assert!(frame[10] == 0 || frame[10] == 4);
                assert_eq!(frame[11], 6);
                SlicedPacket::from_ip(&frame[20..]).unwrap()
            }
            Link::RawIp => SlicedPacket::from_ip(frame).unwrap(),
        }
    }

    struct Seen {
        expect: FlowExpect,
        flags: Vec<(bool, u8)>,
    }

    /// Parses every frame, checks checksums, lengths and seq/ack continuity, and sums counts.
    fn check_session(s: &TcpSession) -> Seen {
        let mut e = FlowExpect::default();
        let mut flags = Vec::new();
        let mut last_ts = None;
        let (mut next_c, mut next_s) = (None::<u32>, None::<u32>);
        let mut ids: [Option<u16>; 2] = [None, None];
        let segs: Vec<Segment> = s.segments().collect();
        let pkts: Vec<Packet> = s.packets().collect();
        assert_eq!(segs.len(), pkts.len());
        assert_eq!(segs.len() as u64, s.total_packets());
        for (seg, pkt) in segs.iter().zip(&pkts) {
            assert_eq!(seg.ts_ns, pkt.ts_ns);
            if let Some(t) = last_ts {
                assert_eq!(pkt.ts_ns, t + s.gap_ns, "timestamps step by gap");
            }
            last_ts = Some(pkt.ts_ns);
            assert_eq!(pkt.frame.len(), s.link.header_len() + seg.ip_len as usize);
            let p = parse(&s.link, &pkt.frame);
            let (src, dst, ip_len, id) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                    assert!(h.dont_fragment());
                    (
                        IpAddr::V4(h.source_addr()),
                        IpAddr::V4(h.destination_addr()),
                        u64::from(h.total_len()),
                        Some(h.identification()),
                    )
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    (
                        IpAddr::V6(h.source_addr()),
                        IpAddr::V6(h.destination_addr()),
                        40 + u64::from(h.payload_length()),
                        None,
                    )
                }
                other => panic!("not ip: {other:?}"),
            };
            assert_eq!(ip_len, u64::from(seg.ip_len));
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("not tcp");
            };
            let from_client = src == s.client.ip();
            assert_eq!(from_client, seg.from_client);
            let (sport, dport) = if from_client {
                assert_eq!(dst, s.server.ip());
                (s.client.port(), s.server.port())
            } else {
                assert_eq!(dst, s.client.ip());
                (s.server.port(), s.client.port())
            };
            assert_eq!((tcp.source_port(), tcp.destination_port()), (sport, dport));
            let hdr = tcp.to_header();
            let want_sum = match &p.net {
                Some(NetSlice::Ipv4(ip)) => hdr
                    .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                    .unwrap(),
                Some(NetSlice::Ipv6(ip)) => hdr
                    .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                    .unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(tcp.checksum(), want_sum, "tcp checksum");
            let payload = tcp.payload().len() as u64;
            assert_eq!(payload, u64::from(seg.payload_len));
            let mut f = 0u8;
            for (on, bit) in [
                (tcp.fin(), TCP_FIN),
                (tcp.syn(), TCP_SYN),
                (tcp.rst(), TCP_RST),
                (tcp.psh(), TCP_PSH),
                (tcp.ack(), TCP_ACK),
            ] {
                if on {
                    f |= bit;
                }
            }
            assert_eq!(f, seg.flags);
            assert_eq!(tcp.sequence_number(), seg.seq);
            if tcp.ack() {
                assert_eq!(tcp.acknowledgment_number(), seg.ack);
            }
            if tcp.syn() {
                let mss = s.mss.max(1);
                assert_eq!(tcp.options(), &[2, 4, (mss >> 8) as u8, mss as u8][..]);
            }
            // Sequence continuity per direction; the peer acks what it has seen.
            let consumed = payload as u32 + u32::from(tcp.syn() || tcp.fin());
            let (mine, theirs) = if from_client {
                (&mut next_c, next_s)
            } else {
                (&mut next_s, next_c)
            };
            if let Some(n) = *mine {
                assert_eq!(tcp.sequence_number(), n, "seq continuity");
            }
            *mine = Some(tcp.sequence_number().wrapping_add(consumed));
            if tcp.ack() {
                if let Some(t) = theirs {
                    assert_eq!(tcp.acknowledgment_number(), t, "ack = peer's next seq");
                }
            }
            // IPv4 identification increments per sender.
            if let Some(id) = id {
                let slot = &mut ids[usize::from(!from_client)];
                if let Some(prev) = *slot {
                    assert_eq!(id, prev.wrapping_add(1));
                }
                *slot = Some(id);
            }
            if from_client {
                e.orig_pkts += 1;
                e.orig_ip_bytes += ip_len;
                e.orig_payload_bytes += payload;
            } else {
                e.resp_pkts += 1;
                e.resp_ip_bytes += ip_len;
                e.resp_payload_bytes += payload;
            }
            if !(payload > 0 && tcp.ack() && !tcp.fin()) {
                flags.push((from_client, f));
            }
        }
        Seen { expect: e, flags }
    }

    #[test]
    fn every_link_parses_with_correct_flags() {
        for (client, server) in [v4(), v6()] {
            for link in links() {
                let mut s = TcpSession::new(client, server, 10_000, 3_000);
                s.link = link.clone();
                let seen = check_session(&s);
                assert_eq!(seen.expect, s.expected(), "{link:?}");
                let f = &seen.flags;
                assert_eq!(f[0], (true, TCP_SYN));
                assert_eq!(f[1], (false, TCP_SYN | TCP_ACK));
                assert_eq!(f[2], (true, TCP_ACK));
                let n = f.len();
                assert_eq!(f[n - 3], (true, TCP_FIN | TCP_ACK));
                assert_eq!(f[n - 2], (false, TCP_FIN | TCP_ACK));
                assert_eq!(f[n - 1], (true, TCP_ACK));
            }
        }
    }

    #[test]
    fn expected_matches_packets_for_many_shapes() {
        let mut cases = Vec::new();
        for (client, server) in [v4(), v6()] {
            for (up, down) in [
                (0, 0),
                (0, 5_000),
                (1, 0),
                (1460, 1460),
                (1461, 2921),
                (100_000, 7),
                (14_600, 29_200),
            ] {
                for (mss, ack_every) in [(1460, 2), (536, 1), (1000, 3), (8960, 8)] {
                    for close in [Close::Fin, Close::Rst, Close::None] {
                        for syn in [true, false] {
                            let mut s = TcpSession::new(client, server, up, down);
                            s.mss = mss;
                            s.ack_every = ack_every;
                            s.close = close;
                            s.syn = syn;
                            cases.push(s);
                        }
                    }
                }
            }
        }
        let mut vlan = TcpSession::new(v4().0, v4().1, 20_000, 500);
        vlan.link = Link::Ethernet { vlans: vec![7, 8] };
        cases.push(vlan);
        for (first, first_mss, up) in [(517, 200, 10_000), (517, 0, 100), (3000, 0, 5000)] {
            let mut head = TcpSession::new(v4().0, v4().1, up, 700);
            head.first_client_bytes = vec![0x16; first];
            head.first_mss = first_mss;
            cases.push(head);
        }
        let mut zero_ack = TcpSession::new(v6().0, v6().1, 5_000, 5_000);
        zero_ack.ack_every = 0;
        zero_ack.mss = 0;
        zero_ack.link = Link::Sll2;
        cases.push(zero_ack);
        for s in &cases {
            let seen = check_session(s);
            assert_eq!(seen.expect, s.expected(), "{s:?}");
        }
    }

    #[test]
    fn rst_and_none_teardown() {
        let (c, sv) = v4();
        let mut s = TcpSession::new(c, sv, 3000, 0);
        s.close = Close::Rst;
        let f = check_session(&s).flags;
        assert_eq!(*f.last().unwrap(), (true, TCP_RST | TCP_ACK));
        s.close = Close::None;
        s.syn = false;
        let segs: Vec<Segment> = s.segments().collect();
        assert_eq!(segs[0].payload_len, 1460);
        assert!(segs.last().unwrap().flags & (TCP_FIN | TCP_RST) == 0);
    }

    #[test]
    fn ack_pattern() {
        let (c, sv) = v4();
        let mut s = TcpSession::new(c, sv, 5 * 1000, 0);
        s.mss = 1000;
        s.ack_every = 2;
        s.close = Close::None;
        let pattern: Vec<(bool, u32)> = s
            .segments()
            .skip(3)
            .map(|g| (g.from_client, g.payload_len))
            .collect();
        // d d A d d A d A
        assert_eq!(
            pattern,
            vec![
                (true, 1000),
                (true, 1000),
                (false, 0),
                (true, 1000),
                (true, 1000),
                (false, 0),
                (true, 1000),
                (false, 0)
            ]
        );
    }

    #[test]
    fn sequence_numbers_wrap_in_big_sessions() {
        // 5 GB: the sequence space wraps; check by random access, without rendering.
        let (c, sv) = v4();
        let mut s = TcpSession::new(c, sv, 5_000_000_000, 0);
        s.mss = 8960;
        let total = s.total_packets();
        let e = s.expected();
        assert_eq!(e.orig_payload_bytes, 5_000_000_000);
        let fin = s.segments().nth(total as usize - 3).unwrap();
        assert_eq!(fin.flags, TCP_FIN | TCP_ACK);
        let syn = s.segments().next().unwrap();
        assert_eq!(
            fin.seq,
            syn.seq
                .wrapping_add(1)
                .wrapping_add(5_000_000_000u64 as u32)
        );
    }

    #[test]
    fn huge_session_streams() {
        // 200 MB rendered lazily; only counters are kept.
        let (c, sv) = v4();
        let mut s = TcpSession::new(c, sv, 200_000_000, 1000);
        s.mss = 8960;
        s.ack_every = 8;
        let mut e = FlowExpect::default();
        let mut buf = Vec::new();
        let mut pk = s.packets();
        let mut segs = s.segments();
        while let Some(_ts) = pk.next_into(&mut buf) {
            let g = segs.next().unwrap();
            let ip = (buf.len() - 14) as u64;
            if g.from_client {
                e.orig_pkts += 1;
                e.orig_ip_bytes += ip;
                e.orig_payload_bytes += u64::from(g.payload_len);
            } else {
                e.resp_pkts += 1;
                e.resp_ip_bytes += ip;
                e.resp_payload_bytes += u64::from(g.payload_len);
            }
        }
        assert_eq!(e, s.expected());
    }
}
