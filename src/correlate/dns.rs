//! The DNS analyser: runs on the output thread, after the ordered merge, so its windows see
//! queries in input order whatever the number of workers.
//!
//! - Per (client, registered domain): a sliding window of [`BUCKETS`] time buckets counting
//!   queries and queries of tunnel record types, plus the window's *unique* subdomains:
//!   exactly (a set of up to [`EXACT`] name hashes with their scores) while they are few,
//!   which is where the alert threshold lies, and estimated (linear counting over a 512-bit
//!   bitmap per bucket) beyond. A repeated name adds a query, never a unique or suspicious
//!   subdomain. Each subdomain is scored by what it is made of ([`crate::dns::score`]:
//!   encoding, label regularity, entropy, length); the pair gets a score from its unique
//!   suspicious subdomains, its record types and its unique-to-query ratio
//!   ([`PairScore`]), and alerts when enough unique suspicious subdomains give a high
//!   enough score — or on the plain query rate.
//! - Names under cluster-internal suffixes (`dns.internal_suffixes`: `cluster.local`,
//!   `.svc`, ...) and search-list retries (`<name>.<search suffix>` where `<name>` is a
//!   registrable name, [`crate::dns::score::embedded_name`]) are counted, never tunnel
//!   candidates: every Kubernetes pod and every stub resolver with a search list sends them.
//! - Per client: NXDOMAIN responses in a sliding window (DGA malware, tunnels probing).
//! - (client, resolved IP) → name, with TTL-bounded expiry, for `dst_fqdn` on flow alerts.
//! - Query/response matching by (5-tuple, id) into transaction records.
//!
//! Every table is bounded by a config key; what does not fit is counted. This thread may
//! allocate (it owns strings for names and samples), but reuses what it can: a repeated name
//! builds no string, and samples reuse their buffers.
//!
//! No table is scanned per event: each keeps its entries in linked lists whose front is the
//! entry to go first, so eviction and expiry pop from a front in O(1) amortised, even under
//! a flood (a pair's own name set is a fixed [`EXACT`] entries, so its scan is constant):
//!
//! - (client, domain) windows live in a [`PairTable`]: tiers by what a pair's queries have
//!   shown (cold: one ordinary query; warm: more, or one unique suspicious subdomain; hot:
//!   two or more), each in last-query order, and a per-client share. A full table expires
//!   idle windows, then evicts the idlest pair of the coldest tier; a client over its share
//!   replaces its own coldest pair. So a flood of new domains — from one host or many —
//!   evicts flood pairs, not the window of a tunnel in progress, and a tunnel that starts
//!   during the flood is tracked. Every eviction is counted by reason.
//! - NXDOMAIN windows (one per client) move to the back on each NXDOMAIN, so the front is
//!   the idlest; a new client on a full table first expires idle windows from the front,
//!   and is refused (counted) if none is idle.
//! - the IP→name map moves an entry to the back when it is (re)learnt; a full map drops the
//!   front, the name learnt longest ago.
//! - pending transactions are in query order; timeouts and a full table write out the front.

use super::dns_pairs::{client_share, PairEvictions, PairTable, Tier};
use crate::config::DnsConfig;
use crate::decode::Addr;
use crate::detect::Detector;
use crate::dns::extract::{AnswerData, DnsEvent};
use crate::dns::parser::type_name;
use crate::dns::score::{
    case_randomised, embedded_name, score_with, split, under, Encoding, Params, Score, ENCODINGS,
};
use crate::dns::text;
use crate::proto::NameSource;

/// A learnt destination name: (name, expiry ns, where it came from).
type LearntName = (Box<str>, u64, NameSource);
use hashlink::LinkedHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;

/// The maps' hasher: seeded per run (so keys cannot be aimed at one bucket) and several
/// times faster than SipHash on these address keys (measured: SipHash was the largest
/// single cost of a volume report under a flood of new sources).
type Fast = foldhash::fast::RandomState;

/// Time buckets per sliding window.
pub const BUCKETS: usize = 10;
/// Bits of the per-bucket unique-subdomain bitmap (linear counting, Whang et al. 1990):
/// accurate to a few percent up to ~1000 distinct names per window, 64 bytes per bucket.
/// Used only once a window holds more than [`EXACT`] unique subdomains.
const BITMAP_BITS: usize = 512;
/// Unique subdomains a pair's window counts exactly (hash, first/last seen, score: 32
/// bytes each, so at most 1 KiB per pair, grown only as names arrive). Why exact: the
/// decision lies at a handful of unique suspicious names (`dns.min_suspicious_subdomains`,
/// default 6), where a sketch's error (±1 or 2) is the whole margin, and where a repeated
/// name must count once. Why 32: five times the threshold, and the names that make the pair
/// score; past it the oldest name is replaced (a fair sample of a busy window) and the
/// unique count comes from the bitmap, an estimate good to a few percent at such counts.
pub const EXACT: usize = 32;
/// Sample query names carried by an alert.
pub const SAMPLES: usize = 5;

/// Whether a query type is one tunnels favour: TXT (16), NULL (10), MX (15), CNAME (5) and
/// ANY (255) carry the most bytes back in one answer, and private-use types
/// 65280..=65534 (RFC 6895) are free for any use. Stub resolvers ask A, AAAA, HTTPS, PTR.
pub fn tunnel_type(qtype: u16) -> bool {
    matches!(qtype, 5 | 10 | 15 | 16 | 255 | 65280..=65534)
}

/// The named parts of a (client, domain) pair's score over its window; their sum is the
/// score compared with `dns.pair_score_threshold`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairScore {
    /// Mean name score of the unique suspicious subdomains (each ≥
    /// `dns.name_score_threshold`).
    pub names: f64,
    /// 2 × the share of queries of tunnel record types ([`tunnel_type`]).
    pub record_types: f64,
    /// Unique subdomains / queries (at most 1): a tunnel's every query carries new data;
    /// a client repeating lookups does not.
    pub uniqueness: f64,
    /// Share of the unique suspicious subdomains whose longest label has the most common
    /// length (a tunnel cuts data into one label size); 0 below 3 such subdomains.
    pub regularity: f64,
}

impl PairScore {
    /// The score: the sum of the parts.
    pub fn total(&self) -> f64 {
        self.names + self.record_types + self.uniqueness + self.regularity
    }
}

/// An alert from the DNS analyser.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsAlert {
    /// Stable id: `<detector>-<client>-<domain>-<ts>`.
    pub id: String,
    /// Time of the query (or response) that crossed the threshold (ns).
    pub ts_ns: u64,
    /// `DnsTunnel` or `NxdomainBurst`.
    pub detector: Detector,
    /// What crossed: `suspicious_subdomains` (enough unique suspicious subdomains, and the
    /// pair score), `query_rate` or `nxdomain_burst`.
    pub reason: &'static str,
    /// The asking host.
    pub client: IpAddr,
    /// The registered domain (tunnel); empty for an NXDOMAIN burst across domains.
    pub domain: String,
    /// Queries in the window (tunnel); 0 for an NXDOMAIN burst.
    pub queries: u64,
    /// Distinct subdomains in the window: exact up to [`EXACT`], estimated beyond.
    pub unique_subdomains: u64,
    /// Distinct subdomains scoring at least `dns.name_score_threshold` in the window.
    pub suspicious_subdomains: u64,
    /// The most common encoding of those (`hex`, `base32`, `base64`, `binary`, or `none`
    /// when they are suspicious by length, entropy and label shape only).
    pub encoding: Encoding,
    /// Suspicious subdomains in that encoding.
    pub encoded_subdomains: u64,
    /// Queries of tunnel record types ([`tunnel_type`]) in the window.
    pub tunnel_type_queries: u64,
    /// The most common longest-label length of the suspicious subdomains (0 if none).
    pub label_length: usize,
    /// The pair's score and its parts (zero for a `query_rate` alert that has no
    /// suspicious subdomain, and for an NXDOMAIN burst).
    pub score: PairScore,
    /// NXDOMAIN responses in the window (burst); 0 for a tunnel.
    pub nxdomains: u64,
    /// Time from the first observation that counts (the first suspicious subdomain for
    /// `suspicious_subdomains`, the first query of the window for `query_rate`, the first
    /// NXDOMAIN of the window for a burst) to the alert, in seconds.
    pub observed_s: f64,
    /// The pair's highest-scoring query name (empty for a burst).
    pub worst_query: String,
    /// Its score, with components.
    pub worst_score: Score,
    /// Up to [`SAMPLES`] recent distinct query names (suspicious ones preferred).
    pub samples: Vec<String>,
}

