//! JSON rendering of alerts and flow records. Field names are part of outflow's interface
//! (SIEM parsers depend on them) and are documented in the README; change them only with a
//! new name, never by repurposing an old one.

use crate::config::ByteCount;
use crate::correlate::dns::{DnsAlert, DnsRecord};
use crate::correlate::incident::{IncidentUpdate, Update};
use crate::correlate::leak::LeakAlert;
use crate::decode::{proto, TunnelChain, TunnelHop};
use crate::detect::Alert;
use crate::flow::{CommunityId, FlowRecord, FlowTuple, Side};
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

pub use crate::decode::proto_name;
pub use crate::time::rfc3339;

/// Where the API serves a slice: `/api/slices/<id>.pcap`.
fn slice_url(id: &str) -> String {
    format!("/api/slices/{id}.pcap")
}

/// TCP flags as letters in a fixed order (`S`YN `A`CK `F`IN `R`ST `P`SH `U`RG).
pub fn flag_letters(f: u8) -> String {
    FLAG_LETTERS
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, c)| char::from(*c))
        .collect()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn vlan(v: [u16; 2]) -> Option<Vec<u16>> {
    match v {
        [0, 0] => None,
        [a, 0] => Some(vec![a]),
        [a, b] => Some(vec![a, b]),
    }
}

/// Human-readable duration of what was observed: "0.4 s", "12 min", "3.5 h".
pub fn human_span(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Human-readable byte count (decimal units, like the thresholds).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[derive(Serialize)]
struct AlertJson<'a> {
    alert_id: &'a str,
    ts: String,
    detector: &'static str,
    message: String,
    flow_id: u64,
    proto: String,
    src_ip: String,
    src_port: u16,
    dst_ip: String,
    dst_port: u16,
    community_id: CommunityId,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<Vec<HopJson>>,
    src_is_orig: bool,
    flow_open: bool,
    flow_start: String,
    duration: f64,
    threshold_bytes: u64,
    threshold_counts: &'static str,
    tier: u8,
    out_pkts: u64,
    out_ip_bytes: u64,
    out_payload_bytes: u64,
    in_pkts: u64,
    in_ip_bytes: u64,
    in_payload_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    reused_tuple_ip_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_fqdn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_fqdn_source: Option<&'static str>,
    #[serde(flatten)]
    names: Option<NamesJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_url: Option<String>,
}

/// What a flow's first client bytes named, as flow records and alerts show it.
#[derive(Serialize)]
pub struct NamesJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpn: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja4: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja3: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_host: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_method: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_uri: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_content_length: Option<u64>,
}

