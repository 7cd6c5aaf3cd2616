//! Large outbound transfer: one connection's home→external bytes cross a threshold while the
//! connection is still open.
//!
//! The check runs on every outbound packet of an outbound flow and is one comparison until
//! a tier is crossed: the flow's latch bits say which tiers already fired, so the next
//! threshold is `tiers[latch.trailing_ones()]`. This is what lets the alert carry the
//! crossing packet's timestamp instead of waiting for the teardown, which for a 10-20 GB
//! upload can be hours later.

use super::{ip, Alert, Detector};
use crate::config::{ByteCount, LargeTransferConfig};
use crate::flow::{Flow, Side};

/// Configured detector.
#[derive(Clone, Debug)]
pub struct LargeTransfer {
    enabled: bool,
    /// Thresholds in increasing order: `threshold_bytes`, then the higher tiers.
    thresholds: Vec<u64>,
    min_packets: u64,
    count: ByteCount,
}

impl LargeTransfer {
    /// From the config.
    pub fn new(cfg: &LargeTransferConfig) -> LargeTransfer {
        let mut thresholds = vec![cfg.threshold_bytes];
        thresholds.extend(cfg.tiers.iter().copied());
        thresholds.truncate(32); // one latch bit each
        LargeTransfer {
            enabled: cfg.enabled,
            thresholds,
            min_packets: cfg.min_packets,
            count: cfg.count,
        }
    }

    /// Called after a packet from `from` has been counted in `flow`. Returns an alert when
    /// this packet made the flow's outbound bytes cross the next unfired tier.
    #[inline]
    pub fn on_packet(&self, flow: &mut Flow, from: Side, ts_ns: u64) -> Option<Alert> {
        if !self.enabled || flow.outbound != Some(from) {
            return None;
        }
        let now = *flow.side(from);
        let next = flow.latch.trailing_ones() as usize;
        let threshold = *self.thresholds.get(next)?;
        let bytes = match self.count {
            ByteCount::Ip => now.ip_bytes + flow.carried.ip_bytes,
            ByteCount::Payload => now.payload_bytes + flow.carried.payload_bytes,
        };
        if bytes < threshold || now.pkts + flow.carried.pkts <= self.min_packets {
            return None;
        }
        // Fire the highest tier crossed; lower ones are latched too, so a flow that crosses
        // several tiers at once (e.g. when min_packets held them back) alerts once.
        let mut tier = next;
        while self.thresholds.get(tier + 1).is_some_and(|t| bytes >= *t) {
            tier += 1;
        }
        flow.latch |= (1u32 << (tier + 1)).wrapping_sub(1);
        Some(self.alert(flow, from, ts_ns, tier))
    }

    fn alert(&self, flow: &Flow, from: Side, ts_ns: u64, tier: usize) -> Alert {
        let (src, sport, dst, dport) = endpoints(flow, from);
        let to = match from {
            Side::Orig => Side::Resp,
            Side::Resp => Side::Orig,
        };
        Alert {
            // The flow's start time makes the id unique across restarts (flow ids restart
            // at 1 with each run), and keeps it reproducible in replay.
            id: format!(
                "{}-{}-{}-{}",
                flow.id,
                Detector::LargeTransfer.name(),
                tier,
                flow.first_ns
            ),
            ts_ns,
            detector: Detector::LargeTransfer,
            flow_id: flow.id,
            proto: flow.key.proto,
            src,
            sport,
            dst,
            dport,
            vlan: flow.key.vlan,
            src_is_orig: from == Side::Orig,
            out: *flow.side(from),
            inbound: *flow.side(to),
            carried: flow.carried,
            flow_start_ns: flow.first_ns,
            threshold_bytes: self.thresholds.get(tier).copied().unwrap_or(0),
            tier: tier as u8,
            counted: self.count,
            dst_fqdn: None,
            read_mono_ns: 0,
            slice_id: None,
            tunnel: None,
            flow_tuple: crate::flow::FlowTuple::of_flow(flow),
            dst_fqdn_source: None,
            names: None,
        }
    }
}

/// (src, sport, dst, dport) with `src` being side `from`.
pub(crate) fn endpoints(flow: &Flow, from: Side) -> (std::net::IpAddr, u16, std::net::IpAddr, u16) {
    let k = &flow.key;
    let from_is_hi = (from == Side::Orig) == flow.orig_is_hi;
    if from_is_hi {
        (ip(k.hi, k.ipv6), k.hi_port, ip(k.lo, k.ipv6), k.lo_port)
    } else {
        (ip(k.lo, k.ipv6), k.lo_port, ip(k.hi, k.ipv6), k.hi_port)
    }
}
