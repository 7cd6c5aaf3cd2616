//! Incidents: the findings of every detector about one exfiltration, joined into one record
//! that is announced when it opens, when it escalates and when it closes.
//!
//! A finding is keyed by its source (the home host) and its peer: the destination address,
//! the registered domain of the destination's name (so a DNS tunnel and an upload to the
//! same domain meet), or, for a finding about a source alone (a host's data-leak total, an
//! NXDOMAIN burst), the source's most recent open incident. Each incident keeps bounded
//! lists (destinations, names, flows, slices, finding ids) and the per-flow byte counts it
//! learns from findings, volume reports and flow ends, so its totals are current without
//! double counting.
//!
//! Announcements: `opened` at the first finding (the packet that crossed a threshold: no
//! delay added); `escalated` at once when the severity or a large-transfer tier rises, and
//! after [`IncidentConfig::hold`] for lesser news (a new detector, a total that doubled),
//! several of which fold into one line; `closed` when none of its flows is open and nothing
//! joined for [`IncidentConfig::idle`], at the end of input, when the window passed, or when
//! the table is full (the idlest goes).
//!
//! No table is scanned per event: incidents sit in a linked map in order of their next check
//! (activity moves one to the back), held updates in a queue in due order; expiry pops from
//! the fronts.

use super::dns::DnsAlert;
use super::leak::LeakAlert;
use super::Finding;
use crate::config::IncidentConfig;
use crate::decode::proto;
use crate::detect::{Alert, Detector};
use crate::event::Volume;
use crate::flow::{FlowRecord, FlowTuple};
use hashbrown::HashMap;
use hashlink::LinkedHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;

/// Destinations, names and slices an incident lists (the rest are counted).
pub const MAX_LIST: usize = 16;
/// Flows whose bytes an incident tracks one by one (more are counted in `flows_untracked`).
pub const MAX_FLOWS: usize = 64;
/// Finding ids an incident lists.
pub const MAX_FINDINGS: usize = 32;

/// How bad an incident is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Severity {
    /// Worth a look.
    #[default]
    Low,
    /// A ticket.
    Medium,
    /// A ticket today.
    High,
    /// A ticket now.
    Critical,
}

impl Severity {
    /// Every severity, in rising order (metric labels).
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Lowercase name (JSON, metric label).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of a score (0..=100).
    pub fn of_score(score: u8) -> Severity {
        match score {
            85.. => Severity::Critical,
            65..=84 => Severity::High,
            40..=64 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    /// RFC 5424 severity for syslog: critical 2, high 3 (error), medium 4 (warning), low 5
    /// (notice).
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Medium => 4,
            Severity::Low => 5,
        }
    }
}

/// Which announcement a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Update {
    /// The first finding.
    Opened,
    /// It grew: see [`IncidentUpdate::escalation`].
    Escalated,
    /// It ended: see [`Incident::close_reason`].
    Closed,
}

impl Update {
    /// Every kind, in order (metric labels).
    pub const ALL: [Update; 3] = [Update::Opened, Update::Escalated, Update::Closed];

    /// Lowercase name (JSON `update`, metric label).
    pub fn name(self) -> &'static str {
        match self {
            Update::Opened => "opened",
            Update::Escalated => "escalated",
            Update::Closed => "closed",
        }
    }
}

/// Weight of one finding in the incident's score (0..=100): how much on its own it says
/// data left. A large transfer's higher tiers weigh more.
fn weight(detector: Detector, tier: u8) -> u8 {
    match detector {
        Detector::LargeTransfer => match tier {
            0 => 50,
            1 => 70,
            _ => 90,
        },
        Detector::DataLeak | Detector::DnsTunnel => 70,
        Detector::UploadBaseline => 50,
        Detector::ServiceOutlier => 45,
        Detector::CloudUpload => 50,
        Detector::LongConnection => 40,
        Detector::Asymmetry => 35,
        Detector::NxdomainBurst => 25,
    }
}

/// One detector's part in an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The detector.
    pub detector: Detector,
    /// Its findings in this incident.
    pub findings: u32,
    /// Highest tier (large transfer; 0 otherwise).
    pub tier: u8,
    /// First and last finding (ns).
    pub first_ns: u64,
    /// Last finding (ns).
    pub last_ns: u64,
    /// Id of its last finding (`/api/alerts`).
    pub last_id: String,
}

/// One flow's bytes as the incident knows them (cumulative IP bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowBytes {
    /// The flow.
    pub flow_id: u64,
    /// Home → external IP bytes so far.
    pub out_ip_bytes: u64,
    /// External → home IP bytes so far.
    pub in_ip_bytes: u64,
    /// Still open.
    pub open: bool,
    /// The flow's tuple, for its Community ID: from the finding, volume report or flow
    /// record that gave it (a per-flow data-leak finding does not; an ICMP volume report
    /// lacks the type and code); `None` until one has.
    pub tuple: Option<FlowTuple>,
}

/// The names an incident's flows sent: server names (SNI), ALPN values, JA4 and JA3
/// fingerprints, HTTP Hosts and methods (distinct, up to [`MAX_LIST`] each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientNames {
    /// TLS / QUIC server names.
    pub server_names: Vec<String>,
    /// First ALPN values.
    pub alpns: Vec<String>,
    /// JA4 fingerprints.
    pub ja4s: Vec<String>,
    /// JA3 fingerprints (MD5 hex).
    pub ja3s: Vec<String>,
    /// HTTP Host headers.
    pub http_hosts: Vec<String>,
    /// HTTP methods.
    pub http_methods: Vec<String>,
}

impl ClientNames {
    /// Adds what one flow named.
    pub fn add(&mut self, n: &crate::proto::FlowNames) {
        let text = |b: Option<&[u8]>| b.map(crate::dns::text::escape);
        for (list, v) in [
            (&mut self.server_names, text(n.server_name.get())),
            (&mut self.alpns, text(n.alpn.get())),
            (&mut self.ja4s, n.ja4.map(|j| j.as_str().to_string())),
            (&mut self.ja3s, n.ja3.map(|j| j.as_str().to_string())),
            (&mut self.http_hosts, text(n.http_host.get())),
            (&mut self.http_methods, text(n.http_method.get())),
        ] {
            if let Some(v) = v {
                push_bounded(list, v, MAX_LIST);
            }
        }
    }
}

/// Why an incident closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// Its flows ended and nothing joined for `incident.idle`.
    Idle,
    /// The input ended (replay) or the sensor stopped.
    EndOfInput,
    /// A finding came after `incident.window`: a new incident takes over.
    Window,
    /// The table was full and it was the idlest.
    Evicted,
}

impl CloseReason {
    /// Lowercase name (JSON `close_reason`).
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::EndOfInput => "end_of_input",
            CloseReason::Window => "window",
            CloseReason::Evicted => "evicted",
        }
    }
}

