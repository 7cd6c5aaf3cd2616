//! IPFIX export (RFC 7011, 7012) of flow records as biflows (RFC 5103), to the flow
//! collectors networks already run (nfdump's nfcapd, pmacct's nfacctd, ntopng, ...).
//!
//! One flow record becomes one data record: the originator's direction in the forward
//! elements, the responder's in the reverse elements (IANA elements with the reverse
//! Private Enterprise Number 29305, RFC 5103 §6.1). Two templates, IPv4 (256) and IPv6
//! (257), differ only in the address elements.
//!
//! | element | id | len | from |
//! | --- | --- | --- | --- |
//! | sourceIPv4Address / sourceIPv6Address | 8 / 27 | 4 / 16 | originator address |
//! | destinationIPv4Address / destinationIPv6Address | 12 / 28 | 4 / 16 | responder address |
//! | sourceTransportPort, destinationTransportPort | 7, 11 | 2 | ports (ICMP: type, code) |
//! | protocolIdentifier | 4 | 1 | IP protocol |
//! | octetDeltaCount, packetDeltaCount | 1, 2 | 8 | originator's IP bytes, packets |
//! | reverse octetDeltaCount, packetDeltaCount | 29305/1, 29305/2 | 8 | responder's |
//! | flowStartMilliseconds, flowEndMilliseconds | 152, 153 | 8 | first, last packet (ms) |
//! | flowEndReason | 136 | 1 | idle 1, active timeout 2, FIN/RST 3, end of input 4, evicted 5 |
//! | tcpControlBits, reverse tcpControlBits | 6, 29305/6 | 2 | flags from each side |
//! | vlanId, dot1qVlanId | 58, 243 | 2 | outer VLAN id (0 = none) |
//! | dot1qCustomerVlanId | 245 | 2 | inner VLAN id (0 = none) |
//! | layer2SegmentId | 351 | 8 | VXLAN: 0x01 << 56 \| VNI; else 0 |
//!
//! Tunnels: `layer2SegmentId` (RFC 7011 registry, "VxLAN" and "NVGRE" types) is the only
//! IANA element that names an overlay segment. It carries the VNI of a VXLAN tunnel (the
//! innermost one); no registered element holds a Geneve VNI, an ERSPAN session, a GRE key
//! or a GTP TEID, so those are not exported (outflow's JSON flow records carry them).
//!
//! Sequence numbers count data records (RFC 7011 §3.1): a message's is the number of data
//! records sent in the observation domain before it, modulo 2^32.
//!
//! This runs on its own thread behind a bounded queue ([`IpfixHandle`]): live capture never
//! waits for the collector (a full queue drops the record and counts it); a replay waits, so
//! every record is exported.

use crate::config::{IpfixConfig, SyslogTarget};
use crate::decode::TunnelKind;
use crate::flow::{EndReason, FlowRecord};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// Template id of IPv4 flows (ids 0..=255 are reserved, RFC 7011 §3.4.1).
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 flows.
pub const TEMPLATE_V6: u16 = 257;
/// The reverse-direction Private Enterprise Number (RFC 5103 §6.1).
pub const REVERSE_PEN: u32 = 29305;
/// Message header length.
const HEADER: usize = 16;
/// Set header length.
const SET_HEADER: usize = 4;
/// layer2SegmentId's type byte for VXLAN (IANA registry, element 351).
const SEGMENT_VXLAN: u64 = 0x01 << 56;
/// A pending (not yet full) message is sent after this long, so a quiet link's records
/// reach the collector within a second.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Timeout of a TCP connect and of each write: a collector that stopped reading must not
/// hold the export thread forever (records queue, then drop and are counted).
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest delay before reconnecting to a TCP collector.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One field of a template: element id, length, enterprise number (0 = IANA).
type Field = (u16, u16, u32);

