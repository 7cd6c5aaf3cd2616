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

proptest::proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        if let Ok(h) = parse_client_hello(&b) {
            let _ = ja4(&h, Transport::Tcp);
        }
        let mut scratch = vec![0; MAX_HANDSHAKE];
        if let Ok(h) = hello_from_stream(&b, &mut scratch) {
            let _ = ja4(&h, Transport::Tcp);
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
        if let Ok(h) = parse_client_hello(&m) { let _ = ja4(&h, Transport::Quic); }
        let s = records(&m, frag);
        let mut scratch = vec![0; MAX_HANDSHAKE];
        if let Ok(h) = hello_from_stream(&s, &mut scratch) { let _ = ja4(&h, Transport::Tcp); }
    }
}
