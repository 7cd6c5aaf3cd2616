//! The bus message: which sensor (and which run of it) sent it, and either one event
//! (encoded by [`crate::event::encode`]) or a progress mark.
//!
//! Layout: kind (1 = event, 2 = mark), sensor id length and bytes, run (u64 LE), then the
//! event's bytes, or the mark's watermark (u64 LE) and its `done` flag. Written by hand:
//! eleven fixed bytes around a payload that has its own versioned encoding need no
//! serialisation framework, and reading it back is a handful of bounds-checked slices.

use crate::event::{EventKey, WireError};

const KIND_EVENT: u8 = 1;
const KIND_MARK: u8 = 2;

/// What a bus message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// One event of the sensor's stream, still encoded.
    Event(&'a [u8]),
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
}

fn head(out: &mut Vec<u8>, kind: u8, sensor: &str, run: u64) {
    let s = sensor.as_bytes();
    let n = s.len().min(255);
    out.push(kind);
    out.push(n as u8);
    out.extend_from_slice(s.get(..n).unwrap_or_default());
    out.extend_from_slice(&run.to_le_bytes());
}

/// Appends an event message to `out` (cleared by the caller, so a buffer can be reused).
pub fn encode_event(
    out: &mut Vec<u8>,
    sensor: &str,
    run: u64,
    key: &EventKey,
    ev: &crate::event::Event,
) -> Result<(), WireError> {
    head(out, KIND_EVENT, sensor, run);
    crate::event::encode(key, ev, out)
}

/// Appends a mark message to `out`.
pub fn encode_mark(out: &mut Vec<u8>, sensor: &str, run: u64, watermark_ns: u64, done: bool) {
    head(out, KIND_MARK, sensor, run);
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
    let kind = *take(&mut b, 1)?.first().ok_or(EnvelopeError::Truncated)?;
    let n = *take(&mut b, 1)?.first().ok_or(EnvelopeError::Truncated)?;
    let sensor =
        std::str::from_utf8(take(&mut b, usize::from(n))?).map_err(|_| EnvelopeError::Sensor)?;
    let run = u64_le(&mut b)?;
    let body = match kind {
        KIND_EVENT => Body::Event(b),
        KIND_MARK => {
            let watermark_ns = u64_le(&mut b)?;
            let done = take(&mut b, 1)?.first().is_some_and(|d| *d != 0);
            Body::Mark { watermark_ns, done }
        }
        k => return Err(EnvelopeError::Kind(k)),
    };
    Ok(Envelope { sensor, run, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn marks_round_trip() {
        let mut b = Vec::new();
        encode_mark(&mut b, "edge-1", 77, 123_456, true);
        assert_eq!(
            decode(&b),
            Ok(Envelope {
                sensor: "edge-1",
                run: 77,
                body: Body::Mark {
                    watermark_ns: 123_456,
                    done: true
                }
            })
        );
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Err(EnvelopeError::Truncated), "{cut}");
        }
        b[0] = 9;
        assert_eq!(decode(&b), Err(EnvelopeError::Kind(9)));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
