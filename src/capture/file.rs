//! Offline capture: reads pcap and pcapng files, plain or compressed (gzip, zstd), with
//! libpcap and dispatches decoded packets to the workers in reusable batches.
//!
//! Every input is opened exactly once, by the reader ([`super::source`]): a stream (standard
//! input, a named pipe, the `/dev/fd/N` of a shell's `<(...)`) yields its bytes only once, so
//! nothing may look at it beforehand. A record that cannot be read ends its file; the error
//! names the file, the records read before it and, where it is known, the byte offset at
//! which reading failed (see [`ReadError`]). A file that merely ends inside its last record
//! (copied while tcpdump was still writing it) is a warning: everything before was replayed.

use super::dispatch::{Dispatcher, Frame, ReaderStats};
use super::frag::FragPorts;
use super::progress::Progress;
use super::source::{self, pcap_message, Codec, Opened};
use crate::config::Config;
use crate::decode::LinkType;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Errors of the offline reader.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A capture file could not be opened (missing, unreadable, not pcap/pcapng, or its
    /// compressed data is corrupt from the start).
    #[error("cannot open capture file {path}: {message}")]
    Open {
        /// The path.
        path: String,
        /// libpcap's message.
        message: String,
    },
    /// All workers stopped before the input ended (a worker panicked).
    #[error("workers stopped before the input ended")]
    WorkersGone,
}

/// Checks that every regular file opens as a capture, so a typo fails before anything runs.
///
/// Streams are not opened here: `-` (standard input), a named pipe or a `/dev/fd/N` from a
/// shell's process substitution can be read only once, and opening one to look at its header
/// would consume the header (and block until a writer appears). The reader opens them, and
/// a stream that is not a capture fails there with the same message.
pub fn check_files(paths: &[PathBuf]) -> Result<(), CaptureError> {
    for p in paths {
        if p.as_os_str() == "-" {
            continue;
        }
        match std::fs::metadata(p) {
            // A directory fails to open at once, with libpcap's message naming it. A
            // compressed file's feeder stops once the handle (and so its pipe) is dropped.
            Ok(m) if m.is_file() || m.is_dir() => drop(source::open(p)?),
            Ok(_) => {} // a pipe, FIFO, socket or character device: read once, later
            // Missing or not permitted: libpcap's open gives the message a person expects.
            Err(_) => drop(source::open(p)?),
        }
    }
    Ok(())
}

/// What went wrong in a [`ReadError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// libpcap could not read a record: the file is corrupt from there on.
    Record,
    /// The file ends inside its last record, as a capture copied while tcpdump was still
    /// writing it does. Everything before was replayed: a warning, not an error.
    Truncated,
    /// The input itself failed: its compressed data is corrupt or cut short, or reading
    /// the stream failed.
    Input,
}

/// A record that could not be read: the file is corrupt or cut short from there on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// The file, as given ("standard input" for `-`).
    pub path: String,
    /// Records of this file read (and replayed) before the failure.
    pub records: u64,
    /// Where reading failed. For [`ReadErrorKind::Input`], the bytes delivered before the
    /// failure. Otherwise, for classic pcap, exactly where the bad record's header starts
    /// (counted); for pcapng and format variants, the position libpcap's stream had reached
    /// when it failed (in or just after the bad block). `None` when neither is known (a
    /// pcapng stream, or a stream whose count had to be given up).
    pub offset: Option<u64>,
    /// `offset` is the start of the bad record (classic pcap), not only near it.
    pub exact: bool,
    /// The file was compressed: `offset` counts bytes of the decompressed stream.
    pub codec: Option<Codec>,
    /// What went wrong.
    pub kind: ReadErrorKind,
    /// libpcap's, the decompressor's or the system's message.
    pub message: String,
}