/// The JSON fields of a flow's names (wire bytes that are not UTF-8 become U+FFFD).
pub fn names_json(n: &crate::proto::FlowNames) -> NamesJson<'_> {
    fn text(b: Option<&[u8]>) -> Option<std::borrow::Cow<'_, str>> {
        b.map(String::from_utf8_lossy)
    }
    NamesJson {
        server_name: text(n.server_name.get()),
        alpn: text(n.alpn.get()),
        ja4: n.ja4.as_ref().map(|j| j.as_str()),
        ja3: n.ja3.as_ref().map(|j| j.as_str()),
        tls_version: n.tls_version_name(),
        http_host: text(n.http_host.get()),
        http_method: text(n.http_method.get()),
        http_uri: text(n.http_uri.get()),
        http_content_length: n.http_content_length,
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One alert as a JSON object (no trailing newline); `seed`: the Community ID's.
pub fn alert_json(a: &Alert, seed: u16) -> String {
    let counted = match a.counted {
        ByteCount::Ip => "ip",
        ByteCount::Payload => "payload",
    };
    let dst = match &a.dst_fqdn {
        Some(n) => format!("{} ({n})", sock(a.dst, a.dport)),
        None => sock(a.dst, a.dport),
    };
    let message = format!(
        "Large outbound transfer: {} → {dst} sent {} in {:.1} s, connection still open",
        sock(a.src, a.sport),
        human_bytes(match a.counted {
            ByteCount::Ip => a.out.ip_bytes + a.carried.ip_bytes,
            ByteCount::Payload => a.out.payload_bytes + a.carried.payload_bytes,
        }),
        secs(a.duration_ns())
    );
    let j = AlertJson {
        alert_id: &a.id,
        ts: rfc3339(a.ts_ns),
        detector: a.detector.name(),
        message,
        flow_id: a.flow_id,
        proto: proto_name(a.proto),
        src_ip: a.src.to_string(),
        src_port: a.sport,
        dst_ip: a.dst.to_string(),
        dst_port: a.dport,
        community_id: a.flow_tuple.community_id(seed),
        vlan: vlan(a.vlan),
        tunnel: a.tunnel.as_deref().map(hops_json),
        src_is_orig: a.src_is_orig,
        flow_open: true,
        flow_start: rfc3339(a.flow_start_ns),
        duration: secs(a.duration_ns()),
        threshold_bytes: a.threshold_bytes,
        threshold_counts: counted,
        tier: a.tier,
        out_pkts: a.out.pkts,
        out_ip_bytes: a.out.ip_bytes,
        out_payload_bytes: a.out.payload_bytes,
        in_pkts: a.inbound.pkts,
        in_ip_bytes: a.inbound.ip_bytes,
        in_payload_bytes: a.inbound.payload_bytes,
        reused_tuple_ip_bytes: a.carried.ip_bytes,
        dst_fqdn: a.dst_fqdn.as_deref(),
        dst_fqdn_source: a.dst_fqdn_source,
        names: a.names.as_deref().map(names_json),
        slice_id: a.slice_id.as_deref(),
        slice_url: a.slice_id.as_deref().map(slice_url),
    };
    serde_json::to_string(&j).unwrap_or_default()
}

fn sock(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// One flow record as a JSON object (no trailing newline); `seed`: the Community ID's.
pub fn flow_json(r: &FlowRecord, seed: u16) -> String {
    let mut out = Vec::with_capacity(384);
    // Writing into a Vec cannot fail.
    let _ = write_flow_json(&mut out, r, seed);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes one flow record as a JSON object (no trailing newline) straight into `w`.
///
/// Hand-rolled rather than derived: a busy sensor writes hundreds of thousands of flow
/// records a second, and the derived path built seven `String`s per record (timestamps,
/// addresses, flags) that cost more than the serialisation. Every value here is a number,
/// a fixed name or an address, so nothing needs escaping; numbers are written by the same
/// formatters serde_json uses, so the output is byte-identical to the derived form (tested).
/// The Community ID (under `seed`) is the one value computed here: one SHA-1 per record.
pub fn write_flow_json<W: std::io::Write>(
    w: &mut W,
    r: &FlowRecord,
    seed: u16,
) -> std::io::Result<()> {
    let tcp = r.proto == proto::TCP;
    let ts = |ns: u64| humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns));
    write!(w, "{{\"flow_id\":{}", r.flow_id)?;
    if let Some(first) = r.continues {
        write!(w, ",\"continues\":{first}")?;
    }
    write!(
        w,
        ",\"ts\":\"{}\",\"end_ts\":\"{}\",\"duration\":",
        ts(r.start_ns),
        ts(r.last_ns)
    )?;
    serde_json::to_writer(&mut *w, &secs(r.duration_ns())).map_err(std::io::Error::other)?;
    w.write_all(b",\"proto\":\"")?;
    match r.proto {
        proto::TCP => w.write_all(b"tcp")?,
        proto::UDP => w.write_all(b"udp")?,
        proto::ICMP | proto::ICMPV6 => w.write_all(b"icmp")?,
        n => write!(w, "{n}")?,
    }
    write!(
        w,
        "\",\"orig_ip\":\"{}\",\"orig_port\":{},\"resp_ip\":\"{}\",\"resp_port\":{},\"community_id\":\"{}\"",
        r.orig_addr.to_ip(r.ipv6),
        r.orig_port,
        r.resp_addr.to_ip(r.ipv6),
        r.resp_port,
        FlowTuple::of_record(r).community_id(seed)
    )?;
    match r.vlan {
        [0, 0] => {}
        [a, 0] => write!(w, ",\"vlan\":[{a}]")?,
        [a, b] => write!(w, ",\"vlan\":[{a},{b}]")?,
    }
    if r.tunnel_tag.is_outer() {
        write!(
            w,
            ",\"tunnel_outer\":\"{}\"",
            r.tunnel_tag.tunnel_kind().name()
        )?;
    }
    if let Some(chain) = r.tunnel() {
        w.write_all(b",\"tunnel\":[")?;
        for (i, h) in chain.hops().iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            write_hop(w, h)?;
        }
        w.write_all(b"]")?;
    }
    write!(
        w,
        ",\"orig_pkts\":{},\"orig_ip_bytes\":{},\"orig_bytes\":{},\"resp_pkts\":{},\"resp_ip_bytes\":{},\"resp_bytes\":{}",
        r.orig.pkts,
        r.orig.ip_bytes,
        r.orig.payload_bytes,
        r.resp.pkts,
        r.resp.ip_bytes,
        r.resp.payload_bytes
    )?;
    if tcp {
        w.write_all(b",\"orig_flags\":\"")?;
        write_flag_letters(w, r.orig_flags)?;
        w.write_all(b"\",\"resp_flags\":\"")?;
        write_flag_letters(w, r.resp_flags)?;
        write!(w, "\",\"state\":\"{}\"", r.tcp.name())?;
    }
    if let Some(n) = r.names() {
        // The object's fields, spliced in: `{"a":1}` → `,"a":1` (nothing for `{}`).
        let o = serde_json::to_vec(&names_json(n)).map_err(std::io::Error::other)?;
        if let Some(inner) = o
            .get(1..o.len().saturating_sub(1))
            .filter(|i| !i.is_empty())
        {
            w.write_all(b",")?;
            w.write_all(inner)?;
        }
    }
    write!(
        w,
        ",\"end_reason\":\"{}\",\"interim\":{},\"outbound\":",
        r.reason.name(),
        r.reason == crate::flow::EndReason::ActiveTimeout
    )?;
    match r.outbound {
        Some(Side::Orig) => w.write_all(b"\"orig\"}"),
        Some(Side::Resp) => w.write_all(b"\"resp\"}"),
        None => w.write_all(b"null}"),
    }
}

