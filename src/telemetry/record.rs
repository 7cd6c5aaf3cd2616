//! One alert, rendered once and shared by every sink.
//!
//! The output thread turns each alert (flow, DNS or cross-flow) into an [`AlertRecord`]:
//! the JSON line the file sink writes and `/api/alerts` serves, plus the few fields the
//! other sinks need (the syslog structured data, the API's filters). It is wrapped in an
//! `Arc` and handed to each sink's thread, so a slow sink never holds up the others.

use crate::correlate::incident::IncidentUpdate;
use crate::detect::Detector;
use std::net::IpAddr;

/// An alert as every sink sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    /// Alert id (`alert_id` in the JSON).
    pub id: String,
    /// When it fired, packet time, Unix nanoseconds.
    pub ts_ns: u64,
    /// Which detector raised it.
    pub detector: Detector,
    /// One sentence for a person (the JSON's `message`).
    pub message: String,
    /// Source (the home host), when the alert has one.
    pub src: Option<IpAddr>,
    /// Destination, when the alert has one.
    pub dst: Option<IpAddr>,
    /// Source port (flow alerts).
    pub sport: Option<u16>,
    /// Destination port (flow alerts).
    pub dport: Option<u16>,
    /// Transport protocol name (flow alerts).
    pub proto: Option<String>,
    /// Destination name from DNS, or the DNS alert's registered domain.
    pub fqdn: Option<String>,
    /// Flow id (flow alerts and per-flow cross-flow alerts).
    pub flow_id: Option<u64>,
    /// Bytes the alert is about (outbound IP bytes of the flow, or the window's total).
    pub bytes: Option<u64>,
    /// The whole alert as one JSON object, no trailing newline.
    pub json: String,
    /// For an incident line: which announcement (`opened`, `escalated`, `closed`); `None`
    /// for a detector's finding.
    pub update: Option<&'static str>,
    /// For an incident line: its severity name (`low` ... `critical`).
    pub severity: Option<&'static str>,
    /// RFC 5424 severity for syslog: the detector's for a finding, the incident's
    /// severity's for an incident line.
    pub syslog_severity: u8,
    /// Monotonic nanoseconds (see [`crate::pipeline::mono_ns`]) at which outflow read the
    /// packet that made the alert fire; 0 when unknown. Feeds the detection-latency metric.
    pub read_mono_ns: u64,
}

impl AlertRecord {
    /// Builds the record from a rendered alert JSON object. The JSON is the single source of
    /// truth for field values, so a sink can never disagree with the JSON line.
    pub fn from_json(detector: Detector, ts_ns: u64, json: String, read_mono_ns: u64) -> Self {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let ip = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .and_then(|x| x.parse().ok())
        };
        let fqdn = s("dst_fqdn").or_else(|| s("domain")).or_else(|| {
            v.get("dst_fqdns")
                .and_then(|x| x.as_array())
                .and_then(|a| a.first())
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        });
        AlertRecord {
            id: s("alert_id").unwrap_or_default(),
            ts_ns,
            detector,
            message: s("message").unwrap_or_default(),
            src: ip("src_ip"),
            dst: ip("dst_ip"),
            sport: u("src_port").and_then(|p| u16::try_from(p).ok()),
            dport: u("dst_port").and_then(|p| u16::try_from(p).ok()),
            proto: s("proto"),
            fqdn,
            flow_id: u("flow_id"),
            bytes: u("out_ip_bytes").or_else(|| u("total_bytes")),
            json,
            update: None,
            severity: None,
            syslog_severity: detector.syslog_severity(),
            read_mono_ns,
        }
    }

    /// Builds the record of an incident announcement (`json` from
    /// [`crate::output::json::incident_json`]). `detector` is the incident's first.
    pub fn from_incident(u: &IncidentUpdate, json: String) -> Self {
        let i = &u.incident;
        let detector = i
            .reasons
            .first()
            .map_or(Detector::LargeTransfer, |r| r.detector);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let message = v
            .get("message")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string();
        AlertRecord {
            id: i.id.clone(),
            ts_ns: u.ts_ns,
            detector,
            message,
            src: i.src,
            dst: i.dsts.first().copied(),
            sport: None,
            dport: None,
            proto: None,
            fqdn: i.names.first().cloned(),
            flow_id: i.flows.first().map(|f| f.flow_id),
            bytes: Some(i.totals().0),
            json,
            update: Some(u.update.name()),
            severity: Some(i.severity.name()),
            syslog_severity: i.severity.syslog(),
            read_mono_ns: u.read_mono_ns,
        }
    }
}
