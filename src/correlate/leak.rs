//! Slow leaks: per-(home host, external host) volume windows that emit threshold events,
//! and data-leak totals that sum those events per group over a long window.
//!
//! The field's two-stage recipe: (1) a home host sending more than 5 MB to an external host
//! within 5 minutes produces a *threshold event* carrying that window's bytes; (2) events
//! are summed per group (source and destination, source, or destination) over 24 hours, and
//! a group whose total passes 100 MB is a data leak — however slowly it was uploaded.
//!
//! Runs on the output thread after the ordered merge, fed by the workers' volume reports
//! (one per 256 KiB of a flow's outbound bytes and at its end), so its results do not depend
//! on the number of workers. Windows are tumbling per pair: a pair's window opens with its
//! first reported byte and closes `window` later, so no byte is counted in two events (a
//! sliding window would count a burst in every window that overlaps it). Tables are bounded;
//! what is evicted is counted.
//!
//! No table is ever scanned on the per-report path: a flood of new hosts must cost the same
//! per report as normal traffic (a `min_by_key` over 65 536 baselines per new host once took
//! 87% of the CPU). Each table evicts and expires in O(1) amortised:
//!
//! - host windows (`pairs`): a queue of (window end, pair) in opening order; closing and
//!   eviction pop its front (the window that closes first), skipping entries made stale by an
//!   earlier close or eviction. Each window pushes one entry, so each is popped once.
//! - data-leak groups: an insertion-ordered map (`hashlink::LinkedHashMap`) where a group
//!   moves to the back at each threshold event, so the front is the group whose last event
//!   is oldest; a full table pops it.
//! - baselines (`hosts`): the same, moved to the back at each volume report, so a full table
//!   forgets the host that reported least recently (LRU). The day boundary visits only the
//!   hosts that reported during the finished day (the `active` list); an idle host's history
//!   is rolled forward lazily, with zero days for the gap, when it next reports.
//! - service statistics (`services`): keyed by (protocol, home server port), so the key space
//!   itself bounds the table; nothing is ever evicted.

use crate::config::{
    AsymmetryConfig, BaselineConfig, Config, DataLeakConfig, GroupBy, HostWindowConfig,
    ServiceOutlierConfig,
};
use crate::decode::Addr;
use crate::detect::Detector;
use crate::event::Volume;
use hashlink::LinkedHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

/// The maps' hasher: seeded per run (so keys cannot be aimed at one bucket) and several
/// times faster than SipHash on these address keys (measured: SipHash was the largest
/// single cost of a volume report under a flood of new sources).
type Fast = foldhash::fast::RandomState;

/// A threshold event: one pair's window went over the host-window threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdEvent {
    /// When the window closed (ns).
    pub ts_ns: u64,
    /// Home host.
    pub src: Addr,
    /// External host.
    pub dst: Addr,
    /// Address family.
    pub ipv6: bool,
    /// Outbound IP bytes in the window.
    pub bytes: u64,
    /// Inbound IP bytes in the window.
    pub in_bytes: u64,
    /// When the window opened (ns).
    pub start_ns: u64,
    /// Its last outbound bytes (ns; at most `ts_ns`).
    pub last_byte_ns: u64,
}

/// An alert of the cross-flow stage (data leak, asymmetric upload, upload baseline, service
/// outlier); fields a detector does not use are left at their defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakAlert {
    /// Stable id: `data_leak-<group>-<ts>`.
    pub id: String,
    /// Time of the event that carried the total over the threshold (ns).
    pub ts_ns: u64,
    /// Which detector.
    pub detector: Detector,
    /// How the group is keyed.
    pub group_by: GroupBy,
    /// The home host (absent when grouped by destination).
    pub src: Option<IpAddr>,
    /// The external host (absent when grouped by source).
    pub dst: Option<IpAddr>,
    /// Total outbound bytes of the group's events within the window.
    pub total_bytes: u64,
    /// Threshold events summed.
    pub events: u64,
    /// Distinct peers (destinations for `src`, sources for `dst`, 1 for `src_dst`).
    pub peers: u64,
    /// First and last event in the window (ns).
    pub first_ns: u64,
    /// Last event (ns).
    pub last_ns: u64,
    /// Names the sources resolved for the destinations, from DNS (up to 10).
    pub fqdns: Vec<String>,
    /// The threshold and window.
    pub threshold_bytes: u64,
    /// Window (s).
    pub window_s: f64,
    /// Inbound IP bytes (asymmetry).
    pub in_bytes: u64,
    /// Mean and standard deviation of the history compared against (baseline: bytes per
    /// day; service outlier: bytes per flow of the port).
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// How far above the mean, in standard deviations (baseline, service outlier).
    pub z: f64,
    /// Home server port (service outlier).
    pub port: u16,
    /// The flow, for per-flow alerts.
    pub flow_id: Option<u64>,
    /// Asymmetry scope: "flow" or "window"; baseline: the day (YYYY-MM-DD).
    pub scope: String,
    /// Id of the pcap slice of the flow (per-flow alerts, when slices are written).
    pub slice_id: Option<String>,
}

/// Counters of the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakStats {
    /// Volume reports consumed.
    pub volumes: u64,
    /// Reports for allowlisted destination domains (counted, never alerted).
    pub allowlisted: u64,
    /// Threshold events.
    pub threshold_events: u64,
    /// Pairs dropped because the host-window table was full.
    pub pairs_evicted: u64,
    /// Groups dropped because the data-leak table was full.
    pub groups_evicted: u64,
    /// Hosts whose baseline was dropped because the table was full (the least recently
    /// reporting host goes).
    pub hosts_evicted: u64,
    /// Data-leak alerts.
    pub alerts: u64,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