/// One tunnel hop, the same fields as [`HopJson`] (addresses need no escaping).
fn write_hop<W: std::io::Write>(w: &mut W, h: &TunnelHop) -> std::io::Result<()> {
    write!(
        w,
        "{{\"type\":\"{}\",\"src_ip\":\"{}\",\"dst_ip\":\"{}\"",
        h.kind.name(),
        h.src.to_ip(h.ipv6),
        h.dst.to_ip(h.ipv6)
    )?;
    if h.sport != 0 || h.dport != 0 {
        write!(w, ",\"src_port\":{},\"dst_port\":{}", h.sport, h.dport)?;
    }
    if let Some(id) = h.id {
        write!(w, ",\"id\":{id}")?;
    }
    w.write_all(b"}")
}

/// A tunnel hop in alerts and the API: type, outer addresses (and UDP ports), id.
#[derive(Serialize)]
pub struct HopJson {
    #[serde(rename = "type")]
    kind: &'static str,
    src_ip: String,
    dst_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
}

/// The hops of a tunnel list, for serde.
pub fn hops_json(chain: &TunnelChain) -> Vec<HopJson> {
    chain
        .hops()
        .iter()
        .map(|h| {
            let ports = h.sport != 0 || h.dport != 0;
            HopJson {
                kind: h.kind.name(),
                src_ip: h.src.to_ip(h.ipv6).to_string(),
                dst_ip: h.dst.to_ip(h.ipv6).to_string(),
                src_port: ports.then_some(h.sport),
                dst_port: ports.then_some(h.dport),
                id: h.id,
            }
        })
        .collect()
}

fn write_flag_letters<W: std::io::Write>(w: &mut W, f: u8) -> std::io::Result<()> {
    let mut buf = [0u8; 6];
    let mut n = 0;
    for (bit, c) in FLAG_LETTERS {
        if f & bit != 0 {
            if let Some(b) = buf.get_mut(n) {
                *b = c;
                n += 1;
            }
        }
    }
    w.write_all(buf.get(..n).unwrap_or(&[]))
}

/// TCP flag bits and their letters, in the order they are written.
const FLAG_LETTERS: [(u8, u8); 6] = {
    use crate::decode::tcp_flags::*;
    [
        (SYN, b'S'),
        (ACK, b'A'),
        (FIN, b'F'),
        (RST, b'R'),
        (PSH, b'P'),
        (URG, b'U'),
    ]
};

