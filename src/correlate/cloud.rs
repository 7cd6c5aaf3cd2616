//! The cloud-upload detector: a home host's uploads to one cloud service — file sharing,
//! object storage, paste sites, chat webhooks, code hosting — summed over its connections
//! within `cloud.window`, against a threshold well below the volume detectors' (20 MB by
//! default). Exfiltration today mostly goes to a service everyone uses; the address says
//! little (shared CDNs), the name says which service it is.
//!
//! Fed by the leak stage's volume reports (home → external IP bytes per flow step, never per
//! packet) with the destination's name as the host learnt it (a DNS answer, or the name it
//! sent in a TLS/QUIC ClientHello or an HTTP Host header). Only outbound bytes count, so the
//! same service downloading raises nothing.
//!
//! State: one window per (host, service) in a linked map in last-activity order, each a ring
//! of [`BUCKETS`] time buckets; a full map drops the least recently active (counted). The
//! catalogue lookup walks the name's label suffixes through a hash map: a handful of probes
//! per report, no scan.

use super::leak::LeakAlert;
use crate::config::CloudConfig;
use crate::detect::Detector;
use hashbrown::HashMap;
use hashlink::LinkedHashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Table label of the (host, service) windows (metrics, summary).
pub const CLOUD_TABLE: &str = "cloud_windows";

/// Time buckets per window: the sum is exact to within one bucket's span (1/12 of the
/// window: 5 minutes of the default hour).
pub const BUCKETS: usize = 12;

/// Destination addresses and names a finding lists.
const MAX_LISTED: usize = 8;

/// Which kind of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// Dropbox, Google Drive, OneDrive, Box, MEGA, WeTransfer, pCloud, transfer.sh-likes.
    FileSharing,
    /// S3, GCS, Azure Blob, Backblaze B2.
    ObjectStorage,
    /// Pastebin-like sites.
    Paste,
    /// Slack, Discord, Telegram, Teams (webhooks and file uploads).
    Chat,
    /// GitHub, GitLab, Bitbucket (a `git push`).
    CodeHosting,
}

