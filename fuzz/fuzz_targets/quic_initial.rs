//! Any byte string as a run of client UDP datagrams of one QUIC connection (first byte even),
//! or as decrypted Initial payloads (first byte odd) — random bytes never pass the AEAD, so
//! the frame walk and the CRYPTO assembler get inputs of their own. After each record:
//! `feed` returns, the packet walk stays inside the datagram, and the assembler keeps its
//! promises (bounded prefix, a ClientHello only when complete, of the length it announces).

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::proto::quic::assembler::CAPACITY;
use outflow::proto::quic::{ClientInitials, CryptoAssembler, Frame, Frames, HelloStatus, Packets};

/// Records of (2-byte big-endian length, bytes); a short last one takes what is left.
fn records(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if b.len() < 2 {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([b[0], b[1]])).min(b.len() - 2);
        let (r, rest) = b[2..].split_at(n);
        b = rest;
        Some(r)
    })
}

fn check(a: &CryptoAssembler) {
    let prefix = a.prefix();
    assert!(prefix.len() <= CAPACITY);
    match (a.status(), a.client_hello()) {
        (HelloStatus::Complete, Some(h)) => {
            assert_eq!(h[0], 1);
            let body = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            assert_eq!(h.len(), 4 + body);
            assert_eq!(&prefix[..h.len()], h);
        }
        (HelloStatus::Complete, None) => panic!("complete without a hello"),
        (_, Some(_)) => panic!("a hello before it is complete"),
        (_, None) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut c = ClientInitials::new();
        for d in records(rest) {
            for p in Packets::new(d).flatten() {
                assert!(p.bytes.len() <= d.len() && p.pn_offset <= p.bytes.len());
                assert!(p.dcid.len() <= 255 && p.scid.len() <= 255);
            }
            let before = c.initials();
            let _ = c.feed(d);
            assert!(c.initials() >= before);
            check(c.assembler());
        }
    } else {
        let mut a = CryptoAssembler::new();
        for d in records(rest) {
            for f in Frames::new(d) {
                if let Ok(Frame::Crypto { offset, data }) = f {
                    a.insert(offset, data);
                }
            }
            check(&a);
        }
    }
});
