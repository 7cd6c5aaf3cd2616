//! DNS transaction records against the two public references in `../shared/pcaps` (the tests
//! skip cleanly when that folder is absent):
//!
//! - Zeek's `dns.log` baselines (`zeek/<case>/baseline/dns.log`). Every row must have an
//!   outflow record with the same (orig_h, orig_p, resp_h, resp_p, proto, trans_id) — Zeek's
//!   originator is our client — with the same query name, query type, rcode and answers:
//!   addresses, names and TXT text (`TXT <len> <string>...`, escaped alike) exactly and in
//!   order, other types by their type, plus the answers' TTLs.
//!   Every outflow record must in turn be some row.
//! - suricata-verify's DNS tests (`suricata-verify/<case>/test.yaml`). Each `checks` filter on
//!   `dns` events is evaluated on the fields outflow models (endpoints, proto, id, query name
//!   and type, rcode, AA/TC/RD/RA, answers' rdata/type/TTL, `grouped.A/AAAA/CNAME/TXT`): the
//!   number of outflow query/response "events" matching it must equal the filter's `count`.
//!   An `alert` filter says that the transaction it names exists, so one with DNS fields must
//!   match at least one outflow event. Fields outflow does not model (`pcap_cnt`, `tx_id`,
//!   `opcode`, `authorities`, `flow.*`, `alert.*`...) are left out of the match and counted,
//!   and filters on other event types (`flow`) or for Suricata < 8 are skipped and counted.
//!
//! Two representation rules apply to every comparison, as documented for `DnsRecord`: Zeek's
//! `query` and outflow's are lowercased (the notify and rrsig traces were sent in mixed
//! case), while Suricata's `rrname` keeps the wire's case, as outflow's `original_query`
//! does; answer names are lowercased by outflow only. And a TXT record is one answer
//! holding all its strings (Suricata 8 logs each character-string of a TXT record as its own
//! answer, so consecutive Suricata TXT entries are matched, string by string, with one
//! outflow record).
//!
//! Where outflow's semantics legitimately differ from a reference, the difference is an entry
//! in [`ZEEK_EXCEPTIONS`] or [`SURICATA_EXCEPTIONS`], keyed by file and row (or filter), with
//! its reason. An exception that no longer applies fails the test, so the tables stay true.
//!
//! The second test checks the DNS detectors against MANIFEST.tsv's ground truth: each tunnel
//! capture raises exactly one `dns_tunnel` alert for the right client and registered domain,
//! and no benign, Zeek or suricata-verify capture raises a DNS alert (but suricata-verify's
//! dns/bug-1158, the dns2tcp session of the tunnel captures, raises that one alert).

mod common;

use outflow::config::Config;
use outflow::correlate::dns::DnsRecord;
use outflow::detect::Detector;
use outflow::dns::extract::MAX_ANSWERS;
use outflow::dns::parser::type_name;
use outflow::output::json::rcode_name;
use outflow::replay::ReplayReport;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// DNS ports for a reference case: 53, plus what the reference itself was told to parse.
fn ports_for(case: &str) -> &'static [u16] {
    match case {
        // Zeek logged mDNS (5353) and LLMNR (5355) queries and responses from this trace;
        // both are DNS wire format, so outflow is configured to parse them too.
        "opt__basic" => &[53, 5353, 5355],
        // suricata-verify runs this one with `detection-ports.dp=5353` (TCP DNS on 5353).
        "dns__dns-incomplete" => &[53, 5353],
        // ...and this one with `dns.tcp.detection-ports.dp=1053`.
        "dns__dns-truncated-rname" => &[53, 1053],
        _ => &[53],
    }
}

fn replay_with_ports(pcap: &Path, ports: &[u16]) -> ReplayReport {
    let mut cfg = Config::default();
    cfg.dns.ports = ports.to_vec();
    common::replay(&cfg, 1, &[pcap.to_path_buf()])
}

fn is_capture(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("pcap" | "pcapng" | "cap")
    )
}

/// The capture files directly in `dir`, sorted.
fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_capture(p))
        .collect();
    v.sort();
    v
}

/// The one capture of a reference case folder.
fn the_capture(dir: &Path) -> PathBuf {
    let v = captures_in(dir);
    assert_eq!(
        v.len(),
        1,
        "{}: expected one capture, found {v:?}",
        dir.display()
    );
    v.into_iter().next().unwrap_or_default()
}

/// Sub-folders of `dir`, sorted.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Record type number of a mnemonic (`A`, `TXT`, `TYPE65534`...).
fn type_number(name: &str) -> Option<u16> {
    if let Some(n) = name.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
        return Some(n);
    }
    (0..=u16::MAX).find(|&t| !type_name(t).is_empty() && type_name(t).eq_ignore_ascii_case(name))
}

/// How outflow writes a type in `<TYPE> <n> bytes`.
fn type_text(t: u16) -> String {
    match type_name(t) {
        "" => format!("TYPE{t}"),
        s => s.to_string(),
    }
}

/// An outflow answer string, classified.
#[derive(Debug, PartialEq)]
enum Ours<'a> {
    Addr(IpAddr),
    Name(&'a str),
    /// TXT/SPF: its character-strings as written (escaped), and whether it was cut.
    Txt {
        ty: &'a str,
        strings: Vec<&'a str>,
        cut: bool,
    },
    /// `<TYPE> <n> bytes`, with the hex of the first bytes for NULL and unknown types.
    Other {
        ty: &'a str,
        bytes: usize,
        hex: Option<&'a str>,
    },
}

/// `<TYPE> <n> bytes[ <hex>[...]]`.
fn other(s: &str) -> Option<Ours<'_>> {
    let (ty, rest) = s.split_once(' ')?;
    let (n, rest) = rest.split_once(" bytes")?;
    let bytes = n.parse().ok()?;
    let hex = match rest.strip_prefix(' ') {
        None if rest.is_empty() => None,
        None => return None,
        Some(h) => {
            let digits = h.strip_suffix("...").unwrap_or(h);
            if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            Some(h)
        }
    };
    Some(Ours::Other { ty, bytes, hex })
}

/// `TXT <len> <string>[ TXT <len> <string>...][ ... (<n> bytes)]`: each string is `len`
/// raw bytes, written as one character, `\\` or `\xNN` each.
fn txt(s: &str) -> Option<Ours<'_>> {
    let ty = s
        .split(' ')
        .next()
        .filter(|t| matches!(*t, "TXT" | "SPF"))?;
    let mut strings = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.strip_prefix(ty)?.strip_prefix(' ')?;
        let (n, tail) = rest.split_once(' ')?;
        let mut left: usize = n.parse().ok()?;
        let mut at = 0;
        let b = tail.as_bytes();
        while left > 0 && at < b.len() {
            at += match (b[at], b.get(at + 1)) {
                (b'\\', Some(b'x')) => 4,
                (b'\\', _) => 2,
                _ => 1,
            };
            left -= 1;
        }
        strings.push(tail.get(..at)?);
        rest = tail.get(at..)?;
        if rest.is_empty() {
            return Some(Ours::Txt {
                ty,
                strings,
                cut: false,
            });
        }
        if rest.starts_with(" ... (") && rest.ends_with(" bytes)") {
            return Some(Ours::Txt {
                ty,
                strings,
                cut: true,
            });
        }
        rest = rest.strip_prefix(' ')?;
    }
}

