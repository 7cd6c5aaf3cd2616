//! Whole-file scenarios: the demo capture and the mixed bench capture.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use super::writer::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::{
    fragmented_udp, malformed_frames, merge, Close, FlowExpect, Link, Packet, PcapWriter, Rng,
    TcpPackets, TcpSession, UdpExchange, UdpPackets, DEFAULT_START_NS, LINKTYPE_ETHERNET, TCP_FIN,
};

/// The sensor's default large-upload threshold, which the demo's big upload crosses: IP bytes
/// from the client.
pub const DEMO_ALERT_IP_BYTES: u64 = 100_000_000;
/// Snaplen of the demo capture: headers plus a little payload.
pub const DEMO_SNAPLEN: u32 = 96;
/// Snaplen of the mixed capture: whole frames.
pub const MIXED_SNAPLEN: u32 = 65_535;
/// Write buffer of the scenario files.
const WRITE_BUFFER: usize = 4 << 20;

const MILLI: u64 = 1_000_000;
const MICRO: u64 = 1_000;

/// Jumbo frames: MTU 9000 less IPv4 + TCP headers, and less IPv6 + TCP headers.
const JUMBO_MSS_V4: u16 = 8960;
const JUMBO_MSS_V6: u16 = 8940;

/// One flow of a scenario and what a flow table must count for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioFlow {
    /// Short snake_case name, stable (tests key on it).
    pub name: &'static str,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// The flow's originator (orig).
    pub client: SocketAddr,
    /// The responder (resp).
    pub server: SocketAddr,
    /// Innermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// What a flow table must count for it.
    pub expect: FlowExpect,
}

/// What [`write_demo`] wrote.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// Records in the file.
    pub packets: u64,
    /// File size, bytes.
    pub file_bytes: u64,
    /// Time of the first record, ns since the Unix epoch.
    pub first_ts_ns: u64,
    /// Time of the last record.
    pub last_ts_ns: u64,
    /// Every TCP session and UDP exchange (not fragments or malformed frames); the big upload
    /// is first.
    pub flows: Vec<ScenarioFlow>,
    /// The big upload's counts (also `flows[0].expect`).
    pub big_upload: FlowExpect,
    /// Packets of the big upload, both directions.
    pub big_upload_packets: u64,
    /// Time of the big-upload packet with which the client's IP bytes first reach
    /// [`DEMO_ALERT_IP_BYTES`].
    pub big_upload_cross_ts_ns: u64,
    /// Client packets of the big upload up to and including that packet.
    pub big_upload_cross_orig_pkts: u64,
    /// Time of the big upload's first FIN: the connection is open until then.
    pub big_upload_fin_ts_ns: u64,
    /// IPv4 fragment frames (two datagrams: one in order, one with the first fragment last).
    pub fragments: u64,
    /// Names of the malformed frames, in file order.
    pub malformed: Vec<&'static str>,
}

