//! Configuration: TOML into serde structs, documented defaults, and a `validate()` that
//! reports every problem at once with its key path.
//!
//! What the deployment *is* (its home networks, thresholds, table sizes) lives here; what a
//! single run chooses (input files, output paths, worker count override) is a CLI flag.
//! Every field's doc comment gives its unit and default; `systemd/outflow.toml` is the
//! commented example.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Errors loading a configuration. Each names the file or the offending keys.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad CIDR...).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// The TOML parser's message, which names the key and line.
        message: String,
    },
    /// Values parse but do not make sense together; every problem is listed.
    #[error("invalid config{}:\n{}", .path.as_deref().map(|p| format!(" file {p}")).unwrap_or_default(), .problems.join("\n"))]
    Invalid {
        /// The path given, if any.
        path: Option<String>,
        /// One line per problem, each starting with the key path.
        problems: Vec<String>,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Networks that are "ours". Traffic from an address in these to an address outside them
    /// is outbound. Default: RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10 and IPv6
    /// unique-local fc00::/7.
    pub home_nets: Vec<IpNet>,
    /// Capture and dispatch settings.
    pub capture: CaptureConfig,
    /// Flow table settings.
    pub flow: FlowConfig,
    /// Approved destinations that never count as outbound.
    pub allow: AllowConfig,
    /// Detector settings.
    pub detect: DetectConfig,
    /// DNS analysis.
    pub dns: DnsConfig,
    /// Snapshots of long-window state.
    pub state: StateConfig,
    /// Service settings for `outflow run`.
    pub run: RunConfig,
    /// Logging.
    pub log: LogConfig,
    /// Where `outflow run` writes alerts and flow records (CLI flags override).
    pub output: OutputConfig,
    /// The HTTP server: /metrics, /healthz and the analyst API.
    pub http: HttpConfig,
    /// Pcap slices of flagged flows.
    pub slice: SliceConfig,
    /// Tunnels, MPLS and PPPoE unwrapped to reach the packets flows are tracked on.
    pub decap: DecapConfig,
    /// How findings are joined into incidents, and what the alert outputs announce.
    pub incident: IncidentConfig,
    /// Uploads to cloud storage, chat and code hosting, by service.
    pub cloud: CloudConfig,
    /// Cross-sensor correlation over NATS JetStream (off unless `bus.url` is set).
    pub bus: BusConfig,
}

/// The event bus: a sensor publishes the stream its cross-flow stage would consume to a
/// NATS JetStream stream, and `outflow correlate` runs that stage over the streams of several
/// sensors. Empty `url`: no bus, everything runs in-process (the default).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Server: `nats://host:port` (several comma-separated for a cluster); empty = no bus.
    /// Default "".
    pub url: String,
    /// This sensor's name on the bus (letters, digits, `-`, `_`; at most 64): it tells its
    /// events apart from other sensors' and makes the de-duplication ids. Empty = the host
    /// name. Default "".
    pub sensor_id: String,
    /// Correlator: the sensors a partition's merge waits for from the start, before it has
    /// heard from them (a correlator started before a sensor, or a sensor whose replay
    /// starts after another's ended, would otherwise be counted late). Sensors not listed
    /// join when their first message arrives. Default [].
    pub sensors: Vec<String>,
    /// Partitions of the event stream (`outflow.events.<n>`), by home host; fixed when the
    /// stream is created (a later value is ignored with a warning), 1..=1024. Default 8.
    pub partitions: u32,
    /// Events held while the bus is slow or away; beyond this they are dropped and counted
    /// (`outflow_bus_dropped_events_total`), and the sensor's own alerts are not held up.
    /// 1..=16777216. Default 262144 (about 80 MB at the mean event size).
    pub queue: usize,
    /// A correlator merges the sensors of a partition by packet time; a sensor whose
    /// progress is this far behind the most advanced one no longer holds the others back,
    /// and its events that arrive after their time has passed are counted late and fed
    /// as they come. Default "10s".
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// A correlator's claim on a partition lapses this long after its last renewal (it
    /// renews at a third of it), and another correlator takes the partition over.
    /// 1s..=1h. Default "10s".
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Events are kept in the stream this long (when the stream is created): a correlator
    /// that takes a partition over rebuilds its state from them, so keep it above the
    /// longest window (`detect.data_leak.window`, `incident.window`). Default "25h".
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Correlator: each partition's complete state is stored this often (object store
    /// `outflow_snapshots`), with the stream sequence it covers; a correlator taking the
    /// partition over starts from it and reads only what followed. Default "5m".
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// At the end of a replay (or a stop), how long to wait for the bus to take what is
    /// still queued before giving up and reporting it as not delivered. Default "30s".
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: String::new(),
            sensor_id: String::new(),
            sensors: Vec::new(),
            partitions: 8,
            queue: 1 << 18,
            max_lateness: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(25 * 3600),
            snapshot_interval: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl BusConfig {
    /// The sensor's name on the bus: `sensor_id`, or the host name.
    pub fn effective_sensor_id(&self) -> String {
        if !self.sensor_id.is_empty() {
            return self.sensor_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let clean: String = host
            .trim()
            .chars()
            .map(|c| if valid_sensor_char(c) { c } else { '-' })
            .take(64)
            .collect();
        if clean.is_empty() {
            "sensor".into()
        } else {
            clean
        }
    }
}

fn valid_sensor_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `id` can name a sensor on the bus (it goes into de-duplication ids and logs).
pub fn valid_sensor_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(valid_sensor_char)
}

/// Decapsulation: which tunnels are unwrapped (each on by default, on its standard ports),
/// so that flows are tracked on the innermost headers. See `decode::tunnel`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DecapConfig {
    /// Tunnels unwrapped at most, nested (MPLS and PPPoE do not count). Default 4, at
    /// most 8. A packet nested deeper is tracked on the deepest layer reached and counted.
    pub max_depth: u8,
    /// Keep a flow record of each tunnel's own outer connection (the mirror session), as
    /// Zeek's conn.log does; it is never reported as an upload. Default true.
    pub outer_flows: bool,
    /// GRE version 0 (RFC 2784/2890): IPv4, IPv6, Ethernet (transparent bridging), MPLS.
    pub gre: bool,
    /// ERSPAN type I, II and III inside GRE (Cisco/Arista remote SPAN).
    pub erspan: bool,
    /// IP-in-IP: 4in4, 6in4, 4in6, 6in6 (IP protocols 4 and 41).
    pub ip_in_ip: bool,
    /// MPLS label stacks, incl. an Ethernet pseudowire with a control word.
    pub mpls: bool,
    /// PPPoE session frames.
    pub pppoe: bool,
    /// VXLAN UDP destination ports (AWS Traffic Mirroring, Azure vTAP). Default [4789];
    /// [] switches VXLAN off. At most 4 ports per tunnel type.
    pub vxlan_ports: Vec<u16>,
    /// Geneve UDP destination ports (GCP Packet Mirroring, AWS GWLB). Default [6081].
    pub geneve_ports: Vec<u16>,
    /// GRE-in-UDP destination ports (RFC 8086). Default [4754].
    pub gre_udp_ports: Vec<u16>,
    /// Teredo UDP ports, either side. Default [3544].
    pub teredo_ports: Vec<u16>,
    /// GTP-U UDP ports, either side. Default [2152].
    pub gtp_ports: Vec<u16>,
}

impl Default for DecapConfig {
    fn default() -> Self {
        let d = crate::decode::Decap::DEFAULT;
        DecapConfig {
            max_depth: d.max_depth,
            outer_flows: d.outer_flows,
            gre: d.gre,
            erspan: d.erspan,
            ip_in_ip: d.ip_in_ip,
            mpls: d.mpls,
            pppoe: d.pppoe,
            vxlan_ports: vec![4789],
            geneve_ports: vec![6081],
            gre_udp_ports: vec![4754],
            teredo_ports: vec![3544],
            gtp_ports: vec![2152],
        }
    }
}

