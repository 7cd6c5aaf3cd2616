//! The per-packet path allocates nothing in steady state: decode, fragment ports, flow
//! lookup/creation/expiry, IP fragment reassembly, the inline detectors and the name taps
//! (TLS, HTTP) run under a counting global allocator; so does reading QUIC client Initials
//! (key derivation, header protection, the AEAD, the frame walk and the CRYPTO assembler) over
//! the client datagrams of suricata-verify `quic-frag` and Zeek's Chromium capture.
//!
//! The counter is per thread: every measurement runs on the test's own thread, and the test
//! harness's main thread allocates whenever it prints another test's result, which a global
//! counter would charge to whichever test is measuring at that moment (seen once in CI: "5
//! allocations while reading Initials"). The tests still take [`SERIAL`] so that timing-sensitive
//! steady states are not disturbed by a neighbour.

mod common;

use etherparse::PacketBuilder;
use outflow::capture::frag::FragPorts;
use outflow::capture::BatchPacket;
use outflow::config::Config;
use outflow::decode::{decode, LinkType};
use outflow::worker::Worker;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations made by this thread. A const-initialised `Cell` needs no lazy registration
    /// or destructor, so touching it from inside the allocator cannot recurse into it.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with` fails only while the thread is being torn down: nothing is measured then.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations made so far by the calling thread.
fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Held by each test while it runs, so the measured loops run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Frames of `flows` TCP/UDP conversations between home hosts and external ones.
fn frames(flows: u16, round: u16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..flows {
        let home = [10, 0, (i >> 8) as u8, i as u8];
        let ext = [198, 51, 100, (i % 200) as u8];
        let port = 20_000 + i;
        let up = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(home, ext, 64);
        let down = PacketBuilder::ethernet2([2; 6], [1; 6]).ipv4(ext, home, 64);
        let (mut f, mut g) = (Vec::new(), Vec::new());
        if i % 3 == 0 {
            up.udp(port, 53).write(&mut f, &[0u8; 600]).unwrap();
            down.udp(53, port).write(&mut g, &[0u8; 60]).unwrap();
        } else {
            let t = up.tcp(port, 443, u32::from(round) * 1000, 1000);
            let t = if round == 0 { t.syn() } else { t.ack(1) };
            t.write(&mut f, &[0u8; 600]).unwrap();
            let r = down
                .tcp(443, port, 5, 1000)
                .syn()
                .ack(u32::from(round) * 1000 + 1);
            r.write(&mut g, &[0u8; 60]).unwrap();
        }
        out.push(f);
        out.push(g);
        if i % 100 == 0 {
            // A DNS response in three IP fragments, a new datagram each round: reassembled.
            let server = std::net::SocketAddrV4::new(ext.into(), 53);
            let client = std::net::SocketAddrV4::new(home.into(), port);
            let id = i.wrapping_add(round.wrapping_mul(7919));
            out.extend(
                outflow::gen::fragmented_udp(server, client, 0, id, 3000, 1480, false)
                    .into_iter()
                    .map(|p| p.frame),
            );
        }
    }
    out
}

#[test]
fn per_packet_path_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config::default();
    cfg.flow.capacity_per_worker = 1500; // forces evictions in the measured phase
    let mut worker = Worker::new(&cfg);
    let mut frags = FragPorts::new(1024, 30_000_000_000);
    let warm = frames(1000, 0);
    let steady = frames(1000, 1);
    let churn: Vec<Vec<u8>> = frames(2000, 0).into_iter().skip(1000).collect();

    let mut seq = 0u64;
    let mut spare = Vec::with_capacity(100_000);
    let mut run = |worker: &mut Worker, frames: &[Vec<u8>], t0: u64, spare: &mut Vec<_>| {
        for (i, f) in frames.iter().enumerate() {
            seq += 1;
            let mut meta = decode(LinkType::Ethernet, f, f.len() as u32).unwrap();
            let clock = t0 + i as u64 * 1000;
            frags.resolve(&mut meta, clock);
            let p = BatchPacket {
                seq,
                ts_ns: clock,
                clock_ns: clock,
                wire_len: f.len() as u32,
                data_start: 0,
                cap_len: f.len() as u32,
                meta,
                outer_copy: false,
                held: false,
            };
            worker.packet(&p, f);
        }
        // The output thread hands DNS event boxes back; so does this test.
        let mut n = 0;
        for (_, e) in worker.drain() {
            n += 1;
            if let outflow::event::Event::Dns(b) = e {
                spare.push(b);
            }
        }
        n
    };

    // The same conversations mirrored through VXLAN (VNI 7): warmed up like the others.
    let vxlan = |fs: &[Vec<u8>]| -> Vec<Vec<u8>> {
        fs.iter()
            .take(200)
            .enumerate()
            .map(|(i, f)| outflow::gen::wrap(outflow::gen::Wrap::Vxlan { vni: 7 }, f, i as u32))
            .collect()
    };
    let (vxlan_warm, vxlan_steady) = (vxlan(&warm), vxlan(&steady));
    run(&mut worker, &warm, 1_000_000_000, &mut spare);
    run(&mut worker, &vxlan_warm, 1_000_000_000, &mut spare);
    // In steady state the DNS event boxes in circulation are back in the pool (the output
    // thread returns them): give the worker as many as the churn phase will use, made by
    // another worker on the same frames.
    let mut other = Worker::new(&cfg);
    run(&mut other, &churn, 1_000_000_000, &mut spare);
    run(&mut other, &steady, 1_000_000_000, &mut spare);
    for b in spare.drain(..) {
        worker.recycle_dns(b);
    }
    let before = allocs();
    // Existing flows updated; then new flows evict old ones (table full); then a jump in
    // time expires the rest by idle timeout.
    run(&mut worker, &steady, 2_000_000_000, &mut spare);
    // Tunnelled packets of flows that exist (their tunnel lists were made when the flows
    // were, during warm-up): decapsulation allocates nothing per packet.
    run(&mut worker, &vxlan_steady, 2_500_000_000, &mut spare);
    let events = run(&mut worker, &churn, 3_000_000_000, &mut spare);
    worker.advance(10_000_000_000_000);
    let expired = worker.drain().count();
    let after = allocs();
    assert!(events > 0, "the churn phase must evict flows");
    assert!(expired > 0, "the time jump must expire flows");
    assert_eq!(after - before, 0, "allocations on the per-packet path");
    assert!(
        worker.stats.defrag.reassembled >= 20,
        "{:?}",
        worker.stats.defrag
    );
}

