//! The monitoring files in deploy/: the Prometheus alerting rules and the Grafana dashboard
//! are well formed, use only the metrics and labels docs/metrics.md documents, and a real
//! sensor exports every one of them. When `promtool` is installed (`make test-deps`) it
//! validates the rules, unit-tests them on synthetic series and parses the dashboard's
//! queries.

mod common;

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const RULES: &str = "deploy/prometheus/outflow-rules.yml";
const DASHBOARD: &str = "deploy/grafana/outflow-dashboard.json";

/// Labels Prometheus attaches to every scraped series itself.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

// ---------------------------------------------------------------------------------------
// The rule file, typed: a missing `for`, severity or summary is a parse error.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: RuleLabels,
    annotations: Annotations,
}

#[derive(Deserialize)]
struct RuleLabels {
    severity: String,
}

#[derive(Deserialize)]
struct Annotations {
    summary: String,
    description: String,
}

fn rules() -> RuleFile {
    let text = std::fs::read_to_string(crate_path(RULES)).expect("read the rule file");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{RULES}: {e}"))
}

fn all_rules(f: &RuleFile) -> impl Iterator<Item = &Rule> {
    f.groups.iter().flat_map(|g| g.rules.iter())
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(crate_path(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every PromQL expression of the dashboard's panels: (panel id, refId, expr).
fn dashboard_exprs(d: &serde_json::Value) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let id = p["id"].as_u64().unwrap_or(0);
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                id,
                t["refId"].as_str().unwrap_or("").to_owned(),
                t["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

/// The `instance` variable's query, `label_values(<metric>, <label>)`: (metric, label).
fn instance_variable(d: &serde_json::Value) -> (String, String) {
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let v = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an `instance` variable");
    assert_eq!(v["type"], "query", "instance variable type");
    assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}");
    let q = v["query"]
        .as_str()
        .expect("instance variable query (string)");
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("instance variable is not label_values(..): {q}"));
    let (m, l) = inner.split_once(',').expect("label_values(metric, label)");
    (m.trim().to_owned(), l.trim().to_owned())
}

// ---------------------------------------------------------------------------------------
// docs/metrics.md: the contract.

#[derive(Debug)]
struct DocMetric {
    /// counter, gauge or summary.
    kind: String,
    /// Label names (the first backticked word of the labels column, if any).
    labels: BTreeSet<String>,
}

fn documented() -> BTreeMap<String, DocMetric> {
    let text = std::fs::read_to_string(crate_path("docs/metrics.md")).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(name) = backticked(cells[0]).into_iter().next() else {
            continue;
        };
        let kind = cells[1].split_whitespace().next().unwrap_or("").to_owned();
        // "`where` = `kernel`, `interface`": the label is the word before `=`.
        let labels = backticked(cells[2]).into_iter().take(1).collect();
        let prev = out.insert(name.clone(), DocMetric { kind, labels });
        assert!(prev.is_none(), "docs/metrics.md lists {name} twice");
    }
    assert!(
        out.len() >= 20,
        "docs/metrics.md: parsed only {} metrics from its table: {:?}",
        out.len(),
        out.keys()
    );
    for (n, m) in &out {
        assert!(
            ["counter", "gauge", "summary"].contains(&m.kind.as_str()),
            "docs/metrics.md: {n} has type {:?}",
            m.kind
        );
    }
    out
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Prometheus durations: [0-9]+ with units y w d h m s ms, each at most once, in that order.

fn prom_duration_ms(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1_000),
    ];
    // Order in which units may appear.
    const ORDER: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last = None::<usize>;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, mult) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        let pos = ORDER.iter().position(|u| u == unit)?;
        if last.is_some_and(|l| l >= pos) {
            return None;
        }
        last = Some(pos);
        total = total.checked_add(n.checked_mul(*mult)?)?;
    }
    Some(total)
}

#[test]
fn prometheus_durations() {
    assert_eq!(prom_duration_ms("0"), Some(0));
    assert_eq!(prom_duration_ms("0s"), Some(0));
    assert_eq!(prom_duration_ms("5m"), Some(300_000));
    assert_eq!(prom_duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(prom_duration_ms("1d2h3m4s5ms"), Some(93_784_005));
    assert_eq!(prom_duration_ms("250ms"), Some(250));
    for bad in [
        "", "m", "5", "5 m", "1.5m", "1m1h", "5m5m", "-1m", "5min", "1s1m",
    ] {
        assert_eq!(prom_duration_ms(bad), None, "{bad:?} accepted");
    }
}

// ---------------------------------------------------------------------------------------
// A small PromQL scanner: enough to find metric selectors, their matchers, the function
// directly around them and the labels of `by (...)` clauses with the metrics they aggregate.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// The text between `{` and `}`.
    Braces(String),
    LParen,
    RParen,
    /// Anything else: numbers, durations, strings, `[5m]`, operators, `$variables`.
    Other,
}

