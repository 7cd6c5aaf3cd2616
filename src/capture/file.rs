//! Offline capture: reads pcap and pcapng files with libpcap and dispatches decoded packets
//! to the workers in reusable batches.

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

/// Checks that every file opens as a capture, so a typo fails before anything runs.
pub fn check_files(paths: &[PathBuf]) -> Result<(), CaptureError> {
    for p in paths {
        // `-` is standard input: it can be opened only once, by the reader.
        if p.as_os_str() != "-" {
            open(p)?;
        }
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
    let frag_timeout = u64::try_from(cfg.flow.fragment_timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut frags = FragPorts::new(cfg.flow.fragment_capacity, frag_timeout);
    let mut clock = super::Clock::default();
    let mut seq = 0u64;
    for path in paths {
        let mut cap = open(path)?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        d.set_link(link, clock.now(), seq)?;
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
            let h = pkt.header;
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