impl DecapConfig {
    /// The decoder's form of these settings.
    pub fn decap(&self) -> crate::decode::Decap {
        use crate::decode::PortSet;
        crate::decode::Decap {
            max_depth: self.max_depth,
            outer_flows: self.outer_flows,
            gre: self.gre,
            erspan: self.erspan,
            ip_in_ip: self.ip_in_ip,
            mpls: self.mpls,
            pppoe: self.pppoe,
            vxlan: PortSet::new(&self.vxlan_ports),
            geneve: PortSet::new(&self.geneve_ports),
            gre_udp: PortSet::new(&self.gre_udp_ports),
            teredo: PortSet::new(&self.teredo_ports),
            gtp: PortSet::new(&self.gtp_ports),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            home_nets: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
            capture: CaptureConfig::default(),
            flow: FlowConfig::default(),
            allow: AllowConfig::default(),
            detect: DetectConfig::default(),
            dns: DnsConfig::default(),
            state: StateConfig {
                dir: String::new(),
                snapshot_interval: default_snapshot_interval(),
            },
            run: RunConfig::default(),
            log: LogConfig::default(),
            output: OutputConfig::default(),
            http: HttpConfig::default(),
            slice: SliceConfig::default(),
            decap: DecapConfig::default(),
            incident: IncidentConfig::default(),
            cloud: CloudConfig::default(),
            bus: BusConfig::default(),
        }
    }
}

/// DNS analysis: tunnelling scores, per-domain rates, NXDOMAIN bursts, IP→name map.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Parse and analyse DNS. Default true.
    pub enabled: bool,
    /// UDP and TCP ports carrying DNS. Default [53]; add 5353 for mDNS.
    pub ports: Vec<u16>,
    /// Sliding window for per-(client, registered domain) counts. Default "5m".
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Name score: entropy adds 1 point per bit per character above this (dots removed;
    /// at most 1 point). Default 3.5 (was a threshold of its own, 3.8): random hex reaches
    /// 3.7-3.9 bits, base32 4.3-4.6, base64 4.7-5.5, but ordinary names reach them too
    /// (`upload.wikimedia.org.ncsa` 3.8; an internal name of the generated Kubernetes
    /// capture 4.3), so entropy only adds to what the encoding shows, never decides alone.
    pub entropy_threshold: f64,
    /// Name score: the subdomain's length adds 1 point per 40 characters above this (at
    /// most 1.5). Default 40 (was a threshold of its own, 60): no subdomain of the public
    /// benign captures is longer (length adds nothing to any of them); dns2tcp's are 180.
    pub length_threshold: usize,
    /// A subdomain is *suspicious* when its name score (encoding + entropy + length +
    /// label regularity, see `dns::score`) reaches this. Default 2.0: one full-length
    /// (≥ 32 characters) hex or base32 run, or shorter base64 or raw bytes, or a long,
    /// random, regularly cut name. The worst benign name of the public captures scores
    /// 0.16 (`flkr._domainkey.flickr.com`), of the generated benign ones 0.80; the
    /// weakest suspicious tunnel names score 2.0-2.4 (dnscat2's 34 hex characters).
    pub name_score_threshold: f64,
    /// Tunnel alert (`suspicious_subdomains`): at least this many *unique* suspicious
    /// subdomains from one client under one registered domain within the window (a
    /// repeated name counts once). Default 6: the shortest public tunnel captures (iodine
    /// handshakes, 12 queries) have exactly 6; a handful of odd names never alerts.
    pub min_suspicious_subdomains: u32,
    /// ...and the pair score (mean name score of those subdomains + 2 × share of
    /// TXT/NULL/MX/CNAME/ANY/private-type queries + unique subdomains / queries + share
    /// of the commonest longest-label length) reaches this. Default 3.5: six barely
    /// suspicious names (2.0) of six lengths asked as A records score 3.2 and do not
    /// alert; the tunnels measured score 5.2 (base32 over A records) to 9.5 (dns2tcp,
    /// base64 over TXT).
    pub pair_score_threshold: f64,
    /// Tunnel alert (`query_rate`): more queries than this from one client to one
    /// registered domain within the window, whatever the names. Default 500.
    pub max_queries: u32,
    /// Names under these suffixes (matched on label boundaries) are cluster- or
    /// site-internal: counted (`internal` in the summary), never tunnel candidates, and
    /// their NXDOMAIN answers are no burst. Every Kubernetes pod resolves external names
    /// through `<ns>.svc.cluster.local`, `svc.cluster.local` and `cluster.local` first
    /// (ndots:5). Default ["cluster.local", "svc", "local", "internal", "home.arpa"]
    /// (RFC 6762 mDNS, RFC 8375 home networks, ICANN's reserved `.internal`).
    pub internal_suffixes: Vec<String>,
    /// Window for per-client NXDOMAIN counts. Default "5m".
    #[serde(with = "humantime_serde")]
    pub nxdomain_window: Duration,
    /// NXDOMAIN burst alert: more NXDOMAIN responses than this to one client within the
    /// window. Default 100.
    pub nxdomain_threshold: u32,
    /// The same (client, domain, detector) does not alert again within this. Default "1h".
    #[serde(with = "humantime_serde")]
    pub suppression: Duration,
    /// Domains (matched as suffixes on label boundaries) that legitimately use long random
    /// labels: CDNs, anti-virus reputation lookups, DNS blocklists, reverse DNS. Their queries
    /// are counted but never alert. Default: see README.
    pub allow_domains: Vec<String>,
    /// (client, domain) pairs tracked at once, and NXDOMAIN clients tracked at once.
    /// When the pair table is full, a pair with one ordinary query goes before one with
    /// more, and one with suspicious queries last (see `dns::pairs`). Default 32768.
    pub pair_capacity: usize,
    /// Fraction of `pair_capacity` one client may hold: beyond it, a new pair of that
    /// client replaces its own coldest pair, so a host looking up many names cannot push
    /// out the pairs of others. 1.0 = no per-client limit. Default 0.125.
    pub client_share: f64,
    /// ...but a client may always hold this many pairs (capped at `pair_capacity`), so a
    /// small table still leaves a busy client room. Default 64.
    pub client_min_pairs: usize,
    /// (client, resolved IP) → name entries kept for `dst_fqdn`. Default 262144.
    pub name_map_capacity: usize,
    /// An answer is remembered at least this long, even with a shorter TTL (clients keep
    /// using an address after its TTL). Default "5m".
    #[serde(with = "humantime_serde")]
    pub name_ttl_min: Duration,
    /// ...and at most this long. Default "24h".
    #[serde(with = "humantime_serde")]
    pub name_ttl_max: Duration,
    /// A query without a response is logged as unanswered after this. Default "30s".
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Queries awaiting a response at once. Default 65536.
    pub transaction_capacity: usize,
}

/// Suffixes of cluster- and site-internal names (see `dns.internal_suffixes`).
pub const DEFAULT_DNS_INTERNAL: &[&str] =
    &["cluster.local", "svc", "local", "internal", "home.arpa"];

/// Registered domains whose subdomains are long and random by design. Sources: Akamai,
/// CloudFront, Azure/Fastly CDN hostnames; McAfee GTI, Sophos, ESET, Trend Micro file and
/// URL reputation lookups; Spamhaus, SpamCop, SORBS, Barracuda, URIBL, SURBL blocklists; and
/// reverse DNS (PTR names are long by construction).
pub const DEFAULT_DNS_ALLOW: &[&str] = &[
    "in-addr.arpa",
    "ip6.arpa",
    "akamaiedge.net",
    "akamai.net",
    "akadns.net",
    "edgekey.net",
    "edgesuite.net",
    "cloudfront.net",
    "amazonaws.com",
    "azureedge.net",
    "trafficmanager.net",
    "fastly.net",
    "avts.mcafee.com",
    "avqs.mcafee.com",
    "sophosxl.net",
    "e5.sk",
    "trendmicro.com",
    "spamhaus.org",
    "spamcop.net",
    "sorbs.net",
    "barracudacentral.org",
    "uribl.com",
    "surbl.org",
];

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            ports: vec![53],
            window: Duration::from_secs(300),
            entropy_threshold: 3.5,
            length_threshold: 40,
            name_score_threshold: 2.0,
            min_suspicious_subdomains: 6,
            pair_score_threshold: 3.5,
            max_queries: 500,
            internal_suffixes: DEFAULT_DNS_INTERNAL.iter().map(|s| s.to_string()).collect(),
            nxdomain_window: Duration::from_secs(300),
            nxdomain_threshold: 100,
            suppression: Duration::from_secs(3600),
            allow_domains: DEFAULT_DNS_ALLOW.iter().map(|s| s.to_string()).collect(),
            pair_capacity: 32_768,
            client_share: 0.125,
            client_min_pairs: 64,
            name_map_capacity: 262_144,
            name_ttl_min: Duration::from_secs(300),
            name_ttl_max: Duration::from_secs(86_400),
            transaction_timeout: Duration::from_secs(30),
            transaction_capacity: 65_536,
        }
    }
}

