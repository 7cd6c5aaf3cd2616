//! Every public capture in `../shared/pcaps` replays without a panic, with every frame
//! accounted for; tcpdump's crash-regression captures are counted under the right reason.
//! Skipped when `../shared/pcaps` is absent.

mod common;

use outflow::config::Config;
use outflow::decode::DecodeError;
use std::path::{Path, PathBuf};

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            captures(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap")
        {
            out.push(p);
        }
    }
}

#[test]
fn every_shared_capture_replays_and_accounts_for_every_frame() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let mut all = Vec::new();
    captures(&root, &mut all);
    all.sort();
    assert!(all.len() >= 50, "found only {} captures", all.len());
    for path in &all {
        let r = common::replay(&Config::default(), 2, std::slice::from_ref(path));
        let s = &r.summary;
        let undecoded: u64 = s.reader.decode_errors.iter().sum();
        assert!(s.reader.frames > 0, "{}: no frames", path.display());
        assert_eq!(
            s.reader.frames,
            s.reader.decoded + undecoded,
            "{}: frames not accounted for",
            path.display()
        );
        assert_eq!(s.flows.packets, s.reader.decoded, "{}", path.display());
        // Every flow that was created was written out exactly once.
        assert_eq!(s.records, s.flows.flows_created, "{}", path.display());
    }
}

/// tcpdump's regression captures, each one frame: the reason it is skipped, or `None` when
/// the frame is a valid IP packet whose *application* data is hostile (DNS), which the flow
/// stage must count normally.
#[test]
fn tcpdump_malformed_frames_are_counted_under_their_reason() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let cases: &[(&str, Option<DecodeError>)] = &[
        // IHL field below 5.
        (
            "tcpdump_ipv4_invalid_hdr_length.pcap",
            Some(DecodeError::BadIpHeader),
        ),
        // IPv4 total length larger than the frame.
        (
            "tcpdump_ipv4_invalid_total_length.pcap",
            Some(DecodeError::IpLengthExceedsFrame),
        ),
        // Raw IPv6 frame cut inside the 40-byte header.
        (
            "tcpdump_ipv6hdr-heapoverflow.pcap",
            Some(DecodeError::TruncatedIp),
        ),
        // TCP header cut by the capture.
        (
            "tcpdump_tcp_header_heapoverflow.pcap",
            Some(DecodeError::TruncatedTransport),
        ),
        // UDP header cut by the capture.
        (
            "tcpdump_udp-length-heapoverflow.pcap",
            Some(DecodeError::TruncatedTransport),
        ),
        // UDP length field beyond its IP payload.
        (
            "tcpdump_hncp_dhcpv6data-oobr.pcap",
            Some(DecodeError::BadTransportHeader),
        ),
        // DNS compression loops / forward pointers inside valid UDP: decoded as traffic.
        ("tcpdump_dns-zlip-1.pcap", None),
        ("tcpdump_dns_fwdptr.pcap", None),
        ("tcpdump_dns-badlabel.pcap", None),
        // A RST carrying data, truncated payload: still a valid TCP packet.
        ("tcpdump_tcp_rst_data-trunc.pcap", None),
    ];
    for (file, reason) in cases {
        let path = root.join("malformed").join(file);
        let r = common::replay(&Config::default(), 1, &[path]);
        let s = &r.summary;
        assert_eq!(s.reader.frames, 1, "{file}");
        match reason {
            Some(e) => {
                assert_eq!(
                    s.decode_errors(*e),
                    1,
                    "{file}: {:?}",
                    s.reader.decode_errors
                );
                assert_eq!(s.reader.decoded, 0, "{file}");
            }
            None => {
                assert_eq!(s.reader.decoded, 1, "{file}: {:?}", s.reader.decode_errors);
                assert_eq!(r.flows.len(), 1, "{file}");
            }
        }
    }
    // zlip-1's UDP length field says 8: the 35 trailing bytes are padding, not payload.
    let r = common::replay(
        &Config::default(),
        1,
        &[root.join("malformed/tcpdump_dns-zlip-1.pcap")],
    );
    assert_eq!(r.flows[0].orig.ip_bytes, 63);
    assert_eq!(r.flows[0].orig.payload_bytes, 0);
}
