//! IPFIX export to real collectors and to collectors written here.
//!
//! - nfdump's `nfcapd` and pmacct's `nfacctd` receive the export of a replayed capture over
//!   UDP, and `nfdump -r` / pmacct's print plugin show the same flows with the same counters
//!   as outflow's own flow records. Installs nothing: `make test-deps` installs nfdump and
//!   pmacct; without one, its test says so and passes.
//! - Neither collector takes IPFIX over TCP (nfcapd 1.7 listens on UDP only, nfacctd 1.7 on
//!   UDP, DTLS, Kafka and ZeroMQ), so the TCP export goes to a collector in this file that
//!   frames messages by their header length and decodes the data records by the templates
//!   received on the connection.
//! - Through the library: the UDP template re-send schedule (by message count and by time),
//!   and the live (lossy) mode's bounded queue: `export` never waits for a stalled
//!   collector, and every record not sent is counted as dropped.

use outflow::config::IpfixConfig;
use outflow::decode::{Addr, TunnelTag};
use outflow::flow::{DirCounters, EndReason, FlowRecord, TcpState};
use outflow::output::ipfix::IpfixHandle;
use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free UDP port on loopback (bound and released; nfcapd binds it right after).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (orig, resp, orig port, resp port, proto, orig pkts, orig bytes, resp pkts, resp bytes)
type Row = (String, String, u16, u16, String, u64, u64, u64, u64);

/// Rows sorted, duplicates kept: two equal flows must show up twice on both sides.
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn outflow_rows(flows: &Path) -> Vec<Row> {
    let rows = std::fs::read_to_string(flows)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let n = |k: &str| v[k].as_u64().unwrap();
            (
                s("orig_ip"),
                s("resp_ip"),
                n("orig_port") as u16,
                n("resp_port") as u16,
                s("proto").to_uppercase(),
                n("orig_pkts"),
                n("orig_ip_bytes"),
                n("resp_pkts"),
                n("resp_ip_bytes"),
            )
        })
        .collect();
    sorted(rows)
}

/// nfdump's CSV: ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,...
fn nfdump_rows(dir: &Path) -> Vec<Row> {
    let out = Command::new("nfdump")
        .args(["-R"])
        .arg(dir)
        .args(["-o", "csv", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (
                f[3].to_string(),
                f[4].to_string(),
                n(5) as u16,
                n(6) as u16,
                f[7].to_string(),
                n(11),
                n(12),
                n(13),
                n(14),
            )
        })
        .collect();
    sorted(rows)
}

/// Replays the demo capture (IPv4 and IPv6 flows) with `--ipfix target`, its flow records
/// written to `flows`.
fn replay_demo(target: &str, flows: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["replay", "--quiet", "--ipfix", target, "--flows-out"])
        .arg(flows)
        .args(["--alerts-out", "/dev/null"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "outflow replay --ipfix {target}: {st}");
}

#[test]
fn nfcapd_receives_the_same_flows_with_the_same_counters() {
    if !have("nfcapd") || !have("nfdump") {
        eprintln!("SKIPPED: nfcapd/nfdump not installed (make test-deps installs nfdump)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nfcapd");
    std::fs::create_dir(&store).unwrap();
    let port = free_udp_port();
    let mut nfcapd = Command::new("nfcapd")
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let flows = dir.path().join("flows.json");
    replay_demo(&format!("udp://127.0.0.1:{port}"), &flows);
    // SIGTERM makes nfcapd write out what it holds.
    std::thread::sleep(Duration::from_millis(500));
    unsafe {
        libc::kill(nfcapd.id() as i32, libc::SIGTERM);
    }
    nfcapd.wait().unwrap();
    let want = outflow_rows(&flows);
    let got = nfdump_rows(&store);
    assert!(!want.is_empty());
    assert_eq!(got, want, "nfdump's flows differ from outflow's records");
}

/// A collector process, stopped by SIGINT (and SIGKILL if it does not end) when a failed
/// assertion leaves it running.
struct Daemon(Option<Child>);

impl Daemon {
    /// Sends `sig` and waits for the process to end.
    fn stop(mut self, sig: i32) -> ExitStatus {
        let mut c = self.0.take().unwrap();
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
        c.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let end = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `done` every 100 ms for at most `limit`; whether it came true.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pmacct's print plugin CSV (header line first; an appended file repeats no header). Only
/// complete lines: the plugin may be writing the file while it is read.
fn pmacct_rows(csv: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines = complete.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (sa, da, sp, dp, pr) = (
        col("SRC_IP"),
        col("DST_IP"),
        col("SRC_PORT"),
        col("DST_PORT"),
        col("PROTOCOL"),
    );
    let (pkts, bytes, rpkts, rbytes) = (
        col("PACKETS"),
        col("BYTES"),
        col("rev_pkts"),
        col("rev_bytes"),
    );
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), cols.len(), "{l:?}");
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (
                f[sa].to_string(),
                f[da].to_string(),
                n(sp) as u16,
                n(dp) as u16,
                f[pr].to_uppercase(),
                n(pkts),
                n(bytes),
                n(rpkts),
                n(rbytes),
            )
        })
        .collect();
    sorted(rows)
}

