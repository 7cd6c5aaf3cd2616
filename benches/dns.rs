//! Why outflow parses DNS itself: the same real messages through our zero-copy parser and
//! through two well-kept crates, doing the same work for each message — parse, write the
//! question name as text, and for every answer write its owner name, read an A/AAAA address
//! and write a CNAME/NS/PTR/MX target. Text goes into a fixed stack buffer for all three, so
//! the difference is the parsers'. Throughput is in messages.
//!
//! A second group, `dns_parse_only`, parses and counts answers, without text: the floor
//! under each parser's cost.
//!
//! Before the timings, one pass over the set under a counting global allocator prints the
//! heap allocations each parser makes per message (ours must make none).
//!
//! The messages are the seed corpus of the DNS fuzz target (fuzz/corpus/dns_message/), taken
//! from the shared captures: queries and responses, CNAME chains, multi-string TXT, MX with
//! pointer chains, AAAA, PTR, a 12-address round robin and an iodine NULL tunnel exchange.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use outflow::dns::parser::{Message, MAX_NAME_WIRE};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::{self, Write as _};
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

macro_rules! seeds {
    ($($name:literal),* $(,)?) => {
        [$(include_bytes!(concat!("../fuzz/corpus/dns_message/seed-", $name, ".bin")).as_slice()),*]
    };
}

/// 13 real messages (see the module doc).
const MESSAGES: [&[u8]; 13] = seeds![
    "a_query",
    "a_response",
    "cname_query",
    "cname_response",
    "txt_query",
    "txt_response",
    "txt_spf_response",
    "mx_response",
    "aaaa_response",
    "a12_response",
    "ptr_response",
    "iodine_null_query_edns",
    "iodine_null_response",
];

/// A `fmt::Write` into a fixed buffer, so that text costs no allocation for any parser.
struct Stack {
    buf: [u8; 512],
    len: usize,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            buf: [0; 512],
            len: 0,
        }
    }
    /// Writes a name through `Display`, returns its length.
    fn text(&mut self, name: &dyn fmt::Display) -> usize {
        self.len = 0;
        let _ = write!(self, "{name}");
        self.len
    }
}

impl fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// outflow: parse, then walk names as label slices into a stack buffer.
fn ours(msg: &[u8]) -> usize {
    let Ok(m) = Message::parse(msg) else {
        return 0;
    };
    let mut text = [0u8; MAX_NAME_WIRE];
    let mut work = m
        .questions()
        .next()
        .map_or(0, |q| q.name.write_lower(&mut text));
    for r in m.answers() {
        work += r.name.write_lower(&mut text);
        if let Some(a) = r.a() {
            work += usize::from(a.octets()[3]);
        } else if let Some(a) = r.aaaa() {
            work += usize::from(a.octets()[15]);
        } else if let Some(t) = r.target() {
            work += t.write_lower(&mut text);
        }
    }
    work
}

/// simple-dns 0.13: `Packet::parse` builds Vecs of questions, records and labels.
fn simple(msg: &[u8]) -> usize {
    use simple_dns::rdata::RData;
    let Ok(p) = simple_dns::Packet::parse(msg) else {
        return 0;
    };
    let mut text = Stack::new();
    let mut work = p.questions.first().map_or(0, |q| text.text(&q.qname));
    for r in &p.answers {
        work += text.text(&r.name);
        work += match &r.rdata {
            RData::A(a) => (a.address & 0xff) as usize,
            RData::AAAA(a) => (a.address & 0xff) as usize,
            RData::CNAME(n) => text.text(&n.0),
            RData::NS(n) => text.text(&n.0),
            RData::PTR(n) => text.text(&n.0),
            RData::MX(mx) => text.text(&mx.exchange),
            _ => 0,
        };
    }
    work
}

/// hickory-proto 0.25: `Message::from_vec` decodes into owned `Record`s and `Name`s.
fn hickory(msg: &[u8]) -> usize {
    use hickory_proto::rr::RData;
    let Ok(m) = hickory_proto::op::Message::from_vec(msg) else {
        return 0;
    };
    let mut text = Stack::new();
    let mut work = m.queries().first().map_or(0, |q| text.text(q.name()));
    for r in m.answers() {
        work += text.text(r.name());
        work += match r.data() {
            RData::A(a) => usize::from(a.0.octets()[3]),
            RData::AAAA(a) => usize::from(a.0.octets()[15]),
            RData::CNAME(n) => text.text(&n.0),
            RData::NS(n) => text.text(&n.0),
            RData::PTR(n) => text.text(&n.0),
            RData::MX(mx) => text.text(mx.exchange()),
            _ => 0,
        };
    }
    work
}

/// Parse only, counting answers: the floor under each parser's cost, without text.
fn ours_parse_only(msg: &[u8]) -> usize {
    Message::parse(msg).map_or(0, |m| m.answers().count())
}

fn simple_parse_only(msg: &[u8]) -> usize {
    simple_dns::Packet::parse(msg).map_or(0, |p| p.answers.len())
}

fn hickory_parse_only(msg: &[u8]) -> usize {
    hickory_proto::op::Message::from_vec(msg).map_or(0, |m| m.answers().len())
}

type Parser = fn(&[u8]) -> usize;
const PARSERS: [(&str, Parser); 3] = [
    ("outflow", ours),
    ("simple_dns", simple),
    ("hickory_proto", hickory),
];

/// Every parser must accept every message, or the comparison is not like for like.
fn check_all_parse() {
    for (i, msg) in MESSAGES.iter().enumerate() {
        assert!(Message::parse(msg).is_ok(), "outflow rejects message {i}");
        assert!(
            simple_dns::Packet::parse(msg).is_ok(),
            "simple-dns rejects message {i}"
        );
        assert!(
            hickory_proto::op::Message::from_vec(msg).is_ok(),
            "hickory rejects message {i}"
        );
    }
}

const PARSE_ONLY: [(&str, Parser); 3] = [
    ("outflow", ours_parse_only),
    ("simple_dns", simple_parse_only),
    ("hickory_proto", hickory_parse_only),
];

fn report_allocations() {
    for (name, parse) in PARSERS {
        // One warm-up pass (lazy statics, thread-locals), then the counted one.
        MESSAGES.iter().for_each(|m| {
            black_box(parse(m));
        });
        let before = ALLOCS.load(Ordering::Relaxed);
        MESSAGES.iter().for_each(|m| {
            black_box(parse(m));
        });
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        println!(
            "dns_parse/{name}: {allocs} heap allocations for {} messages ({:.1} per message)",
            MESSAGES.len(),
            allocs as f64 / MESSAGES.len() as f64
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dns_parse");
    g.throughput(Throughput::Elements(MESSAGES.len() as u64));
    for (name, parse) in PARSERS {
        g.bench_function(name, |b| {
            b.iter(|| MESSAGES.iter().map(|m| parse(black_box(m))).sum::<usize>())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("dns_parse_only");
    g.throughput(Throughput::Elements(MESSAGES.len() as u64));
    for (name, parse) in PARSE_ONLY {
        g.bench_function(name, |b| {
            b.iter(|| MESSAGES.iter().map(|m| parse(black_box(m))).sum::<usize>())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    check_all_parse();
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
