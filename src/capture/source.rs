//! Opening one capture input: a plain file for libpcap to read itself, or a stream that a
//! feeder thread pours into a pipe libpcap reads from.
//!
//! Analysts keep captures compressed, so the first bytes of every input are looked at:
//! gzip (`1f 8b`, any number of members, as `cat a.gz b.gz` makes) and zstd (`28 b5 2f fd`,
//! any number of frames) are decompressed whatever the file is called. Decompression runs on
//! its own thread and streams through a pipe: the file is never held in memory, and the
//! reader thread, which decodes and dispatches every packet, keeps its core.
//!
//! A plain regular file is handed to libpcap by path, as before: its stream has a position,
//! so a bad record's offset can be checked against it. Streams (standard input, a named
//! pipe, a shell's `<(...)`) can be read only once, so the bytes looked at cannot be given
//! back: they go through the feeder too, which copies them to the pipe unchanged.
//!
//! Nothing here runs per packet: the feeder moves blocks of up to [`FEED_BLOCK`] bytes.

use super::file::CaptureError;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A compression format recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip (RFC 1952), one or more members.
    Gzip,
    /// Zstandard (RFC 8878), one or more frames.
    Zstd,
}

impl Codec {
    /// The format by the first bytes of a file, if it is a compressed one.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        match head {
            [0x1f, 0x8b, ..] => Some(Codec::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// Byte offset of the first record when `magic` starts a classic pcap file (after its
/// 24-byte header), or `None` for anything else: pcapng, whose blocks vary in layout.
pub fn counted_start(magic: &[u8]) -> Option<u64> {
    let m: [u8; 4] = magic.get(..4)?.try_into().ok()?;
    // Microsecond and nanosecond pcap, either byte order: 16-byte record headers.
    matches!(
        u32::from_le_bytes(m),
        0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1
    )
    .then_some(24)
}

/// Bytes the feeder moves at a time, and the size of libpcap's stdio buffer on the pipe:
/// large enough that a stream costs a few system calls per megabyte, not one per 4 KiB
/// (glibc's default for a pipe).
const FEED_BLOCK: usize = 256 * 1024;

/// The kernel's pipe buffer asked for: 1 MiB, the largest an unprivileged process may set
/// by default (`/proc/sys/fs/pipe-max-size`), so the feeder and the reader rarely wait on
/// each other. Refused is fine: the default 64 KiB works, with more context switches.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// An input opened for reading.
pub struct Opened {
    /// libpcap's handle. Dropped before [`Feeder::finish`]: closing the pipe's read end is
    /// what stops a feeder whose reader has given up.
    pub cap: pcap::Capture<pcap::Offline>,
    /// The thread pouring a stream or a decompressed file into libpcap's pipe; `None` when
    /// libpcap reads a plain file itself.
    pub feeder: Option<Feeder>,
    /// Where the first record starts, when the (decompressed) stream is classic pcap.
    pub counted_start: Option<u64>,
    /// libpcap's stream has a position (`ftello`): a plain regular file.
    pub seekable: bool,
    /// The compression, if any: byte offsets then count the decompressed stream.
    pub codec: Option<Codec>,
    /// Size of a regular file in bytes (compressed size for a compressed one); `None` for a
    /// stream.
    pub size: Option<u64>,
}

/// The feeder thread of one input.
pub struct Feeder {
    handle: JoinHandle<Result<(), FeedError>>,
    /// Bytes taken from the input so far (compressed bytes for a compressed file), for the
    /// progress display; updated per block, never per packet.
    pub consumed: Arc<AtomicU64>,
    /// Index (0-based) of the first record of a classic pcap stream that libpcap will
    /// shorten to the file's snaplen, `u64::MAX` while none is known (see [`Walker`]).
    pub first_oversized: Arc<AtomicU64>,
    stream: bool,
}

impl Feeder {
    /// Whether the counted offset of the record after `records` records is still exact:
    /// none of them was shortened by libpcap. Every byte libpcap has read went through the
    /// walker first, so its answer covers them.
    pub fn counted_exact(&self, records: u64) -> bool {
        self.first_oversized.load(Ordering::Relaxed) >= records
    }
}

/// libpcap's largest snaplen for most link types (`MAXIMUM_SNAPLEN`); a file header with 0
/// or more gets this instead.
const MAXIMUM_SNAPLEN: u32 = 262_144;

/// Follows the record boundaries of a classic pcap stream as the feeder copies it.
///
/// libpcap shortens a record whose captured length exceeds the file's snaplen (a broken
/// writer) and reports the shortened length, so the reader's count of record offsets
/// drifts. A plain file is checked against its stream position; a pipe has none, so the
/// feeder, which sees every byte before libpcap does, notes the first such record. Work per
/// record: one 16-byte header copied and one comparison, on the feeder's thread.
pub struct Walker {
    /// The header being gathered: the file header (24 bytes), then each record's (16).
    buf: [u8; 24],
    have: usize,
    need: usize,
    /// Record bytes still to pass before the next record header.
    skip: u64,
    little_endian: bool,
    snaplen: u32,
    index: u64,
    first_oversized: Arc<AtomicU64>,
}

impl Walker {
    /// A walker for a stream that starts with a classic pcap file header.
    pub fn new(first_oversized: Arc<AtomicU64>) -> Walker {
        Walker {
            buf: [0; 24],
            have: 0,
            need: 24,
            skip: 0,
            little_endian: true,
            snaplen: MAXIMUM_SNAPLEN,
            index: 0,
            first_oversized,
        }
    }

    /// Follows the next bytes of the stream.
    pub fn walk(&mut self, mut data: &[u8]) {
        // Once one is found, the count is given up and nothing more is needed.
        while !data.is_empty() && self.first_oversized.load(Ordering::Relaxed) == u64::MAX {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = data.get(n..).unwrap_or(&[]);
                continue;
            }
            let take = (self.need - self.have).min(data.len());
            if let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.have..self.have + take),
                data.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += take;
            data = data.get(take..).unwrap_or(&[]);
            if self.have < self.need {
                return;
            }
            self.have = 0;
            let field = |at: usize, le: bool| -> u32 {
                let b = [0, 1, 2, 3].map(|i| self.buf.get(at + i).copied().unwrap_or(0));
                if le {
                    u32::from_le_bytes(b)
                } else {
                    u32::from_be_bytes(b)
                }
            };
            if self.need == 24 {
                // Magic a1b2c3d4 (µs) or a1b23c4d (ns), written in the writer's byte order.
                self.little_endian = matches!(field(0, true), 0xa1b2_c3d4 | 0xa1b2_3c4d);
                let snaplen = field(16, self.little_endian);
                self.snaplen = if snaplen == 0 || snaplen > MAXIMUM_SNAPLEN {
                    MAXIMUM_SNAPLEN
                } else {
                    snaplen
                };
                self.need = 16;
            } else {
                let caplen = field(8, self.little_endian);
                if caplen > self.snaplen {
                    self.first_oversized.store(self.index, Ordering::Relaxed);
                }
                self.index += 1;
                self.skip = u64::from(caplen);
            }
        }
    }
}

