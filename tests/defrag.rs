//! IP fragment reassembly (issue 13): a DNS response that arrives in IPv4 or IPv6 fragments,
//! in order, reversed or shuffled, over one or three workers, gives exactly the DNS
//! transaction the unfragmented response gives, and the fragments' bytes are counted in
//! their flows exactly as without reassembly. suricata-verify's `defrag` and `ipv6-evasion`
//! captures replay without a panic and with the counters right.

mod common;

use outflow::config::Config;
use outflow::decode::{decode, Fragment, LinkType};
use outflow::defrag::{DefragStats, Reassembler};
use outflow::gen::{fragment_packet, Packet, UdpExchange};
use outflow::replay::ReplayReport;
use std::net::SocketAddr;
use std::path::Path;

const S: u64 = 1_000_000_000;
const ETHERNET: usize = 14;

/// A DNS query and its `response_size`-byte response (A records), the response split into
/// fragments of `frag` bytes and put in the order `order` gives (indices into the
/// fragments); the unfragmented capture alongside.
fn exchange(
    client: &str,
    server: &str,
    response_size: usize,
    frag: usize,
    order: impl Fn(usize) -> Vec<usize>,
) -> (Vec<Packet>, Vec<Packet>) {
    let client: SocketAddr = client.parse().unwrap();
    let server: SocketAddr = server.parse().unwrap();
    let x = UdpExchange::new(client, server, 1, 40, response_size);
    let whole: Vec<Packet> = x.packets().collect();
    assert_eq!(whole.len(), 2);
    let frags = fragment_packet(&whole[1], ETHERNET, frag, 0x5eed);
    assert!(frags.len() > 2, "{} fragments", frags.len());
    let mut split = vec![whole[0].clone()];
    split.extend(order(frags.len()).into_iter().map(|i| frags[i].clone()));
    (whole, split)
}

fn replay(
    dir: &Path,
    name: &str,
    packets: Vec<Packet>,
    cfg: &Config,
    workers: usize,
) -> ReplayReport {
    let path = dir.join(name);
    common::write_pcap(&path, packets);
    common::replay(cfg, workers, &[path])
}

/// An order of fragments: the indices of `n` fragments in the order they are sent.
type Order = fn(usize) -> Vec<usize>;

#[test]
fn fragmented_dns_responses_give_the_transaction_of_the_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let orders: [(&str, Order); 3] = [
        ("in order", |n| (0..n).collect()),
        ("reversed", |n| (0..n).rev().collect()),
        // The first fragment in the middle, the others out of order around it.
        ("shuffled", |n| {
            let mut v: Vec<usize> = (1..n).rev().collect();
            v.insert(n / 2, 0);
            v
        }),
    ];
    for (family, client, server, frag) in [
        ("ipv4", "10.0.0.5:40000", "192.0.2.53:53", 1480),
        ("ipv6", "[fd00::5]:40000", "[2001:db8::53]:53", 1232),
    ] {
        for (how, order) in orders {
            let (whole, split) = exchange(client, server, 4000, frag, order);
            let n = split.len() as u64 - 1;
            let first_at = order(n as usize).iter().position(|i| *i == 0).unwrap() as u64;
            for workers in [1, 3] {
                let at = format!("{family}, {how}, {workers} workers");
                let cfg = Config::default();
                let a = replay(dir.path(), "whole.pcap", whole.clone(), &cfg, workers);
                let b = replay(dir.path(), "split.pcap", split.clone(), &cfg, workers);
                assert_eq!(a.dns_records.len(), 1, "{at}");
                assert!(!a.dns_records[0].answers.is_empty(), "{at}");
                assert_eq!(b.dns_records, a.dns_records, "{at}");
                let (da, db) = (&a.summary.flows.dns, &b.summary.flows.dns);
                assert_eq!((db.messages, db.malformed), (2, 0), "{at}");
                assert_eq!((da.messages, da.malformed), (2, 0), "{at}");
                assert_eq!(
                    b.summary.flows.defrag,
                    DefragStats {
                        started: 1,
                        reassembled: 1,
                        ..DefragStats::default()
                    },
                    "{at}"
                );
                // The fragments before the first were held and delivered once.
                let f = &b.summary.reader.fragments;
                assert_eq!(
                    (f.held, f.replayed, f.not_held),
                    (first_at, first_at, 0),
                    "{at}"
                );
                assert_eq!(b.summary.table("ip_reassembly").unwrap().0, 0, "{at}");
                assert_eq!(b.summary.table("fragments_held").unwrap().0, 0, "{at}");
                // Byte counting does not see reassembly: the same flows without DNS.
                let mut off = cfg.clone();
                off.dns.enabled = false;
                let c = replay(dir.path(), "split.pcap", split.clone(), &off, workers);
                assert_eq!(b.flows, c.flows, "{at}");
                assert_eq!(c.summary.flows.defrag, DefragStats::default(), "{at}");
                assert_eq!(c.summary.reader.fragments.held, 0, "{at}");
                let text = b.summary.to_string();
                assert!(
                    text.contains("ip reassembly  datagrams: started 1, reassembled 1, timeout 0"),
                    "{at}: {text}"
                );
            }
        }
    }
}