/// pmacct's `nfacctd` (print plugin, CSV) receives the export of the demo capture and shows
/// the same flows with the same counters as outflow's flow records, both directions.
///
/// pmacct has no notion of biflows: its own PACKETS and BYTES are the forward elements
/// (packetDeltaCount, octetDeltaCount: the originator's), and it ignores the RFC 5103
/// reverse elements unless told to read them. The test tells it, with custom primitives
/// (`aggregate_primitives`) for reverse packetDeltaCount and octetDeltaCount (PEN 29305,
/// elements 2 and 1), aggregated with the 5-tuple: so pmacct shows the responder's counters
/// as it decoded them from the records, next to its own forward counters. Every flow record
/// is one data record with its own 5-tuple, so the print plugin's aggregation sums nothing.
#[test]
fn nfacctd_receives_the_same_flows_with_the_same_counters_in_both_directions() {
    if !have("nfacctd") {
        eprintln!("SKIPPED: nfacctd not installed (make test-deps installs pmacct)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_udp_port();
    std::fs::write(
        d.join("primitives.lst"),
        "name=rev_bytes\tfield_type=29305:1\tlen=8\tsemantics=u_int\n\
         name=rev_pkts\tfield_type=29305:2\tlen=8\tsemantics=u_int\n",
    )
    .unwrap();
    let (csv, log) = (d.join("flows.csv"), d.join("nfacctd.log"));
    // Written every second, appended: the test waits for all rows, then stops nfacctd.
    let conf = format!(
        "daemonize: false\n\
         logfile: {log}\n\
         nfacctd_ip: 127.0.0.1\n\
         nfacctd_port: {port}\n\
         aggregate_primitives: {prims}\n\
         plugins: print\n\
         aggregate: src_host, dst_host, src_port, dst_port, proto, rev_pkts, rev_bytes\n\
         print_output: csv\n\
         print_output_file: {csv}\n\
         print_output_file_append: true\n\
         print_refresh_time: 1\n",
        log = log.display(),
        prims = d.join("primitives.lst").display(),
        csv = csv.display(),
    );
    std::fs::write(d.join("nfacctd.conf"), conf).unwrap();
    let nfacctd = Daemon(Some(
        Command::new("nfacctd")
            .arg("-f")
            .arg(d.join("nfacctd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || log_text()
            .contains("waiting for NetFlow/IPFIX data")),
        "nfacctd did not start:\n{}",
        log_text()
    );
    let flows = d.join("flows.json");
    replay_demo(&format!("udp://127.0.0.1:{port}"), &flows);
    let want = outflow_rows(&flows);
    assert!(!want.is_empty());
    // Every record as one row: then nothing is still on its way through nfacctd.
    wait_until(Duration::from_secs(20), || {
        pmacct_rows(&csv).len() >= want.len()
    });
    // SIGINT: nfacctd's graceful end (its plugins purge what they hold).
    let st = nfacctd.stop(libc::SIGINT);
    assert!(st.success(), "nfacctd: {st}\n{}", log_text());
    let got = pmacct_rows(&csv);
    assert_eq!(
        got,
        want,
        "pmacct's flows differ from outflow's records\n{}",
        log_text()
    );
}

/// One IPFIX message: its header fields and sets (set id, body without the set header).
#[derive(Debug)]
struct Message {
    seq: u32,
    domain: u32,
    sets: Vec<(u16, Vec<u8>)>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parses one message, which must fill `b` exactly with whole sets (RFC 7011 §3).
fn parse_message(b: &[u8]) -> Message {
    assert!(b.len() >= 16, "{} bytes: no message header", b.len());
    assert_eq!(be16(b, 0), 10, "version");
    assert_eq!(usize::from(be16(b, 2)), b.len(), "message length");
    let mut sets = Vec::new();
    let mut at = 16;
    while at < b.len() {
        let (id, len) = (be16(b, at), usize::from(be16(b, at + 2)));
        assert!(len >= 4 && at + len <= b.len(), "set length {len} at {at}");
        sets.push((id, b[at + 4..at + len].to_vec()));
        at += len;
    }
    Message {
        seq: be32(b, 8),
        domain: be32(b, 12),
        sets,
    }
}

/// A TCP stream's messages, framed by the length in each header; no bytes left over.
fn split_stream(mut b: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(
            b.len() >= 4,
            "{} stray bytes after the last message",
            b.len()
        );
        let len = usize::from(be16(b, 2));
        assert!(
            len >= 16 && len <= b.len(),
            "message length {len}, {} left",
            b.len()
        );
        out.push(parse_message(&b[..len]));
        b = &b[len..];
    }
    out
}

/// Field specifiers: (element id, length, enterprise number; 0 = IANA).
type Template = Vec<(u16, u16, u32)>;

/// A collector's view: the templates received, and the data records decoded with them.
#[derive(Default)]
struct Decoded {
    templates: HashMap<u16, Template>,
    /// Each record's fields by (enterprise, element id).
    records: Vec<HashMap<(u32, u16), Vec<u8>>>,
}

impl Decoded {
    /// Takes in one message's sets in order; the number of data records it held. A data set
    /// whose template has not been received fails the test.
    fn take(&mut self, m: &Message) -> u32 {
        let mut n = 0;
        for (id, body) in &m.sets {
            match id {
                2 => {
                    let mut at = 0;
                    while at < body.len() {
                        let (tid, count) = (be16(body, at), be16(body, at + 2));
                        at += 4;
                        let mut fields = Vec::new();
                        for _ in 0..count {
                            let (raw, len) = (be16(body, at), be16(body, at + 2));
                            at += 4;
                            let pen = if raw & 0x8000 != 0 {
                                at += 4;
                                be32(body, at - 4)
                            } else {
                                0
                            };
                            fields.push((raw & 0x7fff, len, pen));
                        }
                        self.templates.insert(tid, fields);
                    }
                }
                256.. => {
                    let t = self
                        .templates
                        .get(id)
                        .unwrap_or_else(|| panic!("data set {id} before its template"));
                    let len: usize = t.iter().map(|f| usize::from(f.1)).sum();
                    assert_eq!(body.len() % len, 0, "set {id}: padding or a partial record");
                    for r in body.chunks(len) {
                        let mut at = 0;
                        let mut rec = HashMap::new();
                        for &(el, flen, pen) in t {
                            rec.insert((pen, el), r[at..at + usize::from(flen)].to_vec());
                            at += usize::from(flen);
                        }
                        self.records.push(rec);
                        n += 1;
                    }
                }
                _ => panic!("unexpected set id {id}"),
            }
        }
        n
    }

    /// The records as rows (like outflow's flow records).
    fn rows(&self) -> Vec<Row> {
        let rows = self
            .records
            .iter()
            .map(|r| {
                let f = |pen: u32, el: u16| r.get(&(pen, el)).map(Vec::as_slice);
                let uint = |pen: u32, el: u16| {
                    f(pen, el)
                        .unwrap()
                        .iter()
                        .fold(0u64, |a, b| a << 8 | u64::from(*b))
                };
                let ip = |v4: u16, v6: u16| match (f(0, v4), f(0, v6)) {
                    (Some(a), None) => Ipv4Addr::from(<[u8; 4]>::try_from(a).unwrap()).to_string(),
                    (None, Some(a)) => Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap()).to_string(),
                    _ => panic!("record without one address family: {r:?}"),
                };
                let proto = match uint(0, 4) {
                    6 => "TCP".to_string(),
                    17 => "UDP".to_string(),
                    p => p.to_string(),
                };
                (
                    ip(8, 27),
                    ip(12, 28),
                    uint(0, 7) as u16,
                    uint(0, 11) as u16,
                    proto,
                    uint(0, 2),
                    uint(0, 1),
                    uint(29305, 2),
                    uint(29305, 1),
                )
            })
            .collect();
        sorted(rows)
    }
}

/// Accepts one connection within `limit` (a replay that never connects fails the test
/// rather than hanging it).
fn accept_within(l: &TcpListener, limit: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no connection from the exporter: {e}"),
        }
    }
}

/// Over TCP (`--ipfix tcp://`) the connection starts with the template set, carries it once
/// (TCP is reliable: RFC 7011 §10.4.2.1 sends templates once per connection) and then one
/// data record per flow record: decoded with those templates they are outflow's flow
/// records, same 5-tuples and counters in both directions. No Debian collector takes IPFIX
/// over TCP (see the top of this file), so the collector is the code above.
#[test]
fn tcp_export_starts_with_the_templates_and_carries_every_flow_record() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let collector = std::thread::spawn(move || {
        let mut s = accept_within(&listener, Duration::from_secs(60));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        // The exporter closed its connection at the end of the replay; it opened no other.
        let again = listener.accept();
        (buf, again.map(|_| ()).map_err(|e| e.kind()))
    });
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.json");
    replay_demo(&format!("tcp://127.0.0.1:{port}"), &flows);
    let (stream, again) = collector.join().unwrap();
    assert_eq!(
        again,
        Err(std::io::ErrorKind::WouldBlock),
        "a second connection"
    );
    let msgs = split_stream(&stream);
    assert_eq!(msgs[0].sets[0].0, 2, "the first set is not a template set");
    let template_sets: Vec<(usize, usize)> = msgs
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.sets
                .iter()
                .enumerate()
                .filter(|s| s.1 .0 == 2)
                .map(move |(j, _)| (i, j))
        })
        .collect();
    assert_eq!(template_sets, [(0, 0)], "templates once, first");
    let mut d = Decoded::default();
    let mut seq = 0u32;
    for m in &msgs {
        assert_eq!(m.domain, 1, "observation domain");
        assert_eq!(
            m.seq, seq,
            "sequence number: data records before this message"
        );
        seq += d.take(m);
    }
    let mut ids: Vec<u16> = d.templates.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, [256, 257]);
    let want = outflow_rows(&flows);
    assert!(!want.is_empty());
    assert_eq!(d.records.len(), want.len());
    assert_eq!(
        d.rows(),
        want,
        "decoded records differ from outflow's records"
    );
}