fn lex(expr: &str) -> Vec<Tok> {
    let b = expr.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    // Skips a quoted string starting at `i`; returns the index after its closing quote.
    let skip_string = |mut i: usize| -> usize {
        let q = b[i];
        i += 1;
        while i < b.len() && b[i] != q {
            if b[i] == b'\\' && q != b'`' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' | b'\'' | b'`' => {
                i = skip_string(i);
                out.push(Tok::Other);
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != close {
                    if matches!(b[i], b'"' | b'\'' | b'`') {
                        i = skip_string(i);
                    } else {
                        i += 1;
                    }
                }
                let inner = &expr[start..i.min(b.len())];
                i += 1;
                out.push(if c == b'{' {
                    Tok::Braces(inner.to_owned())
                } else {
                    Tok::Other
                });
            }
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'$' => {
                // A Grafana variable: $name or ${name}.
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
                out.push(Tok::Other);
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Other);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                out.push(Tok::Ident(expr[start..i].to_owned()));
            }
            _ => {
                out.push(Tok::Other);
                i += 1;
            }
        }
    }
    out
}

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OTHER_KEYWORDS: [&str; 7] = ["bool", "and", "or", "unless", "offset", "inf", "nan"];

#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
    /// The function whose argument this selector directly is (`rate` in `rate(x[5m])`).
    func: Option<String>,
}

#[derive(Debug)]
struct ByClause {
    labels: Vec<String>,
    /// Metrics of the aggregated expression.
    metrics: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Scan {
    selectors: Vec<Selector>,
    by: Vec<ByClause>,
    /// `without (...)` is not allowed: it hides which labels survive.
    without: usize,
}

fn matching_paren(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {toks:?}")
}

fn matching_paren_back(toks: &[Tok], close: usize) -> usize {
    let mut depth = 0;
    for j in (0..=close).rev() {
        match toks[j] {
            Tok::RParen => depth += 1,
            Tok::LParen => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {toks:?}")
}

fn idents_in(toks: &[Tok]) -> Vec<String> {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Ident(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn parse_matchers(s: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let label = s[start..i].to_owned();
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let op_start = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = s[op_start..i].to_owned();
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        assert!(
            i < b.len() && matches!(b[i], b'"' | b'\''),
            "matcher without a quoted value in {{{s}}}"
        );
        let q = b[i];
        i += 1;
        let mut value = String::new();
        while i < b.len() && b[i] != q {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
            }
            value.push(b[i] as char);
            i += 1;
        }
        i += 1;
        assert!(
            !label.is_empty() && ["=", "!=", "=~", "!~"].contains(&op.as_str()),
            "bad matcher {label:?} {op:?} in {{{s}}}"
        );
        out.push(Matcher { label, op, value });
    }
    out
}

fn scan(expr: &str) -> Scan {
    let toks = lex(expr);
    let mut scan = Scan::default();
    let mut skip_until = 0; // end of a label list being skipped
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(name) = t else { continue };
        if i < skip_until {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let next = toks.get(i + 1);
        if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
            if next != Some(&Tok::LParen) {
                continue; // group_left without a list
            }
            let close = matching_paren(&toks, i + 1);
            skip_until = close + 1;
            let labels = idents_in(&toks[i + 1..close]);
            if lower == "without" {
                scan.without += 1;
            }
            if lower != "by" {
                continue;
            }
            // Prefix form `sum by (l) (expr)` or postfix form `sum (expr) by (l)`.
            let inner = if toks.get(close + 1) == Some(&Tok::LParen) {
                let end = matching_paren(&toks, close + 1);
                &toks[close + 1..=end]
            } else if i > 0 && toks[i - 1] == Tok::RParen {
                let start = matching_paren_back(&toks, i - 1);
                &toks[start..i]
            } else {
                panic!("`by` without an aggregated expression in {expr}")
            };
            let metrics = metric_selectors(inner)
                .into_iter()
                .map(|s| s.metric)
                .collect();
            scan.by.push(ByClause { labels, metrics });
        }
    }
    scan.selectors = metric_selectors(&toks);
    scan
}

/// The metric selectors of a token sequence (label lists of by/on/... skipped).
fn metric_selectors(toks: &[Tok]) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut skip_until = 0;
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(name) = t else { continue };
        if i < skip_until {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let next = toks.get(i + 1);
        if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
            if next == Some(&Tok::LParen) {
                skip_until = matching_paren(toks, i + 1) + 1;
            }
            continue;
        }
        let aggregation = matches!(next, Some(Tok::Ident(k)) if k == "by" || k == "without");
        if OTHER_KEYWORDS.contains(&lower.as_str()) || next == Some(&Tok::LParen) || aggregation {
            continue; // keyword, function, or aggregation operator (`sum by (..)`)
        }
        let matchers = match next {
            Some(Tok::Braces(s)) => parse_matchers(s),
            _ => Vec::new(),
        };
        let func = match (i.checked_sub(1).map(|j| &toks[j]), i.checked_sub(2)) {
            (Some(Tok::LParen), Some(j)) => match &toks[j] {
                Tok::Ident(f) => Some(f.clone()),
                _ => None,
            },
            _ => None,
        };
        out.push(Selector {
            metric: name.clone(),
            matchers,
            func,
        });
    }
    out
}

