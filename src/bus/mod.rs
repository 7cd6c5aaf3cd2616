//! The event bus between sensors and correlators (NATS JetStream).
//!
//! A sensor whose `bus.url` is set runs its per-flow detectors as always (the mid-connection
//! alert is written at the crossing packet, bus or not) and publishes the event stream its
//! cross-flow stage would have consumed — flow records, volume and age reports, DNS
//! messages, destination names, per-flow findings — to the stream [`STREAM`], one subject
//! per partition ([`subject`]), partitioned by home host so every event about one host
//! reaches the same correlator. `outflow correlate` ([`crate::cluster`]) claims partitions
//! through leases in a key-value bucket and runs [`crate::correlate::Correlator`] over each,
//! merging the sensors by packet time ([`merge`]).
//!
//! - [`wire`]: the message format (an envelope naming the sensor around an encoded
//!   [`crate::event::Event`], or a progress mark);
//! - [`publish`]: the sensor's side, a thread with a bounded queue that never holds up the
//!   output thread;
//! - [`merge`]: the correlator's per-partition merge with per-sensor watermarks.

pub mod merge;
pub mod publish;
pub mod wire;

use crate::decode::Addr;
use crate::event::Event;
use std::time::Duration;

/// The JetStream stream of sensor events.
pub const STREAM: &str = "OUTFLOW_EVENTS";
/// Subjects of the event stream: `outflow.events.<partition>`.
pub const SUBJECT_PREFIX: &str = "outflow.events";
/// The key-value bucket of partition leases (`p<partition>` → correlator id).
pub const LEASES: &str = "outflow_leases";
/// The key-value bucket of live correlators (`m_<id>`, lapsing with the lease TTL): each
/// claims its share of the partitions, partitions / members rounded up.
pub const MEMBERS: &str = "outflow_members";
/// The key-value bucket of per-partition checkpoints (`p<partition>`).
pub const CHECKPOINTS: &str = "outflow_checkpoints";
/// The object store of per-partition snapshots (`p<partition>`).
pub const SNAPSHOTS: &str = "outflow_snapshots";
/// The stream of incident announcements a correlator publishes.
pub const INCIDENT_STREAM: &str = "OUTFLOW_INCIDENTS";
/// Subject of incident announcements (one JSON line each, as in the alert file).
pub const INCIDENT_SUBJECT: &str = "outflow.incidents";
/// How long JetStream remembers a message id to drop a re-sent duplicate. Longer than any
/// outage a publisher rides out by re-sending (it re-sends what was not acknowledged).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The subject of partition `p`.
pub fn subject(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}")
}

/// The stream's description, which records the partition count fixed at its creation:
/// every sensor and correlator reads it back from there, so a config that disagrees
/// cannot split one host's events over two partitions.
pub fn stream_description(partitions: u32) -> String {
    format!("outflow sensor events; partitions={partitions}")
}

/// The partition count recorded in a stream description, if it is one of ours.
pub fn partitions_of(description: &str) -> Option<u32> {
    description
        .rsplit_once("partitions=")
        .and_then(|(_, n)| n.trim().parse().ok())
        .filter(|n| (1..=1024).contains(n))
}

/// FNV-1a over the address bytes: the same on every host and every build (the std hasher
/// is randomly keyed per process, which would scatter one host over partitions).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The partition of a home host.
pub fn partition_of_addr(home: Addr, partitions: u32) -> u32 {
    (fnv1a(&home.0) % u64::from(partitions.max(1))) as u32
}

/// The home host an event is about: the cross-flow stage keys all its state (host windows,
/// DNS windows, incidents) by it, so it decides the partition.
pub fn home_of(ev: &Event) -> Addr {
    match ev {
        Event::Volume(v) | Event::Age(v) => v.src,
        Event::Alert(a) => Addr::from_ip(a.src),
        Event::Dns(d) => d.client,
        Event::Name(n) => n.client,
        Event::Flow(r) => match r.outbound {
            Some(crate::flow::Side::Resp) => r.resp_addr,
            _ => r.orig_addr,
        },
    }
}

/// The partition an event goes to.
pub fn partition_of(ev: &Event, partitions: u32) -> u32 {
    partition_of_addr(home_of(ev), partitions)
}

/// A flow id as a correlator knows it: every sensor (and every run of one) numbers its
/// flows from 1, so their flows would collide in one partition's tables. The top 16 bits
/// become the (sensor, run)'s tag, given in order of first appearance in the partition
/// ([`merge::PartitionMerge`]: the same on every correlator reading it); a sensor's own
/// flow ids stay below 2^48 (2.8e14 flows).
pub fn tag_flow_id(flow_id: u64, tag: u16) -> u64 {
    (flow_id & ((1 << 48) - 1)) | u64::from(tag) << 48
}

