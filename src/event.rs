//! The plain types that pass between stages: what a worker hands on (flow records, findings,
//! DNS messages, volume reports), in the total order that lets the merge after the workers
//! give the same stream for any number of workers.
//!
//! Each payload type is defined by the stage that produces it ([`FlowRecord`] by `flow`,
//! [`Alert`] by `detect`, [`DnsEvent`] by `dns`); this module only wraps them into the
//! stream, so the cross-flow stage ([`crate::correlate`]) and the outputs depend on this
//! file, not on the worker.
//!
//! For a correlator running in another process (the sensor publishes its event stream on a
//! message bus), [`encode`] and [`decode`] carry one keyed event as bytes: a version byte,
//! then the key and the event in postcard, serde's compact binary format (integers as
//! varints, enum variants and fields by position, no names).

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

/// Version of the [`encode`] format, its first byte. Postcard names nothing: a field added,
/// removed or moved, or a variant inserted before another anywhere in [`Event`] and the
/// types it holds, changes what the bytes mean, so any such change must raise this, and a
/// reader of another version refuses the message ([`WireError::Version`]) instead of
/// decoding garbage. Version 2: a flow's names carry its JA3 fingerprint.
pub const WIRE_VERSION: u8 = 2;

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message is empty: not even its version byte.
    #[error("empty event message (no version byte)")]
    Empty,
    /// The message is of another format version.
    #[error("event message of wire version {found}, this build reads version {expected}")]
    Version {
        /// The message's version byte.
        found: u8,
        /// [`WIRE_VERSION`].
        expected: u8,
    },
    /// Serialising failed (postcard's error).
    #[error("encoding an event")]
    Encode(#[source] postcard::Error),
    /// The bytes after the version byte are not a key and an event (postcard's error): cut
    /// short, or corrupt.
    #[error("malformed event message")]
    Decode(#[source] postcard::Error),
    /// Bytes were left after the event: one message holds one event, so the message is
    /// corrupt (or of a writer that did not raise the version).
    #[error("{0} bytes left after the event")]
    Trailing(usize),
}

/// Encodes one event with its key for the bus (postcard).
///
/// Appends to `out` and leaves what it held before in place, so a publisher can reuse one
/// buffer: clearing it between messages is the caller's part. On an error `out` is as it
/// was. [`Alert::read_mono_ns`](crate::detect::Alert::read_mono_ns) is not carried (see
/// there).
pub fn encode(key: &EventKey, ev: &Event, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.push(WIRE_VERSION);
    // `to_io` writes through the `&mut Vec` (the `Extend` flavour would take the vector by
    // value and lose it on an error).
    match postcard::to_io(&(key, ev), &mut *out) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(WireError::Encode(e))
        }
    }
}