/// One DNS transaction (query and its response), like a row of Zeek's dns.log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Time of the query, or of the response when no query was seen (ns).
    pub ts_ns: u64,
    /// Flow of the query/response.
    pub flow_id: u64,
    /// 17 or 6.
    pub proto: u8,
    /// Client.
    pub client: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server.
    pub server: IpAddr,
    /// Server port.
    pub server_port: u16,
    /// Transaction id.
    pub id: u16,
    /// Response time (ns), when both were seen.
    pub rtt_ns: Option<u64>,
    /// Query name as matched: ASCII lowercased, no trailing dot, the root as `.`,
    /// non-printable bytes as `\xNN` ([`text::escape`]); empty if the message had no question.
    pub query: String,
    /// The same name with the case it had on the wire (Zeek's `original_query`).
    pub original_query: String,
    /// Query class.
    pub qclass: u16,
    /// Query type.
    pub qtype: u16,
    /// Response code, when a response was seen.
    pub rcode: Option<u16>,
    /// AA, TC, RD, RA of the response (or query).
    pub flags: u8,
    /// Answers as text: addresses; names ([`text::name`]); TXT/SPF as Zeek writes them
    /// (`TXT <len> <string>` per string, [`text::txt`]); NULL and unknown types as
    /// `<TYPE> <n> bytes <hex>` of at most 64 bytes ([`text::hex_rdata`]); other types as
    /// `<TYPE> <n> bytes`.
    pub answers: Vec<String>,
    /// Their TTLs.
    pub ttls: Vec<u32>,
    /// Registered domain of the query.
    pub registered_domain: String,
    /// Subdomain scores (of the embedded name's subdomain for a search-list retry).
    pub score: Score,
    /// Name score at least `dns.name_score_threshold`, and not internal or a search retry.
    pub suspicious: bool,
    /// What kind of name it is for the tunnel detector.
    pub class: NameClass,
    /// Whether a query was seen.
    pub query_seen: bool,
    /// Whether a response was seen.
    pub response_seen: bool,
}

/// What a query name is for the tunnel detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameClass {
    /// An ordinary candidate.
    #[default]
    Candidate,
    /// Under `dns.allow_domains`: counted, never alerted.
    Allowlisted,
    /// Under `dns.internal_suffixes` (`cluster.local`, `.internal`...): counted, never a
    /// tunnel candidate.
    Internal,
    /// A registrable name under a search suffix (`upload.wikimedia.org.ncsa.uiuc.edu`):
    /// scored by the embedded name's own subdomain.
    SearchRetry,
}

/// What the analyser produces.
#[derive(Clone, Debug, PartialEq)]
pub enum DnsOutput {
    /// An alert.
    Alert(DnsAlert),
    /// A transaction record.
    Record(DnsRecord),
}

/// Names of the tables [`DnsAnalyser::tables`] reports, as metric labels: the (client,
/// domain) windows, the per-client NXDOMAIN windows, the IP→name map and the pending
/// transactions.
pub const DNS_TABLES: [&str; 4] = [
    "dns_windows",
    "dns_nxdomain",
    "dns_names",
    "dns_transactions",
];

/// Counters of the analyser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyseStats {
    /// Queries scored.
    pub queries: u64,
    /// Queries whose name scored at least `dns.name_score_threshold` (repeats included).
    pub suspicious: u64,
    /// Queries for allowlisted domains (counted, never alerted).
    pub allowlisted: u64,
    /// Queries under `dns.internal_suffixes` (counted, never tunnel candidates).
    pub internal: u64,
    /// Queries recognised as search-list retries (scored by the embedded name).
    pub search_retries: u64,
    /// Responses seen.
    pub responses: u64,
    /// NXDOMAIN responses.
    pub nxdomains: u64,
    /// Malformed messages (from the workers).
    pub malformed: u64,
    /// Live (client, domain) windows evicted to make room, by reason.
    pub pairs_evicted: PairEvictions,
    /// New NXDOMAIN clients not tracked because that table was full of live windows.
    pub nx_clients_dropped: u64,
    /// IP→name entries evicted before their TTL because the map was full.
    pub names_evicted: u64,
    /// Transactions written without a response (timeout or table full).
    pub unanswered: u64,
    /// Of those, written out before their timeout because the table was full.
    pub transactions_evicted: u64,
    /// Alerts raised.
    pub alerts: u64,
}

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct Bucket {
    epoch: u64,
    /// Time of the bucket's first event (ns).
    first_ns: u64,
    queries: u32,
    /// Queries of tunnel record types.
    tunnel_types: u32,
    bits: [u64; BITMAP_BITS / 64],
}

/// A sliding window as a ring of buckets, each tagged with the epoch it counts.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Window {
    buckets: [Bucket; BUCKETS],
}

/// What a window holds at one epoch.
#[derive(Clone, Copy, Default)]
struct Totals {
    queries: u64,
    tunnel_types: u64,
    /// Estimated distinct subdomains (linear counting).
    unique: u64,
    /// First event of the window (ns).
    first_ns: u64,
}

impl Window {
    fn bucket(&mut self, epoch: u64, now_ns: u64) -> &mut Bucket {
        let i = (epoch % BUCKETS as u64) as usize;
        let b = &mut self.buckets[i];
        if b.epoch != epoch || b.queries == 0 {
            *b = Bucket {
                epoch,
                first_ns: now_ns,
                ..Bucket::default()
            };
        }
        b
    }

    fn totals(&self, epoch: u64) -> Totals {
        let mut t = Totals {
            first_ns: u64::MAX,
            ..Totals::default()
        };
        let mut bits = [0u64; BITMAP_BITS / 64];
        for b in &self.buckets {
            if b.epoch + (BUCKETS as u64) > epoch && b.epoch <= epoch && b.queries > 0 {
                t.queries += u64::from(b.queries);
                t.tunnel_types += u64::from(b.tunnel_types);
                t.first_ns = t.first_ns.min(b.first_ns);
                for (a, x) in bits.iter_mut().zip(b.bits.iter()) {
                    *a |= x;
                }
            }
        }
        let zeros = bits.iter().map(|w| w.count_zeros()).sum::<u32>();
        let m = BITMAP_BITS as f64;
        t.unique = if zeros == 0 {
            (m * m.ln()) as u64 // saturated: the estimator's upper end
        } else {
            (-m * (f64::from(zeros) / m).ln()).round() as u64
        };
        t
    }
}

/// One unique subdomain of a pair's window.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Seen {
    /// Hash of the lowercase subdomain.
    hash: u64,
    /// First query for it in its current stay in the window (ns).
    first_ns: u64,
    /// Epoch of its last query: in the window while `last_epoch + BUCKETS > epoch`.
    last_epoch: u64,
    /// Its name score.
    score: f32,
    /// Its [`Encoding`], as `u8`.
    encoding: u8,
    /// Its longest label (≤ 63 on the wire).
    longest: u8,
    suspicious: bool,
}

fn live(s: &Seen, epoch: u64) -> bool {
    s.last_epoch + (BUCKETS as u64) > epoch
}

/// What the exact set holds at one epoch.
#[derive(Clone, Copy, Default)]
struct SetCounts {
    unique: u64,
    suspicious: u64,
    score_sum: f64,
    first_suspicious_ns: u64,
    by_encoding: [u64; ENCODINGS],
}

#[derive(Serialize, Deserialize)]
struct Pair {
    domain: String,
    window: Window,
    last_alert: [Option<u64>; 2],
    /// The window's unique subdomains, at most [`EXACT`] (see there).
    names: Vec<Seen>,
    /// Epoch at which a live name last had to leave `names` for a new one: while that is in
    /// the window, `names` is a sample and the unique count an estimate.
    overflow_epoch: Option<u64>,
    worst: Score,
    worst_query: String,
    samples: VecDeque<String>,
    /// Queries and unique suspicious subdomains since the pair was created (saturating):
    /// they choose its eviction tier ([`Tier::of`]).
    queries: u32,
    suspicious: u32,
}

impl Pair {
    fn new(domain: &[u8]) -> Pair {
        Pair {
            domain: text::escape(domain),
            window: Window::default(),
            last_alert: [None; 2],
            names: Vec::new(),
            overflow_epoch: None,
            worst: Score {
                total: -1.0,
                ..Score::default()
            },
            worst_query: String::new(),
            samples: VecDeque::with_capacity(SAMPLES),
            queries: 0,
            suspicious: 0,
        }
    }

    /// Makes an evicted pair's slot a new pair, keeping its buffers.
    fn reset(&mut self, domain: &[u8]) {
        self.domain.clear();
        text::escape_into(&mut self.domain, domain);
        self.window = Window::default();
        self.last_alert = [None; 2];
        self.names.clear();
        self.overflow_epoch = None;
        self.worst = Score {
            total: -1.0,
            ..Score::default()
        };
        self.worst_query.clear();
        self.samples.clear();
        self.queries = 0;
        self.suspicious = 0;
    }