struct PairWindow {
    start_ns: u64,
    out: u64,
    inb: u64,
    /// Last report with outbound bytes (ns): with `start_ns`, what the window observed
    /// (absent from older snapshots: 0, read as "unknown").
    #[serde(default)]
    last_ns: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct GroupKey {
    src: Option<Addr>,
    dst: Option<Addr>,
    ipv6: bool,
}

#[derive(Clone, Serialize, Deserialize)]
struct Group {
    /// (ts, bytes, peer) of the events within the window, oldest first.
    events: VecDeque<(u64, u64, Addr)>,
    total: u64,
    last_ns: u64,
    last_alert: Option<(u64, u64)>,
    /// When the oldest event in `events` began sending (its window's start; after older
    /// events age out, the new oldest's close time, a later bound). 0 in older snapshots.
    #[serde(default)]
    span_start_ns: u64,
}

/// A host's daily upload history.
#[derive(Clone, Serialize, Deserialize)]
struct Host {
    /// Day index of `today`.
    day: i64,
    today: u64,
    /// Totals of the previous days, oldest first (at most `baseline.days`).
    history: VecDeque<u64>,
    /// The last `active`-list compaction that kept this host's key (dedupes without a set).
    #[serde(skip, default)]
    mark: u32,
}

/// Running mean and variance (Welford): outbound bytes per flow of one home server port
/// here, connection durations per port in the long-connection detector.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Welford {
    pub(crate) n: u64,
    pub(crate) mean: f64,
    m2: f64,
}

impl Welford {
    pub(crate) fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub(crate) fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }
}

/// Version of the snapshot format; a file of another version is set aside, not loaded.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Everything the stage needs to continue after a restart.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    now_ns: u64,
    pairs: Vec<((Addr, Addr, bool), PairWindow)>,
    closing: Vec<(u64, (Addr, Addr, bool), u64)>,
    groups: Vec<(GroupKey, Group)>,
    hosts: Vec<((Addr, bool), Host)>,
    services: Vec<((u8, u16), Welford)>,
    /// Added within version 1 (absent in older files: hosts then roll on their next report).
    #[serde(default)]
    rolled_day: i64,
}

/// The same fields as [`Snapshot`], borrowed: [`Analyser::save`] streams the tables into
/// the file without copying them. A copy plus the whole JSON text in memory made a
/// stopping sensor's peak RSS 190 MB above its steady state after a flood of new hosts
/// (80 MB of snapshot); streamed, the snapshot costs a write buffer.
#[derive(Serialize)]
#[serde(bound(
    serialize = "Seq<P>: Serialize, Seq<C>: Serialize, Seq<G>: Serialize, Seq<H>: Serialize, Seq<S>: Serialize"
))]
struct SnapshotRef<P, C, G, H, S> {
    version: u32,
    now_ns: u64,
    pairs: Seq<P>,
    closing: Seq<C>,
    groups: Seq<G>,
    hosts: Seq<H>,
    services: Seq<S>,
    rolled_day: i64,
}

/// An iterator serialized as a sequence, once (serde's `Serialize` takes `&self`).
struct Seq<I>(std::cell::Cell<Option<I>>);

impl<I> Seq<I> {
    fn new(items: I) -> Seq<I> {
        Seq(std::cell::Cell::new(Some(items)))
    }
}

impl<I> Serialize for Seq<I>
where
    I: ExactSizeIterator,
    I::Item: Serialize,
{
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        match self.0.take() {
            Some(items) => s.collect_seq(items),
            None => Err(serde::ser::Error::custom("sequence serialized twice")),
        }
    }
}

/// Errors loading a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a snapshot of this version.
    #[error("{path}: not a valid version-{SNAPSHOT_VERSION} snapshot: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Names of the tables [`LeakAnalyser::tables`] reports, as metric labels.
pub const LEAK_TABLES: [&str; 3] = ["leak_pairs", "leak_groups", "leak_hosts"];

/// The cross-flow stage: slow leaks, asymmetry, baselines, service outliers.
///
/// In a correlator snapshot ([`super::snapshot`]) with every field but those the config
/// gives (skipped: the restored analyser keeps its own); see there. That snapshot is
/// another thing than this stage's own file in `state.dir` ([`LeakAnalyser::save`]).
#[derive(Serialize, Deserialize)]
pub struct LeakAnalyser {
    #[serde(skip)]
    hw: HostWindowConfig,
    #[serde(skip)]
    dl: DataLeakConfig,
    #[serde(skip)]
    asym: AsymmetryConfig,
    #[serde(skip)]
    base: BaselineConfig,
    #[serde(skip)]
    svc: ServiceOutlierConfig,
    /// Baselines in last-report order (front: the host that reported least recently).
    /// (A host's `mark` is not in a correlator snapshot: marks are compared only with the
    /// next compaction's number, which is never 0, so a restored host's mark 0 acts as any
    /// earlier mark would.)
    #[serde(with = "super::snapshot::table")]
    hosts: LinkedHashMap<(Addr, bool), Host, Fast>,
    /// Hosts that gained bytes since the last day boundary: the only ones that boundary has
    /// to judge. A key may appear twice (evicted and back); the second visit finds it rolled.
    active: Vec<(Addr, bool)>,
    /// Number of the last `active` compaction (see `Host::mark`).
    compaction: u32,
    /// The day the last day boundary rolled the hosts to: an idle host still on an earlier
    /// day is rolled to it when it next reports, as an eager pass would have done.
    rolled_day: i64,
    /// Bounded by its key space (protocol, port): never evicted.
    #[serde(with = "super::snapshot::table")]
    services: HashMap<(u8, u16), Welford, Fast>,
    #[serde(skip)]
    window_ns: u64,
    #[serde(skip)]
    leak_window_ns: u64,
    #[serde(skip)]
    suppress_ns: u64,
    #[serde(with = "super::snapshot::table")]
    pairs: HashMap<(Addr, Addr, bool), PairWindow, Fast>,
    /// (window end, pair) in closing order; stale entries are skipped when popped.
    closing: VecDeque<(u64, (Addr, Addr, bool), u64)>,
    /// Groups in last-event order (front: the group whose last event is oldest).
    #[serde(with = "super::snapshot::table")]
    groups: LinkedHashMap<GroupKey, Group, Fast>,
    #[serde(skip)]
    allow_domains: Vec<String>,
    now_ns: u64,
    /// Entries examined by eviction, window closing and the day boundary: the work the
    /// table tests bound by a constant per report (a cheap plain counter, never reset).
    visited: u64,
    /// Counters.
    pub stats: LeakStats,
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Whether `name` is `suffix` or ends with `.suffix`.
pub fn domain_matches(name: &str, suffix: &str) -> bool {
    let (n, s) = (name.trim_end_matches('.'), suffix.trim_end_matches('.'));
    n.eq_ignore_ascii_case(s)
        || (n.len() > s.len()
            && n.is_char_boundary(n.len() - s.len())
            && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
            && n.as_bytes().get(n.len() - s.len() - 1) == Some(&b'.'))
}

impl LeakAnalyser {
    /// A stage configured from `detect.*` and `allow.dst_domains`.
    pub fn new(cfg: &Config) -> Self {
        let (hw, dl) = (&cfg.detect.host_window, &cfg.detect.data_leak);
        let allow_domains = &cfg.allow.dst_domains;
        LeakAnalyser {
            window_ns: ns(hw.window),
            leak_window_ns: ns(dl.window),
            suppress_ns: ns(dl.suppression),
            hw: hw.clone(),
            dl: dl.clone(),
            asym: cfg.detect.asymmetry.clone(),
            base: cfg.detect.baseline.clone(),
            svc: cfg.detect.service_outlier.clone(),
            // Sized for their capacities up front: growing by doubling rehashed and copied
            // every entry at each step and touched twice the memory (measured: 5% of a
            // flood of new sources). Untouched buckets cost no RSS.
            hosts: LinkedHashMap::with_capacity_and_hasher(
                cfg.detect.baseline.capacity.min(1 << 20),
                Fast::default(),
            ),
            active: Vec::new(),
            compaction: 0,
            rolled_day: 0,
            services: HashMap::default(),
            pairs: HashMap::with_capacity_and_hasher(hw.capacity.min(1 << 22), Fast::default()),
            closing: VecDeque::new(),
            groups: LinkedHashMap::with_capacity_and_hasher(
                dl.capacity.min(1 << 20),
                Fast::default(),
            ),
            allow_domains: allow_domains.to_vec(),
            now_ns: 0,
            visited: 0,
            stats: LeakStats::default(),
        }
    }