fn classify(s: &str) -> Ours<'_> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ours::Addr(a);
    }
    if let Some(o) = other(s).or_else(|| txt(s)) {
        return o;
    }
    Ours::Name(s)
}

fn show(r: &DnsRecord) -> String {
    format!(
        "[{} {}:{} -> {}:{} id={} query={:?} qtype={} rcode={:?} answers={:?} ttls={:?} \
         query_seen={} response_seen={}]",
        if r.proto == 6 { "tcp" } else { "udp" },
        r.client,
        r.client_port,
        r.server,
        r.server_port,
        r.id,
        r.query,
        r.qtype,
        r.rcode,
        r.answers,
        r.ttls,
        r.query_seen,
        r.response_seen
    )
}

// ---------------------------------------------------------------------------------------
// Zeek dns.log
// ---------------------------------------------------------------------------------------

/// How outflow legitimately differs from one Zeek dns.log row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ZeekExc {
    /// Outflow has no record for the row (the row is not DNS on a configured port).
    NoRecord,
    /// Outflow's client/server are Zeek's resp/orig.
    Reversed,
    /// Expect this query name instead of Zeek's.
    Query(&'static str),
    /// Expect this query type instead of Zeek's `-`.
    Qtype(u16),
    /// Expect exactly these outflow answers instead of Zeek's (TTLs then not compared).
    Answers(&'static [&'static str]),
    /// Expect only the first [`MAX_ANSWERS`] of Zeek's answers (and TTLs).
    FirstAnswers,
}

struct ZeekException {
    case: &'static str,
    /// 0-based data rows of the case's dns.log.
    rows: &'static [usize],
    exc: ZeekExc,
    reason: &'static str,
}

const ZEEK_EXCEPTIONS: &[ZeekException] = &[
    ZeekException {
        case: "opt__basic",
        rows: &[1, 2],
        exc: ZeekExc::Reversed,
        reason: "mDNS announcement (a response, QR=1, with no query before it) from \
                 fe80::217:f2ff:fed7:cf65 / 141.142.220.50 to the group ff02::fb / 224.0.0.251: \
                 Zeek's originator is the first packet's sender, outflow's client is always the \
                 destination of a response",
    },
    ZeekException {
        case: "opt__basic",
        rows: &[1, 2],
        exc: ZeekExc::Query(""),
        reason: "the announcement has no question section (qdcount 0, so qtype 0 here and `-` \
                 in Zeek); Zeek fills `query` from the first answer's owner name \
                 (gemini._sftp-ssh._tcp.local), outflow's query is the question's name only",
    },
    ZeekException {
        case: "opt__basic",
        rows: &[26, 27, 28, 29, 30, 31, 32, 33],
        exc: ZeekExc::NoRecord,
        reason: "NetBIOS Name Service on UDP 137 (opcode `netbios-query`): Zeek's DNS analyser \
                 also parses NBNS and decodes its first-level-encoded names; NBNS is not DNS \
                 and outflow does not parse port 137",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__binds",
        rows: &[0],
        exc: ZeekExc::FirstAnswers,
        reason: "16 answers (BIND9 signing records, type 65534): outflow keeps the first \
                 MAX_ANSWERS (8) answers per message",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__sshfp",
        rows: &[0],
        exc: ZeekExc::FirstAnswers,
        reason: "9 answers (8 SSHFP + RRSIG): outflow keeps the first MAX_ANSWERS (8)",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__flip",
        rows: &[0],
        exc: ZeekExc::Qtype(1),
        reason: "the trace is the response alone; Zeek never reads the question section of a \
                 response (it takes `query` from the first answer, leaves qtype `-`), outflow \
                 logs the response's question: us.v27.distributed.net A (tshark agrees)",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__multiple-txt-strings",
        rows: &[0],
        exc: ZeekExc::Qtype(16),
        reason: "the query packet has bad IP and UDP checksums (offloading) and Zeek ran \
                 without -C, so it dropped the query and logged the response alone (qtype `-`); \
                 outflow, a mirror-port sensor, does not verify checksums and logs the query's \
                 type, TXT",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__notify",
        rows: &[1],
        exc: ZeekExc::Query("aei.mpg.de"),
        reason: "unsolicited response with no answers (only authority records): Zeek takes no \
                 name from a response's question section and logs `-`; outflow logs the \
                 response's question, aei.mpg.de DS (tshark agrees)",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__notify",
        rows: &[1],
        exc: ZeekExc::Qtype(43),
        reason: "same row: the response's question type is DS (43), which Zeek does not read",
    },
    ZeekException {
        case: "scripts__base__protocols__dns__wks",
        rows: &[0],
        exc: ZeekExc::Answers(&["WKS 8 bytes", "WKS 12 bytes"]),
        reason: "Zeek's dns.log has no WKS answers (its WKS reply event adds nothing to \
                 `answers`); the response carries two WKS records of 8 and 12 bytes (tshark)",
    },
];

struct ZeekRow {
    /// 0-based data row.
    row: usize,
    line: usize,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    proto: u8,
    trans_id: u16,
    query: Option<String>,
    qtype: Option<u16>,
    rcode: Option<u16>,
    answers: Vec<String>,
    ttls: Vec<f64>,
}

fn parse_dns_log(path: &Path) -> Vec<ZeekRow> {
    let text = std::fs::read_to_string(path).expect("read dns.log");
    let mut fields: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let v: HashMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
        let get = |k: &str| -> &str {
            v.get(k)
                .copied()
                .unwrap_or_else(|| panic!("{}:{}: no {k}", path.display(), i + 1))
        };
        let opt = |k: &str| -> Option<&str> {
            match get(k) {
                "-" | "(empty)" => None,
                s => Some(s),
            }
        };
        let num = |k: &str| -> u16 {
            get(k)
                .parse()
                .unwrap_or_else(|_| panic!("{}:{}: {k}", path.display(), i + 1))
        };
        let ip = |k: &str| -> IpAddr {
            get(k)
                .parse()
                .unwrap_or_else(|_| panic!("{}:{}: {k}", path.display(), i + 1))
        };
        let list = |k: &str| -> Vec<String> {
            opt(k)
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default()
        };
        rows.push(ZeekRow {
            row: rows.len(),
            line: i + 1,
            orig: (ip("id.orig_h"), num("id.orig_p")),
            resp: (ip("id.resp_h"), num("id.resp_p")),
            proto: match get("proto") {
                "tcp" => 6,
                "udp" => 17,
                p => panic!("{}:{}: proto {p}", path.display(), i + 1),
            },
            trans_id: num("trans_id"),
            query: opt("query").map(str::to_string),
            qtype: opt("qtype").map(|s| s.parse().expect("qtype")),
            rcode: opt("rcode").map(|s| s.parse().expect("rcode")),
            answers: list("answers"),
            ttls: list("TTLs")
                .iter()
                .map(|t| t.parse::<f64>().expect("TTL"))
                .collect(),
        });
    }
    rows
}