/// Service settings for `outflow run`. Changing them needs a restart.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// After opening the capture handles, switch to this user (and its primary group), so
    /// that parsing hostile traffic never runs as root. Empty = stay. Default "".
    pub user: String,
    /// Interval of the stats line (packets, drops by kind, flows, per worker). Default "60s".
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            user: String::new(),
            stats_interval: Duration::from_secs(60),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald/SIEM ingestion).
    Json,
}

/// Logging.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "text" or "json". Default "text".
    pub format: LogFormat,
    /// Minimum level: "error", "warn", "info", "debug", "trace", or a tracing filter
    /// directive. The RUST_LOG environment variable overrides it. Default "info".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Output files of `outflow run`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Alerts as JSON lines, appended; "-" = standard output; empty = none. Default "-".
    pub alerts: String,
    /// Flow records as JSON lines, appended; empty = none. Default "".
    pub flows: String,
    /// DNS transactions as JSON lines, appended; empty = none. Default "".
    pub dns: String,
    /// Alerts held per sink while it is failing (syslog server down, disk full); beyond
    /// this the newest are dropped and counted. Default 4096.
    pub sink_queue: usize,
    /// Alerts as syslog messages (RFC 5424).
    pub syslog: SyslogConfig,
    /// Flow records as IPFIX (RFC 7011) to a flow collector.
    pub ipfix: IpfixConfig,
    /// Seed of the Community ID (`community_id` in flow records, alerts, incidents, DNS
    /// records and `/api/flows/top`), 0..=65535: it must equal the seed the Zeek, Suricata
    /// or Arkime sensors it is compared with use. Default 0 (the spec's default).
    pub community_id_seed: u16,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            alerts: "-".into(),
            flows: String::new(),
            dns: String::new(),
            sink_queue: 4096,
            syslog: SyslogConfig::default(),
            ipfix: IpfixConfig::default(),
            community_id_seed: crate::flow::community_id::DEFAULT_SEED,
        }
    }
}

/// Alerts to a syslog server or the local syslog socket, RFC 5424 framed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// Where to send: `udp://host:port`, `tcp://host:port` (RFC 6587 octet counting) or
    /// `unix:///dev/log`; empty = no syslog. Default "".
    pub target: String,
    /// Facility name: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron,
    /// authpriv, ftp, ntp, security, console, local0..local7. Default "local0".
    pub facility: String,
    /// APP-NAME field. Default "outflow".
    pub app_name: String,
    /// HOSTNAME field; empty = this machine's host name. Default "".
    pub hostname: String,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            target: String::new(),
            facility: "local0".into(),
            app_name: "outflow".into(),
            hostname: String::new(),
        }
    }
}

/// Flow records (and interim records on the active timeout) exported as IPFIX biflows
/// (RFC 7011, RFC 5103) to a collector such as nfdump's nfcapd or pmacct's nfacctd.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IpfixConfig {
    /// Collector: `udp://host:port` or `tcp://host:port`; empty = no export. Default "".
    pub target: String,
    /// Observation Domain ID in every message header (tells this sensor's records apart
    /// at a collector fed by several). Default 1.
    pub observation_domain: u32,
    /// UDP: the templates are re-sent at least this often, so a collector that restarts
    /// decodes records again within this time (TCP sends them once per connection).
    /// Default 60s.
    #[serde(with = "humantime_serde", default = "default_template_interval")]
    pub template_interval: Duration,
    /// UDP: the templates are also re-sent after this many messages; 0 = by time only.
    /// Default 100.
    pub template_messages: u32,
    /// Largest message in bytes (UDP: keep it under the path MTU, no fragmentation),
    /// 512..=65000. Default 1400.
    pub mtu: usize,
    /// Records held while the collector is slow or away; beyond this the newest are
    /// dropped and counted (`outflow_ipfix_dropped_records_total`). 1..=1048576. Default
    /// 65536.
    pub queue: usize,
}

fn default_template_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for IpfixConfig {
    fn default() -> Self {
        IpfixConfig {
            target: String::new(),
            observation_domain: 1,
            template_interval: default_template_interval(),
            template_messages: 100,
            mtu: 1400,
            queue: 65536,
        }
    }
}

/// Pcap slices: each worker's ring of recent packets, and one pcap per flagged flow.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SliceConfig {
    /// Where slices are written (one `<alert_id>.pcap` and `<alert_id>.json` each); empty =
    /// no slices (the rings still serve `/api/pcap`). Default "".
    pub dir: String,
    /// Bytes of recent packets each worker keeps (one preallocated ring); 0 = no ring, no
    /// slices, no /api/pcap. Default 64 MiB.
    pub ring_bytes: usize,
    /// Most bytes kept of any packet. Default 65535.
    pub snaplen: u32,
    /// A flow's first this many packets are kept up to `snaplen`. Default 100.
    pub full_packets: u64,
    /// After them, payload bytes kept per packet (headers are always kept), so a huge upload
    /// gives a small slice that still shows every packet. Default 64.
    pub payload_bytes: u32,
    /// A slice stops growing at this size. Default 100 MB.
    pub max_bytes: u64,
    /// A slice stops recording this long after its alert. Default "1h".
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Oldest slices are deleted when `dir` holds more than this. Default 10 GB.
    pub max_disk_bytes: u64,
    /// Slices older than this are deleted. Default "7d".
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Flows one worker records at once; more alerts get only their ring packets. Default 64.
    pub max_recording: usize,
}

impl Default for SliceConfig {
    fn default() -> Self {
        SliceConfig {
            dir: String::new(),
            ring_bytes: 64 << 20,
            snaplen: 65_535,
            full_packets: 100,
            payload_bytes: 64,
            max_bytes: 100_000_000,
            max_duration: Duration::from_secs(3600),
            max_disk_bytes: 10_000_000_000,
            max_age: Duration::from_secs(7 * 86_400),
            max_recording: 64,
        }
    }
}

/// The HTTP server of `outflow run` (and of `outflow replay --http`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on; empty = no HTTP server. A non-loopback address
    /// requires a token. Default "127.0.0.1:9760".
    pub listen: String,
    /// Bearer token required by /api/* (not /metrics or /healthz): at least 16 characters,
    /// "" for none. The environment variable OUTFLOW_HTTP_TOKEN overrides it, so the secret
    /// can stay out of the file. Default "".
    pub token: String,
    /// Alerts kept in memory for /api/alerts (newest win). Default 10000.
    pub alerts_kept: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9760".into(),
            token: String::new(),
            alerts_kept: 10_000,
        }
    }
}

/// Capture and dispatch settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Interface `outflow run` captures from (the mirror/TAP port). Required for `run`.
    pub interface: String,
    /// Worker threads, each owning a shard of the flows. Live, each opens its own capture
    /// handle in one PACKET_FANOUT group. 0 = one per CPU core. Default 0.
    pub workers: usize,
    /// Bytes captured per packet. Counters use the wire length whatever this is; it bounds
    /// what later stages (DNS, slices) can see. Default 65535.
    pub snaplen: u32,
    /// Kernel ring buffer per capture handle, bytes. Bigger rides out bursts. Default
    /// 67108864 (64 MiB).
    pub buffer_bytes: u32,
    /// Put the interface in promiscuous mode. Default true (a mirror port's traffic is not
    /// addressed to the sensor).
    pub promiscuous: bool,
    /// Deliver each packet as it arrives instead of in blocks: lower alert latency, more CPU.
    /// Default false.
    pub immediate: bool,
    /// Longest wait for a block of packets before the worker wakes up anyway (to tick timers
    /// and check for shutdown). Default "100ms".
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// BPF filter applied in the kernel (tcpdump syntax), e.g. "not port 22". Default "".
    pub filter: String,
    /// PACKET_FANOUT group id, 1..=65535, unique per interface on the host. 0 = derived from
    /// the process id. Default 0.
    pub fanout_group: u16,
    /// With several workers, let the kernel spread packets over them (PACKET_FANOUT). The
    /// kernel hashes the outermost headers; for VXLAN/Geneve mirrors (whose outer source port
    /// differs per inner flow and direction) set false: one capture thread then hashes the
    /// decoded, innermost headers. Default true.
    pub fanout: bool,
    /// Packets per batch handed from the reader to a worker. Larger batches amortise the
    /// channel hand-off; smaller ones lower latency. Default 256.
    pub batch_packets: usize,
    /// Batches in flight per worker (the bounded queue depth plus the one being filled).
    /// Default 8.
    pub batches_per_worker: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            workers: 0,
            snaplen: 65535,
            buffer_bytes: 64 << 20,
            promiscuous: true,
            immediate: false,
            read_timeout: Duration::from_millis(100),
            filter: String::new(),
            fanout_group: 0,
            fanout: true,
            batch_packets: 256,
            batches_per_worker: 8,
        }
    }
}