    /// Applies new thresholds and allowlists (SIGHUP) and keeps all state.
    pub fn reconfigure(&mut self, cfg: &Config) {
        let fresh = LeakAnalyser::new(cfg);
        self.hw = fresh.hw;
        self.dl = fresh.dl;
        self.asym = fresh.asym;
        self.base = fresh.base;
        self.svc = fresh.svc;
        self.window_ns = fresh.window_ns;
        self.leak_window_ns = fresh.leak_window_ns;
        self.suppress_ns = fresh.suppress_ns;
        self.allow_domains = fresh.allow_domains;
    }

    /// A fresh stage with the same settings (after an unusable snapshot).
    pub fn new_like(other: &LeakAnalyser) -> Self {
        let mut cfg = Config::default();
        cfg.detect.host_window = other.hw.clone();
        cfg.detect.data_leak = other.dl.clone();
        cfg.detect.asymmetry = other.asym.clone();
        cfg.detect.baseline = other.base.clone();
        cfg.detect.service_outlier = other.svc.clone();
        cfg.allow.dst_domains = other.allow_domains.clone();
        LeakAnalyser::new(&cfg)
    }

    /// Occupancy of the bounded tables, in the order of [`LEAK_TABLES`]: (entries,
    /// capacity, entries evicted because the table was full).
    pub fn tables(&self) -> [(u64, u64, u64); 3] {
        let n = |x: usize| x as u64;
        [
            (
                n(self.pairs.len()),
                n(self.hw.capacity),
                self.stats.pairs_evicted,
            ),
            (
                n(self.groups.len()),
                n(self.dl.capacity),
                self.stats.groups_evicted,
            ),
            (
                n(self.hosts.len()),
                n(self.base.capacity),
                self.stats.hosts_evicted,
            ),
        ]
    }

    /// Whether a destination name is allowlisted.
    pub fn allowed(&self, fqdn: Option<&str>) -> bool {
        fqdn.is_some_and(|n| self.allow_domains.iter().any(|a| domain_matches(n, a)))
    }

    /// Consumes a volume report. `fqdn` names the destination as the source resolved it;
    /// `names` resolves (src, dst) pairs for alerts.
    pub fn on_volume(
        &mut self,
        v: &Volume,
        fqdn: Option<&str>,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        self.stats.volumes += 1;
        self.advance(v.ts_ns, names, out);
        if self.allowed(fqdn) {
            self.stats.allowlisted += 1;
            return;
        }
        self.count_day(v);
        if v.end {
            self.flow_end(v, fqdn, out);
        }
        if !self.hw.enabled {
            return;
        }
        let key = (v.src, v.dst, v.ipv6);
        if let Some(w) = self.pairs.get_mut(&key) {
            w.out = w.out.saturating_add(v.out_bytes);
            w.inb = w.inb.saturating_add(v.in_bytes);
            if v.out_bytes > 0 {
                w.last_ns = v.ts_ns;
            }
            return;
        }
        // Full: drop the pair whose window closes first (the least recently opened), as
        // many as it takes to reach a capacity lowered since (a reload, a restart resumed
        // with another config). Stale entries popped on the way were pushed once each:
        // O(1) amortised.
        while self.pairs.len() >= self.hw.capacity.max(1) {
            let mut dropped = false;
            while let Some((_, k, start)) = self.closing.pop_front() {
                self.visited += 1;
                if self.pairs.get(&k).is_some_and(|w| w.start_ns == start) {
                    self.pairs.remove(&k);
                    self.stats.pairs_evicted += 1;
                    dropped = true;
                    break;
                }
            }
            if !dropped {
                break;
            }
        }
        // One closing entry per window, pushed when it opens.
        self.closing
            .push_back((v.ts_ns.saturating_add(self.window_ns), key, v.ts_ns));
        self.pairs.insert(
            key,
            PairWindow {
                start_ns: v.ts_ns,
                out: v.out_bytes,
                inb: v.in_bytes,
                last_ns: v.ts_ns,
            },
        );
    }

    fn day_of(&self, ts_ns: u64) -> i64 {
        let secs = (ts_ns / 1_000_000_000) as i64 + i64::from(self.base.utc_offset_minutes) * 60;
        secs.div_euclid(86_400)
    }

