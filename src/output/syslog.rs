//! Syslog sink: RFC 5424 messages over UDP, TCP or a Unix socket.
//!
//! Each alert becomes one RFC 5424 message whose structured data (SD-ID `outflow@32473`)
//! carries the alert's key fields, so a SIEM can filter on them without parsing the text.
//! [`SyslogTransport`] runs on its sink thread (see [`super::deliver`]): it may block, but
//! only for bounded times (TCP connect and write timeouts), and it reconnects, resolving the
//! host name again, after any error.
//!
//! Values that come from the wire (DNS names are copied from packets byte for byte) are
//! never trusted to be printable: control characters are replaced, so a crafted name cannot
//! forge extra lines in a collector that writes one line per message.

use super::deliver::Transport;
use crate::config::SyslogConfig;
use crate::telemetry::record::AlertRecord;
use crate::time::rfc3339;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

pub use crate::config::{facility_code, valid_header_field, SyslogTarget as Target};

/// SD-ID of outflow's structured data. 32473 is the IANA private enterprise number reserved
/// for documentation (RFC 5612); a deployment that registers its own can change it here.
pub const SD_ID: &str = "outflow@32473";

/// RFC 5424 header field limits (§6): HOSTNAME, APP-NAME, PROCID, MSGID.
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;
const MSGID_MAX: usize = 32;

/// Largest UDP datagram sent; longer messages are cut at a UTF-8 boundary. RFC 5426 §3.2:
/// every receiver SHOULD accept 2048 octets, so a longer datagram may be silently truncated
/// (or, fragmented, lost). An alert's header and structured data take about 400 bytes, so
/// only an unusually long message text is ever cut; TCP and Unix sockets are not limited.
pub const UDP_MAX: usize = 2048;

/// TCP connect and write timeout: a black-holed server costs the sink thread at most this
/// per attempt, never a hang.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Formats one alert as an RFC 5424 message:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [outflow@32473 ...] BOM MSG`.
///
/// PRI is `facility * 8 + severity` (the record's: [`crate::detect::Detector::syslog_severity`] for a
/// finding, the incident's severity for an incident line; a facility above 23 is taken as 23);
/// TIMESTAMP the alert's packet time in UTC with microseconds; MSGID the detector name, or
/// `incident_<update>`.
/// Header fields are made valid (non-printable characters and spaces become `_`, too long
/// is cut, empty is `-`). The MSG is the alert's message after a UTF-8 BOM, which RFC 5424
/// §6.4 requires for a UTF-8 MSG.
pub fn format(
    rec: &AlertRecord,
    facility: u8,
    hostname: &str,
    app_name: &str,
    procid: u32,
) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(rec.syslog_severity.min(7));
    let mut s = String::with_capacity(rec.message.len().saturating_add(256));
    let _ = write!(s, "<{pri}>1 {} ", rfc3339(rec.ts_ns));
    push_header(&mut s, hostname, HOSTNAME_MAX);
    s.push(' ');
    push_header(&mut s, app_name, APP_NAME_MAX);
    s.push(' ');
    push_header(&mut s, &procid.to_string(), PROCID_MAX);
    s.push(' ');
    // An incident line's MSGID says which announcement it is, so a SIEM rule can route
    // `incident_opened` to a new ticket and the others to its updates.
    let msgid = match rec.update {
        Some(u) => format!("incident_{u}"),
        None => rec.detector.name().to_string(),
    };
    push_header(&mut s, &msgid, MSGID_MAX);
    s.push_str(" [");
    s.push_str(SD_ID);
    let mut param = |name: &str, value: &str| {
        let _ = write!(s, " {name}=\"");
        push_param_value(&mut s, value);
        s.push('"');
    };
    match (rec.update, rec.severity) {
        (Some(u), sev) => {
            param("incident_id", &rec.id);
            param("update", u);
            if let Some(sev) = sev {
                param("severity", sev);
            }
        }
        (None, _) => {
            if !rec.id.is_empty() {
                param("alert_id", &rec.id);
            }
            param("detector", rec.detector.name());
        }
    }
    if let Some(ip) = rec.src {
        param("src_ip", &ip.to_string());
    }
    if let Some(p) = rec.sport {
        param("src_port", &p.to_string());
    }
    if let Some(ip) = rec.dst {
        param("dst_ip", &ip.to_string());
    }
    if let Some(p) = rec.dport {
        param("dst_port", &p.to_string());
    }
    if let Some(p) = &rec.proto {
        param("proto", p);
    }
    if let Some(n) = &rec.fqdn {
        param("dst_fqdn", n);
    }
    if let Some(b) = rec.bytes {
        param("bytes", &b.to_string());
    }
    if let Some(f) = rec.flow_id {
        param("flow_id", &f.to_string());
    }
    s.push(']');
    if !rec.message.is_empty() {
        s.push_str(" \u{FEFF}");
        s.extend(rec.message.chars().map(printable));
    }
    s
}

