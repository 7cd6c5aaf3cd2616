//! Worst-case bench captures. `flows`: a flow-heavy mix of short TCP sessions and DNS
//! transactions, tens of thousands open at once, which stresses flow creation, expiry and the
//! DNS path rather than the per-byte path. `flood`: millions of ~60–82-byte frames, mostly
//! one-packet flows from a million new sources (most of them inside 10.0.0.0/8), which stresses
//! per-host cross-flow state. Both stream: memory is bounded by the flows open at once, never by
//! the file's size, and the bytes are a pure function of the arguments and the seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use super::wire::{self, Direction, TcpFields};
use super::{
    mix64, Close, FlowExpect, Link, PcapWriter, Rng, TcpPackets, TcpSession, DEFAULT_START_NS,
    LINKTYPE_ETHERNET, MIXED_SNAPLEN, TCP_FIN, TCP_SYN,
};

const SECOND: u64 = 1_000_000_000;
const MILLI: u64 = 1_000_000;
const MICRO: u64 = 1_000;
/// Write buffer of the files.
const WRITE_BUFFER: usize = 4 << 20;

/// Default flows of [`write_flows`]: 200 000 TCP sessions and 50 000 DNS transactions.
pub const FLOWS_DEFAULT: u64 = 250_000;
/// Default packets of [`write_flood`].
pub const FLOOD_DEFAULT_PACKETS: u64 = 5_000_000;

/// What [`write_flows`] or [`write_flood`] wrote. Every count is of flows with at least one
/// packet in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StressSummary {
    /// Records in the file.
    pub packets: u64,
    /// File size, bytes.
    pub file_bytes: u64,
    /// Time of the first record, ns since the Unix epoch.
    pub first_ts_ns: u64,
    /// Time of the last record.
    pub last_ts_ns: u64,
    /// Flows (distinct 5-tuples, by construction).
    pub flows: u64,
    /// Of which TCP sessions.
    pub tcp_flows: u64,
    /// Of which TCP sessions from a home host to an external host that upload more than they
    /// download.
    pub uploads: u64,
    /// Of which DNS transactions (UDP to port 53: one query and its answer, or an A and an AAAA
    /// query from the same socket).
    pub dns_flows: u64,
    /// DNS queries (each answered).
    pub dns_queries: u64,
    /// Packets of the DNS transactions.
    pub dns_packets: u64,
    /// Of which other UDP flows.
    pub udp_flows: u64,
    /// Flows of exactly one packet.
    pub one_packet_flows: u64,
    /// Flows over IPv6.
    pub ipv6_flows: u64,
    /// Flows with a VLAN tag.
    pub vlan_flows: u64,
    /// Distinct source addresses of the one-packet flows (flood) or home hosts used (flows).
    pub sources: u64,
    /// Most flows open at once: first packet written, last packet not yet.
    pub max_open: u64,
}

/// What kind of flow a scheduled source is, for the summary.
#[derive(Clone, Copy, Default)]
struct Kind {
    tcp: bool,
    upload: bool,
    dns_queries: u8,
    udp: bool,
    ipv6: bool,
    vlan: bool,
    /// Packet of this flow (index in the flow, from 0) whose place in the file the writer
    /// reports; at most one flow of a file sets it.
    mark: Option<u64>,
}

/// The packets of one scheduled flow.
enum Src {
    Tcp(Box<TcpPackets>),
    /// Pre-rendered frames in time order (DNS transactions, one-packet flows): small.
    Frames(Vec<(u64, Vec<u8>)>, usize),
}

impl Src {
    fn peek_ts(&self) -> Option<u64> {
        match self {
            Src::Tcp(p) => p.peek_ts(),
            Src::Frames(f, i) => f.get(*i).map(|(ts, _)| *ts),
        }
    }

    fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        match self {
            Src::Tcp(p) => p.next_into(buf),
            Src::Frames(f, i) => {
                let (ts, frame) = f.get_mut(*i)?;
                *i += 1;
                std::mem::swap(buf, frame);
                Some(*ts)
            }
        }
    }

    fn remaining(&self) -> u64 {
        match self {
            Src::Tcp(p) => p.remaining(),
            Src::Frames(f, i) => (f.len() - i) as u64,
        }
    }
}

struct Slot {
    src: Src,
    kind: Kind,
    started: bool,
    one_packet: bool,
    /// Packets of this flow written so far.
    written: u64,
}

/// Where the marked packet ([`Kind::mark`]) went: its record index in the file (from 0) and
/// its time.
type Marked = Option<(u64, u64)>;

/// Writes the flows that `arrivals` returns, in order of their first packet (which must not
/// decrease), interleaved by time, until `arrivals` is done and every flow ended, or
/// `max_packets` are written. Memory: one slot per open flow. Also returns where the marked
/// packet went, if a flow has one.
fn write_scheduled(
    path: &Path,
    max_packets: u64,
    mut arrivals: impl FnMut() -> Option<(Src, Kind)>,
) -> io::Result<(StressSummary, Marked)> {
    let file = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET, MIXED_SNAPLEN)?;
    let mut s = StressSummary::default();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut open = 0u64;
    let mut pending = arrivals();
    let mut buf = Vec::with_capacity(usize::from(u16::MAX));
    let mut first = None;
    let mut marked = None;
    while w.packets() < max_packets {
        let top = heap.peek().map(|r| r.0 .0);
        if let Some((src, kind)) = pending.take() {
            match src.peek_ts() {
                Some(ts) if top.is_none_or(|t| ts <= t) => {
                    let one_packet = src.remaining() == 1;
                    let slot = Slot {
                        src,
                        kind,
                        started: false,
                        one_packet,
                        written: 0,
                    };
                    let i = match free.pop() {
                        Some(i) => {
                            slots[i] = Some(slot);
                            i
                        }
                        None => {
                            slots.push(Some(slot));
                            slots.len() - 1
                        }
                    };
                    heap.push(Reverse((ts, order, i)));
                    order += 1;
                    pending = arrivals();
                    continue;
                }
                Some(_) => pending = Some((src, kind)),
                None => {
                    pending = arrivals();
                    continue;
                }
            }
        }
        let Some(Reverse((_, _, i))) = heap.pop() else {
            break;
        };
        let Some(slot) = slots.get_mut(i).and_then(Option::as_mut) else {
            break;
        };
        let Some(ts) = slot.src.next_into(&mut buf) else {
            continue;
        };
        if slot.kind.mark == Some(slot.written) {
            marked = Some((w.packets(), ts));
        }
        slot.written += 1;
        w.write(ts, &buf)?;
        first.get_or_insert(ts);
        s.last_ts_ns = ts;
        if !slot.started {
            slot.started = true;
            open += 1;
            s.max_open = s.max_open.max(open);
            let k = slot.kind;
            s.flows += 1;
            s.tcp_flows += u64::from(k.tcp);
            s.uploads += u64::from(k.upload);
            s.dns_flows += u64::from(k.dns_queries > 0);
            s.dns_queries += u64::from(k.dns_queries);
            s.udp_flows += u64::from(k.udp);
            s.ipv6_flows += u64::from(k.ipv6);
            s.vlan_flows += u64::from(k.vlan);
            s.one_packet_flows += u64::from(slot.one_packet);
        }
        if slot.kind.dns_queries > 0 {
            s.dns_packets += 1;
        }
        match slot.src.peek_ts() {
            Some(next) => {
                heap.push(Reverse((next, order, i)));
                order += 1;
            }
            None => {
                slots[i] = None;
                free.push(i);
                open -= 1;
            }
        }
    }
    s.packets = w.packets();
    s.file_bytes = w.bytes_written();
    s.first_ts_ns = first.unwrap_or(0);
    w.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok((s, marked))
}