    /// Adds a report's outbound bytes to its host's day.
    fn count_day(&mut self, v: &Volume) {
        if !self.base.enabled || v.out_bytes == 0 {
            return;
        }
        let day = self.day_of(v.ts_ns);
        let key = (v.src, v.ipv6);
        let (rolled, days) = (self.rolled_day, self.base.days);
        // One lookup for a known host (moved to the back: it reported last).
        if let Some(h) = self.hosts.to_back(&key) {
            if h.today == 0 && h.day < rolled {
                // Idle through the last boundary: catch up with it (its idle days become
                // zeros), so a late report for an earlier day is ignored exactly as before.
                roll(h, rolled, days);
            }
            if day > h.day {
                // A late host, or the first report of a new day before its boundary.
                roll(h, day, days);
            }
            if day != h.day {
                return;
            }
            let first = h.today == 0;
            h.today = h.today.saturating_add(v.out_bytes);
            if first {
                self.active.push(key);
                self.compact_active();
            }
            return;
        }
        // Full: forget the host that reported least recently (the front). A loop, not one
        // pop, so a capacity lowered by a reload is reached; each entry goes once.
        while self.hosts.len() >= self.base.capacity.max(1) {
            if self.hosts.pop_front().is_none() {
                break;
            }
            self.visited += 1;
            self.stats.hosts_evicted += 1;
        }
        self.hosts.insert(
            key,
            Host {
                day,
                today: v.out_bytes,
                history: VecDeque::new(),
                mark: 0,
            },
        );
        self.active.push(key);
        self.compact_active();
    }

    /// Keeps `active` within twice the baseline capacity. A host evicted and back within a
    /// day is listed again, so a flood of new hosts would otherwise grow the list with the
    /// day's distinct sources (measured: 17 bytes each, 170 MB for 10 M sources), not with
    /// the table. Dropping the keys of evicted hosts and repeated keys changes nothing at
    /// the boundary (it skips the first and finds the second already rolled); each
    /// compaction costs the entries pushed since the last one, so O(1) amortised.
    fn compact_active(&mut self) {
        let cap = self.base.capacity.max(1);
        if self.active.len() <= 2 * cap {
            return;
        }
        // Each compaction marks the hosts it keeps, so a second key of the same host (it was
        // evicted and came back) is dropped without building a set.
        self.compaction = self.compaction.wrapping_add(1).max(1);
        let (hosts, mark) = (&mut self.hosts, self.compaction);
        self.active.retain(|k| match hosts.get_mut(k) {
            Some(h) if h.mark != mark => {
                h.mark = mark;
                true
            }
            _ => false,
        });
        self.visited += self.active.len() as u64;
        self.active.shrink_to(2 * cap + 1);
    }

    /// Evaluates every host's finished day(s) when the clock enters a new day.
    fn day_boundary(&mut self, new_day: i64, out: &mut impl FnMut(LeakAlert)) {
        if !self.base.enabled {
            return;
        }
        // Only hosts with bytes in a finished day can alert (`judge_day` wants `today > 0`);
        // the others roll when they next report, so the pass costs the day's active hosts,
        // each paid for by the report that made it active.
        let mut alerts = Vec::new();
        let mut active = std::mem::take(&mut self.active);
        active.retain(|k| {
            self.visited += 1;
            let Some(h) = self.hosts.get_mut(k) else {
                return false; // evicted since
            };
            if h.day >= new_day {
                return h.today > 0; // not finished yet (kept for its own boundary)
            }
            if let Some(a) = judge_day(h, &self.base, *k) {
                alerts.push((*k, a));
            }
            roll(h, new_day, self.base.days);
            false
        });
        self.active = active;
        self.rolled_day = self.rolled_day.max(new_day);
        alerts.sort_by_key(|a| a.0); // deterministic alert order: by host
        for (_, a) in alerts {
            self.stats.alerts += 1;
            out(a);
        }
    }

    /// Per-flow checks at a flow's end: asymmetry and service outlier.
    fn flow_end(&mut self, v: &Volume, fqdn: Option<&str>, out: &mut impl FnMut(LeakAlert)) {
        let ip = |a: Addr| a.to_ip(v.ipv6);
        if self.asym.enabled && asymmetric(v.out_total, v.in_total, &self.asym) {
            self.stats.alerts += 1;
            out(LeakAlert {
                id: format!("asymmetric_upload-flow-{}-{}", v.flow_id, v.ts_ns),
                ts_ns: v.ts_ns,
                detector: Detector::Asymmetry,
                src: Some(ip(v.src)),
                dst: Some(ip(v.dst)),
                total_bytes: v.out_total,
                in_bytes: v.in_total,
                threshold_bytes: self.asym.min_out_bytes,
                flow_id: Some(v.flow_id),
                port: v.dport,
                scope: "flow".into(),
                fqdns: fqdn.map(|n| vec![n.to_owned()]).unwrap_or_default(),
                ..LeakAlert::default()
            });
        }
        if self.svc.enabled && !v.home_is_orig {
            // A home server answering an external client: judge against its port's history,
            // then learn from this flow.
            let w = self.services.entry((v.proto, v.sport)).or_default();
            let x = v.out_total as f64;
            let std = w.std();
            if w.n >= self.svc.min_flows
                && v.out_total >= self.svc.min_out_bytes
                && x > w.mean + self.svc.sigma * std
            {
                self.stats.alerts += 1;
                out(LeakAlert {
                    id: format!("service_outlier-{}-{}-{}", v.sport, v.flow_id, v.ts_ns),
                    ts_ns: v.ts_ns,
                    detector: Detector::ServiceOutlier,
                    src: Some(ip(v.src)),
                    dst: Some(ip(v.dst)),
                    total_bytes: v.out_total,
                    in_bytes: v.in_total,
                    mean: w.mean,
                    std,
                    z: if std > 0.0 {
                        (x - w.mean) / std
                    } else {
                        f64::INFINITY
                    },
                    port: v.sport,
                    flow_id: Some(v.flow_id),
                    events: w.n,
                    ..LeakAlert::default()
                });
            }
            w.add(x);
        }
    }

    /// Closes every window that ended at or before `now_ns`.
    pub fn advance(
        &mut self,
        now_ns: u64,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        let before = self.day_of(self.now_ns);
        self.now_ns = self.now_ns.max(now_ns);
        let after = self.day_of(self.now_ns);
        if after > before && before > 0 {
            self.day_boundary(after, out);
        }
        while self
            .closing
            .front()
            .is_some_and(|(end, _, _)| *end <= self.now_ns)
        {
            let Some((end, key, start)) = self.closing.pop_front() else {
                break;
            };
            self.visited += 1;
            self.close(end, key, start, names, out);
        }
    }

