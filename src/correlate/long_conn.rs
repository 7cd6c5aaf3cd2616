//! Long connections, judged while they are open: a home ↔ external connection past
//! `long_connection.min_duration` (1 h), and a connection to a home server's port older than
//! that port's usual duration (mean + 3σ of its ended connections). The case analysts
//! report: a 24-minute session from an unknown external address to a home database whose
//! sessions last two minutes.
//!
//! Fed two kinds of events: the workers' age reports (`Event::Age`, when an open flow's age
//! crosses `min_duration / 64 × 2^k`; the report carries the flow's counters) and the flows'
//! final records (the durations each home server port learns from). Both are per flow event,
//! never per packet; the report points double, so a flow sends a few dozen in its life at
//! most. The fixed rule keeps no per-flow state: it alerts at every report point at or past
//! `min_duration` (its doublings). The port rule alerts at the first report point past the
//! port's threshold; as the threshold moves while the flow is open (other sessions end), the
//! flows it alerted on are remembered until their final record ([`MAX_ALERTED`] at most).

use super::leak::{LeakAlert, Welford};
use crate::config::LongConnectionConfig;
use crate::detect::Detector;
use crate::event::Volume;
use crate::flow::{EndReason, FlowRecord, Side};
use hashbrown::HashMap;
use hashlink::LinkedHashSet;
use serde::{Deserialize, Serialize};

/// The detector's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongStats {
    /// Age reports seen.
    pub reports: u64,
    /// Findings raised.
    pub alerts: u64,
}

/// Long connections.
///
/// In a correlator snapshot ([`super::snapshot`]): the ports' statistics, the alerted flows
/// (in their order) and the counters; the thresholds are the config's.
#[derive(Serialize, Deserialize)]
pub struct LongConnections {
    #[serde(skip)]
    min_ns: u64,
    #[serde(skip)]
    base_ns: u64,
    #[serde(skip)]
    sigma: f64,
    #[serde(skip)]
    min_flows: u64,
    /// Durations by home server port: at most 65 536 entries (one per port), so bounded by
    /// construction.
    #[serde(with = "super::snapshot::table")]
    ports: HashMap<u16, Welford>,
    /// Flows that raised the port rule's alert and have not ended (see [`MAX_ALERTED`]).
    #[serde(with = "super::snapshot::table")]
    alerted: LinkedHashSet<u64>,
    /// Counters.
    pub stats: LongStats,
}

const NS: f64 = 1e9;

/// Open flows remembered as having raised the port rule's alert, so a threshold that moves
/// while they are open cannot make them alert twice. Forgotten at their final record; when
/// full, the one remembered longest is dropped (it may alert once more at a later report
/// point). Each entry is a flow open past its port's usual duration: a few thousand at once
/// is already an incident.
pub const MAX_ALERTED: usize = 4096;

impl LongConnections {
    /// The detector, or `None` when disabled.
    pub fn new(cfg: &LongConnectionConfig) -> Option<LongConnections> {
        if !cfg.enabled {
            return None;
        }
        let min_ns = u64::try_from(cfg.min_duration.as_nanos()).unwrap_or(u64::MAX);
        Some(LongConnections {
            min_ns,
            base_ns: (min_ns / 64).max(1),
            sigma: cfg.sigma,
            min_flows: cfg.min_flows,
            ports: HashMap::new(),
            alerted: LinkedHashSet::new(),
            stats: LongStats::default(),
        })
    }

    /// New thresholds (SIGHUP); the ports' history is kept.
    pub fn reconfigure(&mut self, cfg: &LongConnectionConfig) {
        let ports = std::mem::take(&mut self.ports);
        let alerted = std::mem::take(&mut self.alerted);
        let stats = self.stats;
        if let Some(mut n) = LongConnections::new(cfg) {
            n.ports = ports;
            n.alerted = alerted;
            n.stats = stats;
            *self = n;
        }
    }

    /// The previous process's flows are gone (a restart resumed from `state.dir`): their
    /// ids mean other flows now.
    pub fn forget_flows(&mut self) {
        self.alerted.clear();
    }

    /// A flow's final record: a connection to a home server teaches its port.
    pub fn on_flow(&mut self, r: &FlowRecord) {
        if r.reason != EndReason::ActiveTimeout {
            self.alerted.remove(&r.flow_id);
        }
        // The home side answered: it is the server (the external side opened). A late
        // FIN/RST's record (`continues`) is the tail of a connection already counted. A
        // connection cut by the end of the input (a stop, a file of a series: the history
        // is kept across them in `state.dir`) or evicted from a full table did not end:
        // its duration so far is no sample of how long the port's connections last.
        if r.outbound != Some(Side::Resp)
            || matches!(
                r.reason,
                EndReason::ActiveTimeout | EndReason::EndOfInput | EndReason::Evicted
            )
            || r.continues.is_some()
        {
            return;
        }
        self.learn(r.resp_port, r.last_ns.saturating_sub(r.start_ns));
    }

    /// One ended connection of `duration_ns` to home server port `port`.
    pub fn learn(&mut self, port: u16, duration_ns: u64) {
        self.ports
            .entry(port)
            .or_default()
            .add(duration_ns as f64 / NS);
    }