fn sock(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn at(secs_millis: u64) -> u64 {
    DEFAULT_START_NS + secs_millis * MILLI
}

/// Writes the demo capture (Ethernet, snaplen 96, about 3 minutes of packet time, ~2.2 MB):
/// a 150 MB upload in jumbo frames that crosses the 100 MB alert threshold while open, over a
/// background of DNS, a 5 MB HTTPS download, a 200 KB upload, an IPv6 download, a VLAN 42
/// internal SMB transfer, two fragmented UDP datagrams and the malformed frames. See
/// `pcaps/README.md` for the timeline.
pub fn write_demo(path: &Path) -> io::Result<DemoSummary> {
    let host5 = [10, 0, 0, 5];
    let host7 = [10, 0, 0, 7];
    let resolver = sock([10, 0, 0, 1], 53);
    let web = [198, 51, 100, 20];

    let mut big = TcpSession::new(
        sock(host5, 51234),
        sock([203, 0, 113, 50], 443),
        150_000_000,
        4_000,
    );
    big.mss = JUMBO_MSS_V4;
    big.ack_every = 8;
    big.gap_ns = 70 * MICRO; // ~1 Gbit/s of 9 kB frames
    big.start_ns = at(40_000);

    let tcp = |name, client, server, up, down, start_ms, gap_ms, mss| {
        let mut s = TcpSession::new(client, server, up, down);
        s.start_ns = at(start_ms);
        s.gap_ns = gap_ms * MILLI;
        s.mss = mss;
        (name, s)
    };
    let mut sessions = vec![
        ("big_upload", big),
        tcp(
            "https_download",
            sock(host7, 50500),
            sock(web, 443),
            1_200,
            5_000_000,
            35_000,
            10,
            JUMBO_MSS_V4,
        ),
        tcp(
            "small_upload",
            sock(host7, 50512),
            sock(web, 443),
            200_000,
            3_000,
            60_000,
            5,
            JUMBO_MSS_V4,
        ),
        tcp(
            "ipv6_download",
            SocketAddr::from((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10), 50600)),
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20), 443)),
            800,
            2_000_000,
            75_000,
            10,
            JUMBO_MSS_V6,
        ),
        tcp(
            "vlan_internal_smb",
            sock([10, 0, 1, 10], 50700),
            sock([10, 0, 1, 20], 445),
            3_000_000,
            20_000,
            100_000,
            10,
            JUMBO_MSS_V4,
        ),
    ];
    sessions[4].1.link = Link::Ethernet { vlans: vec![42] };

    let dns = |name, client: [u8; 4], port, start_ms, requests| {
        // 38-byte query, 54-byte answer: the response frame is exactly the 96-byte snaplen.
        let mut x = UdpExchange::new(sock(client, port), resolver, requests, 38, 54);
        x.start_ns = at(start_ms);
        x.gap_ns = 2 * MILLI;
        (name, x)
    };
    let exchanges = vec![
        dns("dns_1", host7, 53001, 0, 2),
        dns("dns_2", host7, 53002, 34_900, 1),
        dns("dns_3", host5, 53003, 39_900, 2),
        dns("dns_4", host5, 53004, 40_500, 1),
        dns("dns_5", host7, 53005, 95_000, 3),
        dns("dns_6", host5, 53006, 179_900, 1),
    ];

    let frag_client = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 40001);
    let frag_server = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 53), 4500);
    let mut fragments = fragmented_udp(
        frag_client,
        frag_server,
        at(130_000),
        0x04d2,
        4000,
        1480,
        false,
    );
    fragments.extend(fragmented_udp(
        frag_client,
        frag_server,
        at(131_000),
        0x04d3,
        4000,
        1480,
        true,
    ));
    let n_fragments = fragments.len() as u64;

    let bad = malformed_frames(0x0de0);
    let malformed: Vec<&'static str> = bad.iter().map(|(n, _)| *n).collect();
    let bad_packets: Vec<Packet> = bad
        .into_iter()
        .enumerate()
        .map(|(i, (_, frame))| Packet {
            ts_ns: at(150_000 + 500 * i as u64),
            frame,
        })
        .collect();

    // Where the big upload crosses the threshold, and when it closes.
    let (mut cross, mut fin, mut orig_bytes, mut orig_pkts) = (None, None, 0u64, 0u64);
    for g in sessions[0].1.segments() {
        if g.from_client {
            orig_bytes += u64::from(g.ip_len);
            orig_pkts += 1;
            if cross.is_none() && orig_bytes >= DEMO_ALERT_IP_BYTES {
                cross = Some((g.ts_ns, orig_pkts));
            }
        }
        if fin.is_none() && g.flags & TCP_FIN != 0 {
            fin = Some(g.ts_ns);
        }
    }
    let (cross_ts, cross_pkts) = cross.unwrap_or((0, 0));

    let mut flows = Vec::new();
    for (name, s) in &sessions {
        flows.push(ScenarioFlow {
            name,
            proto: 6,
            client: s.client,
            server: s.server,
            vlan: vlan_of(&s.link),
            expect: s.expected(),
        });
    }
    for (name, x) in &exchanges {
        flows.push(ScenarioFlow {
            name,
            proto: 17,
            client: x.client,
            server: x.server,
            vlan: vlan_of(&x.link),
            expect: x.expected(),
        });
    }

    let mut streams: Vec<Box<dyn Iterator<Item = Packet>>> = Vec::new();
    for (_, s) in &sessions {
        streams.push(Box::new(s.packets()));
    }
    for (_, x) in &exchanges {
        streams.push(Box::new(x.packets()));
    }
    streams.push(Box::new(fragments.into_iter()));
    streams.push(Box::new(bad_packets.into_iter()));

    let file = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET, DEMO_SNAPLEN)?;
    let (mut first, mut last) = (None, 0);
    for p in merge(streams) {
        first.get_or_insert(p.ts_ns);
        last = p.ts_ns;
        w.write(p.ts_ns, &p.frame)?;
    }
    let (packets, file_bytes) = (w.packets(), w.bytes_written());
    w.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;

    Ok(DemoSummary {
        packets,
        file_bytes,
        first_ts_ns: first.unwrap_or(0),
        last_ts_ns: last,
        big_upload: flows[0].expect.clone(),
        big_upload_packets: flows[0].expect.pkts(),
        big_upload_cross_ts_ns: cross_ts,
        big_upload_cross_orig_pkts: cross_pkts,
        big_upload_fin_ts_ns: fin.unwrap_or(0),
        fragments: n_fragments,
        malformed,
        flows,
    })
}