    fn close(
        &mut self,
        end: u64,
        key: (Addr, Addr, bool),
        start: u64,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        let Some(w) = self
            .pairs
            .get(&key)
            .copied()
            .filter(|w| w.start_ns == start)
        else {
            return;
        };
        self.pairs.remove(&key);
        if self.asym.enabled && asymmetric(w.out, w.inb, &self.asym) {
            let ip = |a: Addr| a.to_ip(key.2);
            self.stats.alerts += 1;
            out(LeakAlert {
                id: format!("asymmetric_upload-window-{}-{}-{end}", ip(key.0), ip(key.1)),
                ts_ns: end,
                detector: Detector::Asymmetry,
                src: Some(ip(key.0)),
                dst: Some(ip(key.1)),
                total_bytes: w.out,
                in_bytes: w.inb,
                threshold_bytes: self.asym.min_out_bytes,
                // What was observed: from the window's first report to its last outbound
                // bytes (not the window's end, minutes or hours later).
                first_ns: w.start_ns,
                last_ns: if w.last_ns == 0 { end } else { w.last_ns },
                window_s: self.hw.window.as_secs_f64(),
                scope: "window".into(),
                ..LeakAlert::default()
            });
        }
        if w.out <= self.hw.threshold_bytes {
            return;
        }
        self.stats.threshold_events += 1;
        let ev = ThresholdEvent {
            ts_ns: end,
            src: key.0,
            dst: key.1,
            ipv6: key.2,
            bytes: w.out,
            in_bytes: w.inb,
            start_ns: w.start_ns,
            last_byte_ns: if w.last_ns == 0 { end } else { w.last_ns },
        };
        self.on_threshold_event(&ev, names, out);
    }

    fn on_threshold_event(
        &mut self,
        ev: &ThresholdEvent,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        if !self.dl.enabled {
            return;
        }
        let (gk, peer) = match self.dl.group_by {
            GroupBy::SrcDst => (
                GroupKey {
                    src: Some(ev.src),
                    dst: Some(ev.dst),
                    ipv6: ev.ipv6,
                },
                ev.dst,
            ),
            GroupBy::Src => (
                GroupKey {
                    src: Some(ev.src),
                    dst: None,
                    ipv6: ev.ipv6,
                },
                ev.dst,
            ),
            GroupBy::Dst => (
                GroupKey {
                    src: None,
                    dst: Some(ev.dst),
                    ipv6: ev.ipv6,
                },
                ev.src,
            ),
        };
        if self.groups.to_back(&gk).is_none() {
            // Full: drop the group whose last event is oldest (the front, as every event
            // moves its group to the back).
            while self.groups.len() >= self.dl.capacity.max(1) {
                if self.groups.pop_front().is_none() {
                    break;
                }
                self.visited += 1;
                self.stats.groups_evicted += 1;
            }
            self.groups.insert(
                gk,
                Group {
                    events: VecDeque::new(),
                    total: 0,
                    last_ns: 0,
                    last_alert: None,
                    span_start_ns: 0,
                },
            );
        }
        let Some(g) = self.groups.get_mut(&gk) else {
            return;
        };
        // Events older than the window drop out.
        let horizon = ev.ts_ns.saturating_sub(self.leak_window_ns);
        while g.events.front().is_some_and(|(t, _, _)| *t < horizon) {
            if let Some((_, b, _)) = g.events.pop_front() {
                g.total -= b;
            }
            g.span_start_ns = g.events.front().map_or(0, |e| e.0);
        }
        if g.events.is_empty() || g.span_start_ns == 0 {
            g.span_start_ns = ev.start_ns;
        }
        g.events.push_back((ev.ts_ns, ev.bytes, peer));
        g.total += ev.bytes;
        g.last_ns = ev.ts_ns;
        if g.events.len() > self.dl.max_events_per_group {
            // Merge the two oldest: the total stays exact, the merged event ages out with
            // the newer timestamp (conservative: it stays in the window a little longer).
            if let (Some(a), Some(b)) = (g.events.pop_front(), g.events.pop_front()) {
                g.events.push_front((b.0, a.1 + b.1, b.2));
            }
        }
        if g.total <= self.dl.total_bytes {
            return;
        }
        // Re-fire only after the suppression interval, or when the total has doubled.
        if let Some((t, total)) = g.last_alert {
            if ev.ts_ns < t.saturating_add(self.suppress_ns) && g.total < total.saturating_mul(2) {
                return;
            }
        }
        g.last_alert = Some((ev.ts_ns, g.total));
        self.stats.alerts += 1;
        let peers: BTreeSet<Addr> = g.events.iter().map(|e| e.2).collect();
        let mut fqdns = Vec::new();
        for p in &peers {
            let (s, d) = match self.dl.group_by {
                GroupBy::Dst => (*p, ev.dst),
                _ => (ev.src, *p),
            };
            if let Some(n) = names(s, d, ev.ipv6) {
                if !fqdns.contains(&n) && fqdns.len() < 10 {
                    fqdns.push(n);
                }
            }
        }
        let ip = |a: Addr| a.to_ip(ev.ipv6);
        let group_name = match self.dl.group_by {
            GroupBy::SrcDst => format!("{}-{}", ip(ev.src), ip(ev.dst)),
            GroupBy::Src => ip(ev.src).to_string(),
            GroupBy::Dst => ip(ev.dst).to_string(),
        };
        out(LeakAlert {
            id: format!("data_leak-{group_name}-{}", ev.ts_ns),
            ts_ns: ev.ts_ns,
            detector: Detector::DataLeak,
            group_by: self.dl.group_by,
            src: gk.src.map(ip),
            dst: gk.dst.map(ip),
            total_bytes: g.total,
            events: g.events.len() as u64,
            peers: peers.len() as u64,
            // What was observed: from the first byte counted to the last.
            first_ns: g.span_start_ns,
            last_ns: ev.last_byte_ns,
            fqdns,
            threshold_bytes: self.dl.total_bytes,
            window_s: self.dl.window.as_secs_f64(),
            ..LeakAlert::default()
        });
    }

