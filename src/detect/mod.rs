//! Detectors: flow state and packet time in, `Option<Alert>` out.
//!
//! Detectors are synchronous and do no I/O. Per-flow detectors run inline on the worker for
//! every packet of the flow, so they must cost a comparison or two in the common case and
//! allocate only when they actually build an alert. Each keeps its per-flow memory in the
//! flow's latch bits, so an alert fires once per flow and tier.

pub mod large_transfer;
mod nets;

pub use large_transfer::LargeTransfer;
pub use nets::{Direction, NetSet};

use crate::decode::Addr;
use crate::flow::DirCounters;
use std::net::IpAddr;

/// Which detector raised an alert.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Detector {
    /// (Default only for empty alert structs.)
    #[default]
    /// One connection's outbound bytes crossed a threshold while it was open.
    LargeTransfer,
    /// Many or random-looking queries from one client under one registered domain.
    DnsTunnel,
    /// A client's NXDOMAIN responses spiked.
    NxdomainBurst,
    /// A group's threshold events summed past the data-leak total within the long window.
    DataLeak,
    /// A flow or host pair uploads a lot and receives almost nothing.
    Asymmetry,
    /// A host's daily upload is an outlier against its own history.
    UploadBaseline,
    /// A flow's outbound bytes are an outlier for its home server's port.
    ServiceOutlier,
    /// A home host's uploads to one cloud service (file sharing, object storage, paste,
    /// chat webhook, code hosting) summed past a threshold within the cloud window.
    CloudUpload,
    /// A home ↔ external connection open unusually long, judged while it is open.
    LongConnection,
}

impl Detector {
    /// RFC 5424 severity of a detector's alerts.
    ///
    /// `crit` (2) for `data_leak` and `dns_tunnel`: both are confirmed patterns (a group's
    /// uploads summed past the leak total over the long window; a covert channel in DNS) with
    /// few benign explanations, so they should page. `warning` (4) for the rest: single-flow
    /// thresholds and statistical outliers that backups, uploads and misconfigurations also
    /// trip, which an analyst triages rather than answers at night.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Detector::DataLeak | Detector::DnsTunnel => 2,
            Detector::LargeTransfer
            | Detector::NxdomainBurst
            | Detector::Asymmetry
            | Detector::UploadBaseline
            | Detector::ServiceOutlier
            | Detector::CloudUpload
            | Detector::LongConnection => 4,
        }
    }

    /// Every detector, in a stable order.
    pub const ALL: [Detector; 9] = [
        Detector::LargeTransfer,
        Detector::DnsTunnel,
        Detector::NxdomainBurst,
        Detector::DataLeak,
        Detector::Asymmetry,
        Detector::UploadBaseline,
        Detector::ServiceOutlier,
        Detector::CloudUpload,
        Detector::LongConnection,
    ];

    /// Stable snake_case name used in JSON, summaries and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Detector::LargeTransfer => "large_outbound_transfer",
            Detector::DnsTunnel => "dns_tunnel",
            Detector::NxdomainBurst => "nxdomain_burst",
            Detector::DataLeak => "data_leak",
            Detector::Asymmetry => "asymmetric_upload",
            Detector::UploadBaseline => "upload_baseline",
            Detector::ServiceOutlier => "service_outlier",
            Detector::CloudUpload => "cloud_upload",
            Detector::LongConnection => "long_connection",
        }
    }
}

