//! The plain types that pass between stages: what a worker hands on (flow records, findings,
//! DNS messages, volume reports), in the total order that lets the merge after the workers
//! give the same stream for any number of workers.
//!
//! Each payload type is defined by the stage that produces it ([`FlowRecord`] by `flow`,
//! [`Alert`] by `detect`, [`DnsEvent`] by `dns`); this module only wraps them into the
//! stream, so the cross-flow stage ([`crate::correlate`]) and the outputs depend on this
//! file, not on the worker.

use crate::config::Config;
use crate::decode::Addr;
use crate::detect::Alert;
use crate::dns::DnsEvent;
use crate::flow::{EndReason, FlowRecord, Side};

/// Total order of output events; see the module documentation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct EventKey {
    /// Clock time (ns) the event belongs to.
    pub time_ns: u64,
    /// 0 = timer, 1 = packet, 2 = end of input.
    pub class: u8,
    /// Flow id (timer, end) or packet sequence number (packet).
    pub id: u64,
    /// Position among the events of the same packet.
    pub sub: u32,
}

/// Something a worker produces for the output stage.
///
/// A DNS event is ~1.7 KiB, every other event a few hundred bytes at most: inline, it made
/// every event 1 KiB, copied into the worker's buffer, the channel, the output's merge heap
/// and out again (measured: a fifth of all CPU on a flow-heavy capture). So it is boxed,
/// and the boxes circulate: the output thread hands each back over [`DnsRecycler`] and
/// the worker keeps them in a pool, so steady state allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A finished flow, or an interim record of a long one.
    Flow(FlowRecord),
    /// An alert.
    Alert(Box<Alert>),
    /// A DNS message, for the analyser on the output thread.
    Dns(Box<DnsEvent>),
    /// Outbound volume of a flow since its last report, for the cross-flow detectors.
    Volume(Volume),
    /// An open home ↔ external flow's age crossed a report point (`min_duration / 64 ×
    /// 2^k`): its counters so far (the byte deltas are 0), for the long-connection detector.
    Age(Volume),
    /// A flow's destination name from its first client bytes (TLS SNI, HTTP Host), once per
    /// named flow, so `dst_fqdn` can fall back to it. Boxed (~300 bytes) and not recycled:
    /// one allocation per named flow (never per packet), on the packet that completes the
    /// name, like a tunnelled flow's tunnel list.
    Name(Box<crate::proto::FlowName>),
}

/// Bytes a home host sent to (and received from) an external host on one flow since the
/// last report. Emitted when either direction passes a multiple of [`VOLUME_STEP`] IP bytes
/// (reporting the whole steps passed) and at the flow's end (the rest), so the cross-flow
/// stage sees volumes per flow event, never per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// Timestamp of the packet or timer that triggered the report (ns).
    pub ts_ns: u64,
    /// The flow.
    pub flow_id: u64,
    /// Address family.
    pub ipv6: bool,
    /// The home host.
    pub src: Addr,
    /// The external host.
    pub dst: Addr,
    /// Its port.
    pub dport: u16,
    /// The home host's port.
    pub sport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Whether the home host opened the connection (false: a home server answering).
    pub home_is_orig: bool,
    /// The flow's outbound IP bytes so far (all reports included).
    pub out_total: u64,
    /// The flow's inbound IP bytes so far.
    pub in_total: u64,
    /// IP bytes home → external since the last report.
    pub out_bytes: u64,
    /// IP bytes external → home since the last report.
    pub in_bytes: u64,
    /// The flow ended with this report.
    pub end: bool,
    /// The flow's first packet (ns): names are looked up as they were when it started (a
    /// long upload outlives its DNS answer's TTL).
    pub flow_start_ns: u64,
}

/// IP bytes between two volume reports of one flow (each direction): fine enough that a
/// 5 MB host window is placed to within 5%, coarse enough to be rare (one event per ~180
/// full-size packets of an upload or download).
pub const VOLUME_STEP: u64 = 256 * 1024;

/// The part of an outbound flow's volume after its last whole step, reported at its end:
/// computed from the flow's final record (the last step's remainder in each direction), so
/// the record carries it and no event of its own is sent. `None` for an interim record, a
/// flow that is not outbound, or nothing left to report.
pub fn end_volume(r: &FlowRecord) -> Option<Volume> {
    let side = r.outbound?;
    if r.reason == EndReason::ActiveTimeout {
        return None;
    }
    let (home, ext) = match side {
        Side::Orig => (&r.orig, &r.resp),
        Side::Resp => (&r.resp, &r.orig),
    };
    let (out_bytes, in_bytes) = (home.ip_bytes % VOLUME_STEP, ext.ip_bytes % VOLUME_STEP);
    if out_bytes == 0 && in_bytes == 0 {
        return None;
    }
    let ((src, sport), (dst, dport)) = match side {
        Side::Orig => ((r.orig_addr, r.orig_port), (r.resp_addr, r.resp_port)),
        Side::Resp => ((r.resp_addr, r.resp_port), (r.orig_addr, r.orig_port)),
    };
    Some(Volume {
        ts_ns: r.last_ns,
        flow_id: r.flow_id,
        ipv6: r.ipv6,
        src,
        dst,
        dport,
        sport,
        proto: r.proto,
        home_is_orig: side == Side::Orig,
        out_total: home.ip_bytes,
        in_total: ext.ip_bytes,
        out_bytes,
        in_bytes,
        end: true,
        flow_start_ns: r.start_ns,
    })
}

/// Depth of the worker → output channel. A slot holds one `OutMsg` (about 150 bytes: DNS
/// events are boxed, see `worker::Event`), and the channel allocates all slots up front:
/// 32768 slots, about 5 MiB — what 4096 slots cost when an event was 1.1 KiB, now deep
/// enough to ride out a few seconds' burst of a flood (live, a full queue sheds events).
pub const OUT_QUEUE: usize = 32768;

/// Messages from workers to the output thread.
// Carries `Event` inline for the same reason as `Event` itself: no allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum OutMsg {
    /// An event.
    Event(EventKey, Event),
    /// Worker `worker` will not produce events with a key below `upto`.
    Progress {
        /// Worker index.
        worker: usize,
        /// Its progress key.
        upto: EventKey,
    },
    /// New thresholds and allowlists for the analysers on the output thread (SIGHUP).
    Reload(std::sync::Arc<Config>),
    /// Worker `worker` has finished.
    Done {
        /// Worker index.
        worker: usize,
    },
}