/// First octets of the public IPv4 ranges external hosts are drawn from (large cloud/CDN /8s;
/// none private or reserved), as in the mixed capture.
const PUBLIC_SLASH8: [u8; 16] = [
    13, 18, 20, 23, 31, 34, 35, 44, 52, 54, 64, 104, 142, 151, 157, 185,
];

/// External host `i` (IPv4): a public address, a pure function of `i`.
fn external_v4(i: u64) -> Ipv4Addr {
    let r = mix64(i ^ 0x6578_7465_726e_616c);
    Ipv4Addr::new(
        PUBLIC_SLASH8[(r % PUBLIC_SLASH8.len() as u64) as usize],
        (r >> 8) as u8,
        (r >> 16) as u8,
        (r >> 24) as u8 | 1,
    )
}

/// External host `i` (IPv6): 2001:db8::/32, as in the mixed capture.
fn external_v6(i: u64) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        (i >> 16) as u16,
        i as u16,
        0,
        0,
        0,
        1 + (mix64(i) as u16 & 0xff),
    )
}

/// Home host `h` (< 65 536 × 250): every fifth in 192.168.0.0/16, the others in 10.0.0.0/8.
fn home_v4(h: u64) -> Ipv4Addr {
    let j = h / 5;
    if h % 5 == 0 {
        Ipv4Addr::new(192, 168, (j / 250) as u8, (j % 250 + 2) as u8)
    } else {
        let j = h - h / 5 - 1;
        Ipv4Addr::new(
            10,
            1 + (j / 62_500) as u8,
            (j / 250 % 250) as u8,
            (j % 250 + 2) as u8,
        )
    }
}

/// Home host `h` (IPv6): fd00::/48.
fn home_v6(h: u64) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0,
        0,
        (h >> 8) as u16,
        0,
        0,
        0,
        (h & 0xff) as u16 + 2,
    )
}

/// Distinct home hosts of the flow-heavy mix.
const HOME_HOSTS: u64 = 8_000;
/// Distinct external hosts of the flow-heavy mix.
const EXTERNAL_HOSTS: u64 = 40_000;
/// Mean time between two new flows of the flow-heavy mix: 2500 flows per second.
const FLOWS_ARRIVAL_NS: u64 = 400 * MICRO;
/// VLAN ids of the tagged share.
const VLANS: [u16; 4] = [10, 20, 30, 42];

/// Draws the flows of the flow-heavy mix.
struct FlowMix {
    rng: Rng,
    now: u64,
    tcp_left: u64,
    dns_left: u64,
    used: Vec<bool>,
}

impl FlowMix {
    /// Index of a home host: a few busy ones, a long tail.
    fn home(&mut self) -> u64 {
        let h = if self.rng.chance(50) {
            self.rng.below(HOME_HOSTS)
        } else {
            let r = self.rng.below(HOME_HOSTS);
            self.rng.below(r + 1)
        };
        if let Some(u) = self.used.get_mut(h as usize) {
            *u = true;
        }
        h
    }

    fn external(&mut self) -> u64 {
        let r = self.rng.below(EXTERNAL_HOSTS);
        self.rng.below(r + 1)
    }

    fn link(&mut self, kind: &mut Kind) -> Link {
        if self.rng.chance(15) {
            kind.vlan = true;
            Link::Ethernet {
                vlans: vec![VLANS[self.rng.below(VLANS.len() as u64) as usize]],
            }
        } else {
            Link::ethernet()
        }
    }

    fn port(&mut self) -> u16 {
        self.rng.range(32_768, 60_999) as u16
    }

    fn next(&mut self) -> Option<(Src, Kind)> {
        let left = self.tcp_left + self.dns_left;
        if left == 0 {
            return None;
        }
        self.now += self.rng.range(1, 2 * FLOWS_ARRIVAL_NS - 1);
        if self.rng.below(left) < self.dns_left {
            self.dns_left -= 1;
            Some(self.dns())
        } else {
            self.tcp_left -= 1;
            Some(self.tcp())
        }
    }

    fn tcp(&mut self) -> (Src, Kind) {
        let mut kind = Kind {
            tcp: true,
            ..Kind::default()
        };
        let v6 = self.rng.chance(15);
        kind.ipv6 = v6;
        let h = self.home();
        let what = self.rng.below(100);
        let internal = what >= 92;
        let (client_ip, server_ip) = match (v6, internal) {
            (false, false) => (
                IpAddr::V4(home_v4(h)),
                IpAddr::V4(external_v4(self.external())),
            ),
            (true, false) => (
                IpAddr::V6(home_v6(h)),
                IpAddr::V6(external_v6(self.external())),
            ),
            (false, true) => (IpAddr::V4(home_v4(h)), IpAddr::V4(home_v4(self.home()))),
            (true, true) => (IpAddr::V6(home_v6(h)), IpAddr::V6(home_v6(self.home()))),
        };
        let port = if internal {
            [445, 22, 8080, 3389][self.rng.below(4) as usize]
        } else {
            match self.rng.below(100) {
                0..=71 => 443,
                72..=87 => 80,
                88..=92 => 8443,
                93..=95 => 22,
                96..=97 => 993,
                _ => 5222,
            }
        };
        let r = &mut self.rng;
        let (up, down) = match what {
            0..=51 => (r.range(150, 1_200), r.range(400, 4_000)), // web request, page
            52..=73 => (r.range(1_500, 7_000), r.range(60, 400)), // upload (form, API, sync)
            74..=91 => (r.range(100, 500), r.range(2_000, 8_000)), // download
            _ => (r.range(200, 2_500), r.range(200, 2_500)),      // internal
        };
        kind.upload = !internal && up > down;
        let mss = [536, 1200, 1380, 1440, 1460][r.below(5) as usize] - if v6 { 20 } else { 0 };
        let client = SocketAddr::new(client_ip, self.port());
        let mut s = TcpSession::new(client, SocketAddr::new(server_ip, port), up, down);
        s.link = self.link(&mut kind);
        s.start_ns = self.now;
        s.mss = mss;
        s.ack_every = self.rng.range(2, 3) as u32;
        // 0.1–3 s between packets: a session lasts seconds, so tens of thousands are open.
        s.gap_ns = self.rng.range(100 * MILLI, 3 * SECOND);
        s.close = if self.rng.chance(94) {
            Close::Fin
        } else {
            Close::Rst
        };
        (Src::Tcp(Box::new(s.packets())), kind)
    }

