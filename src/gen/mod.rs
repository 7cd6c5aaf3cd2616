//! Deterministic test traffic: this module writes the pcap files that tests, benches and the
//! demo replay. It builds TCP sessions (handshake, data in MSS segments with delayed ACKs,
//! teardown), UDP exchanges (real DNS messages on port 53), IPv4 fragments and one malformed
//! frame per decoder failure class, over Ethernet (with 802.1Q/QinQ tags), Linux cooked v1/v2
//! and raw IP, and writes them as classic pcap. Everything is a pure function of its inputs and
//! a seed: the same call writes the same bytes, and every session can say what a correct flow
//! table must count for it ([`FlowExpect`]) without generating its packets. Sessions are lazy
//! iterators, so a multi-gigabyte session streams in constant memory. It is never used on the
//! capture path.
//!
//! ```text
//!  TcpSession / UdpExchange ──segments()──> Segment (metadata only: ts, seq, flags, lengths)
//!           │                                      │
//!           └──packets()──> Packet (rendered frame) ┴──> merge() ──> PcapWriter ──> file
//! ```

mod app;
mod dns;
mod malformed;
pub mod quic;
mod scenario;
mod stress;
mod tcp;
mod tunnel;
mod udp;
mod wire;
mod writer;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use app::{http_upload, tls_session};
pub use dns::{a_lookup, dns_scenario, write_dns_scenario, DnsScenario, DnsScenarioInfo};
pub use malformed::malformed_frames;
pub use scenario::{
    parse_size, write_demo, write_mixed, write_mixed_mss, DemoSummary, MixedSummary, ScenarioFlow,
    DEMO_ALERT_IP_BYTES, DEMO_SNAPLEN, MIXED_SNAPLEN,
};
pub use stress::{
    write_concurrent, write_flood, write_flood_upload, write_flows, FloodUpload, StressSummary,
    CONCURRENT_MAX, FLOOD_DEFAULT_PACKETS, FLOOD_UPLOAD_CLIENT, FLOOD_UPLOAD_SERVER, FLOWS_DEFAULT,
};
pub use tcp::{Close, Segment, TcpPackets, TcpSegments, TcpSession};
pub use tcp::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
pub use tunnel::{wrap, wrap_cut, Wrap, MIRROR_DST, MIRROR_SRC};
pub use udp::{fragment_packet, fragmented_udp, UdpExchange, UdpPackets};
pub use writer::PcapWriter;

/// pcap link type: Ethernet II (with optional VLAN tags).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// pcap link type: raw IPv4/IPv6, no link header.
pub const LINKTYPE_RAW: u32 = 101;
/// pcap link type: Linux cooked capture v1 (16-byte header).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// pcap link type: Linux cooked capture v2 (20-byte header).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// First packet time of every default session: 2023-11-14T22:13:20Z, in ns since the epoch.
pub const DEFAULT_START_NS: u64 = 1_700_000_000 * 1_000_000_000;

/// The link layer a session's frames are wrapped in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II. One tag is 802.1Q (TPID 0x8100); with two or more, the outermost tag is an
    /// 802.1ad service tag (TPID 0x88a8) and the others 0x8100 (QinQ). Tags are VLAN ids
    /// (low 12 bits used, priority 0).
    Ethernet {
        /// VLAN ids, outermost first; empty for an untagged frame.
        vlans: Vec<u16>,
    },
    /// Linux cooked capture v1: 16-byte header.
    Sll,
    /// Linux cooked capture v2: 20-byte header.
    Sll2,
    /// No link header: the frame starts with the IP header.
    RawIp,
}

impl Link {
    /// Plain Ethernet without VLAN tags.
    pub fn ethernet() -> Self {
        Link::Ethernet { vlans: Vec::new() }
    }

    /// The pcap link type of a file holding frames of this link.
    pub fn linktype(&self) -> u32 {
        match self {
            Link::Ethernet { .. } => LINKTYPE_ETHERNET,
            Link::Sll => LINKTYPE_LINUX_SLL,
            Link::Sll2 => LINKTYPE_LINUX_SLL2,
            Link::RawIp => LINKTYPE_RAW,
        }
    }

    /// Bytes of link header in front of the IP header.
    pub fn header_len(&self) -> usize {
        match self {
            Link::Ethernet { vlans } => 14 + 4 * vlans.len(),
            Link::Sll => 16,
            Link::Sll2 => 20,
            Link::RawIp => 0,
        }
    }
}

/// One rendered frame and its capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The whole frame, link header included (never truncated).
    pub frame: Vec<u8>,
}