/// Feeds generated frames (Ethernet) to `worker`, with their own times; returns the events.
fn feed(worker: &mut Worker, frames: &[outflow::gen::Packet], seq: &mut u64) -> usize {
    for p in frames {
        *seq += 1;
        let meta = decode(LinkType::Ethernet, &p.frame, p.frame.len() as u32).unwrap();
        let b = BatchPacket {
            seq: *seq,
            ts_ns: p.ts_ns,
            clock_ns: p.ts_ns,
            wire_len: p.frame.len() as u32,
            data_start: 0,
            cap_len: p.frame.len() as u32,
            meta,
            outer_copy: false,
            held: false,
        };
        worker.packet(&b, &p.frame);
    }
    worker.drain().count()
}

/// A TLS flow (ClientHello whole, or split over three segments) and an HTTP upload: once
/// the tap has its verdict (the names box and the name event are made then, once per
/// flow), the flows' later packets, their teardown and their records allocate nothing.
#[test]
fn named_flows_later_packets_do_not_allocate() {
    use outflow::proto::tls::build::example_spec;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sa = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let mut sessions = Vec::new();
    for i in 0..30u16 {
        let client = sa(&format!("10.0.1.{}:{}", i + 1, 40_000 + i));
        let server = sa(&format!("198.51.100.{}:443", i + 1));
        let mut s = match i % 3 {
            0 => outflow::gen::tls_session(
                client,
                server,
                &example_spec(b"a.example"),
                1,
                60_000,
                9_000,
            ),
            1 => outflow::gen::tls_session(
                client,
                server,
                &example_spec(b"b.example"),
                3,
                60_000,
                9_000,
            ),
            _ => outflow::gen::http_upload(client, server, "PUT", "c.example", "/u", 60_000, 900),
        };
        s.start_ns = 1_000_000_000 + u64::from(i) * 1_000;
        sessions.push(s);
    }
    // Handshake, hello (up to 3 segments) and the first data: the verdict is in.
    const WARM: usize = 10;
    let cut = |s: &outflow::gen::TcpSession, warm: bool| -> Vec<outflow::gen::Packet> {
        let all: Vec<_> = s.packets().collect();
        if warm {
            all[..WARM].to_vec()
        } else {
            all[WARM..].to_vec()
        }
    };
    let warm: Vec<_> =
        outflow::gen::merge(sessions.iter().map(|s| cut(s, true).into_iter()).collect()).collect();
    let rest: Vec<_> =
        outflow::gen::merge(sessions.iter().map(|s| cut(s, false).into_iter()).collect()).collect();
    let mut worker = Worker::new(&Config::default());
    let mut seq = 0;
    let named = feed(&mut worker, &warm, &mut seq);
    assert_eq!(worker.stats.tap.looked, 0, "published per flush only");
    worker.flush_slices();
    let tap = worker.stats.tap;
    assert_eq!((tap.tls, tap.http, tap.stashed), (20, 10, 10), "{tap:?}");
    assert_eq!(named, 30, "one name event per flow");
    let before = allocs();
    let volumes = feed(&mut worker, &rest, &mut seq);
    // Closed flows are written after their linger.
    worker.advance(1_000_000_000_000);
    let records = worker
        .drain()
        .filter(|(_, e)| matches!(e, outflow::event::Event::Flow(r) if r.names().is_some()))
        .count();
    let after = allocs();
    assert_eq!(
        records, 30,
        "one named record per flow ({volumes} events before)"
    );
    assert_eq!(after - before, 0, "allocations after the verdict");
}

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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
    let mut c = Box::new(outflow::proto::quic::ClientInitials::new());
    for datagrams in &captures {
        c.reset();
        let before = allocs();
        let mut done = false;
        for d in datagrams {
            done |= c.feed(d) == Ok(outflow::proto::quic::HelloStatus::Complete);
        }
        let after = allocs();
        assert!(done);
        assert_eq!(after - before, 0, "allocations while reading Initials");
    }
}