/// The fields of a template after the two addresses (shared by IPv4 and IPv6).
const COMMON: [Field; 16] = [
    (7, 2, 0),           // sourceTransportPort
    (11, 2, 0),          // destinationTransportPort
    (4, 1, 0),           // protocolIdentifier
    (1, 8, 0),           // octetDeltaCount
    (2, 8, 0),           // packetDeltaCount
    (1, 8, REVERSE_PEN), // reverse octetDeltaCount
    (2, 8, REVERSE_PEN), // reverse packetDeltaCount
    (152, 8, 0),         // flowStartMilliseconds
    (153, 8, 0),         // flowEndMilliseconds
    (136, 1, 0),         // flowEndReason
    (6, 2, 0),           // tcpControlBits
    (6, 2, REVERSE_PEN), // reverse tcpControlBits
    (58, 2, 0),          // vlanId
    (243, 2, 0),         // dot1qVlanId
    (245, 2, 0),         // dot1qCustomerVlanId
    (351, 8, 0),         // layer2SegmentId
];

/// The common fields.
fn common() -> &'static [Field] {
    &COMMON
}

/// Bytes of one data record of the IPv4 or IPv6 template.
pub fn record_len(ipv6: bool) -> usize {
    let addrs = if ipv6 { 32 } else { 8 };
    addrs + common().iter().map(|f| usize::from(f.1)).sum::<usize>()
}

/// The address fields of a template.
fn addr_fields(ipv6: bool) -> [Field; 2] {
    if ipv6 {
        [(27, 16, 0), (28, 16, 0)]
    } else {
        [(8, 4, 0), (12, 4, 0)]
    }
}

/// Bytes of the template set holding both templates.
fn template_set_len() -> usize {
    let fields = |v6| {
        addr_fields(v6)
            .iter()
            .chain(common())
            .map(|f| if f.2 != 0 { 8 } else { 4 })
            .sum::<usize>()
    };
    SET_HEADER + 4 + fields(false) + 4 + fields(true)
}

/// IPFIX flowEndReason of a record (RFC 5102 §5.11.3 values).
pub fn end_reason(r: EndReason) -> u8 {
    match r {
        EndReason::Idle => 1,
        EndReason::ActiveTimeout => 2,
        EndReason::Fin | EndReason::Rst => 3,
        EndReason::EndOfInput => 4,
        EndReason::Evicted => 5,
    }
}

/// What is exported of one flow record: plain data, so the hand-off to the export thread
/// never allocates (a record's tunnel chain is boxed; only the VNI is kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpfixFlow {
    /// IPv6 (template 257) or IPv4 (256).
    pub ipv6: bool,
    /// IP protocol.
    pub proto: u8,
    /// Originator address (IPv4: the last 4 bytes).
    pub src: [u8; 16],
    /// Responder address.
    pub dst: [u8; 16],
    /// Originator port.
    pub sport: u16,
    /// Responder port.
    pub dport: u16,
    /// Originator → responder IP bytes, packets.
    pub octets: u64,
    /// Originator → responder packets.
    pub packets: u64,
    /// Responder → originator IP bytes.
    pub rev_octets: u64,
    /// Responder → originator packets.
    pub rev_packets: u64,
    /// First packet (ms since the epoch).
    pub start_ms: u64,
    /// Last packet (ms since the epoch).
    pub end_ms: u64,
    /// IPFIX flowEndReason.
    pub end_reason: u8,
    /// TCP flags from the originator.
    pub flags: u8,
    /// TCP flags from the responder.
    pub rev_flags: u8,
    /// Outer, inner VLAN id (0 = none).
    pub vlan: [u16; 2],
    /// layer2SegmentId (0 = none).
    pub segment: u64,
}

impl IpfixFlow {
    /// The exported fields of `r`.
    pub fn of(r: &FlowRecord) -> IpfixFlow {
        let vni = r
            .extra
            .as_ref()
            .and_then(|x| x.tunnel.as_ref())
            .and_then(|c| c.hops().iter().rev().find(|h| h.kind == TunnelKind::Vxlan))
            .and_then(|h| h.id);
        IpfixFlow {
            ipv6: r.ipv6,
            proto: r.proto,
            src: r.orig_addr.0,
            dst: r.resp_addr.0,
            sport: r.orig_port,
            dport: r.resp_port,
            octets: r.orig.ip_bytes,
            packets: r.orig.pkts,
            rev_octets: r.resp.ip_bytes,
            rev_packets: r.resp.pkts,
            start_ms: r.start_ns / 1_000_000,
            end_ms: r.last_ns / 1_000_000,
            end_reason: end_reason(r.reason),
            flags: r.orig_flags,
            rev_flags: r.resp_flags,
            vlan: r.vlan,
            segment: vni.map_or(0, |v| SEGMENT_VXLAN | u64::from(v & 0x00ff_ffff)),
        }
    }
}

