//! The view of an open flow that `/api/flows/top` shows ("what is leaving right now"): the
//! ranking choices and one flow oriented home → outside. Built by a worker from its table
//! on request, never per packet.

use super::DirCounters;
use std::net::IpAddr;

/// Which counter ranks `/api/flows/top` (named like the response's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBy {
    /// Outbound payload bytes (including those carried over from a reused 5-tuple).
    OutBytes,
    /// Outbound IP bytes (what the large-transfer threshold counts by default).
    OutIpBytes,
    /// Outbound packets.
    OutPkts,
    /// Inbound payload bytes.
    InBytes,
    /// Inbound IP bytes.
    InIpBytes,
    /// Age of the flow.
    Duration,
}

impl TopBy {
    /// All choices, in their wire order.
    pub const ALL: [TopBy; 6] = [
        TopBy::OutBytes,
        TopBy::OutIpBytes,
        TopBy::OutPkts,
        TopBy::InBytes,
        TopBy::InIpBytes,
        TopBy::Duration,
    ];

    /// Query-string name.
    pub fn name(self) -> &'static str {
        match self {
            TopBy::OutBytes => "out_payload_bytes",
            TopBy::OutIpBytes => "out_ip_bytes",
            TopBy::OutPkts => "out_pkts",
            TopBy::InBytes => "in_payload_bytes",
            TopBy::InIpBytes => "in_ip_bytes",
            TopBy::Duration => "duration",
        }
    }

    /// Parses a query-string name.
    pub fn parse(s: &str) -> Option<TopBy> {
        match s {
            // The names before byte kinds were spelled out (payload bytes); still accepted.
            "out_bytes" => Some(TopBy::OutBytes),
            "in_bytes" => Some(TopBy::InBytes),
            _ => TopBy::ALL.into_iter().find(|b| b.name() == s),
        }
    }

    pub(crate) fn code(self) -> u64 {
        self as u64
    }

    pub(crate) fn from_code(c: u64) -> TopBy {
        TopBy::ALL
            .get(usize::try_from(c).unwrap_or(0))
            .copied()
            .unwrap_or(TopBy::OutBytes)
    }

    /// The ranked value from a flow's counters.
    pub fn rank(
        self,
        out: &DirCounters,
        inbound: &DirCounters,
        first_ns: u64,
        last_ns: u64,
    ) -> u64 {
        match self {
            TopBy::OutBytes => out.payload_bytes,
            TopBy::OutIpBytes => out.ip_bytes,
            TopBy::OutPkts => out.pkts,
            TopBy::InBytes => inbound.payload_bytes,
            TopBy::InIpBytes => inbound.ip_bytes,
            TopBy::Duration => last_ns.saturating_sub(first_ns),
        }
    }
}

/// Most flows one worker returns for one top-flows request.
pub const TOP_MAX: usize = 1000;

/// One active outbound flow as the top-flows view shows it, oriented home → outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopFlow {
    /// Flow id.
    pub flow_id: u64,
    /// IP protocol number.
    pub proto: u8,
    /// The home host sending out.
    pub src: IpAddr,
    /// Its port.
    pub sport: u16,
    /// The outside destination.
    pub dst: IpAddr,
    /// Its port.
    pub dport: u16,
    /// VLAN ids (0 = none).
    pub vlan: [u16; 2],
    /// First packet, Unix ns.
    pub first_ns: u64,
    /// Last packet so far, Unix ns.
    pub last_ns: u64,
    /// Outbound counters, including those carried from a reused 5-tuple.
    pub out: DirCounters,
    /// Inbound counters.
    pub inbound: DirCounters,
    /// TCP state name.
    pub state: &'static str,
    /// The flow's tuple as its originator sent it, for the Community ID the API shows.
    pub tuple: super::FlowTuple,
    /// TLS server name, if the client sent one.
    pub server_name: Option<String>,
    /// HTTP Host, if the client sent one.
    pub http_host: Option<String>,
    /// The first ALPN protocol the client offered.
    pub alpn: Option<String>,
    /// JA4 fingerprint of its ClientHello.
    pub ja4: Option<String>,
    /// JA3 fingerprint (MD5 hex) of its ClientHello.
    pub ja3: Option<String>,
    /// HTTP method of its first request.
    pub http_method: Option<String>,
}

impl TopFlow {
    /// The value ranked by `by`.
    pub fn rank(&self, by: TopBy) -> u64 {
        by.rank(&self.out, &self.inbound, self.first_ns, self.last_ns)
    }
}