/// A flow record numbered `i` (in its originator port and packet count).
fn record(i: u32) -> FlowRecord {
    FlowRecord {
        flow_id: u64::from(i) + 1,
        continues: None,
        proto: 17,
        ipv6: false,
        orig_addr: Addr::v4([10, 0, 0, 1]),
        orig_port: (i % 65536) as u16,
        resp_addr: Addr::v4([10, 0, 0, 2]),
        resp_port: 53,
        vlan: [0, 0],
        start_ns: 1_700_000_000_000_000_000,
        last_ns: 1_700_000_001_000_000_000,
        orig: DirCounters {
            pkts: u64::from(i),
            ip_bytes: 100,
            payload_bytes: 72,
        },
        resp: DirCounters::default(),
        orig_flags: 0,
        resp_flags: 0,
        tcp: TcpState::default(),
        reason: EndReason::Idle,
        outbound: None,
        tunnel_tag: TunnelTag::default(),
        extra: None,
    }
}

/// Every datagram waiting at `s` (the exporter has closed: all were sent).
fn datagrams(s: &UdpSocket) -> Vec<Vec<u8>> {
    s.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// (has a template set first, data records) of each UDP message; checks the sequence
/// numbers on the way.
fn udp_messages(s: &UdpSocket) -> Vec<(bool, u32)> {
    let mut d = Decoded::default();
    let mut seq = 0;
    datagrams(s)
        .iter()
        .map(|b| {
            let m = parse_message(b);
            assert_eq!(m.seq, seq, "sequence number");
            let n = d.take(&m);
            seq += n;
            assert!(m.sets[1..].iter().all(|s| s.0 != 2), "templates after data");
            (m.sets[0].0 == 2, n)
        })
        .collect()
}

fn udp_collector() -> (UdpSocket, IpfixConfig) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = IpfixConfig {
        target: format!("udp://{}", s.local_addr().unwrap()),
        // 512 bytes: 3 IPv4 records after the templates (180 bytes), 6 without.
        mtu: 512,
        ..IpfixConfig::default()
    };
    (s, cfg)
}