/// Builds IPFIX messages of one observation domain, one at a time, in a reused buffer.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    /// Data records sent before the message being built (the next header's sequence).
    seq: u32,
    /// Largest message (bytes).
    mtu: usize,
    buf: Vec<u8>,
    /// The open data set: its template id and where its header starts.
    set: Option<(u16, usize)>,
    /// Data records in the message being built.
    records: u32,
}

impl Encoder {
    /// An encoder for observation domain `domain`, messages of at most `mtu` bytes (at least
    /// room for the templates and one record).
    pub fn new(domain: u32, mtu: usize) -> Encoder {
        let mtu = mtu.max(HEADER + template_set_len() + SET_HEADER + record_len(true));
        Encoder {
            domain,
            seq: 0,
            mtu,
            buf: Vec::with_capacity(mtu),
            set: None,
            records: 0,
        }
    }

    /// Data records counted so far (the next message's sequence number).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// Whether a message is being built.
    pub fn is_open(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Data records in the message being built.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Starts a message, with the template set first if `templates`.
    pub fn begin(&mut self, templates: bool) {
        self.buf.clear();
        self.set = None;
        self.records = 0;
        self.buf.resize(HEADER, 0);
        if templates {
            let start = self.buf.len();
            put16(&mut self.buf, 2);
            put16(&mut self.buf, 0);
            for v6 in [false, true] {
                put16(&mut self.buf, if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 });
                put16(&mut self.buf, (2 + common().len()) as u16);
                for &(id, len, pen) in addr_fields(v6).iter().chain(common()) {
                    if pen == 0 {
                        put16(&mut self.buf, id);
                        put16(&mut self.buf, len);
                    } else {
                        put16(&mut self.buf, id | 0x8000);
                        put16(&mut self.buf, len);
                        self.buf.extend_from_slice(&pen.to_be_bytes());
                    }
                }
            }
            self.close_set_at(start);
        }
    }

