//! Any bytes as a sequence of raw IP packets, through what a fragment goes through: the
//! reader's port map and held orphans (`capture::frag`, holding for port 53), then a worker's
//! reassembler (`defrag`), with held orphans delivered right after their first fragment as
//! the dispatcher does. A second reassembler takes every first fragment, so non-DNS inputs
//! exercise it too. Never a panic, and the promises hold: no more datagrams in flight than
//! slots, no datagram longer than 65 535 bytes, and every datagram started is accounted for
//! (reassembled, timed out, evicted, dropped for too many pieces, or still in flight).
//!
//! Input: records of [time step (1 byte, in seconds), length (2 bytes, big-endian), packet].

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::capture::frag::{FragPorts, Resolved};
use outflow::decode::{decode, Fragment, LinkType, PacketMeta};
use outflow::defrag::{udp_payload, DefragStats, Reassembler, MAX_DATAGRAM, SLOTS};

const S: u64 = 1_000_000_000;

fn offer(r: &mut Reassembler, m: &PacketMeta, bytes: &[u8], clock: u64, open: bool) {
    let open = (open && matches!(m.fragment, Fragment::First { .. })).then_some(1);
    r.offer(m, bytes, clock, open, |first, _, d| {
        assert!(d.len() <= MAX_DATAGRAM);
        if let Some(p) = udp_payload(first, d) {
            assert!(p.len() + 8 <= d.len());
        }
        true
    });
    assert!(r.occupancy().0 <= SLOTS as u64);
}

fn accounted(st: &DefragStats, live: u64) {
    assert_eq!(
        st.started,
        st.reassembled + st.timeouts + st.evicted + st.too_many + live
    );
}

fuzz_target!(|data: &[u8]| {
    let mut ports = FragPorts::new(64, 30 * S).holding(&[53]);
    let mut dns = Reassembler::new(30 * S);
    let mut all = Reassembler::new(30 * S);
    let mut clock = 0u64;
    let mut rest = data;
    while let [step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        clock += u64::from(*step) * S;
        let Ok(mut m) = decode(LinkType::RawIp, frame, len as u32) else {
            continue;
        };
        let resolved = ports.resolve(&mut m, clock);
        let wanted = m.proto == 17 && m.uses_port(&[53]);
        offer(&mut dns, &m, frame, clock, wanted);
        offer(&mut all, &m, frame, clock, true);
        match resolved {
            Resolved::Orphan => ports.hold(&m, frame, clock),
            Resolved::First => {
                for (h, bytes) in ports.take_held(&m, clock) {
                    assert_eq!((h.sport, h.dport), (m.sport, m.dport));
                    offer(&mut dns, &h, bytes, clock, false);
                }
            }
            _ => {}
        }
    }
    for r in [&mut dns, &mut all] {
        accounted(&r.stats, r.occupancy().0);
        r.expire(u64::MAX);
        assert_eq!(r.occupancy().0, 0);
        accounted(&r.stats, 0);
    }
});