fn vlan_of(link: &Link) -> Option<u16> {
    match link {
        Link::Ethernet { vlans } => vlans.last().copied(),
        _ => None,
    }
}

/// What [`write_mixed`] wrote.
#[derive(Clone, Debug, Default)]
pub struct MixedSummary {
    /// Records in the file.
    pub packets: u64,
    /// File size, bytes (at most the target).
    pub file_bytes: u64,
    /// Time of the first record, ns since the Unix epoch.
    pub first_ts_ns: u64,
    /// Time of the last record.
    pub last_ts_ns: u64,
    /// Sessions started (TCP sessions plus UDP exchanges); the last ones are cut by the end of
    /// the file.
    pub sessions: u64,
    /// Of which TCP sessions.
    pub tcp_sessions: u64,
    /// Of which UDP (DNS) exchanges.
    pub udp_exchanges: u64,
    /// Sessions over IPv6.
    pub ipv6_sessions: u64,
    /// Sessions with a VLAN tag.
    pub vlan_sessions: u64,
    /// Sessions alive at once (held constant while the file is written).
    pub concurrent: usize,
}

/// Sessions alive at once in the mixed capture.
const MIXED_CONCURRENT: usize = 2000;

enum Flow {
    Tcp(TcpPackets),
    Udp(UdpPackets),
}

impl Flow {
    fn peek_ts(&self) -> Option<u64> {
        match self {
            Flow::Tcp(p) => p.peek_ts(),
            Flow::Udp(p) => p.peek_ts(),
        }
    }

    fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        match self {
            Flow::Tcp(p) => p.next_into(buf),
            Flow::Udp(p) => p.next_into(buf),
        }
    }
}

/// First octets of the public IPv4 ranges the mixed capture's servers are drawn from (large
/// cloud/CDN /8s; none private or reserved).
const PUBLIC_SLASH8: [u8; 16] = [
    13, 18, 20, 23, 31, 34, 35, 44, 52, 54, 64, 104, 142, 151, 157, 185,
];
/// Distinct external servers; clients revisit them like real traffic does.
const EXTERNAL_SERVERS: usize = 1024;

/// Draws the sessions of the mixed capture.
struct Mix {
    rng: Rng,
    servers_v4: Vec<Ipv4Addr>,
    summary: MixedSummary,
    /// Largest TCP segment payload (u16::MAX = the session's own MSS).
    mss_cap: u16,
}