/// Flow table settings. Timeouts are in packet time.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Flows each worker can track at once. When full, the least recently seen flow is
    /// evicted (and counted). Default 262144, at most 16777215; 134 bytes a flow (see
    /// README), paged in as flows arrive.
    pub capacity_per_worker: usize,
    /// Idle timeout of an established TCP connection. Default "10m" (Suricata's default for
    /// established TCP; long enough for interactive sessions, short enough to bound memory).
    #[serde(with = "humantime_serde")]
    pub tcp_timeout: Duration,
    /// Idle timeout of a TCP flow that never completed its handshake (scans, SYN floods).
    /// Default "30s".
    #[serde(with = "humantime_serde")]
    pub tcp_unestablished_timeout: Duration,
    /// How long a TCP flow lingers after FIN from both sides or a RST, to count late
    /// retransmissions and ACKs before its record is written. Default "5s" (Zeek's
    /// tcp_close_delay).
    #[serde(with = "humantime_serde")]
    pub tcp_close_linger: Duration,
    /// How long after its linger a closed TCP connection is remembered, so that a late FIN
    /// or RST (or any TCP packet without SYN) on its tuple joins it: same originator, and a
    /// record linked to the first by `continues`, instead of a new flow started by the
    /// sender, often the external side. "0s" turns this off; at most "1h". Default "2m"
    /// (Linux gives up retransmitting an orphaned FIN after about 100 s,
    /// `tcp_orphan_retries`). Entries: `capacity_per_worker / 16` per worker (at least 64).
    #[serde(with = "humantime_serde")]
    pub tcp_recent_closed: Duration,
    /// Idle timeout of a UDP flow. Default "1m" (Zeek's udp_inactivity_timeout).
    #[serde(with = "humantime_serde")]
    pub udp_timeout: Duration,
    /// Idle timeout of ICMP and other IP protocols. Default "1m".
    #[serde(with = "humantime_serde")]
    pub other_timeout: Duration,
    /// A flow still active after this long gets an interim record (counters so far), and
    /// another one each time this much more time passes. Default "30m" (the NetFlow
    /// active-timeout convention).
    #[serde(with = "humantime_serde")]
    pub active_timeout: Duration,
    /// Bounded map from (addresses, protocol, IP id) to the ports of a datagram's first
    /// fragment, so later fragments are counted in the right flow. Default 4096 entries.
    pub fragment_capacity: usize,
    /// How long a first fragment's ports are remembered, and how long a datagram being
    /// reassembled for the parsers waits for its other fragments (`crate::defrag`). Default
    /// "30s" (RFC 791's reassembly timer is 15 s; Linux uses 30 s).
    #[serde(with = "humantime_serde")]
    pub fragment_timeout: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            capacity_per_worker: 262_144,
            tcp_timeout: Duration::from_secs(600),
            tcp_unestablished_timeout: Duration::from_secs(30),
            tcp_close_linger: Duration::from_secs(5),
            tcp_recent_closed: Duration::from_secs(120),
            udp_timeout: Duration::from_secs(60),
            other_timeout: Duration::from_secs(60),
            active_timeout: Duration::from_secs(1800),
            fragment_capacity: 4096,
            fragment_timeout: Duration::from_secs(30),
        }
    }
}

/// Approved destinations.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AllowConfig {
    /// Destination networks (e.g. the company's own cloud range, the backup provider) that
    /// never count as outbound. Default: none.
    pub dst_cidrs: Vec<IpNet>,
    /// Source networks whose uploads never count (e.g. the backup server). Default: none.
    pub src_cidrs: Vec<IpNet>,
    /// Destination domain suffixes (matched on label boundaries against the name the source
    /// resolved for the destination, from DNS) whose traffic never alerts. Default: none.
    pub dst_domains: Vec<String>,
    /// Cloud services (catalogue names, e.g. "Backblaze B2") whose uploads never raise
    /// `cloud_upload`: the sanctioned backup or sync service. Default: none.
    pub cloud_services: Vec<String>,
}

/// Detector settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// One connection uploading a lot, alerted while it is still open.
    pub large_transfer: LargeTransferConfig,
    /// Per (home host, external host) volume windows that emit threshold events.
    pub host_window: HostWindowConfig,
    /// Threshold events summed per group over a long window.
    pub data_leak: DataLeakConfig,
    /// Uploads that go out and (almost) nothing comes back.
    pub asymmetry: AsymmetryConfig,
    /// A host's daily upload against its own history.
    pub baseline: BaselineConfig,
    /// A flow's outbound bytes against the history of its home server's port.
    pub service_outlier: ServiceOutlierConfig,
    /// Connections between a home and an external host that stay open unusually long.
    pub long_connection: LongConnectionConfig,
}

/// Long connections, judged while they are open. A worker reports an open home ↔ external
/// connection's age when it crosses `min_duration / 64 × 2^k` (56 s, 1.9 min, 3.75 min, 7.5
/// min, 15 min, 30 min, 1 h, 2 h, 4 h ... by default): at or past `min_duration` each report
/// alerts (once, then at each doubling), and for a connection to a home server's port, the
/// first report past the port's usual duration (mean + `sigma` × std over its ended
/// connections, after `min_flows` of them) alerts once.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LongConnectionConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// A connection open this long alerts, and again at each doubling. Default "1h".
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// A connection to a home server's port alerts when its age passes the port's mean
    /// duration + this many standard deviations. Default 3.0.
    pub sigma: f64,
    /// Ended connections a port needs before its durations are judged. Default 100.
    pub min_flows: u64,
}

impl Default for LongConnectionConfig {
    fn default() -> Self {
        LongConnectionConfig {
            enabled: true,
            min_duration: Duration::from_secs(3600),
            sigma: 3.0,
            min_flows: 100,
        }
    }
}

/// Asymmetric upload: out/(in+1) above `ratio` with more than `min_out_bytes` out, checked
/// per flow at its end and per (source, destination) host window when it closes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AsymmetryConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// Out/(in+1) above this is asymmetric. Default 0.8.
    pub ratio: f64,
    /// ...with more than this many outbound IP bytes. Default 50000000 (50 MB).
    pub min_out_bytes: u64,
}

impl Default for AsymmetryConfig {
    fn default() -> Self {
        AsymmetryConfig {
            enabled: true,
            ratio: 0.8,
            min_out_bytes: 50_000_000,
        }
    }
}

/// Upload baseline: each home host's bytes uploaded per day against its previous days.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// A day more than this many standard deviations above the host's mean alerts.
    /// Default 3.0.
    pub z: f64,
    /// Days of history kept per host. Default 30.
    pub days: usize,
    /// Days of history needed before a host can alert. Default 7.
    pub min_days: usize,
    /// Offset of the day boundary from UTC, minutes (e.g. 120 for UTC+2). Default 0.
    pub utc_offset_minutes: i32,
    /// Hosts tracked at once; the host that reported least recently is forgotten (and
    /// counted) when full. Default 65536.
    pub capacity: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: true,
            z: 3.0,
            days: 30,
            min_days: 7,
            utc_offset_minutes: 0,
            capacity: 65_536,
        }
    }
}

/// Service outlier: outbound bytes per flow of each home server port.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceOutlierConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// A flow above mean + sigma × std of its port alerts. Default 3.0.
    pub sigma: f64,
    /// Flows of history a port needs before it can alert. Default 100.
    pub min_flows: u64,
    /// ...and a flow must send at least this many bytes, so tiny ports cannot alert on
    /// noise. Default 1000000 (1 MB).
    pub min_out_bytes: u64,
}

impl Default for ServiceOutlierConfig {
    fn default() -> Self {
        ServiceOutlierConfig {
            enabled: true,
            sigma: 3.0,
            min_flows: 100,
            min_out_bytes: 1_000_000,
        }
    }
}