/// UDP, `template_messages = 3`: the templates lead every third message (0, 3, ...), no
/// other; with a 512-byte MTU a message holds 3 records after the templates, 6 without.
#[test]
fn udp_templates_are_resent_every_template_messages_messages() {
    let (s, mut cfg) = udp_collector();
    cfg.template_messages = 3;
    cfg.template_interval = Duration::from_secs(3600);
    let h = IpfixHandle::spawn(&cfg, true).unwrap();
    for i in 0..30 {
        h.export(&record(i));
    }
    let c = h.counters();
    assert!(h.close().is_none());
    let got = udp_messages(&s);
    assert_eq!(
        got,
        [
            (true, 3),
            (false, 6),
            (false, 6),
            (true, 3),
            (false, 6),
            (false, 6)
        ]
    );
    assert_eq!(c.messages.load(Relaxed), 6);
    assert_eq!(c.records.load(Relaxed), 30);
    assert_eq!(c.dropped.load(Relaxed), 0);
}

/// UDP, `template_interval = 2s` (by time only): a message begun within 2 s of the last
/// templates goes without; the first begun after them carries them again.
#[test]
fn udp_templates_are_resent_after_template_interval() {
    let (s, mut cfg) = udp_collector();
    cfg.template_messages = 0;
    cfg.template_interval = Duration::from_secs(2);
    let h = IpfixHandle::spawn(&cfg, true).unwrap();
    // Message 0: templates and 3 records, sent when the 4th does not fit; message 1: the
    // 4th, begun at once (no templates), sent by the 1 s flush.
    for i in 0..4 {
        h.export(&record(i));
    }
    std::thread::sleep(Duration::from_millis(2500));
    // Message 2, begun 2.5 s after the templates: they are due.
    h.export(&record(4));
    let c = h.counters();
    assert!(h.close().is_none());
    assert_eq!(udp_messages(&s), [(true, 3), (false, 1), (true, 1)]);
    assert_eq!(c.messages.load(Relaxed), 3);
    assert_eq!(c.records.load(Relaxed), 5);
}