impl Category {
    /// Config and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Category::FileSharing => "file_sharing",
            Category::ObjectStorage => "object_storage",
            Category::Paste => "paste",
            Category::Chat => "chat",
            Category::CodeHosting => "code_hosting",
        }
    }

    fn parse(s: &str) -> Option<Category> {
        [
            Category::FileSharing,
            Category::ObjectStorage,
            Category::Paste,
            Category::Chat,
            Category::CodeHosting,
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// The built-in catalogue: (service, category, domain suffixes). Sources: each service's
/// published API and upload hosts (e.g. Dropbox `content.dropboxapi.com`, Google Drive
/// uploads through `www.googleapis.com/upload/drive` are not told apart from other Google
/// APIs by name, so only Drive's own hosts are listed). Object-storage bucket names
/// (`<bucket>.s3.<region>.amazonaws.com`, `<bucket>.blob.core.windows.net`) are matched by
/// their suffix, so every bucket is covered.
pub const CATALOGUE: &[(&str, Category, &[&str])] = &[
    (
        "Dropbox",
        Category::FileSharing,
        &["dropbox.com", "dropboxapi.com", "dropboxusercontent.com"],
    ),
    (
        "Google Drive",
        Category::FileSharing,
        &[
            "drive.google.com",
            "docs.google.com",
            "drive.usercontent.google.com",
            "docs.googleusercontent.com",
        ],
    ),
    (
        "OneDrive",
        Category::FileSharing,
        &[
            "onedrive.live.com",
            "onedrive.com",
            "storage.live.com",
            "1drv.com",
            "1drv.ms",
            "sharepoint.com",
        ],
    ),
    (
        "Box",
        Category::FileSharing,
        &["box.com", "boxcloud.com", "box.net"],
    ),
    (
        "MEGA",
        Category::FileSharing,
        &["mega.nz", "mega.co.nz", "mega.io", "megaupload.nz"],
    ),
    (
        "WeTransfer",
        Category::FileSharing,
        &["wetransfer.com", "we.tl", "wetransfer.net"],
    ),
    (
        "pCloud",
        Category::FileSharing,
        &["pcloud.com", "pcloud.link"],
    ),
    (
        "transfer.sh-like",
        Category::FileSharing,
        &[
            "transfer.sh",
            "file.io",
            "gofile.io",
            "catbox.moe",
            "0x0.st",
            "bashupload.com",
            "temp.sh",
            "oshi.at",
            "tmpfiles.org",
            "filebin.net",
            "anonfiles.com",
            "send.vis.ee",
        ],
    ),
    (
        "Amazon S3",
        Category::ObjectStorage,
        &["s3.amazonaws.com", "s3-accelerate.amazonaws.com"],
    ),
    (
        "Google Cloud Storage",
        Category::ObjectStorage,
        &["storage.googleapis.com", "storage.cloud.google.com"],
    ),
    (
        "Azure Blob Storage",
        Category::ObjectStorage,
        &["blob.core.windows.net", "dfs.core.windows.net"],
    ),
    (
        "Backblaze B2",
        Category::ObjectStorage,
        &["backblazeb2.com", "backblaze.com"],
    ),
    (
        "Pastebin-like",
        Category::Paste,
        &[
            "pastebin.com",
            "paste.ee",
            "hastebin.com",
            "dpaste.com",
            "dpaste.org",
            "paste.rs",
            "rentry.co",
            "controlc.com",
            "privatebin.net",
            "termbin.com",
            "ghostbin.site",
        ],
    ),
    (
        "Slack",
        Category::Chat,
        &["hooks.slack.com", "files.slack.com", "slack.com"],
    ),
    (
        "Discord",
        Category::Chat,
        &["discord.com", "discordapp.com", "discordapp.net"],
    ),
    (
        "Telegram",
        Category::Chat,
        &["api.telegram.org", "telegram.org"],
    ),
    (
        "Microsoft Teams",
        Category::Chat,
        &["webhook.office.com", "teams.microsoft.com"],
    ),
    (
        "GitHub",
        Category::CodeHosting,
        &["github.com", "uploads.github.com"],
    ),
    ("GitLab", Category::CodeHosting, &["gitlab.com"]),
    ("Bitbucket", Category::CodeHosting, &["bitbucket.org"]),
];

/// A service of the catalogue in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Name as alerts show it.
    pub name: String,
    /// Its category.
    pub category: Category,
}

/// The catalogue: domain suffix → service.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    services: Vec<Service>,
    by_suffix: HashMap<String, u16>,
}

impl Catalogue {
    /// The built-in catalogue with the config's services added (one with a built-in name
    /// replaces it).
    pub fn new(cfg: &CloudConfig) -> Catalogue {
        let mut c = Catalogue::default();
        let replaced: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        for (name, cat, domains) in CATALOGUE {
            if !replaced.contains(name) {
                c.add(name, *cat, domains.iter().copied());
            }
        }
        for s in &cfg.services {
            if let Some(cat) = Category::parse(&s.category) {
                c.add(&s.name, cat, s.domains.iter().map(String::as_str));
            }
        }
        c
    }

    fn add<'a>(&mut self, name: &str, cat: Category, domains: impl Iterator<Item = &'a str>) {
        let Ok(i) = u16::try_from(self.services.len()) else {
            return;
        };
        self.services.push(Service {
            name: name.to_string(),
            category: cat,
        });
        for d in domains {
            let d = d.trim_matches('.').to_ascii_lowercase();
            if !d.is_empty() {
                self.by_suffix.insert(d, i);
            }
        }
    }

    /// The service a host name belongs to: the longest listed suffix on a label boundary.
    pub fn lookup(&self, name: &str) -> Option<u16> {
        let name = name.trim_end_matches('.');
        // Longest first: the whole name, then without its first label, and so on. Case
        // is folded only when a name has capitals (names from DNS are lowercase already).
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.walk(&name.to_ascii_lowercase());
        }
        self.walk(name)
    }

    fn walk(&self, name: &str) -> Option<u16> {
        let mut rest = name;
        // At most 127 labels in a DNS name: the loop is bounded by the name's length.
        loop {
            if let Some(&i) = self.by_suffix.get(rest) {
                return Some(i);
            }
            match rest.split_once('.') {
                Some((_, r)) => rest = r,
                None => break,
            }
        }
        // S3's regional and dual-stack endpoints put the region after `s3`
        // (`<bucket>.s3.eu-west-1.amazonaws.com`, `s3-eu-west-1.amazonaws.com`,
        // `<bucket>.s3.dualstack.us-east-1.amazonaws.com`): any `s3` or `s3-*` label under
        // amazonaws.com is S3.
        let aws = name.strip_suffix(".amazonaws.com")?;
        aws.split('.')
            .any(|l| l == "s3" || l.starts_with("s3-"))
            .then(|| self.by_suffix.get("s3.amazonaws.com").copied())
            .flatten()
    }

    /// Service `i`.
    pub fn service(&self, i: u16) -> Option<&Service> {
        self.services.get(usize::from(i))
    }

    /// The index of the service called `name`.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        self.services
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(name))
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// One (host, service) window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Window {
    /// Bucket start times (ns) and the outbound IP bytes in each.
    buckets: [(u64, u64); BUCKETS],
    /// Inbound IP bytes over the same reports (for the finding; not counted).
    inb: u64,
    first_ns: u64,
    last_ns: u64,
    /// Distinct flows (the last few ids, to count connections without a set).
    flows: u64,
    last_flows: [u64; 4],
    dsts: Vec<IpAddr>,
    names: Vec<String>,
    /// When it last alerted (ns): it alerts again only a window later.
    alerted_ns: Option<u64>,
}