    /// Adds one data record to the message; false (and nothing added) if it would not fit.
    pub fn add(&mut self, f: &IpfixFlow) -> bool {
        let tid = if f.ipv6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
        let same_set = matches!(self.set, Some((t, _)) if t == tid);
        let need = record_len(f.ipv6) + if same_set { 0 } else { SET_HEADER };
        if self.buf.len() + need > self.mtu {
            return false;
        }
        if !same_set {
            self.close_data_set();
            self.set = Some((tid, self.buf.len()));
            put16(&mut self.buf, tid);
            put16(&mut self.buf, 0);
        }
        let b = &mut self.buf;
        if f.ipv6 {
            b.extend_from_slice(&f.src);
            b.extend_from_slice(&f.dst);
        } else {
            b.extend_from_slice(f.src.get(12..).unwrap_or(&[0; 4]));
            b.extend_from_slice(f.dst.get(12..).unwrap_or(&[0; 4]));
        }
        put16(b, f.sport);
        put16(b, f.dport);
        b.push(f.proto);
        for v in [f.octets, f.packets, f.rev_octets, f.rev_packets] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&f.start_ms.to_be_bytes());
        b.extend_from_slice(&f.end_ms.to_be_bytes());
        b.push(f.end_reason);
        put16(b, u16::from(f.flags));
        put16(b, u16::from(f.rev_flags));
        put16(b, f.vlan[0]);
        put16(b, f.vlan[0]);
        put16(b, f.vlan[1]);
        b.extend_from_slice(&f.segment.to_be_bytes());
        self.records += 1;
        true
    }

    /// Completes the message: closes the open set, writes the header (`export_secs`: the
    /// export time, seconds since the epoch) and advances the sequence number. The message
    /// is valid until the next `begin`.
    pub fn finish(&mut self, export_secs: u32) -> &[u8] {
        self.close_data_set();
        let len = self.buf.len() as u16;
        let seq = self.seq;
        if let Some(h) = self.buf.get_mut(..HEADER) {
            h[0..2].copy_from_slice(&VERSION.to_be_bytes());
            h[2..4].copy_from_slice(&len.to_be_bytes());
            h[4..8].copy_from_slice(&export_secs.to_be_bytes());
            h[8..12].copy_from_slice(&seq.to_be_bytes());
            h[12..16].copy_from_slice(&self.domain.to_be_bytes());
        }
        self.seq = self.seq.wrapping_add(self.records);
        self.records = 0;
        &self.buf
    }

    /// Forgets the message being built (its records are not counted in the sequence).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.set = None;
        self.records = 0;
    }

    fn close_data_set(&mut self) {
        if let Some((_, start)) = self.set.take() {
            self.close_set_at(start);
        }
    }

    /// Writes the length of the set starting at `start`.
    fn close_set_at(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        if let Some(l) = self.buf.get_mut(start + 2..start + 4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

pub use crate::telemetry::IpfixCounters;

/// Where the messages go.
enum Target {
    /// One message per datagram; templates re-sent on schedule.
    Udp(String),
    /// Messages back to back on one connection; templates once per connection.
    Tcp(String),
}

fn target(s: &str) -> Result<Target, String> {
    match SyslogTarget::parse(s)? {
        SyslogTarget::Udp(hp) => Ok(Target::Udp(hp)),
        SyslogTarget::Tcp(hp) => Ok(Target::Tcp(hp)),
        _ => Err(format!("{s:?}: use udp://host:port or tcp://host:port")),
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

fn connect(t: &Target) -> io::Result<Conn> {
    let (hp, udp) = match t {
        Target::Udp(hp) => (hp, true),
        Target::Tcp(hp) => (hp, false),
    };
    let mut last = None;
    for a in hp.to_socket_addrs()? {
        let r = if udp {
            let any: SocketAddr = if a.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            UdpSocket::bind(any).and_then(|s| s.connect(a).map(|()| Conn::Udp(s)))
        } else {
            TcpStream::connect_timeout(&a, TCP_TIMEOUT).and_then(|s| {
                s.set_write_timeout(Some(TCP_TIMEOUT))?;
                Ok(Conn::Tcp(s))
            })
        };
        match r {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name has no address")))
}

/// The caller's end of the export thread.
pub struct IpfixHandle {
    tx: Option<Sender<IpfixFlow>>,
    lossless: bool,
    counters: Arc<IpfixCounters>,
    thread: Option<JoinHandle<Option<io::Error>>>,
}

impl IpfixHandle {
    /// Starts the thread `outflow-ipfix` behind a queue of `cfg.queue` records. `lossless`
    /// (replay): `export` waits for room and the first send error is final.
    pub fn spawn(cfg: &IpfixConfig, lossless: bool) -> io::Result<IpfixHandle> {
        let t = target(&cfg.target)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("ipfix: {e}")))?;
        let counters = Arc::new(IpfixCounters::default());
        let (tx, rx) = bounded(cfg.queue.max(1));
        let body = ExportThread {
            target: t,
            label: cfg.target.clone(),
            rx,
            enc: Encoder::new(cfg.observation_domain, cfg.mtu),
            c: Arc::clone(&counters),
            lossless,
            template_interval: cfg.template_interval,
            template_messages: cfg.template_messages,
            conn: None,
            last_templates: None,
            since_templates: 0,
            with_templates: false,
            opened: Instant::now(),
            backoff: INITIAL_BACKOFF,
            retry_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("outflow-ipfix".into())
            .spawn(move || body.run())?;
        Ok(IpfixHandle {
            tx: Some(tx),
            lossless,
            counters,
            thread: Some(thread),
        })
    }

    /// The exporter's counters.
    pub fn counters(&self) -> Arc<IpfixCounters> {
        Arc::clone(&self.counters)
    }

    /// Queues one flow record for export. Live: never blocks; a full queue drops it (counted).
    pub fn export(&self, r: &FlowRecord) {
        let f = IpfixFlow::of(r);
        let ok = match self.tx.as_ref() {
            Some(tx) if self.lossless => tx.send(f).is_ok(),
            Some(tx) => tx.try_send(f).is_ok(),
            None => false,
        };
        if !ok {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Sends what is queued and stops the thread; the first send error of a lossless export.
    pub fn close(mut self) -> Option<io::Error> {
        self.tx = None;
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for IpfixHandle {
    fn drop(&mut self) {
        self.tx = None;
    }
}

struct ExportThread {
    target: Target,
    label: String,
    rx: Receiver<IpfixFlow>,
    enc: Encoder,
    c: Arc<IpfixCounters>,
    lossless: bool,
    template_interval: Duration,
    template_messages: u32,
    conn: Option<Conn>,
    /// When the templates last went out on this connection (UDP: at all): only a message
    /// that was sent counts, not one that was built with them and then lost.
    last_templates: Option<Instant>,
    /// Messages sent since the templates, the one carrying them included (UDP).
    since_templates: u32,
    /// The message being built starts with the templates.
    with_templates: bool,
    /// When the message being built was begun.
    opened: Instant,
    backoff: Duration,
    /// No connect attempt before this (after a failure).
    retry_at: Option<Instant>,
}

impl ExportThread {
    fn run(mut self) -> Option<io::Error> {
        loop {
            let wait = if self.enc.is_open() {
                FLUSH_EVERY.saturating_sub(self.opened.elapsed())
            } else {
                FLUSH_EVERY
            };
            match self.rx.recv_timeout(wait) {
                Ok(f) => {
                    if let Err(e) = self.push(&f) {
                        return Some(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.flush() {
                        return Some(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return self.flush().err(),
            }
        }
    }

    fn templates_due(&self) -> bool {
        match (&self.target, self.last_templates) {
            (_, None) => true,
            (Target::Tcp(_), Some(_)) => false,
            (Target::Udp(_), Some(t)) => {
                t.elapsed() >= self.template_interval
                    || (self.template_messages > 0
                        && self.since_templates >= self.template_messages)
            }
        }
    }

    fn push(&mut self, f: &IpfixFlow) -> io::Result<()> {
        if !self.enc.is_open() {
            self.begin();
        }
        if !self.enc.add(f) {
            self.flush()?;
            self.begin();
            if !self.enc.add(f) {
                // Cannot happen: the MTU always fits the templates and one record.
                self.c.dropped.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    fn begin(&mut self) {
        self.with_templates = self.templates_due();
        self.enc.begin(self.with_templates);
        self.opened = Instant::now();
    }

    /// Sends the message being built. Live: a failure loses it (counted) and the next
    /// connect waits for the backoff; lossless: the failure is returned.
    fn flush(&mut self) -> io::Result<()> {
        if !self.enc.is_open() {
            return Ok(());
        }
        let records = u64::from(self.enc.records());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) && !self.lossless {
                self.enc.discard();
                self.c.dropped.fetch_add(records, Relaxed);
                return Ok(());
            }
            match connect(&self.target) {
                Ok(c) => {
                    self.conn = Some(c);
                    self.backoff = INITIAL_BACKOFF;
                    self.retry_at = None;
                }
                Err(e) => return self.failed(records, e),
            }
        }
        let msg = self.enc.finish(now);
        let r = match self.conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(msg).map(drop),
            Some(Conn::Tcp(s)) => s.write_all(msg),
            None => Ok(()),
        };
        self.enc.discard();
        match r {
            Ok(()) => {
                self.c.messages.fetch_add(1, Relaxed);
                self.c.records.fetch_add(records, Relaxed);
                if self.with_templates {
                    self.last_templates = Some(self.opened);
                    self.since_templates = 1;
                } else {
                    self.since_templates = self.since_templates.saturating_add(1);
                }
                Ok(())
            }
            Err(e) => self.failed(records, e),
        }
    }

    fn failed(&mut self, records: u64, e: io::Error) -> io::Result<()> {
        self.enc.discard();
        self.c.errors.fetch_add(1, Relaxed);
        self.c.dropped.fetch_add(records, Relaxed);
        if matches!(self.target, Target::Tcp(_)) {
            // A new connection starts with the templates again.
            self.conn = None;
            self.last_templates = None;
        }
        let e = io::Error::new(e.kind(), format!("ipfix to {}: {e}", self.label));
        if self.lossless {
            return Err(e);
        }
        if self.backoff == INITIAL_BACKOFF {
            tracing::warn!("{e}; retrying with backoff");
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(ipv6: bool) -> IpfixFlow {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if ipv6 {
            src[0] = 0x20;
            src[1] = 0x01;
            src[15] = 1;
            dst[0] = 0x20;
            dst[1] = 0x01;
            dst[15] = 2;
        } else {
            src[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
            dst[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 7]);
        }
        IpfixFlow {
            ipv6,
            proto: 6,
            src,
            dst,
            sport: 40000,
            dport: 443,
            octets: 1000,
            packets: 10,
            rev_octets: 5000,
            rev_packets: 8,
            start_ms: 1_700_000_000_123,
            end_ms: 1_700_000_001_456,
            end_reason: 3,
            flags: 0x1b,
            rev_flags: 0x12,
            vlan: [100, 200],
            segment: SEGMENT_VXLAN | 42,
        }
    }

    #[test]
    fn record_lengths() {
        assert_eq!(record_len(false), 8 + 2 + 2 + 1 + 32 + 16 + 1 + 4 + 6 + 8);
        assert_eq!(record_len(true), record_len(false) + 24);
    }

    #[test]
    fn message_header_and_template_set_are_byte_exact() {
        let mut e = Encoder::new(7, 1400);
        e.begin(true);
        let m = e.finish(0x6553_f100).to_vec();
        assert_eq!(
            &m[..16],
            &[
                0,
                10,
                (m.len() >> 8) as u8,
                m.len() as u8,
                0x65,
                0x53,
                0xf1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                7
            ]
        );
        assert_eq!(m.len(), 16 + template_set_len());
        // Template set header, then the IPv4 template: id 256, 18 fields.
        assert_eq!(
            &m[16..20],
            &[
                0,
                2,
                (template_set_len() >> 8) as u8,
                template_set_len() as u8
            ]
        );
        assert_eq!(&m[20..24], &[1, 0, 0, 18]);
        // sourceIPv4Address/4, destinationIPv4Address/4, sourceTransportPort/2, ...
        assert_eq!(&m[24..36], &[0, 8, 0, 4, 0, 12, 0, 4, 0, 7, 0, 2]);
        // ... octetDeltaCount/8 (after ports and protocol), then reverse octetDeltaCount:
        // the enterprise bit, length 8, PEN 29305 (0x7279).
        assert_eq!(&m[44..48], &[0, 1, 0, 8]);
        assert_eq!(&m[52..60], &[0x80, 1, 0, 8, 0, 0, 0x72, 0x79]);
        assert_eq!(&m[60..68], &[0x80, 2, 0, 8, 0, 0, 0x72, 0x79]);
        // The IPv6 template follows the IPv4 one's 15 IANA and 3 reverse specifiers.
        let v6 = 24 + 15 * 4 + 3 * 8;
        assert_eq!(&m[v6..v6 + 12], &[1, 1, 0, 18, 0, 27, 0, 16, 0, 28, 0, 16]);
        assert_eq!(e.sequence(), 0, "templates are not data records");
    }

    #[test]
    fn data_records_are_byte_exact_and_counted_in_the_sequence() {
        let mut e = Encoder::new(1, 1400);
        e.begin(false);
        assert!(e.add(&flow(false)));
        assert!(e.add(&flow(false)));
        let m = e.finish(1).to_vec();
        let set = 4 + 2 * record_len(false);
        assert_eq!(m.len(), 16 + set);
        assert_eq!(&m[8..12], &[0, 0, 0, 0]);
        assert_eq!(&m[16..20], &[1, 0, 0, set as u8]);
        let r = &m[20..20 + record_len(false)];
        let mut want = vec![10, 0, 0, 1, 192, 0, 2, 7, 0x9c, 0x40, 1, 0xbb, 6];
        for v in [1000u64, 10, 5000, 8, 1_700_000_000_123, 1_700_000_001_456] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.extend_from_slice(&[3, 0, 0x1b, 0, 0x12, 0, 100, 0, 100, 0, 200]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(r, &want[..]);
        // The next message's sequence number counts the two records.
        e.begin(false);
        assert!(e.add(&flow(true)));
        let m = e.finish(1).to_vec();
        assert_eq!(&m[8..12], &[0, 0, 0, 2]);
        assert_eq!(e.sequence(), 3);
    }

    #[test]
    fn v4_and_v6_go_in_separate_sets_and_messages_stay_within_the_mtu() {
        let mut e = Encoder::new(1, 500);
        e.begin(false);
        assert!(e.add(&flow(false)));
        assert!(e.add(&flow(true)));
        let m = e.finish(1).to_vec();
        let s1 = 4 + record_len(false);
        assert_eq!(&m[16..18], &[1, 0]);
        assert_eq!(&m[16 + s1..16 + s1 + 2], &[1, 1]);
        let v6 = &m[16 + s1 + 4..];
        assert_eq!(&v6[..2], &[0x20, 1]);
        assert_eq!(v6.len(), record_len(true));
        // Full: the encoder refuses what would cross the MTU.
        let mut e = Encoder::new(1, 1400);
        e.begin(true);
        let mut n = 0;
        while e.add(&flow(false)) {
            n += 1;
        }
        let len = e.finish(1).len();
        assert!(len <= 1400 && len + record_len(false) > 1400, "{len}");
        assert_eq!(e.sequence(), n);
    }

    #[test]
    fn end_reasons_follow_the_iana_registry() {
        assert_eq!(end_reason(EndReason::Idle), 1);
        assert_eq!(end_reason(EndReason::ActiveTimeout), 2);
        assert_eq!(end_reason(EndReason::Fin), 3);
        assert_eq!(end_reason(EndReason::Rst), 3);
        assert_eq!(end_reason(EndReason::EndOfInput), 4);
        assert_eq!(end_reason(EndReason::Evicted), 5);
    }

    #[test]
    fn udp_export_reaches_a_socket() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let cfg = IpfixConfig {
            target: format!("udp://{}", server.local_addr().unwrap()),
            ..IpfixConfig::default()
        };
        let h = IpfixHandle::spawn(&cfg, true).unwrap();
        let r = FlowRecord {
            flow_id: 1,
            continues: None,
            proto: 17,
            ipv6: false,
            orig_addr: crate::decode::Addr::v4([10, 0, 0, 1]),
            orig_port: 5353,
            resp_addr: crate::decode::Addr::v4([10, 0, 0, 2]),
            resp_port: 53,
            vlan: [0, 0],
            start_ns: 1_000_000_000,
            last_ns: 2_000_000_000,
            orig: crate::flow::DirCounters {
                pkts: 1,
                ip_bytes: 77,
                payload_bytes: 49,
            },
            resp: crate::flow::DirCounters::default(),
            orig_flags: 0,
            resp_flags: 0,
            tcp: crate::flow::TcpState::default(),
            reason: EndReason::Idle,
            outbound: None,
            tunnel_tag: crate::decode::TunnelTag::default(),
            extra: None,
        };
        assert_eq!(IpfixFlow::of(&r).octets, 77);
        h.export(&r);
        let c = h.counters();
        assert!(h.close().is_none());
        let mut buf = [0u8; 2000];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 10]);
        assert_eq!(n, 16 + template_set_len() + 4 + record_len(r.ipv6));
        assert_eq!(c.records.load(Relaxed), 1);
        assert_eq!(c.messages.load(Relaxed), 1);
    }
}