/// Live (lossy) export to a TCP collector that reads nothing until 100 000 records (8 MB,
/// more than the socket buffers between them hold) have been handed to `export`: every call
/// returns at once, the bounded queue (64) fills, and the records that do not fit are
/// dropped and counted, in the counters and in /metrics
/// (`outflow_ipfix_dropped_records_total`). Once the collector reads, it receives exactly
/// the records counted as sent, in order, and sent + dropped = exported.
#[test]
fn live_export_never_blocks_and_counts_every_dropped_record() {
    const N: u32 = 100_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A 4 KiB receive buffer (inherited by the accepted connection): the exporter's writes
    // stall after a few kilobytes in flight.
    let small: libc::c_int = 4096;
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let cfg = IpfixConfig {
        target: format!("tcp://{}", listener.local_addr().unwrap()),
        queue: 64,
        ..IpfixConfig::default()
    };
    let h = IpfixHandle::spawn(&cfg, false).unwrap();
    let c = h.counters();
    let telemetry = outflow::telemetry::Telemetry::new("live", 1, 16);
    assert!(telemetry.ipfix.set(h.counters()).is_ok());
    // The kernel completes the exporter's connection; the collector reads nothing until
    // every record has been handed over.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..N {
        let t = Instant::now();
        h.export(&record(i));
        slowest = slowest.max(t.elapsed());
    }
    let handed_over = started.elapsed();
    let mut conn = accept_within(&listener, Duration::from_secs(10));
    let dropped_while_stalled = c.dropped.load(Relaxed);
    // A blocking export would have waited for room in the queue, which the export thread
    // frees only as fast as the kernel takes its writes: with nothing read, not 8 MB of
    // them, so until the exporter's 5 s write timeout at the least.
    assert!(
        slowest < Duration::from_millis(500),
        "an export() call took {slowest:?}"
    );
    assert!(
        dropped_while_stalled > 0,
        "the queue never filled ({N} records in {handed_over:?})"
    );
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        buf
    });
    assert!(h.close().is_none());
    let stream = reader.join().unwrap();
    let mut d = Decoded::default();
    let mut seq = 0;
    for m in split_stream(&stream) {
        assert_eq!(m.seq, seq, "sequence number");
        seq += d.take(&m);
    }
    // The records' numbers (packet counts): strictly increasing, so none twice, none out of
    // order, each one exported.
    let got: Vec<u64> = d
        .records
        .iter()
        .map(|r| r[&(0, 2)].iter().fold(0u64, |a, b| a << 8 | u64::from(*b)))
        .collect();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order");
    assert!(got.iter().all(|&i| i < u64::from(N)));
    let (sent, dropped) = (c.records.load(Relaxed), c.dropped.load(Relaxed));
    assert_eq!(c.errors.load(Relaxed), 0, "no write timed out");
    assert_eq!(
        got.len() as u64,
        sent,
        "records received = records counted as sent"
    );
    assert_eq!(sent + dropped, u64::from(N), "sent + dropped = exported");
    assert!(dropped >= dropped_while_stalled);
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &outflow::http::metrics::gather(&telemetry),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    assert_eq!(sample("outflow_ipfix_dropped_records_total"), Some(dropped));
    assert_eq!(sample("outflow_ipfix_records_total"), Some(sent));
}