/// The detector's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudStats {
    /// Outbound volume reports whose destination name is a catalogue service.
    pub reports: u64,
    /// ... of those, not counted because the service or source is allowed.
    pub allowed: u64,
    /// Findings raised.
    pub alerts: u64,
    /// Windows dropped because the table was full.
    pub evicted: u64,
}

/// Uploads per (host, service).
///
/// In a correlator snapshot ([`super::snapshot`]): its windows (in their order) and
/// counters; the rest is the config's. A window's service is an index into the catalogue,
/// so a snapshot fits a detector of the same catalogue only (a reload with a new one starts
/// the windows again, see `Correlator::reconfigure`).
#[derive(Serialize, Deserialize)]
pub struct CloudDetector {
    #[serde(skip)]
    catalogue: Catalogue,
    #[serde(skip)]
    window_ns: u64,
    #[serde(skip)]
    bucket_ns: u64,
    #[serde(skip)]
    threshold: u64,
    #[serde(skip)]
    by_category: Vec<(Category, u64)>,
    #[serde(skip)]
    allowed: Vec<u16>,
    #[serde(skip)]
    exceptions: Vec<(Vec<IpNet>, Vec<u16>)>,
    #[serde(skip)]
    capacity: usize,
    #[serde(with = "super::snapshot::table")]
    windows: LinkedHashMap<(IpAddr, u16), Window>,
    /// Counters.
    pub stats: CloudStats,
}

impl CloudDetector {
    /// A detector configured by `cloud` and `allow.cloud_services`; `None` when disabled.
    pub fn new(cloud: &CloudConfig, allowed: &[String]) -> Option<CloudDetector> {
        if !cloud.enabled {
            return None;
        }
        let catalogue = Catalogue::new(cloud);
        let index = |n: &String| {
            let i = catalogue.index_of(n);
            if i.is_none() {
                tracing::warn!("cloud service {n:?} is not in the catalogue; ignored");
            }
            i
        };
        let allowed = allowed.iter().filter_map(index).collect();
        let exceptions = cloud
            .exceptions
            .iter()
            .map(|e| {
                (
                    e.sources.clone(),
                    e.services.iter().filter_map(index).collect(),
                )
            })
            .collect();
        let window_ns = u64::try_from(cloud.window.as_nanos()).unwrap_or(u64::MAX);
        Some(CloudDetector {
            window_ns,
            bucket_ns: (window_ns / BUCKETS as u64).max(1),
            threshold: cloud.threshold_bytes,
            by_category: cloud
                .category_thresholds
                .iter()
                .filter_map(|(k, v)| Category::parse(k).map(|c| (c, *v)))
                .collect(),
            allowed,
            exceptions,
            capacity: cloud.capacity.max(1),
            windows: LinkedHashMap::new(),
            stats: CloudStats::default(),
            catalogue,
        })
    }

    /// (entries, capacity, evictions) of the window table.
    pub fn table(&self) -> (u64, u64, u64) {
        (
            self.windows.len() as u64,
            self.capacity as u64,
            self.stats.evicted,
        )
    }