    /// Records subdomain `hash` at `epoch`; true if it is new to the window.
    fn see(&mut self, hash: u64, now_ns: u64, epoch: u64, sc: &Score, suspicious: bool) -> bool {
        let fresh = Seen {
            hash,
            first_ns: now_ns,
            last_epoch: epoch,
            score: sc.total as f32,
            encoding: sc.encoding as u8,
            longest: u8::try_from(sc.longest_label).unwrap_or(u8::MAX),
            suspicious,
        };
        // One pass over at most EXACT entries: the name itself, else the best place for it
        // (an expired entry, else the one seen longest ago).
        let mut spot: Option<(usize, u64)> = None;
        for (i, s) in self.names.iter_mut().enumerate() {
            if s.hash == hash {
                if live(s, epoch) {
                    s.last_epoch = epoch;
                    return false;
                }
                *s = fresh;
                return true;
            }
            let age = if live(s, epoch) { s.last_epoch } else { 0 };
            if spot.is_none_or(|(_, a)| age < a) {
                spot = Some((i, age));
            }
        }
        if self.names.len() < EXACT {
            if self.names.capacity() == 0 {
                self.names.reserve_exact(4);
            }
            self.names.push(fresh);
        } else if let Some((i, _)) = spot {
            if let Some(s) = self.names.get_mut(i) {
                if live(s, epoch) {
                    self.overflow_epoch = Some(epoch);
                }
                *s = fresh;
            }
        }
        true
    }

    fn counts(&self, epoch: u64) -> SetCounts {
        let mut c = SetCounts {
            first_suspicious_ns: u64::MAX,
            ..SetCounts::default()
        };
        for s in self.names.iter().filter(|s| live(s, epoch)) {
            c.unique += 1;
            if s.suspicious {
                c.suspicious += 1;
                c.score_sum += f64::from(s.score);
                c.first_suspicious_ns = c.first_suspicious_ns.min(s.first_ns);
                if let Some(n) = c.by_encoding.get_mut(usize::from(s.encoding)) {
                    *n += 1;
                }
            }
        }
        c
    }

    /// The most common longest-label length of the live suspicious names, and how many
    /// have it.
    fn modal_label(&self, epoch: u64) -> (usize, u64) {
        let mut hist = [0u16; 64];
        for s in self.names.iter().filter(|s| s.suspicious && live(s, epoch)) {
            if let Some(n) = hist.get_mut(usize::from(s.longest.min(63))) {
                *n += 1;
            }
        }
        let (len, n) = hist
            .iter()
            .enumerate()
            .max_by_key(|(len, n)| (**n, *len))
            .map_or((0, 0), |(l, n)| (l, u64::from(*n)));
        (len, n)
    }
}

#[derive(Serialize, Deserialize)]
struct Nx {
    window: Window,
    last_ns: u64,
    last_alert: Option<u64>,
    samples: VecDeque<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct TxKey {
    client: Addr,
    client_port: u16,
    server: Addr,
    server_port: u16,
    proto: u8,
    id: u16,
}

/// The analyser's state. See the module documentation.
///
/// In a correlator snapshot ([`super::snapshot`]) with every field but those the config
/// gives (skipped: the restored analyser keeps its own) and `records` (the process's
/// choice).
#[derive(Serialize, Deserialize)]
pub struct DnsAnalyser {
    #[serde(skip)]
    cfg: DnsConfig,
    #[serde(skip)]
    params: Params,
    #[serde(skip)]
    bucket_ns: u64,
    #[serde(skip)]
    nx_bucket_ns: u64,
    #[serde(skip)]
    suppress_ns: u64,
    /// Keyed by (client, keyed hash of the registered domain): no allocation per query.
    /// Tiered, per-client bounded, last-query order within each list (see [`PairTable`]).
    pairs: PairTable<Pair>,
    /// Fixed seed: the unique-subdomain estimate must not vary from run to run; domain keys
    /// only need the hash to be unpredictable to outsiders, which a per-build constant
    /// does not give, so the pair key uses `domain_key` below.
    #[serde(skip)]
    hasher: foldhash::fast::FixedState,
    domain_key: DomainKey,
    /// Last-NXDOMAIN order (front: the idlest).
    #[serde(with = "super::snapshot::table")]
    clients: LinkedHashMap<Addr, Nx, Fast>,
    /// (name, expiry, where the name came from) in learning order (front: learnt longest
    /// ago).
    #[serde(with = "super::snapshot::table")]
    names: LinkedHashMap<(Addr, Addr), LearntName, Fast>,
    /// In query order (front: the oldest query).
    #[serde(with = "super::snapshot::table")]
    pending: LinkedHashMap<TxKey, DnsRecord, Fast>,
    #[serde(skip)]
    allow: Vec<Vec<u8>>,
    #[serde(skip)]
    internal: Vec<Vec<u8>>,
    /// Entries examined by eviction and expiry: the work the table tests bound by a
    /// constant per event (a cheap plain counter, never reset).
    visited: u64,
    /// Whether transaction records are wanted (a DNS log or collection). Without them the
    /// analyser skips query/response matching and builds no strings per message.
    #[serde(skip)]
    records: bool,
    /// Counters.
    pub stats: AnalyseStats,
}

/// The keyed hash of a pair's registered domain: seeded at random per analyser, so that
/// outsiders cannot aim names at one key, and carried in snapshots by its seed, so that a
/// restored table's keys are found again in another process. (It was a
/// `foldhash::fast::RandomState`, whose process-wide part cannot be read or set: a table
/// restored elsewhere would never have found its pairs again, and would have kept them as
/// idle pairs beside new ones for the same domains.)
#[derive(Clone)]
struct DomainKey {
    seed: u64,
    shared: foldhash::SharedSeed,
}

impl DomainKey {
    /// A random key, from the OS-seeded keys of std's SipHash.
    fn random() -> DomainKey {
        use std::hash::BuildHasher;
        DomainKey::of(
            std::collections::hash_map::RandomState::new().hash_one(0x006f_7574_666c_6f77_u64),
        )
    }

    fn of(seed: u64) -> DomainKey {
        DomainKey {
            seed,
            shared: foldhash::SharedSeed::from_u64(seed),
        }
    }

    fn hash(&self, registered: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = foldhash::fast::FoldHasher::with_seed(self.seed, &self.shared);
        registered.hash(&mut h);
        h.finish()
    }
}

impl Serialize for DomainKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.seed.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DomainKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DomainKey, D::Error> {
        u64::deserialize(d).map(DomainKey::of)
    }
}

/// A query name as the tunnel detector sees it.
struct Assessed<'a> {
    registered: &'a [u8],
    /// The subdomain whose uniqueness counts (the whole one, also for a search retry).
    subdomain: &'a [u8],
    score: Score,
    class: NameClass,
    suspicious: bool,
}