/// The input could not be read or decompressed: the data after `produced` bytes is lost.
#[derive(Debug)]
pub struct FeedError {
    /// Bytes of the (decompressed) stream delivered before the failure.
    pub produced: u64,
    /// What the decoder or the read said.
    pub error: io::Error,
}

impl Feeder {
    /// The feeder's outcome once libpcap has stopped reading (its handle must already be
    /// dropped, which closes the pipe and stops a feeder still writing).
    ///
    /// `at_end`: libpcap met the end of the pipe, so the feeder has returned or is returning.
    /// Otherwise libpcap gave up on a bad record and the feeder's outcome does not matter;
    /// a feeder of a stream may then be blocked reading a quiet pipe, so it is left to end
    /// on its own (at its next write) rather than waited for.
    pub fn finish(self, at_end: bool) -> Option<FeedError> {
        if !at_end && self.stream && !self.handle.is_finished() {
            return None;
        }
        match self.handle.join() {
            Ok(r) => r.err(),
            Err(_) => Some(FeedError {
                produced: 0,
                error: io::Error::other("the decompression thread panicked"),
            }),
        }
    }
}

/// Counts the bytes read through it into a shared counter (one relaxed add per read call of
/// the decoder's buffer, tens of kilobytes).
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads up to 4 bytes (fewer only at the end of the input).
fn read_head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    r.take(4).read_to_end(&mut head)?;
    Ok(head)
}

