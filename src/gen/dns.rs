//! Generated DNS scenarios for the tunnel detector (issue 14): the benign patterns it used to
//! alert on, and tunnels it must catch at rates far below the query-rate threshold.
//!
//! | scenario | what | the detector must |
//! | --- | --- | --- |
//! | `search-retries` | a stub resolver with search list `ncsa.uiuc.edu`: `upload.wikimedia.org.ncsa.uiuc.edu` AAAA → NXDOMAIN six times, and a dozen other names through the same suffix | stay quiet |
//! | `kubernetes` | a pod with ndots:5 resolving 12 external names three times through `default.svc.cluster.local`, `svc.cluster.local`, `cluster.local` and `ec2.internal` (A and AAAA, NXDOMAIN), then the real name | stay quiet (no tunnel, no NXDOMAIN burst) |
//! | `hex-tunnel` | 48 hex characters a query (TXT) under `exfil-hex.net`, one query every 10–30 s for 55 min | alert once, `hex` |
//! | `base32-tunnel` | 52 base32 characters a query (A) under `exfil-b32.net`, same rate | alert once, `base32` |
//! | `base64-tunnel` | two 40-character base64url labels a query (TXT) under `exfil-b64.net`, same rate | alert once, `base64` |
//! | `dnscat2` | a dnscat2-like handshake: 12 queries of 34 hex characters under `c2-dnscat.com`, MX/TXT/CNAME in turn, in 3.3 s | alert once, `hex` |
//!
//! Every message is well-formed DNS over UDP on Ethernet, with valid checksums; the same
//! call writes the same bytes.

use super::wire::{push_udp, Direction};
use super::{Link, Packet, PcapWriter, Rng, DEFAULT_START_NS, LINKTYPE_ETHERNET};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The generated DNS scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsScenario {
    /// Search-list retries of long names, AAAA → NXDOMAIN.
    SearchRetries,
    /// A Kubernetes pod resolving through its cluster search suffixes (ndots:5).
    Kubernetes,
    /// A slow hex tunnel (TXT).
    HexTunnel,
    /// A slow base32 tunnel (A).
    Base32Tunnel,
    /// A slow base64url tunnel (TXT).
    Base64Tunnel,
    /// A dnscat2-like handshake: 12 queries of 34 hex characters, MX/TXT/CNAME.
    Dnscat2,
}

impl DnsScenario {
    /// Every scenario.
    pub const ALL: [DnsScenario; 6] = [
        DnsScenario::SearchRetries,
        DnsScenario::Kubernetes,
        DnsScenario::HexTunnel,
        DnsScenario::Base32Tunnel,
        DnsScenario::Base64Tunnel,
        DnsScenario::Dnscat2,
    ];

    /// Its name (CLI and file name).
    pub fn name(self) -> &'static str {
        match self {
            DnsScenario::SearchRetries => "search-retries",
            DnsScenario::Kubernetes => "kubernetes",
            DnsScenario::HexTunnel => "hex-tunnel",
            DnsScenario::Base32Tunnel => "base32-tunnel",
            DnsScenario::Base64Tunnel => "base64-tunnel",
            DnsScenario::Dnscat2 => "dnscat2",
        }
    }

    /// The scenario of a name.
    pub fn from_name(s: &str) -> Option<DnsScenario> {
        DnsScenario::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// What a generated DNS scenario holds, and what the detector must say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsScenarioInfo {
    /// The scenario.
    pub scenario: DnsScenario,
    /// The querying host.
    pub client: IpAddr,
    /// Queries written (each with its response).
    pub queries: usize,
    /// Distinct query names.
    pub unique_names: usize,
    /// Queries under cluster-internal suffixes.
    pub internal_queries: usize,
    /// Queries that are search-list retries (a registrable name under a search suffix).
    pub search_retries: usize,
    /// Responses with NXDOMAIN.
    pub nxdomains: usize,
    /// For a tunnel: its registered domain and encoding name (`hex`, `base32`, `base64`),
    /// and the times of its queries (ns); `None` for a benign scenario.
    pub tunnel: Option<(&'static str, &'static str)>,
    /// Query times of the tunnel's queries, in order (empty for a benign scenario).
    pub tunnel_query_ns: Vec<u64>,
    /// First and last packet times (ns).
    pub span_ns: (u64, u64),
}

/// One query and its response.
struct Lookup {
    ts_ns: u64,
    id: u16,
    port: u16,
    name: String,
    qtype: u16,
    rcode: u8,
    answers: Vec<(u16, Vec<u8>)>,
}