#[test]
fn promql_scanner() {
    let s = scan(
        r#"(sum by (instance, worker) (rate(outflow_packets_total{worker!="3", instance=~"$instance"}[$__rate_interval] offset 5m)) == 0) and on (instance) max(outflow_capturing) by (instance) > bool 0.9"#,
    );
    let names: Vec<&str> = s.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["outflow_packets_total", "outflow_capturing"]);
    assert_eq!(
        s.selectors[0].matchers,
        [
            Matcher {
                label: "worker".into(),
                op: "!=".into(),
                value: "3".into()
            },
            Matcher {
                label: "instance".into(),
                op: "=~".into(),
                value: "$instance".into()
            }
        ]
    );
    assert_eq!(s.selectors[0].func.as_deref(), Some("rate"));
    assert_eq!(s.selectors[1].func.as_deref(), Some("max"));
    assert_eq!(s.by.len(), 2);
    assert_eq!(s.by[0].labels, ["instance", "worker"]);
    assert_eq!(
        s.by[0].metrics,
        BTreeSet::from(["outflow_packets_total".to_owned()])
    );
    assert_eq!(s.by[1].labels, ["instance"]);
    assert_eq!(
        s.by[1].metrics,
        BTreeSet::from(["outflow_capturing".to_owned()])
    );
    let s = scan(r#"time() - up{job="outflow"} + absent(nothing_here) * 8"#);
    let names: Vec<&str> = s.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["up", "nothing_here"]);
    assert_eq!(scan("sum without (worker) (x)").without, 1);
}

/// Every expression the monitoring files evaluate, with where it comes from.
fn all_exprs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = all_rules(&rules())
        .map(|r| (format!("rule {}", r.alert), r.expr.clone()))
        .collect();
    for (id, refid, expr) in dashboard_exprs(&dashboard()) {
        out.push((format!("panel {id} target {refid}"), expr));
    }
    out
}

fn is_allowed_metric_name(m: &str) -> bool {
    m == "up"
        || (m.starts_with("outflow_")
            && m.len() > "outflow_".len()
            && m.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'))
}

// ---------------------------------------------------------------------------------------
// Rules.

#[test]
fn rules_are_well_formed() {
    let f = rules();
    assert!(!f.groups.is_empty());
    let mut groups = BTreeSet::new();
    let mut names = BTreeSet::new();
    for g in &f.groups {
        assert!(groups.insert(g.name.as_str()), "group {} twice", g.name);
        assert!(!g.rules.is_empty(), "group {} is empty", g.name);
        for r in &g.rules {
            assert!(names.insert(r.alert.as_str()), "alert {} twice", r.alert);
            assert!(
                r.alert.starts_with("Outflow") && r.alert.chars().all(char::is_alphanumeric),
                "alert name {:?}: use OutflowCamelCase",
                r.alert
            );
            assert!(
                ["critical", "warning", "info"].contains(&r.labels.severity.as_str()),
                "{}: severity {:?}",
                r.alert,
                r.labels.severity
            );
            let for_ms = prom_duration_ms(&r.for_)
                .unwrap_or_else(|| panic!("{}: `for: {}` is not a duration", r.alert, r.for_));
            assert!(
                for_ms <= 3_600_000,
                "{}: `for: {}` is longer than an hour",
                r.alert,
                r.for_
            );
            assert!(!r.expr.trim().is_empty(), "{}: empty expr", r.alert);
            assert!(
                !r.annotations.summary.trim().is_empty()
                    && !r.annotations.description.trim().is_empty(),
                "{}: empty summary or description",
                r.alert
            );
        }
    }
}

/// The Alertmanager severity of the rule for each incident severity: critical and high
/// incidents page, medium ones open a ticket, low ones are info.
fn alertmanager_severity(incident: &str) -> &'static str {
    match incident {
        "critical" | "high" => "critical",
        "medium" => "warning",
        _ => "info",
    }
}

