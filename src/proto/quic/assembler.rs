//! The first bytes of a client's Initial-level CRYPTO stream, put back in order: CRYPTO frames
//! arrive out of order, overlapping, repeated, and spread over several Initial packets and
//! datagrams (Chrome splits and shuffles its ClientHello on purpose, and a post-quantum key
//! share makes it larger than one packet). A fixed buffer and a bitmap of the bytes received;
//! no allocation, no growth.

/// Bytes of the CRYPTO stream kept. The ClientHello is the first message of that stream; a
/// browser's with a post-quantum key share (X25519MLKEM768) is 1.8–2.2 KB, so 4 KiB holds it
/// with room for ECH and a resumption ticket. Bytes beyond are dropped and a longer
/// ClientHello is reported as [`HelloStatus::TooLong`].
pub const CAPACITY: usize = 4096;

const WORDS: usize = CAPACITY / 64;

/// TLS handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// A handshake message header: type (1 byte) and length (3 bytes).
const HEADER: usize = 4;

/// Where the first handshake message of the stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloStatus {
    /// Not all of the ClientHello's bytes have arrived yet.
    Pending,
    /// The ClientHello is whole: [`CryptoAssembler::client_hello`] returns it.
    Complete,
    /// The stream does not start with a ClientHello.
    NotClientHello,
    /// The ClientHello is longer than [`CAPACITY`]: only its first bytes are kept
    /// ([`CryptoAssembler::prefix`]).
    TooLong,
}

/// The first [`CAPACITY`] bytes of one connection's client Initial CRYPTO stream.
#[derive(Clone)]
pub struct CryptoAssembler {
    buf: [u8; CAPACITY],
    /// One bit per byte of `buf`: received.
    have: [u64; WORDS],
    /// Bytes received without a gap from offset 0.
    contiguous: usize,
    /// CRYPTO bytes that fell beyond `CAPACITY`.
    beyond: u64,
}

impl Default for CryptoAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CryptoAssembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoAssembler")
            .field("contiguous", &self.contiguous)
            .field("beyond", &self.beyond)
            .field("status", &self.status())
            .finish()
    }
}

impl CryptoAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        CryptoAssembler {
            buf: [0; CAPACITY],
            have: [0; WORDS],
            contiguous: 0,
            beyond: 0,
        }
    }

    /// Forgets everything (the slot is reused for another connection).
    pub fn reset(&mut self) {
        self.have = [0; WORDS];
        self.contiguous = 0;
        self.beyond = 0;
    }

    /// Stores a CRYPTO frame's `data` at stream `offset`, keeping what falls within
    /// [`CAPACITY`]; returns the status after it. A byte received twice keeps its last value
    /// (a retransmission carries the same bytes).
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> HelloStatus {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        let kept_end = end.min(CAPACITY);
        self.beyond += (end - kept_end.max(start)) as u64;
        if start < kept_end {
            let n = kept_end - start;
            self.buf[start..kept_end].copy_from_slice(&data[..n]);
            self.mark(start, kept_end);
            self.advance();
        }
        self.status()
    }

    /// Sets the received bits of `start..end` (within `CAPACITY`).
    fn mark(&mut self, start: usize, end: usize) {
        let mut i = start;
        while i < end {
            let (w, b) = (i / 64, i % 64);
            let n = (64 - b).min(end - i);
            let bits = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            self.have[w] |= bits;
            i += n;
        }
    }

    /// Moves `contiguous` to the first byte not received.
    fn advance(&mut self) {
        while self.contiguous < CAPACITY {
            let (w, b) = (self.contiguous / 64, self.contiguous % 64);
            let missing = !(self.have[w] >> b);
            let run = (missing.trailing_zeros() as usize).min(64 - b);
            self.contiguous += run;
            if run < 64 - b {
                break;
            }
        }
    }

    /// Bytes received without a gap from the start of the stream.
    pub fn prefix(&self) -> &[u8] {
        &self.buf[..self.contiguous]
    }

    /// CRYPTO bytes received beyond [`CAPACITY`] and dropped.
    pub fn dropped(&self) -> u64 {
        self.beyond
    }

    /// The length of the first handshake message, header included, once its header is in.
    fn hello_len(&self) -> Option<usize> {
        let h = self
            .buf
            .get(..HEADER)
            .filter(|_| self.contiguous >= HEADER)?;
        let body = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        Some(HEADER + body)
    }

    /// Where the ClientHello stands.
    pub fn status(&self) -> HelloStatus {
        if self.contiguous == 0 {
            return HelloStatus::Pending;
        }
        if self.buf[0] != CLIENT_HELLO {
            return HelloStatus::NotClientHello;
        }
        match self.hello_len() {
            None => HelloStatus::Pending,
            Some(n) if n > CAPACITY => HelloStatus::TooLong,
            Some(n) if self.contiguous >= n => HelloStatus::Complete,
            Some(_) => HelloStatus::Pending,
        }
    }

    /// The whole ClientHello handshake message (type, 3-byte length, body), once complete.
    pub fn client_hello(&self) -> Option<&[u8]> {
        match self.status() {
            HelloStatus::Complete => self.buf.get(..self.hello_len()?),
            _ => None,
        }
    }
}
