//! The bus message: which sensor (and which run of it) sent it, and either a batch of events
//! of one partition (each encoded by [`crate::event::encode`]) or a progress mark.
//!
//! Layout: format version ([`ENVELOPE_VERSION`]: another is refused, not misread), kind
//! (1 = events, 2 = mark), sensor id length and bytes, run (u64 LE), the
//! message's number in its partition for this run (u64 LE, from 1: the correlator drops a
//! re-sent copy the bus's de-duplication window no longer remembers), then
//! each event as its length (u32 LE) and bytes, or the mark's watermark (u64 LE) and its
//! `done` flag. Batches: one JetStream publish (and acknowledgement) per event cost more CPU
//! than the sensor's whole analysis on a flow-heavy capture. Written by hand: a few fixed
//! bytes around payloads that have their own versioned encoding need no serialisation
//! framework, and reading them back is a handful of bounds-checked slices.

use crate::event::{EventKey, WireError};

/// Version of this layout, the first byte of every message.
pub const ENVELOPE_VERSION: u8 = 1;

const KIND_EVENTS: u8 = 1;
const KIND_MARK: u8 = 2;

/// What a bus message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// Events of the sensor's stream, in its order, still encoded.
    Events(Events<'a>),
    /// The sensor will publish no event with a packet time below `watermark_ns` (in this
    /// run); `done`: its input ended (a finished replay), it publishes nothing more.
    Mark {
        /// Packet time (ns).
        watermark_ns: u64,
        /// End of this run's stream.
        done: bool,
    },
}

/// A decoded bus message, borrowing from the message bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sensor's id (`bus.sensor_id`).
    pub sensor: &'a str,
    /// The sensor process's run: a restarted sensor starts its watermark again.
    pub run: u64,
    /// The message's number among this run's messages to its partition (from 1).
    pub msg: u64,
    /// The payload.
    pub body: Body<'a>,
}

/// A bus message that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    /// Shorter than its fields say.
    #[error("bus message truncated")]
    Truncated,
    /// Unknown kind byte (a newer sensor?).
    #[error("bus message of unknown kind {0}")]
    Kind(u8),
    /// The sensor id is not UTF-8.
    #[error("bus message with a sensor id that is not UTF-8")]
    Sensor,
    /// Written by another version of outflow.
    #[error("bus message of format version {found}, this build reads {ENVELOPE_VERSION}")]
    Version {
        /// The message's version byte.
        found: u8,
    },
}

/// The events of a batch, in order; a length running past the end ends it with an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Events<'a>(&'a [u8]);

impl<'a> Iterator for Events<'a> {
    type Item = Result<&'a [u8], EnvelopeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = take(&mut self.0, 4).and_then(|l| {
            let mut n = [0u8; 4];
            n.copy_from_slice(l);
            take(&mut self.0, u32::from_le_bytes(n) as usize)
        });
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

fn head(out: &mut Vec<u8>, kind: u8, sensor: &str, run: u64, msg: u64) {
    let s = sensor.as_bytes();
    let n = s.len().min(255);
    out.push(ENVELOPE_VERSION);
    out.push(kind);
    out.push(n as u8);
    out.extend_from_slice(s.get(..n).unwrap_or_default());
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&msg.to_le_bytes());
}

/// Starts a batch message in `out` (cleared by the caller, so a buffer can be reused);
/// [`push_event`] appends its events.
pub fn encode_batch_head(out: &mut Vec<u8>, sensor: &str, run: u64, msg: u64) {
    head(out, KIND_EVENTS, sensor, run, msg);
}

/// Appends one encoded event (from [`encode_event`]) to a batch.
pub fn push_event(out: &mut Vec<u8>, event: &[u8]) {
    out.extend_from_slice(&(event.len() as u32).to_le_bytes());
    out.extend_from_slice(event);
}