    fn dns(&mut self) -> (Src, Kind) {
        let mut kind = Kind::default();
        let v6 = self.rng.chance(15);
        kind.ipv6 = v6;
        let h = self.home();
        let internal_resolver = self.rng.chance(60);
        let (client, resolver, rtt) = match (v6, internal_resolver) {
            (false, true) => (
                IpAddr::V4(home_v4(h)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + self.rng.below(2) as u8)),
                self.rng.range(200 * MICRO, 3 * MILLI),
            ),
            (false, false) => (
                IpAddr::V4(home_v4(h)),
                IpAddr::V4(
                    [
                        Ipv4Addr::new(8, 8, 8, 8),
                        Ipv4Addr::new(1, 1, 1, 1),
                        Ipv4Addr::new(9, 9, 9, 9),
                        Ipv4Addr::new(208, 67, 222, 222),
                    ][self.rng.below(4) as usize],
                ),
                self.rng.range(5 * MILLI, 40 * MILLI),
            ),
            (true, true) => (
                IpAddr::V6(home_v6(h)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53)),
                self.rng.range(200 * MICRO, 3 * MILLI),
            ),
            (true, false) => (
                IpAddr::V6(home_v6(h)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
                self.rng.range(5 * MILLI, 40 * MILLI),
            ),
        };
        let link = self.link(&mut kind);
        let port = self.port();
        let c2s = Direction::new(&link, (client, port), (resolver, 53), true);
        let s2c = Direction::new(&link, (resolver, 53), (client, port), false);
        // Like glibc: an A query, and often an AAAA for the same name from the same socket.
        let qtypes: &[u16] = match self.rng.below(100) {
            0..=54 => &[QTYPE_A],
            55..=69 => &[QTYPE_AAAA],
            _ => &[QTYPE_A, QTYPE_AAAA],
        };
        kind.dns_queries = qtypes.len() as u8;
        let mut name = Vec::with_capacity(64);
        push_realistic_name(&mut name, &mut self.rng);
        let mut frames = Vec::with_capacity(2 * qtypes.len());
        let mut t = self.now;
        let mut ip_id = self.rng.next_u64() as u16;
        for &qtype in qtypes {
            let id = self.rng.next_u64() as u16;
            let mut q = Vec::with_capacity(128);
            dns_query(&mut q, id, &name, qtype);
            let mut frame = Vec::with_capacity(128);
            wire::push_udp(&mut frame, &c2s, ip_id, &q);
            frames.push((t, frame));
            let mut a = Vec::with_capacity(256);
            dns_answer(&mut a, &q, qtype, &mut self.rng);
            let mut frame = Vec::with_capacity(256);
            wire::push_udp(&mut frame, &s2c, ip_id ^ 0x5555, &a);
            frames.push((t + rtt, frame));
            ip_id = ip_id.wrapping_add(1);
            t += rtt + self.rng.range(20 * MICRO, 500 * MICRO);
        }
        (Src::Frames(frames, 0), kind)
    }
}