/// A DNS response whose fragments overlap with forged bytes: the first bytes win, the
/// message is still parsed, and the overlap is counted.
#[test]
fn an_overlapping_forgery_does_not_hide_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, mut split) = exchange("10.0.0.5:40000", "192.0.2.53:53", 3000, 1480, |n| {
        (0..n).collect()
    });
    // A copy of the second fragment with its data flipped, after the real one.
    let mut forged = split[2].clone();
    for b in &mut forged.frame[ETHERNET + 20..] {
        *b ^= 0x55;
    }
    split.insert(3, forged);
    let cfg = Config::default();
    let a = replay(dir.path(), "whole.pcap", whole, &cfg, 2);
    let b = replay(dir.path(), "split.pcap", split, &cfg, 2);
    assert_eq!(b.dns_records, a.dns_records);
    let d = &b.summary.flows.defrag;
    assert_eq!((d.reassembled, d.overlaps), (1, 1));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any fragment size, any order (the first fragment anywhere), duplicates, one to three
    /// workers, IPv4 or IPv6: the response is reassembled once and gives the transaction
    /// of the whole response; without one of its later fragments it is not, and is counted
    /// as in flight.
    #[test]
    fn any_order_and_duplicates_give_the_same_transaction(
        v6 in proptest::bool::ANY,
        size in 3000usize..4500,
        frag in 32usize..120,
        order in proptest::collection::vec(proptest::num::u64::ANY, 1..40),
        dups in proptest::collection::vec(proptest::num::usize::ANY, 0..4),
        lose in proptest::option::of(proptest::num::usize::ANY),
        workers in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (c, s) = if v6 {
            ("[fd00::5]:40000", "[2001:db8::53]:53")
        } else {
            ("10.0.0.5:40000", "192.0.2.53:53")
        };
        let (whole, split) = exchange(c, s, size, frag * 8, |n| (0..n).collect());
        let query = split[0].clone();
        let mut frags: Vec<Packet> = split[1..].to_vec();
        for d in &dups {
            let p = frags[d % frags.len()].clone();
            frags.push(p);
        }
        let lost = lose.map(|i| 1 + i % (frags.len() - 1 - dups.len()));
        if let Some(i) = lost {
            let gone = frags[i].clone();
            frags.retain(|p| *p != gone);
        }
        // Sort by random keys: any permutation.
        let mut keyed: Vec<(u64, Packet)> = frags
            .into_iter()
            .enumerate()
            .map(|(i, p)| (order[i % order.len()] ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), p))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        let mut packets = vec![query];
        packets.extend(keyed.into_iter().map(|(_, p)| p));
        let cfg = Config::default();
        let a = replay(dir.path(), "whole.pcap", whole, &cfg, workers);
        let b = replay(dir.path(), "split.pcap", packets, &cfg, workers);
        let d = &b.summary.flows.defrag;
        let live = b.summary.table("ip_reassembly").unwrap().0;
        proptest::prop_assert_eq!((d.overlaps, d.bad, d.too_big, d.timeouts, d.evicted), (0, 0, 0, 0, 0));
        proptest::prop_assert_eq!(d.started, d.reassembled + live);
        if lost.is_none() {
            proptest::prop_assert_eq!(d.reassembled, 1);
            proptest::prop_assert_eq!(&b.dns_records, &a.dns_records);
        } else {
            proptest::prop_assert_eq!(d.reassembled, 0);
            proptest::prop_assert!(live >= 1);
            proptest::prop_assert_eq!(b.summary.flows.dns.messages, 1, "the query alone");
        }
    }
}

/// Reassembles every fragmented datagram of a capture in arrival order, as a worker would
/// if its parsers wanted every first fragment: (counters, datagrams still incomplete,
/// lengths of the datagrams reassembled).
fn reassemble_all(path: &Path) -> (DefragStats, u64, Vec<usize>) {
    let mut cap = pcap::Capture::from_file(path).unwrap();
    let link = LinkType::from_dlt(cap.get_datalink().0);
    let mut r = Reassembler::new(30 * S);
    let mut lens = Vec::new();
    while let Ok(p) = cap.next_packet() {
        let ts = outflow::capture::ts_ns(p.header).unwrap();
        let Ok(m) = decode(link, p.data, p.header.len) else {
            continue;
        };
        let open = matches!(m.fragment, Fragment::First { .. }).then_some(0);
        r.offer(&m, p.data, ts, open, |_, _, d| {
            lens.push(d.len());
            true
        });
    }
    (r.stats, r.occupancy().0, lens)
}

