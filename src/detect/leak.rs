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

use super::Detector;
use crate::config::{DataLeakConfig, GroupBy, HostWindowConfig};
use crate::decode::Addr;
use crate::worker::Volume;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

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
}

/// A data-leak alert.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakAlert {
    /// Stable id: `data_leak-<group>-<ts>`.
    pub id: String,
    /// Time of the event that carried the total over the threshold (ns).
    pub ts_ns: u64,
    /// Always `Detector::DataLeak`.
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
}

/// Counters of the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Data-leak alerts.
    pub alerts: u64,
}

#[derive(Clone, Copy)]
struct PairWindow {
    start_ns: u64,
    out: u64,
    inb: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey {
    src: Option<Addr>,
    dst: Option<Addr>,
    ipv6: bool,
}

struct Group {
    /// (ts, bytes, peer) of the events within the window, oldest first.
    events: VecDeque<(u64, u64, Addr)>,
    total: u64,
    last_ns: u64,
    last_alert: Option<(u64, u64)>,
}

/// The slow-leak stage.
pub struct LeakAnalyser {
    hw: HostWindowConfig,
    dl: DataLeakConfig,
    window_ns: u64,
    leak_window_ns: u64,
    suppress_ns: u64,
    pairs: HashMap<(Addr, Addr, bool), PairWindow>,
    /// (window end, pair) in closing order; stale entries are skipped when popped.
    closing: VecDeque<(u64, (Addr, Addr, bool), u64)>,
    groups: HashMap<GroupKey, Group>,
    allow_domains: Vec<String>,
    now_ns: u64,
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
    /// A stage with the given settings; `allow_domains` is `allow.dst_domains`.
    pub fn new(hw: &HostWindowConfig, dl: &DataLeakConfig, allow_domains: &[String]) -> Self {
        LeakAnalyser {
            window_ns: ns(hw.window),
            leak_window_ns: ns(dl.window),
            suppress_ns: ns(dl.suppression),
            hw: hw.clone(),
            dl: dl.clone(),
            pairs: HashMap::new(),
            closing: VecDeque::new(),
            groups: HashMap::new(),
            allow_domains: allow_domains.to_vec(),
            now_ns: 0,
            stats: LeakStats::default(),
        }
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
        if !self.hw.enabled || self.allowed(fqdn) {
            if self.allowed(fqdn) {
                self.stats.allowlisted += 1;
            }
            return;
        }
        let key = (v.src, v.dst, v.ipv6);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= self.hw.capacity {
            // Full: drop the pair whose window closes first (the least recently opened).
            while let Some((_, k, start)) = self.closing.pop_front() {
                if self.pairs.get(&k).is_some_and(|w| w.start_ns == start) {
                    self.pairs.remove(&k);
                    self.stats.pairs_evicted += 1;
                    break;
                }
            }
        }
        let window_ns = self.window_ns;
        let w = self.pairs.entry(key).or_insert_with(|| PairWindow {
            start_ns: v.ts_ns,
            out: 0,
            inb: 0,
        });
        if w.out == 0 && w.inb == 0 && w.start_ns == v.ts_ns {
            self.closing
                .push_back((v.ts_ns.saturating_add(window_ns), key, v.ts_ns));
        }
        w.out = w.out.saturating_add(v.out_bytes);
        w.inb = w.inb.saturating_add(v.in_bytes);
    }

    /// Closes every window that ended at or before `now_ns`.
    pub fn advance(
        &mut self,
        now_ns: u64,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        self.now_ns = self.now_ns.max(now_ns);
        while self
            .closing
            .front()
            .is_some_and(|(end, _, _)| *end <= self.now_ns)
        {
            let Some((end, key, start)) = self.closing.pop_front() else {
                break;
            };
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
        if !self.groups.contains_key(&gk) && self.groups.len() >= self.dl.capacity {
            let oldest = self
                .groups
                .iter()
                .min_by_key(|(_, g)| g.last_ns)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.groups.remove(&k);
                self.stats.groups_evicted += 1;
            }
        }
        let g = self.groups.entry(gk).or_insert_with(|| Group {
            events: VecDeque::new(),
            total: 0,
            last_ns: 0,
            last_alert: None,
        });
        // Events older than the window drop out.
        let horizon = ev.ts_ns.saturating_sub(self.leak_window_ns);
        while g.events.front().is_some_and(|(t, _, _)| *t < horizon) {
            if let Some((_, b, _)) = g.events.pop_front() {
                g.total -= b;
            }
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
            first_ns: g.events.front().map_or(ev.ts_ns, |e| e.0),
            last_ns: ev.ts_ns,
            fqdns,
            threshold_bytes: self.dl.total_bytes,
            window_s: self.dl.window.as_secs_f64(),
        });
    }

    /// End of input: closes every open window.
    pub fn finish(
        &mut self,
        names: &dyn Fn(Addr, Addr, bool) -> Option<String>,
        out: &mut impl FnMut(LeakAlert),
    ) {
        while let Some((end, key, start)) = self.closing.pop_front() {
            let end = end.min(self.now_ns.max(start));
            self.close(end, key, start, names, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::domain_matches;

    #[test]
    fn domain_suffixes_match_on_label_boundaries() {
        assert!(domain_matches("backup.example.com", "example.com"));
        assert!(domain_matches("Example.COM.", "example.com"));
        assert!(!domain_matches("badexample.com", "example.com"));
        assert!(!domain_matches("example.com", "backup.example.com"));
    }
}
