//! Flow records: what a finished (or long-running) flow looked like, for the conn log.

use super::{DirCounters, Flow};
use crate::decode::{Addr, TunnelChain, TunnelTag};

/// Why a flow record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    /// TCP: both sides sent FIN (record written after the linger).
    Fin,
    /// TCP: a RST was seen (record written after the linger).
    Rst,
    /// No packet for the protocol's idle timeout.
    Idle,
    /// The table was full and this was the least recently seen flow.
    Evicted,
    /// Still open after the active timeout: an interim record; the flow goes on.
    ActiveTimeout,
    /// The input ended (replay) or the sensor stopped while the flow was open.
    EndOfInput,
}

impl EndReason {
    /// Every reason, in a stable order.
    pub const ALL: [EndReason; 6] = [
        EndReason::Fin,
        EndReason::Rst,
        EndReason::Idle,
        EndReason::Evicted,
        EndReason::ActiveTimeout,
        EndReason::EndOfInput,
    ];

    /// Stable snake_case name used in JSON and summaries.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
            EndReason::Evicted => "evicted",
            EndReason::ActiveTimeout => "active_timeout",
            EndReason::EndOfInput => "end_of_input",
        }
    }
}

/// A flow record: plain data, built on the worker and rendered as JSON on the output
/// thread. Only a tunnelled flow's record allocates (its [`TunnelChain`], once per flow).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowRecord {
    /// Flow id (sequence number of its first packet).
    pub flow_id: u64,
    /// A late TCP packet (no SYN) after a closed connection's linger started this flow: the
    /// id of that connection's first record (see `flow::RecentClosed`). Set by the worker.
    /// Non-zero (flow ids start at 1), which keeps the record within its size budget.
    pub continues: Option<std::num::NonZeroU64>,
    /// IP protocol.
    pub proto: u8,
    /// IPv6 or IPv4.
    pub ipv6: bool,
    /// Originator address.
    pub orig_addr: Addr,
    /// Originator port (ICMP: type of the first message).
    pub orig_port: u16,
    /// Responder address.
    pub resp_addr: Addr,
    /// Responder port (ICMP: code of the first message).
    pub resp_port: u16,
    /// Outer and inner VLAN ids (0 = none).
    pub vlan: [u16; 2],
    /// First packet timestamp (ns).
    pub start_ns: u64,
    /// Last packet timestamp (ns).
    pub last_ns: u64,
    /// Originator → responder counters.
    pub orig: DirCounters,
    /// Responder → originator counters.
    pub resp: DirCounters,
    /// TCP flags seen from each side.
    pub orig_flags: u8,
    /// TCP flags seen from the responder.
    pub resp_flags: u8,
    /// TCP state when the record was written.
    pub tcp: super::TcpState,
    /// Why the record was written.
    pub reason: EndReason,
    /// The home side if this was an outbound flow.
    pub outbound: Option<super::Side>,
    /// The flow key's tunnel tag: the innermost tunnel id, or the marker of a tunnel's own
    /// outer flow (then `tunnel_tag.is_outer()`).
    pub tunnel_tag: TunnelTag,
    /// Its tunnels and names, if any (see [`FlowExtra`]). One box for both: most flows have
    /// neither, and events must stay small (two pointers made `Event` 152 bytes).
    pub extra: Option<Box<FlowExtra>>,
}

/// What a flow record carries besides its counters, when it has any of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowExtra {
    /// The tunnels the flow's first packet came through, outermost first (Zeek's
    /// `tunnel_parents` and tunnel.log in one).
    pub tunnel: Option<TunnelChain>,
    /// What the client's first bytes named (TLS SNI, ALPN, JA4, version; HTTP Host, method,
    /// URI, Content-Length).
    pub names: Option<crate::proto::FlowNames>,
}

impl FlowRecord {
    /// The record of a flow as it stands.
    pub fn of(flow: &Flow, reason: EndReason) -> FlowRecord {
        let (orig_addr, orig_port_key, resp_addr, resp_port_key) = if flow.orig_is_hi {
            (flow.key.hi, flow.key.hi_port, flow.key.lo, flow.key.lo_port)
        } else {
            (flow.key.lo, flow.key.lo_port, flow.key.hi, flow.key.hi_port)
        };
        // ICMP keys carry no ports; show the first message's type/code like Zeek does.
        let (orig_port, resp_port) = if orig_port_key == 0 && resp_port_key == 0 {
            flow.first_ports
        } else {
            (orig_port_key, resp_port_key)
        };
        FlowRecord {
            flow_id: flow.id,
            continues: None,
            proto: flow.key.proto,
            ipv6: flow.key.ipv6,
            orig_addr,
            orig_port,
            resp_addr,
            resp_port,
            vlan: flow.key.vlan,
            start_ns: flow.first_ns,
            last_ns: flow.last_ns,
            orig: flow.orig,
            resp: flow.resp,
            orig_flags: flow.orig_flags,
            resp_flags: flow.resp_flags,
            tcp: flow.tcp,
            reason,
            outbound: flow.outbound,
            tunnel_tag: flow.key.tunnel,
            extra: None,
        }
    }

    /// The tunnels the flow came through, if any.
    pub fn tunnel(&self) -> Option<&TunnelChain> {
        self.extra.as_ref()?.tunnel.as_ref()
    }

    /// What the client's first bytes named, if anything.
    pub fn names(&self) -> Option<&crate::proto::FlowNames> {
        self.extra.as_ref()?.names.as_ref()
    }

    /// Duration from first to last packet (ns).
    pub fn duration_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.start_ns)
    }
}