/// Decodes what `encode` wrote; hostile/corrupt bytes give an error, never a panic.
///
/// Postcard checks a string's length against the bytes that remain before anything is
/// allocated, and the event types hold no other variable-length part, so a message cannot
/// make this allocate much more than its own size (plus the fixed size of the event). What it decodes is a well-formed value of each type, not a consistent event: a
/// corrupt message can still name an arena offset past the arena, which the accessors
/// ([`DnsEvent::arena_bytes`](crate::dns::DnsEvent::arena_bytes)) answer with nothing.
pub fn decode(bytes: &[u8]) -> Result<(EventKey, Event), WireError> {
    let (&found, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if found != WIRE_VERSION {
        return Err(WireError::Version {
            found,
            expected: WIRE_VERSION,
        });
    }
    let (keyed, rest) =
        postcard::take_from_bytes::<(EventKey, Event)>(body).map_err(WireError::Decode)?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(keyed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{TunnelChain, TunnelHop, TunnelKind};
    use crate::proto::{FlowNames, Text};

    /// An alert with every optional part set, as the output stage leaves it.
    fn full_alert() -> Alert {
        let mut a = crate::detect::test_alert(7, "203.0.113.50", 1, 2_000, 150_000_000, 1_000);
        let mut chain = TunnelChain::default();
        chain.hops[0] = TunnelHop {
            kind: TunnelKind::Vxlan,
            ipv6: false,
            src: Addr::v4([172, 31, 0, 10]),
            dst: Addr::v4([172, 31, 0, 99]),
            sport: 49_152,
            dport: 4789,
            id: Some(7),
        };
        chain.len = 1;
        a.tunnel = Some(Box::new(chain));
        a.names = Some(Box::new(FlowNames {
            server_name: Text::new(b"content.dropboxapi.com"),
            alpn: Text::new(b"h2"),
            tls_version: Some(0x0304),
            ja3: Some(crate::proto::tls::Ja3(*b"0e870cb29dd59424064948532781a7f6")),
            ..FlowNames::default()
        }));
        a.dst_fqdn = Some("content.dropboxapi.com".into());
        a.dst_fqdn_source = Some("sni");
        a.slice_id = Some("7-1".into());
        a
    }

    fn key() -> EventKey {
        EventKey {
            time_ns: 1_700_000_000_000_000_000,
            class: 1,
            id: 42,
            sub: 3,
        }
    }

    #[test]
    fn an_alert_round_trips_without_its_monotonic_read_time() {
        let mut a = full_alert();
        a.read_mono_ns = 123_456_789;
        let mut buf = Vec::new();
        encode(&key(), &Event::Alert(Box::new(a.clone())), &mut buf).unwrap();
        assert_eq!(buf.first(), Some(&WIRE_VERSION));
        let (k, e) = decode(&buf).unwrap();
        // Process-local: not carried, decoded as "not stamped".
        a.read_mono_ns = 0;
        assert_eq!((k, e), (key(), Event::Alert(Box::new(a))));
    }

    #[test]
    fn encode_appends_and_decode_takes_exactly_one_event() {
        let ev = Event::Alert(Box::new(full_alert()));
        let mut buf = vec![0xAA, 0xBB];
        encode(&key(), &ev, &mut buf).unwrap();
        assert_eq!(buf.get(..2), Some(&[0xAA, 0xBB][..]), "earlier bytes kept");
        let one = buf.get(2..).unwrap().to_vec();
        assert_eq!(decode(&one).unwrap(), (key(), ev.clone()));
        // A reused buffer, cleared by the caller, gives the same message.
        buf.clear();
        encode(&key(), &ev, &mut buf).unwrap();
        assert_eq!(buf, one);
        buf.push(0);
        assert!(matches!(decode(&buf), Err(WireError::Trailing(1))));
        for cut in 1..one.len() {
            assert!(matches!(
                decode(one.get(..cut).unwrap()),
                Err(WireError::Decode(_))
            ));
        }
    }

    #[test]
    fn another_version_byte_is_refused_by_name() {
        let mut buf = Vec::new();
        encode(&key(), &Event::Alert(Box::new(full_alert())), &mut buf).unwrap();
        for v in [0, WIRE_VERSION + 1, u8::MAX] {
            if let Some(b) = buf.first_mut() {
                *b = v;
            }
            match decode(&buf) {
                Err(WireError::Version { found, expected }) => {
                    assert_eq!((found, expected), (v, WIRE_VERSION))
                }
                other => panic!("version {v}: {other:?}"),
            }
        }
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        let e = WireError::Version {
            found: 2,
            expected: 1,
        };
        assert_eq!(
            e.to_string(),
            "event message of wire version 2, this build reads version 1"
        );
    }

    #[test]
    fn a_text_travels_as_its_bytes_and_a_longer_one_is_refused() {
        let t = Text::<4>::new(b"ab");
        let bytes = postcard::to_stdvec(&t).unwrap();
        assert_eq!(bytes, [2, b'a', b'b']);
        assert_eq!(postcard::from_bytes::<Text<4>>(&bytes).unwrap(), t);
        assert_eq!(
            postcard::from_bytes::<Text<4>>(&[4, 1, 2, 3, 4]).unwrap(),
            Text::new(&[1, 2, 3, 4])
        );
        assert!(postcard::from_bytes::<Text<4>>(&[5, 1, 2, 3, 4, 5]).is_err());
        // Self-describing formats give bytes as a sequence.
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "[97,98]");
        assert_eq!(serde_json::from_str::<Text<4>>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Text<4>>("[1,2,3,4,5]").is_err());
    }

    #[test]
    fn an_unknown_name_source_is_an_error_not_a_new_static_string() {
        let mut buf = Vec::new();
        encode(&key(), &Event::Alert(Box::new(full_alert())), &mut buf).unwrap();
        let at = buf
            .windows(4)
            .position(|w| w == [3, b's', b'n', b'i'])
            .expect("the source's text in the message");
        for (i, b) in b"xyz".iter().enumerate() {
            if let Some(slot) = buf.get_mut(at + 1 + i) {
                *slot = *b;
            }
        }
        assert!(matches!(decode(&buf), Err(WireError::Decode(_))));
    }

    #[test]
    fn json_of_the_types_that_had_serde_before_is_unchanged() {
        // The state snapshot stores addresses as 16 numbers; flows name tunnel kinds in
        // snake_case; the config reads byte counts the same way.
        let a = Addr::v4([10, 0, 0, 5]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "[0,0,0,0,0,0,0,0,0,0,255,255,10,0,0,5]");
        assert_eq!(serde_json::from_str::<Addr>(&json).unwrap(), a);
        assert_eq!(
            serde_json::to_string(&TunnelKind::GreUdp).unwrap(),
            "\"gre_udp\""
        );
        assert_eq!(
            serde_json::from_str::<TunnelKind>("\"gre_udp\"").unwrap(),
            TunnelKind::GreUdp
        );
        assert_eq!(
            serde_json::to_string(&crate::config::ByteCount::Payload).unwrap(),
            "\"payload\""
        );
    }
}
