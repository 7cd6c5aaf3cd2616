//! Names from clients' first bytes (TLS SNI, JA4; HTTP method and Host) against the public
//! references in `../shared/pcaps`: every connection of Zeek's `ssl.log` / `http.log`
//! baselines, and suricata-verify's `tls.sni` / `tls.ja4` / `tls.ja3.hash` checks.

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
    // Its three HAVE_JA3 checks: one tls event with each ja3.hash (test.yaml gives the
    // strings too: `771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2`, the same
    // with extensions 42-41 added, and a 30-suite TLS 1.2 + 1.3 offer).
    let mut ja3 = ja3_hashes(&f);
    ja3.sort();
    assert_eq!(
        ja3,
        [
            "0e870cb29dd59424064948532781a7f6",
            "30e5035b2d6787e7b319f75c36c438fe",
            "e6ae7b5efb58894bd43d6fa73420d267",
        ]
    );
    // tls13-draft14: one tls event. Suricata's version is the one the server chose (a draft
    // below 16); ours is the highest the client offered: its legacy_version, 0x0304 (the
    // ja3 string's first field, 772), with no supported_versions extension.
    let f = suricata(&root, "tls__tls13-draft14");
    let v: Vec<_> = f
        .iter()
        .filter_map(|r| r.names()?.tls_version_name())
        .collect();
    assert_eq!(v, ["TLSv13"]);
    // Its HAVE_JA3 check: ja3.hash of the string `772,49195-...-10,0-23-65281-10-11-35-
    // 13172-16-5-65282-40-13,23-24-25-256-257-258-259-260,0` (legacy version 772).
    assert_eq!(ja3_hashes(&f), ["65825469c473e48f3ee2571129256ab0"]);
    // The JA3 travels beside the JA4 in the flow record's JSON.
    let named = f.iter().find(|r| r.names().is_some()).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&outflow::output::json::flow_json(named, 0)).unwrap();
    assert_eq!(v["ja3"], "65825469c473e48f3ee2571129256ab0");
    assert!(v["ja4"].is_string(), "{v}");
}

/// The JA3 hashes of the flows named by a ClientHello.
fn ja3_hashes(flows: &[FlowRecord]) -> Vec<String> {
    flows
        .iter()
        .filter_map(|r| r.names()?.ja3.map(|j| j.as_str().to_string()))
        .collect()
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

// Generated sessions (`outflow::gen::{tls_session, http_upload}`): exact fields.

const T0: u64 = 1_700_000_000 * 1_000_000_000;

fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

fn replay_sessions(
    dir: &Path,
    name: &str,
    sessions: &[outflow::gen::TcpSession],
) -> outflow::replay::ReplayReport {
    let streams: Vec<_> = sessions.iter().map(|s| s.packets()).collect();
    let path = dir.join(name);
    common::write_pcap(&path, outflow::gen::merge(streams));
    common::replay(&Config::default(), 1, &[path])
}

fn record_to<'a>(rep: &'a outflow::replay::ReplayReport, client: &str) -> &'a FlowRecord {
    let c = sa(client);
    let found: Vec<_> = rep
        .flows
        .iter()
        .filter(|r| r.orig_addr.to_ip(r.ipv6) == c.ip() && r.orig_port == c.port())
        .collect();
    assert_eq!(found.len(), 1, "{client}");
    found[0]
}

/// MD5 of the JA3 string of `example_spec`'s hello (its supported_groups and ec_point_formats
/// extensions have empty bodies, so those fields are empty):
/// `771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,0-23-
/// 65281-10-11-35-16-5-13-18-51-45-43-27-21-17513,,`.
const EXAMPLE_JA3: &str = "055de28834d66f42ea035fb88a209260";

