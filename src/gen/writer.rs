//! Classic pcap files (little endian), microsecond or nanosecond timestamps.

use std::io::{self, Write};

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR: u16 = 4;
/// Global header bytes.
pub(crate) const FILE_HEADER_LEN: u64 = 24;
/// Per-record header bytes.
pub(crate) const RECORD_HEADER_LEN: u64 = 16;

/// Writes a classic pcap file. Give it a buffered writer: it issues two small writes per
/// record.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    snaplen: u32,
    nanos: bool,
    packets: u64,
    bytes: u64,
}

impl<W: Write> PcapWriter<W> {
    /// A file with microsecond timestamps (magic 0xa1b2c3d4). `snaplen` 0 is refused.
    pub fn new(w: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        Self::with_magic(w, linktype, snaplen, false)
    }

    /// A file with nanosecond timestamps (magic 0xa1b23c4d).
    pub fn new_nanos(w: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        Self::with_magic(w, linktype, snaplen, true)
    }

    fn with_magic(mut w: W, linktype: u32, snaplen: u32, nanos: bool) -> io::Result<Self> {
        if snaplen == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pcap snaplen must be at least 1",
            ));
        }
        let magic = if nanos { MAGIC_NANOS } else { MAGIC_MICROS };
        let mut h = [0u8; FILE_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        h[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // thiszone and sigfigs stay 0
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter {
            w,
            snaplen,
            nanos,
            packets: 0,
            bytes: FILE_HEADER_LEN,
        })
    }

    /// Writes `frame` truncated to the snaplen; the original length is `frame.len()`.
    pub fn write(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
        let incl = frame.len().min(self.snaplen as usize);
        let orig = u32::try_from(frame.len()).map_err(|_| too_long())?;
        self.write_raw(ts_ns, &frame[..incl], orig)
    }

    /// Writes `data` as is (incl_len = `data.len()`, even beyond the snaplen) with the given
    /// original length, which may be anything: for malformed-record tests.
    pub fn write_raw(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let incl = u32::try_from(data.len()).map_err(|_| too_long())?;
        let secs = u32::try_from(ts_ns / 1_000_000_000).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "timestamp beyond the 32-bit seconds of classic pcap",
            )
        })?;
        let frac = ts_ns % 1_000_000_000;
        let frac = if self.nanos { frac } else { frac / 1_000 } as u32;
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&incl.to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        self.packets += 1;
        self.bytes += RECORD_HEADER_LEN + u64::from(incl);
        Ok(())
    }

    /// Records written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// File bytes written so far, global header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The snaplen in the file header.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

fn too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "pcap record longer than 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::super::{Link, Packet, TcpSession, LINKTYPE_ETHERNET};
    use super::*;

    fn read_all(path: &std::path::Path, nanos: bool) -> Vec<(u64, u32, u32, Vec<u8>)> {
        let precision = if nanos {
            pcap::Precision::Nano
        } else {
            pcap::Precision::Micro
        };
        let mut cap = pcap::Capture::from_file_with_precision(path, precision).unwrap();
        let mut out = Vec::new();
        loop {
            match cap.next_packet() {
                Ok(p) => {
                    let frac = p.header.ts.tv_usec as u64;
                    let scale = if nanos { 1 } else { 1_000 };
                    let ts = p.header.ts.tv_sec as u64 * 1_000_000_000 + frac * scale;
                    out.push((ts, p.header.caplen, p.header.len, p.data.to_vec()));
                }
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn round_trip_through_libpcap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TcpSession::new(
            "10.0.0.5:51234".parse().unwrap(),
            "203.0.113.50:443".parse().unwrap(),
            30_000,
            2_000,
        );
        s.link = Link::Ethernet { vlans: vec![42] };
        s.gap_ns = 1_234_567; // sub-microsecond part is dropped in microsecond files
        let packets: Vec<Packet> = s.packets().collect();
        for nanos in [false, true] {
            for snaplen in [65_535u32, 96, 1] {
                let path = dir.path().join(format!("t-{nanos}-{snaplen}.pcap"));
                let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
                let mut w = if nanos {
                    PcapWriter::new_nanos(file, LINKTYPE_ETHERNET, snaplen).unwrap()
                } else {
                    PcapWriter::new(file, LINKTYPE_ETHERNET, snaplen).unwrap()
                };
                for p in &packets {
                    w.write(p.ts_ns, &p.frame).unwrap();
                }
                let written = w.bytes_written();
                assert_eq!(w.packets(), packets.len() as u64);
                w.into_inner().unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
                let back = read_all(&path, nanos);
                assert_eq!(back.len(), packets.len());
                for (p, (ts, incl, orig, data)) in packets.iter().zip(&back) {
                    let want_ts = if nanos {
                        p.ts_ns
                    } else {
                        p.ts_ns / 1_000 * 1_000
                    };
                    assert_eq!(*ts, want_ts);
                    assert_eq!(*orig as usize, p.frame.len());
                    assert_eq!(*incl as usize, p.frame.len().min(snaplen as usize));
                    assert_eq!(data.len(), *incl as usize);
                    assert_eq!(&data[..], &p.frame[..*incl as usize]);
                }
            }
        }
    }

    #[test]
    fn raw_records_and_header() {
        let mut w = PcapWriter::new(Vec::new(), 276, 128).unwrap();
        w.write_raw(1_500_000_000_123_456_789, &[1, 2, 3], 1000)
            .unwrap();
        let v = w.into_inner().unwrap();
        assert_eq!(&v[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(v[16..20].try_into().unwrap()), 128);
        assert_eq!(u32::from_le_bytes(v[20..24].try_into().unwrap()), 276);
        let r = &v[24..];
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_500_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(r[12..16].try_into().unwrap()), 1000);
        assert_eq!(&r[16..], &[1, 2, 3]);
        let n = PcapWriter::new_nanos(Vec::new(), 1, 65_535).unwrap();
        assert_eq!(&n.into_inner().unwrap()[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert!(PcapWriter::new(Vec::new(), 1, 0).is_err());
        let mut w = PcapWriter::new(Vec::new(), 1, 10).unwrap();
        assert!(w.write(u64::MAX, &[0]).is_err(), "seconds overflow");
    }
}
