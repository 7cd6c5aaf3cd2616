//! Dispatch: decoded packets into per-worker batches, chosen by the symmetric flow hash.
//!
//! Used by the offline reader and by live capture when the kernel cannot spread flows over
//! the workers itself (no `PACKET_FANOUT`). Batches are allocated once and cycle between the
//! dispatcher and the workers over bounded channels. Offline the dispatcher waits for a free
//! batch (nothing may be lost); live it never waits: when a worker has no free batch, the
//! batch being filled is dropped and its packets are counted.
//!
//! IP fragments: the dispatcher gives later fragments their first fragment's ports
//! ([`super::frag`]) and, when a first fragment arrives, hands its worker the orphan
//! fragments held for it, right after it, for reassembly only (see [`crate::defrag`]).

use super::file::CaptureError;
use super::frag::{FragPorts, FragStats, Resolved};
use super::{Batch, BatchPacket};
use crate::decode::{decode_frame, Decap, DecodeError, EncapCounts, LinkType};
use crossbeam_channel::{Receiver, Sender};

/// What the reader saw.
#[derive(Clone, Debug, Default)]
pub struct ReaderStats {
    /// The fragment tables at the end (see [`super::frag::READER_TABLES`]): (live entries,
    /// capacity, live entries overwritten) each.
    pub fragment_table: [crate::stats::Occupancy; 2],
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
    /// Tunnels, MPLS, PPPoE and offloaded frames the decoder met.
    pub encap: EncapCounts,
    /// Files read.
    pub files: u64,
    /// Records skipped because their timestamp does not fit (see `capture::ts_ns`).
    pub bad_timestamps: u64,
    /// Read errors that ended a file early (a corrupt record, corrupt compressed data).
    pub read_errors: Vec<super::file::ReadError>,
    /// Files that end inside their last record (copied while still being written): warnings,
    /// since everything before the cut was replayed.
    pub truncated: Vec<super::file::ReadError>,
    /// First and last packet timestamps (ns).
    pub first_ts_ns: Option<u64>,
    /// Last packet timestamp (ns).
    pub last_ts_ns: Option<u64>,
}

/// One captured frame as the capture layer hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The capture's link type.
    pub link: LinkType,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire (the record's original length).
    pub wire_len: u32,
    /// Timestamp, ns since the epoch.
    pub ts_ns: u64,
    /// The capture clock (max timestamp so far).
    pub clock_ns: u64,
    /// Sequence number of the frame in the input.
    pub seq: u64,
}