const RESOLVER: [u8; 4] = [10, 0, 0, 53];
const KUBE_DNS: [u8; 4] = [10, 96, 0, 10];

fn push_name(m: &mut Vec<u8>, name: &str) {
    for l in name.split('.').filter(|l| !l.is_empty()) {
        let l = &l.as_bytes()[..l.len().min(63)];
        m.push(l.len() as u8);
        m.extend_from_slice(l);
    }
    m.push(0);
}

fn encoded_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    push_name(&mut v, name);
    v
}

/// A DNS message with one question (RD set); a response carries `answers` owned by the
/// question name (a pointer to offset 12), TTL 60.
fn message(l: &Lookup, response: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + l.name.len());
    m.extend_from_slice(&l.id.to_be_bytes());
    m.push(if response { 0x81 } else { 0x01 });
    m.push(if response { 0x80 | (l.rcode & 0x0f) } else { 0 });
    let an = if response { l.answers.len() as u16 } else { 0 };
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&an.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    push_name(&mut m, &l.name);
    m.extend_from_slice(&l.qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if response {
        for (t, rdata) in &l.answers {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
    }
    m
}

fn packets(client: [u8; 4], server: [u8; 4], lookups: &[Lookup]) -> Vec<Packet> {
    let link = Link::ethernet();
    let mut out = Vec::with_capacity(2 * lookups.len());
    for (i, l) in lookups.iter().enumerate() {
        let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(client)), l.port);
        let s = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(server)), 53);
        let up = Direction::new(&link, (c.ip(), c.port()), (s.ip(), s.port()), true);
        let down = Direction::new(&link, (s.ip(), s.port()), (c.ip(), c.port()), false);
        let mut f = Vec::new();
        push_udp(&mut f, &up, i as u16, &message(l, false));
        out.push(Packet {
            ts_ns: l.ts_ns,
            frame: f,
        });
        let mut f = Vec::new();
        push_udp(&mut f, &down, i as u16, &message(l, true));
        out.push(Packet {
            ts_ns: l.ts_ns + 2 * MS,
            frame: f,
        });
    }
    out.sort_by_key(|p| p.ts_ns);
    out
}

/// One A lookup from `client` (source port `port`) to a resolver at 10.0.0.53: the query at
/// `ts_ns` and, 2 ms later, the answer `name` → `addr` (TTL 60). For captures where a host
/// resolves a service before using it.
pub fn a_lookup(client: [u8; 4], port: u16, name: &str, addr: [u8; 4], ts_ns: u64) -> Vec<Packet> {
    let l = Lookup {
        ts_ns,
        id: port,
        port,
        name: name.to_string(),
        qtype: 1,
        rcode: 0,
        answers: vec![(1, addr.to_vec())],
    };
    packets(client, RESOLVER, std::slice::from_ref(&l))
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// `bits` bits per character from `alphabet`, no padding (RFC 4648 base32 and base64url).
fn radix(bytes: &[u8], alphabet: &[u8], bits: u32) -> String {
    let mut out = String::new();
    let (mut acc, mut n) = (0u32, 0u32);
    let mask = (1u32 << bits) - 1;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        n += 8;
        while n >= bits {
            n -= bits;
            out.push(char::from(alphabet[((acc >> n) & mask) as usize]));
        }
    }
    if n > 0 {
        out.push(char::from(alphabet[((acc << (bits - n)) & mask) as usize]));
    }
    out
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    rng.fill(&mut v);
    v
}

fn a_answer(rng: &mut Rng) -> (u16, Vec<u8>) {
    (1, vec![198, 51, 100, (rng.below(250) + 1) as u8])
}

fn txt_answer(s: &str) -> (u16, Vec<u8>) {
    let s = &s.as_bytes()[..s.len().min(255)];
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s);
    (16, v)
}

