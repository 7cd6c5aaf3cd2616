//! Names from clients' first bytes (TLS SNI, JA4; HTTP method and Host) against the public
//! references in `../shared/pcaps`: every connection of Zeek's `ssl.log` / `http.log`
//! baselines, and suricata-verify's `tls.sni` / `tls.ja4` checks.

mod common;

use outflow::config::Config;
use outflow::flow::FlowRecord;
use std::path::{Path, PathBuf};

/// Rows of a Zeek log as (field → value) maps.
fn zeek_log(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut fields: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').map(str::to_string).collect();
        } else if !line.starts_with('#') && !fields.is_empty() {
            rows.push(
                fields
                    .iter()
                    .cloned()
                    .zip(line.split('\t').map(str::to_string))
                    .collect(),
            );
        }
    }
    rows
}

fn capture_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".pcap") || n.ends_with(".pcapng") || n.ends_with(".pcap.gz")
        })
        .expect("a capture next to the baseline")
}

fn flow<'a>(
    flows: &'a [FlowRecord],
    row: &std::collections::HashMap<String, String>,
) -> Option<&'a FlowRecord> {
    let ip = |k: &str| row[k].parse::<std::net::IpAddr>().unwrap();
    let port = |k: &str| row[k].parse::<u16>().unwrap();
    flows.iter().find(|r| {
        r.orig_addr.to_ip(r.ipv6) == ip("id.orig_h")
            && r.resp_addr.to_ip(r.ipv6) == ip("id.resp_h")
            && r.orig_port == port("id.orig_p")
            && r.resp_port == port("id.resp_p")
    })
}

fn text(b: Option<&[u8]>) -> String {
    b.map_or("-".into(), |b| String::from_utf8_lossy(b).into_owned())
}

/// Connections where outflow's name may differ from Zeek's, with the reason. The test
/// fails if one of them matches after all (the exception no longer applies).
const EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn names_match_zeek_ssl_and_http_logs() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let (mut checked, mut excepted) = (0, 0);
    let mut bad = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("zeek"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (ssl, http) = (dir.join("baseline/ssl.log"), dir.join("baseline/http.log"));
        let quic = dir.join("baseline/quic.log");
        if !ssl.exists() && !http.exists() && !quic.exists() {
            continue;
        }
        let rep = common::replay(&Config::default(), 1, &[capture_in(&dir)]);
        let except = EXCEPTIONS.iter().find(|(c, _)| *c == case);
        let mut check = |what: String, ok: bool| match (ok, except) {
            (true, None) => checked += 1,
            (false, Some(_)) => excepted += 1,
            (true, Some((_, why))) => bad.push(format!(
                "{case}: exception '{why}' no longer applies: {what}"
            )),
            (false, None) => bad.push(format!("{case}: {what}")),
        };
        if ssl.exists() {
            for row in zeek_log(&ssl) {
                // No ClientHello read (Zeek's `-`): a STARTTLS hello follows the IMAP
                // exchange, past the first client bytes this tap reads.
                let got = flow(&rep.flows, &row)
                    .map(|r| text(r.names().and_then(|n| n.server_name.get())));
                let want = row["server_name"].clone();
                check(
                    format!(
                        "ssl {}:{} server_name zeek {want} outflow {got:?}",
                        row["id.orig_h"], row["id.orig_p"]
                    ),
                    got.as_deref() == Some(want.as_str()),
                );
            }
        }
        if quic.exists() {
            // The QUIC tap: the ClientHello decrypted from the client's Initials.
            for row in zeek_log(&quic) {
                let got = flow(&rep.flows, &row).and_then(|r| {
                    let n = r.names()?;
                    Some((text(n.server_name.get()), text(n.alpn.get()), n.quic))
                });
                let want = (
                    row["server_name"].clone(),
                    row["client_protocol"].clone(),
                    true,
                );
                check(
                    format!(
                        "quic {}:{} zeek {want:?} outflow {got:?}",
                        row["id.orig_h"], row["id.orig_p"]
                    ),
                    got.as_ref() == Some(&want),
                );
            }
        }
        if http.exists() {
            for row in zeek_log(&http) {
                // Only a connection's first request is read (trans_depth 1).
                if row["trans_depth"] != "1" {
                    continue;
                }
                let got = flow(&rep.flows, &row).and_then(|r| {
                    r.names()
                        .map(|n| (text(n.http_method.get()), text(n.http_host.get())))
                });
                let want = (row["method"].clone(), row["host"].clone());
                check(
                    format!(
                        "http {}:{} zeek {want:?} outflow {got:?}",
                        row["id.orig_h"], row["id.orig_p"]
                    ),
                    got.as_ref() == Some(&want),
                );
            }
        }
    }
    println!("zeek names: {checked} connections match, {excepted} excepted");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(checked >= 21, "only {checked} connections checked");
}

fn suricata(root: &Path, test: &str) -> Vec<FlowRecord> {
    let dir = root.join("suricata-verify").join(test);
    common::replay(&Config::default(), 2, &[capture_in(&dir)]).flows
}

#[test]
fn suricata_verify_tls_checks() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    // ja4-tls/test.yaml: one tls event with this ja4.
    let f = suricata(&root, "ja4-tls");
    let ja4: Vec<_> = f
        .iter()
        .filter_map(|r| r.names()?.ja4.map(|j| j.as_str().to_string()))
        .collect();
    assert_eq!(ja4, ["t12i1810s1_27d4652c4487_06a4338d0495"]);
    // tls-client-hello-frag-01: a ClientHello over several segments at MTU 300.
    let f = suricata(&root, "tls__tls-client-hello-frag-01");
    let sni: Vec<_> = f
        .iter()
        .filter_map(|r| r.names()?.server_name.get().map(<[u8]>::to_vec))
        .collect();
    assert_eq!(sni, [b"www.google.com".to_vec()]);
    // tls13-draft19: three tls events with sni localhost and version TLS 1.3 draft-19.
    let f = suricata(&root, "tls__tls13-draft19");
    let named: Vec<_> = f
        .iter()
        .filter_map(|r| r.names())
        .filter(|n| n.server_name.get() == Some(b"localhost"))
        .map(|n| n.tls_version_name())
        .collect();
    assert_eq!(named, [Some("TLSv13-draft19"); 3]);
    // tls13-draft14: one tls event. Suricata's version is the one the server chose (a draft
    // below 16); ours is the highest the client offered: its legacy_version, 0x0304 (the
    // ja3 string's first field, 772), with no supported_versions extension.
    let f = suricata(&root, "tls__tls13-draft14");
    let v: Vec<_> = f
        .iter()
        .filter_map(|r| r.names()?.tls_version_name())
        .collect();
    assert_eq!(v, ["TLSv13"]);
}

#[test]
fn suricata_verify_quic_checks() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let names = |test: &str| -> Vec<(String, String, bool)> {
        suricata(&root, test)
            .iter()
            .filter_map(|r| {
                let n = r.names()?;
                Some((text(n.server_name.get()), text(n.alpn.get()), n.quic))
            })
            .collect()
    };
    // quic-ietf/test.yaml: extensions server_name msquic.net and ALPN h3-29, QUIC v1.
    assert_eq!(
        names("quic-ietf"),
        [("msquic.net".to_string(), "h3-29".to_string(), true)]
    );
    // quic-frag: the ClientHello's CRYPTO data spans two Initial datagrams (Suricata's
    // `pcap_cnt: 2`); its ALPN h3 is what the test checks.
    let f = names("quic-frag");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].1.as_str(), f[0].2), ("h3", true));
    assert_eq!(f[0].0, "token.services.mozilla.com");
}