/// Writes the flow-heavy mix: `flows` flows (4/5 short TCP sessions, 1/5 DNS transactions),
/// a new one every 400 µs on average, Ethernet, snaplen 65535, time ordered, deterministic per
/// `seed`. TCP: handshake, a few data segments each way (MSS 536–1460), FIN close (6% RST);
/// 52% web-like requests, 22% uploads and 18% downloads between a home host (8000 in
/// 10.0.0.0/8, 192.168.0.0/16 and fd00::/48) and an external one (40 000, public /8s and
/// 2001:db8::/32), 8% between home hosts; 0.1–3 s between packets, so tens of thousands are
/// open at once. DNS: an A and/or AAAA query for a name under one of ~2000 registered domains
/// to an internal or public resolver, answered. 15% of the flows are IPv6 and 15% VLAN
/// tagged. With the default 250 000 flows: ~2.5 M packets, ~1 GB.
pub fn write_flows(path: &Path, flows: u64, seed: u64) -> io::Result<StressSummary> {
    let tcp = flows - flows / 5;
    let mut mix = FlowMix {
        rng: Rng::new(seed ^ 0x0066_6c6f_7773),
        now: DEFAULT_START_NS,
        tcp_left: tcp,
        dns_left: flows - tcp,
        used: vec![false; HOME_HOSTS as usize],
    };
    let (mut s, _) = write_scheduled(path, u64::MAX, || mix.next())?;
    s.sources = mix.used.iter().filter(|u| **u).count() as u64;
    Ok(s)
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
const QTYPE_CNAME: u16 = 5;

/// First halves of registered domain names.
const DOMAIN_HEADS: [&[u8]; 48] = [
    b"blue", b"north", b"cloud", b"data", b"open", b"smart", b"green", b"bright", b"fast", b"net",
    b"star", b"sun", b"red", b"deep", b"silver", b"iron", b"quick", b"clear", b"rapid", b"true",
    b"prime", b"swift", b"urban", b"alpine", b"metro", b"nova", b"pixel", b"polar", b"solar",
    b"terra", b"ultra", b"vivid", b"wild", b"zen", b"apex", b"atlas", b"cedar", b"delta", b"echo",
    b"ember", b"falcon", b"harbor", b"lumen", b"maple", b"orbit", b"river", b"summit", b"tidal",
];
/// Second halves of registered domain names.
const DOMAIN_TAILS: [&[u8]; 40] = [
    b"soft", b"works", b"hub", b"labs", b"media", b"systems", b"shop", b"news", b"cast", b"play",
    b"stream", b"mail", b"bank", b"pay", b"cloud", b"box", b"drive", b"link", b"base", b"grid",
    b"point", b"ware", b"zone", b"logic", b"gate", b"stack", b"desk", b"wave", b"line", b"port",
    b"space", b"mart", b"forge", b"bit", b"kit", b"sense", b"trip", b"health", b"tech", b"games",
];
/// Public suffixes, as label lists; `.com` is drawn most often.
const TLDS: [&[&[u8]]; 16] = [
    &[b"com"],
    &[b"com"],
    &[b"com"],
    &[b"com"],
    &[b"net"],
    &[b"org"],
    &[b"io"],
    &[b"de"],
    &[b"fr"],
    &[b"nl"],
    &[b"co", b"uk"],
    &[b"com", b"au"],
    &[b"jp"],
    &[b"com", b"br"],
    &[b"app"],
    &[b"dev"],
];
/// Host labels under a registered domain.
const SUBDOMAINS: [&[u8]; 30] = [
    b"www",
    b"api",
    b"cdn",
    b"img",
    b"static",
    b"mail",
    b"login",
    b"assets",
    b"update",
    b"news",
    b"shop",
    b"docs",
    b"m",
    b"app",
    b"edge",
    b"auth",
    b"accounts",
    b"media",
    b"video",
    b"push",
    b"telemetry",
    b"metrics",
    b"ws",
    b"chat",
    b"files",
    b"download",
    b"s3",
    b"graph",
    b"gateway",
    b"status",
];
/// Region labels some names carry between host and domain.
const REGIONS: [&[u8]; 7] = [
    b"eu",
    b"us",
    b"ap",
    b"eu-west-1",
    b"us-east-1",
    b"prod",
    b"v2",
];
/// CNAME targets: CDN domains.
const CDN_DOMAINS: [&[&[u8]]; 5] = [
    &[b"edgekey", b"net"],
    &[b"akamaiedge", b"net"],
    &[b"cloudfront", b"net"],
    &[b"fastly", b"net"],
    &[b"azureedge", b"net"],
];
/// Registered domains: every head with every tail.
const DOMAINS: u64 = (DOMAIN_HEADS.len() * DOMAIN_TAILS.len()) as u64;

fn push_label(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(len as u8);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Appends an encoded name like `api.eu.bluecloud.co.uk`: a host label, sometimes a region,
/// and a registered domain drawn with a popularity skew (a few very common, a long tail).
fn push_realistic_name(out: &mut Vec<u8>, rng: &mut Rng) {
    let r = rng.below(DOMAINS);
    let d = rng.below(r + 1);
    push_label(
        out,
        &[SUBDOMAINS[rng.below(SUBDOMAINS.len() as u64) as usize]],
    );
    if rng.chance(20) {
        push_label(out, &[REGIONS[rng.below(REGIONS.len() as u64) as usize]]);
    }
    let head = DOMAIN_HEADS[(d % DOMAIN_HEADS.len() as u64) as usize];
    let tail = DOMAIN_TAILS[(d / DOMAIN_HEADS.len() as u64) as usize % DOMAIN_TAILS.len()];
    push_label(out, &[head, tail]);
    for l in TLDS[(mix64(d) % TLDS.len() as u64) as usize] {
        push_label(out, &[l]);
    }
    out.push(0);
}

/// A recursive query (RD) for `name` (encoded) of `qtype`, class IN.
fn dns_query(out: &mut Vec<u8>, id: u16, name: &[u8], qtype: u16) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
    out.extend_from_slice(name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]); // IN
}

/// The answer to `query`: 4% NXDOMAIN, else sometimes a CNAME into a CDN, then 1–4 A or 1–2
/// AAAA records. Owners are compression pointers to earlier names.
fn dns_answer(out: &mut Vec<u8>, query: &[u8], qtype: u16, rng: &mut Rng) {
    const HEADER_LEN: u16 = 12;
    let nx = rng.chance(4);
    let cname = !nx && rng.chance(20);
    let records = if nx {
        0
    } else if qtype == QTYPE_A {
        rng.range(1, 4)
    } else {
        rng.range(1, 2)
    };
    let ancount = records + u64::from(cname);
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, if nx { 0x83 } else { 0x80 }, 0, 1]);
    out.extend_from_slice(&(ancount as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER_LEN as usize..]);
    let mut owner = 0xc000 | HEADER_LEN;
    let ttl = rng.range(30, 3_600) as u32;
    if cname {
        let mut target = Vec::with_capacity(40);
        let n = rng.below(10_000);
        push_label(&mut target, &[b"e", n.to_string().as_bytes()]);
        for l in CDN_DOMAINS[rng.below(CDN_DOMAINS.len() as u64) as usize] {
            push_label(&mut target, &[l]);
        }
        target.push(0);
        out.extend_from_slice(&owner.to_be_bytes());
        out.extend_from_slice(&QTYPE_CNAME.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(target.len() as u16).to_be_bytes());
        owner = 0xc000 | out.len() as u16;
        out.extend_from_slice(&target);
    }
    for _ in 0..records {
        out.extend_from_slice(&owner.to_be_bytes());
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.min(300).to_be_bytes());
        let v = rng.next_u64();
        if qtype == QTYPE_A {
            out.extend_from_slice(&4u16.to_be_bytes());
            let a = external_v4(v);
            out.extend_from_slice(&a.octets());
        } else {
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&external_v6(v).octets());
        }
    }
}

/// Packet time the flood covers.
const FLOOD_SPAN_NS: u64 = 180 * SECOND;
/// Long-lived flows of the flood (fewer when there are too few packets).
const FLOOD_LONG_FLOWS: u64 = 2_000;
/// Payload per segment of the long-lived flows: 14 + 20 + 20 + 28 = 82-byte frames.
const FLOOD_LONG_MSS: u16 = 28;

/// Draws the flood's flows.
struct Flood {
    rng: Rng,
    /// One-packet flows still to start, of `one`.
    one: u64,
    one_done: u64,
    long: u64,
    long_done: u64,
    long_packets: u64,
    /// Offset of the 24-bit permutation that picks home sources.
    perm_offset: u64,
    /// The upload to interleave, and the index of its crossing packet; taken when it starts.
    upload: Option<(TcpSession, u64)>,
}