/// An incident as announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id: `INC-<source>-<first finding's time in ns>` (`INC-to-<destination>-...`
    /// without a source), with `-<n>` added for the n-th further incident of that source
    /// opened at the same time; the same input gives the same ids whatever the number of
    /// workers.
    pub id: String,
    /// The home host; `None` for a finding about a destination alone (a data leak grouped
    /// by destination, summed over home hosts).
    pub src: Option<IpAddr>,
    /// First activity seen (ns): the first packet of its first flow, the start of a window
    /// a finding reports, or its first finding.
    pub first_ns: u64,
    /// Last activity seen (ns): its flows' last packets and volume reports, a window's
    /// last outbound bytes, DNS findings' queries.
    pub last_ns: u64,
    /// Score 0..=100: the heaviest finding's weight plus 5 per further detector.
    pub score: u8,
    /// Severity of the score.
    pub severity: Severity,
    /// Detectors in the order they first joined.
    pub reasons: Vec<Reason>,
    /// External addresses (up to [`MAX_LIST`]).
    pub dsts: Vec<IpAddr>,
    /// Destination names and queried registered domains (up to [`MAX_LIST`]).
    pub names: Vec<String>,
    /// Flows, with their bytes (up to [`MAX_FLOWS`]).
    pub flows: Vec<FlowBytes>,
    /// Flows beyond [`MAX_FLOWS`].
    pub flows_untracked: u64,
    /// Largest outbound total a window finding reported (data leak, window asymmetry).
    pub window_out_ip_bytes: u64,
    /// ...and its inbound total.
    pub window_in_ip_bytes: u64,
    /// What its flows' first client bytes named (TLS/QUIC ClientHello, HTTP request head):
    /// each distinct field value, up to [`MAX_LIST`] each.
    pub client_names: ClientNames,
    /// Pcap slices of its flows.
    pub slice_ids: Vec<String>,
    /// Ids of its findings (up to [`MAX_FINDINGS`]; `/api/alerts`).
    pub finding_ids: Vec<String>,
    /// Findings joined.
    pub findings: u64,
    /// Why it closed (closed lines only).
    pub close_reason: Option<CloseReason>,
}

impl Incident {
    /// (outbound, inbound) IP bytes: its flows' sums, or the largest window totals reported
    /// when those are larger (a data-leak total over a day of flows no longer tracked).
    pub fn totals(&self) -> (u64, u64) {
        let out: u64 = self.flows.iter().map(|f| f.out_ip_bytes).sum();
        let inb: u64 = self.flows.iter().map(|f| f.in_ip_bytes).sum();
        if self.window_out_ip_bytes > out {
            (self.window_out_ip_bytes, self.window_in_ip_bytes)
        } else {
            (out, inb)
        }
    }

    /// Its flows still open.
    pub fn open_flows(&self) -> usize {
        self.flows.iter().filter(|f| f.open).count()
    }

    fn max_tier(&self) -> u8 {
        self.reasons
            .iter()
            .filter(|r| r.detector == Detector::LargeTransfer)
            .map(|r| r.tier)
            .max()
            .unwrap_or(0)
    }

    fn rescore(&mut self) {
        let mut best = 0u8;
        for r in &self.reasons {
            best = best.max(weight(r.detector, r.tier));
        }
        let more = u8::try_from(self.reasons.len().saturating_sub(1)).unwrap_or(u8::MAX);
        self.score = best.saturating_add(more.saturating_mul(5)).min(100);
        self.severity = Severity::of_score(self.score);
    }
}

/// What changed since the last line (escalated lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Escalation {
    /// The severity rose.
    pub severity: bool,
    /// A large-transfer tier rose.
    pub tier: bool,
    /// A detector joined.
    pub detector: bool,
    /// The outbound total at least doubled.
    pub total_doubled: bool,
}

impl Escalation {
    fn any(self) -> bool {
        self.severity || self.tier || self.detector || self.total_doubled
    }

    /// Names of what changed (JSON `escalation`).
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, n) in [
            (self.severity, "severity"),
            (self.tier, "tier"),
            (self.detector, "detector"),
            (self.total_doubled, "total_doubled"),
        ] {
            if on {
                v.push(n);
            }
        }
        v
    }
}

/// One announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentUpdate {
    /// Which.
    pub update: Update,
    /// Packet time of the announcement (ns): the finding's, or the close's.
    pub ts_ns: u64,
    /// What changed (escalated lines; also what a closing line folded in).
    pub escalation: Escalation,
    /// The incident as it stands.
    pub incident: Incident,
    /// Monotonic time the packets that opened it were read (opened lines of flow
    /// findings), for the detection-latency metric; 0 otherwise.
    pub read_mono_ns: u64,
}

/// The book's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentStats {
    /// Incidents that reached each severity, counted once per incident and severity when
    /// announced at it: one opened medium and escalated to high counts in both (indexed like
    /// `Severity::ALL`). What an alerting rule on "an incident became critical" counts.
    pub reached_by_severity: [u64; 4],
    /// Lines announced, by kind (indexed like `Update::ALL`).
    pub updates: [u64; 3],
    /// Incidents closed early because the table was full.
    pub evicted: u64,
    /// Findings joined to an incident.
    pub findings: u64,
    /// Open now.
    pub open: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Peer {
    Ip(IpAddr),
    Domain(String),
}

type Key = (IpAddr, Peer);

#[derive(Serialize, Deserialize)]
struct Entry {
    inc: Incident,
    /// Index keys pointing here (removed with it).
    keys: Vec<Key>,
    /// What the last line said: severity, tier, detectors, outbound total.
    said_severity: Severity,
    said_tier: u8,
    said_detectors: usize,
    said_out: u64,
    /// Time of the last finding (ns): `incident.window` counts from it.
    last_finding_ns: u64,
    /// News held since (ns), if any.
    held_since: Option<u64>,
    /// Packet time of the last activity (finding, volume, flow end), or of the last look
    /// that found a flow still open: the order key.
    touched_ns: u64,
    /// Packet time of the last activity alone: an idle close is stamped `idle` after it.
    active_ns: u64,
    /// Time of the last line announced: no later line is stamped earlier.
    said_ts: u64,
    /// The source the index keys are built on (the destination when there is none).
    key_src: IpAddr,
    /// Flows listed before the stage resumed from `state.dir` ([`IncidentBook::forget_flows`]):
    /// their ids were the previous process's, so a flow of this one is never matched to
    /// them.
    earlier_flows: usize,
}

/// The open incidents.
///
/// In a correlator snapshot ([`super::snapshot`]) with every field but the config.
#[derive(Serialize, Deserialize)]
pub struct IncidentBook {
    #[serde(skip)]
    cfg: IncidentConfig,
    /// Open incidents by sequence number, in order of last activity.
    #[serde(with = "super::snapshot::table")]
    open: LinkedHashMap<u64, Entry>,
    #[serde(with = "super::snapshot::table")]
    index: HashMap<Key, u64>,
    /// A source's most recent incident (for findings about a source alone).
    #[serde(with = "super::snapshot::table")]
    by_src: HashMap<IpAddr, u64>,
    /// Flow id → incident, for flows an incident tracks.
    #[serde(with = "super::snapshot::table")]
    flows: HashMap<u64, u64>,
    /// Held news: (due ns, incident); stale entries are skipped when popped.
    held: VecDeque<(u64, u64)>,
    next_seq: u64,
    /// Incidents opened at [`Self::opened_ns`] per source, so a second one of the same
    /// source at the same time gets its own id (cleared when the time moves).
    #[serde(with = "super::snapshot::table")]
    opened_here: HashMap<IpAddr, u32>,
    opened_ns: u64,
    /// The input is ending: every incident is about to close, so news is folded into the
    /// closing lines instead of announced on its own.
    closing: bool,
    /// Counters.
    pub stats: IncidentStats,
}