/// The cloud-upload detector: a home host's outbound bytes to one cloud service, summed over
/// its connections, against a threshold. The service comes from the destination's name (a
/// DNS answer the host received, or the name it sent in TLS/QUIC/HTTP) matched against the
/// catalogue (`correlate::cloud`; the README lists it).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// Uploads of one host to one service are summed over this sliding window. Default "1h".
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Alert when a host's uploads to one service within the window exceed this many IP
    /// bytes. Default 20000000 (20 MB: below every volume threshold, above a chat
    /// attachment or a document edit).
    pub threshold_bytes: u64,
    /// Per-category thresholds, overriding `threshold_bytes` (categories: `file_sharing`,
    /// `object_storage`, `paste`, `chat`, `code_hosting`). Default: paste 1000000 (a paste
    /// site sees text; a megabyte of it is a dump), chat 5000000.
    pub category_thresholds: std::collections::BTreeMap<String, u64>,
    /// Services added to (or replacing, by name) the built-in catalogue.
    pub services: Vec<CloudServiceConfig>,
    /// Sources allowed to upload to some services (a backup server to its backup service).
    pub exceptions: Vec<CloudException>,
    /// (host, service) windows tracked at once; when full the least recently active goes
    /// (counted). Default 65536.
    pub capacity: usize,
}

/// One catalogue entry from the config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudServiceConfig {
    /// Service name as alerts show it ("Acme Share").
    pub name: String,
    /// Category: `file_sharing`, `object_storage`, `paste`, `chat` or `code_hosting`.
    pub category: String,
    /// Domain suffixes (matched on label boundaries) that are this service.
    pub domains: Vec<String>,
}

/// Sources whose uploads to some services never alert.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudException {
    /// Source networks.
    pub sources: Vec<IpNet>,
    /// Catalogue service names; empty = every service.
    pub services: Vec<String>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            enabled: true,
            window: Duration::from_secs(3600),
            threshold_bytes: 20_000_000,
            category_thresholds: [
                ("paste".to_string(), 1_000_000),
                ("chat".to_string(), 5_000_000),
            ]
            .into_iter()
            .collect(),
            services: Vec::new(),
            exceptions: Vec::new(),
            capacity: 65_536,
        }
    }
}

/// Categories of the cloud catalogue.
pub const CLOUD_CATEGORIES: [&str; 5] = [
    "file_sharing",
    "object_storage",
    "paste",
    "chat",
    "code_hosting",
];

/// Incidents: the findings of every detector about one exfiltration, joined.
///
/// A finding joins the open incident of the same source and destination (the destination
/// address, or the registered domain of its name; for DNS findings the queried registered
/// domain); a finding about a source alone (a host's data-leak total, an NXDOMAIN burst)
/// joins that source's most recent open incident. The alert outputs (JSON lines, syslog)
/// announce each incident when it opens, when it escalates and when it closes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentConfig {
    /// A finding joins an incident whose last finding is at most this old; later, the old
    /// incident is closed and a new one opened. Default "24h" (the data-leak window).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// An incident closes when none of its flows is open and nothing new joined it for this
    /// long (packet time). Default "10m".
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Updates that do not raise the severity or the tier (a new detector at the same
    /// severity, a total that doubled) are held this long and announced together, or folded
    /// into the closing line. Default "1h": longer than `idle` plus the 5-minute host
    /// window, so the findings that follow an exfiltration's first alert at the same
    /// severity (the asymmetry at the flow's end, the window's data leak) fold into its
    /// close instead of a line each, and an incident that goes on for hours still reports
    /// news at least hourly. A higher severity or tier is announced at once whatever this is.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// Incidents open at once. When full, the one idle longest is closed early (announced
    /// with `close_reason: "evicted"`, counted). Default 4096.
    pub capacity: usize,
    /// Also write every detector's finding as its own alert line to the alert outputs (the
    /// pre-incident behaviour). Findings are always in `/api/alerts`. Default false.
    pub per_detector_lines: bool,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            window: Duration::from_secs(86_400),
            idle: Duration::from_secs(600),
            hold: Duration::from_secs(3600),
            capacity: 4096,
            per_detector_lines: false,
        }
    }
}

/// Long-window state that survives restarts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for the cross-flow stage's snapshot (24 h totals, baselines, service
    /// statistics, DNS and cloud windows, port durations, open incidents). Empty = no
    /// snapshots. The example config uses /var/lib/outflow (systemd StateDirectory).
    pub dir: String,
    /// How often `outflow run` writes a snapshot (wall time); also written at shutdown.
    /// Default "5m".
    #[serde(with = "humantime_serde", default = "default_snapshot_interval")]
    pub snapshot_interval: Duration,
}

fn default_snapshot_interval() -> Duration {
    Duration::from_secs(300)
}

/// Host window: bytes from a home host to one external host within a window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostWindowConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// Window length. A (source, destination) pair's window opens with its first outbound
    /// byte and closes `window` later (a tumbling window anchored at the pair's activity,
    /// so no byte is counted in two events). Default "5m".
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A window whose outbound IP bytes exceed this emits a threshold event carrying all its
    /// bytes. Default 5000000 (5 MB).
    pub threshold_bytes: u64,
    /// (source, destination) pairs tracked at once; the pair whose window opened first is
    /// dropped (and counted) when full. Default 262144.
    pub capacity: usize,
}

impl Default for HostWindowConfig {
    fn default() -> Self {
        HostWindowConfig {
            enabled: true,
            window: Duration::from_secs(300),
            threshold_bytes: 5_000_000,
            capacity: 262_144,
        }
    }
}

/// How data-leak totals are grouped.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One home host to one external host.
    #[default]
    SrcDst,
    /// One home host to any external hosts.
    Src,
    /// Any home hosts to one external host.
    Dst,
}

/// Data leak: threshold events summed per group over a long window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataLeakConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// Events older than this drop out of a group's total. Default "24h".
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A group whose total exceeds this alerts. Default 100000000 (100 MB).
    pub total_bytes: u64,
    /// "src_dst" (default), "src" or "dst".
    pub group_by: GroupBy,
    /// A group alerts again only after this, or once its total has doubled. Default "24h".
    #[serde(with = "humantime_serde")]
    pub suppression: Duration,
    /// Groups tracked at once; the least recently active is dropped (and counted) when
    /// full. Default 65536.
    pub capacity: usize,
    /// Events kept per group; beyond it the oldest two are merged, so the total stays exact
    /// and memory bounded. Default 1024.
    pub max_events_per_group: usize,
}

impl Default for DataLeakConfig {
    fn default() -> Self {
        DataLeakConfig {
            enabled: true,
            window: Duration::from_secs(86_400),
            total_bytes: 100_000_000,
            group_by: GroupBy::SrcDst,
            suppression: Duration::from_secs(86_400),
            capacity: 65_536,
            max_events_per_group: 1024,
        }
    }
}

/// Which byte count a threshold applies to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ByteCount {
    /// IP bytes: the IP total-length field, headers included (Zeek's `orig_ip_bytes`).
    #[default]
    Ip,
    /// Transport payload bytes only.
    Payload,
}

/// Large outbound transfer detector.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LargeTransferConfig {
    /// Turn the detector on or off. Default true.
    pub enabled: bool,
    /// Outbound bytes of one connection that raise the first alert. Default 100000000
    /// (100 MB).
    pub threshold_bytes: u64,
    /// The alert also needs more than this many outbound packets, so a few jumbo or
    /// mis-sized packets cannot trip it. Default 1000.
    pub min_packets: u64,
    /// Higher tiers, each alerting once more when crossed. Strictly increasing, above
    /// `threshold_bytes`. Default [1000000000, 10000000000] (1 GB, 10 GB).
    pub tiers: Vec<u64>,
    /// Whether thresholds count IP bytes ("ip") or transport payload ("payload").
    /// Default "ip".
    pub count: ByteCount,
}

impl Default for LargeTransferConfig {
    fn default() -> Self {
        LargeTransferConfig {
            enabled: true,
            threshold_bytes: 100_000_000,
            min_packets: 1000,
            tiers: vec![1_000_000_000, 10_000_000_000],
            count: ByteCount::Ip,
        }
    }
}