impl Mix {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let servers_v4 = (0..EXTERNAL_SERVERS)
            .map(|_| {
                let a = PUBLIC_SLASH8[rng.below(PUBLIC_SLASH8.len() as u64) as usize];
                let rest = rng.next_u64();
                Ipv4Addr::new(
                    a,
                    rest as u8,
                    (rest >> 8) as u8,
                    rest.wrapping_shr(16) as u8 | 1,
                )
            })
            .collect();
        Mix {
            rng,
            servers_v4,
            mss_cap: u16::MAX,
            summary: MixedSummary {
                concurrent: MIXED_CONCURRENT,
                ..MixedSummary::default()
            },
        }
    }

    fn client_v4(&mut self) -> IpAddr {
        let r = &mut self.rng;
        IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            r.below(64) as u8,
            r.range(2, 254) as u8,
        ))
    }

    fn ephemeral_port(&mut self) -> u16 {
        self.rng.range(32_768, 60_999) as u16
    }

    /// Log-uniform size in `lo..=hi` (integer arithmetic, so identical on every platform).
    fn log_size(&mut self, lo: u64, hi: u64) -> u64 {
        let (blo, bhi) = (63 - lo.leading_zeros(), 63 - hi.leading_zeros());
        let b = self.rng.range(u64::from(blo), u64::from(bhi));
        self.rng.range(1 << b, (2 << b) - 1).clamp(lo, hi)
    }

    fn link(&mut self) -> Link {
        if self.rng.chance(15) {
            self.summary.vlan_sessions += 1;
            let vlans = [10, 20, 30, 42];
            Link::Ethernet {
                vlans: vec![vlans[self.rng.below(4) as usize]],
            }
        } else {
            Link::ethernet()
        }
    }

    fn session(&mut self, start_ns: u64, initial: bool) -> Flow {
        self.summary.sessions += 1;
        let kind = self.rng.below(100);
        if kind < 25 {
            return self.dns(start_ns);
        }
        self.summary.tcp_sessions += 1;
        let v6 = self.rng.chance(10);
        let (client_ip, server_ip, mss) = if v6 {
            self.summary.ipv6_sessions += 1;
            let r = &mut self.rng;
            let c = Ipv6Addr::new(
                0xfd00,
                0,
                0,
                r.below(64) as u16,
                0,
                0,
                0,
                r.range(2, 999) as u16,
            );
            let s = Ipv6Addr::new(
                0x2001,
                0xdb8,
                r.below(256) as u16,
                0,
                0,
                0,
                0,
                r.range(1, 99) as u16,
            );
            (IpAddr::V6(c), IpAddr::V6(s), 1440)
        } else {
            let s = self.servers_v4[self.rng.below(EXTERNAL_SERVERS as u64) as usize];
            (self.client_v4(), IpAddr::V4(s), 1460)
        };
        let port = if self.rng.chance(85) { 443 } else { 8443 };
        let client = SocketAddr::new(client_ip, self.ephemeral_port());
        let server = SocketAddr::new(server_ip, port);
        let (up, down, gap) = if kind < 70 {
            // Web-like: a request, a page.
            let up = self.rng.range(300, 3_000);
            let down = self.rng.range(2_000, 60_000);
            (up, down, self.rng.range(2 * MILLI, 20 * MILLI))
        } else {
            let size = self.log_size(50_000, 20_000_000);
            let small = self.rng.range(500, 5_000);
            let gap = self.rng.range(500 * MICRO, 10 * MILLI);
            if kind < 88 {
                (small, size, gap) // bulk download
            } else {
                (size, small, gap) // bulk upload
            }
        };
        let mut s = TcpSession::new(client, server, up, down);
        s.link = self.link();
        s.start_ns = start_ns;
        s.mss = mss.min(self.mss_cap);
        s.gap_ns = gap;
        s.syn = !(initial && self.rng.chance(30));
        s.close = match self.rng.below(100) {
            0..=89 => Close::Fin,
            90..=97 => Close::Rst,
            _ => Close::None,
        };
        Flow::Tcp(s.packets())
    }

    fn dns(&mut self, start_ns: u64) -> Flow {
        self.summary.udp_exchanges += 1;
        let client = SocketAddr::new(self.client_v4(), self.ephemeral_port());
        let resolver = Ipv4Addr::new(10, 0, 0, 1 + self.rng.below(2) as u8);
        let req = self.rng.range(30, 70) as usize;
        let resp = match self.rng.below(10) {
            0 => req,                                                // NXDOMAIN
            1..=2 => req + 12 + self.rng.range(3, 40) as usize + 16, // CNAME + A
            _ => req + 16 * self.rng.range(1, 4) as usize,           // A records
        };
        let requests = self.rng.range(1, 3) as u32;
        let mut x = UdpExchange::new(
            client,
            SocketAddr::new(IpAddr::V4(resolver), 53),
            requests,
            req,
            resp,
        );
        x.link = self.link();
        x.start_ns = start_ns;
        x.gap_ns = self.rng.range(MILLI, 30 * MILLI);
        Flow::Udp(x.packets())
    }
}