/// Fills per-worker batches and hands them over. Batches come back from the workers on
/// `free`, so after start-up nothing is allocated.
pub struct Dispatcher {
    to: Vec<Sender<Batch>>,
    free: Vec<Receiver<Batch>>,
    filling: Vec<Batch>,
    lossy: bool,
    /// Seed of the dispatch hash, random per run: which worker a flow lands on must not be
    /// predictable, or an attacker could aim a flood of flows at the worker holding the
    /// upload it wants evicted. (Outputs do not depend on it; see `worker`.)
    seed: u64,
    /// What the decoder unwraps.
    decap: Decap,
    /// Packets dropped because a worker had no free batch (live only).
    pub dropped: u64,
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
        Ok(Dispatcher {
            to,
            free,
            filling,
            lossy: false,
            seed: {
                use std::hash::BuildHasher;
                std::collections::hash_map::RandomState::new().hash_one(0x006f_7574_666c_6f77_u64)
            },
            decap: Decap::DEFAULT,
            dropped: 0,
        })
    }

    /// Live mode: never wait for a worker; drop (and count) a batch instead.
    pub fn lossy(mut self) -> Dispatcher {
        self.lossy = true;
        self
    }

    /// Switches between live (drop when a worker is behind) and lossless hand-off.
    pub fn set_lossy(&mut self, lossy: bool) {
        self.lossy = lossy;
    }

    /// Decodes a frame and appends it to its worker's batch. Undecodable frames are counted
    /// in `st` and skipped.
    #[inline]
    pub fn dispatch(
        &mut self,
        f: &Frame<'_>,
        frags: &mut FragPorts,
        st: &mut ReaderStats,
    ) -> Result<(), CaptureError> {
        st.frames += 1;
        let wire_len = f.wire_len.max(f.data.len() as u32);
        st.wire_bytes += u64::from(wire_len);
        st.first_ts_ns.get_or_insert(f.ts_ns);
        st.last_ts_ns = Some(f.ts_ns);
        let d = match decode_frame(f.link, f.data, wire_len, &self.decap) {
            Ok(d) => d,
            Err(e) => {
                if let Some(c) = st.decode_errors.get_mut(e.index()) {
                    *c += 1;
                }
                return Ok(());
            }
        };
        st.encap.count(&d);
        let mut meta = d.meta;
        let resolved = frags.resolve(&mut meta, f.clock_ns);
        st.decoded += 1;
        let w = (meta.symmetric_hash(self.seed) % self.workers() as u64) as usize;
        let bp = BatchPacket {
            seq: f.seq,
            ts_ns: f.ts_ns,
            clock_ns: f.clock_ns,
            wire_len,
            data_start: 0,
            cap_len: 0,
            meta,
            outer_copy: false,
            held: false,
        };
        self.push(w, bp, f.data, f.seq)?;
        if let Some(outer) = d.outer {
            // The tunnel's own flow lives on the worker its outer headers hash to.
            let w = (outer.symmetric_hash(self.seed) % self.workers() as u64) as usize;
            let bp = BatchPacket {
                meta: outer,
                outer_copy: true,
                ..bp
            };
            self.push(w, bp, &[], f.seq)?;
        }
        match resolved {
            Resolved::Unfragmented | Resolved::Matched => Ok(()),
            Resolved::Orphan => {
                frags.hold(&meta, f.data, f.clock_ns);
                Ok(())
            }
            Resolved::First => self.deliver_held(w, &meta, f, frags),
        }
    }

    /// Sets what the decoder unwraps (the config's `[decap]`).
    pub fn set_decap(&mut self, decap: Decap) {
        self.decap = decap;
    }

    /// Hands the orphan fragments held for a first fragment's datagram to its worker,
    /// right after it, marked `held`: reassembled there, not counted again (they were
    /// counted when they arrived). They take the first fragment's sequence number and
    /// clocks, so their events (the reassembled message) sort right after its own.
    fn deliver_held(
        &mut self,
        w: usize,
        first: &crate::decode::PacketMeta,
        f: &Frame<'_>,
        frags: &mut FragPorts,
    ) -> Result<(), CaptureError> {
        for (meta, bytes) in frags.take_held(first, f.clock_ns) {
            let p = BatchPacket {
                seq: f.seq,
                ts_ns: f.ts_ns,
                clock_ns: f.clock_ns,
                wire_len: 0,
                data_start: 0,
                cap_len: 0,
                meta,
                outer_copy: false,
                held: true,
            };
            self.push(w, p, bytes, f.seq)?;
        }
        Ok(())
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
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
        if b.packets.is_empty() {
            b.read_mono_ns = crate::stats::mono_ns();
        }
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
        let fresh = if self.lossy {
            match free.try_recv() {
                Ok(b) => b,
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    // The worker is behind: drop what we filled rather than stall capture.
                    if let Some(b) = self.filling.get_mut(w) {
                        self.dropped += b.packets.len() as u64;
                        b.clear();
                    }
                    return Ok(());
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(CaptureError::WorkersGone)
                }
            }
        } else {
            free.recv().map_err(|_| CaptureError::WorkersGone)?
        };
        let Some(slot) = self.filling.get_mut(w) else {
            return Err(CaptureError::WorkersGone);
        };
        let mut full = std::mem::replace(slot, fresh);
        // The fresh batch comes from the free list with whatever link it last carried.
        slot.link = full.link;
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

    /// Switches the link type of the batches (a new file); flushes first if needed.
    pub fn set_link(
        &mut self,
        link: LinkType,
        clock_ns: u64,
        seq: u64,
    ) -> Result<(), CaptureError> {
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