/// Compares one Zeek answer with outflow's; returns what was compared.
fn check_zeek_answer(zeek: &str, ours: &str) -> Result<&'static str, String> {
    let got = classify(ours);
    if let Ok(a) = zeek.parse::<IpAddr>() {
        return if got == Ours::Addr(a) {
            Ok("address")
        } else {
            Err(format!("answer {zeek:?}: got {ours:?}"))
        };
    }
    let is_name = !zeek.contains(' ') && !zeek.contains(':') && zeek.contains('.');
    if is_name {
        return if got == Ours::Name(&zeek.to_ascii_lowercase()) {
            Ok("name")
        } else {
            Err(format!("answer {zeek:?}: got {ours:?}"))
        };
    }
    // Another type: Zeek writes its own text (`DNSKEY 5`, `RRSIG 48 upenn.edu`, `LOC:  18 21
    // 19`, `SSHFP: <hex>`, `NSEC3`, `BIND9 signing signal`, `TXT <len> <string>`); outflow
    // writes `<TYPE> <n> bytes`. The types must agree, and TXT lengths too.
    let token = zeek
        .split(' ')
        .next()
        .unwrap_or_default()
        .trim_end_matches(':');
    let ty = match token {
        // Zeek's name for BIND 9's private signing-state records (type 65534).
        "BIND9" => 65534,
        t => type_number(t).ok_or_else(|| format!("answer {zeek:?}: unknown Zeek type {t:?}"))?,
    };
    if ty == 16 {
        // Zeek's TXT text is outflow's: the same strings, escaped the same way.
        return match got {
            Ours::Txt { cut: false, .. } if zeek == ours => Ok("TXT strings"),
            _ => Err(format!("answer {zeek:?}: got {ours:?}")),
        };
    }
    let Ours::Other { ty: got_ty, .. } = got else {
        return Err(format!("answer {zeek:?}: got {ours:?}"));
    };
    if got_ty != type_text(ty) {
        return Err(format!("answer {zeek:?}: got {ours:?} (type)"));
    }
    Ok("type")
}

#[derive(Default)]
struct ZeekTally {
    logs: usize,
    rows: usize,
    rows_compared: usize,
    rows_no_record: usize,
    records_matched: usize,
    records_total: usize,
    queries: usize,
    /// Of those, queries sent in mixed case (DNS 0x20): `original_query` differs.
    original_case: usize,
    qtypes: usize,
    rcodes: usize,
    answer_lists: usize,
    answers: BTreeMap<&'static str, usize>,
    ttls: usize,
}

fn zeek_exceptions<'a>(
    case: &str,
    row: usize,
    used: &mut BTreeSet<(usize, usize)>,
) -> Vec<(usize, &'a ZeekException)> {
    ZEEK_EXCEPTIONS
        .iter()
        .enumerate()
        .filter(|(_, e)| e.case == case && e.rows.contains(&row))
        .inspect(|(i, _)| {
            used.insert((*i, row));
        })
        .collect()
}