    /// End of input: closes every open window and judges the current day (a partial day
    /// can only be lower than the full one, so judging it early cannot raise a false
    /// alert). Not called when the state is persisted for a following run.
    pub fn finish(
        &mut self,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        while let Some((end, key, start)) = self.closing.pop_front() {
            self.visited += 1;
            let end = end.min(self.now_ns.max(start));
            self.close(end, key, start, names, out);
        }
        let next = self.day_of(self.now_ns) + 1;
        self.day_boundary(next, out);
    }

    /// Writes the leak stage's state to `path` as the JSON file earlier versions kept in
    /// `state.dir` ([`super::LEGACY_STATE_FILE`], which [`LeakAnalyser::load`] still reads
    /// once at an upgrade; the sensor now keeps the whole stage in [`super::STATE_FILE`]),
    /// atomically ([`super::write_atomically`]).
    pub fn save(&self, path: &std::path::Path) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        };
        let snap = SnapshotRef {
            version: SNAPSHOT_VERSION,
            now_ns: self.now_ns,
            pairs: Seq::new(self.pairs.iter()),
            closing: Seq::new(self.closing.iter()),
            groups: Seq::new(self.groups.iter()),
            hosts: Seq::new(self.hosts.iter()),
            services: Seq::new(self.services.iter()),
            rolled_day: self.rolled_day,
        };
        super::write_atomically(path, io, |mut w| {
            serde_json::to_writer(&mut w, &snap).map_err(|e| io(std::io::Error::other(e)))?;
            Ok(w)
        })
    }

    /// Loads state saved by [`save`](Self::save). A missing file is a fresh start
    /// (`Ok(false)`). A file that cannot be read is [`SnapshotError::Io`]: its history may
    /// be intact, so the caller refuses to start rather than lose it. A file that was read
    /// but is corrupt or of another version is [`SnapshotError::Invalid`], which the caller
    /// handles by setting the file aside. On any error `self` is unchanged.
    pub fn load(&mut self, path: &std::path::Path) -> Result<bool, SnapshotError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        self.restore(&bytes)
            .map_err(|reason| SnapshotError::Invalid {
                path: path.display().to_string(),
                reason,
            })?;
        Ok(true)
    }

    /// Loads a snapshot's bytes, as [`load`](Self::load) does after reading the file (and
    /// the fuzz target does with any bytes). On error — why the bytes are not a snapshot of
    /// this version — `self` is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!("version {}", snap.version));
        }
        self.now_ns = snap.now_ns;
        self.pairs = snap.pairs.into_iter().collect();
        self.closing = snap.closing.into_iter().collect();
        // Groups and hosts are saved in their eviction order and come back in it.
        self.groups = snap.groups.into_iter().collect();
        self.hosts = snap.hosts.into_iter().collect();
        self.rolled_day = snap.rolled_day;
        self.active = self
            .hosts
            .iter()
            .filter(|(_, h)| h.today > 0)
            .map(|(k, _)| *k)
            .collect();
        self.services = snap.services.into_iter().collect();
        Ok(())
    }
}

impl super::snapshot::Restore for LeakAnalyser {
    /// Checks what arithmetic relies on: a group's total is its events' sum (events age out
    /// by subtracting from it), and days are days (differences of them are taken).
    fn checked(self) -> Result<Self, String> {
        const DAYS: u64 = 1 << 32;
        for g in self.groups.values() {
            let sum = g
                .events
                .iter()
                .try_fold(0u64, |t, e| t.checked_add(e.1))
                .ok_or("a group's events overflow")?;
            if sum != g.total {
                return Err(format!("a group totals {}, its events {sum}", g.total));
            }
        }
        if self.rolled_day.unsigned_abs() > DAYS
            || self.hosts.values().any(|h| h.day.unsigned_abs() > DAYS)
        {
            return Err("a day out of range".into());
        }
        Ok(self)
    }

    /// The tables sized up front (`new`) keep their room: the restored entries move into
    /// them.
    fn adopt(&mut self, restored: Self) {
        let LeakAnalyser {
            hw: _,
            dl: _,
            asym: _,
            base: _,
            svc: _,
            hosts,
            active,
            compaction,
            rolled_day,
            services,
            window_ns: _,
            leak_window_ns: _,
            suppress_ns: _,
            pairs,
            closing,
            groups,
            allow_domains: _,
            now_ns,
            visited,
            stats,
        } = restored;
        self.hosts.clear();
        self.hosts.extend(hosts);
        self.active = active;
        self.compaction = compaction;
        self.rolled_day = rolled_day;
        self.services = services;
        self.pairs.clear();
        self.pairs.extend(pairs);
        self.closing = closing;
        self.groups.clear();
        self.groups.extend(groups);
        self.now_ns = now_ns;
        self.visited = visited;
        self.stats = stats;
    }
}

/// out/(in+1) above the ratio with enough out.
fn asymmetric(out: u64, inb: u64, c: &AsymmetryConfig) -> bool {
    out > c.min_out_bytes && out as f64 / (inb as f64 + 1.0) > c.ratio
}

/// Moves a host to `day`: today's total joins the history, with zero days for any gap.
fn roll(h: &mut Host, day: i64, keep: usize) {
    let gap = (day - h.day).clamp(0, keep as i64 + 1);
    for i in 0..gap {
        h.history.push_back(if i == 0 { h.today } else { 0 });
        while h.history.len() > keep {
            h.history.pop_front();
        }
    }
    h.day = day;
    h.today = 0;
}