fn registered(name: &str) -> Option<String> {
    let n = name.trim_end_matches('.');
    if n.is_empty() {
        return None;
    }
    let d = psl::domain(n.as_bytes()).map_or(n.as_bytes(), |d| d.as_bytes());
    std::str::from_utf8(d).ok().map(str::to_ascii_lowercase)
}

fn push_bounded<T: PartialEq>(v: &mut Vec<T>, x: T, max: usize) {
    if v.len() < max && !v.contains(&x) {
        v.push(x);
    }
}

/// The parts of a finding the book needs, whatever its detector.
struct Facts<'a> {
    detector: Detector,
    ts_ns: u64,
    tier: u8,
    id: &'a str,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    names: Vec<String>,
    /// (flow id, out, in, open)
    flow: Option<FlowBytes>,
    window: Option<(u64, u64, u64, u64)>,
    slice: Option<&'a str>,
    read_mono_ns: u64,
    /// What the flow's first client bytes named (flow findings).
    client: Option<&'a crate::proto::FlowNames>,
    /// When what the finding is about began (a flow's first packet), if earlier.
    start_ns: u64,
}

fn facts_flow(a: &Alert) -> Facts<'_> {
    Facts {
        detector: a.detector,
        ts_ns: a.ts_ns,
        tier: a.tier,
        id: &a.id,
        src: Some(a.src),
        dst: Some(a.dst),
        names: a.dst_fqdn.iter().cloned().collect(),
        flow: Some(FlowBytes {
            flow_id: a.flow_id,
            out_ip_bytes: a.out.ip_bytes,
            in_ip_bytes: a.inbound.ip_bytes,
            open: true,
            tuple: Some(a.flow_tuple),
        }),
        window: None,
        slice: a.slice_id.as_deref(),
        read_mono_ns: a.read_mono_ns,
        client: a.names.as_deref(),
        start_ns: a.flow_start_ns,
    }
}

fn facts_leak(a: &LeakAlert) -> Facts<'_> {
    let (flow, window) = match a.flow_id {
        // A per-flow finding at the flow's end: its totals are the flow's.
        Some(id) => (
            Some(FlowBytes {
                flow_id: id,
                out_ip_bytes: a.total_bytes,
                in_ip_bytes: a.in_bytes,
                open: false,
                tuple: None,
            }),
            None,
        ),
        None => (
            None,
            Some((a.total_bytes, a.in_bytes, a.first_ns, a.last_ns)),
        ),
    };
    Facts {
        detector: a.detector,
        ts_ns: a.ts_ns,
        tier: 0,
        id: &a.id,
        src: a.src,
        dst: a.dst,
        names: a.fqdns.clone(),
        flow,
        window,
        slice: a.slice_id.as_deref(),
        read_mono_ns: 0,
        client: None,
        start_ns: a.first_ns,
    }
}

fn facts_dns(a: &DnsAlert) -> Facts<'_> {
    Facts {
        detector: a.detector,
        ts_ns: a.ts_ns,
        tier: 0,
        id: &a.id,
        src: Some(a.client),
        dst: None,
        names: if a.domain.is_empty() {
            Vec::new()
        } else {
            vec![a.domain.clone()]
        },
        flow: None,
        window: None,
        slice: None,
        read_mono_ns: 0,
        client: None,
        start_ns: a.ts_ns,
    }
}

impl IncidentBook {
    /// An empty book.
    pub fn new(cfg: &IncidentConfig) -> IncidentBook {
        IncidentBook {
            cfg: cfg.clone(),
            open: LinkedHashMap::new(),
            index: HashMap::new(),
            by_src: HashMap::new(),
            flows: HashMap::new(),
            held: VecDeque::new(),
            next_seq: 0,
            opened_here: HashMap::new(),
            opened_ns: 0,
            closing: false,
            stats: IncidentStats::default(),
        }
    }

    /// New settings (SIGHUP); open incidents are kept.
    pub fn reconfigure(&mut self, cfg: &IncidentConfig) {
        self.cfg = cfg.clone();
        self.requeue_held();
    }

    /// Open incidents now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// No incident is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Moves the clock: announces held news that came due and closes idle incidents, in
    /// the order they fell due — after a jump of the clock (a quiet link, a restart) an
    /// incident that went idle before its held news was due closes with that news folded
    /// in, as it would have with the clock moving smoothly.
    pub fn advance(&mut self, now_ns: u64, out: &mut impl FnMut(IncidentUpdate)) {
        let idle = dur_ns(self.cfg.idle);
        // Each look either closes the front or moves it to the back with the current time,
        // so an incident is looked at most once per call; each held entry is popped once.
        let mut looks = self.open.len();
        loop {
            let held = self
                .held
                .front()
                .map(|&(due, _)| due)
                .filter(|&d| d <= now_ns);
            let idle_at = self
                .open
                .front()
                .map(|(_, e)| e.touched_ns.saturating_add(idle))
                .filter(|&d| d <= now_ns && looks > 0);
            match (held, idle_at) {
                (None, None) => break,
                (Some(h), Some(i)) if i < h => {
                    looks -= 1;
                    self.look_idle(now_ns, out);
                }
                (Some(_), _) => self.pop_held(now_ns, out),
                (None, Some(_)) => {
                    looks -= 1;
                    self.look_idle(now_ns, out);
                }
            }
        }
    }

    /// The front of the held queue, due by `now_ns`: its news is announced, stamped when it
    /// came due. An entry the current hold does not make due yet (the hold was raised since
    /// it was queued) goes back in its place.
    fn pop_held(&mut self, now_ns: u64, out: &mut impl FnMut(IncidentUpdate)) {
        let hold = dur_ns(self.cfg.hold);
        let Some((_, seq)) = self.held.pop_front() else {
            return;
        };
        let Some(e) = self.open.get_mut(&seq) else {
            return;
        };
        let Some(since) = e.held_since else {
            return;
        };
        let due = since.saturating_add(hold);
        if due > now_ns {
            let at = self.held.partition_point(|&(d, _)| d <= due);
            self.held.insert(at, (due, seq));
            return;
        }
        let esc = news(e);
        e.held_since = None;
        if esc.any() {
            announce(e, Update::Escalated, due, esc, 0, &mut self.stats, out);
        }
    }

    /// The incident idle longest: closed if none of its flows is open, else looked at
    /// again an idle period from now.
    fn look_idle(&mut self, now_ns: u64, out: &mut impl FnMut(IncidentUpdate)) {
        let (idle, window) = (dur_ns(self.cfg.idle), dur_ns(self.cfg.window));
        let Some((&seq, e)) = self.open.front() else {
            return;
        };
        // A flow that shows nothing for `incident.window` is taken as ended: live, its
        // final record may have been shed with a full output queue (counted there), and an
        // incident must not stay open for good waiting for it.
        let stale = e.active_ns.saturating_add(window) <= now_ns;
        if e.inc.open_flows() == 0 || stale {
            // Stamped when it became idle, not when a later event noticed.
            let at = e.active_ns.saturating_add(idle);
            self.close(seq, at, CloseReason::Idle, out);
        } else if let Some(mut e) = self.open.remove(&seq) {
            // A flow is still open: look again an idle period from now.
            e.touched_ns = now_ns;
            self.open.insert(seq, e);
        }
    }