fn compare_zeek_case(
    dir: &Path,
    failures: &mut Vec<String>,
    used: &mut BTreeSet<(usize, usize)>,
    t: &mut ZeekTally,
) {
    let case = file_name(dir);
    let log = dir.join("baseline/dns.log");
    let rows = parse_dns_log(&log);
    let pcap = the_capture(dir);
    let report = replay_with_ports(&pcap, ports_for(&case));
    let records = &report.dns_records;
    let mut taken = vec![false; records.len()];
    t.logs += 1;
    t.rows += rows.len();
    let fail = |failures: &mut Vec<String>, row: &ZeekRow, msg: String| {
        failures.push(format!(
            "zeek/{case}/baseline/dns.log:{} (row {}): {msg}",
            row.line, row.row
        ));
    };

    for row in &rows {
        let exc: Vec<ZeekExc> = zeek_exceptions(&case, row.row, used)
            .iter()
            .map(|(_, e)| e.exc)
            .collect();
        let reversed = exc.contains(&ZeekExc::Reversed);
        let (c, s) = if reversed {
            (row.resp, row.orig)
        } else {
            (row.orig, row.resp)
        };
        // Rows with the same key (a query repeated before its answer, e.g. LLMNR) take the
        // outflow records with that key in order.
        let found = records.iter().enumerate().position(|(i, r)| {
            !taken[i]
                && (r.client, r.client_port) == c
                && (r.server, r.server_port) == s
                && r.proto == row.proto
                && r.id == row.trans_id
        });
        if exc.contains(&ZeekExc::NoRecord) {
            t.rows_no_record += 1;
            if let Some(i) = found {
                fail(
                    failures,
                    row,
                    format!(
                        "excepted as NoRecord, but outflow has {}",
                        show(&records[i])
                    ),
                );
            }
            continue;
        }
        let Some(i) = found else {
            let near: Vec<String> = records
                .iter()
                .filter(|r| r.id == row.trans_id)
                .map(show)
                .collect();
            fail(
                failures,
                row,
                format!(
                    "no outflow record for {}:{} -> {}:{} proto {} id {}{} (same id: {near:?})",
                    c.0,
                    c.1,
                    s.0,
                    s.1,
                    row.proto,
                    row.trans_id,
                    if reversed { " (reversed)" } else { "" }
                ),
            );
            continue;
        };
        taken[i] = true;
        let r = &records[i];
        t.rows_compared += 1;
        let mut errs: Vec<String> = Vec::new();

        // Query name: Zeek `-` means none. Zeek lowercases `query` as outflow does (its
        // `original_query` needs a policy script), so the names must be equal as they are;
        // outflow's `original_query` differs from `query` in ASCII case only.
        let want_query = exc
            .iter()
            .find_map(|e| match e {
                ZeekExc::Query(q) => Some(q.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| row.query.clone().unwrap_or_default());
        t.queries += 1;
        if r.query != want_query {
            errs.push(format!("query: expected {want_query:?}, got {:?}", r.query));
        }
        if r.original_query.to_ascii_lowercase() != r.query {
            errs.push(format!(
                "original_query {:?} is not query {:?} in another case",
                r.original_query, r.query
            ));
        }
        if r.original_query != r.query {
            t.original_case += 1;
        }

        // Query type: Zeek `-` means it saw no question: outflow's qtype is then 0.
        let want_qtype = exc
            .iter()
            .find_map(|e| match e {
                ZeekExc::Qtype(q) => Some(*q),
                _ => None,
            })
            .or(row.qtype)
            .unwrap_or(0);
        t.qtypes += 1;
        if r.qtype != want_qtype {
            errs.push(format!("qtype: expected {want_qtype}, got {}", r.qtype));
        }

        // Rcode: Zeek `-` means no response.
        t.rcodes += 1;
        if r.rcode != row.rcode {
            errs.push(format!(
                "rcode: expected {:?}, got {:?}",
                row.rcode, r.rcode
            ));
        }
        if r.response_seen != row.rcode.is_some() {
            errs.push(format!(
                "response_seen: expected {}, got {}",
                row.rcode.is_some(),
                r.response_seen
            ));
        }

        // Answers and TTLs.
        t.answer_lists += 1;
        let override_answers = exc.iter().find_map(|e| match e {
            ZeekExc::Answers(a) => Some(*a),
            _ => None,
        });
        if let Some(want) = override_answers {
            if r.answers != want {
                errs.push(format!("answers: expected {want:?}, got {:?}", r.answers));
            }
        } else {
            let first = exc.contains(&ZeekExc::FirstAnswers);
            let (want, want_ttls) = if first {
                if row.answers.len() <= MAX_ANSWERS {
                    errs.push(format!(
                        "excepted as FirstAnswers, but Zeek has only {} answers",
                        row.answers.len()
                    ));
                }
                (
                    &row.answers[..row.answers.len().min(MAX_ANSWERS)],
                    &row.ttls[..row.ttls.len().min(MAX_ANSWERS)],
                )
            } else {
                (&row.answers[..], &row.ttls[..])
            };
            if r.answers.len() != want.len() {
                errs.push(format!(
                    "answers: expected {} {want:?}, got {} {:?}",
                    want.len(),
                    r.answers.len(),
                    r.answers
                ));
            } else {
                for (z, o) in want.iter().zip(&r.answers) {
                    match check_zeek_answer(z, o) {
                        Ok(what) => *t.answers.entry(what).or_default() += 1,
                        Err(e) => errs.push(e),
                    }
                }
            }
            let got_ttls: Vec<f64> = r.ttls.iter().map(|&x| f64::from(x)).collect();
            t.ttls += want_ttls.len();
            if got_ttls != want_ttls {
                errs.push(format!("TTLs: expected {want_ttls:?}, got {:?}", r.ttls));
            }
        }
        for e in errs {
            fail(failures, row, format!("{e}; outflow {}", show(r)));
        }
    }
    t.records_matched += taken.iter().filter(|x| **x).count();
    t.records_total += records.len();
    for (r, _) in records.iter().zip(&taken).filter(|(_, t)| !**t) {
        failures.push(format!(
            "zeek/{case}: outflow record {} is in no row of dns.log",
            show(r)
        ));
    }
}

// ---------------------------------------------------------------------------------------
// suricata-verify test.yaml
// ---------------------------------------------------------------------------------------

/// How outflow legitimately differs from one suricata-verify check.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SvExc {
    /// Expect this many outflow events instead of the filter's `count`.
    Count(usize),
    /// Expect no event: outflow's TCP reassembly abandons the stream (and counts it).
    Abandoned,
}

struct SvException {
    case: &'static str,
    /// 0-based index in `checks`.
    filter: usize,
    exc: SvExc,
    reason: &'static str,
}

const SURICATA_EXCEPTIONS: &[SvException] = &[
    SvException {
        case: "dns__dns-udp-eve-log-answer-only",
        filter: 0,
        exc: SvExc::Count(3),
        reason: "the test's suricata.yaml logs responses only (`requests: no`), hence count 0; \
                 the capture has 3 queries and outflow records them",
    },
    SvException {
        case: "dns__dns-udp-eve-log-query-only",
        filter: 1,
        exc: SvExc::Count(6),
        reason: "the test's suricata.yaml logs requests only (`responses: no`), hence 3 dns \
                 events; outflow has the 3 queries and their 3 responses",
    },
    SvException {
        case: "dns__dns-truncated-rname",
        filter: 0,
        exc: SvExc::Abandoned,
        reason: "the request is one 16,773-byte TCP DNS message with 1,500 questions whose \
                 names run to 1,025+ bytes: Suricata logs them truncated to 1,025, but names \
                 over 255 bytes are invalid (RFC 1035 §3.1) and the message is above outflow's \
                 16 KiB TCP message bound, so outflow abandons the stream (counted) and logs \
                 nothing",
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

#[derive(Clone, Debug, Default)]
struct SvAnswer {
    rrtype: Option<String>,
    rdata: Option<String>,
    ttl: Option<u32>,
}

/// A filter's `match`, as far as outflow models it.
#[derive(Debug, Default)]
struct SvView {
    side: Option<Side>,
    /// EVE v2 `answer` events keep the flow's orientation (src = client).
    v2_answer: bool,
    src: Option<IpAddr>,
    src_port: Option<u16>,
    dst: Option<IpAddr>,
    dst_port: Option<u16>,
    proto: Option<u8>,
    id: Option<u16>,
    qname: Option<String>,
    qtype: Option<u16>,
    rcode: Option<String>,
    /// AA/TC/RD/RA bits as outflow keeps them, from `dns.flags`.
    flags: Option<u8>,
    /// Single flag booleans (`dns.rd: true`...): (outflow bit, value).
    bits: Vec<(u8, bool)>,
    answers: BTreeMap<usize, SvAnswer>,
    /// (`A`/`AAAA`/`CNAME`, index, value).
    grouped: Vec<(String, usize, String)>,
    /// Fields mapped onto outflow's record (endpoints included).
    modelled: usize,
    /// Modelled fields that say something about DNS (not endpoints, proto, event_type).
    dns_fields: usize,
    unmodelled: Vec<String>,
}

fn vstr(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => format!("{other:?}"),
    }
}

fn vnum<T: std::str::FromStr>(v: &Value, key: &str) -> T {
    vstr(v)
        .parse()
        .unwrap_or_else(|_| panic!("{key}: not a number: {v:?}"))
}

fn set_side(view: &mut SvView, side: Side, key: &str) {
    if let Some(s) = view.side {
        assert_eq!(s, side, "{key}: contradicts the side already set");
    }
    view.side = Some(side);
}

/// `dns.answers[3].rdata` → (3, "rdata").
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    let (idx, rest) = rest.split_once(']')?;
    Some((idx.parse().ok()?, rest.strip_prefix('.').unwrap_or(rest)))
}

fn build_view(m: &serde_yaml::Mapping) -> SvView {
    let mut v = SvView::default();
    for (k, val) in m {
        let key = vstr(k);
        let s = vstr(val);
        let mut modelled = true;
        let mut dns = true;
        match key.as_str() {
            "event_type" => {
                modelled = false;
                dns = false;
            }
            "src_ip" => (v.src, dns) = (Some(s.parse().expect("src_ip")), false),
            "dest_ip" => (v.dst, dns) = (Some(s.parse().expect("dest_ip")), false),
            "src_port" => (v.src_port, dns) = (Some(vnum(val, &key)), false),
            "dest_port" => (v.dst_port, dns) = (Some(vnum(val, &key)), false),
            "proto" => {
                dns = false;
                v.proto = Some(match s.as_str() {
                    "UDP" => 17,
                    "TCP" => 6,
                    p => panic!("proto {p}"),
                });
            }
            "direction" => match s.as_str() {
                "to_server" => set_side(&mut v, Side::Request, &key),
                "to_client" => set_side(&mut v, Side::Response, &key),
                d => panic!("direction {d}"),
            },
            "dns.type" | "dns.query[0].type" | "dns.answer.type" => match s.as_str() {
                "request" | "query" => set_side(&mut v, Side::Request, &key),
                "response" => set_side(&mut v, Side::Response, &key),
                "answer" => {
                    set_side(&mut v, Side::Response, &key);
                    v.v2_answer = true;
                }
                t => panic!("dns.type {t}"),
            },
            "dns.id" | "dns.query[0].id" | "dns.answer.id" => v.id = Some(vnum(val, &key)),
            "dns.queries[0].rrname"
            | "dns.rrname"
            | "dns.query[0].rrname"
            | "dns.answer.rrname" => v.qname = Some(s),
            "dns.queries[0].rrtype"
            | "dns.rrtype"
            | "dns.query[0].rrtype"
            | "dns.answer.rrtype" => {
                v.qtype = Some(type_number(&s).unwrap_or_else(|| panic!("rrtype {s}")));
            }
            "dns.rcode" | "dns.answer.rcode" => {
                set_side(&mut v, Side::Response, &key);
                v.rcode = Some(s);
            }
            "dns.flags" | "dns.answer.flags" => {
                set_side(&mut v, Side::Response, &key);
                let f = u16::from_str_radix(&s, 16).unwrap_or_else(|_| panic!("flags {s}"));
                v.flags = Some(
                    u8::from(f & 0x0400 != 0) << 3
                        | u8::from(f & 0x0200 != 0) << 2
                        | u8::from(f & 0x0100 != 0) << 1
                        | u8::from(f & 0x0080 != 0),
                );
            }
            "dns.qr" | "dns.answer.qr" => {
                let qr = s == "true";
                set_side(
                    &mut v,
                    if qr { Side::Response } else { Side::Request },
                    &key,
                );
            }
            "dns.aa" | "dns.answer.aa" => v.bits.push((8, s == "true")),
            "dns.tc" | "dns.answer.tc" => v.bits.push((4, s == "true")),
            "dns.rd" | "dns.answer.rd" => v.bits.push((2, s == "true")),
            "dns.ra" | "dns.answer.ra" => v.bits.push((1, s == "true")),
            _ => {
                if let Some((i, field)) = indexed(&key, "dns.answers[") {
                    let a = v.answers.entry(i).or_default();
                    match field {
                        "rdata" => a.rdata = Some(s),
                        "rrtype" => a.rrtype = Some(s),
                        "ttl" => a.ttl = Some(vnum(val, &key)),
                        // The owner name is not kept; the entry still says answer i exists.
                        _ => modelled = false,
                    }
                    if v.side.is_none() {
                        v.side = Some(Side::Response);
                    }
                } else if let Some((ty, rest)) = key
                    .strip_prefix("dns.grouped.")
                    .and_then(|r| r.split_once('['))
                    .filter(|(ty, _)| matches!(*ty, "A" | "AAAA" | "CNAME" | "TXT"))
                {
                    let i: usize = rest
                        .strip_suffix(']')
                        .and_then(|i| i.parse().ok())
                        .unwrap_or_else(|| panic!("{key}"));
                    v.grouped.push((ty.to_string(), i, s));
                    if v.side.is_none() {
                        v.side = Some(Side::Response);
                    }
                } else {
                    modelled = false;
                }
            }
        }
        if modelled {
            v.modelled += 1;
            if dns {
                v.dns_fields += 1;
            }
        } else if key != "event_type" {
            v.unmodelled.push(key);
        }
    }
    // A filter naming a request cannot carry response fields.
    if v.side == Some(Side::Request) && (v.rcode.is_some() || !v.answers.is_empty()) {
        panic!("request filter with response fields: {v:?}");
    }
    v
}

/// Checks Suricata's answers (contiguous from index 0) against outflow's.
fn match_answers(r: &DnsRecord, want: &BTreeMap<usize, SvAnswer>) -> Result<(), String> {
    let sv: Vec<&SvAnswer> = want.values().collect();
    if want.keys().copied().ne(0..want.len()) {
        return Err(format!("answers not contiguous: {:?}", want.keys()));
    }
    let ttl_ok = |a: &SvAnswer, j: usize| a.ttl.is_none() || a.ttl == r.ttls.get(j).copied();
    let (mut i, mut j) = (0usize, 0usize);
    while i < sv.len() {
        let Some(ours) = r.answers.get(j) else {
            if j == MAX_ANSWERS {
                return Ok(()); // outflow keeps the first MAX_ANSWERS
            }
            return Err(format!(
                "answer {i} missing (outflow has {})",
                r.answers.len()
            ));
        };
        let a = sv[i];
        let ty = a.rrtype.as_deref();
        match classify(ours) {
            Ours::Txt {
                ty: "TXT",
                strings,
                cut: false,
            } if matches!(ty, None | Some("TXT")) => {
                // Suricata 8 logs each character-string of a TXT record as an answer.
                for (k, string) in strings.iter().enumerate() {
                    let Some(a) = sv.get(i) else {
                        return Err(format!(
                            "TXT answer {j} ({ours}): Suricata's strings end at string {k}"
                        ));
                    };
                    if !matches!(a.rrtype.as_deref(), None | Some("TXT")) || !ttl_ok(a, j) {
                        return Err(format!("answer {i} {a:?} vs outflow TXT {j} ({ours})"));
                    }
                    if a.rdata.as_deref().is_some_and(|d| d != *string) {
                        return Err(format!(
                            "answer {i} {a:?} vs outflow TXT {j} string {k} {string:?}"
                        ));
                    }
                    i += 1;
                }
            }
            Ours::Addr(addr) => {
                let want_ty = if addr.is_ipv4() { "A" } else { "AAAA" };
                let rdata_ok = a
                    .rdata
                    .as_ref()
                    .is_none_or(|d| d.parse::<IpAddr>().ok() == Some(addr));
                if ty.is_some_and(|t| t != want_ty) || !rdata_ok || !ttl_ok(a, j) {
                    return Err(format!(
                        "answer {i} {a:?} vs outflow {ours} ttl {:?}",
                        r.ttls.get(j)
                    ));
                }
                i += 1;
            }
            Ours::Name(name) => {
                let ty_ok = matches!(
                    ty,
                    None | Some("CNAME" | "NS" | "PTR" | "DNAME" | "MX" | "SRV")
                );
                // Suricata's rdata is the bare target for these; MX and SRV have extra fields.
                let rdata_ok = !matches!(ty, Some("CNAME" | "NS" | "PTR" | "DNAME"))
                    || a.rdata
                        .as_ref()
                        .is_none_or(|d| d.to_ascii_lowercase() == name);
                if !ty_ok || !rdata_ok || !ttl_ok(a, j) {
                    return Err(format!(
                        "answer {i} {a:?} vs outflow {ours} ttl {:?}",
                        r.ttls.get(j)
                    ));
                }
                i += 1;
            }
            // A cut TXT (or SPF) record is matched by its type, as are other types.
            Ours::Other { ty: got, .. } | Ours::Txt { ty: got, .. } => {
                if ty.is_some_and(|t| t != got) || !ttl_ok(a, j) {
                    return Err(format!("answer {i} {a:?} vs outflow {ours}"));
                }
                i += 1;
            }
        }
        j += 1;
    }
    Ok(())
}

fn match_grouped(r: &DnsRecord, grouped: &[(String, usize, String)]) -> Result<(), String> {
    for (ty, i, want) in grouped {
        if ty == "TXT" {
            // Suricata groups every character-string of every TXT record.
            let mut strings = Vec::new();
            let mut cut = false;
            for a in &r.answers {
                if let Ours::Txt {
                    ty: "TXT",
                    strings: s,
                    cut: c,
                } = classify(a)
                {
                    strings.extend(s);
                    cut |= c;
                }
            }
            let ok = match strings.get(*i) {
                Some(got) => got == want,
                None => cut || r.answers.len() >= MAX_ANSWERS,
            };
            if !ok {
                return Err(format!(
                    "grouped.TXT[{i}] = {want:?}: outflow has {strings:?}"
                ));
            }
            continue;
        }
        let of_type: Vec<&String> = r
            .answers
            .iter()
            .filter(|a| match (ty.as_str(), classify(a)) {
                ("A", Ours::Addr(x)) => x.is_ipv4(),
                ("AAAA", Ours::Addr(x)) => x.is_ipv6(),
                ("CNAME", Ours::Name(_)) => true,
                _ => false,
            })
            .collect();
        let ok = match of_type.get(*i) {
            Some(got) if ty == "CNAME" => **got == want.to_ascii_lowercase(),
            Some(got) => got.parse::<IpAddr>().ok() == want.parse::<IpAddr>().ok(),
            None => r.answers.len() >= MAX_ANSWERS,
        };
        if !ok {
            return Err(format!(
                "grouped.{ty}[{i}] = {want:?}: outflow has {of_type:?}"
            ));
        }
    }
    Ok(())
}

/// Whether one side (query or response) of an outflow record is the event a filter names.
fn match_side(r: &DnsRecord, side: Side, v: &SvView) -> Result<(), String> {
    match side {
        Side::Request if !r.query_seen => return Err("no query seen".into()),
        Side::Response if !r.response_seen => return Err("no response seen".into()),
        _ => {}
    }
    // Request events (and EVE v2 answers) go client → server; v3 responses server → client.
    let src_is_client = side == Side::Request || v.v2_answer;
    let (src, dst) = if src_is_client {
        ((r.client, r.client_port), (r.server, r.server_port))
    } else {
        ((r.server, r.server_port), (r.client, r.client_port))
    };
    let endpoint = |want: Option<IpAddr>, wport: Option<u16>, got: (IpAddr, u16)| {
        want.is_none_or(|w| w == got.0) && wport.is_none_or(|p| p == got.1)
    };
    if !endpoint(v.src, v.src_port, src) || !endpoint(v.dst, v.dst_port, dst) {
        return Err("endpoints".into());
    }
    if v.proto.is_some_and(|p| p != r.proto) {
        return Err("proto".into());
    }
    if v.id.is_some_and(|id| id != r.id) {
        return Err(format!("id {:?}", v.id));
    }
    // Suricata logs the name with the wire's case: outflow's `original_query`.
    if v.qname.as_ref().is_some_and(|q| *q != r.original_query) {
        return Err(format!("query {:?}", v.qname));
    }
    if v.qtype.is_some_and(|t| t != r.qtype) {
        return Err(format!("qtype {:?}", v.qtype));
    }
    if let Some(rc) = &v.rcode {
        if r.rcode.map(rcode_name).as_ref() != Some(rc) {
            return Err(format!("rcode {rc}"));
        }
    }
    if side == Side::Response {
        if v.flags.is_some_and(|f| f != r.flags) {
            return Err(format!("flags {:?} (AA TC RD RA bits)", v.flags));
        }
        if let Some((bit, val)) = v.bits.iter().find(|(b, val)| (r.flags & b != 0) != *val) {
            return Err(format!("flag bit {bit} = {val}"));
        }
        match_answers(r, &v.answers)?;
        match_grouped(r, &v.grouped)?;
    }
    Ok(())
}

#[derive(Default)]
struct SvTally {
    tests: usize,
    filters: usize,
    count_filters: usize,
    alert_filters: usize,
    events_matched: usize,
    fields_compared: usize,
    skipped_filters: BTreeMap<String, usize>,
    skipped_fields: BTreeMap<String, usize>,
}

fn evaluate_suricata_case(
    case: &str,
    yaml: &Path,
    pcap: &Path,
    failures: &mut Vec<String>,
    used: &mut BTreeSet<usize>,
    t: &mut SvTally,
) {
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(yaml).expect("read test.yaml"))
        .unwrap_or_else(|e| panic!("{}: {e}", yaml.display()));
    let report = replay_with_ports(pcap, ports_for(case));
    let records = &report.dns_records;
    t.tests += 1;
    let checks = doc
        .get("checks")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    for (n, check) in checks.iter().enumerate() {
        let at = format!("suricata-verify/{case}/test.yaml checks[{n}]");
        let Some(filter) = check.get("filter") else {
            *t.skipped_filters.entry("not a filter".into()).or_default() += 1;
            continue;
        };
        t.filters += 1;
        let skip = |t: &mut SvTally, why: &str| {
            *t.skipped_filters.entry(why.to_string()).or_default() += 1;
        };
        if filter
            .get("requires")
            .and_then(|r| r.get("lt-version"))
            .is_some()
        {
            skip(t, "for Suricata < 8 only (its EVE v2 twin is evaluated)");
            continue;
        }
        let count: usize = filter.get("count").map_or(1, |c| vnum(c, "count"));
        let m = filter
            .get("match")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let event_type = m.get("event_type").map(vstr);
        let has_dns = m.keys().any(|k| vstr(k).starts_with("dns."));
        let alert = match event_type.as_deref() {
            Some("dns") => false,
            None if has_dns => false,
            Some("alert") => true,
            Some(other) => {
                skip(t, &format!("event_type {other}"));
                continue;
            }
            None => {
                skip(t, "no event_type and no dns field");
                continue;
            }
        };
        let view = build_view(&m);
        if alert && (count == 0 || view.dns_fields == 0) {
            skip(
                t,
                if count == 0 {
                    "alert count 0 (about rules)"
                } else {
                    "alert without DNS fields (about rules)"
                },
            );
            continue;
        }
        for f in &view.unmodelled {
            // `dns.answers[3].rrname` → `dns.answers[].rrname`
            let key: String = f.chars().filter(|c| !c.is_ascii_digit()).collect();
            *t.skipped_fields.entry(key).or_default() += 1;
        }
        let sides: &[Side] = match view.side {
            Some(Side::Request) => &[Side::Request],
            Some(Side::Response) => &[Side::Response],
            None => &[Side::Request, Side::Response],
        };
        let mut matched = 0usize;
        let mut misses: Vec<String> = Vec::new();
        for r in records {
            for &side in sides {
                match match_side(r, side, &view) {
                    Ok(()) => matched += 1,
                    Err(e) => misses.push(format!("{side:?} of {}: {e}", show(r))),
                }
            }
        }
        let exc = SURICATA_EXCEPTIONS
            .iter()
            .enumerate()
            .find(|(_, e)| e.case == case && e.filter == n);
        if let Some((i, _)) = exc {
            used.insert(i);
        }
        let detail = || {
            let shown: Vec<&String> = misses.iter().take(6).collect();
            format!("filter {m:?}; outflow misses: {shown:#?}")
        };
        if alert {
            t.alert_filters += 1;
            if matched == 0 {
                failures.push(format!(
                    "{at}: no outflow event for the alert's DNS fields; {}",
                    detail()
                ));
                continue;
            }
        } else {
            t.count_filters += 1;
            let want = match exc.map(|(_, e)| e.exc) {
                Some(SvExc::Count(c)) => c,
                Some(SvExc::Abandoned) => {
                    let ab = report.summary.flows.dns.tcp_abandoned;
                    if ab == 0 {
                        failures.push(format!(
                            "{at}: excepted as Abandoned, but tcp_abandoned is 0"
                        ));
                    }
                    0
                }
                None => count,
            };
            if matched != want {
                failures.push(format!(
                    "{at}: {matched} outflow events match, expected {want}; {}",
                    detail()
                ));
                continue;
            }
        }
        t.events_matched += matched;
        t.fields_compared += view.modelled * matched.max(1);
    }
}