/// The baseline verdict on a host's finished day.
fn judge_day(h: &Host, c: &BaselineConfig, key: (Addr, bool)) -> Option<LeakAlert> {
    let n = h.history.len();
    if n < c.min_days || h.today == 0 {
        return None;
    }
    let mean = h.history.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
    let var = h
        .history
        .iter()
        .map(|x| (*x as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1).max(1) as f64;
    let std = var.sqrt();
    let x = h.today as f64;
    // A perfectly regular host (std 0) has no spread to measure against: any day above its
    // constant counts as an outlier.
    let z = if std > 0.0 {
        (x - mean) / std
    } else if x > mean {
        f64::INFINITY
    } else {
        0.0
    };
    if z <= c.z {
        return None;
    }
    let ip = key.0.to_ip(key.1);
    let day_start = h.day * 86_400 - i64::from(c.utc_offset_minutes) * 60;
    let date = crate::time::rfc3339(u64::try_from(day_start).unwrap_or(0) * 1_000_000_000);
    let date = date.get(..10).unwrap_or("").to_string();
    Some(LeakAlert {
        id: format!("upload_baseline-{ip}-{date}"),
        ts_ns: u64::try_from(day_start + 86_400).unwrap_or(0) * 1_000_000_000,
        detector: Detector::UploadBaseline,
        src: Some(ip),
        total_bytes: h.today,
        mean,
        std,
        z,
        events: n as u64,
        scope: date,
        ..LeakAlert::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400 * 1_000_000_000;

    fn host(i: u32) -> Addr {
        Addr::v4(i.to_be_bytes())
    }

    fn volume(ts_ns: u64, src: Addr, dst: Addr, out_bytes: u64) -> Volume {
        Volume {
            ts_ns,
            flow_id: 1,
            ipv6: false,
            src,
            dst,
            dport: 443,
            sport: 50_000,
            proto: 6,
            home_is_orig: true,
            out_total: out_bytes,
            in_total: 0,
            out_bytes,
            in_bytes: 0,
            end: false,
            flow_start_ns: 0,
        }
    }

    fn analyser(f: impl FnOnce(&mut Config)) -> LeakAnalyser {
        let mut cfg = Config::default();
        f(&mut cfg);
        LeakAnalyser::new(&cfg)
    }

    fn no_names(_: Addr, _: Addr, _: bool) -> Option<String> {
        None
    }

    #[test]
    fn baseline_table_evicts_the_least_recent_host_in_constant_work() {
        let cap = 1_000;
        let mut a = analyser(|c| {
            c.detect.baseline.capacity = cap;
            c.detect.host_window.enabled = false;
        });
        let n = 50_000u32;
        let start = 100 * DAY;
        for i in 0..n {
            // Host 0 reports again every 100 hosts: the recently used one is never evicted.
            let v = volume(start + u64::from(i), host(i + 1), host(9), 1_000);
            a.on_volume(&v, None, &no_names, &mut |_| {});
            let v0 = volume(start + u64::from(i), host(u32::MAX), host(9), 1);
            if i % 100 == 0 {
                a.on_volume(&v0, None, &no_names, &mut |_| {});
            }
            assert!(a.hosts.len() <= cap);
        }
        assert!(a.hosts.contains_key(&(host(u32::MAX), false)));
        assert_eq!(a.tables()[2].0, cap as u64);
        assert_eq!(
            a.stats.hosts_evicted,
            u64::from(n) + 1 - cap as u64,
            "every eviction is counted"
        );
        assert!(a.visited <= 2 * u64::from(n), "visited {}", a.visited);
    }

    #[test]
    fn group_table_evicts_the_stalest_group_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| c.detect.data_leak.capacity = cap);
        let n = 20_000u32;
        for i in 0..n {
            let ev = ThresholdEvent {
                ts_ns: DAY + u64::from(i),
                src: host(i),
                dst: host(u32::MAX),
                ipv6: false,
                bytes: 1,
                in_bytes: 0,
                start_ns: DAY,
                last_byte_ns: DAY,
            };
            a.on_threshold_event(&ev, &no_names, &mut |_| {});
            assert!(a.groups.len() <= cap);
        }
        assert_eq!(a.stats.groups_evicted, u64::from(n) - cap as u64);
        // The survivors are the newest groups.
        assert!(a.groups.keys().all(|k| k.src >= Some(host(n - cap as u32))));
        assert!(a.visited <= u64::from(n), "visited {}", a.visited);
    }

    #[test]
    fn pair_table_evicts_the_first_closing_window_in_constant_work() {
        let cap = 100;
        let mut a = analyser(|c| {
            c.detect.host_window.capacity = cap;
            c.detect.baseline.enabled = false;
        });
        let n = 20_000u32;
        for i in 0..n {
            // The same pair again at the same time must not queue a second closing entry.
            let v = volume(DAY + u64::from(i), host(i), host(u32::MAX), 0);
            a.on_volume(&v, None, &no_names, &mut |_| {});
            a.on_volume(&v, None, &no_names, &mut |_| {});
            assert!(a.pairs.len() <= cap);
            assert!(a.closing.len() <= cap);
        }
        assert_eq!(a.stats.pairs_evicted, u64::from(n) - cap as u64);
        assert!(a.visited <= u64::from(n), "visited {}", a.visited);
    }

    /// The flood that once cost 132 CPU-seconds: 200 000 new home hosts, each uploading for
    /// a day, into a baseline table of 65 536, then the day boundary.
    #[test]
    fn a_flood_of_new_hosts_costs_constant_work_per_report() {
        let n = 200_000u32;
        let mut a = analyser(|c| c.detect.baseline.capacity = 65_536);
        let start = 100 * DAY;
        for i in 0..n {
            let v = volume(start + u64::from(i) * 1_000, host(i + 1), host(7), 10_000);
            a.on_volume(&v, None, &no_names, &mut |_| {});
        }
        assert!(a.active.len() <= 2 * 65_536 + 1, "{}", a.active.len());
        a.advance(start + DAY, &no_names, &mut |_| {});
        assert_eq!(a.hosts.len(), 65_536);
        assert_eq!(a.stats.hosts_evicted, u64::from(n) - 65_536);
        assert!(a.active.is_empty());
        // Eviction, window closing and the day boundary: a few entries per report.
        assert!(a.visited <= 4 * u64::from(n), "visited {}", a.visited);
    }

    /// The day boundary judges only the day's active hosts, in host order, and an idle
    /// host's history still counts its idle days (rolled when it next reports).
    #[test]
    fn day_boundary_judges_active_hosts_and_rolls_idle_ones_lazily() {
        let mut a = analyser(|c| {
            c.detect.baseline.min_days = 2;
            c.detect.host_window.enabled = false;
        });
        let start = 100 * DAY;
        let mut alerts = Vec::new();
        for d in 0..3u64 {
            for h in [3u32, 1, 2] {
                let v = volume(start + d * DAY + u64::from(h), host(h), host(9), 100);
                a.on_volume(&v, None, &no_names, &mut |x| alerts.push(x));
            }
        }
        // Host 1 idles for two days, then uploads far more; hosts 2 and 3 keep reporting.
        for d in 3..5u64 {
            for h in [3u32, 2] {
                let v = volume(start + d * DAY + u64::from(h), host(h), host(9), 100);
                a.on_volume(&v, None, &no_names, &mut |x| alerts.push(x));
            }
        }
        let v = volume(start + 5 * DAY + 9, host(1), host(9), 1_000_000);
        a.on_volume(&v, None, &no_names, &mut |x| alerts.push(x));
        let v = volume(start + 5 * DAY + 9, host(3), host(9), 1_000_000);
        a.on_volume(&v, None, &no_names, &mut |x| alerts.push(x));
        assert!(alerts.is_empty());
        let h1 = a.hosts.get(&(host(1), false)).map(|h| h.history.clone());
        assert_eq!(h1, Some(VecDeque::from([100, 100, 100, 0, 0])));
        a.finish(&no_names, &mut |x| alerts.push(x));
        let srcs: Vec<_> = alerts.iter().map(|x| x.src).collect();
        assert_eq!(
            srcs,
            vec![Some(host(1).to_ip(false)), Some(host(3).to_ip(false))]
        );
    }

    /// Hosts evicted and back within a day (a flood rotating through more sources than the
    /// table holds) are listed once per return; the list stays within twice the capacity,
    /// and the boundary still judges and rolls exactly the hosts present.
    #[test]
    fn active_hosts_stay_bounded_when_hosts_rotate_through_the_table() {
        let cap = 4;
        let mut a = analyser(|c| {
            c.detect.baseline.capacity = cap;
            c.detect.host_window.enabled = false;
        });
        let start = 100 * DAY;
        let n = 10_000u32;
        for i in 0..n {
            // Six hosts in turn through a table of four: every report evicts and re-adds.
            let v = volume(start + u64::from(i), host(i % 6 + 1), host(9), 100);
            a.on_volume(&v, None, &no_names, &mut |_| {});
            assert!(a.active.len() <= 2 * cap + 1, "{}", a.active.len());
        }
        assert_eq!(a.stats.hosts_evicted, u64::from(n) - cap as u64);
        a.advance(start + DAY, &no_names, &mut |_| {});
        assert!(a.active.is_empty());
        assert_eq!(a.hosts.len(), cap);
        for h in a.hosts.values() {
            assert_eq!(
                (h.today, h.history.iter().copied().collect::<Vec<_>>()),
                (0, vec![100])
            );
        }
        assert!(a.visited <= 4 * u64::from(n), "visited {}", a.visited);
    }

    /// Service statistics need no eviction: one entry per (protocol, home server port), so
    /// a flood of flows (or of ports) is bounded by the key space, at O(1) per flow end.
    #[test]
    fn service_statistics_are_bounded_by_their_key_space() {
        let mut a = analyser(|_| {});
        for round in 0..3u32 {
            for i in 0..70_000u32 {
                let mut v = volume(DAY + u64::from(i), host(round * 70_000 + i), host(9), 1);
                v.home_is_orig = false;
                v.sport = (i % 65_536) as u16;
                v.end = true;
                a.on_volume(&v, None, &no_names, &mut |_| {});
            }
        }
        assert_eq!(a.services.len(), 65_536);
    }

    #[test]
    fn snapshot_keeps_eviction_order() {
        let mut a = analyser(|c| c.detect.baseline.capacity = 3);
        for i in 1..=3u32 {
            let v = volume(DAY + u64::from(i), host(i), host(9), 10);
            a.on_volume(&v, None, &no_names, &mut |_| {});
        }
        let v = volume(DAY + 9, host(1), host(9), 10);
        a.on_volume(&v, None, &no_names, &mut |_| {});
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("leak.json");
        assert!(a.save(&path).is_ok());
        let mut b = LeakAnalyser::new_like(&a);
        assert!(matches!(b.load(&path), Ok(true)));
        let order: Vec<_> = b.hosts.keys().map(|k| k.0).collect();
        assert_eq!(order, vec![host(2), host(3), host(1)]);
        assert_eq!(b.active.len(), 3);
        let v = volume(DAY + 10, host(4), host(9), 10);
        b.on_volume(&v, None, &no_names, &mut |_| {});
        assert!(!b.hosts.contains_key(&(host(2), false)));
    }

    /// Restored from a correlator snapshot's encoding, the tables sized up front keep
    /// their room, and the baselines come back in their eviction order.
    #[test]
    fn a_correlator_snapshot_keeps_the_tables_room_and_order() {
        use crate::correlate::snapshot::Restore;
        let cfg = |c: &mut Config| {
            c.detect.baseline.capacity = 3;
            c.detect.host_window.capacity = 5_000;
        };
        let mut a = analyser(cfg);
        for i in [1u32, 2, 3, 1] {
            let v = volume(DAY + u64::from(i), host(i), host(9), 10);
            a.on_volume(&v, None, &no_names, &mut |_| {});
        }
        let bytes = postcard::to_stdvec(&a).unwrap_or_default();
        let read = postcard::from_bytes::<LeakAnalyser>(&bytes).map_err(|e| e.to_string());
        let mut b = analyser(cfg);
        b.adopt(
            read.and_then(LeakAnalyser::checked)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(b.pairs.capacity() >= 5_000, "{}", b.pairs.capacity());
        assert_eq!(b.pairs.len(), 3);
        let order: Vec<_> = b.hosts.keys().map(|k| k.0).collect();
        assert_eq!(order, vec![host(2), host(3), host(1)]);
        assert_eq!((b.now_ns, b.stats), (a.now_ns, a.stats));
        let v = volume(DAY + 10, host(4), host(9), 10);
        b.on_volume(&v, None, &no_names, &mut |_| {});
        assert!(
            !b.hosts.contains_key(&(host(2), false)),
            "the least recent goes"
        );
    }

    #[test]
    fn domain_suffixes_match_on_label_boundaries() {
        assert!(domain_matches("backup.example.com", "example.com"));
        assert!(domain_matches("Example.COM.", "example.com"));
        assert!(!domain_matches("badexample.com", "example.com"));
        assert!(!domain_matches("example.com", "backup.example.com"));
    }
}
