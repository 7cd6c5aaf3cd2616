//! Flows: direction-free keys, per-flow live counters, the fixed-capacity table each
//! worker owns, and its memory of recently closed TCP connections (for late FIN/RST).
//!
//! A worker updates its flows on every packet, so these types are built for that path: the
//! key and counters are plain `Copy` data, the table is allocated once at start-up and never
//! grows, and all timing uses the packet clock passed in by the caller. Nothing here locks,
//! allocates after start-up, or reads the wall clock.

pub mod community_id;
mod key;
#[cfg(test)]
mod tests_support {
    /// This process's resident set (`VmRSS`), KiB; `None` off Linux.
    pub fn rss_kib() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}
mod recent;
mod record;
mod table;
pub mod top;

pub use community_id::{CommunityId, FlowTuple};
pub use key::FlowKey;
pub use recent::{Closed, RecentClosed, RecentStats};
pub use record::{EndReason, FlowExtra, FlowRecord};
pub use table::{FlowTable, TableWork, TimerClass, MAX_CAPACITY};

/// Packet, IP-byte and payload-byte counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirCounters {
    /// Packets.
    pub pkts: u64,
    /// Sum of IP total lengths (headers included, link layer excluded).
    pub ip_bytes: u64,
    /// Sum of transport payload lengths (from the headers' length fields).
    pub payload_bytes: u64,
}

/// The two sides of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// The side that opened the connection (sent the SYN, or the first packet).
    Orig,
    /// The other side.
    Resp,
}

/// Coarse TCP connection state, enough to pick a timeout and an end reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TcpState {
    /// Not TCP.
    #[default]
    NotTcp,
    /// SYN seen, handshake not completed.
    SynSent,
    /// SYN-ACK seen, waiting for the final ACK.
    SynReceived,
    /// Handshake completed, or the capture joined mid-connection.
    Established,
    /// One side sent FIN.
    HalfClosed,
    /// Both sides sent FIN.
    Closed,
    /// A RST was seen.
    Reset,
}

/// Live state of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Direction-free key.
    pub key: FlowKey,
    /// Unique within a run and independent of the worker count: the sequence number of the
    /// flow's first packet.
    pub id: u64,
    /// True when the originator is the key's `hi` endpoint.
    pub orig_is_hi: bool,
    /// Timestamp of the first packet (ns).
    pub first_ns: u64,
    /// Capture clock at the flow's latest packet (ns): its timestamp, unless the capture's
    /// timestamps went backwards (then the latest timestamp seen before it).
    pub last_ns: u64,
    /// Originator → responder counters.
    pub orig: DirCounters,
    /// Responder → originator counters.
    pub resp: DirCounters,
    /// TCP flags seen from the originator (OR of all).
    pub orig_flags: u8,
    /// TCP flags seen from the responder.
    pub resp_flags: u8,
    /// TCP state.
    pub tcp: TcpState,
    /// ICMP type/code (or ports) of the first packet, as sent by the originator.
    pub first_ports: (u16, u16),
    /// Which side is the home host sending to an external one, if any: set at creation by
    /// the worker from `home_nets` and the allowlist.
    pub outbound: Option<Side>,
    /// Per-flow latch bits owned by the detectors: one bit per large-transfer tier that
    /// already fired, so each alert fires once per flow and tier. Tiers fire in order, so
    /// the bits are always a run of ones from bit 0 (the table stores only their count).
    pub latch: u32,
    /// TCP: the next sequence number each side will send (orig, resp), once seen.
    pub next_seq: [Option<u32>; 2],
    /// TCP: a RST that the endpoints appear to have honoured (no data followed it).
    pub reset: bool,
    /// Its packets are being recorded into a pcap slice (it raised an alert).
    pub recording: bool,
    /// Outbound counters of earlier connections on the same 5-tuple that ended by FIN/RST
    /// less than a linger ago and were replaced by a new SYN. Detectors add them, so a
    /// forged RST+SYN pair (ignored by the real endpoints) cannot restart the count.
    pub carried: DirCounters,
    /// The worker's TCP tap wants this flow's next client segments (a ClientHello or a
    /// request head is incomplete; see `proto::tap`).
    pub tap: bool,
}

impl TcpState {
    /// Stable snake_case name used in flow records.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::NotTcp => "not_tcp",
            TcpState::SynSent => "syn_sent",
            TcpState::SynReceived => "syn_received",
            TcpState::Established => "established",
            TcpState::HalfClosed => "half_closed",
            TcpState::Closed => "closed",
            TcpState::Reset => "reset",
        }
    }
}

impl Flow {
    /// Counters of one side.
    pub fn side(&self, side: Side) -> &DirCounters {
        match side {
            Side::Orig => &self.orig,
            Side::Resp => &self.resp,
        }
    }

    /// Outbound counters including those carried from a reused 5-tuple, if outbound.
    pub fn out_total(&self) -> Option<DirCounters> {
        self.outbound.map(|s| {
            let c = self.side(s);
            DirCounters {
                pkts: c.pkts + self.carried.pkts,
                ip_bytes: c.ip_bytes + self.carried.ip_bytes,
                payload_bytes: c.payload_bytes + self.carried.payload_bytes,
            }
        })
    }

    /// Index of a side in per-side arrays.
    pub fn idx(side: Side) -> usize {
        match side {
            Side::Orig => 0,
            Side::Resp => 1,
        }
    }
}