impl ReadError {
    /// A warning rather than an error: the data before the cut was all replayed.
    pub fn is_warning(&self) -> bool {
        self.kind == ReadErrorKind::Truncated
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (path, n, msg) = (&self.path, self.records, &self.message);
        // Offsets of a compressed file are positions in what it decompresses to.
        let of = if self.codec.is_some() {
            " of the decompressed stream"
        } else {
            ""
        };
        match (self.kind, self.offset) {
            (ReadErrorKind::Truncated, o) => {
                let at = o.map_or(String::new(), |o| format!(" at byte offset {o}{of}"));
                write!(
                    f,
                    "{path}: the capture ends in the middle of a record{at}; the {n} \
                     records before it were replayed (was the file copied while still being \
                     written?): {msg}"
                )
            }
            (ReadErrorKind::Input, o) => {
                let what = self
                    .codec
                    .map_or("reading".to_string(), |c| format!("the {} data", c.name()));
                let at = o.map_or(String::new(), |o| format!(" after byte {o}{of}"));
                let broke = if self.codec.is_some() {
                    "is corrupt or cut short"
                } else {
                    "failed"
                };
                write!(
                    f,
                    "{path}: {what} {broke}{at} (after {n} records); the rest of the file \
                     was skipped: {msg}"
                )
            }
            (ReadErrorKind::Record, Some(o)) if self.exact => write!(
                f,
                "{path}: cannot read the record at byte offset {o}{of} (after {n} records); \
                 the rest of the file was skipped: {msg}"
            ),
            (ReadErrorKind::Record, Some(o)) => write!(
                f,
                "{path}: cannot read the block ending at or before byte offset {o}{of} (after \
                 {n} records); the rest of the file was skipped: {msg}"
            ),
            (ReadErrorKind::Record, None) => write!(
                f,
                "{path}: cannot read the record after record {n} (a stream: no byte offset); \
                 the rest of the input was skipped: {msg}"
            ),
        }
    }
}

/// libpcap's message for a file that ends inside a record ("truncated dump file; tried to
/// read 96 captured bytes, only got 66", and its pcapng twin). A cut inside the file header
/// fails the open instead, so it never reaches here.
fn is_truncation(message: &str) -> bool {
    message.starts_with("truncated dump file;")
        || message.starts_with("truncated pcapng dump file;")
}

/// The file's snaplen as libpcap holds it (`pcap_snapshot`; the `pcap` crate has no
/// getter): records at least this long may have been shortened by libpcap.
#[allow(unsafe_code)]
fn snapshot(cap: &pcap::Capture<pcap::Offline>) -> u32 {
    extern "C" {
        // libpcap's declaration: `int pcap_snapshot(pcap_t *)` (pcap/pcap.h).
        fn pcap_snapshot(p: *mut libc::c_void) -> libc::c_int;
    }
    // SAFETY: `cap` is an open offline handle that outlives this call; pcap_snapshot only
    // reads a field of it.
    let n = unsafe { pcap_snapshot(cap.as_ptr().cast()) };
    u32::try_from(n).unwrap_or(0)
}

/// libpcap's read position in an offline capture, in bytes from the start of the file.
///
/// libpcap's messages for a bad record ("invalid packet capture length", "truncated dump
/// file") carry no position, and its read functions are not exposed by the `pcap` crate, so
/// the position is asked of the C stream libpcap reads from: `pcap_file` gives that `FILE`,
/// `ftello` its position (stdio accounts for its own read-ahead). `None` for a pipe. It is
/// a system call (glibc's `ftello` asks the kernel with `lseek`), so it is asked only once
/// reading has failed, and a few times a second for the progress display; asked before
/// every record it cost 30% more CPU on a flood of small packets.
#[allow(unsafe_code)]
fn position(cap: &pcap::Capture<pcap::Offline>) -> Option<u64> {
    extern "C" {
        // libpcap's own declaration: `FILE *pcap_file(pcap_t *)` (pcap/pcap.h); the crate
        // links libpcap already.
        fn pcap_file(p: *mut libc::c_void) -> *mut libc::FILE;
    }
    // SAFETY: `cap` is an open offline handle that outlives this call, so its pcap_t pointer
    // is valid; pcap_file only reads a field of it. The FILE it returns belongs to the
    // handle and is open while the handle is; ftello only reads its position.
    let pos = unsafe {
        let file = pcap_file(cap.as_ptr().cast());
        if file.is_null() {
            return None;
        }
        libc::ftello(file)
    };
    u64::try_from(pos).ok()
}

/// Total size of the inputs in bytes (compressed sizes for compressed files), or `None`
/// when one is a stream, whose size is unknown: the progress display's 100%.
pub fn total_size(paths: &[PathBuf]) -> Option<u64> {
    paths.iter().try_fold(0u64, |sum, p| {
        let m = std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file() && p.as_os_str() != "-")?;
        Some(sum.saturating_add(m.len()))
    })
}

/// Packets between two ticks to all workers. Small enough that an idle worker's progress
/// lags by a few milliseconds of work; large enough that ticks cost nothing measurable.
const TICK_EVERY: u64 = 8192;