/// MANIFEST.tsv's TCP DNS capture: "ANY query for ripe.net 192.168.11.62 -> 192.168.11.1
/// (14 pkts, 2 query/response pairs)": the same query over UDP, then over TCP (whose
/// response's 2-byte length prefix arrives alone in a 1-byte segment). Answer types per
/// tshark. Returns the number of transactions compared.
fn check_tcp_capture(root: &Path, failures: &mut Vec<String>) -> usize {
    let pcap = root.join("benign/chrissanders_dns_tcp.pcapng");
    if !pcap.is_file() {
        failures.push(format!("{} is missing", pcap.display()));
        return 0;
    }
    let report = replay_with_ports(&pcap, &[53]);
    let want: [(u8, u16, &[&str]); 2] = [
        (17, 0xdf22, &["DNSKEY", "DNSKEY"]),
        (
            6,
            0xb4c3,
            &[
                "DNSKEY", "DNSKEY", "DNSKEY", "DNSKEY", "RRSIG", "DS", "DS", "RRSIG",
            ],
        ),
    ];
    let got = &report.dns_records;
    if got.len() != want.len() {
        failures.push(format!(
            "benign/chrissanders_dns_tcp.pcapng: expected 2 transactions, got {:?}",
            got.iter().map(show).collect::<Vec<_>>()
        ));
        return 0;
    }
    let client: IpAddr = "192.168.11.62"
        .parse()
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let server: IpAddr = "192.168.11.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for ((proto, id, types), r) in want.iter().zip(got) {
        let got_types: Vec<&str> = r
            .answers
            .iter()
            .map(|a| match classify(a) {
                Ours::Other { ty, .. } | Ours::Txt { ty, .. } => ty,
                _ => "?",
            })
            .collect();
        let ok = r.proto == *proto
            && r.id == *id
            && (r.client, r.server, r.server_port) == (client, server, 53)
            && r.query == "ripe.net"
            && r.qtype == 255
            && r.query_seen
            && r.rcode == Some(0)
            && got_types == *types;
        if !ok {
            failures.push(format!(
                "benign/chrissanders_dns_tcp.pcapng: expected proto {proto} id {id} ripe.net ANY \
                 NOERROR {types:?} from {client} to {server}:53, got {}",
                show(r)
            ));
        }
    }
    want.len()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn dns_records_match_zeek_and_suricata() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let mut failures: Vec<String> = Vec::new();

    // Zeek.
    let mut zt = ZeekTally::default();
    let mut zused: BTreeSet<(usize, usize)> = BTreeSet::new();
    for dir in subdirs(&root.join("zeek")) {
        if dir.join("baseline/dns.log").is_file() {
            compare_zeek_case(&dir, &mut failures, &mut zused, &mut zt);
        }
    }
    for (i, e) in ZEEK_EXCEPTIONS.iter().enumerate() {
        for row in e.rows {
            if !zused.contains(&(i, *row)) {
                failures.push(format!(
                    "stale Zeek exception {:?} for {} row {row}: no such row ({})",
                    e.exc, e.case, e.reason
                ));
            }
        }
    }

    // suricata-verify, plus the dns_tunnel copy of bug-1158 if it ever differs.
    let mut st = SvTally::default();
    let mut sused: BTreeSet<usize> = BTreeSet::new();
    let mut yamls: Vec<(String, PathBuf, PathBuf)> = subdirs(&root.join("suricata-verify"))
        .into_iter()
        .filter(|d| d.join("test.yaml").is_file())
        .map(|d| (file_name(&d), d.join("test.yaml"), the_capture(&d)))
        .collect();
    let tunnel_yaml = root.join("dns_tunnel/suricata-verify_bug-1158_dns2tcp.test.yaml");
    if tunnel_yaml.is_file() {
        let same = yamls
            .iter()
            .any(|(_, y, _)| std::fs::read(y).ok() == std::fs::read(&tunnel_yaml).ok());
        if same {
            eprintln!(
                "dns_tunnel/{}: same as suricata-verify/dns__bug-1158, evaluated once",
                file_name(&tunnel_yaml)
            );
        } else {
            yamls.push((
                "dns_tunnel_bug-1158".into(),
                tunnel_yaml.clone(),
                root.join("dns_tunnel/suricata-verify_bug-1158_dns2tcp.pcap"),
            ));
        }
    }
    for (case, yaml, pcap) in &yamls {
        evaluate_suricata_case(case, yaml, pcap, &mut failures, &mut sused, &mut st);
    }
    for (i, e) in SURICATA_EXCEPTIONS.iter().enumerate() {
        if !sused.contains(&i) {
            failures.push(format!(
                "stale Suricata exception {:?} for {} checks[{}] ({})",
                e.exc, e.case, e.filter, e.reason
            ));
        }
    }

    eprintln!(
        "zeek: {} dns.log files, {} rows: {} compared with outflow records ({} of {} outflow \
         records matched), {} excepted as not DNS; compared {} query names ({} sent in mixed \
         case), {} qtypes, {} rcodes, {} answer lists ({:?}), {} TTLs",
        zt.logs,
        zt.rows,
        zt.rows_compared,
        zt.records_matched,
        zt.records_total,
        zt.rows_no_record,
        zt.queries,
        zt.original_case,
        zt.qtypes,
        zt.rcodes,
        zt.answer_lists,
        zt.answers,
        zt.ttls
    );
    eprintln!(
        "suricata-verify: {} tests, {} filters: {} dns count filters and {} alert filters \
         evaluated ({} outflow events matched, {} field comparisons); skipped filters {:?}; \
         unmodelled fields left out {:?}",
        st.tests,
        st.filters,
        st.count_filters,
        st.alert_filters,
        st.events_matched,
        st.fields_compared,
        st.skipped_filters,
        st.skipped_fields
    );
    // Among others, notify (_ACme-ChALLeNGe.Intmail.CbS.mpg.de) and rrsig
    // (virgo.SAS.upenn.edu, 3 rows) were sent in mixed case; Zeek logs them lowercased.
    if zt.original_case < 4 {
        failures.push(format!(
            "zeek: only {} mixed-case queries seen, 4 expected",
            zt.original_case
        ));
    }
    let tcp = check_tcp_capture(&root, &mut failures);
    eprintln!("manifest: {tcp} transactions of benign/chrissanders_dns_tcp.pcapng (UDP + TCP)");
    eprintln!(
        "exceptions: {} Zeek, {} suricata-verify",
        ZEEK_EXCEPTIONS.len(),
        SURICATA_EXCEPTIONS.len()
    );

    assert!(
        failures.is_empty(),
        "{} mismatches with the references:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Not vacuous: these are the numbers of the references as shipped (a few below, so that
    // a reference file added or fixed upstream does not break the test).
    assert!(zt.logs >= 12, "only {} Zeek dns.log files", zt.logs);
    assert!(
        zt.rows_compared >= 40,
        "only {} Zeek rows compared",
        zt.rows_compared
    );
    assert!(
        zt.answers.values().sum::<usize>() >= 60,
        "only {:?} Zeek answers compared",
        zt.answers
    );
    assert!(st.tests >= 17, "only {} suricata-verify tests", st.tests);
    assert!(
        st.count_filters + st.alert_filters >= 180,
        "only {} suricata-verify filters evaluated",
        st.count_filters + st.alert_filters
    );
    assert!(
        st.events_matched >= 180,
        "only {} suricata events matched",
        st.events_matched
    );
}