/// Detection alerts follow the incident model: one rule per incident severity, keyed by the
/// `severity` matcher on outflow_incidents_total, with its Alertmanager severity, firing at
/// once on any increase and pointing the analyst at /api/incidents. No rule alerts per
/// detector any more (an exfiltration would page once per detector that saw it).
#[test]
fn one_rule_per_incident_severity() {
    let f = rules();
    let mut by_severity: BTreeMap<String, Vec<&Rule>> = BTreeMap::new();
    for r in all_rules(&f) {
        for s in scan(&r.expr).selectors {
            assert_ne!(
                s.metric, "outflow_alerts_total",
                "{}: detections alert on incidents (outflow_incidents_total), not per detector",
                r.alert
            );
            if s.metric != "outflow_incidents_total" {
                continue;
            }
            let sev: Vec<&Matcher> = s
                .matchers
                .iter()
                .filter(|m| m.label == "severity")
                .collect();
            assert!(
                sev.len() == 1 && sev[0].op == "=",
                "{}: select one incident severity with severity=\"...\"",
                r.alert
            );
            by_severity.entry(sev[0].value.clone()).or_default().push(r);
        }
    }
    let expected: BTreeSet<String> = outflow::correlate::incident::Severity::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    assert_eq!(
        by_severity.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "incident severities with a rule vs Severity::ALL"
    );
    for (sev, rs) in &by_severity {
        assert_eq!(rs.len(), 1, "severity {sev}: {} rules", rs.len());
        let r = rs[0];
        assert_eq!(
            r.labels.severity,
            alertmanager_severity(sev),
            "{}: Alertmanager severity for {sev} incidents",
            r.alert
        );
        assert!(
            r.alert.starts_with("OutflowIncident"),
            "{}: name incident rules OutflowIncident<Severity>",
            r.alert
        );
        assert!(
            r.expr.contains("increase(") && r.expr.contains("> 0"),
            "{}: fire on any increase: {}",
            r.alert,
            r.expr
        );
        let d = &r.annotations.description;
        assert!(
            d.contains(&format!("GET /api/incidents?severity={sev}&state=open")),
            "{}: the description must point to /api/incidents?severity={sev}&state=open",
            r.alert
        );
        assert!(
            d.contains("/api/alerts"),
            "{}: the description must say where the per-detector findings are",
            r.alert
        );
        assert_eq!(
            prom_duration_ms(&r.for_),
            Some(0),
            "{}: a detection fires at once",
            r.alert
        );
    }
}

/// Alerts are per sensor: every aggregation keeps `instance` and sums `worker` away.
#[test]
fn rules_keep_instance_and_drop_worker() {
    let docs = documented();
    let per_worker: BTreeSet<&str> = docs
        .iter()
        .filter(|(_, d)| d.labels.contains("worker"))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(per_worker.contains("outflow_packets_total"));
    for r in all_rules(&rules()) {
        let s = scan(&r.expr);
        assert_eq!(s.without, 0, "{}: use `by`, not `without`", r.alert);
        for by in &s.by {
            assert!(
                by.labels.iter().any(|l| l == "instance"),
                "{}: `by ({})` drops instance",
                r.alert,
                by.labels.join(", ")
            );
            assert!(
                !by.labels.iter().any(|l| l == "worker"),
                "{}: `by ({})` keeps worker",
                r.alert,
                by.labels.join(", ")
            );
        }
        // A worker-labelled metric outside any aggregation would alert once per worker.
        for sel in &s.selectors {
            if per_worker.contains(sel.metric.as_str()) {
                assert!(
                    s.by.iter().any(|b| b.metrics.contains(&sel.metric)),
                    "{}: {} is per worker and must be aggregated",
                    r.alert,
                    sel.metric
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dashboard.

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(
        instance_variable(&d),
        ("outflow_build_info".to_owned(), "instance".to_owned())
    );

    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 15, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for p in panels {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without a numeric id: {p}"));
        assert!(ids.insert(id), "panel id {id} twice");
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.trim().is_empty(), "panel {id} has no title");
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap_or("")),
            "panel {id} ({title}): type {}",
            p["type"]
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "panel {id}");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {id}");

        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("panel {id} ({title}): gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id} ({title}): {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }

        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} ({title}) has no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "panel {id} ({title}): empty expr");
            let refid = t["refId"].as_str().unwrap_or("");
            assert!(
                !refid.is_empty() && refs.insert(refid),
                "panel {id}: refId {refid:?}"
            );
            assert!(
                t["legendFormat"].as_str().is_some_and(|l| !l.is_empty()),
                "panel {id} target {refid}: legendFormat"
            );
            // Every selector follows the instance variable.
            for s in scan(expr).selectors {
                assert!(
                    s.matchers
                        .iter()
                        .any(|m| m.label == "instance" && m.op == "=~" && m.value == "$instance"),
                    "panel {id} ({title}): {} ignores $instance in {expr}",
                    s.metric
                );
            }
        }
    }
}

