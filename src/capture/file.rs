//! Offline capture: reads pcap and pcapng files with libpcap and dispatches decoded packets
//! to the workers in reusable batches.

use super::frag::{FragPorts, FragStats};
use super::{Batch, BatchPacket};
use crate::config::Config;
use crate::decode::{decode, DecodeError, LinkType};
use crossbeam_channel::{Receiver, Sender};
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

/// What the reader saw.
#[derive(Clone, Debug, Default)]
pub struct ReaderStats {
    /// Frames read from the files.
    pub frames: u64,
    /// Their wire length in bytes (the records' original length).
    pub wire_bytes: u64,
    /// Frames decoded and dispatched to a worker.
    pub decoded: u64,
    /// Frames skipped, by reason (indexed like `DecodeError::ALL`).
    pub decode_errors: [u64; DecodeError::ALL.len()],
    /// IP fragment bookkeeping.
    pub fragments: FragStats,
    /// Files read.
    pub files: u64,
    /// Read errors that ended a file early (e.g. a truncated last record), one line each.
    pub read_errors: Vec<String>,
    /// First and last packet timestamps (ns).
    pub first_ts_ns: Option<u64>,
    /// Last packet timestamp (ns).
    pub last_ts_ns: Option<u64>,
}

/// Checks that every file opens as a capture, so a typo fails before anything runs.
pub fn check_files(paths: &[PathBuf]) -> Result<(), CaptureError> {
    for p in paths {
        open(p)?;
    }
    Ok(())
}

fn open(path: &Path) -> Result<pcap::Capture<pcap::Offline>, CaptureError> {
    pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).map_err(|e| {
        CaptureError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    })
}

/// Fills per-worker batches and hands them over. Batches come back from the workers on
/// `free`, so after start-up nothing is allocated.
pub struct Dispatcher {
    to: Vec<Sender<Batch>>,
    free: Vec<Receiver<Batch>>,
    filling: Vec<Batch>,
}

impl Dispatcher {
    /// `to[w]` sends batches to worker `w`; `free[w]` returns its used batches. Each free
    /// channel must already hold at least one batch.
    pub fn new(
        to: Vec<Sender<Batch>>,
        free: Vec<Receiver<Batch>>,
    ) -> Result<Dispatcher, CaptureError> {
        let filling = free
            .iter()
            .map(|f| f.recv().map_err(|_| CaptureError::WorkersGone))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dispatcher { to, free, filling })
    }

    fn workers(&self) -> usize {
        self.to.len()
    }

    fn push(
        &mut self,
        w: usize,
        mut p: BatchPacket,
        bytes: &[u8],
        seq: u64,
    ) -> Result<(), CaptureError> {
        let full = self.filling.get(w).is_none_or(|b| !b.has_room(bytes.len()));
        if full {
            self.flush(w, p.clock_ns, seq.saturating_sub(1))?;
        }
        let Some(b) = self.filling.get_mut(w) else {
            return Err(CaptureError::WorkersGone);
        };
        // A frame larger than a whole batch's byte budget keeps only what fits; its meta
        // still carries the wire lengths, so no byte goes uncounted.
        let room = b.data.capacity() - b.data.len();
        let keep = bytes.get(..bytes.len().min(room)).unwrap_or(&[]);
        p.data_start = b.data.len() as u32;
        p.cap_len = keep.len() as u32;
        b.data.extend_from_slice(keep);
        b.packets.push(p);
        Ok(())
    }

    fn flush(&mut self, w: usize, clock_ns: u64, seq: u64) -> Result<(), CaptureError> {
        let (Some(to), Some(free)) = (self.to.get(w), self.free.get(w)) else {
            return Err(CaptureError::WorkersGone);
        };
        let fresh = free.recv().map_err(|_| CaptureError::WorkersGone)?;
        let Some(slot) = self.filling.get_mut(w) else {
            return Err(CaptureError::WorkersGone);
        };
        let mut full = std::mem::replace(slot, fresh);
        full.clock_ns = clock_ns;
        full.seq = seq;
        to.send(full).map_err(|_| CaptureError::WorkersGone)?;
        if let Some(b) = self.filling.get_mut(w) {
            b.clear();
        }
        Ok(())
    }

    /// Sends every worker its batch (even if empty) stamped with the clock: the tick that
    /// lets idle workers expire flows and report progress.
    pub fn flush_all(&mut self, clock_ns: u64, seq: u64) -> Result<(), CaptureError> {
        for w in 0..self.workers() {
            self.flush(w, clock_ns, seq)?;
        }
        Ok(())
    }

    fn set_link(&mut self, link: LinkType, clock_ns: u64, seq: u64) -> Result<(), CaptureError> {
        if self.filling.iter().any(|b| b.link != link) {
            if self.filling.iter().any(|b| !b.packets.is_empty()) {
                self.flush_all(clock_ns, seq)?;
            }
            for b in &mut self.filling {
                b.link = link;
            }
        }
        Ok(())
    }
}

/// Packets between two ticks to all workers. Small enough that an idle worker's progress
/// lags by a few milliseconds of work; large enough that ticks cost nothing measurable.
const TICK_EVERY: u64 = 8192;

/// Reads the files in order, as one continuous capture, into the dispatcher.
pub fn read_files(
    paths: &[PathBuf],
    cfg: &Config,
    d: &mut Dispatcher,
) -> Result<ReaderStats, CaptureError> {
    let mut st = ReaderStats::default();
    let n = d.workers() as u64;
    let frag_timeout = u64::try_from(cfg.flow.fragment_timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut frags = FragPorts::new(cfg.flow.fragment_capacity, frag_timeout);
    let mut clock = 0u64;
    let mut seq = 0u64;
    for path in paths {
        let mut cap = open(path)?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        d.set_link(link, clock, seq)?;
        st.files += 1;
        loop {
            let pkt = match cap.next_packet() {
                Ok(p) => p,
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    st.read_errors.push(format!("{}: {e}", path.display()));
                    break;
                }
            };
            seq += 1;
            st.frames += 1;
            let h = pkt.header;
            let wire_len = h.len.max(h.caplen);
            st.wire_bytes += u64::from(wire_len);
            // Precision::Nano: tv_usec holds nanoseconds. Times before 1970 clamp to 0.
            let ts_ns = u64::try_from(h.ts.tv_sec)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(h.ts.tv_usec).unwrap_or(0));
            clock = clock.max(ts_ns);
            st.first_ts_ns.get_or_insert(ts_ns);
            st.last_ts_ns = Some(ts_ns);
            let mut meta = match decode(link, pkt.data, wire_len) {
                Ok(m) => m,
                Err(e) => {
                    if let Some(c) = st.decode_errors.get_mut(e.index()) {
                        *c += 1;
                    }
                    continue;
                }
            };
            frags.resolve(&mut meta, clock);
            st.decoded += 1;
            let w = (meta.symmetric_hash() % n) as usize;
            let bp = BatchPacket {
                seq,
                ts_ns,
                clock_ns: clock,
                wire_len,
                data_start: 0,
                cap_len: 0,
                meta,
            };
            d.push(w, bp, pkt.data, seq)?;
            if seq % TICK_EVERY == 0 {
                d.flush_all(clock, seq)?;
            }
        }
    }
    d.flush_all(clock, seq)?;
    st.fragments = frags.stats;
    Ok(st)
}