/// The packets of a scenario and what they hold.
pub fn dns_scenario(kind: DnsScenario) -> (DnsScenarioInfo, Vec<Packet>) {
    let mut rng = Rng::new(0x14_d45 + kind as u64);
    let t0 = DEFAULT_START_NS;
    let mut lookups = Vec::new();
    let mut info = DnsScenarioInfo {
        scenario: kind,
        client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
        queries: 0,
        unique_names: 0,
        internal_queries: 0,
        search_retries: 0,
        nxdomains: 0,
        tunnel: None,
        tunnel_query_ns: Vec::new(),
        span_ns: (0, 0),
    };
    let mut id = 0u16;
    let mut next = |ts_ns: u64, name: String, qtype: u16, rcode: u8, answers| {
        id = id.wrapping_add(1);
        Lookup {
            ts_ns,
            id,
            port: 30_000 + (id % 30_000),
            name,
            qtype,
            rcode,
            answers,
        }
    };
    let (client, server) = match kind {
        DnsScenario::SearchRetries => {
            // A campus host (search list `ncsa.uiuc.edu`, as in zeek's wikipedia.pcap):
            // the long name first through the suffix, AAAA retried six times, then the
            // real name; then a dozen more names the same way, A and AAAA.
            let suffix = "ncsa.uiuc.edu";
            let mut ts = t0;
            for _ in 0..6 {
                let name = format!("upload.wikimedia.org.{suffix}");
                lookups.push(next(ts, name, 28, 3, vec![]));
                info.search_retries += 1;
                ts += 1_500 * MS;
            }
            let names = [
                "upload.wikimedia.org",
                "bits.wikimedia.org",
                "meta.wikimedia.org",
                "en.wikipedia.org",
                "login.wikimedia.org",
                "commons.wikimedia.org",
                "www.wikidata.org",
                "stream.wikimedia.org",
                "intake-analytics.wikimedia.org",
                "maps.wikimedia.org",
                "www.mediawiki.org",
                "phabricator.wikimedia.org",
                "gerrit.wikimedia.org",
            ];
            for n in names {
                for qtype in [1u16, 28] {
                    lookups.push(next(ts, format!("{n}.{suffix}"), qtype, 3, vec![]));
                    info.search_retries += 1;
                    ts += 40 * MS;
                    let ans = if qtype == 1 {
                        vec![a_answer(&mut rng)]
                    } else {
                        vec![]
                    };
                    lookups.push(next(ts, n.to_string(), qtype, 0, ans));
                    ts += 300 * MS;
                }
            }
            ([10, 0, 0, 21], RESOLVER)
        }
        DnsScenario::Kubernetes => {
            // resolv.conf of an EKS pod in namespace `default`:
            // search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal
            // options ndots:5 — every name with fewer than 5 dots tries the suffixes first.
            let search = [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "ec2.internal",
            ];
            let names = [
                "api.github.com",
                "registry-1.docker.io",
                "auth.docker.io",
                "production.cloudflare.docker.com",
                "storage.googleapis.com",
                "sts.us-east-1.amazonaws.com",
                "s3.us-east-1.amazonaws.com",
                "hooks.slack.com",
                "api.stripe.com",
                "o123456.ingest.sentry.io",
                "collector.newrelic.com",
                "login.microsoftonline.com",
            ];
            let mut ts = t0;
            for _round in 0..3 {
                for n in names {
                    for qtype in [1u16, 28] {
                        for s in search {
                            lookups.push(next(ts, format!("{n}.{s}"), qtype, 3, vec![]));
                            info.internal_queries += 1;
                            ts += 3 * MS;
                        }
                        let ans = if qtype == 1 {
                            vec![a_answer(&mut rng)]
                        } else {
                            vec![]
                        };
                        lookups.push(next(ts, n.to_string(), qtype, 0, ans));
                        ts += 20 * MS;
                    }
                    ts += 2 * S;
                }
                ts += 60 * S;
            }
            ([10, 244, 1, 17], KUBE_DNS)
        }
        DnsScenario::HexTunnel | DnsScenario::Base32Tunnel | DnsScenario::Base64Tunnel => {
            let (domain, enc) = match kind {
                DnsScenario::HexTunnel => ("exfil-hex.net", "hex"),
                DnsScenario::Base32Tunnel => ("exfil-b32.net", "base32"),
                _ => ("exfil-b64.net", "base64"),
            };
            info.tunnel = Some((domain, enc));
            // One query every 10-30 s for 55 minutes (about 165 queries, 15 per 5 min:
            // a thirtieth of dns.max_queries), each carrying fresh data.
            let mut ts = t0;
            let end = t0 + 55 * 60 * S;
            let mut seq = 0u32;
            while ts < end {
                let (data, qtype) = match kind {
                    DnsScenario::HexTunnel => (hex(&random_bytes(&mut rng, 24)), 16),
                    DnsScenario::Base32Tunnel => (radix(&random_bytes(&mut rng, 32), BASE32, 5), 1),
                    _ => {
                        let a = radix(&random_bytes(&mut rng, 30), BASE64URL, 6);
                        let b = radix(&random_bytes(&mut rng, 30), BASE64URL, 6);
                        (format!("{a}.{b}"), 16)
                    }
                };
                let name = format!("{data}.{domain}");
                let ans = if qtype == 16 {
                    vec![txt_answer(&format!("ack{seq}"))]
                } else {
                    vec![a_answer(&mut rng)]
                };
                info.tunnel_query_ns.push(ts);
                lookups.push(next(ts, name, qtype, 0, ans));
                seq += 1;
                ts += rng.range(10, 30) * S + rng.below(1000) * MS;
            }
            ([10, 0, 0, 31 + kind as u8], RESOLVER)
        }
        DnsScenario::Dnscat2 => {
            let domain = "c2-dnscat.com";
            info.tunnel = Some((domain, "hex"));
            // dnscat2's SYN/MSG packets as 17 bytes of hex (34 characters) a query, the
            // record type cycling MX, TXT, CNAME as its client does; answers echo hex.
            let mut ts = t0;
            for i in 0..12u16 {
                let mut pkt = random_bytes(&mut rng, 17);
                pkt[0..2].copy_from_slice(&i.to_be_bytes());
                let data = hex(&pkt);
                let name = format!("{data}.{domain}");
                let reply = hex(&random_bytes(&mut rng, 17));
                let (qtype, ans) = match i % 3 {
                    0 => {
                        let mut rd = vec![0, 10];
                        rd.extend(encoded_name(&format!("{reply}.{domain}")));
                        (15, vec![(15, rd)])
                    }
                    1 => (16, vec![txt_answer(&reply)]),
                    _ => (5, vec![(5, encoded_name(&format!("{reply}.{domain}")))]),
                };
                info.tunnel_query_ns.push(ts);
                lookups.push(next(ts, name, qtype, 0, ans));
                ts += 300 * MS;
            }
            ([10, 0, 0, 40], RESOLVER)
        }
    };
    info.client = IpAddr::V4(Ipv4Addr::from(client));
    info.queries = lookups.len();
    info.nxdomains = lookups.iter().filter(|l| l.rcode == 3).count();
    let mut names: Vec<&str> = lookups.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    info.unique_names = names.len();
    let pk = packets(client, server, &lookups);
    info.span_ns = (
        pk.first().map_or(0, |p| p.ts_ns),
        pk.last().map_or(0, |p| p.ts_ns),
    );
    (info, pk)
}