    /// Puts the held queue in the order of the current hold (after `incident.hold`
    /// changed: a reload, or a restart resumed with another config), keeping the order of
    /// entries due at the same time.
    pub(crate) fn requeue_held(&mut self) {
        let hold = dur_ns(self.cfg.hold);
        let mut seen = std::collections::HashSet::new();
        let mut q: Vec<(u64, u64)> = self
            .held
            .iter()
            .filter_map(|&(_, seq)| {
                let since = self.open.get(&seq)?.held_since?;
                seen.insert(seq)
                    .then_some((since.saturating_add(hold), seq))
            })
            .collect();
        q.sort_by_key(|&(due, _)| due);
        self.held = q.into();
    }

    /// A finding: joins or opens an incident, and announces what the rules say.
    pub fn on_finding(&mut self, f: &Finding, out: &mut impl FnMut(IncidentUpdate)) {
        let facts = match f {
            Finding::Flow(a) => facts_flow(a),
            Finding::Leak(a) => facts_leak(a),
            Finding::Dns(a) => facts_dns(a),
        };
        let Some(src) = facts.src else {
            // Grouped by destination alone (data_leak group_by = "dst"): no source to
            // join on; it opens its own incident keyed by the destination.
            if let Some(dst) = facts.dst {
                self.join(dst, None, &facts, out);
            }
            return;
        };
        self.join(src, Some(src), &facts, out);
    }

