use super::build::{client_hello, example_spec, records, HelloSpec};
use super::*;

#[test]
fn example_hello_gives_the_spec_fingerprint() {
    let m = client_hello(&example_spec(b"www.example.com"));
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(h.server_name, Some(&b"www.example.com"[..]));
    assert_eq!(h.first_alpn(), Some(&b"h2"[..]));
    assert_eq!(h.version(), 0x0304);
    assert_eq!(version_name(h.version()), "TLSv13");
    let j = ja4(&h, Transport::Tcp).unwrap();
    // FoxIO's README: t13d1516h2_8daaf6152771_e5627efa2ab1.
    assert_eq!(j.as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(
        ja4(&h, Transport::Quic).unwrap().as_str(),
        "q13d1516h2_8daaf6152771_e5627efa2ab1"
    );
}

#[test]
fn no_sni_no_alpn_no_extensions() {
    let spec = HelloSpec {
        sni: None,
        alpn: &[],
        suites: &[0x0a0a, 0x002f],
        extensions: &[],
        sig_algs: &[],
        versions: &[],
        groups: &[],
        point_formats: &[],
    };
    let m = client_hello(&spec);
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(h.server_name, None);
    assert_eq!(h.version(), 0x0303);
    assert_eq!(
        ja4(&h, Transport::Tcp).unwrap().as_str(),
        "t12i010000_".to_string() + &hex12("002f") + "_000000000000"
    );
}

fn hex12(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..12].to_string()
}

#[test]
fn grease_and_drafts() {
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
    let spec = HelloSpec {
        versions: &[0x7f13, 0x0303],
        ..example_spec(b"localhost")
    };
    let h = parse_client_hello(&client_hello(&spec)).unwrap().version();
    assert_eq!(version_name(h), "TLSv13-draft19");
}

#[test]
fn fragmented_records_reassemble() {
    let m = client_hello(&example_spec(b"split.example"));
    let stream = records(&m, 100);
    let mut scratch = vec![0; MAX_HANDSHAKE];
    let h = hello_from_stream(&stream, &mut scratch).unwrap();
    assert_eq!(h.server_name, Some(&b"split.example"[..]));
    // Every prefix is "need more", never an error or a panic.
    for n in 0..stream.len() {
        let r = hello_from_stream(&stream[..n], &mut scratch);
        assert_eq!(r, Err(Ok(StreamStatus::NeedMore)), "{n}");
    }
    let one = records(&m, 16384);
    for n in 0..one.len() {
        assert_eq!(
            hello_from_stream(&one[..n], &mut scratch),
            Err(Ok(StreamStatus::NeedMore))
        );
    }
    assert!(hello_from_stream(&one, &mut scratch).is_ok());
}

#[test]
fn impossible_lengths_are_errors() {
    let m = client_hello(&example_spec(b"a.example"));
    for n in 0..m.len() {
        assert!(parse_client_hello(&m[..n]).is_err());
    }
    let mut bad = m.clone();
    bad[4 + 2 + 32] = 200; // session id longer than 32
    assert!(parse_client_hello(&bad).is_err());
    assert_eq!(
        hello_from_stream(b"SSH-2.0-x", &mut [0; 16]),
        Err(Ok(StreamStatus::NotTls))
    );
}

/// The first hello of suricata-verify `tls__tls13-draft19` as JA3 sees it: test.yaml gives
/// `tls.ja3.string` `771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2` and
/// `tls.ja3.hash` `0e870cb29dd59424064948532781a7f6`.
fn draft19_spec() -> HelloSpec<'static> {
    HelloSpec {
        sni: Some(b"localhost"),
        alpn: &[],
        suites: &[4866, 255],
        extensions: &[0, 11, 10, 35, 13, 22, 23, 43, 45, 40],
        sig_algs: &[0x0403],
        versions: &[0x7f13],
        groups: &[29, 23, 25, 24],
        point_formats: &[0, 1, 2],
    }
}

const DRAFT19_JA3: &str = "771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2";

#[test]
fn ja3_is_the_md5_of_the_spec_string() {
    use md5::{Digest, Md5};
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&Md5::digest(DRAFT19_JA3)),
        "0e870cb29dd59424064948532781a7f6"
    );
    let m = client_hello(&draft19_spec());
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(ja3_string(&h), DRAFT19_JA3);
    assert_eq!(ja3(&h).as_str(), "0e870cb29dd59424064948532781a7f6");
    // The legacy version, not supported_versions (draft 19 here): a TLS 1.3 hello says 771.
    assert_eq!(version_name(h.version()), "TLSv13-draft19");
    // The same from the records of a TCP stream, fragmented.
    let stream = records(&m, 50);
    let mut scratch = vec![0; MAX_HANDSHAKE];
    let h = hello_from_stream(&stream, &mut scratch).unwrap();
    assert_eq!(ja3(&h).as_str(), "0e870cb29dd59424064948532781a7f6");
}