/// suricata-verify's fragment evasion cases (see each test.yaml; fragments read with
/// tcpdump). None carries DNS, so a replay reassembles nothing: each must replay without a
/// panic, count its fragments as before, and leave the reassembly counters at zero. The
/// reassembler itself is then run over each capture with every first fragment wanted, and
/// must find what the case is about:
///
/// - `defrag/bug-6887-*-ipv4-tcp-syn`: a TCP SYN in 8-byte fragments. The first holds only
///   8 bytes of the TCP header and is not decoded (`bad_transport_header`), so its two later
///   fragments are orphans and nothing is reassembled.
/// - `defrag/bug-6887-defrag-ipv6-tcp`: 1020 bytes of TCP in three IPv6 fragments:
///   reassembled.
/// - `ipv6-malformed-fragments-1`, `-3`, `-17`: the second fragment sent twice with other
///   bytes (the README's "overlap"): one overlap, reassembled with the first copy.
/// - `-7`: the last fragment starts inside the second and rewrites its tail: one overlap.
/// - `-15`: 54 fragments whose last ends at 65 543: `too_big`; the datagram never completes.
/// - `-23`: a middle fragment of 175 bytes with "more fragments" set: `bad`; never
///   completes.
/// - `-9`, `-25`: atomic fragments (offset 0, no "more"): not fragmented at all (`-25`'s
///   empty TCP header is a decode error); `-11`: 128 nested fragment headers, refused by the
///   extension-header bound (`bad_ip_header`).
#[test]
fn suricata_verify_fragment_cases() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let sv = root.join("suricata-verify");
    // (case, (started, reassembled, overlaps, too_big, bad), incomplete, reassembled lengths,
    //  reader (first, matched, orphaned), decode errors)
    type Want = (&'static str, [u64; 5], u64, &'static [usize], [u64; 3], u64);
    let cases: [Want; 12] = [
        (
            "defrag__bug-6887-defrag-eth-vlan-ipv4-tcp-syn",
            [0; 5],
            0,
            &[],
            [0, 0, 2],
            1,
        ),
        (
            "defrag__bug-6887-defrag-ipv4-tcp-syn",
            [0; 5],
            0,
            &[],
            [0, 0, 2],
            1,
        ),
        (
            "defrag__bug-6887-defrag-ipv6-tcp",
            [1, 1, 0, 0, 0],
            0,
            &[1020],
            [1, 2, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-1",
            [1, 1, 1, 0, 0],
            0,
            &[1208],
            [1, 3, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-3",
            [1, 1, 1, 0, 0],
            0,
            &[1208],
            [1, 3, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-7",
            [1, 1, 1, 0, 0],
            0,
            &[1208],
            [1, 2, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-9",
            [0; 5],
            0,
            &[],
            [0, 0, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-11",
            [0; 5],
            0,
            &[],
            [0, 0, 0],
            1,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-15",
            [1, 0, 0, 1, 0],
            1,
            &[],
            [1, 53, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-17",
            [1, 1, 1, 0, 0],
            0,
            &[1208],
            [1, 3, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-23",
            [1, 0, 0, 0, 1],
            1,
            &[],
            [1, 2, 0],
            0,
        ),
        (
            "ipv6-evasion__ipv6-malformed-fragments-25",
            [0; 5],
            0,
            &[],
            [0, 0, 0],
            1,
        ),
    ];
    for (case, counts, incomplete, lens, reader, undecoded) in cases {
        let dir = sv.join(case);
        let pcap = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pcap"))
            .unwrap();
        let (st, left, got) = reassemble_all(&pcap);
        assert_eq!(
            [st.started, st.reassembled, st.overlaps, st.too_big, st.bad],
            counts,
            "{case}: {st:?}"
        );
        assert_eq!(
            (st.timeouts, st.evicted, st.too_many, st.truncated),
            (0, 0, 0, 0)
        );
        assert_eq!(left, incomplete, "{case}");
        assert_eq!(got, lens, "{case}");
        for workers in [1, 2] {
            let rep = common::replay(&Config::default(), workers, std::slice::from_ref(&pcap));
            let s = &rep.summary;
            assert_eq!(s.flows.defrag, DefragStats::default(), "{case}");
            let f = &s.reader.fragments;
            assert_eq!([f.first, f.matched, f.orphaned], reader, "{case}");
            assert_eq!((f.held, f.replayed), (0, 0), "{case}: no UDP orphans");
            let errors: u64 = s.reader.decode_errors.iter().sum();
            assert_eq!(errors, undecoded, "{case}: {:?}", s.reader.decode_errors);
        }
    }
}