/// One DNS alert as a JSON object (no trailing newline). Tunnel-only fields are absent from
/// an NXDOMAIN burst and `nxdomains` from a tunnel alert; the message states what was
/// observed and over how long, not the window length.
pub fn dns_alert_json(a: &DnsAlert) -> String {
    #[derive(Serialize)]
    struct Components {
        names: f64,
        record_types: f64,
        uniqueness: f64,
        regularity: f64,
    }
    #[derive(Serialize)]
    struct NameScore {
        total: f64,
        encoding: &'static str,
        encoding_points: f64,
        entropy_points: f64,
        length_points: f64,
        regularity_points: f64,
        entropy: f64,
        length: usize,
    }
    #[derive(Serialize)]
    struct Tunnel<'a> {
        queries: u64,
        unique_subdomains: u64,
        suspicious_subdomains: u64,
        encoding: &'static str,
        encoded_subdomains: u64,
        tunnel_type_queries: u64,
        label_length: usize,
        score: f64,
        score_components: Components,
        worst_query: &'a str,
        worst_score: NameScore,
    }
    #[derive(Serialize)]
    struct Json<'a> {
        alert_id: &'a str,
        ts: String,
        detector: &'static str,
        reason: &'static str,
        message: String,
        src_ip: String,
        #[serde(skip_serializing_if = "str::is_empty")]
        domain: &'a str,
        observed: f64,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        tunnel: Option<Tunnel<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nxdomains: Option<u64>,
        samples: &'a [String],
    }
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let span = |s: f64| {
        if s < 1.0 {
            format!("{s:.3} s")
        } else if s < 60.0 {
            format!("{s:.1} s")
        } else {
            format!("{s:.0} s")
        }
    };
    let burst = a.detector == crate::detect::Detector::NxdomainBurst;
    let enc = a.encoding.name();
    let message = if burst {
        format!(
            "NXDOMAIN burst: {} got {} NXDOMAIN answers in {}",
            a.client,
            a.nxdomains,
            span(a.observed_s)
        )
    } else if a.reason == "query_rate" {
        format!(
            "DNS tunnelling suspected: {} → {}: {} queries ({} unique subdomains) in {}",
            a.client,
            a.domain,
            a.queries,
            a.unique_subdomains,
            span(a.observed_s)
        )
    } else {
        let what = if a.encoded_subdomains == a.suspicious_subdomains && enc != "none" {
            format!(
                "{} unique {enc}-encoded subdomains",
                a.suspicious_subdomains
            )
        } else if enc != "none" {
            format!(
                "{} unique suspicious subdomains ({} {enc}-encoded)",
                a.suspicious_subdomains, a.encoded_subdomains
            )
        } else {
            format!("{} unique suspicious subdomains", a.suspicious_subdomains)
        };
        format!(
            "DNS tunnelling suspected: {} → {}: {what} in {} ({} queries, {} of them TXT/NULL/MX/CNAME/ANY/private; score {:.1})",
            a.client,
            a.domain,
            span(a.observed_s),
            a.queries,
            a.tunnel_type_queries,
            a.score.total()
        )
    };
    let w = &a.worst_score;
    let j = Json {
        alert_id: &a.id,
        ts: rfc3339(a.ts_ns),
        detector: a.detector.name(),
        reason: a.reason,
        message,
        src_ip: a.client.to_string(),
        domain: &a.domain,
        observed: r3(a.observed_s),
        tunnel: (!burst).then(|| Tunnel {
            queries: a.queries,
            unique_subdomains: a.unique_subdomains,
            suspicious_subdomains: a.suspicious_subdomains,
            encoding: enc,
            encoded_subdomains: a.encoded_subdomains,
            tunnel_type_queries: a.tunnel_type_queries,
            label_length: a.label_length,
            score: r3(a.score.total()),
            score_components: Components {
                names: r3(a.score.names),
                record_types: r3(a.score.record_types),
                uniqueness: r3(a.score.uniqueness),
                regularity: r3(a.score.regularity),
            },
            worst_query: &a.worst_query,
            worst_score: NameScore {
                total: r3(w.total),
                encoding: w.encoding.name(),
                encoding_points: r3(w.components.encoding),
                entropy_points: r3(w.components.entropy),
                length_points: r3(w.components.length),
                regularity_points: r3(w.components.regularity),
                entropy: r3(w.entropy),
                length: w.length,
            },
        }),
        nxdomains: burst.then_some(a.nxdomains),
        samples: &a.samples,
    };
    serde_json::to_string(&j).unwrap_or_default()
}

#[derive(Serialize)]
struct LeakAlertJson<'a> {
    alert_id: &'a str,
    ts: String,
    detector: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_ip: Option<String>,
    out_ip_bytes: u64,
    threshold_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
    dst_fqdns: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    in_ip_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    z: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    /// Cloud uploads: the catalogue service, its category, and the connections summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
    /// Long connections: how long it had been open (s), and its port's usual duration (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usual_duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usual_duration_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port_history: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_url: Option<String>,
}

