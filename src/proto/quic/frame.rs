//! The frames of a decrypted Initial payload (RFC 9000 §12.4, §19). An Initial may carry only
//! PADDING, PING, ACK, CRYPTO and CONNECTION_CLOSE; any other type is a protocol violation
//! (§17.2.2), and since frames carry no length of their own we cannot step over one: the walk
//! ends there with an error, keeping what came before.

use super::packet::Cursor;
use super::QuicError;

/// The largest stream offset QUIC allows (RFC 9000 §19.6: offset + length ≤ 2^62 − 1).
const MAX_OFFSET: u64 = (1 << 62) - 1;

/// One frame of an Initial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of PADDING bytes (type 0x00), merged: their count.
    Padding(usize),
    /// PING (0x01).
    Ping,
    /// ACK (0x02) or ACK with ECN counts (0x03), read and skipped.
    Ack,
    /// CRYPTO (0x06): bytes of the TLS handshake stream at `offset`.
    Crypto {
        /// Offset of `data` in the Initial-level CRYPTO stream.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// CONNECTION_CLOSE (0x1c), read and skipped.
    ConnectionClose,
}

/// The frames of a payload, in order; yields at most one error, then stops.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    c: Cursor<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Walks `payload`, the plaintext of an Initial.
    pub fn new(payload: &'a [u8]) -> Self {
        Frames {
            c: Cursor::new(payload),
            failed: false,
        }
    }

    fn frame(&mut self) -> Option<Frame<'a>> {
        let c = &mut self.c;
        match c.varint()? {
            0x00 => {
                let run = c.rest().iter().take_while(|&&b| b == 0).count();
                c.at += run;
                Some(Frame::Padding(run + 1))
            }
            0x01 => Some(Frame::Ping),
            t @ (0x02 | 0x03) => {
                // Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range (§19.3).
                c.varint()?;
                c.varint()?;
                let ranges = c.varint()?;
                c.varint()?;
                // Each range is two varints of at least one byte: a count beyond half of
                // what is left cannot be honest, and the loop below stays bounded by it.
                if ranges > (c.rest().len() / 2) as u64 {
                    return None;
                }
                for _ in 0..ranges {
                    c.varint()?;
                    c.varint()?;
                }
                if t == 0x03 {
                    c.varint()?;
                    c.varint()?;
                    c.varint()?;
                }
                Some(Frame::Ack)
            }
            0x06 => {
                let offset = c.varint()?;
                let len = c.varint()?;
                if offset.checked_add(len)? > MAX_OFFSET {
                    return None;
                }
                let data = c.take(usize::try_from(len).ok()?)?;
                Some(Frame::Crypto { offset, data })
            }
            0x1c => {
                // Error Code, Frame Type, Reason Phrase Length, Reason Phrase (§19.19).
                c.varint()?;
                c.varint()?;
                let n = c.len_varint()?;
                c.take(n)?;
                Some(Frame::ConnectionClose)
            }
            _ => None,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, QuicError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.c.rest().is_empty() {
            return None;
        }
        match self.frame() {
            Some(f) => Some(Ok(f)),
            None => {
                self.failed = true;
                Some(Err(QuicError::BadFrame))
            }
        }
    }
}