/// A bijection of 0..2^24: distinct `i` give distinct host parts, spread over the /8.
fn perm24(i: u64, offset: u64) -> u32 {
    ((i.wrapping_mul(0x9e_3779) + offset) & 0xff_ffff) as u32
}

impl Flood {
    /// Time of one-packet flow `i`: evenly spaced, with a jitter below the spacing, so the
    /// times never decrease.
    fn one_ts(&self, i: u64) -> u64 {
        let step = (FLOOD_SPAN_NS / self.one.max(1)).max(1);
        DEFAULT_START_NS + i * FLOOD_SPAN_NS / self.one.max(1) + mix64(i ^ self.perm_offset) % step
    }

    fn long_ts(&self, j: u64) -> u64 {
        // Long-lived flows open during the first 5 s, so they span the whole flood.
        DEFAULT_START_NS + j * 5 * SECOND / self.long.max(1)
    }

    fn next(&mut self) -> Option<(Src, Kind)> {
        let one = (self.one_done < self.one).then(|| self.one_ts(self.one_done));
        let long = (self.long_done < self.long).then(|| self.long_ts(self.long_done));
        if let Some((session, mark)) = self.upload.take_if(|(u, _)| {
            one.is_none_or(|t| u.start_ns < t) && long.is_none_or(|t| u.start_ns < t)
        }) {
            let kind = Kind {
                tcp: true,
                upload: true,
                mark: Some(mark),
                ..Kind::default()
            };
            return Some((Src::Tcp(Box::new(session.packets())), kind));
        }
        match (one, long) {
            (Some(a), Some(b)) if b < a => Some(self.long_flow(b)),
            (None, Some(b)) => Some(self.long_flow(b)),
            (Some(a), _) => Some(self.one_packet(a)),
            (None, None) => None,
        }
    }

    fn one_packet(&mut self, ts: u64) -> (Src, Kind) {
        let i = self.one_done;
        self.one_done += 1;
        let link = Link::ethernet();
        let what = self.rng.below(100);
        let mut kind = Kind::default();
        // Sources: the first 85% of the permutation of 10.0.0.0/8 for home sources, a public
        // /8 plus the same permutation for the others: every one-packet flow has a new source.
        let home_src = Ipv4Addr::from((10u32 << 24) | perm24(i, self.perm_offset));
        let ext = external_v4(self.rng.next_u64());
        let (src, dst, sport, dport) = match what {
            0..=69 | 85..=99 => (
                home_src,
                ext,
                self.rng.range(1_024, 65_535) as u16,
                match self.rng.below(10) {
                    0..=4 => 443,
                    5..=6 => 80,
                    7 => 22,
                    8 => 445,
                    _ => self.rng.range(1, 65_535) as u16,
                },
            ),
            _ => {
                let a = PUBLIC_SLASH8[(i % PUBLIC_SLASH8.len() as u64) as usize];
                let src = Ipv4Addr::from((u32::from(a) << 24) | perm24(i, !self.perm_offset));
                let dst = Ipv4Addr::new(10, 0, 1, 2 + self.rng.below(200) as u8);
                let dport = [80, 443, 22, 25][self.rng.below(4) as usize];
                (src, dst, self.rng.range(1_024, 65_535) as u16, dport)
            }
        };
        let d = Direction::new(
            &link,
            (IpAddr::V4(src), sport),
            (IpAddr::V4(dst), dport),
            true,
        );
        let ip_id = self.rng.next_u64() as u16;
        let mut frame = Vec::with_capacity(96);
        if what >= 85 {
            // One UDP datagram of 0–28 bytes (probes, NTP/SIP/SSDP-like junk).
            kind.udp = true;
            let len = self.rng.range(0, 28) as usize;
            wire::push_udp(&mut frame, &d, ip_id, wire::payload(i, len));
        } else {
            // A spoofed SYN (MSS option); half carry a little data, as flood tools send.
            kind.tcp = true;
            let len = if self.rng.chance(50) {
                self.rng.range(4, 24) as usize
            } else {
                0
            };
            let f = TcpFields {
                seq: self.rng.next_u64() as u32,
                ack: 0,
                flags: TCP_SYN,
                window: [1024, 5840, 29_200, 64_240][self.rng.below(4) as usize],
                mss_option: Some(1460),
            };
            wire::push_tcp(&mut frame, &d, ip_id, f, wire::payload(i, len));
        }
        (Src::Frames(vec![(ts, frame)], 0), kind)
    }

    fn long_flow(&mut self, start: u64) -> (Src, Kind) {
        let j = self.long_done;
        self.long_done += 1;
        let mut kind = Kind {
            tcp: true,
            ..Kind::default()
        };
        // Share the remaining packets; the per-flow gap stretches each over the whole span.
        let packets = self.long_packets / self.long.max(1);
        let segments = (packets.saturating_sub(6) * 4 / 5).max(1);
        let mss = u64::from(FLOOD_LONG_MSS);
        let upload = self.rng.chance(60);
        let (up, down) = if upload {
            (segments * 9 / 10 * mss, segments.div_ceil(10) * mss)
        } else {
            (segments.div_ceil(10) * mss, segments * 9 / 10 * mss)
        };
        kind.upload = up > down;
        let client = SocketAddr::new(
            IpAddr::V4(home_v4(j)),
            self.rng.range(32_768, 60_999) as u16,
        );
        let server = SocketAddr::new(IpAddr::V4(external_v4(j ^ 0x10_0000)), 443);
        let mut s = TcpSession::new(client, server, up, down);
        s.start_ns = start;
        s.mss = FLOOD_LONG_MSS;
        s.ack_every = 4;
        // 3% past the span: every one-packet flow is written before the file stops.
        s.gap_ns = (FLOOD_SPAN_NS * 103 / 100 - (start - DEFAULT_START_NS)) / packets.max(1);
        (Src::Tcp(Box::new(s.packets())), kind)
    }
}

/// Writes the small-packet flood: `packets` frames over 180 s of packet time. 24% of the
/// packets are one-packet flows, each from a new source: 70 of every 100 a spoofed SYN from a
/// new home source in 10.0.0.0/8 to an external host, 15 a SYN from a new public source to a
/// home server, 15 a 0–28-byte UDP datagram from a new home source to an external host. The
/// other 76% are carried by up to 2000 long-lived TCP sessions between home and external hosts
/// with 28-byte segments (82-byte frames). Ethernet, snaplen 65535, time ordered, deterministic
/// per `seed`. With the default 5 M packets: 1.2 M one-packet flows, ~380 MB.
pub fn write_flood(path: &Path, packets: u64, seed: u64) -> io::Result<StressSummary> {
    Ok(flood(path, packets, seed, None)?.0)
}