#[test]
fn ja3_leaves_grease_out_of_suites_extensions_and_curves() {
    let greased = HelloSpec {
        suites: &[0x1a1a, 4866, 0xfafa, 255],
        extensions: &[0x0a0a, 0, 11, 10, 35, 13, 22, 23, 43, 45, 40, 0xdada],
        groups: &[0x2a2a, 29, 23, 25, 24],
        ..draft19_spec()
    };
    let m = client_hello(&greased);
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(ja3_string(&h), DRAFT19_JA3);
    assert_eq!(ja3(&h).as_str(), "0e870cb29dd59424064948532781a7f6");
    // 0x0a1a is not GREASE (the two bytes differ): it stays, in decimal.
    let near = HelloSpec {
        suites: &[0x0a1a],
        ..draft19_spec()
    };
    let m = client_hello(&near);
    let h = parse_client_hello(&m).unwrap();
    assert!(
        ja3_string(&h).starts_with("771,2586,0-11-"),
        "{}",
        ja3_string(&h)
    );
}

#[test]
fn ja3_of_hellos_without_extensions_keeps_empty_fields() {
    use md5::{Digest, Md5};
    let spec = HelloSpec {
        sni: None,
        alpn: &[],
        suites: &[0x0a0a, 0x002f, 0x0035],
        extensions: &[],
        sig_algs: &[],
        versions: &[],
        groups: &[],
        point_formats: &[],
    };
    // An empty extensions block (length 0).
    let m = client_hello(&spec);
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(ja3_string(&h), "771,47-53,,,");
    let md5: String = Md5::digest("771,47-53,,,")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(ja3(&h).as_str(), md5);
    // No extensions block at all (an SSL 3 / TLS 1.0 era hello), legacy version 3.1.
    let mut old = m[..m.len() - 2].to_vec();
    old[3] -= 2; // the body is 2 bytes shorter (it is < 256 bytes long)
    old[4..6].copy_from_slice(&[3, 1]);
    let h = parse_client_hello(&old).unwrap();
    assert_eq!(ja3_string(&h), "769,47-53,,,");
    // Extensions present, but no curves or point formats: their fields are empty.
    let m = client_hello(&example_spec(b"a.example"));
    let h = parse_client_hello(&m).unwrap();
    assert_eq!(
        ja3_string(&h),
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
         0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21-17513,,"
    );
}

/// What every JA3 of an accepted hello must be: the string only digits, `-` and four `,`,
/// and the hash its MD5 in 32 lower-case hex digits.
fn ja3_holds(h: &ClientHello<'_>) {
    use md5::{Digest, Md5};
    let s = ja3_string(h);
    assert_eq!(s.matches(',').count(), 4, "{s}");
    assert!(s
        .bytes()
        .all(|c| c.is_ascii_digit() || c == b'-' || c == b','));
    let j = ja3(h);
    let md5: String = Md5::digest(&s).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(j.as_str(), md5);
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        if let Ok(h) = parse_client_hello(&b) {
            let _ = ja4(&h, Transport::Tcp);
            ja3_holds(&h);
        }
        let mut scratch = vec![0; MAX_HANDSHAKE];
        if let Ok(h) = hello_from_stream(&b, &mut scratch) {
            let _ = ja4(&h, Transport::Tcp);
            ja3_holds(&h);
        }
    }

    #[test]
    fn mutated_hellos_never_panic(
        at in 0usize..400, v in proptest::num::u8::ANY, cut in 0usize..400,
        frag in 1usize..300,
    ) {
        let mut m = client_hello(&example_spec(b"mutate.example"));
        if let Some(x) = m.get_mut(at) { *x = v; }
        m.truncate(m.len().saturating_sub(cut));
        if let Ok(h) = parse_client_hello(&m) { let _ = ja4(&h, Transport::Quic); ja3_holds(&h); }
        let s = records(&m, frag);
        let mut scratch = vec![0; MAX_HANDSHAKE];
        if let Ok(h) = hello_from_stream(&s, &mut scratch) {
            let _ = ja4(&h, Transport::Tcp);
            ja3_holds(&h);
        }
    }
}