/// Encodes one event for a batch (appended to `out`).
pub fn encode_event(
    out: &mut Vec<u8>,
    key: &EventKey,
    ev: &crate::event::Event,
) -> Result<(), WireError> {
    crate::event::encode(key, ev, out)
}

/// Appends a mark message to `out`.
pub fn encode_mark(
    out: &mut Vec<u8>,
    sensor: &str,
    run: u64,
    msg: u64,
    watermark_ns: u64,
    done: bool,
) {
    head(out, KIND_MARK, sensor, run, msg);
    out.extend_from_slice(&watermark_ns.to_le_bytes());
    out.push(u8::from(done));
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], EnvelopeError> {
    if b.len() < n {
        return Err(EnvelopeError::Truncated);
    }
    let (x, rest) = b.split_at(n);
    *b = rest;
    Ok(x)
}

fn u64_le(b: &mut &[u8]) -> Result<u64, EnvelopeError> {
    let x = take(b, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(x);
    Ok(u64::from_le_bytes(a))
}

/// Reads a message; hostile bytes give an error, never a panic.
pub fn decode(mut b: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let version = *take(&mut b, 1)?.first().ok_or(EnvelopeError::Truncated)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version { found: version });
    }
    let kind = *take(&mut b, 1)?.first().ok_or(EnvelopeError::Truncated)?;
    let n = *take(&mut b, 1)?.first().ok_or(EnvelopeError::Truncated)?;
    let sensor =
        std::str::from_utf8(take(&mut b, usize::from(n))?).map_err(|_| EnvelopeError::Sensor)?;
    let run = u64_le(&mut b)?;
    let msg = u64_le(&mut b)?;
    let body = match kind {
        KIND_EVENTS => Body::Events(Events(b)),
        KIND_MARK => {
            let watermark_ns = u64_le(&mut b)?;
            let done = take(&mut b, 1)?.first().is_some_and(|d| *d != 0);
            Body::Mark { watermark_ns, done }
        }
        k => return Err(EnvelopeError::Kind(k)),
    };
    Ok(Envelope {
        sensor,
        run,
        msg,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn marks_round_trip() {
        let mut b = Vec::new();
        encode_mark(&mut b, "edge-1", 77, 5, 123_456, true);
        assert_eq!(
            decode(&b),
            Ok(Envelope {
                sensor: "edge-1",
                run: 77,
                msg: 5,
                body: Body::Mark {
                    watermark_ns: 123_456,
                    done: true
                }
            })
        );
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Err(EnvelopeError::Truncated), "{cut}");
        }
        b[1] = 9;
        assert_eq!(decode(&b), Err(EnvelopeError::Kind(9)));
        b[0] = 2;
        assert_eq!(decode(&b), Err(EnvelopeError::Version { found: 2 }));
    }

    #[test]
    fn batches_round_trip_and_a_cut_one_ends_in_an_error() {
        let mut b = Vec::new();
        encode_batch_head(&mut b, "s", 3, 1);
        push_event(&mut b, b"one");
        push_event(&mut b, b"");
        push_event(&mut b, b"three");
        let Ok(Envelope {
            sensor: "s",
            run: 3,
            msg: 1,
            body: Body::Events(ev),
        }) = decode(&b)
        else {
            panic!("{:?}", decode(&b));
        };
        let got: Vec<_> = ev.collect();
        assert_eq!(got, [Ok(&b"one"[..]), Ok(&b""[..]), Ok(&b"three"[..])]);
        let Ok(Envelope {
            body: Body::Events(ev),
            ..
        }) = decode(&b[..b.len() - 1])
        else {
            panic!()
        };
        let got: Vec<_> = ev.collect();
        assert_eq!(got.last(), Some(&Err(EnvelopeError::Truncated)));
        assert_eq!(got.len(), 3);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Envelope { body: Body::Events(ev), .. }) = decode(&bytes) {
                // Ends: every item consumes at least its length field, or is the last.
                prop_assert!(ev.count() <= bytes.len());
            }
        }
    }
}