/// Upper bound on the flow table per worker: the table links slots with 24-bit numbers
/// (see `flow::table`), so 16.7 M flows (2.2 GiB at 134 bytes a flow) a worker.
const MAX_FLOW_CAPACITY: usize = crate::flow::MAX_CAPACITY;
/// Longest `flow.tcp_recent_closed`: far beyond any stack's FIN/RST retransmissions.
const MAX_RECENT_CLOSED: Duration = Duration::from_secs(3600);
/// More workers than this is a typo, not a deployment.
const MAX_WORKERS: usize = 1024;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: shown.clone(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: Some(shown.clone()),
                problems,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // serde_path_to_error adds the key path (`flow.capacity`) to serde's message, which
        // otherwise names only the last key.
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = match path.as_str() {
                "" | "." => inner.to_string(),
                p => format!("key `{p}`: {inner}"),
            };
            ConfigError::Parse {
                path: "<text>".into(),
                message,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values against each other; returns every problem, each prefixed by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.home_nets.is_empty() {
            p.push("home_nets: is empty, so no traffic could ever be outbound".to_string());
        }
        let c = &self.capture;
        if c.workers > MAX_WORKERS {
            p.push(format!(
                "capture.workers: {} is above the limit {MAX_WORKERS}",
                c.workers
            ));
        }
        if !(1..=65_536).contains(&c.batch_packets) {
            p.push(format!(
                "capture.batch_packets: {} must be 1..=65536",
                c.batch_packets
            ));
        }
        if !(2..=1024).contains(&c.batches_per_worker) {
            p.push(format!(
                "capture.batches_per_worker: {} must be 2..=1024",
                c.batches_per_worker
            ));
        }
        if !(64..=262_144).contains(&c.snaplen) {
            p.push(format!(
                "capture.snaplen: {} must be 64..=262144",
                c.snaplen
            ));
        }
        if c.buffer_bytes < 1 << 20 {
            p.push(format!(
                "capture.buffer_bytes: {} is below 1 MiB; the kernel would drop on any burst",
                c.buffer_bytes
            ));
        }
        if c.read_timeout.is_zero() || c.read_timeout > Duration::from_secs(1) {
            p.push("capture.read_timeout: must be between 1ms and 1s".into());
        }
        let d = &self.decap;
        if d.max_depth > 8 {
            p.push(format!("decap.max_depth: {} must be 0..=8", d.max_depth));
        }
        for (key, ports) in [
            ("decap.vxlan_ports", &d.vxlan_ports),
            ("decap.geneve_ports", &d.geneve_ports),
            ("decap.gre_udp_ports", &d.gre_udp_ports),
            ("decap.teredo_ports", &d.teredo_ports),
            ("decap.gtp_ports", &d.gtp_ports),
        ] {
            if ports.len() > crate::decode::MAX_TUNNEL_PORTS {
                p.push(format!(
                    "{key}: {} ports, at most {} per tunnel type",
                    ports.len(),
                    crate::decode::MAX_TUNNEL_PORTS
                ));
            }
            if ports.contains(&0) {
                p.push(format!("{key}: port 0 is not a port"));
            }
        }
        let hw = &self.detect.host_window;
        if hw.window < Duration::from_secs(1) {
            p.push("detect.host_window.window: must be at least 1s".into());
        }
        if hw.threshold_bytes == 0 {
            p.push("detect.host_window.threshold_bytes: must be greater than 0".into());
        }
        let dl = &self.detect.data_leak;
        if dl.window < hw.window {
            p.push("detect.data_leak.window: shorter than detect.host_window.window".into());
        }
        if dl.total_bytes == 0 {
            p.push("detect.data_leak.total_bytes: must be greater than 0".into());
        }
        for (key, v) in [
            ("detect.host_window.capacity", hw.capacity),
            ("detect.data_leak.capacity", dl.capacity),
            (
                "detect.data_leak.max_events_per_group",
                dl.max_events_per_group,
            ),
        ] {
            if !(2..=1 << 24).contains(&v) {
                p.push(format!("{key}: {v} must be 2..=16777216"));
            }
        }
        let b = &self.detect.baseline;
        if b.min_days < 2 || b.min_days > b.days {
            p.push(format!(
                "detect.baseline.min_days: {} must be 2..=detect.baseline.days ({})",
                b.min_days, b.days
            ));
        }
        if !(1..=366).contains(&b.days) {
            p.push(format!("detect.baseline.days: {} must be 1..=366", b.days));
        }
        if b.utc_offset_minutes.abs() > 14 * 60 {
            p.push("detect.baseline.utc_offset_minutes: must be within ±840".into());
        }
        if self.detect.asymmetry.ratio <= 0.0 {
            p.push("detect.asymmetry.ratio: must be greater than 0".into());
        }
        if self.detect.service_outlier.min_flows < 2 {
            p.push("detect.service_outlier.min_flows: must be at least 2".into());
        }
        if self.state.snapshot_interval < Duration::from_secs(1) {
            p.push("state.snapshot_interval: must be at least 1s".into());
        }
        let d = &self.dns;
        if d.ports.is_empty() && d.enabled {
            p.push("dns.ports: empty while dns.enabled".into());
        }
        if d.ports.contains(&0) {
            p.push("dns.ports: 0 is not a port".into());
        }
        for (key, v) in [
            ("dns.window", d.window),
            ("dns.nxdomain_window", d.nxdomain_window),
            ("dns.transaction_timeout", d.transaction_timeout),
        ] {
            if v < Duration::from_secs(1) {
                p.push(format!("{key}: must be at least 1s"));
            }
        }
        if !(0.0..=8.0).contains(&d.entropy_threshold) {
            p.push(format!(
                "dns.entropy_threshold: {} must be 0..=8 (bits per character)",
                d.entropy_threshold
            ));
        }
        if !(d.name_score_threshold.is_finite() && d.name_score_threshold > 0.0) {
            p.push(format!(
                "dns.name_score_threshold: {} must be above 0 (a name score; 2 = one encoded run)",
                d.name_score_threshold
            ));
        }
        if !(d.pair_score_threshold.is_finite() && d.pair_score_threshold >= 0.0) {
            p.push(format!(
                "dns.pair_score_threshold: {} must be 0 or more (a pair score)",
                d.pair_score_threshold
            ));
        }
        // The analyser counts unique subdomains exactly up to 32 per window
        // (`correlate::dns::EXACT`): a larger minimum could never be reached.
        if !(1..=32).contains(&d.min_suspicious_subdomains) {
            p.push(format!(
                "dns.min_suspicious_subdomains: {} must be 1..=32",
                d.min_suspicious_subdomains
            ));
        }
        for s in &d.internal_suffixes {
            if s.trim_matches('.').is_empty() {
                p.push(format!(
                    "dns.internal_suffixes: {s:?} is empty (it would make every name internal)"
                ));
            }
        }
        if d.name_ttl_min > d.name_ttl_max {
            p.push("dns.name_ttl_min: above dns.name_ttl_max".into());
        }
        for (key, v) in [
            ("dns.pair_capacity", d.pair_capacity),
            ("dns.name_map_capacity", d.name_map_capacity),
            ("dns.transaction_capacity", d.transaction_capacity),
        ] {
            if !(1..=1 << 24).contains(&v) {
                p.push(format!("{key}: {v} must be 1..=16777216"));
            }
        }
        if !(d.client_share > 0.0 && d.client_share <= 1.0) {
            p.push(format!(
                "dns.client_share: {} must be above 0 and at most 1 (a fraction of dns.pair_capacity)",
                d.client_share
            ));
        }
        if d.client_min_pairs == 0 || d.client_min_pairs > d.pair_capacity {
            p.push(format!(
                "dns.client_min_pairs: {} must be 1..=dns.pair_capacity ({})",
                d.client_min_pairs, d.pair_capacity
            ));
        }
        if self.run.stats_interval < Duration::from_secs(1) {
            p.push("run.stats_interval: must be at least 1s".into());
        }
        let f = &self.flow;
        if !(1..=MAX_FLOW_CAPACITY).contains(&f.capacity_per_worker) {
            p.push(format!(
                "flow.capacity_per_worker: {} must be 1..={MAX_FLOW_CAPACITY}",
                f.capacity_per_worker
            ));
        }
        for (key, d) in [
            ("flow.tcp_timeout", f.tcp_timeout),
            (
                "flow.tcp_unestablished_timeout",
                f.tcp_unestablished_timeout,
            ),
            ("flow.tcp_close_linger", f.tcp_close_linger),
            ("flow.udp_timeout", f.udp_timeout),
            ("flow.other_timeout", f.other_timeout),
            ("flow.active_timeout", f.active_timeout),
            ("flow.fragment_timeout", f.fragment_timeout),
        ] {
            if d.is_zero() {
                p.push(format!("{key}: must be greater than 0"));
            }
        }
        // Longer than a retransmitting stack keeps trying, an entry would only attach
        // unrelated later traffic on a reused port pair to an old connection.
        if f.tcp_recent_closed > MAX_RECENT_CLOSED {
            p.push(format!(
                "flow.tcp_recent_closed: {} must be at most 1h (0s turns it off)",
                humantime::format_duration(f.tcp_recent_closed)
            ));
        }
        if !(1..=1 << 20).contains(&f.fragment_capacity) {
            p.push(format!(
                "flow.fragment_capacity: {} must be 1..=1048576",
                f.fragment_capacity
            ));
        }
        let lt = &self.detect.large_transfer;
        if lt.threshold_bytes == 0 {
            p.push("detect.large_transfer.threshold_bytes: must be greater than 0".into());
        }
        let mut prev = lt.threshold_bytes;
        for (i, t) in lt.tiers.iter().enumerate() {
            if *t <= prev {
                p.push(format!(
                    "detect.large_transfer.tiers[{i}]: {t} must be above the previous tier / threshold_bytes ({prev})"
                ));
            }
            prev = prev.max(*t);
        }
        if lt.tiers.len() > 16 {
            p.push("detect.large_transfer.tiers: at most 16 tiers".into());
        }
        // "" is the documented "no token"; anything else must be a usable secret.
        if !self.http.token.is_empty() {
            if let Some(problem) = token_problem(&self.http.token) {
                p.push(weak_token_message("http.token", &problem));
            }
        }
        let o = &self.output;
        if !(1..=1 << 20).contains(&o.sink_queue) {
            p.push(format!(
                "output.sink_queue: {} must be 1..=1048576",
                o.sink_queue
            ));
        }
        if !o.ipfix.target.is_empty() {
            // The syslog target's syntax, restricted to the two transports IPFIX has here.
            let t = &o.ipfix.target;
            match SyslogTarget::parse(t) {
                Ok(SyslogTarget::Udp(_) | SyslogTarget::Tcp(_)) => {}
                Ok(_) => p.push(format!(
                    "output.ipfix.target: {t:?}: use udp://host:port or tcp://host:port"
                )),
                Err(e) => p.push(format!("output.ipfix.target: {e}")),
            }
        }
        if o.ipfix.template_interval < Duration::from_secs(1) {
            p.push("output.ipfix.template_interval: must be at least 1s".into());
        }
        if !(512..=65000).contains(&o.ipfix.mtu) {
            p.push(format!(
                "output.ipfix.mtu: {} must be 512..=65000",
                o.ipfix.mtu
            ));
        }
        if !(1..=1 << 20).contains(&o.ipfix.queue) {
            p.push(format!(
                "output.ipfix.queue: {} must be 1..=1048576",
                o.ipfix.queue
            ));
        }
        let b = &self.bus;
        if !b.url.is_empty() {
            for u in b.url.split(',') {
                let u = u.trim();
                let ok = ["nats://", "tls://"]
                    .iter()
                    .any(|s| u.strip_prefix(s).is_some_and(|h| !h.is_empty()));
                if !ok {
                    p.push(format!(
                        "bus.url: {u:?}: use nats://host:port (several comma-separated)"
                    ));
                }
            }
        }
        if !b.sensor_id.is_empty() && !valid_sensor_id(&b.sensor_id) {
            p.push(format!(
                "bus.sensor_id: {:?}: use 1..=64 letters, digits, '-' or '_'",
                b.sensor_id
            ));
        }
        for id in &b.sensors {
            if !valid_sensor_id(id) {
                p.push(format!(
                    "bus.sensors: {id:?}: use 1..=64 letters, digits, '-' or '_'"
                ));
            }
        }
        if !(1..=1024).contains(&b.partitions) {
            p.push(format!("bus.partitions: {} must be 1..=1024", b.partitions));
        }
        if !(1..=1 << 24).contains(&b.queue) {
            p.push(format!("bus.queue: {} must be 1..=16777216", b.queue));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&b.lease_ttl) {
            p.push("bus.lease_ttl: must be 1s..=1h".into());
        }
        if b.snapshot_interval < Duration::from_secs(1) {
            p.push("bus.snapshot_interval: must be at least 1s".into());
        }
        if b.retention < Duration::from_secs(60) {
            p.push("bus.retention: must be at least 1m".into());
        }
        if let Err(e) = SyslogTarget::parse(&o.syslog.target) {
            p.push(format!("output.syslog.target: {e}"));
        }
        if facility_code(&o.syslog.facility).is_none() {
            p.push(format!(
                "output.syslog.facility: unknown facility {:?} (kern, user, daemon, auth, local0..local7, ...)",
                o.syslog.facility
            ));
        }
        if !valid_header_field(&o.syslog.app_name, 48) {
            p.push(
                "output.syslog.app_name: must be 1..=48 printable ASCII characters, no spaces"
                    .into(),
            );
        }
        if !o.syslog.hostname.is_empty() && !valid_header_field(&o.syslog.hostname, 255) {
            p.push(
                "output.syslog.hostname: must be 1..=255 printable ASCII characters, no spaces"
                    .into(),
            );
        }
        let sl = &self.slice;
        if sl.ring_bytes != 0 && !(1 << 16..=1 << 34).contains(&sl.ring_bytes) {
            p.push(format!(
                "slice.ring_bytes: {} must be 0 (off) or 65536..=17179869184",
                sl.ring_bytes
            ));
        }
        if !(64..=262_144).contains(&sl.snaplen) {
            p.push(format!("slice.snaplen: {} must be 64..=262144", sl.snaplen));
        } else if sl.ring_bytes != 0 && sl.ring_bytes < 16 * (sl.snaplen as usize + 64) {
            p.push(format!(
                "slice.ring_bytes: {} holds fewer than 16 packets of slice.snaplen {}",
                sl.ring_bytes, sl.snaplen
            ));
        }
        if sl.max_bytes < 1024 {
            p.push(format!(
                "slice.max_bytes: {} must be at least 1024",
                sl.max_bytes
            ));
        }
        if sl.max_duration.is_zero() || sl.max_age.is_zero() {
            p.push("slice.max_duration, slice.max_age: must be greater than 0".into());
        }
        if !(1..=4096).contains(&sl.max_recording) {
            p.push(format!(
                "slice.max_recording: {} must be 1..=4096",
                sl.max_recording
            ));
        }
        let h = &self.http;
        if !h.listen.is_empty() && h.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "http.listen: {:?} is not an address:port such as 127.0.0.1:9760 or [::1]:9760",
                h.listen
            ));
        }
        if !(1..=1_000_000).contains(&h.alerts_kept) {
            p.push(format!(
                "http.alerts_kept: {} must be 1..=1000000",
                h.alerts_kept
            ));
        }
        let lc = &self.detect.long_connection;
        if lc.min_duration < Duration::from_secs(64) {
            p.push(format!(
                "detect.long_connection.min_duration: {:?} must be at least 64s (its 64th is the first age report)",
                lc.min_duration
            ));
        }
        if !(lc.sigma.is_finite() && lc.sigma > 0.0) {
            p.push(format!(
                "detect.long_connection.sigma: {} must be a positive number",
                lc.sigma
            ));
        }
        let cl = &self.cloud;
        if cl.window.is_zero() {
            p.push("cloud.window: must be above 0".into());
        }
        if !(1..=10_000_000).contains(&cl.capacity) {
            p.push(format!(
                "cloud.capacity: {} must be 1..=10000000",
                cl.capacity
            ));
        }
        for k in cl.category_thresholds.keys() {
            if !CLOUD_CATEGORIES.contains(&k.as_str()) {
                p.push(format!(
                    "cloud.category_thresholds: unknown category {k:?}; one of {}",
                    CLOUD_CATEGORIES.join(", ")
                ));
            }
        }
        for (i, sv) in cl.services.iter().enumerate() {
            if sv.name.is_empty() {
                p.push(format!("cloud.services[{i}].name: is empty"));
            }
            if !CLOUD_CATEGORIES.contains(&sv.category.as_str()) {
                p.push(format!(
                    "cloud.services[{i}].category: unknown {:?}; one of {}",
                    sv.category,
                    CLOUD_CATEGORIES.join(", ")
                ));
            }
            if sv.domains.is_empty() {
                p.push(format!("cloud.services[{i}].domains: is empty"));
            }
        }
        let inc = &self.incident;
        for (k, v) in [("incident.window", inc.window), ("incident.idle", inc.idle)] {
            if v.is_zero() {
                p.push(format!("{k}: must be above 0"));
            }
        }
        if !(1..=1_000_000).contains(&inc.capacity) {
            p.push(format!(
                "incident.capacity: {} must be 1..=1000000",
                inc.capacity
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: None,
                problems: p,
            })
        }
    }

    /// The effective configuration as TOML (for `outflow check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Worker count with 0 resolved to the number of CPU cores.
    pub fn effective_workers(&self) -> usize {
        match self.capture.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Where syslog messages go (`output.syslog.target`, parsed). Defined with the config, which
/// validates it; the syslog sink connects to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    /// No syslog.
    None,
    /// `udp://host:port`; holds `host:port` (an IPv6 host in brackets).
    Udp(String),
    /// `tcp://host:port`; holds `host:port` (an IPv6 host in brackets).
    Tcp(String),
    /// `unix:///path`.
    Unix(std::path::PathBuf),
}