/// Appends a header field: printable ASCII but space (`_` otherwise), at most `max`
/// characters, `-` (the NILVALUE) when empty.
fn push_header(s: &mut String, v: &str, max: usize) {
    if v.is_empty() {
        s.push('-');
        return;
    }
    s.extend(v.chars().take(max).map(|c| match c {
        '!'..='~' => c,
        _ => '_',
    }));
}

/// Appends a PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3),
/// control characters replaced.
fn push_param_value(s: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            s.push('\\');
        }
        s.push(printable(c));
    }
}

/// Control characters (a newline in a DNS name read off the wire) become U+FFFD, so no
/// value can start a forged line in a line-oriented collector.
fn printable(c: char) -> char {
    if c.is_control() {
        '\u{FFFD}'
    } else {
        c
    }
}

/// This machine's host name, `None` if it cannot be read.
#[allow(unsafe_code)]
fn local_hostname() -> Option<String> {
    // 256: HOST_NAME_MAX is 64 on Linux and 255 by POSIX, plus the NUL.
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves a truncated name without its NUL: then the whole buffer is the name.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(buf.get(..len)?).into_owned();
    (!name.is_empty()).then_some(name)
}

/// An open connection to the syslog receiver.
enum Conn {
    /// Connected UDP socket: one datagram per message.
    Udp(UdpSocket),
    /// RFC 6587 octet-counted stream.
    Tcp(TcpStream),
    /// `/dev/log` style datagram socket: one datagram per message.
    UnixDgram(UnixDatagram),
    /// A stream Unix socket, octet-counted like TCP.
    UnixStream(UnixStream),
}

/// Alerts to syslog (sink name "syslog"). Connects on first use and again after any error,
/// so a receiver that is down at start or restarts later is picked up without a restart.
pub struct SyslogTransport {
    target: Target,
    /// The target as configured, for error messages.
    label: String,
    facility: u8,
    hostname: String,
    app_name: String,
    procid: u32,
    conn: Option<Conn>,
}