/// Client of the upload [`write_flood_upload`] interleaves: the demo's uploader.
pub const FLOOD_UPLOAD_CLIENT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 51_234));
/// Server of that upload.
pub const FLOOD_UPLOAD_SERVER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 443));
/// The sensor's default `min_packets` of the large-transfer detector: an alert also needs more
/// outbound packets than this, so the crossing packet is found by the same rule.
const LARGE_TRANSFER_MIN_PACKETS: u64 = 1_000;
/// The upload starts this far into the flood and ends this long before the flood's one-packet
/// flows do, so it runs (and crosses) while the flood does.
const FLOOD_UPLOAD_MARGIN_NS: u64 = 10 * SECOND;

/// The upload of [`write_flood_upload`] and where it crosses the alert threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodUpload {
    /// What a flow table must count for it (orig = the uploading client).
    pub expect: FlowExpect,
    /// Outbound IP bytes the crossing packet must reach.
    pub threshold_ip_bytes: u64,
    /// Record index in the file (from 0) of the client packet with which its IP bytes first
    /// reach `threshold_ip_bytes` with more than 1000 packets: the packet that must alert.
    pub cross_index: u64,
    /// Time of that packet, ns since the Unix epoch (the file keeps microseconds).
    pub cross_ts_ns: u64,
    /// Client packets up to and including it: the alert's `out_pkts`.
    pub cross_orig_pkts: u64,
    /// Client IP bytes up to and including it: the alert's `out_ip_bytes`.
    pub cross_orig_ip_bytes: u64,
    /// Time of its first FIN: the connection is open until then.
    pub fin_ts_ns: u64,
}

/// Writes the flood of [`write_flood`] (the same `packets` flood frames, byte for byte and in
/// the same order) with one TCP upload interleaved: [`FLOOD_UPLOAD_CLIENT`] to
/// [`FLOOD_UPLOAD_SERVER`], `upload_bytes` of payload in full 1460-byte segments (1514-byte
/// frames), handshake first and FIN close last, its packets evenly spread from 10 s into the
/// flood to 10 s before its one-packet flows end, so it crosses `threshold_ip_bytes` of
/// outbound IP bytes while the flood runs. Returns where it crosses: the test of a sensor's
/// alert under a flood.
pub fn write_flood_upload(
    path: &Path,
    packets: u64,
    seed: u64,
    upload_bytes: u64,
    threshold_ip_bytes: u64,
) -> io::Result<(StressSummary, FloodUpload)> {
    let mut session = TcpSession::new(FLOOD_UPLOAD_CLIENT, FLOOD_UPLOAD_SERVER, upload_bytes, 0);
    session.start_ns = DEFAULT_START_NS + FLOOD_UPLOAD_MARGIN_NS;
    session.gap_ns = (FLOOD_SPAN_NS - 2 * FLOOD_UPLOAD_MARGIN_NS) / session.total_packets().max(1);
    let mut up = FloodUpload {
        expect: session.expected(),
        threshold_ip_bytes,
        cross_index: 0,
        cross_ts_ns: 0,
        cross_orig_pkts: 0,
        cross_orig_ip_bytes: 0,
        fin_ts_ns: 0,
    };
    let (mut bytes, mut pkts, mut cross) = (0u64, 0u64, None);
    for g in session.segments() {
        if g.from_client {
            bytes += u64::from(g.ip_len);
            pkts += 1;
            if cross.is_none() && bytes >= threshold_ip_bytes && pkts > LARGE_TRANSFER_MIN_PACKETS {
                cross = Some(g.index);
                (up.cross_orig_pkts, up.cross_orig_ip_bytes) = (pkts, bytes);
            }
        }
        if up.fin_ts_ns == 0 && g.flags & TCP_FIN != 0 {
            up.fin_ts_ns = g.ts_ns;
        }
    }
    let Some(cross) = cross else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "an upload of {upload_bytes} bytes never reaches {threshold_ip_bytes} outbound \
                 IP bytes with more than {LARGE_TRANSFER_MIN_PACKETS} packets"
            ),
        ));
    };
    let (s, marked) = flood(path, packets, seed, Some((session, cross)))?;
    // The upload ends before the flood's one-packet flows, so it is always written whole.
    (up.cross_index, up.cross_ts_ns) = marked.unwrap_or_default();
    Ok((s, up))
}

/// The flood of `packets` frames, with `upload` (a session and the index of its packet to
/// mark) interleaved.
fn flood(
    path: &Path,
    packets: u64,
    seed: u64,
    upload: Option<(TcpSession, u64)>,
) -> io::Result<(StressSummary, Marked)> {
    let upload_packets = upload.as_ref().map_or(0, |(u, _)| u.total_packets());
    let one = packets * 6 / 25;
    let long = FLOOD_LONG_FLOWS.min((packets - one) / 50);
    let mut rng = Rng::new(seed ^ 0x0066_6c6f_6f64);
    let perm_offset = rng.next_u64();
    let mut flood = Flood {
        rng,
        one,
        one_done: 0,
        long,
        long_done: 0,
        // A little more than needed: the file stops at exactly `packets`.
        long_packets: (packets - one) * 102 / 100,
        perm_offset,
        upload,
    };
    let (mut s, marked) = write_scheduled(path, packets + upload_packets, || flood.next())?;
    s.sources = s.one_packet_flows;
    Ok((s, marked))
}

/// Packet time over which [`write_concurrent`] spreads its flows: shorter than every idle
/// timeout (TCP without handshake 30 s, UDP 60 s), so no flow expires before the input ends.
pub const CONCURRENT_SPAN_NS: u64 = 20 * SECOND;
/// Most flows [`write_concurrent`] writes: one new home source each, from a /8.
pub const CONCURRENT_MAX: u64 = 1 << 24;