impl SyslogTarget {
    /// Parses `output.syslog.target`: empty (no syslog), `udp://host:port`,
    /// `tcp://host:port` or `unix:///absolute/path`. The host is a name, an IPv4 address or
    /// an IPv6 address in brackets; the port is required. Errors say how to fix the value.
    pub fn parse(s: &str) -> Result<SyslogTarget, String> {
        if s.is_empty() {
            return Ok(SyslogTarget::None);
        }
        const FORMS: &str = "use udp://host:port, tcp://host:port or unix:///dev/log";
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("{s:?} has no scheme: {FORMS}"));
        };
        match scheme {
            "udp" => parse_authority(s, rest).map(SyslogTarget::Udp),
            "tcp" => parse_authority(s, rest).map(SyslogTarget::Tcp),
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(format!(
                        "{s:?}: the socket path must be absolute, with three slashes: unix:///dev/log"
                    ));
                }
                if rest.contains('\0') {
                    return Err(format!("{s:?}: the socket path holds a NUL byte"));
                }
                Ok(SyslogTarget::Unix(std::path::PathBuf::from(rest)))
            }
            _ => Err(format!("{s:?}: unknown scheme {scheme:?}: {FORMS}")),
        }
    }
}

/// Checks `host:port` of a `udp://` or `tcp://` target and returns it as given.
fn parse_authority(whole: &str, hp: &str) -> Result<String, String> {
    let port = if let Some(v6) = hp.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once(']') else {
            return Err(format!("{whole:?}: missing ']' after the IPv6 address"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{whole:?}: {addr:?} is not an IPv6 address"));
        }
        let Some(port) = port.strip_prefix(':') else {
            return Err(format!("{whole:?} has no port: write [{addr}]:514"));
        };
        port
    } else {
        let Some((host, port)) = hp.rsplit_once(':') else {
            return Err(format!("{whole:?} has no port: write {hp}:514"));
        };
        if host.contains(':') {
            return Err(format!(
                "{whole:?}: put an IPv6 address in brackets, e.g. udp://[2001:db8::1]:514"
            ));
        }
        if host.is_empty() {
            return Err(format!("{whole:?} has no host"));
        }
        // Letters, digits, '-', '.' (names and IPv4) and '_' (seen in internal names).
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(format!("{whole:?}: {host:?} is not a host name or address"));
        }
        port
    };
    // Digits only: `u16::from_str` would also take "+514".
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(hp.to_owned()),
        _ => Err(format!(
            "{whole:?}: port {port:?} must be a number 1..=65535"
        )),
    }
}