/// Writes a scenario as an Ethernet pcap (microsecond timestamps).
pub fn write_dns_scenario(path: &Path, kind: DnsScenario) -> io::Result<DnsScenarioInfo> {
    let (info, pk) = dns_scenario(kind);
    let f = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(io::BufWriter::new(f), LINKTYPE_ETHERNET, 65_535)?;
    for p in &pk {
        w.write(p.ts_ns, &p.frame)?;
    }
    let mut inner = w.into_inner()?;
    io::Write::flush(&mut inner)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_match_rfc_4648() {
        // RFC 4648 section 10 test vectors (base32 lowercased, no padding).
        assert_eq!(radix(b"foobar", BASE32, 5), "mzxw6ytboi");
        assert_eq!(radix(b"fo", BASE32, 5), "mzxq");
        assert_eq!(radix(b"foobar", BASE64URL, 6), "Zm9vYmFy");
        assert_eq!(radix(b"fo", BASE64URL, 6), "Zm8");
        assert_eq!(hex(&[0xde, 0xad, 0x01]), "dead01");
    }

    #[test]
    fn scenarios_are_deterministic_and_ordered() {
        for s in DnsScenario::ALL {
            let (a, pa) = dns_scenario(s);
            let (b, pb) = dns_scenario(s);
            assert_eq!(a, b);
            assert_eq!(pa, pb);
            assert_eq!(pa.len(), 2 * a.queries);
            assert!(pa.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns), "{s:?}");
            assert_eq!(DnsScenario::from_name(s.name()), Some(s));
        }
        let (t, _) = dns_scenario(DnsScenario::HexTunnel);
        assert!((110..=330).contains(&t.queries), "{}", t.queries);
        assert_eq!(t.unique_names, t.queries);
        let (d, _) = dns_scenario(DnsScenario::Dnscat2);
        assert_eq!(d.queries, 12);
    }
}