/// The dashboard shows every documented metric.
#[test]
fn dashboard_covers_every_documented_metric() {
    let used: BTreeSet<String> = dashboard_exprs(&dashboard())
        .iter()
        .flat_map(|(_, _, e)| scan(e).selectors)
        .map(|s| s.metric)
        .collect();
    let missing: Vec<String> = documented()
        .into_keys()
        .filter(|m| !used.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics of docs/metrics.md on no panel: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Both files against the contract.

/// Every metric is `up` or documented; every label a matcher or a `by` clause names is one
/// the metric has; counters only appear under rate()/increase(), gauges never do.
#[test]
fn monitoring_uses_only_documented_metrics_and_labels() {
    let docs = documented();
    let mut exprs = all_exprs();
    let (var_metric, _) = instance_variable(&dashboard());
    exprs.push(("instance variable".into(), var_metric));
    let mut used = BTreeSet::new();
    for (origin, expr) in &exprs {
        let s = scan(expr);
        assert!(
            !s.selectors.is_empty(),
            "{origin}: no metric found in {expr}"
        );
        for sel in &s.selectors {
            assert!(
                is_allowed_metric_name(&sel.metric),
                "{origin}: {} is neither an outflow_ metric nor `up`",
                sel.metric
            );
            used.insert(sel.metric.clone());
            let (kind, labels) = match docs.get(&sel.metric) {
                Some(d) => (d.kind.as_str(), &d.labels),
                None if sel.metric == "up" => ("gauge", &BTreeSet::new()),
                None => panic!("{origin}: {} is not in docs/metrics.md", sel.metric),
            };
            for m in &sel.matchers {
                assert!(
                    TARGET_LABELS.contains(&m.label.as_str()) || labels.contains(&m.label),
                    "{origin}: {} has no label {:?} (documented: {labels:?})",
                    sel.metric,
                    m.label
                );
            }
            let rated = matches!(sel.func.as_deref(), Some("rate" | "irate" | "increase"));
            if kind == "counter" {
                assert!(
                    rated,
                    "{origin}: counter {} outside rate()/increase()",
                    sel.metric
                );
            } else {
                assert!(
                    !rated,
                    "{origin}: {} {} under {:?}",
                    kind, sel.metric, sel.func
                );
            }
        }
        for by in &s.by {
            for l in &by.labels {
                if TARGET_LABELS.contains(&l.as_str()) {
                    continue;
                }
                for m in &by.metrics {
                    let labels = docs.get(m).map(|d| &d.labels);
                    assert!(
                        labels.is_some_and(|ls| ls.contains(l)),
                        "{origin}: `by (.. {l} ..)` but {m} has no label {l} (documented: {labels:?})"
                    );
                }
            }
        }
    }
    assert!(used.contains("up"), "no rule or panel watches `up`");
}

// ---------------------------------------------------------------------------------------
// promtool.

/// `promtool` on PATH, or the one `make test-deps` extracts into target/tools.
fn promtool() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/promtool");
    for p in [PathBuf::from("promtool"), local] {
        if let Ok(o) = Command::new(&p).arg("--version").output() {
            if o.status.success() {
                return Some(p);
            }
        }
    }
    eprintln!("skipping: promtool is not installed (make test-deps fetches it into target/tools)");
    None
}

fn run_promtool(args: &[&std::ffi::OsStr]) {
    let tool = promtool().expect("promtool");
    let out = Command::new(tool)
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {:?} failed:\n{}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_rules() {
    if promtool().is_none() {
        return;
    }
    let rules = crate_path(RULES);
    run_promtool(&["check".as_ref(), "rules".as_ref(), rules.as_os_str()]);
}

/// The dashboard's queries parse as PromQL once Grafana's variables are substituted
/// (checked as recording rules).
#[test]
fn promtool_parses_dashboard_queries() {
    if promtool().is_none() {
        return;
    }
    let rules: Vec<serde_json::Value> = dashboard_exprs(&dashboard())
        .into_iter()
        .map(|(id, refid, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "6h")
                .replace("$instance", ".+");
            serde_json::json!({ "record": format!("dashboard:panel{id}_{refid}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    run_promtool(&["check".as_ref(), "rules".as_ref(), path.as_os_str()]);
}

/// `promtool test rules`: on synthetic series, exactly the expected alerts fire, with the
/// expected labels (worker summed away, instance kept) and not before their `for`.
#[test]
fn promtool_unit_tests_rules() {
    if promtool().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outflow-rules-test.yml");
    let text = RULE_TESTS.replace("@RULES@", &crate_path(RULES).display().to_string());
    std::fs::write(&path, text).unwrap();
    run_promtool(&["test".as_ref(), "rules".as_ref(), path.as_os_str()]);
}

const RULE_TESTS: &str = r#"
rule_files: ["@RULES@"]
evaluation_interval: 1m
tests:
  # Detections: the first increment of an incident severity counter that starts at 0 fires
  # at once, per instance, with that severity's Alertmanager severity (the metric's own
  # `severity` label is aggregated away); 5 minutes later it resolves. s1's incident opened
  # high and escalated to critical: both rules fire. s2 has a low and a medium incident.
  # Findings per detector (outflow_alerts_total) fire nothing.
  - interval: 1m
    input_series:
      - {series: 'up{job="outflow",instance="s1"}', values: '1x12'}
      - {series: 'up{job="outflow",instance="s2"}', values: '1x12'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s1",severity="low"}', values: '0x12'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s1",severity="medium"}', values: '0x12'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s1",severity="high"}', values: '0 0 0 1x9'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s1",severity="critical"}', values: '0 0 0 0 1x8'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s2",severity="low"}', values: '0 0 0 1x9'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s2",severity="medium"}', values: '0 0 0 2x9'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s2",severity="high"}', values: '0x12'}
      - {series: 'outflow_incidents_total{job="outflow",instance="s2",severity="critical"}', values: '0x12'}
      - {series: 'outflow_alerts_total{job="outflow",instance="s1",detector="data_leak"}', values: '0 0 0 1x9'}
      - {series: 'outflow_alerts_total{job="outflow",instance="s1",detector="large_outbound_transfer"}', values: '0 0 0 3x9'}
      - {series: 'outflow_alerts_total{job="outflow",instance="s2",detector="asymmetric_upload"}', values: '0 0 0 2x9'}
    promql_expr_test:
      - expr: ALERTS
        eval_time: 2m
        exp_samples: []
      - expr: ALERTS
        eval_time: 3m
        exp_samples:
          - {labels: 'ALERTS{alertname="OutflowIncidentHigh",alertstate="firing",instance="s1",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentMedium",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentLow",alertstate="firing",instance="s2",severity="info"}', value: 1}
      - expr: ALERTS
        eval_time: 4m
        exp_samples:
          - {labels: 'ALERTS{alertname="OutflowIncidentCritical",alertstate="firing",instance="s1",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentHigh",alertstate="firing",instance="s1",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentMedium",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentLow",alertstate="firing",instance="s2",severity="info"}', value: 1}
      - expr: ALERTS
        eval_time: 11m
        exp_samples: []

  # Health: s1 is healthy (its alert store full and turning over, its DNS windows evicting
  # only cold pairs: neither alerts), s2 has every problem, s3 stops answering, s4 stops
  # capturing.
  - interval: 1m
    input_series:
      - {series: 'up{job="outflow",instance="s1"}', values: '1x20'}
      - {series: 'up{job="outflow",instance="s2"}', values: '1x20'}
      - {series: 'up{job="outflow",instance="s3"}', values: '1 1 1 0x17'}
      - {series: 'up{job="outflow",instance="s4"}', values: '1x20'}
      - {series: 'outflow_capturing{job="outflow",instance="s1"}', values: '1x20'}
      - {series: 'outflow_capturing{job="outflow",instance="s2"}', values: '1x20'}
      - {series: 'outflow_capturing{job="outflow",instance="s3"}', values: '1 1 1'}
      - {series: 'outflow_capturing{job="outflow",instance="s4"}', values: '1 1 0x18'}
      - {series: 'outflow_packets_total{job="outflow",instance="s1",worker="0"}', values: '0+100x20'}
      - {series: 'outflow_packets_total{job="outflow",instance="s1",worker="1"}', values: '0x20'}
      - {series: 'outflow_packets_total{job="outflow",instance="s2",worker="0"}', values: '5x20'}
      - {series: 'outflow_packets_total{job="outflow",instance="s2",worker="1"}', values: '7x20'}
      - {series: 'outflow_packets_total{job="outflow",instance="s3",worker="0"}', values: '0 0 0'}
      - {series: 'outflow_packets_total{job="outflow",instance="s4",worker="0"}', values: '3x20'}
      - {series: 'outflow_workers{job="outflow",instance="s1"}', values: '2x20'}
      - {series: 'outflow_workers_alive{job="outflow",instance="s1"}', values: '2x20'}
      - {series: 'outflow_workers{job="outflow",instance="s2"}', values: '4x20'}
      - {series: 'outflow_workers_alive{job="outflow",instance="s2"}', values: '4 4 3x18'}
      - {series: 'outflow_kernel_drops_total{job="outflow",instance="s1",where="kernel"}', values: '0x20'}
      - {series: 'outflow_kernel_drops_total{job="outflow",instance="s2",where="kernel"}', values: '0+10x20'}
      - {series: 'outflow_kernel_drops_total{job="outflow",instance="s2",where="interface"}', values: '0x20'}
      - {series: 'outflow_internal_drops_total{job="outflow",instance="s1",reason="worker_queue"}', values: '0x20'}
      - {series: 'outflow_internal_drops_total{job="outflow",instance="s2",reason="alert_queue"}', values: '0+1x20'}
      - {series: 'outflow_table_entries{job="outflow",instance="s1",table="flows"}', values: '10x20'}
      - {series: 'outflow_table_capacity{job="outflow",instance="s1",table="flows"}', values: '100x20'}
      - {series: 'outflow_table_entries{job="outflow",instance="s2",table="flows"}', values: '95x20'}
      - {series: 'outflow_table_capacity{job="outflow",instance="s2",table="flows"}', values: '100x20'}
      - {series: 'outflow_table_entries{job="outflow",instance="s2",table="dns_names"}', values: '5x20'}
      - {series: 'outflow_table_capacity{job="outflow",instance="s2",table="dns_names"}', values: '100x20'}
      - {series: 'outflow_table_entries{job="outflow",instance="s2",table="leak_hosts"}', values: '0x20'}
      - {series: 'outflow_table_capacity{job="outflow",instance="s2",table="leak_hosts"}', values: '0x20'}
      - {series: 'outflow_table_evictions_total{job="outflow",instance="s1",table="flows"}', values: '0x20'}
      - {series: 'outflow_table_evictions_total{job="outflow",instance="s2",table="dns_names"}', values: '0+3x20'}
      - {series: 'outflow_table_entries{job="outflow",instance="s1",table="alert_store"}', values: '100x20'}
      - {series: 'outflow_table_capacity{job="outflow",instance="s1",table="alert_store"}', values: '100x20'}
      - {series: 'outflow_table_evictions_total{job="outflow",instance="s1",table="alert_store"}', values: '0+5x20'}
      - {series: 'outflow_dns_pair_evictions_total{job="outflow",instance="s1",reason="cold"}', values: '0+100x20'}
      - {series: 'outflow_dns_pair_evictions_total{job="outflow",instance="s1",reason="hot"}', values: '0x20'}
      - {series: 'outflow_dns_pair_evictions_total{job="outflow",instance="s2",reason="hot"}', values: '0x15 4x5'}
      - {series: 'outflow_incidents_evicted_total{job="outflow",instance="s1"}', values: '0x20'}
      - {series: 'outflow_incidents_evicted_total{job="outflow",instance="s2"}', values: '0x15 3x5'}
      - {series: 'outflow_slice_write_errors_total{job="outflow",instance="s1"}', values: '0x20'}
      - {series: 'outflow_slice_write_errors_total{job="outflow",instance="s2"}', values: '0x15 2x4'}
      - {series: 'outflow_sink_up{job="outflow",instance="s1",sink="file"}', values: '1x20'}
      - {series: 'outflow_sink_up{job="outflow",instance="s2",sink="syslog"}', values: '1 1 0x18'}
      - {series: 'outflow_sink_dropped_total{job="outflow",instance="s1",sink="file"}', values: '0x20'}
      - {series: 'outflow_sink_dropped_total{job="outflow",instance="s2",sink="syslog"}', values: '0x15 1x4'}
      - {series: 'outflow_detection_latency_seconds{job="outflow",instance="s1",quantile="0.5"}', values: '0.001x20'}
      - {series: 'outflow_detection_latency_seconds{job="outflow",instance="s1",quantile="0.99"}', values: '0.01x20'}
      - {series: 'outflow_detection_latency_seconds{job="outflow",instance="s2",quantile="0.5"}', values: '0.1x20'}
      - {series: 'outflow_detection_latency_seconds{job="outflow",instance="s2",quantile="0.99"}', values: '7x20'}
    promql_expr_test:
      - expr: ALERTS{alertstate="firing"}
        eval_time: 1m
        exp_samples: []
      - expr: ALERTS{alertstate="firing"}
        eval_time: 20m
        exp_samples:
          - {labels: 'ALERTS{alertname="OutflowDown",alertstate="firing",instance="s3",job="outflow",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowCaptureStopped",alertstate="firing",instance="s4",job="outflow",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowNoPackets",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowWorkersDied",alertstate="firing",instance="s2",job="outflow",severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowKernelDrops",alertstate="firing",instance="s2",where="kernel",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowInternalDrops",alertstate="firing",instance="s2",reason="alert_queue",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowTableNearCapacity",alertstate="firing",instance="s2",table="flows",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowTableEvictions",alertstate="firing",instance="s2",table="dns_names",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowDnsTunnelStateEvicted",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowIncidentsEvicted",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowSliceWriteErrors",alertstate="firing",instance="s2",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowSinkDown",alertstate="firing",instance="s2",job="outflow",sink="syslog",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowSinkDroppingAlerts",alertstate="firing",instance="s2",sink="syslog",severity="warning"}', value: 1}
          - {labels: 'ALERTS{alertname="OutflowDetectionLatencyHigh",alertstate="firing",instance="s2",severity="warning"}', value: 1}

  # No target in the job at all.
  - interval: 1m
    input_series:
      - {series: 'up{job="node",instance="n1"}', values: '1x12'}
    promql_expr_test:
      - expr: ALERTS{alertstate="firing"}
        eval_time: 9m
        exp_samples: []
      - expr: ALERTS{alertstate="firing"}
        eval_time: 11m
        exp_samples:
          - {labels: 'ALERTS{alertname="OutflowTargetMissing",alertstate="firing",job="outflow",severity="warning"}', value: 1}
"#;

// ---------------------------------------------------------------------------------------
// A real sensor.

/// Replays the demo capture with the HTTP server on, scrapes /metrics without a token, and
/// checks that every metric the rules and the dashboard use is exported, that every label
/// their `by` clauses and matchers name is on those samples, and that every label value
/// they select with `=` (each incident severity, `update="opened"`, `table="flows"`,
/// `quantile="0.99"`...) exists, so that increase() sees the very first incident of each
/// severity.
#[test]
fn sensor_exports_what_the_monitoring_uses() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.json");
    let pcap = crate_path("pcaps/demo.pcap");
    let sensor = common::Sensor::start(&[
        "replay",
        "--http",
        "127.0.0.1:0",
        "--serve",
        "--alerts-out",
        alerts.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]);
    sensor.wait_finished();
    let (status, body) = sensor.get("/metrics");
    assert_eq!(status, 200, "GET /metrics without a token: {body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("parse /metrics");
    let mut families: BTreeMap<&str, Vec<&prometheus_parse::Sample>> = BTreeMap::new();
    for s in &scrape.samples {
        families.entry(s.metric.as_str()).or_default().push(s);
    }
    let has_label = |s: &prometheus_parse::Sample, l: &str| {
        s.labels.get(l).is_some()
            || (l == "quantile" && matches!(s.value, prometheus_parse::Value::Summary(_)))
    };
    let has_value = |s: &prometheus_parse::Sample, l: &str, v: &str| {
        if s.labels.get(l) == Some(v) {
            return true;
        }
        match (&s.value, l, v.parse::<f64>()) {
            (prometheus_parse::Value::Summary(qs), "quantile", Ok(q)) => {
                qs.iter().any(|c| c.quantile == q)
            }
            _ => false,
        }
    };

    let mut exprs = all_exprs();
    let (var_metric, _) = instance_variable(&dashboard());
    exprs.push(("instance variable".into(), var_metric));
    let mut missing = BTreeSet::new();
    let mut problems = Vec::new();
    for (origin, expr) in &exprs {
        let s = scan(expr);
        for sel in &s.selectors {
            if sel.metric == "up" {
                continue; // Prometheus's own
            }
            let Some(samples) = families.get(sel.metric.as_str()) else {
                missing.insert(sel.metric.clone());
                continue;
            };
            for m in &sel.matchers {
                if TARGET_LABELS.contains(&m.label.as_str()) {
                    continue;
                }
                if let Some(bad) = samples.iter().find(|x| !has_label(x, &m.label)) {
                    problems.push(format!(
                        "{origin}: a {} sample lacks label {} ({})",
                        sel.metric, m.label, bad.labels
                    ));
                }
                if m.op == "=" && !samples.iter().any(|x| has_value(x, &m.label, &m.value)) {
                    problems.push(format!(
                        "{origin}: no {}{{{}=\"{}\"}} sample",
                        sel.metric, m.label, m.value
                    ));
                }
            }
        }
        for by in &s.by {
            for l in by
                .labels
                .iter()
                .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
            {
                for m in &by.metrics {
                    let Some(samples) = families.get(m.as_str()) else {
                        continue; // reported as missing above
                    };
                    if let Some(bad) = samples.iter().find(|x| !has_label(x, l)) {
                        problems.push(format!(
                            "{origin}: `by (.. {l} ..)` but a {m} sample lacks {l} ({})",
                            bad.labels
                        ));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics used by deploy/ but not exported by the sensor: {missing:?}\nexported: {:?}",
        families.keys().collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