/// Facility number of a facility name (RFC 5424 §6.2.1 table; `security`/`audit` = 13 and
/// `console`/`alert` = 14 as named by the BSD and Linux syslogs).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "ntp" => 12,
        "security" | "audit" => 13,
        "console" | "alert" => 14,
        "clock" => 15,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Whether `s` fits an RFC 5424 header field (1..=max printable ASCII, no space).
pub fn valid_header_field(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// Fewest characters an API token (`http.token`, `OUTFLOW_HTTP_TOKEN`) may have. The token
/// is the only thing between the network and the alert and pcap API, and a client can guess
/// at line rate: 16 characters is 64 bits as hex, 96 as base64, past any online guessing;
/// fewer is a placeholder or a typo, not a secret.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The message refusing a weak token: `key` names where it came from, `problem` is
/// [`token_problem`]'s answer.
pub fn weak_token_message(key: &str, problem: &str) -> String {
    format!(
        "{key}: the API token {problem}; use a random token of at least {MIN_TOKEN_CHARS} \
         characters (e.g. `openssl rand -hex 16`)"
    )
}

/// What is wrong with an API token, if anything: empty, only whitespace, or shorter than
/// [`MIN_TOKEN_CHARS`] characters.
pub fn token_problem(token: &str) -> Option<String> {
    let chars = token.chars().count();
    if token.is_empty() {
        Some("is empty".to_string())
    } else if token.trim().is_empty() {
        Some("is only whitespace".to_string())
    } else if chars < MIN_TOKEN_CHARS {
        Some(format!("is {chars} characters long"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_roundtrip() {
        let c = Config::default();
        c.validate().unwrap();
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn empty_text_is_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[flow]\ncapacity = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capacity"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let e = Config::parse(
            "home_nets = []\n[flow]\ncapacity_per_worker = 0\ntcp_timeout = \"0s\"\n\
             [detect.large_transfer]\nthreshold_bytes = 10\ntiers = [5]\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "home_nets:",
            "flow.capacity_per_worker:",
            "flow.tcp_timeout:",
            "detect.large_transfer.tiers[0]:",
        ] {
            assert!(e.contains(key), "missing {key} in {e}");
        }
    }

    #[test]
    fn dns_client_share_is_a_fraction_and_its_floor_fits_the_table() {
        for (text, key) in [
            ("[dns]\nclient_share = 0.0\n", "dns.client_share:"),
            ("[dns]\nclient_share = 1.5\n", "dns.client_share:"),
            ("[dns]\nclient_share = nan\n", "dns.client_share:"),
            ("[dns]\nclient_min_pairs = 0\n", "dns.client_min_pairs:"),
            (
                "[dns]\npair_capacity = 100\nclient_min_pairs = 101\n",
                "dns.client_min_pairs: 101 must be 1..=dns.pair_capacity (100)",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let c = Config::parse("[dns]\nclient_share = 1.0\nclient_min_pairs = 1\n").unwrap();
        assert_eq!((c.dns.client_share, c.dns.client_min_pairs), (1.0, 1));
    }

    /// The tunnel detector's scores and lists: refused with the key named, all at once.
    #[test]
    fn dns_scores_and_internal_suffixes_are_checked() {
        let text = "[dns]\nname_score_threshold = 0.0\npair_score_threshold = -1.0\n\
                    min_suspicious_subdomains = 33\ninternal_suffixes = [\"cluster.local\", \".\"]\n";
        let e = Config::parse(text).unwrap_err().to_string();
        for key in [
            "dns.name_score_threshold: 0 must be above 0",
            "dns.pair_score_threshold: -1 must be 0 or more",
            "dns.min_suspicious_subdomains: 33 must be 1..=32",
            "dns.internal_suffixes: \".\" is empty",
        ] {
            assert!(e.contains(key), "missing {key} in {e}");
        }
        assert!(Config::parse("[dns]\nmin_suspicious_subdomains = 0\n").is_err());
        assert!(Config::parse("[dns]\npair_score_threshold = nan\n").is_err());
        let c = Config::parse("[dns]\ninternal_suffixes = []\nmin_suspicious_subdomains = 1\n")
            .unwrap();
        assert!(c.dns.internal_suffixes.is_empty());
        // The old key is gone: a config naming it is refused, not silently misread.
        assert!(Config::parse("[dns]\nmax_suspicious = 5\n").is_err());
    }

    /// The late-FIN window: 0 turns it off, above an hour is refused with the key named.
    #[test]
    fn tcp_recent_closed_is_bounded() {
        let e = Config::parse("[flow]\ntcp_recent_closed = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("flow.tcp_recent_closed: 2h must be at most 1h"),
            "{e}"
        );
        let c = Config::parse("[flow]\ntcp_recent_closed = \"0s\"\n").unwrap();
        assert!(c.flow.tcp_recent_closed.is_zero());
        assert_eq!(
            Config::default().flow.tcp_recent_closed,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn bad_cidr_is_refused() {
        let e = Config::parse("home_nets = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("home_nets"), "{e}");
    }
}
