//! Offline capture: reads pcap and pcapng files with libpcap and dispatches decoded packets
//! to the workers in reusable batches.
//!
//! Every input is opened exactly once, by the reader: a stream (standard input, a named
//! pipe, the `/dev/fd/N` of a shell's `<(...)`) yields its bytes only once, so nothing may
//! look at it beforehand. A record that cannot be read ends its file; the error names the
//! file, the records read before it and, where libpcap's stream has a position, the byte
//! offset at which reading failed (see [`ReadError`]).

use super::dispatch::{Dispatcher, Frame, ReaderStats};
use super::frag::FragPorts;
use crate::config::Config;
use crate::decode::LinkType;
use std::path::{Path, PathBuf};

/// Errors of the offline reader.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A capture file could not be opened (missing, unreadable, not pcap/pcapng).
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
            // A directory fails to open at once, with libpcap's message naming it.
            Ok(m) if m.is_file() || m.is_dir() => drop(open(p)?),
            Ok(_) => {} // a pipe, FIFO, socket or character device: read once, later
            // Missing or not permitted: libpcap's open gives the message a person expects.
            Err(_) => drop(open(p)?),
        }
    }
    Ok(())
}

/// A record that could not be read: the file is corrupt or cut short from there on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// The file, as given ("standard input" for `-`).
    pub path: String,
    /// Records of this file read (and replayed) before the failure.
    pub records: u64,
    /// Where reading failed: for classic pcap, exactly where the bad record's header
    /// starts (counted); for pcapng and format variants, the position libpcap's stream had
    /// reached when it failed (in or just after the bad block). `None` when the input is a
    /// stream, which has no position.
    pub offset: Option<u64>,
    /// `offset` is the start of the bad record (classic pcap), not only near it.
    pub exact: bool,
    /// libpcap's message.
    pub message: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (path, n, msg) = (&self.path, self.records, &self.message);
        match self.offset {
            Some(o) if self.exact => write!(
                f,
                "{path}: cannot read the record at byte offset {o} (after {n} records); \
                 the rest of the file was skipped: {msg}"
            ),
            Some(o) => write!(
                f,
                "{path}: cannot read the block ending at or before byte offset {o} (after \
                 {n} records); the rest of the file was skipped: {msg}"
            ),
            None => write!(
                f,
                "{path}: cannot read the record after record {n} (a stream: no byte offset); \
                 the rest of the input was skipped: {msg}"
            ),
        }
    }
}

/// libpcap's message without the crate's "libpcap error: " prefix and the path libpcap
/// repeats, which the error names already.
fn pcap_message(e: pcap::Error, path: &Path) -> String {
    match e {
        pcap::Error::PcapError(m) => {
            let prefix = format!("{}: ", path.display());
            m.strip_prefix(&prefix).unwrap_or(&m).to_string()
        }
        other => other.to_string(),
    }
}

/// Byte offset of the first record of a classic pcap file (after its 24-byte header), or
/// `None` for anything else: pcapng, the 24-byte-record variants, streams (which are never
/// opened twice: they can be read only once).
fn counted_start(path: &Path) -> Option<u64> {
    use std::io::Read;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .ok()?;
    // Microsecond and nanosecond pcap, either byte order: 16-byte record headers.
    matches!(
        u32::from_le_bytes(magic),
        0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1
    )
    .then_some(24)
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
/// reading has failed; asked before every record it cost 30% more CPU on a flood of small
/// packets.
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

fn open(path: &Path) -> Result<pcap::Capture<pcap::Offline>, CaptureError> {
    pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).map_err(|e| {
        CaptureError::Open {
            path: path.display().to_string(),
            message: pcap_message(e, path),
        }
    })
}

/// Packets between two ticks to all workers. Small enough that an idle worker's progress
/// lags by a few milliseconds of work; large enough that ticks cost nothing measurable.
const TICK_EVERY: u64 = 8192;

/// Reads the files in order, as one continuous capture, into the dispatcher. `publish` gets
/// the counters every [`crate::pipeline::PUBLISH_EVERY`] frames (for /metrics during a
/// long replay or a capture on stdin).
pub fn read_files(
    paths: &[PathBuf],
    cfg: &Config,
    d: &mut Dispatcher,
    publish: &mut dyn FnMut(&ReaderStats),
) -> Result<ReaderStats, CaptureError> {
    let mut st = ReaderStats::default();
    let mut frags = FragPorts::from_config(cfg, true);
    let mut clock = super::Clock::default();
    let mut seq = 0u64;
    for path in paths {
        let mut cap = open(path)?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        d.set_link(link, clock.now(), seq)?;
        st.files += 1;
        let mut records = 0u64;
        // Where the next record starts, counted for classic pcap (16-byte record header and
        // the captured bytes), so a bad record's offset is exact without asking the stream.
        let mut next_at = counted_start(path);
        let mut pending_check = false;
        let snaplen = snapshot(&cap);
        loop {
            // libpcap shortens a record longer than the file's snaplen (a broken writer)
            // and reports the shortened length: the count would drift. Checked against the
            // stream now and then (one system call in 65 536 records); if it drifted, the
            // offset of a failure is only the stream's position.
            if (pending_check || records % 65_536 == 65_535)
                && next_at.is_some()
                && position(&cap) != next_at
            {
                next_at = None;
            }
            pending_check = false;
            let pkt = match cap.next_packet() {
                Ok(p) => p,
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    let exact = next_at.is_some();
                    let offset = next_at.or_else(|| position(&cap));
                    st.read_errors.push(ReadError {
                        path: if path.as_os_str() == "-" {
                            "standard input".into()
                        } else {
                            path.display().to_string()
                        },
                        records,
                        offset,
                        exact,
                        message: pcap_message(e, path),
                    });
                    break;
                }
            };
            records += 1;
            seq += 1;
            let h = pkt.header;
            next_at = next_at.map(|o| o + 16 + u64::from(h.caplen));
            if h.caplen >= snaplen && next_at.is_some() {
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
            if seq % crate::pipeline::PUBLISH_EVERY == 0 {
                st.fragments = frags.stats;
                st.fragment_table = frags.occupancy(clock.now());
                publish(&st);
            }
        }
    }
    d.flush_all(clock.now(), seq)?;
    st.fragments = frags.stats;
    st.fragment_table = frags.occupancy(clock.now());

    Ok(st)
}