impl SyslogTransport {
    /// Checks the configuration; does not connect (the first send does). Errors on an empty
    /// or invalid target and an unknown facility.
    pub fn new(cfg: &SyslogConfig) -> io::Result<Self> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let target = Target::parse(&cfg.target).map_err(|e| invalid(format!("syslog: {e}")))?;
        if target == Target::None {
            return Err(invalid("syslog: no target configured".into()));
        }
        let facility = facility_code(&cfg.facility)
            .ok_or_else(|| invalid(format!("syslog: unknown facility {:?}", cfg.facility)))?;
        let hostname = if cfg.hostname.is_empty() {
            local_hostname().unwrap_or_else(|| "-".into())
        } else {
            cfg.hostname.clone()
        };
        Ok(SyslogTransport {
            target,
            label: cfg.target.clone(),
            facility,
            hostname,
            app_name: cfg.app_name.clone(),
            procid: std::process::id(),
            conn: None,
        })
    }

    /// The formatted message this transport sends for `rec`.
    pub fn message(&self, rec: &AlertRecord) -> String {
        format(
            rec,
            self.facility,
            &self.hostname,
            &self.app_name,
            self.procid,
        )
    }

    fn connect(&self) -> io::Result<Conn> {
        match &self.target {
            Target::None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no syslog target",
            )),
            Target::Udp(hp) => first_addr(hp, |a| {
                let any: SocketAddr = if a.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(any)?;
                // Connected: the kernel reports an ICMP port unreachable as an error on a
                // later send, which makes a dead receiver visible (and counted).
                s.connect(a)?;
                Ok(Conn::Udp(s))
            }),
            Target::Tcp(hp) => first_addr(hp, |a| {
                let s = TcpStream::connect_timeout(&a, TCP_TIMEOUT)?;
                s.set_write_timeout(Some(TCP_TIMEOUT))?;
                Ok(Conn::Tcp(s))
            }),
            Target::Unix(p) => {
                let d = UnixDatagram::unbound()?;
                match d.connect(p) {
                    Ok(()) => Ok(Conn::UnixDgram(d)),
                    // A stream socket (syslog-ng's unix-stream source, some containers).
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        let s = UnixStream::connect(p)?;
                        s.set_write_timeout(Some(TCP_TIMEOUT))?;
                        Ok(Conn::UnixStream(s))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Resolves `host:port` now (a DNS change is followed on every reconnect) and returns the
/// first address `f` connects to, or the last error.
fn first_addr(hp: &str, mut f: impl FnMut(SocketAddr) -> io::Result<Conn>) -> io::Result<Conn> {
    let mut last = None;
    for a in hp.to_socket_addrs()? {
        match f(a) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name has no address")))
}

/// Writes one RFC 6587 octet-counted frame, `<len> <msg>`, in one write call.
fn write_framed(w: &mut impl Write, msg: &str) -> io::Result<()> {
    let mut frame = Vec::with_capacity(msg.len().saturating_add(8));
    let _ = write!(frame, "{} ", msg.len());
    frame.extend_from_slice(msg.as_bytes());
    w.write_all(&frame)
}

/// Stream sockets whose blocking mode can be switched.
trait Stream {
    fn set_nonblocking(&self, nb: bool) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_nonblocking(&self, nb: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, nb)
    }
}

impl Stream for UnixStream {
    fn set_nonblocking(&self, nb: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, nb)
    }
}

/// Whether the peer of a stream closed it (a restarted receiver). Writing to such a socket
/// first succeeds and only a later write fails, which would lose an alert silently; a
/// non-blocking read before each message catches it, and the sender reconnects first.
/// Syslog receivers never send data, so the read consumes nothing of value.
fn stream_closed<S: Stream>(s: &S) -> bool
where
    for<'a> &'a S: Read,
{
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let mut r: &S = s;
    let closed = match r.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    // Back to blocking (bounded by the write timeout); if that fails the write will tell.
    let _ = s.set_nonblocking(false);
    closed
}

impl Conn {
    /// False for a stream the receiver has closed: reconnect before sending.
    fn usable(&self) -> bool {
        match self {
            Conn::Udp(_) | Conn::UnixDgram(_) => true,
            Conn::Tcp(s) => !stream_closed(s),
            Conn::UnixStream(s) => !stream_closed(s),
        }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // Index 0 is always a boundary, so this stops before `end` can underflow.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

impl Transport for SyslogTransport {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn send(&mut self, rec: &AlertRecord) -> io::Result<()> {
        let msg = self.message(rec);
        let mut conn = match self.conn.take() {
            Some(c) if c.usable() => c,
            _ => self.connect().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("syslog {}: cannot connect: {e}", self.label),
                )
            })?,
        };
        let r = match &mut conn {
            Conn::Udp(s) => s.send(truncate_utf8(&msg, UDP_MAX).as_bytes()).map(drop),
            Conn::UnixDgram(s) => s.send(msg.as_bytes()).map(drop),
            Conn::Tcp(s) => write_framed(s, &msg),
            Conn::UnixStream(s) => write_framed(s, &msg),
        };
        match r {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            // The connection is dropped: after a partial frame the stream is unusable, and
            // a reconnect follows a receiver that moved.
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("syslog {}: {e}", self.label),
            )),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.conn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;
    use std::io::BufRead;
    use std::net::TcpListener;

    fn sample() -> AlertRecord {
        AlertRecord::from_json(
            Detector::DataLeak,
            1_700_000_000_123_456_789,
            serde_json::json!({
                "alert_id": "42-data_leak-1",
                "message": "10.0.0.5 sent 2 GB to evil.example",
                "src_ip": "10.0.0.5",
                "src_port": 51000,
                "dst_ip": "203.0.113.9",
                "dst_port": 443,
                "proto": "tcp",
                "dst_fqdn": "a\"b]c\\d.example",
                "out_ip_bytes": 2_000_000_000u64,
                "flow_id": 42,
            })
            .to_string(),
            0,
        )
    }

    fn cfg(target: &str) -> SyslogConfig {
        SyslogConfig {
            target: target.into(),
            facility: "local0".into(),
            app_name: "outflow".into(),
            hostname: "sensor1".into(),
        }
    }

    #[test]
    fn formats_rfc5424() {
        let s = format(&sample(), 16, "sensor1", "outflow", 1234);
        assert_eq!(
            s,
            "<130>1 2023-11-14T22:13:20.123456Z sensor1 outflow 1234 data_leak \
             [outflow@32473 alert_id=\"42-data_leak-1\" detector=\"data_leak\" \
             src_ip=\"10.0.0.5\" src_port=\"51000\" dst_ip=\"203.0.113.9\" dst_port=\"443\" \
             proto=\"tcp\" dst_fqdn=\"a\\\"b\\]c\\\\d.example\" bytes=\"2000000000\" \
             flow_id=\"42\"] \u{FEFF}10.0.0.5 sent 2 GB to evil.example"
        );
        // The BOM as bytes, right after the structured data.
        assert!(s.as_bytes().windows(5).any(|w| w == b"] \xEF\xBB\xBF"));
    }

    #[test]
    fn format_sanitises_header_and_values() {
        let mut r = sample();
        r.detector = Detector::LargeTransfer;
        r.syslog_severity = Detector::LargeTransfer.syslog_severity();
        r.fqdn = Some("x\ny.example".into());
        r.message = "line1\nline2".into();
        r.id = String::new();
        let s = format(&r, 99, "", "out flow", 7);
        // Facility capped at 23: 23*8 + warning(4).
        assert!(s.starts_with("<188>1 "), "{s}");
        assert!(s.contains(" - out_flow 7 large_outbound_transfer [outflow@32473 detector="));
        assert!(!s.contains("alert_id"));
        assert!(s.contains("dst_fqdn=\"x\u{FFFD}y.example\""), "{s}");
        assert!(!s.contains('\n'), "{s}");
        let long = "h".repeat(300);
        let s = format(&r, 1, &long, &"a".repeat(60), 7);
        assert!(s.contains(&format!(" {} {} ", "h".repeat(255), "a".repeat(48))));
    }

    #[test]
    fn severities() {
        assert_eq!(Detector::syslog_severity(Detector::DataLeak), 2);
        assert_eq!(Detector::syslog_severity(Detector::DnsTunnel), 2);
        for d in Detector::ALL {
            assert!(matches!(d.syslog_severity(), 2 | 4));
            assert!(valid_header_field(d.name(), MSGID_MAX), "{}", d.name());
        }
    }

    #[test]
    fn facilities() {
        assert_eq!(facility_code("kern"), Some(0));
        assert_eq!(facility_code("authpriv"), Some(10));
        assert_eq!(facility_code("security"), Some(13));
        assert_eq!(facility_code("audit"), Some(13));
        assert_eq!(facility_code("console"), Some(14));
        assert_eq!(facility_code("clock"), Some(15));
        assert_eq!(facility_code("local0"), Some(16));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(facility_code("LOCAL0"), None);
    }

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse(""), Ok(Target::None));
        assert_eq!(
            Target::parse("udp://syslog.example:514"),
            Ok(Target::Udp("syslog.example:514".into()))
        );
        assert_eq!(
            Target::parse("tcp://192.0.2.1:6514"),
            Ok(Target::Tcp("192.0.2.1:6514".into()))
        );
        assert_eq!(
            Target::parse("udp://[2001:db8::1]:514"),
            Ok(Target::Udp("[2001:db8::1]:514".into()))
        );
        assert_eq!(
            Target::parse("unix:///dev/log"),
            Ok(Target::Unix("/dev/log".into()))
        );
        for (bad, says) in [
            ("syslog.example:514", "has no scheme"),
            ("http://x:514", "unknown scheme"),
            ("udp://syslog.example", "has no port"),
            ("udp://x:0", "1..=65535"),
            ("udp://x:65536", "1..=65535"),
            ("udp://x:", "1..=65535"),
            ("udp://x:+514", "1..=65535"),
            ("tcp://:514", "has no host"),
            ("udp://2001:db8::1:514", "brackets"),
            ("udp://[2001:db8::1]", "has no port"),
            ("udp://[nope]:514", "not an IPv6"),
            ("udp://x:514/path", "1..=65535"),
            ("udp://a b:514", "not a host name"),
            ("unix://dev/log", "absolute"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            Target::parse("syslog.example:514").unwrap_err(),
            "\"syslog.example:514\" has no scheme: use udp://host:port, tcp://host:port \
             or unix:///dev/log"
        );
    }

    #[test]
    fn new_checks_config() {
        assert!(SyslogTransport::new(&cfg("")).is_err());
        let mut c = cfg("udp://127.0.0.1:514");
        c.facility = "nope".into();
        assert!(SyslogTransport::new(&c).is_err());
        c.hostname = String::new();
        c.facility = "daemon".into();
        let t = SyslogTransport::new(&c).unwrap();
        assert_eq!(t.name(), "syslog");
        assert!(!t.hostname.is_empty());
        assert_eq!(t.procid, std::process::id());
    }

    #[test]
    fn truncates_at_char_boundary() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
    }

    #[test]
    fn sends_udp_datagrams() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let mut t = SyslogTransport::new(&cfg(&format!("udp://127.0.0.1:{port}"))).unwrap();
        t.send(&sample()).unwrap();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        let mut f = got.splitn(7, ' ');
        assert_eq!(f.next(), Some("<130>1"));
        assert_eq!(f.next(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(f.next(), Some("sensor1"));
        assert_eq!(f.next(), Some("outflow"));
        assert_eq!(f.next(), Some(std::process::id().to_string().as_str()));
        assert_eq!(f.next(), Some("data_leak"));
        let rest = f.next().unwrap();
        assert!(rest.starts_with("[outflow@32473 alert_id=\"42-data_leak-1\""));
        assert!(rest.ends_with("] \u{FEFF}10.0.0.5 sent 2 GB to evil.example"));

        // A long message is cut to one 2048-byte datagram.
        let mut r = sample();
        r.message = "é".repeat(2000);
        t.send(&r).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert!(n <= UDP_MAX && n > UDP_MAX - 2, "{n}");
        assert!(std::str::from_utf8(&buf[..n]).is_ok());
    }

    #[test]
    fn sends_tcp_octet_counted() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let mut t = SyslogTransport::new(&cfg(&format!("tcp://127.0.0.1:{port}"))).unwrap();
        t.send(&sample()).unwrap();
        let mut r2 = sample();
        r2.message = "second".into();
        t.send(&r2).unwrap();
        let (conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rd = io::BufReader::new(conn);
        let mut frames = Vec::new();
        for _ in 0..2 {
            let mut len = Vec::new();
            rd.read_until(b' ', &mut len).unwrap();
            let len: usize = std::str::from_utf8(&len).unwrap().trim().parse().unwrap();
            let mut msg = vec![0u8; len];
            rd.read_exact(&mut msg).unwrap();
            frames.push(String::from_utf8(msg).unwrap());
        }
        assert_eq!(frames[0], t.message(&sample()));
        assert!(frames[1].ends_with("] \u{FEFF}second"), "{}", frames[1]);
    }

    #[test]
    fn tcp_reconnects_when_the_server_comes_back() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        drop(server);
        let mut t = SyslogTransport::new(&cfg(&format!("tcp://127.0.0.1:{port}"))).unwrap();
        let e = t.send(&sample()).unwrap_err();
        assert!(
            e.to_string().contains(&format!("tcp://127.0.0.1:{port}")),
            "{e}"
        );
        let server = TcpListener::bind(("127.0.0.1", port)).unwrap();
        t.send(&sample()).unwrap();
        let (conn, _) = server.accept().unwrap();
        // The receiver closes the connection (a restart): the next send reconnects rather
        // than writing into the dead one.
        drop(conn);
        std::thread::sleep(Duration::from_millis(50));
        let mut r2 = sample();
        r2.message = "after restart".into();
        t.send(&r2).unwrap();
        let (conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let want = t.message(&r2);
        let mut got = vec![0u8; want.len() + format!("{} ", want.len()).len()];
        (&conn).read_exact(&mut got).unwrap();
        assert_eq!(got, format!("{} {want}", want.len()).into_bytes());
    }

    #[test]
    fn sends_unix_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut t = SyslogTransport::new(&cfg(&format!("unix://{}", path.display()))).unwrap();
        t.send(&sample()).unwrap();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            t.message(&sample())
        );
    }

    #[test]
    fn sends_unix_stream_octet_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut t = SyslogTransport::new(&cfg(&format!("unix://{}", path.display()))).unwrap();
        t.send(&sample()).unwrap();
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let want = t.message(&sample());
        let mut got = vec![0u8; want.len() + format!("{} ", want.len()).len()];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(got, format!("{} {want}", want.len()).into_bytes());
    }
}