/// One alert of the cross-flow stage (data leak, asymmetric upload, upload baseline,
/// service outlier, cloud upload) as a JSON object (no trailing newline).
pub fn leak_alert_json(a: &LeakAlert) -> String {
    use crate::config::GroupBy;
    use crate::detect::Detector;
    let who = match (a.src, a.dst) {
        (Some(s), Some(d)) => format!("{s} → {d}"),
        (Some(s), None) if a.detector != crate::detect::Detector::DataLeak => s.to_string(),
        (Some(s), None) => format!("{s} → {} destinations", a.peers),
        (None, Some(d)) => format!("{} sources → {d}", a.peers),
        (None, None) => String::new(),
    };
    let names = if a.fqdns.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.fqdns.join(", "))
    };
    let stats = matches!(
        a.detector,
        Detector::UploadBaseline | Detector::ServiceOutlier
    );
    let long = a.detector == Detector::LongConnection;
    let long_service = long && a.scope == "service";
    // A cloud finding's scope is `<service>|<category>`.
    let is_cloud = a.detector == Detector::CloudUpload;
    let cloud = if is_cloud {
        a.scope.split_once('|').unwrap_or((a.scope.as_str(), ""))
    } else {
        ("", "")
    };
    let message = match a.detector {
        Detector::Asymmetry => format!(
            "Asymmetric upload ({}): {who}{names} sent {}, received {}",
            a.scope,
            human_bytes(a.total_bytes),
            human_bytes(a.in_bytes)
        ),
        Detector::UploadBaseline => format!(
            "Upload baseline: {who} uploaded {} on {}, {:.1} standard deviations above its {}-day mean of {}",
            human_bytes(a.total_bytes),
            a.scope,
            a.z,
            a.events,
            human_bytes(a.mean as u64)
        ),
        Detector::ServiceOutlier => format!(
            "Service outlier: {who} sent {} from port {}, mean {} ± {} over {} flows",
            human_bytes(a.total_bytes),
            a.port,
            human_bytes(a.mean as u64),
            human_bytes(a.std as u64),
            a.events
        ),
        Detector::LongConnection => {
            let age = human_span(a.last_ns.saturating_sub(a.first_ns));
            let usual = if a.scope == "service" {
                format!(
                    "; port {} usually lasts {} ± {}",
                    a.port,
                    human_span((a.mean * 1e9) as u64),
                    human_span((a.std * 1e9) as u64)
                )
            } else {
                String::new()
            };
            format!(
                "Long connection: {who}{names} open {age} (port {}), {} out, {} in{usual}",
                a.port,
                human_bytes(a.total_bytes),
                human_bytes(a.in_bytes)
            )
        }
        Detector::CloudUpload => format!(
            "Cloud upload: {} sent {} to {} ({}) in {} over {} connection{}{}",
            a.src.map(|s| s.to_string()).unwrap_or_default(),
            human_bytes(a.total_bytes),
            cloud.0,
            cloud.1,
            human_span(a.last_ns.saturating_sub(a.first_ns)),
            a.events,
            if a.events == 1 { "" } else { "s" },
            names
        ),
        // What was observed: the span from the first to the last event summed, not the
        // window's length (a 2-second upload is not "in 24 h").
        _ => format!(
            "Data leak: {who}{names} {} in {} ({} threshold events)",
            human_bytes(a.total_bytes),
            human_span(a.last_ns.saturating_sub(a.first_ns)),
            a.events
        ),
    };
    // A per-flow verdict (asymmetry of one flow) has no window, events or peers; a cloud
    // finding counts connections, not threshold events or peers.
    let per_flow = a.flow_id.is_some();
    let counts = !per_flow && !is_cloud;
    let j = LeakAlertJson {
        alert_id: &a.id,
        ts: rfc3339(a.ts_ns),
        detector: a.detector.name(),
        message,
        group_by: (a.detector == Detector::DataLeak).then_some(match a.group_by {
            GroupBy::SrcDst => "src_dst",
            GroupBy::Src => "src",
            GroupBy::Dst => "dst",
        }),
        src_ip: a.src.map(|i| i.to_string()),
        dst_ip: a.dst.map(|i| i.to_string()),
        out_ip_bytes: a.total_bytes,
        threshold_bytes: a.threshold_bytes,
        window: (!per_flow).then_some(a.window_s),
        events: counts.then_some(a.events),
        peers: counts.then_some(a.peers),
        first_seen: (a.first_ns > 0).then(|| rfc3339(a.first_ns)),
        last_seen: (a.last_ns > 0).then(|| rfc3339(a.last_ns)),
        dst_fqdns: &a.fqdns,
        in_ip_bytes: (a.detector == Detector::Asymmetry || is_cloud || long).then_some(a.in_bytes),
        mean: stats.then_some(a.mean),
        std: stats.then_some(a.std),
        z: stats.then_some(if a.z.is_finite() { a.z } else { f64::MAX }),
        port: (a.port != 0).then_some(a.port),
        flow_id: a.flow_id,
        scope: if is_cloud { "" } else { &a.scope },
        service: is_cloud.then_some(cloud.0),
        category: is_cloud.then_some(cloud.1),
        connections: is_cloud.then_some(a.events),
        age: long.then(|| a.last_ns.saturating_sub(a.first_ns) as f64 / 1e9),
        usual_duration: long_service.then_some(a.mean),
        usual_duration_std: long_service.then_some(a.std),
        port_history: long_service.then_some(a.events),
        slice_id: a.slice_id.as_deref(),
        slice_url: a.slice_id.as_deref().map(slice_url),
    };
    serde_json::to_string(&j).unwrap_or_default()
}

/// DNS response code names (IANA "DNS RCODEs": RFC 1035, 2136, 6891, 8490, 8945, 7873),
/// the 12-bit code an OPT record extends included.
pub fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        11 => "DSOTYPENI".into(),
        // 16 is BADVERS in an OPT record and BADSIG in a TSIG record (RFC 6891, RFC 8945);
        // the header's extended rcode comes from OPT, so BADVERS is the name that applies.
        16 => "BADVERS".into(),
        17 => "BADKEY".into(),
        18 => "BADTIME".into(),
        19 => "BADMODE".into(),
        20 => "BADNAME".into(),
        21 => "BADALG".into(),
        22 => "BADTRUNC".into(),
        23 => "BADCOOKIE".into(),
        n => format!("RCODE{n}"),
    }
}