/// Tags every flow id in `ev` (see [`tag_flow_id`]).
pub fn tag_event(ev: &mut Event, tag: u16) {
    let t = |id: &mut u64| *id = tag_flow_id(*id, tag);
    match ev {
        Event::Flow(r) => {
            t(&mut r.flow_id);
            if let Some(c) = r.continues {
                let tagged = tag_flow_id(c.get(), tag);
                r.continues = std::num::NonZeroU64::new(tagged);
            }
        }
        Event::Alert(a) => t(&mut a.flow_id),
        Event::Dns(d) => t(&mut d.flow_id),
        Event::Volume(v) | Event::Age(v) => t(&mut v.flow_id),
        Event::Name(n) => t(&mut n.flow_id),
    }
}

/// Errors of the bus, naming what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached or refused us.
    #[error("bus.url {url}: cannot connect: {detail}")]
    Connect {
        /// The configured URL.
        url: String,
        /// The client's error.
        detail: String,
    },
    /// A JetStream operation failed (stream, consumer, key-value).
    #[error("bus: {what}: {detail}")]
    JetStream {
        /// What was being done ("create stream OUTFLOW_EVENTS").
        what: String,
        /// The client's error.
        detail: String,
    },
    /// A thread or runtime could not be started.
    #[error("bus: cannot start {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl BusError {
    /// A JetStream failure while doing `what`.
    pub fn js(what: impl Into<String>, e: impl std::fmt::Display) -> BusError {
        BusError::JetStream {
            what: what.into(),
            detail: e.to_string(),
        }
    }
}

/// Connects to `url` (comma-separated servers). `retry`: return at once and keep
/// connecting in the background (a sensor must start while the bus is down); otherwise
/// fail after a few seconds with a message naming the URL.
pub async fn connect(url: &str, name: &str, retry: bool) -> Result<async_nats::Client, BusError> {
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        // Unbounded reconnects: a sensor outlives any bus outage; what it could not
        // send meanwhile is counted.
        .max_reconnects(None);
    if retry {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(servers.as_slice())
        .await
        .map_err(|e| BusError::Connect {
            url: url.to_string(),
            detail: e.to_string(),
        })
}

/// Gets the event stream, creating it with `partitions` subjects and `retention` when it
/// does not exist, and returns the partition count it was created with.
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    partitions: u32,
    retention: Duration,
) -> Result<u32, BusError> {
    use async_nats::jetstream::stream;
    let cfg = stream::Config {
        name: STREAM.to_string(),
        description: Some(stream_description(partitions)),
        subjects: vec![format!("{SUBJECT_PREFIX}.*")],
        max_age: retention,
        // The server refuses a window longer than the retention.
        duplicate_window: DEDUP_WINDOW.min(retention),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut s = js
        .get_or_create_stream(cfg)
        .await
        .map_err(|e| BusError::js(format!("get or create stream {STREAM}"), e))?;
    let info = s
        .info()
        .await
        .map_err(|e| BusError::js(format!("stream {STREAM} info"), e))?;
    let found = info
        .config
        .description
        .as_deref()
        .and_then(partitions_of)
        .ok_or_else(|| {
            BusError::js(
                format!("stream {STREAM}"),
                "exists but was not created by outflow (no partition count in its description)",
            )
        })?;
    if found != partitions {
        tracing::warn!(
            configured = partitions,
            stream = found,
            "bus.partitions differs from the stream's; the stream's count is used"
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions of 10.0.0.1..=10.0.0.8 among 8.
    const GOLDEN: [u32; 8] = [6, 3, 0, 5, 2, 7, 4, 1];

    #[test]
    fn partitions_are_stable_and_recorded_in_the_description() {
        // Fixed values: a change would move hosts between partitions across versions (a
        // sensor and a correlator of different versions would disagree).
        let golden: Vec<u32> = (1..=8u8)
            .map(|i| partition_of_addr(Addr::v4([10, 0, 0, i]), 8))
            .collect();
        assert_eq!(golden, GOLDEN);
        assert_eq!(partition_of_addr(Addr::v4([10, 0, 0, 7]), 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..=255u8)
            .map(|i| partition_of_addr(Addr::v4([10, 0, 0, i]), 8))
            .collect();
        assert_eq!(spread.len(), 8);
        assert_eq!(partitions_of(&stream_description(12)), Some(12));
        assert_eq!(partitions_of("someone else's stream"), None);
        assert_eq!(partitions_of("partitions=0"), None);
    }

    #[test]
    fn tagged_flow_ids_keep_the_flow_and_name_the_sensor() {
        let id = tag_flow_id(42, 300);
        assert_eq!(id & ((1 << 48) - 1), 42);
        assert_eq!(id >> 48, 300);
        assert_eq!(tag_flow_id(id, 300), id);
    }
}
