use super::*;
use crate::decode::{decode, LinkType};
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
const TIMEOUT: u64 = 30 * S;

/// A raw IPv4 fragment 10.0.0.1 → 10.0.0.2 (UDP) carrying `data` at byte `offset` of the
/// datagram (rounded down to 8; offsets past 65 528 wrap, as the 13-bit field does).
fn frag4(id: u16, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let total = (20 + data.len()) as u16;
    let mut f = vec![0x45, 0];
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    let fo = ((offset / 8) as u16 & 0x1fff) | if more { 0x2000 } else { 0 };
    f.extend_from_slice(&fo.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(data);
    f
}

/// The UDP datagram (header and payload) of a message from port 5353 to 53.
fn datagram(payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x14, 0xe9, 0, 53];
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A payload of `n` bytes that differ from their neighbours, so misplaced bytes show.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Fragments of `d` at most `size` bytes (a multiple of 8) each, in order.
fn cut(id: u16, d: &[u8], size: usize) -> Vec<Vec<u8>> {
    let n = d.len().div_ceil(size);
    (0..n)
        .map(|i| {
            let lo = i * size;
            let hi = d.len().min(lo + size);
            frag4(id, lo, i + 1 < n, &d[lo..hi])
        })
        .collect()
}

/// Feeds frames at `clock`; returns every completed datagram's UDP payload.
fn feed(r: &mut Reassembler, frames: &[Vec<u8>], clock: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in frames {
        let m = decode(LinkType::RawIp, f, f.len() as u32).expect("decodes");
        let open = matches!(m.fragment, Fragment::First { .. }).then_some(42);
        r.offer(&m, f, clock, open, |first, flow, d| {
            assert_eq!(flow, 42);
            assert_eq!((first.sport, first.dport), (5353, 53));
            match udp_payload(first, d) {
                Some(p) => {
                    out.push(p.to_vec());
                    true
                }
                None => false,
            }
        });
    }
    out
}

#[test]
fn fragments_in_order_reassemble_to_the_datagram() {
    let payload = pattern(3000);
    let mut r = Reassembler::new(TIMEOUT);
    let out = feed(&mut r, &cut(1, &datagram(&payload), 1480), S);
    assert_eq!(out, vec![payload]);
    assert_eq!((r.stats.started, r.stats.reassembled), (1, 1));
    assert_eq!(r.occupancy(), (0, SLOTS as u64, 0));
}

/// Later fragments in any order after the first, duplicated: one datagram, no count but
/// the reassembly; a last fragment whose end is not 8-aligned.
#[test]
fn later_fragments_out_of_order_and_duplicated() {
    let payload = pattern(1001);
    let mut frames = cut(2, &datagram(&payload), 200);
    let first = frames.remove(0);
    frames.reverse();
    let dup = frames[2].clone();
    frames.insert(1, dup.clone());
    let mut all = vec![first, dup];
    all.extend(frames);
    let mut r = Reassembler::new(TIMEOUT);
    let out = feed(&mut r, &all, S);
    assert_eq!(out, vec![payload]);
    assert_eq!(
        r.stats,
        DefragStats {
            started: 1,
            reassembled: 1,
            ..DefragStats::default()
        }
    );
}

/// First fragment wins: a later fragment rewriting bytes already received is counted, its
/// conflicting bytes ignored, its new bytes kept, and the datagram still completes.
#[test]
fn overlapping_bytes_keep_the_first_received() {
    let payload = pattern(600);
    let d = datagram(&payload);
    let mut frames = cut(3, &d, 256);
    // Covers 248..512 (the end of the first fragment and all of the second) with other
    // bytes, before the second fragment arrives.
    let forged: Vec<u8> = d[248..512].iter().map(|b| b ^ 0xff).collect();
    frames.insert(1, frag4(3, 248, true, &forged));
    let mut r = Reassembler::new(TIMEOUT);
    let out = feed(&mut r, &frames, S);
    // 248..256 came first from the first fragment; 256..512 from the forged one; the real
    // second fragment then conflicts and loses.
    let mut want = d.clone();
    want[256..512].copy_from_slice(&forged[8..]);
    assert_eq!(out, vec![want[8..].to_vec()]);
    assert_eq!(
        r.stats.overlaps, 2,
        "the forged and the real second fragment"
    );
    assert_eq!(r.stats.reassembled, 1);
}

#[test]
fn malformed_fragments_are_counted_and_ignored() {
    let payload = pattern(400);
    let d = datagram(&payload);
    let mut r = Reassembler::new(TIMEOUT);
    let frames = [
        frag4(4, 0, true, &d[..200]),
        // Zero length.
        frag4(4, 200, true, &[]),
        // Not a multiple of 8, more fragments.
        frag4(4, 200, true, &d[200..203]),
        // Past 65 535.
        frag4(4, 65_528, false, &[0; 16]),
        // An end before bytes already received (ends at 104 < 200).
        frag4(4, 96, false, &d[96..104]),
        // The real last fragment.
        frag4(4, 200, false, &d[200..]),
    ];
    let out = feed(&mut r, &frames, S);
    assert_eq!(out, vec![payload]);
    assert_eq!((r.stats.bad, r.stats.too_big), (3, 1));
    // A second end that differs, and a fragment beyond the end, on a new datagram.
    let mut r = Reassembler::new(TIMEOUT);
    let frames = [
        frag4(5, 0, true, &d[..200]),
        frag4(5, 304, false, &d[304..]),
        frag4(5, 296, false, &d[296..400]),
        frag4(5, 408, true, &[0; 8]),
    ];
    assert!(feed(&mut r, &frames, S).is_empty());
    assert_eq!(r.stats.bad, 2);
    assert_eq!(r.occupancy().0, 1, "still waiting for 200..304");
}

/// A fragment offset that is not a multiple of 8 cannot come from the wire; one made by
/// hand is refused like a malformed fragment, not a panic.
#[test]
fn an_unaligned_offset_is_bad() {
    let d = datagram(&pattern(400));
    let frames = cut(14, &d, 208);
    let mut r = Reassembler::new(TIMEOUT);
    feed(&mut r, &frames[..1], S);
    let f = &frames[1];
    let mut m = decode(LinkType::RawIp, f, f.len() as u32).unwrap();
    m.fragment = Fragment::Later {
        id: 14,
        offset: 203,
        more: false,
    };
    r.offer(&m, f, S, None, |_, _, _| true);
    assert_eq!((r.stats.bad, r.stats.reassembled), (1, 0));
}

#[test]
fn a_fragment_cut_by_the_snaplen_is_counted() {
    let d = datagram(&pattern(400));
    let frames = cut(6, &d, 208);
    let mut r = Reassembler::new(TIMEOUT);
    feed(&mut r, &frames[..1], S);
    let f = &frames[1];
    let m = decode(LinkType::RawIp, f, f.len() as u32).unwrap();
    r.offer(&m, &f[..f.len() - 1], S, None, |_, _, _| true);
    assert_eq!((r.stats.truncated, r.stats.reassembled), (1, 0));
}

/// A datagram not completed within the timeout is dropped and counted; its late fragment
/// finds nothing.
#[test]
fn datagrams_time_out() {
    let d = datagram(&pattern(400));
    let frames = cut(7, &d, 208);
    let mut r = Reassembler::new(TIMEOUT);
    feed(&mut r, &frames[..1], S);
    assert!(feed(&mut r, &frames[1..], S + TIMEOUT).is_empty());
    assert_eq!((r.stats.timeouts, r.stats.reassembled), (1, 0));
    assert_eq!(r.occupancy().0, 0);
    // Expiry per batch counts the same.
    let mut r = Reassembler::new(TIMEOUT);
    feed(&mut r, &frames[..1], S);
    r.expire(S + TIMEOUT - 1);
    assert_eq!(r.stats.timeouts, 0);
    r.expire(S + TIMEOUT);
    assert_eq!(r.stats.timeouts, 1);
}

/// More datagrams in flight than slots: each new one evicts the oldest, O(1), counted.
#[test]
fn a_full_pool_evicts_the_oldest_datagram() {
    let d = datagram(&pattern(400));
    let mut r = Reassembler::new(TIMEOUT);
    let n = 1000u16;
    for id in 0..n {
        let frames = cut(id, &d, 208);
        feed(&mut r, &frames[..1], S + u64::from(id));
        assert!(r.occupancy().0 <= SLOTS as u64);
    }
    assert_eq!(r.stats.evicted, u64::from(n) - SLOTS as u64);
    // The newest ones are still there and complete.
    let frames = cut(n - 1, &d, 208);
    assert_eq!(feed(&mut r, &frames[1..], 2 * S).len(), 1);
    // The oldest was evicted: its last fragment finds nothing.
    assert!(feed(&mut r, &cut(0, &d, 208)[1..], 2 * S).is_empty());
    assert_eq!(r.stats.started, u64::from(n));
}

#[test]
fn too_many_pieces_drop_the_datagram() {
    let d = datagram(&pattern(2000));
    let frames = cut(8, &d, 8);
    assert!(frames.len() > usize::from(MAX_PIECES));
    let mut r = Reassembler::new(TIMEOUT);
    assert!(feed(&mut r, &frames, S).is_empty());
    assert_eq!(r.stats.too_many, 1);
    assert_eq!(r.occupancy().0, 0);
    // Up to the cap, tiny fragments reassemble.
    let d = datagram(&pattern(usize::from(MAX_PIECES) * 8 - 8));
    assert_eq!(feed(&mut r, &cut(9, &d, 8), S).len(), 1);
}

/// A datagram whose UDP length claims more than the datagram holds is reassembled but
/// cannot be parsed: counted bad.
#[test]
fn a_udp_length_beyond_the_datagram_is_bad() {
    let mut d = datagram(&pattern(400));
    d[4..6].copy_from_slice(&1000u16.to_be_bytes());
    let mut r = Reassembler::new(TIMEOUT);
    assert!(feed(&mut r, &cut(10, &d, 208), S).is_empty());
    assert_eq!((r.stats.reassembled, r.stats.bad), (1, 1));
}

/// Fragments of other datagrams, unwanted first fragments and unfragmented packets open
/// nothing and count nothing.
#[test]
fn fragments_of_unwanted_datagrams_cost_nothing() {
    let d = datagram(&pattern(400));
    let frames = cut(11, &d, 208);
    let mut r = Reassembler::new(TIMEOUT);
    for f in &frames {
        let m = decode(LinkType::RawIp, f, f.len() as u32).unwrap();
        r.offer(&m, f, S, None, |_, _, _| true);
    }
    let whole = frag4(12, 0, false, &d);
    let m = decode(LinkType::RawIp, &whole, whole.len() as u32).unwrap();
    r.offer(&m, &whole, S, Some(1), |_, _, _| true);
    assert_eq!(r.stats, DefragStats::default());
    assert_eq!(r.occupancy().0, 0);
}

/// IPv6: the fragmentable part starts after the fragment header; a destination-options
/// header after it is part of the datagram and comes before the UDP header.
#[test]
fn ipv6_with_a_header_after_the_fragment_header() {
    let payload = pattern(700);
    let mut part = vec![17, 0, 1, 4, 0, 0, 0, 0]; // destination options → UDP, PadN
    part.extend_from_slice(&datagram(&payload));
    let frag6 = |offset: usize, more: bool, data: &[u8]| {
        let mut f = vec![0x60, 0, 0, 0];
        f.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&[0xfd; 16]);
        f.extend_from_slice(&[0x20; 16]);
        let fo = (offset as u16) | u16::from(more);
        f.extend_from_slice(&[60, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        f.extend_from_slice(data);
        f
    };
    let frames = [
        frag6(0, true, &part[..400]),
        frag6(400, false, &part[400..]),
    ];
    let mut r = Reassembler::new(TIMEOUT);
    let out = feed(&mut r, &frames, S);
    assert_eq!(out, vec![payload]);
}

/// What the reassembler must produce, byte by byte: a simple model of the policy.
struct Model {
    bytes: Vec<Option<u8>>,
    end: Option<usize>,
    high: usize,
    pieces: u16,
    overlaps: u64,
    bad: u64,
    too_big: u64,
    dropped: bool,
}

impl Model {
    fn add(&mut self, offset: usize, more: bool, data: &[u8]) {
        let end = offset + data.len();
        if end > MAX_DATAGRAM {
            self.too_big += 1;
            return;
        }
        let inconsistent = match (more, self.end) {
            (true, Some(e)) => end > e,
            (false, Some(e)) => end != e,
            (false, None) => end < self.high,
            (true, None) => false,
        };
        if data.is_empty() || (more && data.len() % 8 != 0) || inconsistent {
            self.bad += 1;
            return;
        }
        let (mut new, mut conflict) = (false, false);
        for (i, b) in data.iter().enumerate() {
            match self.bytes[offset + i] {
                Some(x) => conflict |= x != *b,
                None => {
                    self.bytes[offset + i] = Some(*b);
                    new = true;
                }
            }
        }
        self.overlaps += u64::from(conflict);
        if !more {
            self.end = Some(end);
        }
        self.high = self.high.max(end);
        if new {
            self.pieces += 1;
            self.dropped |= self.pieces > MAX_PIECES;
        }
    }

    fn complete(&self) -> Option<Vec<u8>> {
        let end = self.end?;
        self.bytes[..end].iter().copied().collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random fragmentation of a DNS-sized datagram, the later fragments shuffled after the
    /// first, with duplicates, forged overlaps and malformed pieces mixed in: never a panic,
    /// and exactly what the byte model says: the datagram (first bytes kept) when it is
    /// complete, and the same counts.
    #[test]
    fn random_fragmentation_reassembles_or_is_counted(
        len in 1usize..4000,
        size in 1usize..200,
        order in any::<u64>(),
        extra in proptest::collection::vec((0usize..4200, 0usize..300, any::<bool>(), any::<u8>(), 0u8..4), 0..12),
    ) {
        let d = datagram(&pattern(len));
        let size = size * 8;
        // A datagram that fits one fragment is not fragmented.
        prop_assume!(d.len() > size);
        let mut frames = cut(13, &d, size);
        let first = frames.remove(0);
        let mut later: Vec<(usize, bool, Vec<u8>)> = frames
            .iter()
            .map(|f| {
                let m = decode(LinkType::RawIp, f, f.len() as u32).unwrap();
                let Fragment::Later { offset, more, .. } = m.fragment else { unreachable!() };
                (usize::from(offset), more, f[20..].to_vec())
            })
            .collect();
        for (at, n, more, fill, kind) in extra {
            let at = at / 8 * 8;
            let piece = match kind {
                // A copy of real bytes (a duplicate or a partial one).
                0 => d.get(at..(at + n).min(d.len())).unwrap_or(&[]).to_vec(),
                // Forged bytes.
                1 => vec![fill; n],
                // A misaligned length.
                2 => vec![fill; n / 8 * 8 + 3],
                _ => Vec::new(),
            };
            if at > 0 {
                later.push((at, more, piece));
            }
        }
        // Fisher-Yates with a fixed generator seeded by `order`.
        let mut x = order | 1;
        for i in (1..later.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            later.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut model = Model {
            bytes: vec![None; MAX_DATAGRAM + 8],
            end: None,
            high: 0,
            pieces: 0,
            overlaps: 0,
            bad: 0,
            too_big: 0,
            dropped: false,
        };
        let mut r = Reassembler::new(TIMEOUT);
        let mut got = feed(&mut r, std::slice::from_ref(&first), S);
        model.add(0, true, &first[20..]);
        let mut want = None;
        for (offset, more, data) in &later {
            if want.is_some() || model.dropped {
                break;
            }
            got.extend(feed(&mut r, &[frag4(13, *offset, *more, data)], S));
            model.add(*offset, *more, data);
            if !model.dropped {
                want = model.complete();
            }
        }
        prop_assert_eq!(r.stats.overlaps, model.overlaps);
        prop_assert_eq!(r.stats.bad, model.bad + u64::from(want.as_ref().is_some_and(|w| udp_payload_of(w).is_none())));
        prop_assert_eq!(r.stats.too_big, model.too_big);
        prop_assert_eq!(r.stats.too_many, u64::from(model.dropped));
        // Every datagram started is accounted for.
        let st = r.stats;
        prop_assert_eq!(st.started, st.reassembled + st.timeouts + st.evicted + st.too_many + r.occupancy().0);
        match want {
            Some(w) => {
                prop_assert_eq!(r.stats.reassembled, 1);
                let expect: Vec<Vec<u8>> = udp_payload_of(&w).into_iter().collect();
                prop_assert_eq!(got, expect);
            }
            None => {
                prop_assert_eq!(r.stats.reassembled, 0);
                prop_assert!(got.is_empty());
            }
        }
    }
}

/// The UDP payload of a whole datagram (the model's view of [`udp_payload`]).
fn udp_payload_of(d: &[u8]) -> Option<Vec<u8>> {
    let n = usize::from(u16::from_be_bytes([*d.get(4)?, *d.get(5)?]));
    (n >= 8).then(|| d.get(8..n).map(<[u8]>::to_vec)).flatten()
}

/// The datagram key carries the tunnel tag like the flow key: the same addresses and IP id
/// behind two tunnels (two mirrored VPCs) are two datagrams.
#[test]
fn datagrams_behind_two_tunnels_have_two_keys() {
    use crate::decode::{TunnelKind, TunnelTag};
    let f = cut(9, &datagram(&pattern(100)), 48);
    let m = decode(LinkType::RawIp, &f[0], f[0].len() as u32).unwrap();
    let tag = |id| TunnelTag {
        kind: TunnelKind::Vxlan as u8,
        id,
    };
    let a = PacketMeta {
        tunnel: tag(1),
        ..m
    };
    let b = PacketMeta {
        tunnel: tag(2),
        ..m
    };
    assert_ne!(DatagramKey::of(&a), DatagramKey::of(&b));
}