/// Live TCP export to a collector that is down, then up: the messages built while the
/// exporter waits to reconnect are dropped (counted), and the first message on the new
/// connection still starts with the templates, so everything the collector receives
/// decodes. (A message that carried the templates but was dropped in the backoff once left
/// the templates marked as sent: the new connection never got them.)
#[test]
fn live_tcp_reconnect_sends_the_templates_first_after_messages_dropped_in_the_backoff() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens: the first connect is refused, the next waits 100 ms.
    let cfg = IpfixConfig {
        target: format!("tcp://127.0.0.1:{port}"),
        mtu: 512,
        ..IpfixConfig::default()
    };
    let h = IpfixHandle::spawn(&cfg, false).unwrap();
    let c = h.counters();
    // Records 0-2: a message with the templates, sent when 3 does not fit: refused.
    for i in 0..4 {
        h.export(&record(i));
    }
    let end = Instant::now() + Duration::from_secs(10);
    while c.errors.load(Relaxed) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.errors.load(Relaxed), 1, "the first connect was refused");
    // 3-5: the next message with the templates, full at 6 within the 100 ms backoff:
    // dropped. 6: begins the message that goes out once the collector is up.
    for i in 4..7 {
        h.export(&record(i));
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let collector = std::thread::spawn(move || {
        let mut s = accept_within(&listener, Duration::from_secs(30));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.close().is_none());
    let stream = collector.join().unwrap();
    let msgs = split_stream(&stream);
    assert_eq!(
        msgs[0].sets[0].0, 2,
        "the new connection does not start with templates"
    );
    let mut d = Decoded::default();
    for m in &msgs {
        d.take(m);
    }
    let (sent, dropped) = (c.records.load(Relaxed), c.dropped.load(Relaxed));
    assert!(dropped >= 3);
    assert_eq!(d.records.len() as u64, sent);
    assert_eq!(sent + dropped, 7);
}