/// Reads the files in order, as one continuous capture, into the dispatcher. `publish` gets
/// the counters every [`super::PUBLISH_EVERY`] frames (for /metrics during a
/// long replay or a capture on stdin), and so does `progress`.
pub fn read_files(
    paths: &[PathBuf],
    cfg: &Config,
    d: &mut Dispatcher,
    publish: &mut dyn FnMut(&ReaderStats),
    progress: &mut Progress,
) -> Result<ReaderStats, CaptureError> {
    let mut st = ReaderStats::default();
    let mut frags = FragPorts::from_config(cfg, true);
    let mut clock = super::Clock::default();
    let mut seq = 0u64;
    // Input bytes of the files already read, for the progress display.
    let mut done_bytes = 0u64;
    for path in paths {
        let Opened {
            mut cap,
            feeder,
            counted_start,
            seekable,
            codec,
            size,
        } = source::open(path)?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        d.set_link(link, clock.now(), seq)?;
        st.files += 1;
        let mut records = 0u64;
        // Where the next record starts, counted for classic pcap (16-byte record header and
        // the captured bytes), so a bad record's offset is exact without asking the stream.
        let mut next_at = counted_start;
        // The same sum for any format, for the progress of a plain stream (which has no
        // position to ask): one add per record.
        let mut read_bytes = 0u64;
        let mut pending_check = false;
        let snaplen = snapshot(&cap);
        let failure = loop {
            // libpcap shortens a record longer than the file's snaplen (a broken writer)
            // and reports the shortened length: the count would drift. Checked against the
            // stream now and then (one system call in 65 536 records); if it drifted, the
            // offset of a failure is only the stream's position. A pipe (a stream, a
            // decompressed file) has no position: its feeder watches for such records
            // instead, and is asked once reading ends.
            if seekable
                && (pending_check || records % 65_536 == 65_535)
                && next_at.is_some()
                && position(&cap) != next_at
            {
                next_at = None;
            }
            pending_check = false;
            let pkt = match cap.next_packet() {
                Ok(p) => p,
                Err(pcap::Error::NoMorePackets) => break None,
                Err(e) => break Some(pcap_message(e, path)),
            };
            records += 1;
            seq += 1;
            let h = pkt.header;
            next_at = next_at.map(|o| o + 16 + u64::from(h.caplen));
            read_bytes += 16 + u64::from(h.caplen);
            if seekable && h.caplen >= snaplen && next_at.is_some() {
                // Perhaps shortened by libpcap (see above): make sure, at the price of one
                // system call for such records only (a capture cut by its snaplen).
                pending_check = true;
            }
            let Some(ts_ns) = super::ts_ns(h) else {
                st.frames += 1;
                st.bad_timestamps += 1;
                continue;
            };
            let frame = Frame {
                link,
                data: pkt.data,
                wire_len: h.len,
                ts_ns,
                clock_ns: clock.observe(ts_ns),
                seq,
            };
            d.dispatch(&frame, &mut frags, &mut st)?;
            if seq % TICK_EVERY == 0 {
                d.flush_all(clock.now(), seq)?;
            }
            if seq % super::PUBLISH_EVERY == 0 {
                st.fragments = frags.stats;
                st.fragment_table = frags.occupancy(clock.now());
                publish(&st);
                progress.update(
                    || {
                        done_bytes
                            + match (&feeder, seekable) {
                                (Some(f), _) => f.consumed.load(Ordering::Relaxed),
                                (None, true) => position(&cap).unwrap_or(read_bytes),
                                (None, false) => read_bytes,
                            }
                    },
                    st.frames,
                );
            }
        };
        let name = if path.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        if feeder.as_ref().is_some_and(|f| !f.counted_exact(records)) {
            next_at = None;
        }
        // What libpcap reported, with its offset (asked before the handle closes).
        let pcap_error = failure.map(|message| {
            let truncated = is_truncation(&message);
            let exact = next_at.is_some();
            ReadError {
                path: name.clone(),
                records,
                offset: next_at.or_else(|| position(&cap)),
                exact,
                codec,
                kind: if truncated {
                    ReadErrorKind::Truncated
                } else {
                    ReadErrorKind::Record
                },
                message,
            }
        });
        // Closing the handle closes the pipe, which stops a feeder still writing.
        drop(cap);
        let at_end = pcap_error
            .as_ref()
            .is_none_or(|e| e.kind == ReadErrorKind::Truncated);
        // A feeder that failed cut libpcap's stream short: its error is the cause, and
        // whatever libpcap made of the cut is not reported.
        let fed = feeder.and_then(|f| f.finish(at_end));
        let error = match fed {
            Some(e) => Some(ReadError {
                path: name,
                records,
                offset: Some(e.produced),
                exact: false,
                codec,
                kind: ReadErrorKind::Input,
                message: e.error.to_string(),
            }),
            None => pcap_error,
        };
        match error {
            Some(e) if e.is_warning() => st.truncated.push(e),
            Some(e) => st.read_errors.push(e),
            None => {}
        }
        done_bytes += size.unwrap_or(read_bytes);
    }
    d.flush_all(clock.now(), seq)?;
    st.fragments = frags.stats;
    st.fragment_table = frags.occupancy(clock.now());
    progress.finish();

    Ok(st)
}