/// Writes `flows` one-packet flows, all open at once: flow `i` is a packet from its own home
/// source (10.0.0.0/8, a permutation of `i`) to an external host, alternately a SYN to port
/// 443 and a 1-byte UDP datagram to port 4500, evenly spread over [`CONCURRENT_SPAN_NS`]. For
/// memory measurements: a replay holds every flow until the input ends. Streams (memory does
/// not depend on `flows`); deterministic per `seed`. At most [`CONCURRENT_MAX`] flows.
pub fn write_concurrent(path: &Path, flows: u64, seed: u64) -> io::Result<StressSummary> {
    let flows = flows.min(CONCURRENT_MAX);
    let file = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET, MIXED_SNAPLEN)?;
    let offset = mix64(seed ^ 0x636f_6e63);
    let link = Link::ethernet();
    let mut frame = Vec::with_capacity(128);
    let mut s = StressSummary::default();
    for i in 0..flows {
        let ts = DEFAULT_START_NS + i * (CONCURRENT_SPAN_NS / flows.max(1)).max(1);
        let r = mix64(i ^ offset);
        let src = Ipv4Addr::from((10u32 << 24) | perm24(i, offset));
        let dst = external_v4(r & 0xffff);
        let sport = 1_024 + (r >> 16) as u16 % 64_000;
        let udp = i % 2 == 1;
        let dport = if udp { 4_500 } else { 443 };
        let d = Direction::new(
            &link,
            (IpAddr::V4(src), sport),
            (IpAddr::V4(dst), dport),
            true,
        );
        frame.clear();
        if udp {
            wire::push_udp(&mut frame, &d, (r >> 32) as u16, wire::payload(i, 1));
        } else {
            let f = TcpFields {
                seq: (r >> 32) as u32,
                ack: 0,
                flags: TCP_SYN,
                window: 64_240,
                mss_option: Some(1460),
            };
            wire::push_tcp(&mut frame, &d, (r >> 48) as u16, f, &[]);
        }
        w.write(ts, &frame)?;
        if i == 0 {
            s.first_ts_ns = ts;
        }
        s.last_ts_ns = ts;
        s.tcp_flows += u64::from(!udp);
        s.udp_flows += u64::from(udp);
    }
    s.flows = flows;
    s.one_packet_flows = flows;
    s.sources = flows;
    s.max_open = flows;
    s.packets = w.packets();
    s.file_bytes = w.bytes_written();
    w.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// (ts, frame) of every record.
    fn read(path: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut cap = pcap::Capture::from_file(path).unwrap();
        let mut out = Vec::new();
        while let Ok(p) = cap.next_packet() {
            assert_eq!(p.header.caplen, p.header.len);
            let ts = p.header.ts.tv_sec as u64 * SECOND + p.header.ts.tv_usec as u64 * MICRO;
            out.push((ts, p.data.to_vec()));
        }
        out
    }

    /// Direction-free 5-tuple of a frame, whether it is UDP to or from port 53, and its source.
    fn tuple(frame: &[u8]) -> ((IpAddr, u16, IpAddr, u16, u8), bool, IpAddr) {
        let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let (src, dst) = match p.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            ),
            etherparse::NetSlice::Ipv6(ip) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            _ => panic!("not IP"),
        };
        let (sp, dp, proto) = match p.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => (t.source_port(), t.destination_port(), 6),
            etherparse::TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), 17),
            _ => panic!("unexpected transport"),
        };
        let dns = proto == 17 && (sp == 53 || dp == 53);
        let t = if (src, sp) <= (dst, dp) {
            (src, sp, dst, dp, proto)
        } else {
            (dst, dp, src, sp, proto)
        };
        (t, dns, src)
    }

    fn bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn flows_counts_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.pcap"),
            dir.path().join("b.pcap"),
            dir.path().join("c.pcap"),
        );
        let s = write_flows(&a, 2_000, 3).unwrap();
        assert_eq!(s, write_flows(&b, 2_000, 3).unwrap());
        assert_eq!(bytes(&a), bytes(&b), "same seed, same bytes");
        write_flows(&c, 2_000, 4).unwrap();
        assert_ne!(bytes(&a), bytes(&c), "seed matters");

        assert_eq!((s.flows, s.tcp_flows, s.dns_flows), (2_000, 1_600, 400));
        assert!(s.dns_queries > s.dns_flows && s.dns_queries < 2 * s.dns_flows);
        assert_eq!(s.dns_packets, 2 * s.dns_queries);
        assert!(s.uploads > 200 && s.uploads < 600, "{}", s.uploads);
        assert!(s.ipv6_flows > 150 && s.vlan_flows > 150);
        assert!(s.sources > 1_000, "many home hosts: {}", s.sources);
        assert!(s.max_open > 500, "many flows open at once: {}", s.max_open);
        // ~10 packets and ~4 KB per flow.
        assert!(s.packets > 15_000 && s.packets < 30_000, "{}", s.packets);
        assert!(s.file_bytes > 5_000_000 && s.file_bytes < 12_000_000);

        let recs = read(&a);
        assert_eq!(recs.len() as u64, s.packets);
        assert_eq!(std::fs::metadata(&a).unwrap().len(), s.file_bytes);
        assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        // The file keeps microseconds.
        assert_eq!(
            (recs[0].0, recs[recs.len() - 1].0),
            (s.first_ts_ns / 1000 * 1000, s.last_ts_ns / 1000 * 1000)
        );
        let mut flows = HashSet::new();
        let mut dns_packets = 0;
        for (_, frame) in &recs {
            let (t, dns, _) = tuple(frame);
            flows.insert(t);
            dns_packets += u64::from(dns);
        }
        assert_eq!(
            flows.len() as u64,
            s.flows,
            "every flow has its own 5-tuple"
        );
        assert_eq!(dns_packets, s.dns_packets);
    }

    #[test]
    fn dns_messages_are_well_formed() {
        let mut rng = Rng::new(5);
        for _ in 0..500 {
            let mut name = Vec::new();
            push_realistic_name(&mut name, &mut rng);
            for qtype in [QTYPE_A, QTYPE_AAAA] {
                let mut q = Vec::new();
                dns_query(&mut q, 7, &name, qtype);
                let mut a = Vec::new();
                dns_answer(&mut a, &q, qtype, &mut rng);
                assert!(name.len() <= 255 && name.last() == Some(&0));
                // Walk the answer: the question as asked, then ANCOUNT records.
                assert_eq!(&a[..2], &q[..2]);
                assert_eq!(&a[12..q.len()], &q[12..]);
                let an = u16::from_be_bytes([a[6], a[7]]);
                let mut at = q.len();
                for _ in 0..an {
                    let ptr = usize::from(u16::from_be_bytes([a[at], a[at + 1]]) & 0x3fff);
                    assert!(ptr < at, "owner points backwards");
                    let rdlen = usize::from(u16::from_be_bytes([a[at + 10], a[at + 11]]));
                    at += 12 + rdlen;
                }
                assert_eq!(at, a.len(), "every byte accounted for");
                if an == 0 {
                    assert_eq!(a[3] & 0x0f, 3, "NXDOMAIN");
                }
            }
        }
    }

    #[test]
    fn flood_counts_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.pcap"),
            dir.path().join("b.pcap"),
            dir.path().join("c.pcap"),
        );
        let n = 50_000;
        let s = write_flood(&a, n, 1).unwrap();
        assert_eq!(s, write_flood(&b, n, 1).unwrap());
        assert_eq!(bytes(&a), bytes(&b), "same seed, same bytes");
        write_flood(&c, n, 2).unwrap();
        assert_ne!(bytes(&a), bytes(&c), "seed matters");

        assert_eq!(s.packets, n);
        assert_eq!(s.one_packet_flows, n * 6 / 25);
        assert_eq!(s.flows, s.one_packet_flows + n * 19 / 25 / 50);
        let recs = read(&a);
        assert_eq!(recs.len() as u64, n);
        assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        assert!(s.last_ts_ns - s.first_ts_ns > 170 * SECOND);
        assert!(recs.iter().all(|(_, f)| f.len() <= 82), "small frames");

        let mut flows = std::collections::HashMap::new();
        for (_, frame) in &recs {
            let (t, _, src) = tuple(frame);
            flows.entry(t).or_insert((0u64, src)).0 += 1;
        }
        assert_eq!(flows.len() as u64, s.flows);
        // Every one-packet flow comes from a new source; most of them are home sources.
        let singles: Vec<IpAddr> = flows
            .values()
            .filter(|(n, _)| *n == 1)
            .map(|(_, src)| *src)
            .collect();
        assert_eq!(singles.len() as u64, s.one_packet_flows);
        let sources: HashSet<IpAddr> = singles.iter().copied().collect();
        let home_sources = sources
            .iter()
            .filter(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10))
            .count() as u64;
        assert_eq!(sources.len() as u64, s.sources);
        assert!(home_sources * 100 > s.sources * 80, "{home_sources}");
    }

    #[test]
    fn concurrent_flows_are_distinct_and_within_the_shortest_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
        let n = 20_000;
        let s = write_concurrent(&a, n, 1).unwrap();
        assert_eq!(s, write_concurrent(&b, n, 1).unwrap());
        assert_eq!(bytes(&a), bytes(&b), "same seed, same bytes");
        assert_eq!(
            (s.packets, s.flows, s.tcp_flows, s.udp_flows),
            (n, n, n / 2, n / 2)
        );
        let recs = read(&a);
        assert_eq!(recs.len() as u64, n);
        assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        assert!(s.last_ts_ns - s.first_ts_ns < CONCURRENT_SPAN_NS);
        let mut tuples = HashSet::new();
        let mut sources = HashSet::new();
        for (_, frame) in &recs {
            let (t, dns, src) = tuple(frame);
            assert!(!dns);
            assert!(
                matches!(src, IpAddr::V4(v4) if v4.octets()[0] == 10),
                "home source"
            );
            tuples.insert(t);
            sources.insert(src);
        }
        assert_eq!((tuples.len() as u64, sources.len() as u64), (n, n));
    }

    #[test]
    fn flood_upload_crosses_while_the_flood_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.pcap"),
            dir.path().join("b.pcap"),
            dir.path().join("c.pcap"),
        );
        let n = 50_000;
        let (upload, threshold) = (3_000_000, 2_000_000);
        let (s, u) = write_flood_upload(&a, n, 1, upload, threshold).unwrap();
        assert_eq!(
            (s.clone(), u.clone()),
            write_flood_upload(&c, n, 1, upload, threshold).unwrap()
        );
        assert_eq!(bytes(&a), bytes(&c), "same arguments, same bytes");
        let plain = write_flood(&b, n, 1).unwrap();
        assert_eq!(s.packets, n + u.expect.pkts());
        assert_eq!(
            (s.flows, s.tcp_flows, s.uploads),
            (plain.flows + 1, plain.tcp_flows + 1, plain.uploads + 1)
        );
        assert_eq!(s.one_packet_flows, plain.one_packet_flows);

        // The upload's frames, and the flood's: the same frames as without the upload.
        let client = match FLOOD_UPLOAD_CLIENT {
            SocketAddr::V4(c) => c,
            SocketAddr::V6(_) => unreachable!(),
        };
        // Untagged Ethernet + IPv4 without options: source address at 26, port at 34.
        let from_client = |f: &[u8]| {
            f[26..30] == client.ip().octets() && f[34..36] == client.port().to_be_bytes()
        };
        let recs = read(&a);
        assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        let upload_tuple = tuple(&recs.iter().find(|r| from_client(&r.1)).unwrap().1).0;
        let (up, flood): (Vec<_>, Vec<_>) = recs
            .iter()
            .cloned()
            .enumerate()
            .partition(|(_, r)| tuple(&r.1).0 == upload_tuple);
        assert_eq!(up.len() as u64, u.expect.pkts());
        assert_eq!(
            flood.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            read(&b)
        );
        let (first, last) = (up[0].0, up[up.len() - 1].0);
        assert!(up[0].1 .1[47] & TCP_SYN != 0, "handshake first");
        assert!(
            up[up.len() - 3..]
                .iter()
                .any(|(_, r)| r.1[47] & TCP_FIN != 0),
            "FIN close last"
        );

        // The crossing packet, found by the sensor's rule: outbound IP bytes (total length,
        // at 16) reach the threshold with more than 1000 packets.
        let (mut ip_bytes, mut pkts, mut cross) = (0u64, 0u64, None);
        for (i, (ts, f)) in recs.iter().enumerate() {
            if from_client(f) {
                pkts += 1;
                ip_bytes += u64::from(u16::from_be_bytes([f[16], f[17]]));
                if cross.is_none() && ip_bytes >= threshold && pkts > 1_000 {
                    cross = Some((i as u64, *ts, pkts, ip_bytes));
                }
            }
        }
        assert_eq!(
            (pkts, ip_bytes),
            (u.expect.orig_pkts, u.expect.orig_ip_bytes)
        );
        assert_eq!(
            cross,
            Some((
                u.cross_index,
                u.cross_ts_ns / MICRO * MICRO,
                u.cross_orig_pkts,
                u.cross_orig_ip_bytes
            ))
        );
        assert!(u.cross_ts_ns < u.fin_ts_ns);
        // The flood runs all around it: thousands of flood frames before its SYN, between
        // its SYN and the crossing, and after its FIN.
        let cross = u.cross_index as usize;
        assert!(first > 1_000 && cross - first > 10_000, "{first} {cross}");
        assert!(recs.len() - last > 1_000, "{last}");
    }
}