fn open_error(path: &Path, message: impl Into<String>) -> CaptureError {
    CaptureError::Open {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Opens an input: `-` is standard input.
pub fn open(path: &Path) -> Result<Opened, CaptureError> {
    let stdin = path.as_os_str() == "-";
    let meta = if stdin {
        None
    } else {
        std::fs::metadata(path).ok()
    };
    let regular = meta.as_ref().is_some_and(|m| m.is_file());
    // Missing, not permitted, a directory: libpcap's own open gives the message a person
    // expects ("No such file or directory", "Is a directory").
    if !stdin && meta.as_ref().is_none_or(|m| m.is_dir()) {
        return open_path(path).map(|cap| plain(cap, None, None));
    }
    let size = meta.as_ref().filter(|_| regular).map(|m| m.len());
    let consumed = Arc::new(AtomicU64::new(0));
    let mut input: Box<dyn Read + Send> = if stdin {
        Box::new(io::stdin())
    } else {
        let f = std::fs::File::open(path).map_err(|e| open_error(path, e.to_string()))?;
        Box::new(f)
    };
    let head = read_head(&mut input).map_err(|e| open_error(path, e.to_string()))?;
    let codec = Codec::sniff(&head);
    if regular && codec.is_none() {
        // A plain file: libpcap reads it by path, with a position to check offsets against.
        drop(input);
        return open_path(path).map(|cap| plain(cap, counted_start(&head), size));
    }
    // Stream or compressed: the bytes looked at go first, then the rest.
    let stream_start = counted_start(&head);
    let input = Counted {
        inner: io::Cursor::new(head).chain(input),
        count: Arc::clone(&consumed),
    };
    let mut data: Box<dyn Read + Send> = match codec {
        None => Box::new(input),
        Some(Codec::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Some(Codec::Zstd) => Box::new(
            zstd::stream::read::Decoder::new(input)
                .map_err(|e| open_error(path, format!("zstd data: {e}")))?,
        ),
    };
    let start = match codec {
        None => stream_start,
        // The decompressed stream's own first bytes say whether record offsets can be
        // counted; they are put back in front of the rest.
        Some(c) => {
            let h = read_head(&mut data)
                .map_err(|e| open_error(path, format!("{} data: {e}", c.name())))?;
            let start = counted_start(&h);
            data = Box::new(io::Cursor::new(h).chain(data));
            start
        }
    };
    let first_oversized = Arc::new(AtomicU64::new(u64::MAX));
    let walker = start.map(|_| Walker::new(Arc::clone(&first_oversized)));
    let (read_end, write_end) = pipe().map_err(|e| open_error(path, e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name("outflow-input".into())
        .spawn(move || feed(data, std::fs::File::from(write_end), walker))
        .map_err(|e| open_error(path, e.to_string()))?;
    let feeder = Feeder {
        handle,
        consumed,
        first_oversized,
        stream: !regular,
    };
    match open_pipe(read_end) {
        Ok(cap) => Ok(Opened {
            cap,
            feeder: Some(feeder),
            counted_start: start,
            seekable: false,
            codec,
            size,
        }),
        Err(message) => {
            // The pipe is closed: the feeder of a file stops at its next write. A stream's
            // feeder may wait for its writer; it is not waited for.
            drop(feeder);
            Err(open_error(path, message))
        }
    }
}

/// A plain file opened by libpcap itself.
fn plain(cap: pcap::Capture<pcap::Offline>, start: Option<u64>, size: Option<u64>) -> Opened {
    Opened {
        cap,
        feeder: None,
        counted_start: start,
        seekable: true,
        codec: None,
        size,
    }
}

/// libpcap's message without the crate's "libpcap error: " prefix and the path libpcap
/// repeats, which the error names already.
pub fn pcap_message(e: pcap::Error, path: &Path) -> String {
    match e {
        pcap::Error::PcapError(m) => {
            let prefix = format!("{}: ", path.display());
            m.strip_prefix(&prefix).unwrap_or(&m).to_string()
        }
        other => other.to_string(),
    }
}

fn open_path(path: &Path) -> Result<pcap::Capture<pcap::Offline>, CaptureError> {
    pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano)
        .map_err(|e| open_error(path, pcap_message(e, path)))
}

/// Copies the stream into the pipe until its end or an error. A failed write means libpcap
/// stopped reading (a bad record, or the replay is over): not an error of the input.
/// (Rust programs ignore SIGPIPE, so the write fails with EPIPE instead of killing us.)
fn feed(
    mut data: Box<dyn Read + Send>,
    mut pipe: std::fs::File,
    mut walker: Option<Walker>,
) -> Result<(), FeedError> {
    // One buffer per input, not per packet.
    let mut buf = vec![0u8; FEED_BLOCK];
    let mut produced = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(FeedError { produced, error }),
        };
        let Some(block) = buf.get(..n) else {
            return Ok(());
        };
        // Before libpcap can see the block (see `Feeder::counted_exact`).
        if let Some(w) = walker.as_mut() {
            w.walk(block);
        }
        if pipe.write_all(block).is_err() {
            return Ok(());
        }
        produced += n as u64;
    }
}

/// A close-on-exec pipe (read end, write end), with a large kernel buffer where allowed.
#[allow(unsafe_code)]
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: `w` is an open pipe descriptor; F_SETPIPE_SZ only resizes its buffer, and a
    // refusal leaves the pipe as it was.
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::fd::AsRawFd;
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
    Ok((r, w))
}

/// Hands libpcap the pipe's read end as a `FILE`, with nanosecond timestamps like every
/// other input. On failure the `FILE` is closed here (libpcap leaves it open, and the
/// `pcap` crate's own `from_raw_fd` would leak it, keeping the feeder blocked forever).
#[allow(unsafe_code)]
fn open_pipe(read_end: OwnedFd) -> Result<pcap::Capture<pcap::Offline>, String> {
    extern "C" {
        // pcap/pcap.h: pcap_t *pcap_fopen_offline_with_tstamp_precision(FILE *, u_int,
        // char *); the `pcap` crate links libpcap already.
        fn pcap_fopen_offline_with_tstamp_precision(
            fp: *mut libc::FILE,
            precision: libc::c_uint,
            errbuf: *mut libc::c_char,
        ) -> *mut libc::c_void;
    }
    // pcap/pcap.h: PCAP_TSTAMP_PRECISION_NANO and PCAP_ERRBUF_SIZE.
    const NANO: libc::c_uint = 1;
    const ERRBUF: usize = 256;
    let fd = read_end.into_raw_fd();
    // SAFETY: `fd` is an open descriptor this function owns; fdopen takes it over.
    let file = unsafe { libc::fdopen(fd, c"rb".as_ptr()) };
    if file.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopen failed, so `fd` is still ours alone.
        unsafe { libc::close(fd) };
        return Err(e.to_string());
    }
    // SAFETY: `file` is a fresh stream with no I/O done yet, as setvbuf requires; a null
    // buffer lets stdio allocate (and free) it. A refusal keeps the default buffer.
    unsafe { libc::setvbuf(file, std::ptr::null_mut(), libc::_IOFBF, FEED_BLOCK) };
    let mut errbuf = [0 as libc::c_char; ERRBUF];
    // SAFETY: `file` is open and readable, `errbuf` has PCAP_ERRBUF_SIZE bytes. On success
    // the pcap_t owns `file` and pcap_close (the handle's drop) closes it.
    let p = unsafe { pcap_fopen_offline_with_tstamp_precision(file, NANO, errbuf.as_mut_ptr()) };
    match std::ptr::NonNull::new(p) {
        // The crate's handle type is opaque to us: the cast lets the compiler name it.
        Some(handle) => Ok(pcap::Capture::from(handle.cast())),
        None => {
            // SAFETY: libpcap wrote a NUL-terminated message into `errbuf` (zeroed, so
            // terminated even if it did not), and left `file` open and ours.
            let msg = unsafe { std::ffi::CStr::from_ptr(errbuf.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: as above, `file` is still ours; closing it closes the pipe.
            unsafe { libc::fclose(file) };
            Err(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8, 0]), Some(Codec::Gzip));
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Codec::Zstd));
        // Classic pcap (little-endian microseconds) and pcapng: not compressed.
        assert_eq!(Codec::sniff(&[0xd4, 0xc3, 0xb2, 0xa1]), None);
        assert_eq!(Codec::sniff(&[0x0a, 0x0d, 0x0d, 0x0a]), None);
        assert_eq!(Codec::sniff(&[0x28, 0xb5]), None);
        assert_eq!(Codec::sniff(&[]), None);
        assert_eq!(counted_start(&[0xd4, 0xc3, 0xb2, 0xa1]), Some(24));
        assert_eq!(counted_start(&[0x0a, 0x0d, 0x0d, 0x0a]), None);
        assert_eq!(counted_start(&[0xd4, 0xc3]), None);
    }

    /// A classic pcap file header and records with these captured lengths.
    fn pcap(big_endian: bool, snaplen: u32, caplens: &[u32]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut b = u32b(0xa1b2_c3d4).to_vec();
        b.extend_from_slice(&[0; 12]); // version, thiszone, sigfigs: not read
        b.extend_from_slice(&u32b(snaplen));
        b.extend_from_slice(&u32b(1)); // Ethernet
        for &c in caplens {
            b.extend_from_slice(&[0; 8]); // timestamp
            b.extend_from_slice(&u32b(c));
            b.extend_from_slice(&u32b(c.max(60)));
            b.extend(std::iter::repeat_n(0xee, c as usize));
        }
        b
    }

    fn walk_in_pieces(bytes: &[u8], piece: usize) -> u64 {
        let first = Arc::new(AtomicU64::new(u64::MAX));
        let mut w = Walker::new(Arc::clone(&first));
        for chunk in bytes.chunks(piece) {
            w.walk(chunk);
        }
        first.load(Ordering::Relaxed)
    }

    #[test]
    fn the_walker_finds_the_first_record_libpcap_would_shorten() {
        for big_endian in [false, true] {
            let bytes = pcap(big_endian, 96, &[60, 96, 95, 97, 60, 200]);
            // Block boundaries anywhere, even inside headers.
            for piece in [1, 3, 16, 17, 1000] {
                assert_eq!(walk_in_pieces(&bytes, piece), 3, "{big_endian} {piece}");
            }
            let fine = pcap(big_endian, 96, &[60, 96, 1, 0]);
            assert_eq!(walk_in_pieces(&fine, 7), u64::MAX);
            // A snaplen of 0 means libpcap's maximum.
            let zero = pcap(big_endian, 0, &[1500, 9000]);
            assert_eq!(walk_in_pieces(&zero, 5), u64::MAX);
        }
    }
}