/// Pairs one client may hold.
fn share_of(cfg: &DnsConfig) -> usize {
    client_share(cfg.pair_capacity, cfg.client_share, cfg.client_min_pairs)
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn ip(a: Addr, v6: bool) -> IpAddr {
    a.to_ip(v6)
}

fn suffixes(list: &[String]) -> Vec<Vec<u8>> {
    list.iter()
        .map(|d| {
            d.trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase()
                .into_bytes()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

impl DnsAnalyser {
    /// The counters were set to another process's (a restart resumed from `state.dir`):
    /// the pair table's own eviction count follows them, so the next copy into the
    /// counters does not bring the previous process's total back.
    pub(crate) fn counters_set(&mut self) {
        self.pairs.evicted = self.stats.pairs_evicted;
    }

    /// Occupancy of the bounded tables, in the order of [`DNS_TABLES`]: (entries,
    /// capacity, entries evicted or refused because the table was full).
    pub fn tables(&self) -> [(u64, u64, u64); DNS_TABLES.len()] {
        let n = |x: usize| x as u64;
        [
            (
                n(self.pairs.len()),
                n(self.cfg.pair_capacity),
                self.stats.pairs_evicted.total(),
            ),
            (
                n(self.clients.len()),
                n(self.cfg.pair_capacity),
                self.stats.nx_clients_dropped,
            ),
            (
                n(self.names.len()),
                n(self.cfg.name_map_capacity),
                self.stats.names_evicted,
            ),
            (
                n(self.pending.len()),
                n(self.cfg.transaction_capacity),
                self.stats.transactions_evicted,
            ),
        ]
    }

    /// An analyser with the given settings.
    pub fn new(cfg: &DnsConfig) -> DnsAnalyser {
        DnsAnalyser {
            params: Params {
                entropy_from: cfg.entropy_threshold,
                length_from: cfg.length_threshold,
            },
            bucket_ns: (ns(cfg.window) / BUCKETS as u64).max(1),
            nx_bucket_ns: (ns(cfg.nxdomain_window) / BUCKETS as u64).max(1),
            suppress_ns: ns(cfg.suppression),
            pairs: PairTable::new(cfg.pair_capacity, share_of(cfg)),
            hasher: foldhash::fast::FixedState::with_seed(0x7375_6264_6f6d_6169),
            domain_key: DomainKey::random(),
            clients: LinkedHashMap::default(),
            names: LinkedHashMap::default(),
            pending: LinkedHashMap::default(),
            allow: suffixes(&cfg.allow_domains),
            internal: suffixes(&cfg.internal_suffixes),
            visited: 0,
            records: true,
            cfg: cfg.clone(),
            stats: AnalyseStats::default(),
        }
    }

    /// Turns transaction records on or off (off when nothing would write them).
    pub fn set_records(&mut self, on: bool) {
        self.records = on;
    }

    /// Applies new thresholds, allowlist and internal suffixes (SIGHUP); windows, names and
    /// pending transactions are kept.
    pub fn reconfigure(&mut self, cfg: &DnsConfig) {
        let fresh = DnsAnalyser::new(cfg);
        self.params = fresh.params;
        self.bucket_ns = fresh.bucket_ns;
        self.nx_bucket_ns = fresh.nx_bucket_ns;
        self.suppress_ns = fresh.suppress_ns;
        self.allow = fresh.allow;
        self.internal = fresh.internal;
        self.pairs.set_limits(cfg.pair_capacity, share_of(cfg));
        self.cfg = fresh.cfg;
    }

    /// The name `client` resolved for `ip`, if it is still within its TTL at `now_ns`.
    pub fn fqdn(&self, client: IpAddr, ip: IpAddr, now_ns: u64) -> Option<&str> {
        self.fqdn_source(client, ip, now_ns).map(|(n, _)| n)
    }

    /// [`fqdn`](Self::fqdn) and where the name came from (a DNS answer, or the SNI / Host
    /// of an earlier flow between the two, see [`learn`](Self::learn)).
    pub fn fqdn_source(
        &self,
        client: IpAddr,
        ip: IpAddr,
        now_ns: u64,
    ) -> Option<(&str, NameSource)> {
        let key = (Addr::from_ip(client), Addr::from_ip(ip));
        self.names
            .get(&key)
            .filter(|(_, exp, _)| *exp >= now_ns)
            .map(|(n, _, s)| (&**n, *s))
    }

    /// Learns a name a flow's first bytes gave (TLS SNI, HTTP Host) for (client, ip), kept
    /// `name_ttl_max`. A DNS answer still in force wins: the name the client looked up is
    /// what it meant, an SNI may be a fronting domain.
    pub fn learn(&mut self, client: Addr, ip: Addr, name: &[u8], ts_ns: u64, source: NameSource) {
        let key = (client, ip);
        if self
            .names
            .get(&key)
            .is_some_and(|(_, exp, s)| *s == NameSource::Dns && *exp >= ts_ns)
        {
            return;
        }
        let exp = ts_ns.saturating_add(ns(self.cfg.name_ttl_max));
        let lower = name.to_ascii_lowercase();
        self.names
            .insert(key, (text::escape(&lower).into(), exp, source));
        self.trim_names(ts_ns);
    }

    fn trim_names(&mut self, now_ns: u64) {
        while self.names.len() > self.cfg.name_map_capacity {
            let Some((_, (_, exp, _))) = self.names.pop_front() else {
                break;
            };
            self.visited += 1;
            if exp > now_ns {
                self.stats.names_evicted += 1;
            }
        }
    }

    fn allowed(&self, name: &[u8]) -> bool {
        self.allow.iter().any(|a| under(name, a))
    }

    /// Splits, classifies and scores a query name (`name` lowercase, `original` with its
    /// wire case).
    fn assess<'a>(&self, name: &'a [u8], original: &[u8]) -> Assessed<'a> {
        let sp = split(name);
        let class = if self.allowed(name) {
            NameClass::Allowlisted
        } else if self.internal.iter().any(|s| under(name, s)) {
            NameClass::Internal
        } else {
            NameClass::Candidate
        };
        let reg_at = name.len().saturating_sub(sp.registered.len());
        let case_random = original
            .get(reg_at..)
            .is_some_and(|r| original.len() == name.len() && case_randomised(r));
        // A subdomain is a prefix of `name`: its wire case is the same prefix of
        // `original` (none if the lengths differ; the score then uses the lowercase).
        let orig_of = |s: &[u8]| original.get(..s.len()).unwrap_or(&[]);
        let (score, class) = match embedded_name(sp.subdomain) {
            Some(e) if class == NameClass::Candidate => (
                score_with(e.subdomain, orig_of(e.subdomain), case_random, &self.params),
                NameClass::SearchRetry,
            ),
            _ => (
                score_with(
                    sp.subdomain,
                    orig_of(sp.subdomain),
                    case_random,
                    &self.params,
                ),
                class,
            ),
        };
        let suspicious = matches!(class, NameClass::Candidate | NameClass::SearchRetry)
            && score.total >= self.cfg.name_score_threshold;
        Assessed {
            registered: sp.registered,
            subdomain: sp.subdomain,
            score,
            class,
            suspicious,
        }
    }

    /// Processes one DNS event; alerts and records go to `out`.
    pub fn on_event(&mut self, ev: &DnsEvent, out: &mut impl FnMut(DnsOutput)) {
        self.expire_pending(ev.ts_ns, out);
        if ev.malformed.is_some() {
            self.stats.malformed += 1;
            return;
        }
        if ev.response {
            self.on_response(ev, out);
        } else {
            self.on_query(ev, out);
        }
    }

    fn record_of(&self, ev: &DnsEvent, a: Option<&Assessed<'_>>) -> DnsRecord {
        let name = ev.qname.as_bytes();
        let mut buf = [0u8; 255];
        let original = ev.qname.original(&mut buf);
        let own;
        let a = match a {
            Some(a) => a,
            None => {
                own = self.assess(name, original);
                &own
            }
        };
        DnsRecord {
            ts_ns: ev.ts_ns,
            flow_id: ev.flow_id,
            proto: ev.proto,
            client: ip(ev.client, ev.ipv6),
            client_port: ev.client_port,
            server: ip(ev.server, ev.ipv6),
            server_port: ev.server_port,
            id: ev.id,
            rtt_ns: None,
            query: if ev.has_question {
                text::name(name)
            } else {
                String::new()
            },
            original_query: if ev.has_question {
                text::name(original)
            } else {
                String::new()
            },
            qclass: ev.qclass,
            qtype: ev.qtype,
            rcode: None,
            flags: ev.flags,
            answers: Vec::new(),
            ttls: Vec::new(),
            registered_domain: text::escape(a.registered),
            suspicious: a.suspicious,
            score: a.score,
            class: a.class,
            query_seen: false,
            response_seen: false,
        }
    }

    fn on_query(&mut self, ev: &DnsEvent, out: &mut impl FnMut(DnsOutput)) {
        let name = ev.qname.as_bytes();
        let mut buf = [0u8; 255];
        let original = ev.qname.original(&mut buf);
        let a = self.assess(name, original);
        if self.records {
            let key = tx_key(ev);
            let mut rec = self.record_of(ev, Some(&a));
            rec.query_seen = true;
            // `insert` moves a repeated key to the back: the list stays in query order.
            if let Some(old) = self.pending.insert(key, rec) {
                // Same 5-tuple and id again before an answer: the first one went unanswered.
                self.stats.unanswered += 1;
                out(DnsOutput::Record(old));
            }
            while self.pending.len() > self.cfg.transaction_capacity {
                if !self.pop_pending(out) {
                    break;
                }
                self.stats.transactions_evicted += 1;
            }
        }
        if ev.has_question {
            self.score_query(ev, &a, out);
        }
    }

    fn score_query(&mut self, ev: &DnsEvent, a: &Assessed<'_>, out: &mut impl FnMut(DnsOutput)) {
        let name = ev.qname.as_bytes();
        self.stats.queries += 1;
        if a.suspicious {
            self.stats.suspicious += 1;
        }
        match a.class {
            NameClass::Allowlisted => {
                self.stats.allowlisted += 1;
                return;
            }
            NameClass::Internal => {
                self.stats.internal += 1;
                return;
            }
            NameClass::SearchRetry => self.stats.search_retries += 1,
            NameClass::Candidate => {}
        }
        let epoch = ev.ts_ns / self.bucket_ns;
        let lookup = (ev.client, self.domain_key.hash(a.registered));
        let slot = match self.pairs.touch(&lookup, ev.ts_ns) {
            Some(i) => i,
            None => {
                let horizon = ev.ts_ns.saturating_sub(ns(self.cfg.window));
                let registered = a.registered;
                let Some(i) = self.pairs.insert(
                    lookup,
                    ev.ts_ns,
                    horizon,
                    || Pair::new(registered),
                    |p| p.reset(registered),
                ) else {
                    return;
                };
                self.stats.pairs_evicted = self.pairs.evicted;
                i
            }
        };
        let h = {
            use std::hash::BuildHasher;
            self.hasher.hash_one(a.subdomain)
        };
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let b = pair.window.bucket(epoch, ev.ts_ns);
        b.queries = b.queries.saturating_add(1);
        if tunnel_type(ev.qtype) {
            b.tunnel_types = b.tunnel_types.saturating_add(1);
        }
        let bit = (h % BITMAP_BITS as u64) as usize;
        b.bits[bit / 64] |= 1 << (bit % 64);
        let new = pair.see(h, ev.ts_ns, epoch, &a.score, a.suspicious);
        pair.queries = pair.queries.saturating_add(1);
        if new && a.suspicious {
            pair.suspicious = pair.suspicious.saturating_add(1);
        }
        let tier = Tier::of(pair.queries, pair.suspicious);
        if new {
            if a.score.total > pair.worst.total {
                pair.worst = a.score;
                pair.worst_query.clear();
                text::escape_into(&mut pair.worst_query, name);
            }
            // Keep recent distinct names, suspicious ones first in line; reuse the buffer
            // of the one that leaves.
            if a.suspicious || pair.samples.len() < SAMPLES {
                push_sample(&mut pair.samples, name);
            }
        }
        self.pairs.promote(slot, tier);
        let Some(pair) = self.pairs.get(slot) else {
            return;
        };
        let t = pair.window.totals(epoch);
        let c = pair.counts(epoch);
        let min = u64::from(self.cfg.min_suspicious_subdomains);
        let (which, reason) = if t.queries > u64::from(self.cfg.max_queries) {
            (0usize, "query_rate")
        } else if c.suspicious >= min {
            (1usize, "suspicious_subdomains")
        } else {
            return;
        };
        // Both reasons share the detector; either one re-fires only after the suppression.
        let recent = pair
            .last_alert
            .iter()
            .flatten()
            .any(|t| ev.ts_ns < t.saturating_add(self.suppress_ns));
        if recent {
            return;
        }
        let overflow = pair
            .overflow_epoch
            .is_some_and(|e| e + (BUCKETS as u64) > epoch);
        let unique = if overflow {
            c.unique.max(t.unique)
        } else {
            c.unique
        };
        let (label_length, modal) = pair.modal_label(epoch);
        let score = if c.suspicious > 0 {
            PairScore {
                names: c.score_sum / c.suspicious as f64,
                record_types: 2.0 * t.tunnel_types as f64 / t.queries.max(1) as f64,
                uniqueness: (unique as f64 / t.queries.max(1) as f64).min(1.0),
                regularity: if c.suspicious >= 3 {
                    modal as f64 / c.suspicious as f64
                } else {
                    0.0
                },
            }
        } else {
            PairScore::default()
        };
        if which == 1 && score.total() < self.cfg.pair_score_threshold {
            return;
        }
        // The dominant encoding of the suspicious names (ties: the stronger evidence).
        let (encoding, encoded) = Encoding::ALL
            .iter()
            .zip(c.by_encoding)
            .max_by_key(|(e, n)| (*n, **e))
            .map_or((Encoding::None, 0), |(e, n)| (*e, n));
        let since = if which == 1 {
            c.first_suspicious_ns
        } else {
            t.first_ns
        };
        let observed_s = ev.ts_ns.saturating_sub(since.min(ev.ts_ns)) as f64 / 1e9;
        let client = ip(ev.client, ev.ipv6);
        let alert = DnsAlert {
            id: String::new(),
            ts_ns: ev.ts_ns,
            detector: Detector::DnsTunnel,
            reason,
            client,
            domain: pair.domain.clone(),
            queries: t.queries,
            unique_subdomains: unique,
            suspicious_subdomains: c.suspicious,
            encoding,
            encoded_subdomains: encoded,
            tunnel_type_queries: t.tunnel_types,
            label_length,
            score,
            nxdomains: 0,
            observed_s,
            worst_query: pair.worst_query.clone(),
            worst_score: pair.worst,
            samples: pair.samples.iter().cloned().collect(),
        };
        if let Some(pair) = self.pairs.get_mut(slot) {
            pair.last_alert[which] = Some(ev.ts_ns);
        }
        self.stats.alerts += 1;
        out(DnsOutput::Alert(DnsAlert {
            id: format!("dns_tunnel-{client}-{}-{}", alert.domain, ev.ts_ns),
            ..alert
        }));
    }

    fn on_response(&mut self, ev: &DnsEvent, out: &mut impl FnMut(DnsOutput)) {
        self.stats.responses += 1;
        if !self.records {
            self.learn_names(ev);
            if ev.rcode == 3 {
                self.nxdomain(ev, out);
            }
            return;
        }
        let key = tx_key(ev);
        let mut rec = match self.pending.remove(&key) {
            Some(mut q) => {
                q.rtt_ns = Some(ev.ts_ns.saturating_sub(q.ts_ns));
                q
            }
            None => self.record_of(ev, None),
        };
        rec.response_seen = true;
        rec.rcode = Some(ev.rcode);
        rec.flags = ev.flags;
        for a in ev.answers.iter().flatten() {
            rec.answers.push(match a.data {
                AnswerData::Addr(addr, v6) => addr.to_ip(v6).to_string(),
                AnswerData::Name { off, len } => text::name(ev.name_of(off, len)),
                AnswerData::Rdata { off, len, total } => {
                    let kept = ev.arena_bytes(off, len);
                    match type_name(a.rtype) {
                        t @ ("TXT" | "SPF") => text::txt(t, kept, total.into()),
                        "" => text::hex_rdata(&format!("TYPE{}", a.rtype), kept, total.into()),
                        t => text::hex_rdata(t, kept, total.into()),
                    }
                }
                AnswerData::Other(n) => match type_name(a.rtype) {
                    "" => format!("TYPE{} {n} bytes", a.rtype),
                    t => format!("{t} {n} bytes"),
                },
            });
            rec.ttls.push(a.ttl);
        }
        self.learn_names(ev);
        out(DnsOutput::Record(rec));
        if ev.rcode == 3 {
            self.nxdomain(ev, out);
        }
    }

    /// IP → name for the client, from the question's (CNAME-followed) addresses.
    fn learn_names(&mut self, ev: &DnsEvent) {
        if ev.has_question && ev.resolved.iter().any(Option::is_some) {
            let name: Box<str> = text::escape(ev.qname.as_bytes()).into();
            for (addr, _, ttl) in ev.resolved.iter().flatten() {
                let ttl_ns = u64::from(*ttl).saturating_mul(1_000_000_000);
                let keep = ttl_ns.clamp(ns(self.cfg.name_ttl_min), ns(self.cfg.name_ttl_max));
                let exp = ev.ts_ns.saturating_add(keep);
                // A re-learnt name moves to the back, with its new expiry.
                self.names
                    .insert((ev.client, *addr), (name.clone(), exp, NameSource::Dns));
            }
            self.trim_names(ev.ts_ns);
        }
    }

    fn nxdomain(&mut self, ev: &DnsEvent, out: &mut impl FnMut(DnsOutput)) {
        self.stats.nxdomains += 1;
        let name = ev.qname.as_bytes();
        // Allowlisted names, and the failures every search list produces (a Kubernetes
        // pod's `<name>.<ns>.svc.cluster.local`, `<name>.<corp suffix>`), are no burst.
        if self.allowed(name) || self.internal.iter().any(|s| under(name, s)) {
            return;
        }
        if embedded_name(split(name).subdomain).is_some() {
            return; // counted as a search retry when its query was scored
        }
        if self.clients.to_back(&ev.client).is_none()
            && self.clients.len() >= self.cfg.pair_capacity
        {
            // Full: expire idle clients from the front (each popped once), else refuse.
            let horizon = ev.ts_ns.saturating_sub(ns(self.cfg.nxdomain_window));
            while self
                .clients
                .front()
                .is_some_and(|(_, c)| c.last_ns < horizon)
            {
                self.visited += 1;
                self.clients.pop_front();
            }
            if self.clients.len() >= self.cfg.pair_capacity {
                self.visited += 1;
                self.stats.nx_clients_dropped += 1;
                return;
            }
        }
        let epoch = ev.ts_ns / self.nx_bucket_ns;
        let c = self.clients.entry(ev.client).or_insert_with(|| Nx {
            window: Window::default(),
            last_ns: 0,
            last_alert: None,
            samples: VecDeque::with_capacity(SAMPLES),
        });
        c.last_ns = ev.ts_ns;
        let b = c.window.bucket(epoch, ev.ts_ns);
        b.queries = b.queries.saturating_add(1);
        push_sample(&mut c.samples, name);
        let t = c.window.totals(epoch);
        let n = t.queries;
        if n <= u64::from(self.cfg.nxdomain_threshold) {
            return;
        }
        if c.last_alert
            .is_some_and(|t| ev.ts_ns < t.saturating_add(self.suppress_ns))
        {
            return;
        }
        c.last_alert = Some(ev.ts_ns);
        let client = ip(ev.client, ev.ipv6);
        self.stats.alerts += 1;
        out(DnsOutput::Alert(DnsAlert {
            id: format!("nxdomain_burst-{client}-{}", ev.ts_ns),
            ts_ns: ev.ts_ns,
            detector: Detector::NxdomainBurst,
            reason: "nxdomain_burst",
            client,
            domain: String::new(),
            queries: 0,
            unique_subdomains: 0,
            suspicious_subdomains: 0,
            encoding: Encoding::None,
            encoded_subdomains: 0,
            tunnel_type_queries: 0,
            label_length: 0,
            score: PairScore::default(),
            nxdomains: n,
            observed_s: ev.ts_ns.saturating_sub(t.first_ns.min(ev.ts_ns)) as f64 / 1e9,
            worst_query: String::new(),
            worst_score: Score::default(),
            samples: c.samples.iter().cloned().collect(),
        }));
    }

    fn expire_pending(&mut self, now_ns: u64, out: &mut impl FnMut(DnsOutput)) {
        let timeout = ns(self.cfg.transaction_timeout);
        while self
            .pending
            .front()
            .is_some_and(|(_, r)| r.ts_ns.saturating_add(timeout) <= now_ns)
        {
            if !self.pop_pending(out) {
                break;
            }
        }
    }

    /// Writes out the oldest pending query as unanswered. False when none is left.
    fn pop_pending(&mut self, out: &mut impl FnMut(DnsOutput)) -> bool {
        let Some((_, r)) = self.pending.pop_front() else {
            return false;
        };
        self.visited += 1;
        self.stats.unanswered += 1;
        out(DnsOutput::Record(r));
        true
    }

    /// End of input: every pending query is written out, unanswered.
    pub fn finish(&mut self, out: &mut impl FnMut(DnsOutput)) {
        while self.pop_pending(out) {}
    }
}

impl super::snapshot::Restore for DnsAnalyser {
    fn checked(mut self) -> Result<Self, String> {
        self.pairs = self.pairs.checked(|p: &Pair| {
            if p.names.len() > EXACT || p.samples.len() > SAMPLES {
                return Err(format!(
                    "pair {:?} holds more names than a pair can",
                    p.domain
                ));
            }
            Ok(())
        })?;
        if self.clients.values().any(|c| c.samples.len() > SAMPLES) {
            return Err("an NXDOMAIN window holds more samples than it can".into());
        }
        Ok(self)
    }

    fn adopt(&mut self, restored: Self) {
        let DnsAnalyser {
            cfg: _,
            params: _,
            bucket_ns: _,
            nx_bucket_ns: _,
            suppress_ns: _,
            pairs,
            hasher: _,
            domain_key,
            clients,
            names,
            pending,
            allow: _,
            internal: _,
            visited,
            records: _,
            stats,
        } = restored;
        self.pairs.adopt(pairs);
        self.domain_key = domain_key;
        self.clients = clients;
        self.names = names;
        self.pending = pending;
        self.visited = visited;
        self.stats = stats;
    }
}

fn tx_key(ev: &DnsEvent) -> TxKey {
    TxKey {
        client: ev.client,
        client_port: ev.client_port,
        server: ev.server,
        server_port: ev.server_port,
        proto: ev.proto,
        id: ev.id,
    }
}

/// Appends `name` (escaped) to a ring of at most [`SAMPLES`] names, reusing the buffer of
/// the one that leaves.
fn push_sample(samples: &mut std::collections::VecDeque<String>, name: &[u8]) {
    let mut s = if samples.len() == SAMPLES {
        samples.pop_front().unwrap_or_default()
    } else {
        String::new()
    };
    s.clear();
    text::escape_into(&mut s, name);
    samples.push_back(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::extract::{NameBuf, ARENA, MAX_ANSWERS, MAX_RESOLVED};
    use crate::gen::tunnel_name;

    const SEC: u64 = 1_000_000_000;

    fn event(ts_ns: u64, client: u32, id: u16, qname: &str) -> DnsEvent {
        DnsEvent {
            ts_ns,
            flow_id: 1,
            proto: 17,
            ipv6: false,
            client: Addr::v4(client.to_be_bytes()),
            client_port: 40_000,
            server: Addr::v4([192, 0, 2, 53]),
            server_port: 53,
            malformed: None,
            damage: None,
            id,
            response: false,
            opcode: 0,
            rcode: 0,
            flags: 0,
            has_question: true,
            qname: NameBuf::from_text(qname),
            qtype: 1,
            qclass: 1,
            ancount: 0,
            answers: [None; MAX_ANSWERS],
            arena: [0; ARENA],
            resolved: [None; MAX_RESOLVED],
        }
    }

    fn analyser(f: impl FnOnce(&mut DnsConfig)) -> DnsAnalyser {
        let mut cfg = DnsConfig::default();
        f(&mut cfg);
        DnsAnalyser::new(&cfg)
    }

    /// Windows: a flood of new domains on a full table evicts the idlest one-query pair at
    /// O(1) per query; once the windows are idle, each new one expires the idlest instead,
    /// and that is not counted as an eviction.
    #[test]
    fn pair_windows_evict_or_expire_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| {
            c.pair_capacity = cap;
            c.client_share = 1.0;
        });
        a.set_records(false);
        let n = 20_000u64;
        for i in 0..n {
            a.on_event(&event(SEC, 1, 0, &format!("x.d{i}.com")), &mut |_| {});
            assert!(a.pairs.len() <= cap);
        }
        let cold = PairEvictions {
            cold: n - cap as u64,
            ..PairEvictions::default()
        };
        assert_eq!(a.stats.pairs_evicted, cold);
        assert_eq!(a.tables()[0], (cap as u64, cap as u64, n - cap as u64));
        let window = ns(a.cfg.window);
        for i in 0..n {
            let ts = 2 * window + i * window;
            a.on_event(&event(ts, 2, 0, &format!("y.e{i}.com")), &mut |_| {});
            assert!(a.pairs.len() <= cap);
        }
        assert_eq!(a.stats.pairs_evicted, cold, "idle windows made room");
        // Every pair of both phases is still held, expired or evicted.
        assert_eq!(a.pairs.expired + a.pairs.len() as u64, n + cap as u64);
        let visited = a.visited + a.pairs.visited;
        assert!(visited <= 5 * 2 * n, "visited {visited}");
    }

    /// The pair of `client` and `domain`, and the epoch of `ts`.
    fn pair_of<'a>(a: &'a mut DnsAnalyser, client: u32, domain: &str) -> &'a Pair {
        let key = (
            Addr::v4(client.to_be_bytes()),
            a.domain_key.hash(domain.as_bytes()),
        );
        let slot = a.pairs.touch(&key, 0).expect("pair held");
        a.pairs.get(slot).expect("slot")
    }

    fn alerts_of(a: &mut DnsAnalyser, events: impl Iterator<Item = DnsEvent>) -> Vec<DnsAlert> {
        let mut v = Vec::new();
        for ev in events {
            a.on_event(&ev, &mut |o| {
                if let DnsOutput::Alert(x) = o {
                    v.push(x);
                }
            });
        }
        v
    }

    /// Issue 14: a client repeating one odd name adds queries, never unique or suspicious
    /// subdomains; six distinct ones alert, and the alert counts each once.
    #[test]
    fn a_repeated_name_is_one_unique_subdomain() {
        let mut a = analyser(|_| {});
        a.set_records(false);
        let same = (0..20u64).map(|i| event(SEC + i * SEC, 1, 0, &tunnel_name(0)));
        assert!(alerts_of(&mut a, same).is_empty());
        let epoch = 20 * SEC / a.bucket_ns;
        let p = pair_of(&mut a, 1, "exfil-c2.net");
        let c = p.counts(epoch);
        assert_eq!((c.unique, c.suspicious), (1, 1));
        assert_eq!(Tier::of(p.queries, p.suspicious), Tier::Warm, "not hot");
        assert_eq!(
            a.stats.suspicious, 20,
            "each query is still counted as suspicious"
        );
        // Five more distinct names, each asked twice: the 6th unique one alerts.
        let more = (1..6u32).flat_map(|i| {
            let ts = 30 * SEC + u64::from(i) * SEC;
            [
                event(ts, 1, 0, &tunnel_name(i)),
                event(ts + 1, 1, 0, &tunnel_name(i)),
            ]
        });
        let got = alerts_of(&mut a, more);
        assert_eq!(got.len(), 1, "{got:?}");
        let x = &got[0];
        assert_eq!(
            (x.queries, x.unique_subdomains, x.suspicious_subdomains),
            (20 + 4 * 2 + 1, 6, 6)
        );
        assert_eq!(
            x.ts_ns,
            31 * SEC + 4 * SEC,
            "on the first query of the 6th name"
        );
        assert!((x.observed_s - 34.0).abs() < 1e-9, "{}", x.observed_s);
        assert!((x.score.uniqueness - 6.0 / 29.0).abs() < 1e-9);
    }

    /// Unique subdomains are counted exactly up to EXACT; beyond, the bitmap estimate.
    /// Names leave the count when they leave the window.
    #[test]
    fn unique_counts_are_exact_then_estimated_and_slide() {
        let mut a = analyser(|c| c.max_queries = 100_000);
        a.set_records(false);
        let names = |n: u32, t: u64| {
            (0..n).flat_map(move |i| {
                let q = format!("host{i}.example.com");
                [
                    event(t + u64::from(i), 1, 0, &q),
                    event(t + u64::from(i) + 1, 1, 0, &q),
                ]
            })
        };
        assert!(alerts_of(&mut a, names(EXACT as u32, SEC)).is_empty());
        let epoch = SEC / a.bucket_ns;
        let p = pair_of(&mut a, 1, "example.com");
        assert_eq!(p.counts(epoch).unique, EXACT as u64);
        assert_eq!(p.overflow_epoch, None);
        assert!(alerts_of(&mut a, names(300, 2 * SEC)).is_empty());
        let epoch = 2 * SEC / a.bucket_ns;
        let p = pair_of(&mut a, 1, "example.com");
        assert!(p.overflow_epoch.is_some());
        let est = p.window.totals(epoch).unique;
        // 300 distinct names; linear counting at this load is good to about 4% (1 sigma).
        assert!((270..=330).contains(&est), "{est}");
        // Five suspicious names now and five more six minutes later: never six in a
        // window, no alert.
        let mut b = analyser(|_| {});
        b.set_records(false);
        let early = (0..5u32).map(|i| event(SEC + u64::from(i), 1, 0, &tunnel_name(i)));
        let late = (5..10u32).map(|i| event(361 * SEC + u64::from(i), 1, 0, &tunnel_name(i)));
        assert!(alerts_of(&mut b, early.chain(late)).is_empty());
    }

    /// Internal suffixes are counted, never windowed; search retries are windowed but not
    /// suspicious, even with a tunnel-looking left part under a fake registrable name.
    #[test]
    fn internal_names_and_search_retries_are_no_candidates() {
        let mut a = analyser(|_| {});
        a.set_records(false);
        let k8s = (0..40u32).map(|i| {
            let q = format!(
                "{}.default.svc.cluster.local",
                tunnel_name(i).replace(".exfil-c2.net", ".com")
            );
            event(SEC + u64::from(i), 1, 0, &q)
        });
        assert!(alerts_of(&mut a, k8s).is_empty());
        assert_eq!((a.stats.internal, a.pairs.len()), (40, 0));
        let retries =
            (0..10u64).map(|i| event(SEC + i, 2, 0, "upload.wikimedia.org.ncsa.uiuc.edu"));
        assert!(alerts_of(&mut a, retries).is_empty());
        assert_eq!((a.stats.search_retries, a.stats.suspicious), (10, 0));
        // Data in front of a fake `x.com` is still data.
        let hidden = (0..6u32).map(|i| {
            let data = tunnel_name(i).replace(".exfil-c2.net", "");
            event(SEC + u64::from(i), 3, 0, &format!("{data}.x.com.evil.net"))
        });
        let got = alerts_of(&mut a, hidden);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].domain, "evil.net");
    }

    /// Issue 12, item 5: 40 000 lookups of distinct domains in 10 s fill the default table
    /// (32 768 pairs) by 8.2 s; a 60-query tunnel that starts at 8.5 s must still alert,
    /// whether the flood comes from another host, from many hosts, or from the tunnelling
    /// host itself, and the evictions are counted exactly. (The table used to refuse every
    /// new pair once full: the tunnel was never tracked, and nothing said so.)
    #[test]
    fn a_flood_of_distinct_domains_does_not_blind_the_tunnel_detector() {
        const FLOOD: u32 = 40_000;
        const TUNNEL: u32 = 60;
        let cap = DnsConfig::default().pair_capacity as u64;
        assert_eq!(cap, 32_768);
        let share = 4_096; // 1/8 of the capacity
        let tunnel_host = 5u32;
        // (flood hosts, tunnel host, client_share, expected evictions)
        let cases = [
            (
                "another host",
                vec![7u32],
                0.125,
                PairEvictions {
                    client_share: u64::from(FLOOD) - share,
                    ..PairEvictions::default()
                },
            ),
            (
                "another host, no per-client share",
                vec![7],
                1.0,
                PairEvictions {
                    cold: u64::from(FLOOD) + 1 - cap,
                    ..PairEvictions::default()
                },
            ),
            (
                "sixteen hosts",
                (100..116).collect(),
                0.125,
                PairEvictions {
                    cold: u64::from(FLOOD) + 1 - cap,
                    ..PairEvictions::default()
                },
            ),
            (
                "the tunnelling host itself",
                vec![tunnel_host],
                0.125,
                PairEvictions {
                    client_share: u64::from(FLOOD) + 1 - share,
                    ..PairEvictions::default()
                },
            ),
        ];
        for (what, hosts, fraction, evicted) in cases {
            let mut a = analyser(|c| c.client_share = fraction);
            a.set_records(false);
            let mut events: Vec<(u64, u32, String)> = (0..FLOOD)
                .map(|i| {
                    let ts = SEC + u64::from(i) * 10 * SEC / u64::from(FLOOD);
                    let host = hosts[i as usize % hosts.len()];
                    (ts, host, format!("www.d{i}.com"))
                })
                .collect();
            events.extend((0..TUNNEL).map(|i| {
                let ts = SEC + 8_500_000_000 + u64::from(i) * 25_000_000;
                (ts, tunnel_host, tunnel_name(i))
            }));
            events.sort_by_key(|e| e.0);
            let mut alerts = Vec::new();
            for (ts, host, name) in &events {
                a.on_event(&event(*ts, *host, 0, name), &mut |o| {
                    if let DnsOutput::Alert(x) = o {
                        alerts.push(x);
                    }
                });
            }
            assert_eq!(alerts.len(), 1, "{what}: {alerts:?}");
            let x = &alerts[0];
            assert_eq!(
                (x.detector, x.reason, x.domain.as_str()),
                (Detector::DnsTunnel, "suspicious_subdomains", "exfil-c2.net"),
                "{what}"
            );
            assert_eq!(x.client, IpAddr::from(tunnel_host.to_be_bytes()), "{what}");
            assert_eq!((x.queries, x.suspicious_subdomains), (6, 6), "{what}");
            assert_eq!(x.encoding, Encoding::Base32, "{what}");
            assert_eq!(a.stats.pairs_evicted, evicted, "{what}");
            assert_eq!(a.pairs.expired, 0, "{what}: nothing was idle");
            assert_eq!(
                a.tables()[0],
                (
                    cap.min(u64::from(FLOOD) + 1 - evicted.total()),
                    cap,
                    evicted.total()
                ),
                "{what}"
            );
        }
    }

    /// NXDOMAIN windows: a flood of new clients on a full table of live windows is refused
    /// (and counted) at O(1) per response; once the windows are idle, each new client
    /// expires the idlest from the front, which is not counted.
    #[test]
    fn nxdomain_windows_refuse_or_expire_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| c.pair_capacity = cap);
        a.set_records(false);
        let n = 20_000u32;
        let window = ns(a.cfg.nxdomain_window);
        let nx = |ts: u64, client: u32| {
            let mut ev = event(ts, client, 0, "nope.example.com");
            ev.response = true;
            ev.rcode = 3;
            ev
        };
        for i in 0..n {
            a.on_event(&nx(SEC, i), &mut |_| {});
            assert!(a.clients.len() <= cap);
        }
        assert_eq!(a.stats.nx_clients_dropped, u64::from(n) - cap as u64);
        assert_eq!(
            a.tables()[1],
            (cap as u64, cap as u64, u64::from(n) - cap as u64)
        );
        for i in 0..n {
            let ts = 2 * window + u64::from(i) * window;
            a.on_event(&nx(ts, n + i), &mut |_| {});
            assert!(a.clients.len() <= cap);
        }
        assert_eq!(a.stats.nx_clients_dropped, u64::from(n) - cap as u64);
        assert!(a.visited <= 2 * u64::from(n), "visited {}", a.visited);
    }

    #[test]
    fn a_dns_answer_in_force_wins_over_an_sni_which_fills_in_otherwise() {
        let mut a = analyser(|_| {});
        a.set_records(false);
        let client = Addr::v4([10, 0, 0, 5]);
        let (cdn, other) = (Addr::v4([198, 51, 100, 7]), Addr::v4([198, 51, 100, 8]));
        let ip = |x: Addr| x.to_ip(false);
        // An answer with TTL 60 s is kept `name_ttl_min` (300 s).
        let mut ev = event(10 * SEC, 0x0a00_0005, 7, "cdn.example.com");
        ev.response = true;
        ev.resolved[0] = Some((cdn, false, 60));
        a.on_event(&ev, &mut |_| {});
        let dns = Some(("cdn.example.com", NameSource::Dns));
        assert_eq!(a.fqdn_source(ip(client), ip(cdn), 20 * SEC), dns);
        // A fronting SNI while the answer is in force: the looked-up name stays.
        a.learn(client, cdn, b"Front.Example.NET", 20 * SEC, NameSource::Sni);
        assert_eq!(a.fqdn_source(ip(client), ip(cdn), 21 * SEC), dns);
        assert_eq!(a.fqdn_source(ip(client), ip(cdn), 310 * SEC), dns);
        // Once it has run out, the SNI names the server (lower case), `name_ttl_max`.
        assert_eq!(a.fqdn_source(ip(client), ip(cdn), 311 * SEC), None);
        a.learn(
            client,
            cdn,
            b"Front.Example.NET",
            400 * SEC,
            NameSource::Sni,
        );
        let sni = Some(("front.example.net", NameSource::Sni));
        assert_eq!(a.fqdn_source(ip(client), ip(cdn), 400 * SEC), sni);
        assert_eq!(
            a.fqdn_source(ip(client), ip(cdn), (400 + 86_400) * SEC),
            sni
        );
        assert_eq!(
            a.fqdn_source(ip(client), ip(cdn), (401 + 86_400) * SEC),
            None
        );
        // No answer ever: an SNI fills in, a later Host replaces it (neither outranks the
        // other), and a DNS answer replaces both.
        assert_eq!(a.fqdn_source(ip(client), ip(other), 500 * SEC), None);
        a.learn(
            client,
            other,
            b"upload.example.org",
            500 * SEC,
            NameSource::Sni,
        );
        assert_eq!(
            a.fqdn_source(ip(client), ip(other), 500 * SEC),
            Some(("upload.example.org", NameSource::Sni))
        );
        a.learn(
            client,
            other,
            b"www.example.org",
            510 * SEC,
            NameSource::HttpHost,
        );
        assert_eq!(
            a.fqdn_source(ip(client), ip(other), 510 * SEC),
            Some(("www.example.org", NameSource::HttpHost))
        );
        let mut ev = event(520 * SEC, 0x0a00_0005, 8, "api.example.org");
        ev.response = true;
        ev.resolved[0] = Some((other, false, 600));
        a.on_event(&ev, &mut |_| {});
        assert_eq!(
            a.fqdn_source(ip(client), ip(other), 520 * SEC),
            Some(("api.example.org", NameSource::Dns))
        );
        // Another client's SNI teaches nothing about this one.
        a.learn(
            Addr::v4([10, 0, 0, 6]),
            cdn,
            b"x.example",
            600 * SEC,
            NameSource::Sni,
        );
        assert_eq!(
            a.fqdn_source(ip(client), ip(cdn), 600 * SEC),
            Some(("front.example.net", NameSource::Sni))
        );
    }

    #[test]
    fn name_map_drops_the_oldest_name_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| c.name_map_capacity = cap);
        a.set_records(false);
        let n = 20_000u32;
        for i in 0..n {
            let mut ev = event(SEC + u64::from(i), 1, 0, "cdn.example.com");
            ev.response = true;
            ev.resolved[0] = Some((Addr::v4(i.to_be_bytes()), false, 300));
            a.on_event(&ev, &mut |_| {});
            assert!(a.names.len() <= cap);
        }
        assert_eq!(a.stats.names_evicted, u64::from(n) - cap as u64);
        let newest = IpAddr::from((n - 1).to_be_bytes());
        let client = IpAddr::from(1u32.to_be_bytes());
        assert_eq!(
            a.fqdn(client, newest, SEC + u64::from(n)),
            Some("cdn.example.com")
        );
        assert_eq!(a.fqdn(client, IpAddr::from([0, 0, 0, 0]), SEC), None);
        assert!(a.visited <= u64::from(n), "visited {}", a.visited);
    }

    #[test]
    fn pending_transactions_go_oldest_first_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| c.transaction_capacity = cap);
        let n = 20_000u32;
        let mut written = Vec::new();
        for i in 0..n {
            let ev = event(SEC + u64::from(i), 1, (i % 60_000) as u16, "a.example.com");
            a.on_event(&ev, &mut |o| {
                if let DnsOutput::Record(r) = o {
                    written.push(r.id);
                }
            });
            assert!(a.pending.len() <= cap);
        }
        assert_eq!(a.stats.transactions_evicted, u64::from(n) - cap as u64);
        assert_eq!(
            a.tables()[3],
            (cap as u64, cap as u64, u64::from(n) - cap as u64)
        );
        assert!(written.windows(2).all(|w| w[0] < w[1]), "query order");
        // Past the timeout, each query writes out the one before it.
        let timeout = ns(a.cfg.transaction_timeout);
        for i in 0..n {
            let ev = event(timeout * (u64::from(i) + 2), 2, 1, "b.example.com");
            a.on_event(&ev, &mut |_| {});
            assert!(a.pending.len() <= cap);
        }
        assert_eq!(a.stats.transactions_evicted, u64::from(n) - cap as u64);
        assert!(
            a.visited <= 2 * u64::from(n) + cap as u64,
            "visited {}",
            a.visited
        );
    }

    /// The records of DNS messages given as bytes, through the worker's extractor.
    fn records_of(messages: &[Vec<u8>]) -> Vec<DnsRecord> {
        use crate::decode::{proto, PacketMeta};
        let mut x = crate::dns::DnsExtractor::new(true, &[53]);
        let mut a = analyser(|_| {});
        let mut out = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let meta = PacketMeta {
                proto: proto::UDP,
                src: Addr::v4([192, 0, 2, 1]),
                dst: Addr::v4([192, 0, 2, 53]),
                sport: 40_000,
                dport: 53,
                ..PacketMeta::default()
            };
            x.datagram(&meta, m, SEC + i as u64, 1, &mut |ev| {
                a.on_event(&ev, &mut |o| {
                    if let DnsOutput::Record(r) = o {
                        out.push(r);
                    }
                });
            });
        }
        out
    }

    /// A response (id 7, RD RA) to one question, with the given answer records.
    fn response(qname: &[u8], qtype: u16, rcode: u8, answers: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0, 7, 0x81, 0x80 | rcode, 0, 1];
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(qname);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        for a in answers {
            m.extend_from_slice(a);
        }
        m
    }

    /// An answer owned by the question name (pointer to offset 12).
    fn answer(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = vec![0xc0, 12];
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    #[test]
    fn query_names_are_lowercased_escaped_and_keep_their_original_case() {
        // A 0x20-randomised name with a binary label (iodine-style bytes) and a backslash.
        let name = b"\x03WwW\x03\xbc\\\x00\x03Com\x00";
        let r = records_of(&[response(name, 1, 0, &[answer(1, &[192, 0, 2, 9])])]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].query, "www.\\xbc\\\\\\x00.com");
        assert_eq!(r[0].original_query, "WwW.\\xbc\\\\\\x00.Com");
        assert_eq!(r[0].answers, ["192.0.2.9"]);
    }

    #[test]
    fn the_root_is_written_as_a_dot() {
        // `. NS` (a resolver's priming query), answered by a.root-servers.net; and a null MX
        // (RFC 7505): preference 0, exchange `.`.
        let r = records_of(&[
            response(
                &[0],
                2,
                0,
                &[answer(2, b"\x01a\x0croot-servers\x03net\x00")],
            ),
            response(b"\x07example\x00", 15, 0, &[answer(15, &[0, 0, 0])]),
        ]);
        assert_eq!(
            (r[0].query.as_str(), r[0].original_query.as_str()),
            (".", ".")
        );
        assert_eq!(r[0].answers, ["a.root-servers.net"]);
        assert_eq!(r[1].answers, ["."]);
    }

    #[test]
    fn txt_answers_are_decoded_and_escaped() {
        let mut rdata = vec![7];
        rdata.extend_from_slice(b"v=spf1 ");
        rdata.extend_from_slice(&[3, b'a', 0xff, b'\\']);
        let r = records_of(&[response(b"\x07example\x00", 16, 0, &[answer(16, &rdata)])]);
        assert_eq!(r[0].answers, ["TXT 7 v=spf1  TXT 3 a\\xff\\\\"]);
    }

    #[test]
    fn long_txt_is_cut_and_says_so() {
        // Three 255-byte strings (a tunnel's downstream): the first 512 bytes are kept.
        let mut rdata = Vec::new();
        for _ in 0..3 {
            rdata.push(255);
            rdata.extend_from_slice(&[b'x'; 255]);
        }
        let r = records_of(&[response(b"\x01t\x00", 16, 0, &[answer(16, &rdata)])]);
        let a = &r[0].answers[0];
        let x = "x".repeat(255);
        assert_eq!(*a, format!("TXT 255 {x} TXT 255 {x} ... (768 bytes)"));
    }

    #[test]
    fn null_and_unknown_rdata_as_bounded_hex() {
        // iodine's downstream is NULL rdata; 65534 is BIND's private signing-state type.
        let null: Vec<u8> = (0..100u8).collect();
        let r = records_of(&[response(
            b"\x01t\x00",
            10,
            0,
            &[
                answer(10, &null),
                answer(65534, &[5, 0, 1]),
                answer(6, &[0; 22]),
            ],
        )]);
        let hex: String = (0..64u8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            r[0].answers,
            [
                format!("NULL 100 bytes {hex}..."),
                "TYPE65534 3 bytes 050001".to_string(),
                "SOA 22 bytes".to_string(),
            ]
        );
    }

    #[test]
    fn a_full_arena_falls_back_to_the_length() {
        // Five 300-byte TXT records: the 1024-byte arena holds three, 124 bytes of the
        // fourth and nothing of the fifth, which is then logged by its length.
        let mut rdata = vec![255];
        rdata.extend_from_slice(&[b'y'; 255]);
        rdata.push(43);
        rdata.extend_from_slice(&[b'y'; 43]);
        let answers: Vec<Vec<u8>> = (0..5).map(|_| answer(16, &rdata)).collect();
        let r = records_of(&[response(b"\x01t\x00", 16, 0, &answers)]);
        let a = &r[0].answers;
        assert_eq!(a.len(), 5);
        assert!(!a[0].contains("..."), "{}", a[0]);
        assert!(!a[2].contains("..."), "{}", a[2]);
        assert!(a[3].ends_with(" ... (300 bytes)"), "{}", a[3]);
        assert_eq!(a[4], "TXT 300 bytes");
    }
}