    fn keys_of(src: IpAddr, facts: &Facts<'_>) -> Vec<Key> {
        let mut keys = Vec::new();
        if let Some(d) = facts.dst {
            keys.push((src, Peer::Ip(d)));
        }
        for n in &facts.names {
            if let Some(r) = registered(n) {
                let k = (src, Peer::Domain(r));
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// Joins a finding keyed on `src` (the home host, or the destination for a finding
    /// about a destination alone) to its incident; `home`: the home host, if any.
    fn join(
        &mut self,
        src: IpAddr,
        home: Option<IpAddr>,
        facts: &Facts<'_>,
        out: &mut impl FnMut(IncidentUpdate),
    ) {
        let now = facts.ts_ns;
        self.stats.findings += 1;
        let keys = Self::keys_of(src, facts);
        let found = keys
            .iter()
            .find_map(|k| self.index.get(k).copied())
            .or_else(|| {
                if keys.is_empty() {
                    self.by_src.get(&src).copied()
                } else {
                    None
                }
            })
            .or_else(|| {
                // A source-level incident (no peer yet) takes the source's first peer.
                self.by_src
                    .get(&src)
                    .copied()
                    .filter(|s| self.open.get(s).is_some_and(|e| e.keys.is_empty()))
            });
        let window = dur_ns(self.cfg.window);
        let seq = match found {
            Some(seq)
                if self
                    .open
                    .get(&seq)
                    .is_some_and(|e| e.last_finding_ns.saturating_add(window) >= now) =>
            {
                Some(seq)
            }
            Some(seq) => {
                self.close(seq, now, CloseReason::Window, out);
                None
            }
            None => None,
        };
        let (seq, opened) = match seq {
            Some(s) => (s, false),
            None => {
                // A loop, not one close, so a capacity lowered since (a reload, a restart
                // resumed with another config) is reached; each incident closes once.
                while self.open.len() >= self.cfg.capacity.max(1) {
                    let Some((&old, _)) = self.open.front() else {
                        break;
                    };
                    self.stats.evicted += 1;
                    self.close(old, now, CloseReason::Evicted, out);
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                if now != self.opened_ns {
                    self.opened_ns = now;
                    self.opened_here.clear();
                }
                let n = self.opened_here.entry(src).or_insert(0);
                let to = if home.is_some() { "" } else { "to-" };
                let id = match *n {
                    0 => format!("INC-{to}{src}-{now}"),
                    k => format!("INC-{to}{src}-{now}-{k}"),
                };
                *n += 1;
                let inc = Incident {
                    id,
                    src: home,
                    first_ns: now,
                    last_ns: now,
                    score: 0,
                    severity: Severity::Low,
                    reasons: Vec::new(),
                    dsts: Vec::new(),
                    names: Vec::new(),
                    flows: Vec::new(),
                    flows_untracked: 0,
                    window_out_ip_bytes: 0,
                    window_in_ip_bytes: 0,
                    client_names: ClientNames::default(),
                    slice_ids: Vec::new(),
                    finding_ids: Vec::new(),
                    findings: 0,
                    close_reason: None,
                };
                self.open.insert(
                    seq,
                    Entry {
                        inc,
                        keys: Vec::new(),
                        said_severity: Severity::Low,
                        said_tier: 0,
                        said_detectors: 0,
                        said_out: 0,
                        last_finding_ns: now,
                        held_since: None,
                        touched_ns: now,
                        active_ns: now,
                        said_ts: now,
                        key_src: src,
                        earlier_flows: 0,
                    },
                );
                (seq, true)
            }
        };
        self.by_src.insert(src, seq);
        for k in keys {
            if let Some(e) = self.open.get_mut(&seq) {
                if e.keys.len() < 2 * MAX_LIST && !e.keys.contains(&k) {
                    e.keys.push(k.clone());
                    self.index.insert(k, seq);
                }
            }
        }
        if let Some(fb) = facts.flow {
            self.track_flow(seq, fb, false);
        }
        let Some(mut e) = self.open.remove(&seq) else {
            return;
        };
        e.touched_ns = e.touched_ns.max(now);
        e.active_ns = e.active_ns.max(now);
        e.last_finding_ns = e.last_finding_ns.max(now);
        let inc = &mut e.inc;
        inc.findings += 1;
        if facts.window.is_none() {
            inc.last_ns = inc.last_ns.max(now);
        }
        if facts.start_ns > 0 {
            inc.first_ns = inc.first_ns.min(facts.start_ns);
        }
        push_bounded(&mut inc.finding_ids, facts.id.to_string(), MAX_FINDINGS);
        if let Some(d) = facts.dst {
            push_bounded(&mut inc.dsts, d, MAX_LIST);
        }
        for n in &facts.names {
            push_bounded(&mut inc.names, n.clone(), MAX_LIST);
        }
        if let Some(s) = facts.slice {
            push_bounded(&mut inc.slice_ids, s.to_string(), MAX_LIST);
        }
        if let Some(n) = facts.client {
            inc.client_names.add(n);
        }
        if let Some((o, i, first, last)) = facts.window {
            inc.window_out_ip_bytes = inc.window_out_ip_bytes.max(o);
            inc.window_in_ip_bytes = inc.window_in_ip_bytes.max(i);
            if first > 0 {
                inc.first_ns = inc.first_ns.min(first);
            }
            inc.last_ns = inc.last_ns.max(last);
        }
        match inc
            .reasons
            .iter_mut()
            .find(|r| r.detector == facts.detector)
        {
            Some(r) => {
                r.findings += 1;
                r.tier = r.tier.max(facts.tier);
                r.last_ns = now;
                r.last_id = facts.id.to_string();
            }
            None => inc.reasons.push(Reason {
                detector: facts.detector,
                findings: 1,
                tier: facts.tier,
                first_ns: now,
                last_ns: now,
                last_id: facts.id.to_string(),
            }),
        }
        inc.rescore();
        if opened {
            announce(
                &mut e,
                Update::Opened,
                now,
                Escalation::default(),
                facts.read_mono_ns,
                &mut self.stats,
                out,
            );
        } else {
            let esc = news(&e);
            if (esc.severity || esc.tier) && !self.closing {
                e.held_since = None;
                announce(&mut e, Update::Escalated, now, esc, 0, &mut self.stats, out);
            } else if esc.any() && e.held_since.is_none() {
                e.held_since = Some(now);
                // In due order: findings do not come in time order (a window's findings
                // are fed at their own, earlier times; live workers interleave). In order
                // this is the back: O(1).
                let due = now.saturating_add(dur_ns(self.cfg.hold));
                let at = self.held.partition_point(|&(d, _)| d <= due);
                self.held.insert(at, (due, seq));
            }
        }
        self.open.insert(seq, e);
        self.stats.open = self.open.len() as u64;
    }

    /// Records a flow's bytes in an incident. `first`: this is the flow's first report, so
    /// a flow beyond [`MAX_FLOWS`] is counted in `flows_untracked` once, not per report.
    fn track_flow(&mut self, seq: u64, fb: FlowBytes, first: bool) {
        let Some(e) = self.open.get_mut(&seq) else {
            return;
        };
        let earlier = e.earlier_flows;
        let at = e
            .inc
            .flows
            .iter()
            .skip(earlier)
            .position(|f| f.flow_id == fb.flow_id)
            .map(|i| i + earlier);
        match at {
            Some(i) => {
                if let Some(f) = e.inc.flows.get_mut(i) {
                    f.out_ip_bytes = f.out_ip_bytes.max(fb.out_ip_bytes);
                    f.in_ip_bytes = f.in_ip_bytes.max(fb.in_ip_bytes);
                    f.open &= fb.open;
                    f.tuple = f.tuple.or(fb.tuple);
                }
            }
            None if e.inc.flows.len() < MAX_FLOWS => {
                e.inc.flows.push(fb);
                if fb.open {
                    self.flows.insert(fb.flow_id, seq);
                }
            }
            None if first => e.inc.flows_untracked += 1,
            None => {}
        }
        if !fb.open {
            self.flows.remove(&fb.flow_id);
        }
    }

    /// A volume report: the bytes of a flow to an incident's destination (a flow that
    /// started after the incident opened joins it).
    pub fn on_volume(&mut self, v: &Volume) {
        let src = v.src.to_ip(v.ipv6);
        let seq = match self.flows.get(&v.flow_id) {
            Some(&s) => s,
            None => match self.index.get(&(src, Peer::Ip(v.dst.to_ip(v.ipv6)))) {
                Some(&s) => s,
                None => return,
            },
        };
        // Nothing was reported of the flow before: the bytes since the last report are all.
        let first = v.out_total == v.out_bytes && v.in_total == v.in_bytes;
        self.track_flow(
            seq,
            FlowBytes {
                flow_id: v.flow_id,
                out_ip_bytes: v.out_total,
                in_ip_bytes: v.in_total,
                open: !v.end,
                // Oriented home → external, which the id does not depend on; an ICMP
                // flow's report carries no type and code, so its record supplies the tuple.
                tuple: (v.proto != proto::ICMP && v.proto != proto::ICMPV6).then_some(FlowTuple {
                    proto: v.proto,
                    ipv6: v.ipv6,
                    src: v.src,
                    dst: v.dst,
                    sport: v.sport,
                    dport: v.dport,
                }),
            },
            first,
        );
        self.touch(seq, v.ts_ns);
    }

    /// The previous process's flows are gone (a restart resumed from `state.dir`): the
    /// ones still open count as ended (a graceful stop ended them all already; after a
    /// crash their ends were never seen), and their ids, which now mean other flows, are
    /// no longer matched.
    pub fn forget_flows(&mut self) {
        self.flows.clear();
        for e in self.open.values_mut() {
            for f in &mut e.inc.flows {
                f.open = false;
            }
            e.earlier_flows = e.inc.flows.len();
        }
    }

    /// A flow record: a tracked flow's final bytes and its end.
    pub fn on_flow(&mut self, r: &FlowRecord) {
        let Some(&seq) = self.flows.get(&r.flow_id) else {
            return;
        };
        let Some(side) = r.outbound else {
            return;
        };
        let (home, ext) = match side {
            crate::flow::Side::Orig => (&r.orig, &r.resp),
            crate::flow::Side::Resp => (&r.resp, &r.orig),
        };
        let ended = r.reason != crate::flow::EndReason::ActiveTimeout;
        if let (Some(n), Some(e)) = (r.names(), self.open.get_mut(&seq)) {
            e.inc.client_names.add(n);
        }
        self.track_flow(
            seq,
            FlowBytes {
                flow_id: r.flow_id,
                out_ip_bytes: home.ip_bytes,
                in_ip_bytes: ext.ip_bytes,
                open: !ended,
                tuple: Some(FlowTuple::of_record(r)),
            },
            false,
        );
        self.touch(seq, r.last_ns);
    }

    fn touch(&mut self, seq: u64, now_ns: u64) {
        if let Some(mut e) = self.open.remove(&seq) {
            e.touched_ns = e.touched_ns.max(now_ns);
            e.active_ns = e.active_ns.max(now_ns);
            e.inc.last_ns = e.inc.last_ns.max(now_ns);
            self.open.insert(seq, e);
        }
    }

    /// The input is ending: findings from now on (windows closed at the end) are folded
    /// into the closing lines [`IncidentBook::finish`] writes.
    pub fn closing(&mut self) {
        self.closing = true;
    }

    /// End of input: every open incident closes, folding in held news.
    pub fn finish(&mut self, now_ns: u64, out: &mut impl FnMut(IncidentUpdate)) {
        while let Some((&seq, _)) = self.open.front() {
            self.close(seq, now_ns, CloseReason::EndOfInput, out);
        }
        self.held.clear();
    }

    fn close(
        &mut self,
        seq: u64,
        now_ns: u64,
        why: CloseReason,
        out: &mut impl FnMut(IncidentUpdate),
    ) {
        let Some(mut e) = self.open.remove(&seq) else {
            return;
        };
        for k in e.keys.drain(..) {
            if self.index.get(&k) == Some(&seq) {
                self.index.remove(&k);
            }
        }
        if self.by_src.get(&e.key_src) == Some(&seq) {
            self.by_src.remove(&e.key_src);
        }
        for f in &e.inc.flows {
            if self.flows.get(&f.flow_id) == Some(&seq) {
                self.flows.remove(&f.flow_id);
            }
        }
        e.inc.close_reason = Some(why);
        let esc = news(&e);
        // The close is stamped no later than the last thing seen of it plus `idle`; at the
        // end of input, at the input's last time.
        let ts = now_ns.max(e.inc.last_ns);
        announce(&mut e, Update::Closed, ts, esc, 0, &mut self.stats, out);
        self.stats.open = self.open.len() as u64;
    }
}

impl super::snapshot::Restore for IncidentBook {
    /// Sequence numbers are given in order: every open incident's is below the next one.
    fn checked(self) -> Result<Self, String> {
        if self.open.keys().any(|s| *s >= self.next_seq) {
            return Err(format!(
                "an incident numbered past the next, {}",
                self.next_seq
            ));
        }
        Ok(self)
    }

    fn adopt(&mut self, restored: Self) {
        let IncidentBook {
            cfg: _,
            open,
            index,
            by_src,
            flows,
            held,
            next_seq,
            opened_here,
            opened_ns,
            closing,
            stats,
        } = restored;
        self.open = open;
        self.index = index;
        self.by_src = by_src;
        self.flows = flows;
        self.held = held;
        self.next_seq = next_seq;
        self.opened_here = opened_here;
        self.opened_ns = opened_ns;
        self.closing = closing;
        self.stats = stats;
    }
}

fn dur_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What changed since the last line.
fn news(e: &Entry) -> Escalation {
    let out = e.inc.totals().0;
    Escalation {
        severity: e.inc.severity > e.said_severity,
        tier: e.inc.max_tier() > e.said_tier,
        detector: e.inc.reasons.len() > e.said_detectors,
        total_doubled: e.said_out > 0 && out >= e.said_out.saturating_mul(2),
    }
}

fn announce(
    e: &mut Entry,
    update: Update,
    ts_ns: u64,
    escalation: Escalation,
    read_mono_ns: u64,
    stats: &mut IncidentStats,
    out: &mut impl FnMut(IncidentUpdate),
) {
    // An incident's lines never go back in time (a close due before held news it folds).
    let ts_ns = ts_ns.max(e.said_ts);
    e.said_ts = ts_ns;
    if update == Update::Opened || e.inc.severity > e.said_severity {
        if let Some(n) = stats.reached_by_severity.get_mut(e.inc.severity as usize) {
            *n += 1;
        }
    }
    e.said_severity = e.inc.severity;
    e.said_tier = e.inc.max_tier();
    e.said_detectors = e.inc.reasons.len();
    e.said_out = e.inc.totals().0;
    if let Some(n) = stats.updates.get_mut(match update {
        Update::Opened => 0,
        Update::Escalated => 1,
        Update::Closed => 2,
    }) {
        *n += 1;
    }
    out(IncidentUpdate {
        update,
        ts_ns,
        escalation,
        incident: e.inc.clone(),
        read_mono_ns,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn upload(tier: u8, ts: u64, out: u64) -> Finding {
        let a = crate::detect::test_alert(7, "203.0.113.50", tier, ts, out, T0);
        Finding::Flow(Box::new(a))
    }

    fn leak(detector: Detector, ts: u64, total: u64, flow: Option<u64>) -> Finding {
        Finding::Leak(LeakAlert {
            id: format!("{}-{ts}", detector.name()),
            ts_ns: ts,
            detector,
            src: Some(ip("10.0.0.5")),
            dst: Some(ip("203.0.113.50")),
            total_bytes: total,
            flow_id: flow,
            first_ns: T0,
            last_ns: ts,
            ..LeakAlert::default()
        })
    }

    fn run(
        book: &mut IncidentBook,
        steps: Vec<(u64, Option<Finding>)>,
        end: u64,
    ) -> Vec<IncidentUpdate> {
        let mut v = Vec::new();
        for (ts, f) in steps {
            book.advance(ts, &mut |u| v.push(u));
            if let Some(f) = f {
                book.on_finding(&f, &mut |u| v.push(u));
            }
        }
        book.closing();
        book.finish(end, &mut |u| v.push(u));
        v
    }

    fn kinds(v: &[IncidentUpdate]) -> Vec<&'static str> {
        v.iter().map(|u| u.update.name()).collect()
    }

    #[test]
    fn an_upload_past_two_tiers_is_three_lines_with_one_id() {
        // 1.5 GB: tier 0 at 100 MB opens, tier 1 at 1 GB escalates at once, the flow's
        // end (asymmetry) is held, and the data-leak total at the end folds into the close.
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let v = run(
            &mut book,
            vec![
                (T0 + S, Some(upload(0, T0 + S, 100_000_000))),
                (T0 + 10 * S, Some(upload(1, T0 + 10 * S, 1_000_000_000))),
                (
                    T0 + 15 * S,
                    Some(leak(
                        Detector::Asymmetry,
                        T0 + 15 * S,
                        1_500_000_000,
                        Some(7),
                    )),
                ),
                (
                    T0 + 16 * S,
                    Some(leak(Detector::DataLeak, T0 + 16 * S, 1_500_000_000, None)),
                ),
            ],
            T0 + 16 * S,
        );
        assert_eq!(kinds(&v), ["opened", "escalated", "closed"]);
        assert!(v.iter().all(|u| u.incident.id == v[0].incident.id));
        assert_eq!(v[0].ts_ns, T0 + S, "opened at the crossing packet");
        assert!(v[1].escalation.tier && v[1].escalation.severity);
        assert_eq!(v[1].incident.severity, Severity::High);
        let c = &v[2].incident;
        assert_eq!(c.close_reason, Some(CloseReason::EndOfInput));
        assert_eq!(c.reasons.len(), 3);
        assert_eq!(c.totals().0, 1_500_000_000);
        assert_eq!(c.first_ns, T0);
        assert_eq!(book.stats.reached_by_severity, [0, 1, 1, 0]);
        assert_eq!(book.stats.updates, [1, 1, 1]);
    }

    /// 4.6 GB of UDP: tiers 0 and 1, asymmetry at the end of the flow, then a minute
    /// later the window's asymmetry and the data leak.
    fn push_events() -> Vec<(u64, Option<Finding>)> {
        vec![
            (T0 + S, Some(upload(0, T0 + S, 100_000_000))),
            (T0 + 9 * S, Some(upload(1, T0 + 9 * S, 1_000_000_000))),
            (
                T0 + 40 * S,
                Some(leak(
                    Detector::Asymmetry,
                    T0 + 40 * S,
                    4_600_000_000,
                    Some(7),
                )),
            ),
            (T0 + 200 * S, None),
            (
                T0 + 300 * S,
                Some(leak(Detector::Asymmetry, T0 + 300 * S, 4_600_000_000, None)),
            ),
            (
                T0 + 300 * S,
                Some(leak(Detector::DataLeak, T0 + 300 * S, 4_600_000_000, None)),
            ),
        ]
    }

    #[test]
    fn a_push_with_nothing_back_is_at_most_four_lines() {
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let v = run(&mut book, push_events(), T0 + 300 * S);
        assert!(v.len() <= 4, "{:?}", kinds(&v));
        // The news that raised neither severity nor tier (asymmetry, total x4.6, the data
        // leak at the severity already reached) is held `incident.hold` (1 h) and folds into
        // the close.
        assert_eq!(kinds(&v), ["opened", "escalated", "closed"]);
        let detectors: Vec<Detector> = v[2].incident.reasons.iter().map(|r| r.detector).collect();
        assert!(
            detectors.contains(&Detector::Asymmetry) && detectors.contains(&Detector::DataLeak),
            "{detectors:?}"
        );
        assert!(v.iter().all(|u| u.incident.id == v[0].incident.id));

        // With a hold of a minute, that news is a line of its own, a minute after the flow
        // ended, stamped then (not when the next event, at +200 s, noticed).
        let cfg = IncidentConfig {
            hold: std::time::Duration::from_secs(60),
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&cfg);
        let v = run(&mut book, push_events(), T0 + 300 * S);
        assert_eq!(kinds(&v), ["opened", "escalated", "escalated", "closed"]);
        assert_eq!(v[2].ts_ns, T0 + 100 * S);
        assert!(v[2].escalation.detector && v[2].escalation.total_doubled);
    }

    #[test]
    fn a_dns_tunnel_and_an_upload_to_its_domain_are_one_incident() {
        let mut book = IncidentBook::new(&IncidentConfig::default());
        // What a DNS tunnel finding carries (see `facts_dns`).
        let dns = |id: &'static str, ts, detector, domain: &str| Facts {
            detector,
            ts_ns: ts,
            tier: 0,
            id,
            src: Some(ip("10.0.0.5")),
            dst: None,
            names: if domain.is_empty() {
                Vec::new()
            } else {
                vec![domain.to_string()]
            },
            flow: None,
            window: None,
            slice: None,
            read_mono_ns: 0,
            client: None,
            start_ns: ts,
        };
        let Finding::Flow(mut up) = upload(0, T0 + 60 * S, 100_000_000) else {
            unreachable!()
        };
        up.dst_fqdn = Some("x.evil.example".into());
        let mut v = Vec::new();
        let src = ip("10.0.0.5");
        book.join(
            src,
            Some(src),
            &dns("dns_tunnel-1", T0, Detector::DnsTunnel, "evil.example"),
            &mut |u| v.push(u),
        );
        book.on_finding(&Finding::Flow(up), &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened"]);
        assert_eq!(book.len(), 1);
        // An NXDOMAIN burst (about the source alone) joins it too.
        book.join(
            src,
            Some(src),
            &dns("nx-1", T0 + 61 * S, Detector::NxdomainBurst, ""),
            &mut |u| v.push(u),
        );
        assert_eq!(book.len(), 1);
        let mut c = Vec::new();
        book.finish(T0 + 62 * S, &mut |u| c.push(u));
        assert_eq!(c[0].incident.reasons.len(), 3);
        assert_eq!(c[0].incident.names, ["evil.example", "x.evil.example"]);
    }

    #[test]
    fn an_incident_closes_when_idle_and_a_later_finding_opens_another() {
        let cfg = IncidentConfig {
            idle: std::time::Duration::from_secs(600),
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&cfg);
        let mut v = Vec::new();
        book.on_finding(
            &leak(Detector::Asymmetry, T0, 60_000_000, Some(7)),
            &mut |u| v.push(u),
        );
        // Its only flow ended with the finding; ten minutes later it closes, stamped then.
        book.advance(T0 + 599 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened"]);
        book.advance(T0 + 3600 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "closed"]);
        assert_eq!(v[1].ts_ns, T0 + 600 * S);
        assert_eq!(v[1].incident.close_reason, Some(CloseReason::Idle));
        book.on_finding(&upload(0, T0 + 4000 * S, 100_000_000), &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "closed", "opened"]);
        assert_ne!(v[2].incident.id, v[0].incident.id);
        // An open flow keeps it open past idle.
        book.advance(T0 + 9000 * S, &mut |u| v.push(u));
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn a_flow_whose_end_never_comes_is_taken_as_ended_after_the_window() {
        // Live, a full output queue may shed the flow's final record: the incident must
        // not wait for it for good.
        let cfg = IncidentConfig {
            window: std::time::Duration::from_secs(3600),
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&cfg);
        let mut v = Vec::new();
        book.on_finding(&upload(0, T0, 100_000_000), &mut |u| v.push(u));
        book.advance(T0 + 3000 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened"], "open flow, inside the window");
        book.advance(T0 + 3700 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "closed"]);
        assert_eq!(v[1].incident.close_reason, Some(CloseReason::Idle));
        assert_eq!(v[1].ts_ns, T0 + 600 * S, "idle after its last activity");
        assert!(book.is_empty());
    }

    #[test]
    fn a_full_book_closes_the_idlest_and_counts_it() {
        let cfg = IncidentConfig {
            capacity: 2,
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&cfg);
        let mut v = Vec::new();
        for (i, src) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            let Finding::Flow(mut a) = upload(0, T0 + i as u64 * S, 100_000_000) else {
                unreachable!()
            };
            a.src = ip(src);
            a.flow_id = i as u64;
            book.on_finding(&Finding::Flow(a), &mut |u| v.push(u));
        }
        assert_eq!(kinds(&v), ["opened", "opened", "closed", "opened"]);
        assert_eq!(v[2].incident.src, Some(ip("10.0.0.1")));
        assert_eq!(v[2].incident.close_reason, Some(CloseReason::Evicted));
        assert_eq!((book.len(), book.stats.evicted), (2, 1));
    }

    #[test]
    fn a_finding_after_the_window_starts_a_new_incident() {
        let cfg = IncidentConfig {
            window: std::time::Duration::from_secs(3600),
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&cfg);
        let mut v = Vec::new();
        // A long-lived flow keeps the first open; the next finding comes two hours later.
        book.on_finding(&upload(0, T0, 100_000_000), &mut |u| v.push(u));
        book.on_finding(&upload(1, T0 + 7200 * S, 1_000_000_000), &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "closed", "opened"]);
        assert_eq!(v[1].incident.close_reason, Some(CloseReason::Window));
        assert_ne!(v[0].incident.id, v[2].incident.id);
    }

    fn vol(flow_id: u64, ts: u64, out: u64, end: bool) -> Volume {
        let a = |s: &str| match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => crate::decode::Addr::v4(v4.octets()),
            _ => unreachable!(),
        };
        Volume {
            ts_ns: ts,
            flow_id,
            ipv6: false,
            src: a("10.0.0.5"),
            dst: a("203.0.113.50"),
            dport: 443,
            sport: 40000,
            proto: 6,
            home_is_orig: true,
            out_total: out,
            in_total: 0,
            out_bytes: out,
            in_bytes: 0,
            end,
            flow_start_ns: 0,
        }
    }

    #[test]
    fn a_flow_beyond_the_tracked_ones_is_counted_once_however_many_reports() {
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let mut v = Vec::new();
        book.on_finding(&upload(0, T0, 100_000_000), &mut |u| v.push(u));
        // Flows 100.. to the same destination fill the list, then one more reports thrice.
        // Flow 7 (the upload) is tracked; 63 more fill the list.
        for id in 100..100 + MAX_FLOWS as u64 - 1 {
            book.on_volume(&vol(id, T0 + S, 1_000, false));
        }
        for k in 1..=3 {
            let mut r = vol(999, T0 + 2 * S, k * 1_000, false);
            r.out_bytes = 1_000;
            book.on_volume(&r);
        }
        let mut c = Vec::new();
        book.finish(T0 + 3 * S, &mut |u| c.push(u));
        assert_eq!(c[0].incident.flows.len(), MAX_FLOWS);
        assert_eq!(c[0].incident.flows_untracked, 1, "one flow, three reports");
    }

    /// A data-leak finding opens an incident at T0; an asymmetry finding a second later
    /// only adds a detector: news held `incident.hold`.
    fn news_after_a_finding(cfg: &IncidentConfig) -> (IncidentBook, Vec<IncidentUpdate>) {
        let mut book = IncidentBook::new(cfg);
        let mut v = Vec::new();
        book.on_finding(
            &leak(Detector::DataLeak, T0, 60_000_000, Some(7)),
            &mut |u| v.push(u),
        );
        book.on_finding(
            &leak(Detector::Asymmetry, T0 + S, 60_000_000, Some(7)),
            &mut |u| v.push(u),
        );
        (book, v)
    }

    #[test]
    fn held_news_is_stamped_when_due_and_no_line_goes_back_in_time() {
        // The link goes quiet after a finding that only adds a detector: the next event is an
        // hour later. The held line is due a minute after the finding and the close ten
        // minutes after; neither may be stamped with the hour-later clock out of order.
        let minute = IncidentConfig {
            hold: std::time::Duration::from_secs(60),
            ..IncidentConfig::default()
        };
        let (mut book, mut v) = news_after_a_finding(&minute);
        book.advance(T0 + 3600 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "escalated", "closed"]);
        assert_eq!(v[1].ts_ns, T0 + 61 * S, "held news goes out when due");
        assert!(
            v.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
            "{:?}",
            v.iter().map(|u| u.ts_ns - T0).collect::<Vec<_>>()
        );
        // The same with a hold longer than idle: the close may not precede the update.
        let cfg = IncidentConfig {
            hold: std::time::Duration::from_secs(1200),
            ..IncidentConfig::default()
        };
        let (mut book, mut v) = news_after_a_finding(&cfg);
        book.advance(T0 + 3600 * S, &mut |u| v.push(u));
        // Idle (T0 + 1 s + 10 min) before the news was due (T0 + 1 s + 20 min): it closes
        // then, with the news folded in, as with a clock moving smoothly.
        assert_eq!(kinds(&v), ["opened", "closed"]);
        assert_eq!(v[1].ts_ns, T0 + S + 600 * S);
        assert!(v[1].escalation.detector);
    }

    /// Findings come out of time order (a window's findings are fed at their own, earlier
    /// times): news held from an earlier finding that arrives later is still announced
    /// when due, not behind the later news queued first.
    #[test]
    fn held_news_is_announced_in_due_order_whatever_the_order_of_findings() {
        let minute = IncidentConfig {
            hold: std::time::Duration::from_secs(60),
            ..IncidentConfig::default()
        };
        let mut book = IncidentBook::new(&minute);
        let mut v = Vec::new();
        let other = |detector: Detector, ts: u64| match leak(detector, ts, 60_000_000, None) {
            Finding::Leak(mut a) => {
                a.src = Some(ip("10.0.0.6"));
                Finding::Leak(a)
            }
            f => f,
        };
        for f in [
            leak(Detector::DataLeak, T0, 60_000_000, None),
            other(Detector::DataLeak, T0),
            // News of the first incident at +100 s, then of the second at +50 s.
            leak(Detector::Asymmetry, T0 + 100 * S, 60_000_000, None),
            other(Detector::Asymmetry, T0 + 50 * S),
        ] {
            book.on_finding(&f, &mut |u| v.push(u));
        }
        book.advance(T0 + 120 * S, &mut |u| v.push(u));
        let said: Vec<(&str, u64)> = v
            .iter()
            .map(|u| (u.update.name(), (u.ts_ns - T0) / S))
            .collect();
        assert_eq!(said, [("opened", 0), ("opened", 0), ("escalated", 110)]);
        assert!(
            v[2].incident.id.contains("10.0.0.6"),
            "{}",
            v[2].incident.id
        );
    }

    /// `incident.hold` changed while news is held (a reload, or a restart resumed with
    /// another config): the news waits the new hold, neither lost nor stuck behind the old.
    #[test]
    fn held_news_waits_the_hold_in_force() {
        let cfg = |hold: u64| IncidentConfig {
            hold: std::time::Duration::from_secs(hold),
            idle: std::time::Duration::from_secs(7200),
            ..IncidentConfig::default()
        };
        for (from, to) in [(60, 3600), (3600, 60)] {
            let (mut book, mut v) = news_after_a_finding(&cfg(from));
            book.reconfigure(&cfg(to));
            book.advance(T0 + 120 * S, &mut |u| v.push(u));
            book.advance(T0 + 3700 * S, &mut |u| v.push(u));
            assert_eq!(kinds(&v), ["opened", "escalated"], "{from} → {to}");
            assert_eq!(v[1].ts_ns, T0 + S + to * S, "{from} → {to}");
        }
    }

    #[test]
    fn a_close_is_stamped_idle_after_the_last_activity_not_after_a_look() {
        // An open flow keeps the incident open past idle; the clock looks at it at +700 s
        // (still open), then the flow's end (last packet at +650 s) arrives. Closed at
        // +650 s + idle, not +700 s + idle.
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let mut v = Vec::new();
        book.on_finding(&upload(0, T0, 100_000_000), &mut |u| v.push(u));
        book.advance(T0 + 700 * S, &mut |u| v.push(u));
        book.on_volume(&vol(7, T0 + 650 * S, 200_000_000, true));
        book.advance(T0 + 5000 * S, &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened", "closed"]);
        assert_eq!(v[1].ts_ns, T0 + 1250 * S);
    }

    #[test]
    fn two_incidents_of_one_source_opened_at_one_time_have_two_ids() {
        // Windows closing at the end of input fire at one time for several destinations.
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let mut v = Vec::new();
        for dst in ["203.0.113.50", "203.0.113.51"] {
            let Finding::Leak(mut a) = leak(Detector::Asymmetry, T0, 60_000_000, None) else {
                unreachable!()
            };
            a.dst = Some(ip(dst));
            book.on_finding(&Finding::Leak(a), &mut |u| v.push(u));
        }
        assert_eq!(kinds(&v), ["opened", "opened"]);
        assert_ne!(v[0].incident.id, v[1].incident.id);
    }

    #[test]
    fn a_leak_grouped_by_destination_does_not_name_the_destination_its_source() {
        let mut book = IncidentBook::new(&IncidentConfig::default());
        let mut v = Vec::new();
        let Finding::Leak(mut a) = leak(Detector::DataLeak, T0, 300_000_000, None) else {
            unreachable!()
        };
        a.src = None;
        a.group_by = crate::config::GroupBy::Dst;
        book.on_finding(&Finding::Leak(a), &mut |u| v.push(u));
        assert_eq!(kinds(&v), ["opened"]);
        assert_eq!(v[0].incident.src, None);
        assert!(v[0].incident.id.starts_with("INC-to-203.0.113.50-"));
        assert_eq!(v[0].incident.dsts, [ip("203.0.113.50")]);
    }
}