    fn threshold_of(&self, c: Category) -> u64 {
        self.by_category
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(self.threshold, |(_, v)| *v)
    }

    fn is_allowed(&self, src: IpAddr, service: u16) -> bool {
        self.allowed.contains(&service)
            || self.exceptions.iter().any(|(nets, services)| {
                (services.is_empty() || services.contains(&service))
                    && nets.iter().any(|n| n.contains(&src))
            })
    }

    /// What the windows mean: the catalogue's service names in index order (a window
    /// names its service by index) and the window length (its buckets are a fraction of
    /// it). Windows carry over to a detector of the same layout only.
    pub fn layout(&self) -> (Vec<String>, u64) {
        let names = self
            .catalogue
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        (names, self.window_ns)
    }

    /// A reload built this detector from the new config: the counters of the one it
    /// replaces carry over, and its windows if they mean the same here
    /// ([`CloudDetector::layout`]).
    pub fn keep_windows_of(&mut self, old: CloudDetector) {
        if old.layout() == self.layout() {
            self.windows = old.windows;
        }
        self.stats = old.stats;
    }

    /// The previous process's flows are gone (a restart resumed from `state.dir`): their
    /// ids mean other flows now, so no window takes a new flow for one it counted.
    pub fn forget_flows(&mut self) {
        for w in self.windows.values_mut() {
            w.last_flows = [u64::MAX; 4];
        }
    }

    /// One outbound volume report of `src` → `dst` (named `name`): `out_bytes` home → external
    /// and `in_bytes` back since the last report of flow `flow_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_volume(
        &mut self,
        ts_ns: u64,
        flow_id: u64,
        src: IpAddr,
        dst: IpAddr,
        name: &str,
        out_bytes: u64,
        in_bytes: u64,
        out: &mut impl FnMut(LeakAlert),
    ) {
        if out_bytes == 0 {
            return;
        }
        let Some(service) = self.catalogue.lookup(name) else {
            return;
        };
        self.stats.reports += 1;
        if self.is_allowed(src, service) {
            self.stats.allowed += 1;
            return;
        }
        let key = (src, service);
        let bucket_start = ts_ns - ts_ns % self.bucket_ns;
        let mut w = match self.windows.remove(&key) {
            Some(w) => w,
            None => {
                // A loop, not one pop, so a capacity lowered since (a restart resumed with
                // another config) is reached; each window goes once.
                while self.windows.len() >= self.capacity.max(1) {
                    if self.windows.pop_front().is_none() {
                        break;
                    }
                    self.stats.evicted += 1;
                }
                Window {
                    buckets: [(0, 0); BUCKETS],
                    inb: 0,
                    first_ns: ts_ns,
                    last_ns: ts_ns,
                    flows: 0,
                    last_flows: [u64::MAX; 4],
                    dsts: Vec::new(),
                    names: Vec::new(),
                    alerted_ns: None,
                }
            }
        };
        // The bucket of this time: a ring slot reused once its start is a window old. A
        // report older than the bucket its slot holds (a flow's last report, made at its last
        // packet and sent when it idled out, or another worker's lagging one) is a window or
        // more behind bytes already counted: out of the window, it must not overwrite them.
        let slot = ((ts_ns / self.bucket_ns) % BUCKETS as u64) as usize;
        if let Some(b) = w.buckets.get_mut(slot) {
            if b.0 < bucket_start {
                *b = (bucket_start, 0);
            }
            if b.0 == bucket_start {
                b.1 = b.1.saturating_add(out_bytes);
            }
        }
        let horizon = ts_ns.saturating_sub(self.window_ns);
        let total: u64 = w
            .buckets
            .iter()
            .filter(|(t, _)| *t > horizon || horizon == 0)
            .map(|(_, b)| b)
            .sum();
        if w.last_ns.saturating_add(self.window_ns) < ts_ns {
            // Quiet for a whole window: what is shown starts again.
            w.first_ns = ts_ns;
            w.inb = 0;
            w.flows = 0;
            w.dsts.clear();
            w.names.clear();
        }
        w.last_ns = w.last_ns.max(ts_ns);
        w.inb = w.inb.saturating_add(in_bytes);
        if !w.last_flows.contains(&flow_id) {
            w.flows += 1;
            w.last_flows.rotate_right(1);
            w.last_flows[0] = flow_id;
        }
        if w.dsts.len() < MAX_LISTED && !w.dsts.contains(&dst) {
            w.dsts.push(dst);
        }
        if w.names.len() < MAX_LISTED && !w.names.iter().any(|n| n == name) {
            w.names.push(name.to_string());
        }
        let Some(sv) = self.catalogue.service(service).cloned() else {
            self.windows.insert(key, w);
            return;
        };
        let threshold = self.threshold_of(sv.category);
        let quiet = w
            .alerted_ns
            .is_none_or(|t| t.saturating_add(self.window_ns) <= ts_ns);
        if total > threshold && quiet {
            w.alerted_ns = Some(ts_ns);
            self.stats.alerts += 1;
            let window_s = self.window_ns as f64 / 1e9;
            out(LeakAlert {
                id: format!(
                    "cloud_upload-{src}-{}-{ts_ns}",
                    sv.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
                ts_ns,
                detector: Detector::CloudUpload,
                src: Some(src),
                dst: (w.dsts.len() == 1).then(|| w.dsts[0]),
                total_bytes: total,
                in_bytes: w.inb,
                events: w.flows,
                peers: w.dsts.len() as u64,
                first_ns: w.first_ns,
                last_ns: ts_ns,
                fqdns: w.names.clone(),
                threshold_bytes: threshold,
                window_s,
                scope: format!("{}|{}", sv.name, sv.category.name()),
                ..LeakAlert::default()
            });
        }
        self.windows.insert(key, w);
    }
}