/// Writes about `target_bytes` (never more; at least the file header) of mixed traffic:
/// [`MIXED_CONCURRENT`] sessions alive at once, each replaced by a new one when it ends.
/// Sessions: 25% DNS exchanges to 10.0.0.1/.2, 45% web-like TCP (0.3–3 KB up, 2–60 KB down),
/// 18% bulk downloads and 12% bulk uploads (50 KB–20 MB, log-uniform); 10% of TCP is IPv6,
/// 15% of all is VLAN tagged (10, 20, 30 or 42). Clients are in 10.0.0.0/18 (fd00::/48 for
/// IPv6), servers in public ranges. Ethernet, snaplen 65535, time ordered, deterministic per
/// `seed`.
pub fn write_mixed(path: &Path, target_bytes: u64, seed: u64) -> io::Result<MixedSummary> {
    write_mixed_mss(path, target_bytes, seed, u16::MAX)
}

/// [`write_mixed`] with TCP segments of at most `mss` payload bytes: small packets, for
/// packet-rate tests (e.g. `mss` 64 gives ~120-byte frames).
pub fn write_mixed_mss(
    path: &Path,
    target_bytes: u64,
    seed: u64,
    mss: u16,
) -> io::Result<MixedSummary> {
    let mut mix = Mix::new(seed);
    mix.mss_cap = mss.max(1);
    let mut slots: Vec<Flow> = Vec::with_capacity(MIXED_CONCURRENT);
    let mut heap = BinaryHeap::with_capacity(MIXED_CONCURRENT);
    let mut next_id = 0u64;
    for slot in 0..MIXED_CONCURRENT {
        let start = DEFAULT_START_NS + mix.rng.below(100 * MILLI);
        let flow = mix.session(start, true);
        if let Some(ts) = flow.peek_ts() {
            heap.push(Reverse((ts, next_id, slot)));
        }
        next_id += 1;
        slots.push(flow);
    }

    let file = BufWriter::with_capacity(WRITE_BUFFER, File::create(path)?);
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET, MIXED_SNAPLEN)?;
    let mut buf = Vec::with_capacity(usize::from(u16::MAX));
    let mut first = None;
    let mut last = 0;
    let budget = target_bytes.max(FILE_HEADER_LEN);
    while let Some(Reverse((_, _, slot))) = heap.pop() {
        let Some(flow) = slots.get_mut(slot) else {
            break;
        };
        let Some(ts) = flow.next_into(&mut buf) else {
            continue;
        };
        let record = RECORD_HEADER_LEN + buf.len().min(MIXED_SNAPLEN as usize) as u64;
        if w.bytes_written() + record > budget {
            break;
        }
        w.write(ts, &buf)?;
        first.get_or_insert(ts);
        last = ts;
        if flow.peek_ts().is_none() {
            // Replace the finished session with a new one starting soon.
            let start = ts + mix.rng.below(5 * MILLI);
            *flow = mix.session(start, false);
        }
        if let Some(next) = flow.peek_ts() {
            heap.push(Reverse((next, next_id, slot)));
            next_id += 1;
        }
    }
    let mut summary = mix.summary;
    summary.packets = w.packets();
    summary.file_bytes = w.bytes_written();
    summary.first_ts_ns = first.unwrap_or(0);
    summary.last_ts_ns = last;
    w.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(summary)
}