/// Ground truth from MANIFEST.tsv: (file under dns_tunnel/, client, registered domain).
const TUNNELS: &[(&str, &str, &str)] = &[
    ("elastic_dns-tunnel-iodine.pcap", "10.0.2.30", "pirate.sea"),
    ("dmachard_iodine.pcap", "192.168.1.17", "biillpi.com"),
    ("dmachard_dns2tcp.pcap", "192.168.1.17", "hsc.fr"),
    (
        "suricata-verify_bug-1158_dns2tcp.pcap",
        "10.30.28.90",
        "tunnel.com",
    ),
];

#[test]
fn dns_detectors_match_manifest_ground_truth() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("read MANIFEST.tsv");
    // Every tunnel capture of the manifest is in the table, with the client and domain its
    // ground truth names.
    let mut listed = 0;
    for line in manifest.lines().filter(|l| l.starts_with("dns_tunnel\t")) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, truth) = (cols[1], cols[cols.len() - 1]);
        if !is_capture(Path::new(file)) {
            continue;
        }
        let name = file.trim_start_matches("dns_tunnel/");
        let (_, client, domain) = TUNNELS
            .iter()
            .find(|(f, _, _)| *f == name)
            .unwrap_or_else(|| panic!("{file} of MANIFEST.tsv is not in TUNNELS"));
        assert!(
            truth.contains(client) && truth.contains(domain),
            "{file}: ground truth does not name {client} / {domain}: {truth}"
        );
        listed += 1;
    }
    assert_eq!(listed, TUNNELS.len(), "tunnel captures in MANIFEST.tsv");

    let cfg = Config::default();
    let mut failures: Vec<String> = Vec::new();
    let on_disk = captures_in(&root.join("dns_tunnel"));
    assert_eq!(
        on_disk.len(),
        TUNNELS.len(),
        "captures in dns_tunnel/: {on_disk:?}"
    );
    for pcap in &on_disk {
        let name = file_name(pcap);
        let Some((_, client, domain)) = TUNNELS.iter().find(|(f, _, _)| *f == name) else {
            failures.push(format!("dns_tunnel/{name}: not in TUNNELS"));
            continue;
        };
        let report = common::replay(&cfg, 1, std::slice::from_ref(pcap));
        let tunnels: Vec<_> = report
            .dns_alerts
            .iter()
            .filter(|a| a.detector == Detector::DnsTunnel)
            .collect();
        let ok = tunnels.len() == 1
            && tunnels[0].client.to_string() == *client
            && tunnels[0].domain == *domain;
        if !ok {
            failures.push(format!(
                "dns_tunnel/{name}: expected one dns_tunnel alert for {client} / {domain}, got {:?}",
                tunnels
                    .iter()
                    .map(|a| (a.client, a.domain.as_str(), a.reason))
                    .collect::<Vec<_>>()
            ));
        }
        eprintln!("dns_tunnel/{name}: {} dns alerts", report.dns_alerts.len());
    }

    let mut quiet: Vec<PathBuf> = captures_in(&root.join("benign"));
    for dir in subdirs(&root.join("zeek")) {
        quiet.extend(captures_in(&dir));
    }
    // suricata-verify's cases (MANIFEST.tsv and MANIFEST-wave2.tsv) are benign but one:
    // dns/bug-1158 is the same dns2tcp session as the tunnel capture above.
    let mut sv_tunnels = 0;
    for dir in subdirs(&root.join("suricata-verify")) {
        if file_name(&dir) == "dns__bug-1158" {
            for pcap in captures_in(&dir) {
                let report = common::replay(&cfg, 1, std::slice::from_ref(&pcap));
                let got: Vec<_> = report
                    .dns_alerts
                    .iter()
                    .map(|a| (a.detector, a.client.to_string(), a.domain.clone()))
                    .collect();
                let want = [(
                    Detector::DnsTunnel,
                    "10.30.28.90".to_string(),
                    "tunnel.com".to_string(),
                )];
                if got != want {
                    failures.push(format!("{}: {got:?}", pcap.display()));
                }
                sv_tunnels += 1;
            }
            continue;
        }
        quiet.extend(captures_in(&dir));
    }
    assert_eq!(sv_tunnels, 1, "suricata-verify/dns__bug-1158");
    for pcap in &quiet {
        let report = common::replay(&cfg, 1, std::slice::from_ref(pcap));
        let fired: Vec<_> = report
            .dns_alerts
            .iter()
            .filter(|a| matches!(a.detector, Detector::DnsTunnel | Detector::NxdomainBurst))
            .map(|a| (a.detector, a.client, a.domain.clone(), a.reason))
            .collect();
        if !fired.is_empty() {
            failures.push(format!(
                "{}: DNS alerts on a benign capture: {fired:?}",
                pcap.display()
            ));
        }
    }
    eprintln!(
        "dns detectors: {} tunnel captures, {} benign/zeek/suricata-verify captures checked",
        on_disk.len(),
        quiet.len()
    );
    assert!(
        quiet.len() >= 90,
        "only {} benign/zeek/suricata-verify captures",
        quiet.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// iodine's captures: its probe name carries a Latin-1 byte (`J\xe4germeister`, the
/// resolver's 8-bit check) in mixed case (its case check), and its downstream is NULL rdata.
/// Names keep every byte, escaped as Zeek escapes them; NULL answers are hex of at most 64
/// bytes; no record has a U+FFFD replacement character.
#[test]
fn iodine_names_are_escaped_and_null_rdata_is_hex() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    for (file, domain) in [
        ("dmachard_iodine.pcap", ".t1.biillpi.com"),
        ("elastic_dns-tunnel-iodine.pcap", ".pirate.sea"),
    ] {
        let report = replay_with_ports(&root.join("dns_tunnel").join(file), &[53]);
        let records = &report.dns_records;
        assert!(!records.is_empty(), "{file}: no DNS records");
        let probes: Vec<&DnsRecord> = records
            .iter()
            .filter(|r| r.query.contains("germeister"))
            .collect();
        assert!(!probes.is_empty(), "{file}: no 8-bit probe");
        for r in &probes {
            assert!(
                r.query.contains("-drink-mal-ein-j\\xe4germeister-") && r.query.ends_with(domain),
                "{file}: {:?}",
                r.query
            );
            assert!(
                r.original_query
                    .contains("Aaahhh-Drink-mal-ein-J\\xe4germeister-"),
                "{file}: {:?}",
                r.original_query
            );
        }
        let mut nulls = 0;
        for r in records {
            let text = format!("{} {} {:?}", r.query, r.original_query, r.answers);
            assert!(!text.contains('\u{fffd}'), "{file}: {text}");
            for a in &r.answers {
                let Ours::Other {
                    ty: "NULL",
                    bytes,
                    hex: Some(hex),
                } = classify(a)
                else {
                    continue;
                };
                nulls += 1;
                let shown = bytes.min(64);
                let cut = if bytes > 64 { "..." } else { "" };
                assert_eq!(hex.len(), 2 * shown + cut.len(), "{file}: {a}");
                assert!(hex.ends_with(cut), "{file}: {a}");
            }
        }
        assert!(nulls >= 12, "{file}: {nulls} NULL answers");
        eprintln!(
            "{file}: {} records, {} 8-bit probes, {nulls} NULL answers as hex",
            records.len(),
            probes.len()
        );
    }
}