impl super::snapshot::Restore for CloudDetector {
    fn checked(self) -> Result<Self, String> {
        Ok(self)
    }

    fn adopt(&mut self, restored: Self) {
        let CloudDetector {
            catalogue: _,
            window_ns: _,
            bucket_ns: _,
            threshold: _,
            by_category: _,
            allowed: _,
            exceptions: _,
            capacity: _,
            windows,
            stats,
        } = restored;
        self.windows = windows;
        self.stats = stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn detector(f: impl FnOnce(&mut CloudConfig)) -> CloudDetector {
        let mut c = CloudConfig::default();
        f(&mut c);
        CloudDetector::new(&c, &[]).unwrap()
    }

    #[test]
    fn names_match_their_service_on_label_boundaries() {
        let c = Catalogue::new(&CloudConfig::default());
        let name = |n: &str| {
            c.lookup(n)
                .and_then(|i| c.service(i))
                .map(|s| s.name.as_str())
        };
        assert_eq!(name("content.dropboxapi.com"), Some("Dropbox"));
        assert_eq!(name("Content.DropboxAPI.com."), Some("Dropbox"));
        assert_eq!(name("my-bucket.s3.amazonaws.com"), Some("Amazon S3"));
        assert_eq!(
            name("acme-backups.blob.core.windows.net"),
            Some("Azure Blob Storage")
        );
        assert_eq!(name("hooks.slack.com"), Some("Slack"));
        assert_eq!(name("github.com"), Some("GitHub"));
        assert_eq!(name("notdropbox.com"), None, "not on a label boundary");
        assert_eq!(name("example.com"), None);
        assert_eq!(name(""), None);
        // Regional S3 endpoints, bucket-style and path-style.
        assert_eq!(name("b.s3.eu-west-1.amazonaws.com"), Some("Amazon S3"));
        assert_eq!(name("s3-eu-west-1.amazonaws.com"), Some("Amazon S3"));
        assert_eq!(name("ec2.eu-west-1.amazonaws.com"), None);
    }

    #[test]
    fn uploads_to_one_service_sum_over_connections_and_downloads_do_not_count() {
        let mut d = detector(|_| {});
        let mut found = Vec::new();
        let src = ip("10.0.0.5");
        // Downloads: a few bytes of requests out, much back.
        for i in 0..100 {
            d.on_volume(
                T0 + i * S,
                1,
                src,
                ip("162.125.1.1"),
                "content.dropboxapi.com",
                10_000,
                5_000_000,
                &mut |a| found.push(a),
            );
        }
        assert!(found.is_empty());
        // Three connections of 8 MB each within ten minutes: 24 MB > 20 MB on the third.
        for (i, flow) in [10u64, 11, 12].iter().enumerate() {
            d.on_volume(
                T0 + 200 * S + i as u64 * 200 * S,
                *flow,
                src,
                ip("162.125.1.2"),
                "content.dropboxapi.com",
                8_000_000,
                10_000,
                &mut |a| found.push(a),
            );
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!(a.detector, Detector::CloudUpload);
        assert_eq!(a.scope, "Dropbox|file_sharing");
        assert_eq!(a.total_bytes, 25_000_000);
        assert_eq!(a.events, 4, "flows: the download and three uploads");
        assert_eq!(a.ts_ns, T0 + 600 * S);
        assert_eq!(d.stats.alerts, 1);
    }

    #[test]
    fn the_window_slides_and_categories_have_their_thresholds() {
        let mut d = detector(|_| {});
        let mut found = Vec::new();
        let src = ip("10.0.0.7");
        // 15 MB an hour apart never sums past 20 MB.
        for h in 0..4u64 {
            d.on_volume(
                T0 + h * 3700 * S,
                h,
                src,
                ip("52.1.1.1"),
                "b.s3.amazonaws.com",
                15_000_000,
                0,
                &mut |a| found.push(a),
            );
        }
        assert!(found.is_empty(), "{found:?}");
        // 1.2 MB to a paste site passes the paste threshold (1 MB).
        d.on_volume(
            T0,
            9,
            src,
            ip("104.20.1.1"),
            "pastebin.com",
            1_200_000,
            0,
            &mut |a| found.push(a),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].threshold_bytes, 1_000_000);
    }

    #[test]
    fn allowed_services_and_sources_never_alert() {
        let mut c = CloudConfig::default();
        c.exceptions.push(crate::config::CloudException {
            sources: vec!["10.0.0.20/32".parse().unwrap()],
            services: vec!["Backblaze B2".into()],
        });
        let mut d = CloudDetector::new(&c, &["Dropbox".to_string()]).unwrap();
        let mut found = Vec::new();
        d.on_volume(
            T0,
            1,
            ip("10.0.0.5"),
            ip("1.1.1.1"),
            "dropbox.com",
            50_000_000,
            0,
            &mut |a| found.push(a),
        );
        d.on_volume(
            T0,
            2,
            ip("10.0.0.20"),
            ip("1.1.1.2"),
            "f000.backblazeb2.com",
            50_000_000,
            0,
            &mut |a| found.push(a),
        );
        assert!(found.is_empty());
        assert_eq!(d.stats.allowed, 2);
        // Another source to B2 is not excepted.
        d.on_volume(
            T0,
            3,
            ip("10.0.0.21"),
            ip("1.1.1.2"),
            "f000.backblazeb2.com",
            50_000_000,
            0,
            &mut |a| found.push(a),
        );
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_late_report_never_overwrites_a_newer_bucket() {
        // A 10-minute window (the TCP idle timeout): a flow that ended idle reports its last
        // bytes at its last packet's time, up to a window late. Its bucket's ring slot holds
        // the newer bucket a window on: that must keep its bytes.
        let mut d = detector(|c| c.window = std::time::Duration::from_secs(600));
        let mut found = Vec::new();
        let src = ip("10.0.0.8");
        let mut report = |d: &mut CloudDetector, ts: u64, flow: u64, bytes: u64| {
            d.on_volume(
                ts,
                flow,
                src,
                ip("162.125.1.3"),
                "content.dropboxapi.com",
                bytes,
                0,
                &mut |a| found.push(a),
            );
        };
        report(&mut d, T0 + 600 * S, 1, 12_000_000);
        report(&mut d, T0, 2, 5_000_000); // late: a window old
        report(&mut d, T0 + 610 * S, 1, 10_000_000);
        assert_eq!(found.len(), 1, "12 + 10 MB within the window");
        assert_eq!(found[0].total_bytes, 22_000_000);
        assert_eq!(found[0].first_ns, T0 + 600 * S);
    }

    #[test]
    fn a_full_table_drops_the_least_recently_active_window() {
        let mut d = detector(|c| c.capacity = 100);
        for i in 0..10_000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            d.on_volume(
                T0 + u64::from(i),
                u64::from(i),
                src,
                ip("1.1.1.1"),
                "mega.nz",
                1_000,
                0,
                &mut |_| {},
            );
            assert!(d.windows.len() <= 100);
        }
        assert_eq!(d.stats.evicted, 10_000 - 100);
    }
}
