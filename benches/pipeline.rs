//! Criterion benchmarks of the per-packet path: decode alone; decode + flow update + inline
//! detection on a worker whose table is 90% full; and the worst case a sensor meets, a flood
//! of one-packet flows from new sources into a full table (every packet creates a flow and
//! evicts one). Packets go through `Worker::packets` in batches of 256, as in a replay.
//! Throughput is reported in packets.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;
use outflow::capture::BatchPacket;
use outflow::config::Config;
use outflow::decode::Addr;
use outflow::decode::{decode, LinkType};
use outflow::event::Event;
use outflow::worker::Worker;

const FLOWS: u32 = 58_982; // 90% of the table below
const CAPACITY: usize = 65_536;
const BATCH: usize = 256;

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
    let mut batch: Vec<BatchPacket> = Vec::with_capacity(BATCH);
    let mut boxes = Vec::new();
    let mut feed = |worker: &mut Worker, with_decode: bool, fresh: Option<u32>| {
        let mut events = 0;
        for (frames, metas) in frames.chunks(BATCH).zip(metas.chunks(BATCH)) {
            batch.clear();
            for (i, (f, m)) in frames.iter().zip(metas).enumerate() {
                seq += 1;
                clock += 100;
                let mut meta = if with_decode {
                    decode(LinkType::Ethernet, f, f.len() as u32).unwrap_or(*m)
                } else {
                    *m
                };
                if let Some(round) = fresh {
                    // A source never seen before: a new flow, evicting the least recent.
                    let n = round.wrapping_mul(FLOWS * 2).wrapping_add(seq as u32);
                    meta.src = Addr::v4([100, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
                    meta.sport = (n >> 24) as u16 ^ 0x8000;
                }
                batch.push(BatchPacket {
                    seq,
                    ts_ns: clock,
                    clock_ns: clock,
                    wire_len: f.len() as u32,
                    data_start: i as u32,
                    cap_len: f.len() as u32,
                    meta,
                    outer_copy: false,
                    held: false,
                });
            }
            worker.packets(&batch, |p| {
                frames
                    .get(p.data_start as usize)
                    .map_or(&[][..], |f| &f[..])
            });
            // The output thread returns DNS event boxes; so does the bench.
            for (_, e) in worker.drain() {
                events += 1;
                if let Event::Dns(b) = e {
                    boxes.push(b);
                }
            }
            for b in boxes.drain(..) {
                worker.recycle_dns(b);
            }
        }
        events
    };
    feed(&mut worker, false, None); // warm: creates the flows (90% of capacity)
    assert!(worker.active_flows() >= FLOWS as usize);

    g.bench_function("flow_update_90pct_full", |b| {
        b.iter(|| black_box(feed(&mut worker, false, None)))
    });
    g.bench_function("decode_and_flow_update_90pct_full", |b| {
        b.iter(|| black_box(feed(&mut worker, true, None)))
    });
    let mut flood = Worker::new(&cfg);
    let mut round = 0;
    while flood.active_flows() < CAPACITY {
        round += 1;
        feed(&mut flood, false, Some(round));
    }
    g.bench_function("new_flow_per_packet_full_table", |b| {
        b.iter(|| {
            round += 1;
            black_box(feed(&mut flood, false, Some(round)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