/// An alert. Built rarely (the only allocation on a worker), rendered as one JSON line by
/// the output stage; field meanings are documented in the README.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// Stable id: `<flow id>-<detector>-<tier>`; the same input gives the same ids.
    pub id: String,
    /// Timestamp of the packet that raised it (ns since the epoch).
    pub ts_ns: u64,
    /// Detector.
    pub detector: Detector,
    /// The flow's id.
    pub flow_id: u64,
    /// IP protocol.
    pub proto: u8,
    /// The home host sending the data.
    pub src: IpAddr,
    /// Its port.
    pub sport: u16,
    /// The external destination.
    pub dst: IpAddr,
    /// Its port.
    pub dport: u16,
    /// VLAN ids (0 = none).
    pub vlan: [u16; 2],
    /// Whether `src` opened the connection.
    pub src_is_orig: bool,
    /// Counters src → dst so far.
    pub out: DirCounters,
    /// Counters dst → src so far.
    pub inbound: DirCounters,
    /// Outbound counters of earlier connections on the same 5-tuple that were replaced by
    /// a SYN right after a FIN/RST (zero normally); included in the threshold check.
    pub carried: DirCounters,
    /// First packet of the flow (ns).
    pub flow_start_ns: u64,
    /// Threshold crossed (bytes).
    pub threshold_bytes: u64,
    /// Tier: 0 for `threshold_bytes`, 1.. for the configured higher tiers.
    pub tier: u8,
    /// Whether the threshold counts IP bytes or payload bytes.
    pub counted: crate::config::ByteCount,
    /// The name `src` resolved for `dst` (from DNS answers seen earlier), filled in by the
    /// output stage.
    pub dst_fqdn: Option<String>,
    /// When outflow read the packets that made it fire ([`crate::telemetry::mono_ns`]),
    /// for the detection-latency metric. Transient: the output stage zeroes it once
    /// recorded, so equal alerts compare equal whatever the timing.
    // Not on the event bus: a monotonic clock reading means nothing on another host (its
    // clock started elsewhere), so the correlator gets 0, "not stamped", and measures no
    // latency from it.
    #[serde(skip)]
    pub read_mono_ns: u64,
    /// Id of the pcap slice holding the flow's packets (`/api/slices/<id>.pcap`), when
    /// slices are written.
    pub slice_id: Option<String>,
    /// The tunnels the flow came through (see [`crate::flow::FlowRecord::tunnel`]).
    pub tunnel: Option<Box<crate::decode::TunnelChain>>,
    /// The flow as its originator's first packet had it (ICMP: the first message's type
    /// and code, which the ports above do not carry): the output computes the alert's
    /// Community ID from it.
    pub flow_tuple: crate::flow::FlowTuple,
    /// Where `dst_fqdn` came from (`dns`, `sni`, `http_host`, `quic_sni`), filled in with it.
    #[serde(with = "fqdn_source")]
    pub dst_fqdn_source: Option<SourceName>,
    /// What the flow's first client bytes named (see [`crate::flow::FlowRecord::names`]).
    pub names: Option<Box<crate::proto::FlowNames>>,
}

/// A [`NameSource`](crate::proto::NameSource)'s name, as [`Alert::dst_fqdn_source`] holds
/// it. Spelled as an alias because serde's derive borrows every field written `&str` from
/// its input, which would let an `Alert` be decoded only from `'static` bytes; this field
/// is read through the `fqdn_source` helper below instead.
pub type SourceName = &'static str;

/// [`Alert::dst_fqdn_source`] through serde: written as the text it is, and read back as
/// the `&'static str` of the [`NameSource`](crate::proto::NameSource) of that name (the
/// only values the field is ever given), so decoding does not have to leak a string to make
/// it `'static`; any other text is an error.
mod fqdn_source {
    use crate::proto::NameSource;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<&'static str>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<&'static str>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        match NameSource::from_name(&text) {
            Some(src) => Ok(Some(src.name())),
            None => Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&text),
                &"dns, sni, http_host or quic_sni",
            )),
        }
    }
}

impl Alert {
    /// Seconds from the flow's first packet to the alert.
    pub fn duration_ns(&self) -> u64 {
        self.ts_ns.saturating_sub(self.flow_start_ns)
    }
}

/// A large-transfer alert for unit tests: flow `flow_id`, 10.0.0.5:51234 → `dst`:443, with
/// `out` outbound IP bytes at `ts_ns` of a flow started at `start_ns`.
#[cfg(test)]
pub(crate) fn test_alert(
    flow_id: u64,
    dst: &str,
    tier: u8,
    ts_ns: u64,
    out: u64,
    start_ns: u64,
) -> Alert {
    Alert {
        id: format!("{flow_id}-large_outbound_transfer-{tier}"),
        ts_ns,
        detector: Detector::LargeTransfer,
        flow_id,
        proto: crate::decode::proto::TCP,
        src: IpAddr::from([10, 0, 0, 5]),
        sport: 51234,
        dst: dst.parse().unwrap_or(IpAddr::from([203, 0, 113, 50])),
        dport: 443,
        vlan: [0, 0],
        src_is_orig: true,
        out: DirCounters {
            pkts: 1000,
            ip_bytes: out,
            payload_bytes: out,
        },
        inbound: DirCounters::default(),
        carried: DirCounters::default(),
        flow_start_ns: start_ns,
        threshold_bytes: 100_000_000,
        tier,
        counted: crate::config::ByteCount::Ip,
        dst_fqdn: None,
        read_mono_ns: 0,
        slice_id: None,
        tunnel: None,
        flow_tuple: crate::flow::FlowTuple::new(
            crate::decode::proto::TCP,
            IpAddr::from([10, 0, 0, 5]),
            51234,
            dst.parse().unwrap_or(IpAddr::from([203, 0, 113, 50])),
            443,
        ),
        dst_fqdn_source: None,
        names: None,
    }
}

/// Converts a stored address back to std form.
pub(crate) fn ip(addr: Addr, ipv6: bool) -> IpAddr {
    addr.to_ip(ipv6)
}
