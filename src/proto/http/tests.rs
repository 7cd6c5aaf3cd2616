use super::*;

fn req(b: &[u8]) -> Request<'_> {
    match parse_request(b, false) {
        Head::Request(r) => r,
        h => panic!("{h:?}"),
    }
}

#[test]
fn a_put_with_host_and_length() {
    let r = req(b"PUT /upload/file.bin HTTP/1.1\r\nHost: files.example:8080\r\nContent-Length: 12345\r\n\r\nbody");
    assert_eq!(r.method, b"PUT");
    assert_eq!(r.uri, b"/upload/file.bin");
    assert_eq!(r.host, Some(&b"files.example:8080"[..]));
    assert_eq!(r.content_length, Some(12345));
    assert!(r.complete);
    assert_eq!(crate::proto::host_only(r.host.unwrap()), b"files.example");
}

#[test]
fn http09_and_others() {
    // vlan-mpls: Zeek logs `GET /` version 0.9 without a host.
    let r = req(b"GET /\r\n");
    assert_eq!((r.method, r.uri, r.host), (&b"GET"[..], &b"/"[..], None));
    assert_eq!(
        parse_request(b"EHLO mail.example\r\n", false),
        Head::NotHttp
    );
    assert_eq!(parse_request(b"SSH-2.0-OpenSSH\r\n", false), Head::NotHttp);
    assert_eq!(parse_request(b"\x16\x03\x01", false), Head::NotHttp);
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a", false),
        Head::NeedMore
    );
    assert_eq!(parse_request(b"GE", false), Head::NeedMore);
    let long = [b"GET /".as_slice(), &[b'a'; 100], b" HTTP/1.0\r\n\r\n"].concat();
    assert_eq!(req(&long).uri.len(), URI_KEEP);
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n").content_length,
        None
    );
}

/// A Host that is only a port names nothing (from the `http_request` fuzz target: the
/// head had `Host::`, whose value `:` lost its empty port and left an empty name).
#[test]
fn a_host_of_only_a_port_gives_no_name() {
    for (head, name) in [
        (&b"PUT /u HTTP/1.1\r\nHost::\r\n\r\n"[..], None),
        (b"PUT /u HTTP/1.1\r\nHost: :8080\r\n\r\n", None),
        (
            b"PUT /u HTTP/1.1\r\nHost: a.example:\r\n\r\n",
            Some(&b"a.example"[..]),
        ),
    ] {
        let n = crate::proto::FlowNames::from_request(&req(head));
        assert!(n.http_host.get().is_some(), "{head:?}");
        assert_eq!(n.name().map(|(h, _)| h), name, "{head:?}");
    }
}

proptest::proptest! {
    #[test]
    fn never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300), f in proptest::bool::ANY) {
        let _ = parse_request(&b, f);
    }

    #[test]
    fn every_prefix_of_a_head_is_need_more_or_request(cut in 0usize..80) {
        let h = b"POST /x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 9\r\n\r\n";
        let p = &h[..cut.min(h.len())];
        let r = parse_request(p, false);
        proptest::prop_assert!(matches!(r, Head::NeedMore | Head::Request(_)), "{:?}", r);
    }
}