#[test]
fn generated_hellos_whole_and_split_give_exact_fields() {
    use outflow::proto::tls::build::{example_spec, HelloSpec};
    let dir = tempfile::tempdir().unwrap();
    let mut sessions = Vec::new();
    // The JA4 README's example hello (ALPN h2, http/1.1), whole and in 2 and 3 segments,
    // over IPv4 and IPv6; and one offering only http/1.1.
    for (i, segs) in [1u16, 2, 3].into_iter().enumerate() {
        for (client, server) in [
            (format!("10.0.0.5:{}", 41_000 + i), "162.125.6.20:443"),
            (
                format!("[fd00::5]:{}", 41_000 + i),
                "[2620:100:6020::a27d:4014]:443",
            ),
        ] {
            let mut s = outflow::gen::tls_session(
                sa(&client),
                sa(server),
                &example_spec(b"content.dropboxapi.com"),
                segs,
                200_000,
                5_000,
            );
            s.start_ns = T0 + i as u64 * 1_000_000_000;
            sessions.push(s);
        }
    }
    let h11 = HelloSpec {
        alpn: &[b"http/1.1"],
        ..example_spec(b"Upload.Example.NET")
    };
    let mut s = outflow::gen::tls_session(
        sa("10.0.0.6:41100"),
        sa("198.51.100.9:443"),
        &h11,
        2,
        3_000,
        1_000,
    );
    s.start_ns = T0;
    sessions.push(s);
    let rep = replay_sessions(dir.path(), "tls.pcap", &sessions);
    for i in 0..3 {
        for client in [
            format!("10.0.0.5:{}", 41_000 + i),
            format!("[fd00::5]:{}", 41_000 + i),
        ] {
            let r = record_to(&rep, &client);
            let n = r.names().unwrap_or_else(|| panic!("{client}: no names"));
            assert_eq!(n.server_name.get(), Some(&b"content.dropboxapi.com"[..]));
            assert_eq!(n.alpn.get(), Some(&b"h2"[..]));
            // FoxIO's README gives this fingerprint for this hello.
            assert_eq!(
                n.ja4.map(|j| j.as_str().to_string()).as_deref(),
                Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
            );
            assert_eq!(n.tls_version_name(), Some("TLSv13"));
            assert_eq!(n.http_host.get(), None);
            assert_eq!(r.orig.payload_bytes, 200_000);
            let v: serde_json::Value =
                serde_json::from_str(&outflow::output::json::flow_json(r, 0)).unwrap();
            assert_eq!(v["server_name"], "content.dropboxapi.com");
            assert_eq!(v["alpn"], "h2");
            assert_eq!(v["ja4"], "t13d1516h2_8daaf6152771_e5627efa2ab1");
            assert_eq!(v["ja3"], EXAMPLE_JA3);
            assert_eq!(
                n.ja3.map(|j| j.as_str().to_string()).as_deref(),
                Some(EXAMPLE_JA3)
            );
            assert_eq!(v["tls_version"], "TLSv13");
        }
    }
    let n = record_to(&rep, "10.0.0.6:41100").names().unwrap();
    // The name as sent (case kept on the record; dst_fqdn lowercases).
    assert_eq!(n.server_name.get(), Some(&b"Upload.Example.NET"[..]));
    assert_eq!(n.alpn.get(), Some(&b"http/1.1"[..]));
    assert_eq!(
        n.ja4.map(|j| j.as_str().to_string()).as_deref(),
        Some("t13d1516h1_8daaf6152771_e5627efa2ab1")
    );
    let tap = rep.summary.flows.tap;
    assert_eq!((tap.tls, tap.http, tap.stashed), (7, 0, 5), "{tap:?}");
    assert_eq!((tap.evicted, tap.out_of_order, tap.gave_up), (0, 0, 0));
}

#[test]
fn generated_http_uploads_give_exact_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut put = outflow::gen::http_upload(
        sa("10.0.0.7:42000"),
        sa("198.51.100.20:80"),
        "PUT",
        "files.example.net",
        "/dav/backup/2023-11-14.tar.gz",
        3_000_000,
        200,
    );
    put.start_ns = T0;
    let mut post = outflow::gen::http_upload(
        sa("10.0.0.7:42001"),
        sa("198.51.100.21:8080"),
        "POST",
        "api.example.org:8080",
        "/v1/upload?name=report.pdf",
        70_000,
        500,
    );
    post.start_ns = T0 + 1_000_000;
    let rep = replay_sessions(dir.path(), "http.pcap", &[put.clone(), post.clone()]);
    let r = record_to(&rep, "10.0.0.7:42000");
    let n = r.names().unwrap();
    assert_eq!(n.http_method.get(), Some(&b"PUT"[..]));
    assert_eq!(n.http_host.get(), Some(&b"files.example.net"[..]));
    assert_eq!(
        n.http_uri.get(),
        Some(&b"/dav/backup/2023-11-14.tar.gz"[..])
    );
    assert_eq!(n.http_content_length, Some(3_000_000));
    assert_eq!(
        (n.server_name.get(), n.tls_version, n.ja4, n.ja3),
        (None, None, None, None)
    );
    assert_eq!(
        r.orig.payload_bytes,
        put.first_client_bytes.len() as u64 + 3_000_000
    );
    let v: serde_json::Value =
        serde_json::from_str(&outflow::output::json::flow_json(r, 0)).unwrap();
    assert_eq!(v["http_method"], "PUT");
    assert_eq!(v["http_host"], "files.example.net");
    assert_eq!(v["http_uri"], "/dav/backup/2023-11-14.tar.gz");
    assert_eq!(v["http_content_length"], 3_000_000);
    let n = record_to(&rep, "10.0.0.7:42001").names().unwrap();
    assert_eq!(n.http_method.get(), Some(&b"POST"[..]));
    assert_eq!(n.http_host.get(), Some(&b"api.example.org:8080"[..]));
    assert_eq!(n.http_uri.get(), Some(&b"/v1/upload?name=report.pdf"[..]));
    assert_eq!(n.http_content_length, Some(70_000));
    assert_eq!(n.name().map(|(h, _)| h), Some(&b"api.example.org"[..]));
    let tap = rep.summary.flows.tap;
    assert_eq!((tap.tls, tap.http, tap.stashed), (0, 2, 0), "{tap:?}");
}