/// What a flow table must count for one session once all its packets are seen. "orig" is the
/// client (the side that sent the SYN, or the request), "resp" the server. IP bytes are the sum
/// of the IP total lengths (IPv4 total length; IPv6 40 + payload length): the link layer is
/// excluded. Payload bytes are TCP/UDP payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowExpect {
    /// Packets client to server.
    pub orig_pkts: u64,
    /// IP bytes client to server.
    pub orig_ip_bytes: u64,
    /// TCP/UDP payload bytes client to server.
    pub orig_payload_bytes: u64,
    /// Packets server to client.
    pub resp_pkts: u64,
    /// IP bytes server to client.
    pub resp_ip_bytes: u64,
    /// TCP/UDP payload bytes server to client.
    pub resp_payload_bytes: u64,
}

impl FlowExpect {
    /// Packets in both directions.
    pub fn pkts(&self) -> u64 {
        self.orig_pkts + self.resp_pkts
    }

    /// IP bytes in both directions.
    pub fn ip_bytes(&self) -> u64 {
        self.orig_ip_bytes + self.resp_ip_bytes
    }
}

/// Deterministic PRNG: splitmix64. Small, fast, and the same on every platform; not for
/// anything that needs unpredictability.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform-enough integer in `0..n` (multiply-shift; the bias is below 2^-32 for the
    /// ranges used here). Returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Integer in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The splitmix64 finaliser: a bijective 64-bit mix, also used to derive ISNs and IP ids from
/// addresses.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Query name `i` of a generated DNS tunnel: a base32-looking 40-character label under
/// `exfil-c2.net` (entropy ≈ 4.5 bits a character, so each query scores as suspicious),
/// the same for the same `i` on every run.
pub fn tunnel_name(i: u32) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = 0x9e37_79b9u64.wrapping_mul(u64::from(i) + 1);
    let label: String = (0..40)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet.get((x % 32) as usize).copied().unwrap_or(b'a'))
        })
        .collect();
    format!("{label}.exfil-c2.net")
}

/// k-way merge of packet streams by timestamp, streaming: holds one packet per stream. Each
/// stream must itself be in time order. Ties go to the stream that comes first in `streams`.
pub fn merge<I: Iterator<Item = Packet>>(streams: Vec<I>) -> Merge<I> {
    let mut heads = Vec::with_capacity(streams.len());
    let mut heap = BinaryHeap::with_capacity(streams.len());
    let mut streams = streams;
    for (i, s) in streams.iter_mut().enumerate() {
        let head = s.next();
        if let Some(p) = &head {
            heap.push(Reverse((p.ts_ns, i)));
        }
        heads.push(head);
    }
    Merge {
        streams,
        heads,
        heap,
    }
}

/// Iterator returned by [`merge`].
pub struct Merge<I> {
    streams: Vec<I>,
    heads: Vec<Option<Packet>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl<I: Iterator<Item = Packet>> Iterator for Merge<I> {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        let Reverse((_, i)) = self.heap.pop()?;
        let next = self.streams.get_mut(i)?.next();
        if let Some(p) = &next {
            self.heap.push(Reverse((p.ts_ns, i)));
        }
        std::mem::replace(self.heads.get_mut(i)?, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(5, 5), 5);
        // Reference value of splitmix64 with seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    fn stream(ts: &[u64], tag: u8) -> std::vec::IntoIter<Packet> {
        ts.iter()
            .map(|&t| Packet {
                ts_ns: t,
                frame: vec![tag],
            })
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn merge_is_time_ordered_and_stable() {
        let merged: Vec<Packet> = merge(vec![
            stream(&[1, 5, 5, 9], 0),
            stream(&[], 1),
            stream(&[0, 5, 10], 2),
            stream(&[5], 3),
        ])
        .collect();
        let got: Vec<(u64, u8)> = merged.iter().map(|p| (p.ts_ns, p.frame[0])).collect();
        assert_eq!(
            got,
            vec![
                (0, 2),
                (1, 0),
                (5, 0),
                (5, 0),
                (5, 2),
                (5, 3),
                (9, 0),
                (10, 2)
            ]
        );
    }

    #[test]
    fn merge_of_sessions_is_ordered() {
        let a = TcpSession::new(
            "10.0.0.1:1000".parse().unwrap(),
            "192.0.2.1:443".parse().unwrap(),
            50_000,
            3_000,
        );
        let mut b = UdpExchange::new(
            "10.0.0.2:5353".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap(),
            20,
            40,
            120,
        );
        b.start_ns = a.start_ns + 33_333;
        b.gap_ns = 7_000;
        let streams: Vec<Box<dyn Iterator<Item = Packet>>> =
            vec![Box::new(a.packets()), Box::new(b.packets())];
        let all: Vec<Packet> = merge(streams).collect();
        assert_eq!(all.len() as u64, a.expected().pkts() + b.expected().pkts());
        assert!(all.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }
}
