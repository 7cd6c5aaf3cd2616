//! Reading QUIC client Initials allocates nothing: key derivation, header protection, the
//! AEAD, the frame walk and the CRYPTO assembler run under a counting global allocator over
//! the client datagrams of suricata-verify `quic-frag` (a ClientHello over two Initials) and
//! of Zeek's Chromium capture (unordered CRYPTO frames). One test in its own binary, so no
//! other test's allocations are counted. Skipped when `../shared/pcaps` is absent.

mod common;

use outflow::decode::{decode, LinkType};
use outflow::proto::quic::{ClientInitials, HelloStatus};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The UDP payloads sent to port 443 in a capture.
fn client_datagrams(rel: &str) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(common::shared_pcaps()?.join(rel)).unwrap();
    let (_, recs) = common::pcap_records(&bytes);
    let mut out = Vec::new();
    for r in &recs {
        let wire = u32::from_le_bytes(r[12..16].try_into().unwrap());
        let frame = &r[16..];
        if let Ok(m) = decode(LinkType::Ethernet, frame, wire) {
            if m.proto == 17 && m.dport == 443 {
                let at = usize::from(m.payload_offset);
                out.push(frame[at..at + m.payload_len as usize].to_vec());
            }
        }
    }
    Some(out)
}

#[test]
fn reading_client_initials_does_not_allocate() {
    let mut captures = Vec::new();
    for rel in [
        "suricata-verify/quic-frag/input.pcap",
        "zeek/scripts__base__protocols__quic__fragmented-crypto/chromium-115.0.5790.110-google-de-fragmented.pcap",
    ] {
        let Some(d) = client_datagrams(rel) else {
            return;
        };
        captures.push(d);
    }
    let mut c = Box::new(ClientInitials::new());
    for datagrams in &captures {
        c.reset();
        let before = ALLOCS.load(Ordering::Relaxed);
        let mut done = false;
        for d in datagrams {
            done |= c.feed(d) == Ok(HelloStatus::Complete);
        }
        let after = ALLOCS.load(Ordering::Relaxed);
        assert!(done);
        assert_eq!(after - before, 0, "allocations while reading Initials");
    }
}
