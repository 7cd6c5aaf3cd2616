//! Any bytes as the start of an HTTP/1.x request head (`proto::http::parse_request`), with
//! and without more bytes to come. It must return, and a request it accepts must keep its
//! promises: views into the input, bounded method and URI, a head that ends in the first
//! `MAX_HEAD` bytes, no `NeedMore` once told no more bytes will come.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::proto::http::{parse_request, Head, MAX_HEAD, MAX_METHOD, URI_KEEP};
use outflow::proto::{host_only, FlowNames};

fuzz_target!(|data: &[u8]| {
    let seen = data.get(..MAX_HEAD).unwrap_or(data);
    let inside = |s: &[u8]| {
        let (a, b) = (seen.as_ptr() as usize, s.as_ptr() as usize);
        s.is_empty() || (b >= a && b + s.len() <= a + seen.len())
    };
    for final_ in [false, true] {
        match parse_request(data, final_) {
            Head::Request(r) => {
                assert!((1..=MAX_METHOD).contains(&r.method.len()));
                assert!(r.method.iter().all(u8::is_ascii_uppercase));
                assert!(!r.uri.is_empty() && r.uri.len() <= URI_KEEP);
                assert!(inside(r.method) && inside(r.uri));
                if let Some(h) = r.host {
                    assert!(inside(h) && !h.is_empty());
                    assert!(host_only(h).len() <= h.len());
                }
                let n = FlowNames::from_request(&r);
                assert_eq!(n.http_method.as_bytes(), r.method);
                if let Some((name, _)) = n.name() {
                    assert!(!name.is_empty());
                }
            }
            Head::NeedMore => {
                assert!(!final_ || data.is_empty(), "NeedMore after the last byte");
                assert!(data.len() < MAX_HEAD, "NeedMore past MAX_HEAD");
            }
            Head::NotHttp => {}
        }
    }
    // A head cut short is never judged not-HTTP when the whole of it is a request: the
    // tap waits for the next segment instead of giving up on a split head.
    if data.len() <= 256 {
        if let Head::Request(_) = parse_request(data, false) {
            for cut in 0..data.len() {
                let prefix = data.get(..cut).unwrap_or(data);
                assert!(
                    !matches!(parse_request(prefix, false), Head::NotHttp),
                    "a prefix of {cut} bytes"
                );
            }
        }
    }
});
