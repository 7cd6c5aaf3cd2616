//! `GET /metrics`: the Prometheus text exposition, built at scrape time.
//!
//! Nothing here is updated per packet: workers and the output thread publish plain
//! counters and HdrHistograms (see [`crate::telemetry`]), and a scrape reads those copies,
//! sums them and encodes them with the `prometheus` crate's data model and text encoder.
//! Building the families from the published values (rather than registering live
//! `prometheus` counters) keeps atomics off the hot path. Names and labels are documented in
//! `docs/metrics.md`; every label value comes from a fixed set, never from traffic.

use super::AppState;
use crate::correlate::incident::{Severity, Update};
use crate::decode::DecodeError;
use crate::detect::Detector;
use crate::flow::EndReason;
use crate::pipeline::Snapshot;
use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use prometheus::proto::{
    Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use prometheus::{Encoder, TextEncoder};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Quantiles exported for the latency summaries.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

pub(super) async fn handler(State(state): State<Arc<AppState>>) -> Response {
    let families = gather(&state.telemetry);
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    match encoder.encode(&families, &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => super::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One family under construction.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn labels(labels: &[(&str, &str)]) -> Vec<LabelPair> {
        labels
            .iter()
            .map(|(n, v)| {
                let mut l = LabelPair::default();
                l.set_name((*n).to_string());
                l.set_value((*v).to_string());
                l
            })
            .collect()
    }

    fn counter(mut self, labels: &[(&str, &str)], v: u64) -> Family {
        let mut c = Counter::default();
        c.set_value(v as f64);
        let mut m = Metric::from_label(Self::labels(labels));
        m.set_counter(c);
        self.0.mut_metric().push(m);
        self
    }

    fn gauge(mut self, labels: &[(&str, &str)], v: f64) -> Family {
        let mut g = Gauge::default();
        g.set_value(v);
        let mut m = Metric::from_label(Self::labels(labels));
        m.set_gauge(g);
        self.0.mut_metric().push(m);
        self
    }

    /// A summary from nanosecond observations, exported in seconds: cumulative count and
    /// sum, quantiles over the recent window `h`.
    fn summary_ns(mut self, h: &Histogram<u64>, count: u64, sum_ns: f64) -> Family {
        let mut s = Summary::default();
        s.set_sample_count(count);
        // HdrHistogram keeps no exact sum; mean × count is exact to its precision (2
        // significant digits), which is what the quantiles have too.
        s.set_sample_sum(sum_ns / 1e9);
        s.set_quantile(
            QUANTILES
                .iter()
                .map(|q| {
                    let mut x = Quantile::default();
                    x.set_quantile(*q);
                    x.set_value(if h.is_empty() {
                        0.0
                    } else {
                        h.value_at_quantile(*q) as f64 / 1e9
                    });
                    x
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_summary(s);
        self.0.mut_metric().push(m);
        self
    }
}

/// Reads a mutex, or the default if it was poisoned (a panicked thread must not take the
/// metrics down with it).
fn read<T: Copy + Default>(m: &std::sync::Mutex<T>) -> T {
    m.lock().map_or_else(|_| T::default(), |g| *g)
}

/// One counter family per row: (name, help, the counter in `src`); 0 when `src` is absent
/// (not exporting, not on a bus), so dashboards and alerts always see the series.
type CounterRow<C> = (
    &'static str,
    &'static str,
    fn(&C) -> &std::sync::atomic::AtomicU64,
);

fn counters<C>(fams: &mut Vec<Family>, src: Option<&C>, rows: &[CounterRow<C>]) {
    for (name, help, get) in rows {
        let v = src.map_or(0, |c| get(c).load(Ordering::Relaxed));
        fams.push(Family::new(name, help, MetricType::COUNTER).counter(&[], v));
    }
}

/// Builds every family from what the pipeline published.
pub fn gather(t: &Telemetry) -> Vec<MetricFamily> {
    let reader = read(&t.reader.snap);
    let workers: Vec<Snapshot> = t.workers.iter().map(|w| read(&w.snap)).collect();
    let all: Vec<&Snapshot> = std::iter::once(&reader).chain(workers.iter()).collect();
    let sum = |f: &dyn Fn(&Snapshot) -> u64| all.iter().map(|s| f(s)).sum::<u64>();
    let out = read(&*t.output);
    let mut fams: Vec<Family> = Vec::with_capacity(40);

    let version = env!("CARGO_PKG_VERSION");
    fams.push(
        Family::new(
            "outflow_build_info",
            "Build information; always 1.",
            MetricType::GAUGE,
        )
        .gauge(&[("version", version)], 1.0),
    );
    let started = t
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    fams.push(
        Family::new(
            "outflow_start_time_seconds",
            "Unix time the process started.",
            MetricType::GAUGE,
        )
        .gauge(&[], started),
    );
    fams.push(
        Family::new(
            "outflow_capturing",
            "1 while packets are being read (live: capture open; replay: until the end of input).",
            MetricType::GAUGE,
        )
        .gauge(&[], f64::from(u8::from(t.is_capturing()))),
    );
    fams.push(
        Family::new("outflow_workers", "Workers configured.", MetricType::GAUGE)
            .gauge(&[], t.workers.len() as f64),
    );
    fams.push(
        Family::new(
            "outflow_workers_alive",
            "Workers still running.",
            MetricType::GAUGE,
        )
        .gauge(&[], t.workers_alive() as f64),
    );
    fams.push(
        Family::new(
            "outflow_frames_total",
            "Frames read from the capture, decodable or not.",
            MetricType::COUNTER,
        )
        .counter(&[], sum(&|s| s.frames)),
    );

    let ids: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    let per_worker = |name: &str, help: &str, kind: MetricType, f: &dyn Fn(&Snapshot) -> u64| {
        let mut fam = Family::new(name, help, kind);
        for (id, s) in ids.iter().zip(&workers) {
            fam = match kind {
                MetricType::GAUGE => fam.gauge(&[("worker", id)], f(s) as f64),
                _ => fam.counter(&[("worker", id)], f(s)),
            };
        }
        fam
    };
    fams.push(per_worker(
        "outflow_packets_total",
        "Packets decoded and processed by the worker.",
        MetricType::COUNTER,
        &|s| s.flows.packets,
    ));
    fams.push(per_worker(
        "outflow_bytes_total",
        "Wire bytes of the packets the worker processed.",
        MetricType::COUNTER,
        &|s| s.flows.wire_bytes,
    ));
    fams.push(
        Family::new(
            "outflow_kernel_received_total",
            "Packets the kernel delivered to outflow's capture handles (libpcap ps_recv).",
            MetricType::COUNTER,
        )
        .counter(&[], sum(&|s| s.kernel_received)),
    );
    fams.push(
        Family::new(
            "outflow_kernel_drops_total",
            "Packets lost before outflow saw them: kernel buffer full (kernel) or dropped by the interface or driver (interface).",
            MetricType::COUNTER,
        )
        .counter(&[("where", "kernel")], sum(&|s| s.kernel_dropped))
        .counter(&[("where", "interface")], sum(&|s| s.interface_dropped)),
    );
    fams.push(
        Family::new(
            "outflow_internal_drops_total",
            "Packets (worker_queue) or events and alerts (event_queue, alert_queue) outflow dropped because the next stage was full; carried_counters: a reused tuple's earlier counts not carried because the flow table's side map was full.",
            MetricType::COUNTER,
        )
        .counter(&[("reason", "worker_queue")], sum(&|s| s.queue_dropped))
        .counter(&[("reason", "event_queue")], sum(&|s| s.events_dropped))
        .counter(&[("reason", "alert_queue")], sum(&|s| s.alerts_dropped))
        .counter(
            &[("reason", "slice_writer")],
            sum(&|s| s.flows.slices.dropped + s.flows.slices.lost_messages),
        )
        .counter(
            &[("reason", "carried_counters")],
            sum(&|s| s.flows.carry_dropped),
        ),
    );
    let mut decode = Family::new(
        "outflow_decode_failures_total",
        "Frames that could not be decoded, by reason.",
        MetricType::COUNTER,
    );
    for e in DecodeError::ALL {
        decode = decode.counter(
            &[("reason", e.name())],
            sum(&|s| s.decode_errors.get(e.index()).copied().unwrap_or(0)),
        );
    }
    fams.push(decode);
    let mut encap = Family::new(
        "outflow_decapsulated_frames_total",
        "Frames that came through each encapsulation (tunnels, MPLS, PPPoE).",
        MetricType::COUNTER,
    );
    for (i, l) in crate::decode::Layer::ALL.iter().enumerate() {
        encap = encap.counter(
            &[("layer", l.name())],
            sum(&|s| s.encap.layers.get(i).copied().unwrap_or(0)),
        );
    }
    fams.push(encap);
    let mut notes = Family::new(
        "outflow_decode_notes_total",
        "Frames decoded with a caveat: a tunnel nested deeper than decap.max_depth \
         (too_deep), a tunnel whose inside did not decode and was counted in the tunnel's \
         own flow (tunnel_inner_error), an IP length taken from the frame (offload_length: \
         TSO/GRO).",
        MetricType::COUNTER,
    );
    for (name, f) in [
        (
            "too_deep",
            (|s: &Snapshot| s.encap.too_deep) as fn(&Snapshot) -> u64,
        ),
        ("tunnel_inner_error", |s: &Snapshot| s.encap.inner_errors),
        ("offload_length", |s: &Snapshot| s.encap.len_from_frame),
    ] {
        notes = notes.counter(&[("note", name)], sum(&f));
    }
    fams.push(notes);
    fams.push(per_worker(
        "outflow_flows_active",
        "Flows in the worker's table now.",
        MetricType::GAUGE,
        &|s| s.flows_active,
    ));
    fams.push(per_worker(
        "outflow_flows_created_total",
        "Flows created.",
        MetricType::COUNTER,
        &|s| s.flows.flows_created,
    ));
    let mut ended = Family::new(
        "outflow_flows_ended_total",
        "Flow records by end reason.",
        MetricType::COUNTER,
    );
    for (i, r) in EndReason::ALL.iter().enumerate() {
        ended = ended.counter(
            &[("reason", r.name())],
            sum(&|s| s.flows.records.get(i).copied().unwrap_or(0)),
        );
    }
    fams.push(ended);
    let recent = |f: &dyn Fn(&crate::flow::RecentStats) -> u64| sum(&|s| f(&s.flows.recent));
    fams.push(
        Family::new(
            "outflow_tcp_recent_closed_total",
            "Recently closed TCP connections (for late FIN/RST): inserted = remembered after their linger; joined = a late packet without SYN started a flow that kept the connection's originator and links to its record; overwritten = a live entry replaced by a colliding insert; link_lost = a late flow's link to the first record lost (its bucket was full).",
            MetricType::COUNTER,
        )
        .counter(&[("event", "inserted")], recent(&|r| r.inserted))
        .counter(&[("event", "joined")], recent(&|r| r.joined))
        .counter(&[("event", "overwritten")], recent(&|r| r.overwritten))
        .counter(&[("event", "link_lost")], recent(&|r| r.links_lost)),
    );
    let tap = |f: &dyn Fn(&crate::proto::tap::TapStats) -> u64| sum(&|s| f(&s.flows.tap));
    let quic = |f: &dyn Fn(&crate::proto::tap::QuicTapStats) -> u64| sum(&|s| f(&s.flows.quic_tap));
    fams.push(
        Family::new(
            "outflow_name_tap_total",
            "The TCP name tap (TLS ClientHello, HTTP request head in a client's first bytes): looked = flows whose first client payload was examined; tls / http = hellos / request heads parsed; stashed = flows whose first bytes needed the stash (split across segments); out_of_order = flows given up on a segment out of order; gave_up = flows given up after 32 segments or 4 KiB without a verdict, or on a malformed hello; cut = segments only partly kept because the stash slot was full; quic_looked = UDP flows whose first datagram could be a QUIC v1/v2 client Initial; quic = ClientHellos read from decrypted Initials; quic_gave_up = no ClientHello within 8 datagrams, or one that did not decrypt or parse; quic_evicted = Initial decryption states taken from a connection in progress because all 64 were in use (the quic_initials table's evictions).",
            MetricType::COUNTER,
        )
        .counter(&[("event", "looked")], tap(&|t| t.looked))
        .counter(&[("event", "tls")], tap(&|t| t.tls))
        .counter(&[("event", "http")], tap(&|t| t.http))
        .counter(&[("event", "stashed")], tap(&|t| t.stashed))
        .counter(&[("event", "out_of_order")], tap(&|t| t.out_of_order))
        .counter(&[("event", "gave_up")], tap(&|t| t.gave_up))
        .counter(&[("event", "cut")], tap(&|t| t.cut))
        .counter(&[("event", "quic_looked")], quic(&|q| q.looked))
        .counter(&[("event", "quic")], quic(&|q| q.hellos))
        .counter(&[("event", "quic_gave_up")], quic(&|q| q.gave_up))
        .counter(&[("event", "quic_evicted")], quic(&|q| q.evicted)),
    );
    let evicted_idx = EndReason::ALL
        .iter()
        .position(|r| *r == EndReason::Evicted)
        .unwrap_or(usize::MAX);
    fams.push(
        Family::new(
            "outflow_flows_evicted_total",
            "Flows evicted because the flow table was full.",
            MetricType::COUNTER,
        )
        .counter(
            &[],
            sum(&|s| s.flows.records.get(evicted_idx).copied().unwrap_or(0)),
        ),
    );
    let mut alerts = Family::new(
        "outflow_alerts_total",
        "Alerts written, by detector.",
        MetricType::COUNTER,
    );
    for (i, d) in Detector::ALL.iter().enumerate() {
        alerts = alerts.counter(
            &[("detector", d.name())],
            out.alerts_by_detector.get(i).copied().unwrap_or(0),
        );
    }
    fams.push(alerts);
    let inc = &out.incidents;
    let mut reached = Family::new(
        "outflow_incidents_total",
        "Incidents that reached each severity (one escalating from medium to high counts in both).",
        MetricType::COUNTER,
    );
    for (i, sev) in Severity::ALL.iter().enumerate() {
        reached = reached.counter(
            &[("severity", sev.name())],
            inc.reached_by_severity.get(i).copied().unwrap_or(0),
        );
    }
    fams.push(reached);
    let mut updates = Family::new(
        "outflow_incident_updates_total",
        "Incident lines announced, by kind (opened, escalated, closed).",
        MetricType::COUNTER,
    );
    for (i, u) in Update::ALL.iter().enumerate() {
        updates = updates.counter(
            &[("update", u.name())],
            inc.updates.get(i).copied().unwrap_or(0),
        );
    }
    fams.push(updates);
    fams.push(
        Family::new(
            "outflow_incidents_open",
            "Incidents open now.",
            MetricType::GAUGE,
        )
        .gauge(&[], inc.open as f64),
    );
    fams.push(
        Family::new(
            "outflow_incidents_evicted_total",
            "Incidents closed early because incident.capacity was reached.",
            MetricType::COUNTER,
        )
        .counter(&[], inc.evicted),
    );
    fams.push(
        Family::new(
            "outflow_alerts_allowlisted_total",
            "Flow alerts silenced by allow.dst_domains.",
            MetricType::COUNTER,
        )
        .counter(&[], out.allowlisted_alerts),
    );
    fams.push(
        Family::new(
            "outflow_dns_messages_total",
            "DNS messages parsed.",
            MetricType::COUNTER,
        )
        .counter(&[], sum(&|s| s.flows.dns.messages)),
    );
    fams.push(
        Family::new(
            "outflow_dns_malformed_total",
            "DNS messages that did not parse.",
            MetricType::COUNTER,
        )
        .counter(&[], sum(&|s| s.flows.dns.malformed)),
    );
    let mut defrag = Family::new(
        "outflow_ip_reassembly_total",
        "IP fragment reassembly for the parsers (DNS over UDP): datagrams started, reassembled, dropped at timeout, evicted (all slots taken) or with too many fragments; fragments ignored as overlapping (the bytes received first are kept), too big (past 65535 bytes), bad (zero length, misaligned, contradicting the end) or truncated (cut by the snaplen).",
        MetricType::COUNTER,
    );
    for (i, (event, _)) in crate::defrag::DefragStats::default()
        .named()
        .iter()
        .enumerate()
    {
        defrag = defrag.counter(
            &[("event", event)],
            sum(&|s| s.flows.defrag.named().get(i).map_or(0, |(_, n)| *n)),
        );
    }
    fams.push(defrag);

    let mut pairs = Family::new(
        "outflow_dns_pair_evictions_total",
        "Live (client, domain) DNS windows evicted to make room, by reason: cold (one ordinary query), warm (more queries, or one suspicious subdomain), hot (two or more unique suspicious subdomains: tunnel state lost), client_share (a client over its share replaced its own pair).",
        MetricType::COUNTER,
    );
    let by_reason = out.dns.pairs_evicted.by_reason();
    for (reason, n) in crate::correlate::dns_pairs::PairEvictions::REASONS
        .iter()
        .zip(by_reason)
    {
        pairs = pairs.counter(&[("reason", reason)], n);
    }
    fams.push(pairs);

    // Bounded tables (every one of them, see `telemetry::TABLES`): the workers' summed
    // over workers, the fragment maps, the output thread's and the alert store.
    let mut entries = Family::new(
        "outflow_table_entries",
        "Entries in a bounded table now.",
        MetricType::GAUGE,
    );
    let mut capacity = Family::new(
        "outflow_table_capacity",
        "Capacity of a bounded table.",
        MetricType::GAUGE,
    );
    let mut evictions = Family::new(
        "outflow_table_evictions_total",
        "Entries evicted (or refused) because a bounded table was full.",
        MetricType::COUNTER,
    );
    let tables = crate::telemetry::snapshot_tables(
        all.iter().copied(),
        &out.tables,
        Some(t.store.occupancy()),
    );
    for (name, (n, cap, ev)) in tables {
        entries = entries.gauge(&[("table", name)], n as f64);
        capacity = capacity.gauge(&[("table", name)], cap as f64);
        evictions = evictions.counter(&[("table", name)], ev);
    }
    fams.extend([entries, capacity, evictions]);

    // Packet rings and slices.
    fams.push(
        Family::new(
            "outflow_ring_packets",
            "Packets held in the workers' rings of recent packets.",
            MetricType::GAUGE,
        )
        .gauge(&[], sum(&|s| s.flows.ring.0) as f64),
    );
    fams.push(
        Family::new(
            "outflow_ring_used_bytes",
            "Bytes of the rings in use.",
            MetricType::GAUGE,
        )
        .gauge(&[], sum(&|s| s.flows.ring.1) as f64),
    );
    fams.push(
        Family::new(
            "outflow_ring_capacity_bytes",
            "Bytes of the rings (slice.ring_bytes per worker, allocated at start).",
            MetricType::GAUGE,
        )
        .gauge(&[], sum(&|s| s.flows.ring.2) as f64),
    );
    fams.push(
        Family::new(
            "outflow_ring_evicted_total",
            "Packets evicted from the rings to make room (the history horizon moving on).",
            MetricType::COUNTER,
        )
        .counter(&[], sum(&|s| s.flows.ring.3)),
    );
    let sl = &t.slices;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    fams.push(
        Family::new(
            "outflow_slices_total",
            "Pcap slices by outcome: started, completed, failed (write error), deleted (retention).",
            MetricType::COUNTER,
        )
        .counter(&[("outcome", "started")], load(&sl.started))
        .counter(&[("outcome", "completed")], load(&sl.completed))
        .counter(&[("outcome", "failed")], load(&sl.failed))
        .counter(&[("outcome", "deleted")], load(&sl.deleted)),
    );
    fams.push(
        Family::new(
            "outflow_slices_recording",
            "Slices recording now.",
            MetricType::GAUGE,
        )
        .gauge(&[], load(&sl.open) as f64),
    );
    fams.push(
        Family::new(
            "outflow_slice_packets_total",
            "Packets written into slices.",
            MetricType::COUNTER,
        )
        .counter(&[], load(&sl.packets)),
    );
    fams.push(
        Family::new(
            "outflow_slice_write_errors_total",
            "Slice write errors (disk full, permissions).",
            MetricType::COUNTER,
        )
        .counter(&[], load(&sl.errors)),
    );
    fams.push(
        Family::new(
            "outflow_slice_disk_bytes",
            "Bytes of slices in slice.dir after the last retention pass.",
            MetricType::GAUGE,
        )
        .gauge(&[], load(&sl.disk_bytes) as f64),
    );

    // Alert sinks.
    let sinks = t.sinks.lock().map(|g| g.clone()).unwrap_or_default();
    let mut delivered = Family::new(
        "outflow_sink_alerts_total",
        "Alerts a sink delivered.",
        MetricType::COUNTER,
    );
    let mut failures = Family::new(
        "outflow_sink_failures_total",
        "Failed delivery attempts (each retry counts).",
        MetricType::COUNTER,
    );
    let mut dropped = Family::new(
        "outflow_sink_dropped_total",
        "Alerts a sink gave up on (queue full, or unsent at shutdown).",
        MetricType::COUNTER,
    );
    let mut queued = Family::new(
        "outflow_sink_queued",
        "Alerts waiting in a sink's queue.",
        MetricType::GAUGE,
    );
    let mut up = Family::new(
        "outflow_sink_up",
        "1 if the sink's last delivery attempt succeeded.",
        MetricType::GAUGE,
    );
    for (name, c) in &sinks {
        let l = [("sink", *name)];
        delivered = delivered.counter(&l, c.delivered.load(Ordering::Relaxed));
        failures = failures.counter(&l, c.failures.load(Ordering::Relaxed));
        dropped = dropped.counter(&l, c.dropped.load(Ordering::Relaxed));
        queued = queued.gauge(&l, c.queued.load(Ordering::Relaxed) as f64);
        up = up.gauge(&l, f64::from(u8::from(c.up.load(Ordering::Relaxed))));
    }
    fams.extend([delivered, failures, dropped, queued, up]);

    // IPFIX export (zero when not exporting, so dashboards and alerts see the series).
    counters(
        &mut fams,
        t.ipfix.get().map(|c| &**c),
        &[
            (
                "outflow_ipfix_records_total",
                "Flow records exported as IPFIX data records.",
                |c| &c.records,
            ),
            (
                "outflow_ipfix_messages_total",
                "IPFIX messages sent to the collector.",
                |c| &c.messages,
            ),
            (
                "outflow_ipfix_dropped_records_total",
                "Flow records not exported: queue full, or lost with a message that failed.",
                |c| &c.dropped,
            ),
            (
                "outflow_ipfix_errors_total",
                "Failed IPFIX sends or connects to the collector.",
                |c| &c.errors,
            ),
        ],
    );

    // The event bus (src/bus/): zero when not on a bus.
    let bus = t.bus.get();
    let bx = |f: fn(&crate::telemetry::BusCounters) -> &std::sync::atomic::AtomicU64| {
        bus.map_or(0, |c| f(c).load(Ordering::Relaxed))
    };
    counters(
        &mut fams,
        bus.map(|c| &**c),
        &[
        (
            "outflow_bus_published_events_total",
            "Events acknowledged by the bus.",
            |c| &c.published,
        ),
        (
            "outflow_bus_dropped_events_total",
            "Events not published: the queue to the bus was full, or still held when the drain timed out.",
            |c| &c.dropped,
        ),
        (
            "outflow_bus_messages_total",
            "Messages acknowledged by the bus: batches of events and progress marks.",
            |c| &c.messages,
        ),
        (
            "outflow_bus_resent_messages_total",
            "Messages published again after a failed acknowledgement (de-duplicated by the bus).",
            |c| &c.resent,
        ),
        (
            "outflow_bus_errors_total",
            "Failed bus publishes, connects, stream or lease operations.",
            |c| &c.errors,
        ),
        (
            "outflow_bus_consumed_events_total",
            "Correlator: events read from the partitions it owns.",
            |c| &c.consumed,
        ),
        (
            "outflow_bus_late_events_total",
            "Correlator: events that arrived after the merge had passed their packet time.",
            |c| &c.late,
        ),
        (
            "outflow_bus_replayed_events_total",
            "Correlator: events re-read to rebuild a partition taken over, outputs already written.",
            |c| &c.replayed,
        ),
        (
            "outflow_bus_duplicate_messages_total",
            "Correlator: messages dropped as copies of ones already taken.",
            |c| &c.duplicates,
        ),
        (
            "outflow_bus_snapshots_total",
            "Correlator: partition snapshots stored (state and the stream sequence it covers).",
            |c| &c.snapshots,
        ),
        (
            "outflow_bus_lease_losses_total",
            "Correlator: partition leases lost to another correlator or expired.",
            |c| &c.lease_losses,
        ),
        ],
    );
    fams.push(
        Family::new(
            "outflow_bus_queued_events",
            "Events waiting for the bus now.",
            MetricType::GAUGE,
        )
        .gauge(&[], bx(|c| &c.queued) as f64),
    );
    fams.push(
        Family::new(
            "outflow_bus_partitions_owned",
            "Correlator: partitions of the event stream owned now.",
            MetricType::GAUGE,
        )
        .gauge(&[], bx(|c| &c.partitions_owned) as f64),
    );
    fams.push(
        Family::new(
            "outflow_bus_connected",
            "1 while connected to the bus (0 also when not using one).",
            MetricType::GAUGE,
        )
        .gauge(
            &[],
            f64::from(u8::from(
                bus.is_some_and(|c| c.connected.load(Ordering::Relaxed)),
            )),
        ),
    );

    // The HTTP server's own connections (src/http/conn.rs): a rising eviction or timeout
    // rate means clients are holding connections open without using them.
    let http = &t.http;
    fams.push(
        Family::new(
            "outflow_http_connections_open",
            "HTTP connections open now (idle or serving a request).",
            MetricType::GAUGE,
        )
        .gauge(&[], load(&http.open) as f64),
    );
    fams.push(
        Family::new(
            "outflow_http_connections_accepted_total",
            "HTTP connections accepted.",
            MetricType::COUNTER,
        )
        .counter(&[], load(&http.accepted)),
    );
    fams.push(
        Family::new(
            "outflow_http_connections_evicted_total",
            "Idle HTTP connections closed to make room for a new one (the connection table was full) or to free a descriptor.",
            MetricType::COUNTER,
        )
        .counter(&[], load(&http.evicted)),
    );
    let mut timed_out = Family::new(
        "outflow_http_connections_timed_out_total",
        "HTTP connections closed by a deadline: header (request head not complete in time), idle (no next keep-alive request), request (response not finished in time).",
        MetricType::COUNTER,
    );
    for p in crate::http::conn::Phase::ALL {
        timed_out = timed_out.counter(&[("phase", p.name())], http.timed_out(p));
    }
    fams.push(timed_out);
    let mut rejected = Family::new(
        "outflow_http_requests_rejected_total",
        "HTTP requests answered 503 because their class's requests-in-progress budget was full (probe: /metrics and /healthz; api: the rest).",
        MetricType::COUNTER,
    );
    for c in crate::http::budget::Class::ALL {
        rejected = rejected.counter(&[("class", c.name())], http.rejected(c));
    }
    fams.push(rejected);

    // Latencies: merge the workers' histograms (each has the same bounds).
    let mut processing = crate::telemetry::new_histogram();
    let (mut count, mut sum_ns) = (0u64, 0f64);
    for w in &t.workers {
        if let Ok(mut h) = w.processing.lock() {
            let _ = processing.add(h.window());
            count += h.count();
            sum_ns += h.sum_ns();
        }
    }
    fams.push(
        Family::new(
            "outflow_packet_processing_seconds",
            "Worker time per packet (decode, flow update, detection), averaged over each batch.",
            MetricType::SUMMARY,
        )
        .summary_ns(&processing, count, sum_ns),
    );
    let (latency, count, sum_ns) = t.latency.lock().map_or_else(
        |_| (crate::telemetry::new_histogram(), 0, 0.0),
        |mut h| (h.window(), h.count(), h.sum_ns()),
    );
    fams.push(
        Family::new(
            "outflow_detection_latency_seconds",
            "From reading the packet that made a flow alert fire to the alert reaching the sinks.",
            MetricType::SUMMARY,
        )
        .summary_ns(&latency, count, sum_ns),
    );

    // Families with no sample (no sink configured) are left out: the text format has no
    // way to say "zero series" and Prometheus treats that as absent anyway.
    fams.into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}