/// Parses a byte size: digits with an optional suffix K, M, G, T (powers of 1000) or Ki, Mi,
/// Gi, Ti (powers of 1024), case-insensitive, optionally followed by "B": `1G`, `500M`,
/// `1000000`, `64KiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected digits with an optional K/M/G/T suffix"))?;
    if unit.starts_with('.') {
        return Err(format!("size {s:?}: whole numbers only (1500M, not 1.5G)"));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(format!("size {s:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::SlicedPacket;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("2gb"), Ok(2_000_000_000));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    fn read(path: &Path) -> Vec<(u64, u32, u32, Vec<u8>)> {
        let mut cap = pcap::Capture::from_file(path).unwrap();
        let mut out = Vec::new();
        while let Ok(p) = cap.next_packet() {
            let ts = p.header.ts.tv_sec as u64 * SECOND + p.header.ts.tv_usec as u64 * MICRO;
            out.push((ts, p.header.caplen, p.header.len, p.data.to_vec()));
        }
        out
    }

    #[test]
    fn mixed_is_ordered_bounded_and_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.pcap");
        let b = dir.path().join("b.pcap");
        let target = 3_000_000;
        let sa = write_mixed(&a, target, 9).unwrap();
        write_mixed(&b, target, 9).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap(), "same seed, same bytes");
        assert_eq!(bytes.len() as u64, sa.file_bytes);
        assert!(sa.file_bytes <= target && sa.file_bytes > target - 70_000);
        let recs = read(&a);
        assert_eq!(recs.len() as u64, sa.packets);
        assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        for (_, incl, orig, data) in &recs {
            assert_eq!(incl, orig);
            SlicedPacket::from_ethernet(data).unwrap();
        }
        assert!(sa.tcp_sessions > 0 && sa.udp_exchanges > 0);
        assert!(sa.ipv6_sessions > 0 && sa.vlan_sessions > 0);
        let c = dir.path().join("c.pcap");
        write_mixed(&c, target, 10).unwrap();
        assert_ne!(bytes, std::fs::read(&c).unwrap(), "seed matters");
        let tiny = dir.path().join("tiny.pcap");
        let st = write_mixed(&tiny, 10, 1).unwrap();
        assert_eq!((st.packets, st.file_bytes), (0, 24));
    }

    #[test]
    fn demo_crosses_threshold_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.pcap");
        let s = write_demo(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, s.file_bytes);
        assert!(len < 4_000_000, "demo must stay small: {len}");
        let big = &s.big_upload;
        assert!(big.orig_ip_bytes > DEMO_ALERT_IP_BYTES);
        assert!(big.orig_pkts > 1000);
        assert!(s.big_upload_cross_ts_ns > 0);
        assert!(s.big_upload_cross_ts_ns < s.big_upload_fin_ts_ns);
        assert!(s.last_ts_ns - s.first_ts_ns > 120 * SECOND);

        // Re-count every flow from the file (by 5-tuple, link layer excluded) and compare.
        let recs = read(&path);
        assert_eq!(recs.len() as u64, s.packets);
        let mut bad = 0;
        let mut frags = 0;
        let mut counted: Vec<FlowExpect> = vec![FlowExpect::default(); s.flows.len()];
        for (_, incl, orig, data) in &recs {
            assert_eq!(*incl as usize, data.len());
            assert!(*incl <= DEMO_SNAPLEN && incl <= orig);
            let Ok(p) = etherparse::LaxSlicedPacket::from_ethernet(data) else {
                bad += 1;
                continue;
            };
            let (src, dst, ip_len) = match &p.net {
                Some(etherparse::LaxNetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    if h.is_fragmenting_payload() {
                        frags += 1;
                        continue;
                    }
                    (
                        IpAddr::V4(h.source_addr()),
                        IpAddr::V4(h.destination_addr()),
                        u64::from(h.total_len()),
                    )
                }
                Some(etherparse::LaxNetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    (
                        IpAddr::V6(h.source_addr()),
                        IpAddr::V6(h.destination_addr()),
                        40 + u64::from(h.payload_length()),
                    )
                }
                _ => {
                    bad += 1;
                    continue;
                }
            };
            let ports = match &p.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
                Some(etherparse::TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
                _ => {
                    bad += 1;
                    continue;
                }
            };
            let from = SocketAddr::new(src, ports.0);
            let to = SocketAddr::new(dst, ports.1);
            let Some(i) = s.flows.iter().position(|f| {
                (f.client, f.server) == (from, to) || (f.client, f.server) == (to, from)
            }) else {
                bad += 1;
                continue;
            };
            let e = &mut counted[i];
            if from == s.flows[i].client {
                e.orig_pkts += 1;
                e.orig_ip_bytes += ip_len;
            } else {
                e.resp_pkts += 1;
                e.resp_ip_bytes += ip_len;
            }
        }
        for (f, c) in s.flows.iter().zip(&counted) {
            assert_eq!(
                (c.orig_pkts, c.orig_ip_bytes, c.resp_pkts, c.resp_ip_bytes),
                (
                    f.expect.orig_pkts,
                    f.expect.orig_ip_bytes,
                    f.expect.resp_pkts,
                    f.expect.resp_ip_bytes
                ),
                "{}",
                f.name
            );
        }
        assert_eq!(frags, s.fragments);
        assert_eq!(
            bad,
            s.malformed.len(),
            "only the malformed frames match no flow"
        );
    }
}
