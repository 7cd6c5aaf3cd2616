//! Any bytes as a TCP client's first bytes and as a ClientHello message: the parser
//! (`parse_client_hello`, `hello_from_stream`), JA4, JA3, and the worker's TCP tap fed the bytes
//! cut into segments at the places the first input bytes choose (split hellos, the stash,
//! retransmissions, gaps). Each must return, and what it accepts must keep its promises.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::proto::tap::{Outcome, TcpTap, MAX_SEGMENTS, STASH_BYTES};
use outflow::proto::tls::{self, hello_from_stream, parse_client_hello, MAX_HANDSHAKE};
use outflow::proto::NAME_MAX;

fn check(h: &tls::ClientHello<'_>, within: &[u8]) {
    let inside = |s: &[u8]| {
        let (a, b) = (within.as_ptr() as usize, s.as_ptr() as usize);
        s.is_empty() || (b >= a && b + s.len() <= a + within.len())
    };
    if let Some(n) = h.server_name {
        assert!(inside(n));
    }
    // Every accessor terminates within the message.
    assert!(h.suites().count() <= within.len() / 2);
    assert!(h.extension_types().count() <= within.len() / 4);
    assert!(h.signature_algorithms().count() <= within.len() / 2);
    for a in h.alpn_protocols() {
        assert!(inside(a));
    }
    let _ = tls::version_name(h.version());
    for t in [tls::Transport::Tcp, tls::Transport::Quic] {
        if let Some(j) = tls::ja4(h, t) {
            assert!(j.as_str().is_ascii() && j.as_str().len() <= 64, "{j}");
        }
    }
    // JA3: the string only digits, `-` and four `,`; the hash 32 lower-case hex digits.
    let s = tls::ja3_string(h);
    assert_eq!(s.matches(',').count(), 4, "{s}");
    assert!(s.bytes().all(|c| c.is_ascii_digit() || c == b'-' || c == b','), "{s}");
    let j = tls::ja3(h);
    assert!(j.0.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)), "{j}");
}

fuzz_target!(|data: &[u8]| {
    // As a handshake message (what the QUIC tap hands over).
    if let Ok(h) = parse_client_hello(data) {
        check(&h, data);
    }
    // As a stream of records, reassembled into the scratch buffer.
    let mut scratch = vec![0u8; MAX_HANDSHAKE];
    if let Ok(h) = hello_from_stream(data, &mut scratch) {
        let _ = h.server_name.map(<[u8]>::len);
        let _ = tls::ja4(&h, tls::Transport::Tcp);
        let _ = tls::ja3(&h);
    }
    // Through the tap: the first byte picks the cut points, the rest is the stream.
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    let mut tap = TcpTap::new(4);
    let mut seq = 1000u32;
    let mut rest = stream;
    let mut first = true;
    let mut segs = 0u32;
    let step = usize::from(cuts % 61) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        let (seg, tail) = rest.split_at(n);
        // Bit 7 of the cut byte: resend every segment once (a retransmission is ignored).
        let rounds = if cuts & 0x80 != 0 { 2 } else { 1 };
        let mut out = Outcome::More;
        for _ in 0..rounds {
            out = if first {
                tap.first(1, 7, seq, seg)
            } else {
                tap.more(1, 7, seq, seg)
            };
            first = false;
            if out != Outcome::More {
                break;
            }
        }
        segs += 1;
        match out {
            Outcome::More => {
                assert!(segs < u32::from(MAX_SEGMENTS), "the tap stops after 32 segments");
                let (held, cap, _) = tap.occupancy();
                assert!(held <= cap);
            }
            Outcome::Done => break,
            Outcome::Found(n) => {
                assert!(n.server_name.as_bytes().len() <= NAME_MAX);
                assert!(n.tls_version.is_some() || n.http_method.get().is_some());
                break;
            }
        }
        // Bit 6: leave a gap after the first segment (out of order: the flow is given up).
        seq = seq.wrapping_add(n as u32 + u32::from(cuts & 0x40 != 0 && segs == 1));
        rest = tail;
        assert!(stream.len() - rest.len() <= STASH_BYTES * usize::from(MAX_SEGMENTS));
    }
    tap.release(1);
    assert_eq!(tap.occupancy().0, 0, "released");
});