    /// An age report of an open flow.
    pub fn on_age(&mut self, v: &Volume, out: &mut impl FnMut(LeakAlert)) {
        self.stats.reports += 1;
        let age = v.ts_ns.saturating_sub(v.flow_start_ns);
        if age < self.base_ns {
            return;
        }
        // The report point this report crossed: base × 2^k ≤ age.
        let point = self.base_ns << (age / self.base_ns).ilog2();
        let src = v.src.to_ip(v.ipv6);
        let dst = v.dst.to_ip(v.ipv6);
        let base = LeakAlert {
            ts_ns: v.ts_ns,
            detector: Detector::LongConnection,
            src: Some(src),
            dst: Some(dst),
            total_bytes: v.out_total,
            in_bytes: v.in_total,
            first_ns: v.flow_start_ns,
            last_ns: v.ts_ns,
            flow_id: Some(v.flow_id),
            port: if v.home_is_orig { v.dport } else { v.sport },
            ..LeakAlert::default()
        };
        if point >= self.min_ns {
            self.stats.alerts += 1;
            let doublings = (point / self.min_ns.max(1)).ilog2();
            out(LeakAlert {
                // With the flow's start, as large-transfer ids: flow ids start again in
                // each process, and an id names the finding's slice file.
                id: format!(
                    "long_connection-{}-{}-{}",
                    v.flow_id, v.flow_start_ns, doublings
                ),
                threshold_bytes: 0,
                window_s: self.min_ns as f64 / NS,
                scope: "duration".into(),
                ..base.clone()
            });
            return;
        }
        if v.home_is_orig {
            return;
        }
        let Some(d) = self.ports.get(&v.sport).copied() else {
            return;
        };
        if d.n < self.min_flows {
            return;
        }
        let threshold = d.mean + self.sigma * d.std();
        // The first report point past the threshold (as it stands now): this one is, and the
        // flow did not alert before.
        if point as f64 / NS > threshold && !self.alerted.contains(&v.flow_id) {
            if self.alerted.len() >= MAX_ALERTED {
                self.alerted.pop_front();
            }
            self.alerted.insert(v.flow_id);
            self.stats.alerts += 1;
            out(LeakAlert {
                id: format!("long_connection-{}-{}-service", v.flow_id, v.flow_start_ns),
                mean: d.mean,
                std: d.std(),
                events: d.n,
                scope: "service".into(),
                ..base
            });
        }
    }
}

impl super::snapshot::Restore for LongConnections {
    fn checked(self) -> Result<Self, String> {
        Ok(self)
    }

    fn adopt(&mut self, restored: Self) {
        let LongConnections {
            min_ns: _,
            base_ns: _,
            sigma: _,
            min_flows: _,
            ports,
            alerted,
            stats,
        } = restored;
        self.ports = ports;
        self.alerted = alerted;
        self.stats = stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Addr;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn age_report(start: u64, ts: u64, home_is_orig: bool) -> Volume {
        Volume {
            ts_ns: ts,
            flow_id: 42,
            ipv6: false,
            src: Addr::v4([10, 0, 0, 9]),
            dst: Addr::v4([198, 51, 100, 7]),
            dport: if home_is_orig { 443 } else { 50_000 },
            sport: if home_is_orig { 40_000 } else { 5432 },
            proto: 6,
            home_is_orig,
            out_total: 1_000,
            in_total: 2_000,
            out_bytes: 0,
            in_bytes: 0,
            end: false,
            flow_start_ns: start,
        }
    }

    /// The report points of `min_duration` 1 h: 56.25 s × 2^k.
    fn points() -> Vec<u64> {
        (0..10).map(|k| (3600 * S / 64) << k).collect()
    }

    #[test]
    fn an_open_connection_alerts_at_its_minimum_and_each_doubling() {
        let mut d = LongConnections::new(&LongConnectionConfig::default()).unwrap();
        let mut found = Vec::new();
        for p in points() {
            d.on_age(&age_report(T0, T0 + p, true), &mut |a| found.push(a));
        }
        let ages: Vec<u64> = found.iter().map(|a| (a.ts_ns - T0) / S).collect();
        assert_eq!(ages, [3600, 7200, 14_400, 28_800]);
        assert!(found.iter().all(|a| a.scope == "duration" && a.port == 443));
        assert_eq!(found[1].id, format!("long_connection-42-{T0}-1"));
    }

    #[test]
    fn a_session_past_its_ports_usual_duration_alerts_once_while_open() {
        let mut d = LongConnections::new(&LongConnectionConfig::default()).unwrap();
        // 100 ended sessions to home port 5432 of 100–140 s.
        for i in 0..100u64 {
            d.learn(5432, (100 + i % 41) * S);
        }
        let mut found = Vec::new();
        // A 24-minute session: reports at 56 s, 1.9 min, 3.75 min, 7.5 min, 15 min.
        for p in points().into_iter().take(5) {
            d.on_age(&age_report(T0, T0 + p, false), &mut |a| found.push(a));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!(a.scope, "service");
        assert_eq!(a.port, 5432);
        assert_eq!(
            (a.ts_ns - T0) / S,
            225,
            "the 3.75 min report, past 118 s + 3σ = 154 s"
        );
        assert!(
            (a.mean - 117.93).abs() < 0.01 && (a.std - 11.86).abs() < 0.01,
            "{} {}",
            a.mean,
            a.std
        );
        // Long sessions end: the port's threshold rises past the alerted report point. The
        // next report (450 s) is the first past the new threshold, but the flow alerted.
        for _ in 0..100 {
            d.learn(5432, 400 * S);
        }
        for p in points().into_iter().take(6).skip(4) {
            d.on_age(&age_report(T0, T0 + p, false), &mut |a| found.push(a));
        }
        assert_eq!(found.len(), 1, "one service alert a flow: {found:?}");
        // A port with too little history never judges.
        let mut fresh = LongConnections::new(&LongConnectionConfig::default()).unwrap();
        let mut none = Vec::new();
        for p in points().into_iter().take(5) {
            fresh.on_age(&age_report(T0, T0 + p, false), &mut |a| none.push(a));
        }
        assert!(none.is_empty());
    }
}
