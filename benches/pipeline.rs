//! Criterion benchmarks of the per-packet path: decode alone, and decode + flow update +
//! inline detection on a worker whose table is 90% full. Throughput is reported in packets.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;
use outflow::capture::BatchPacket;
use outflow::config::Config;
use outflow::decode::{decode, LinkType};
use outflow::worker::Worker;

const FLOWS: u32 = 58_982; // 90% of the table below
const CAPACITY: usize = 65_536;

/// One data packet per flow, alternating directions, IPv4 TCP/UDP with 1400/60-byte payloads.
fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(FLOWS as usize * 2);
    for i in 0..FLOWS {
        let home = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let ext = [198, 51, (i >> 8) as u8, i as u8];
        let port = 1024 + (i % 60_000) as u16;
        let mut f = Vec::new();
        let mut g = Vec::new();
        let up = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(home, ext, 64);
        let down = PacketBuilder::ethernet2([2; 6], [1; 6]).ipv4(ext, home, 64);
        if i % 4 == 0 {
            up.udp(port, 53).write(&mut f, &[0; 60]).unwrap();
            down.udp(53, port).write(&mut g, &[0; 200]).unwrap();
        } else {
            up.tcp(port, 443, 1, 65535)
                .ack(1)
                .write(&mut f, &[0; 1400])
                .unwrap();
            down.tcp(443, port, 1, 65535)
                .ack(1)
                .write(&mut g, &[])
                .unwrap();
        }
        out.push(f);
        out.push(g);
    }
    out
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("per_packet");
    g.throughput(Throughput::Elements(frames.len() as u64));

    g.bench_function("decode", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(decode(LinkType::Ethernet, black_box(f), f.len() as u32).ok());
            }
        })
    });

    let mut cfg = Config::default();
    cfg.flow.capacity_per_worker = CAPACITY;
    let mut worker = Worker::new(&cfg);
    let metas: Vec<_> = frames
        .iter()
        .map(|f| decode(LinkType::Ethernet, f, f.len() as u32).unwrap())
        .collect();
    let mut seq = 0u64;
    let mut clock = 1_700_000_000_000_000_000u64;
    let mut feed = |worker: &mut Worker, with_decode: bool| {
        for (f, m) in frames.iter().zip(&metas) {
            seq += 1;
            clock += 100;
            let meta = if with_decode {
                decode(LinkType::Ethernet, f, f.len() as u32).unwrap_or(*m)
            } else {
                *m
            };
            worker.packet(
                &BatchPacket {
                    seq,
                    ts_ns: clock,
                    clock_ns: clock,
                    wire_len: f.len() as u32,
                    data_start: 0,
                    cap_len: f.len() as u32,
                    meta,
                },
                f,
            );
        }
        worker.drain().count()
    };
    feed(&mut worker, false); // warm: creates the flows (90% of capacity)
    assert!(worker.active_flows() >= FLOWS as usize);

    g.bench_function("flow_update_90pct_full", |b| {
        b.iter(|| black_box(feed(&mut worker, false)))
    });
    g.bench_function("decode_and_flow_update_90pct_full", |b| {
        b.iter(|| black_box(feed(&mut worker, true)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