#[derive(Serialize)]
struct DnsRecordJson<'a> {
    ts: String,
    flow_id: u64,
    proto: String,
    client_ip: String,
    client_port: u16,
    server_ip: String,
    server_port: u16,
    community_id: CommunityId,
    trans_id: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt: Option<f64>,
    query: &'a str,
    original_query: &'a str,
    qclass: u16,
    qtype: u16,
    qtype_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rcode: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rcode_name: Option<String>,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    answers: &'a [String],
    ttls: &'a [u32],
    registered_domain: &'a str,
    subdomain_entropy: f64,
    subdomain_length: usize,
    subdomain_labels: usize,
    longest_label: usize,
    suspicious: bool,
    query_seen: bool,
    response_seen: bool,
}

/// One DNS transaction as a JSON object (no trailing newline); `seed`: the Community ID's.
pub fn dns_record_json(r: &DnsRecord, seed: u16) -> String {
    let j = DnsRecordJson {
        ts: rfc3339(r.ts_ns),
        flow_id: r.flow_id,
        proto: proto_name(r.proto),
        client_ip: r.client.to_string(),
        client_port: r.client_port,
        server_ip: r.server.to_string(),
        server_port: r.server_port,
        community_id: FlowTuple::new(r.proto, r.client, r.client_port, r.server, r.server_port)
            .community_id(seed),
        trans_id: r.id,
        rtt: r.rtt_ns.map(secs),
        query: &r.query,
        original_query: &r.original_query,
        qclass: r.qclass,
        qtype: r.qtype,
        qtype_name: match crate::dns::parser::type_name(r.qtype) {
            "" => format!("TYPE{}", r.qtype),
            t => t.to_string(),
        },
        rcode: r.rcode,
        rcode_name: r.rcode.map(rcode_name),
        aa: r.flags & 8 != 0,
        tc: r.flags & 4 != 0,
        rd: r.flags & 2 != 0,
        ra: r.flags & 1 != 0,
        answers: &r.answers,
        ttls: &r.ttls,
        registered_domain: &r.registered_domain,
        subdomain_entropy: (r.score.entropy * 1000.0).round() / 1000.0,
        subdomain_length: r.score.length,
        subdomain_labels: r.score.labels,
        longest_label: r.score.longest_label,
        suspicious: r.suspicious,
        query_seen: r.query_seen,
        response_seen: r.response_seen,
    };
    serde_json::to_string(&j).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_rcodes_are_named() {
        // RFC 6891 §6.1.3: an OPT record extends RCODE to 12 bits; IANA names 16..=23.
        let names: Vec<String> = (16..=23).map(rcode_name).collect();
        assert_eq!(
            names,
            [
                "BADVERS",
                "BADKEY",
                "BADTIME",
                "BADMODE",
                "BADNAME",
                "BADALG",
                "BADTRUNC",
                "BADCOOKIE"
            ]
        );
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(24), "RCODE24");
        assert_eq!(rcode_name(4095), "RCODE4095");
    }

    #[test]
    fn formats() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(flag_letters(0x13), "SAF");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(150_000_000), "150.0 MB");
    }

    /// The derived serialisation `write_flow_json` replaced, kept as its reference.
    #[derive(Serialize)]
    struct FlowJson<'a> {
        flow_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        continues: Option<u64>,
        ts: String,
        end_ts: String,
        duration: f64,
        proto: String,
        orig_ip: String,
        orig_port: u16,
        resp_ip: String,
        resp_port: u16,
        community_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        vlan: Option<Vec<u16>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tunnel_outer: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tunnel: Option<Vec<HopJson>>,
        orig_pkts: u64,
        orig_ip_bytes: u64,
        orig_bytes: u64,
        resp_pkts: u64,
        resp_ip_bytes: u64,
        resp_bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        orig_flags: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resp_flags: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<&'static str>,
        #[serde(flatten)]
        names: Option<NamesJson<'a>>,
        end_reason: &'static str,
        interim: bool,
        outbound: Option<&'static str>,
    }

    fn names(n: u64) -> Option<Box<crate::proto::FlowNames>> {
        use crate::proto::{FlowNames, Text};
        match n % 4 {
            0 => None,
            1 => Some(Box::default()),
            2 => Some(Box::new(FlowNames {
                server_name: Text::new(b"a\"b\\c\xff.example"),
                alpn: Text::new(b"h2"),
                tls_version: Some(0x0304),
                ..FlowNames::default()
            })),
            _ => Some(Box::new(FlowNames {
                http_host: Text::new(b"h.example:8080"),
                http_method: Text::new(b"PUT"),
                http_uri: Text::new(b"/x?\n"),
                http_content_length: Some(7),
                ..FlowNames::default()
            })),
        }
    }

    fn reference(r: &FlowRecord, seed: u16) -> String {
        let tcp = r.proto == proto::TCP;
        serde_json::to_string(&FlowJson {
            flow_id: r.flow_id,
            continues: r.continues.map(|x| x.get()),
            ts: rfc3339(r.start_ns),
            end_ts: rfc3339(r.last_ns),
            duration: secs(r.duration_ns()),
            proto: proto_name(r.proto),
            orig_ip: r.orig_addr.to_ip(r.ipv6).to_string(),
            orig_port: r.orig_port,
            resp_ip: r.resp_addr.to_ip(r.ipv6).to_string(),
            resp_port: r.resp_port,
            community_id: FlowTuple::of_record(r).community_id(seed).to_string(),
            vlan: vlan(r.vlan),
            tunnel_outer: r
                .tunnel_tag
                .is_outer()
                .then(|| r.tunnel_tag.tunnel_kind().name()),
            tunnel: r.tunnel().map(hops_json),
            orig_pkts: r.orig.pkts,
            orig_ip_bytes: r.orig.ip_bytes,
            orig_bytes: r.orig.payload_bytes,
            resp_pkts: r.resp.pkts,
            resp_ip_bytes: r.resp.ip_bytes,
            resp_bytes: r.resp.payload_bytes,
            orig_flags: tcp.then(|| flag_letters(r.orig_flags)),
            resp_flags: tcp.then(|| flag_letters(r.resp_flags)),
            state: tcp.then(|| r.tcp.name()),
            names: r.names().map(names_json),
            end_reason: r.reason.name(),
            interim: r.reason == crate::flow::EndReason::ActiveTimeout,
            outbound: r.outbound.map(|s| match s {
                Side::Orig => "orig",
                Side::Resp => "resp",
            }),
        })
        .unwrap()
    }

    fn tunnel_tag(n: u64) -> crate::decode::TunnelTag {
        use crate::decode::{TunnelKind, TunnelTag};
        match n % 3 {
            0 => TunnelTag::default(),
            1 => TunnelTag {
                kind: TunnelKind::Vxlan as u8,
                id: 7,
            },
            _ => TunnelTag {
                kind: TunnelKind::Geneve as u8 | TunnelTag::OUTER,
                id: 0,
            },
        }
    }

    fn tunnel(n: u64) -> Option<Box<TunnelChain>> {
        use crate::decode::{Addr, TunnelKind};
        if n % 3 != 1 {
            return None;
        }
        let mut c = TunnelChain::default();
        c.hops[0] = TunnelHop {
            kind: TunnelKind::Gre,
            ipv6: true,
            src: Addr([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            dst: Addr([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
            sport: 0,
            dport: 0,
            id: if n % 2 == 0 { Some(0xdead_beef) } else { None },
        };
        c.hops[1] = TunnelHop {
            kind: TunnelKind::Vxlan,
            ipv6: false,
            src: Addr::v4([192, 0, 2, 1]),
            dst: Addr::v4([192, 0, 2, 2]),
            sport: 49152,
            dport: 4789,
            id: Some(7),
        };
        c.len = 2;
        Some(Box::new(c))
    }

    #[test]
    fn flow_json_equals_the_derived_form() {
        use crate::decode::Addr;
        use crate::flow::{DirCounters, EndReason, TcpState};
        let mut n = 0;
        for proto in [6u8, 17, 1, 58, 132] {
            for vlan in [[0, 0], [42, 0], [100, 7], [0, 9]] {
                for (ipv6, reason, outbound, dur) in [
                    (false, EndReason::Fin, Some(Side::Orig), 1_234_567u64),
                    (true, EndReason::ActiveTimeout, Some(Side::Resp), 0),
                    (false, EndReason::Evicted, None, 3_600_000_000_000),
                    (true, EndReason::Idle, None, 7),
                ] {
                    let r = FlowRecord {
                        flow_id: 12345 + n,
                        continues: std::num::NonZeroU64::new(n % 3),
                        proto,
                        ipv6,
                        orig_addr: if ipv6 {
                            Addr([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5])
                        } else {
                            Addr::v4([10, 0, 0, 5])
                        },
                        orig_port: 51234,
                        resp_addr: Addr::v4([203, 0, 113, 50]),
                        resp_port: 443,
                        vlan,
                        start_ns: 1_700_000_000_123_456_789,
                        last_ns: 1_700_000_000_123_456_789 + dur,
                        orig: DirCounters {
                            pkts: 3,
                            ip_bytes: 180 + n,
                            payload_bytes: 0,
                        },
                        resp: DirCounters {
                            pkts: u64::MAX,
                            ip_bytes: 1 << 55,
                            payload_bytes: 99,
                        },
                        orig_flags: (n * 7) as u8,
                        resp_flags: 0x3f,
                        tcp: TcpState::Established,
                        reason,
                        outbound,
                        tunnel_tag: tunnel_tag(n),
                        extra: match (tunnel(n), names(n)) {
                            (None, None) => None,
                            (t, n) => Some(Box::new(crate::flow::FlowExtra {
                                tunnel: t.map(|t| *t),
                                names: n.map(|n| *n),
                            })),
                        },
                    };
                    let seed = (n % 2) as u16 * 7;
                    assert_eq!(flow_json(&r, seed), reference(&r, seed));
                    n += 1;
                }
            }
        }
    }
}

/// One detector's part in an incident line.
#[derive(Serialize)]
struct ReasonJson<'a> {
    detector: &'static str,
    findings: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<u8>,
    first: String,
    last: String,
    last_alert_id: &'a str,
}

#[derive(Serialize)]
struct FlowBytesJson {
    flow_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<CommunityId>,
    out_ip_bytes: u64,
    in_ip_bytes: u64,
    open: bool,
}

#[derive(Serialize)]
struct IncidentJson<'a> {
    incident_id: &'a str,
    update: &'static str,
    ts: String,
    severity: &'static str,
    score: u8,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    escalation: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<&'static str>,
    /// Absent for an incident about a destination alone (data leak grouped by destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    dst_ips: Vec<String>,
    dst_names: &'a [String],
    reasons: Vec<ReasonJson<'a>>,
    first_seen: String,
    last_seen: String,
    out_ip_bytes: u64,
    in_ip_bytes: u64,
    findings: u64,
    alert_ids: &'a [String],
    flows: Vec<FlowBytesJson>,
    flows_open: usize,
    #[serde(skip_serializing_if = "is_zero")]
    flows_untracked: u64,
    slice_ids: &'a [String],
    slice_urls: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    server_names: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    alpns: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ja4s: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ja3s: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    http_hosts: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    http_methods: &'a [String],
}

/// An incident announcement as one JSON object: what the alert outputs write; `seed`: the
/// Community ID's.
pub fn incident_json(u: &IncidentUpdate, seed: u16) -> String {
    let i = &u.incident;
    let (out, inb) = i.totals();
    let to = match (i.dsts.len(), i.names.first()) {
        (0, Some(n)) => n.clone(),
        (0, None) => "external hosts".to_string(),
        (1, None) => i.dsts.first().map(ToString::to_string).unwrap_or_default(),
        (1, Some(n)) => format!(
            "{} ({n})",
            i.dsts.first().map(ToString::to_string).unwrap_or_default()
        ),
        (k, _) => format!("{k} destinations"),
    };
    let detectors: Vec<String> = i
        .reasons
        .iter()
        .map(|r| {
            if r.detector == crate::detect::Detector::LargeTransfer {
                format!("{} (tier {})", r.detector.name(), r.tier)
            } else {
                r.detector.name().to_string()
            }
        })
        .collect();
    let what = match u.update {
        Update::Opened => "opened",
        Update::Escalated => "escalated",
        Update::Closed => "closed",
    };
    let message = format!(
        "Exfiltration incident {what} ({}): {} → {to}: {} out, {} in over {}; {}",
        i.severity.name(),
        i.src
            .map_or_else(|| "home hosts".to_string(), |s| s.to_string()),
        human_bytes(out),
        human_bytes(inb),
        human_span(i.last_ns.saturating_sub(i.first_ns)),
        detectors.join(", ")
    );
    let j = IncidentJson {
        incident_id: &i.id,
        update: u.update.name(),
        ts: rfc3339(u.ts_ns),
        severity: i.severity.name(),
        score: i.score,
        message,
        escalation: if u.update == Update::Opened {
            Vec::new()
        } else {
            u.escalation.names()
        },
        close_reason: i.close_reason.map(|c| c.name()),
        src_ip: i.src.map(|s| s.to_string()),
        dst_ips: i.dsts.iter().map(ToString::to_string).collect(),
        dst_names: &i.names,
        reasons: i
            .reasons
            .iter()
            .map(|r| ReasonJson {
                detector: r.detector.name(),
                findings: r.findings,
                tier: (r.detector == crate::detect::Detector::LargeTransfer).then_some(r.tier),
                first: rfc3339(r.first_ns),
                last: rfc3339(r.last_ns),
                last_alert_id: &r.last_id,
            })
            .collect(),
        first_seen: rfc3339(i.first_ns),
        last_seen: rfc3339(i.last_ns),
        out_ip_bytes: out,
        in_ip_bytes: inb,
        findings: i.findings,
        alert_ids: &i.finding_ids,
        flows: i
            .flows
            .iter()
            .map(|f| FlowBytesJson {
                flow_id: f.flow_id,
                community_id: f.tuple.map(|t| t.community_id(seed)),
                out_ip_bytes: f.out_ip_bytes,
                in_ip_bytes: f.in_ip_bytes,
                open: f.open,
            })
            .collect(),
        flows_open: i.open_flows(),
        flows_untracked: i.flows_untracked,
        slice_ids: &i.slice_ids,
        slice_urls: i.slice_ids.iter().map(|id| slice_url(id)).collect(),
        server_names: &i.client_names.server_names,
        alpns: &i.client_names.alpns,
        ja4s: &i.client_names.ja4s,
        ja3s: &i.client_names.ja3s,
        http_hosts: &i.client_names.http_hosts,
        http_methods: &i.client_names.http_methods,
    };
    serde_json::to_string(&j).unwrap_or_default()
}
