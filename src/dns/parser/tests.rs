// Tests index, unwrap and count freely: a panic here is a failed test, not a crashed sensor.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// Hex text (whitespace ignored) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn text(name: &Name<'_>) -> String {
    let mut out = [0u8; MAX_NAME_WIRE];
    let len = name.write_lower(&mut out);
    String::from_utf8(out[..len].to_vec()).unwrap()
}

// ---- Real messages (UDP payloads, shared/pcaps/...) ------------------------------------

// benign/chrissanders_dns_query_response.pcapng, frame 1: A? wireshark.org
const A_QUERY: &str = "180f010000010000000000000977697265736861726b036f72670000010001";

// benign/chrissanders_dns_query_response.pcapng, frame 2: wireshark.org A 128.121.50.122
const A_RESPONSE: &str = "180f818000010001000000000977697265736861726b036f72670000010001
    c00c000100010000384000048079327a";

// benign/sv_dns_dig_www.suricata-ids.org.pcap, frame 1: dig A? www.suricata-ids.org, EDNS 4096
const CNAME_QUERY: &str = "8d3201200001000000000001037777770c73757269636174612d696473036f7267
    00000100010000291000000000000000";

// benign/sv_dns_dig_www.suricata-ids.org.pcap, frame 2: www.suricata-ids.org CNAME
// suricata-ids.org, which has A 192.0.78.24 and 192.0.78.25
const CNAME_RESPONSE: &str = "8d3281a00001000300000000037777770c73757269636174612d696473036f72
    670000010001c00c0005000100000dd800120c73757269636174612d696473036f726700c0320001000100
    0000f40004c0004e18c03200010001000000f40004c0004e19";

// zeek/scripts__base__protocols__dns__multiple-txt-strings/dns-txt-multiple.pcap, frame 1:
// TXT? flkr._domainkey.flickr.com
const TXT_QUERY: &str = "6daf0100000100000000000004666c6b720a5f646f6d61696e6b657906666c6963
    6b7203636f6d0000100001";

// Same capture, frame 2: two CNAMEs to fa14._domainkey.yahoo.com, a TXT of two strings
// (127 + 98 bytes of DKIM key), 5 NS in authority, 5 A in additional.
const TXT_RESPONSE: &str = "6daf8500000100030005000504666c6b720a5f646f6d61696e6b657906666c69
    636b7203636f6d0000100001c00c000500010000038400070466613134c011c03800050001000003840018
    04666131340a5f646f6d61696e6b6579057961686f6fc023c04b0010000100001c2000e37f6b3d7273613b
    20703d4d4947664d413047435371475349623344514542415155414134474e4144434269514b4267514450
    645066794a4d32523247714d795a4d31666c547a46654449552b65374b6d694b527735797a335868742b63
    67454969486d6d356c49474275574363357274697930436378655070716363504b6a6e624853724449323350
    552b484f75714a366572674531494f734c364c4f4567473659543533764d62385a36556942537359506c7244
    45432b384355496b544c4d4c584a6175524b35624e524b56314154477a4746706633546a5a745777494441
    514142c050000200010002a3000006036e7335c05bc050000200010002a3000006036e7334c05bc0500002
    00010002a3000006036e7333c05bc050000200010002a3000006036e7332c05bc050000200010002a30000
    06036e7331c05bc1a60001000100127500000444b48310c19400010001001275000004448eff10c1820001
    0001001275000004cb54dd35c17000010001001275000004628a0b9dc15e0001000100127500000477a0f77c";

// suricata-verify/dns__dns-udp-eve-txt/input.pcap, frame 2: google.com TXT "v=spf1 ..."
const TXT_SPF_RESPONSE: &str = "6e538180000100010000000106676f6f676c6503636f6d0000100001c00c00
    10000100000c91002423763d7370663120696e636c7564653a5f7370662e676f6f676c652e636f6d207e61
    6c6c0000291000000000000000";

// suricata-verify/dns__dns-udp-eve-log-answer-only/dns-udp-google.com-a-aaaa-mx.pcap,
// frame 6: google.com MX, exchanges compressed as chains (alt1 -> aspmx.l -> google.com)
const MX_RESPONSE: &str = "56168180000100050000000106676f6f676c6503636f6d00000f0001c00c000f00
    0100000257000c000a056173706d78016cc00cc00c000f0001000002570009001404616c7431c02ac00c00
    0f0001000002570009001e04616c7432c02ac00c000f0001000002570009002804616c7433c02ac00c000f
    0001000002570009003204616c7434c02a0000290200000000000000";

// Same capture, frame 4: google.com AAAA 2607:f8b0:400f:801::200e
const AAAA_RESPONSE: &str = "8d708180000100010000000106676f6f676c6503636f6d00001c0001c00c001c
    00010000012b00102607f8b0400f0801000000000000200e0000290200000000000000";

// Same capture, frame 2: google.com A, 12 answers
const A12_RESPONSE: &str = "1a2d81800001000c0000000106676f6f676c6503636f6d0000010001c00c0001
    00010000012b0004d8c5f2f4c00c000100010000012b0004d8c5f2d9c00c000100010000012b0004d8c5f2
    d8c00c000100010000012b0004d8c5f2d2c00c000100010000012b0004d8c5f2edc00c00010001000001
    2b0004d8c5f2e7c00c000100010000012b0004d8c5f2eec00c000100010000012b0004d8c5f2e6c00c0001
    00010000012b0004d8c5f2e0c00c000100010000012b0004d8c5f2fbc00c000100010000012b0004d8c5f2
    dfc00c000100010000012b0004d8c5f2f50000290200000000000000";

// benign/chrissanders_dns_lab.pcapng, frame 10: 75.119.206.25 PTR apache2-rank.fullsail...
const PTR_RESPONSE: &str = "fc5081800001000100000000023235033230360331313902373507696e2d6164
    6472046172706100000c0001c00c000c00010000384000250c617061636865322d72616e6b0866756c6c73
    61696c09647265616d686f737403636f6d00";

// suricata-verify/dns__dns-corrupt-additionals/input.pcap, frame 2: two good SRV answers,
// then an OPT whose RDLENGTH (258) runs past the end of the message.
const SRV_CORRUPT_RESPONSE: &str = "eb5681800001000200000001045f736970045f75647003736970057
    66f69636506676f6f676c6503636f6d0000210001c00c002100010000011300260014000113c40d736970
    2d616e79636173742d3205766f69636506676f6f676c6503636f6d00c00c00210001000001130026000a00
    0113c40d7369702d616e79636173742d3105766f69636506676f6f676c6503636f6d000000291000000000
    000102";

// dns_tunnel/dmachard_iodine.pcap, frame 1: iodine NULL? yrb0pe.t1.biillpi.com
const IODINE_NULL_QUERY: &str = "0aa90100000100000000000006797262307065027431076269696c6c7069
    03636f6d00000a0001";

// Same capture, frame 2: the NULL answer carrying 48 bytes of tunnel data
const IODINE_NULL_RESPONSE: &str = "0aa98500000100010000000006797262307065027431076269696c6c
    706903636f6d00000a0001c00c000a000100000000003000000000ffffffff55555555aaaaaaaa8163c8d2
    c77cb2175f4fcec9492d522161a9712025b30673e6d84430795057bf";

// Same capture, frame 7: iodine NULL query with EDNS, DO bit set
const IODINE_NULL_QUERY_EDNS: &str = "65360100000100000000000106797262307068027431076269696c
    6c706903636f6d00000a00010000291000000080000000";

// malformed/tcpdump_dns-badvers.pcap, frame 1: TXT? . with EDNS version 255 and a cookie
const BADVERS_QUERY: &str = "8fb3012000010000000000010000100001000029100000ff0000000c000a0008
    e0fb2d7f2c7ec622";

// Same capture, frame 2: the answer, BADVERS (16) = header rcode 0 + OPT extended rcode 1
const BADVERS_RESPONSE: &str = "8fb38100000100000000000100001000010000290200010000000000";

// Same capture, frame 4: NXDOMAIN-less NODATA with the root SOA in authority, EDNS version 0
const BADVERS_SOA_RESPONSE: &str = "e9f0850000010000000100010000100001000006000100015180004001
    610c726f6f742d73657276657273036e657400056e73746c640c766572697369676e2d67727303636f6d00
    7857d192000007080000038400093a800001518000002905c0000000000000";

// suricata-verify/dns__dns-eve-log-https-only/test.pcap, frame 1: HTTPS? 46-105-202-126.any...
const HTTPS_QUERY: &str = "107c010000010000000000000e34362d3130352d3230322d31323603616e7903
    63646e07616e7963617374026d650000410001";

// malformed/tcpdump_dns_fwdptr.pcap, frame 1: the first 48 of its 63 165 bytes. The header
// claims 64 259 questions; the first question name is a pointer (0xfb03 -> 0x3b03) ahead of
// itself.
const FWDPTR_PREFIX: &str = "c980ffeffb0301fb0301fb0301fb0301fb0301fb0301fb0301fb0301fb0301fb
    0301fb0301fb0301fb2003fb0301fb03";

/// Every real message that parses, for the property tests.
const PARSEABLE: &[&str] = &[
    A_QUERY,
    A_RESPONSE,
    CNAME_QUERY,
    CNAME_RESPONSE,
    TXT_QUERY,
    TXT_RESPONSE,
    TXT_SPF_RESPONSE,
    MX_RESPONSE,
    AAAA_RESPONSE,
    A12_RESPONSE,
    PTR_RESPONSE,
    IODINE_NULL_QUERY,
    IODINE_NULL_RESPONSE,
    IODINE_NULL_QUERY_EDNS,
    BADVERS_QUERY,
    BADVERS_RESPONSE,
    BADVERS_SOA_RESPONSE,
    HTTPS_QUERY,
];

/// Every real message, the malformed ones included.
fn all_fixtures() -> Vec<Vec<u8>> {
    PARSEABLE
        .iter()
        .chain([SRV_CORRUPT_RESPONSE, FWDPTR_PREFIX].iter())
        .map(|h| hex(h))
        .collect()
}

/// Uses every accessor and exhausts every iterator; checks the invariants parse promises.
fn exhaust(msg: &Message<'_>) {
    let _ = (
        msg.id(),
        msg.is_response(),
        msg.opcode(),
        msg.rcode(),
        msg.edns(),
    );
    let _ = (msg.aa(), msg.tc(), msg.rd(), msg.ra(), format!("{msg:?}"));
    assert!(msg.rcode() < 1 << 12);
    assert_eq!(msg.questions().count(), usize::from(msg.qdcount()));
    assert_eq!(msg.answers().count(), usize::from(msg.ancount()));
    // A damaged authority/additional section ends at its last good record.
    let (ns, ar) = (msg.authorities().count(), msg.additionals().count());
    if msg.damage().is_none() {
        assert_eq!(ns, usize::from(msg.nscount()));
        assert_eq!(ar, usize::from(msg.arcount()));
    } else {
        assert!(ns <= usize::from(msg.nscount()) && ar <= usize::from(msg.arcount()));
    }
    for q in msg.questions() {
        check_name_invariants(&q.name);
        let _ = type_name(q.qtype);
    }
    let records = msg
        .answers()
        .chain(msg.authorities())
        .chain(msg.additionals());
    for r in records {
        check_name_invariants(&r.name);
        let _ = (r.a(), r.aaaa(), type_name(r.rtype), r.rclass, r.ttl);
        assert_eq!(
            msg_bytes(&r).get(r.rdata_offset..r.rdata_offset + r.rdata.len()),
            Some(r.rdata)
        );
        if let Some(t) = r.target() {
            check_name_invariants(&t);
        } else if !r.rdata.is_empty() {
            assert!(target_offset(r.rtype).is_none());
        }
        let strings: usize = r.txt().map(|s| s.len() + 1).sum();
        if is_txt(r.rtype) {
            assert_eq!(strings, r.rdata.len(), "TXT strings fill the rdata");
        } else {
            assert_eq!(strings, 0);
        }
    }
}

fn msg_bytes<'a>(r: &Record<'a>) -> &'a [u8] {
    r.name.buf
}

fn check_name_invariants(name: &Name<'_>) {
    let mut out = [0u8; MAX_NAME_WIRE];
    let len = name.write_lower(&mut out);
    assert!(len <= MAX_NAME_TEXT);
    assert_eq!(len, name.len_text());
    let labels = name.label_count();
    assert!(labels <= 127);
    assert_eq!(labels, name.labels().count());
    assert!(name.labels().all(|l| !l.is_empty() && l.len() <= 63));
    assert!(name.eq_ignore_case(name));
    // The text form matches back, unless a label holds a dot (then the text is ambiguous).
    if name.labels().all(|l| !l.contains(&b'.')) {
        assert!(name.eq_text(&out[..len]));
    }
    let _ = format!("{name:?}");
}

fn parse_hex(h: &str) -> (Vec<u8>, Result<(), DnsError>) {
    let bytes = hex(h);
    let r = Message::parse(&bytes).map(|m| exhaust(&m));
    (bytes, r)
}

// ---- Real messages ---------------------------------------------------------------------

#[test]
fn every_real_fixture_parses_and_exhausts() {
    for h in PARSEABLE {
        let (_, r) = parse_hex(h);
        assert_eq!(r, Ok(()), "{h}");
    }
}

#[test]
fn a_query_and_response() {
    let q = hex(A_QUERY);
    let m = Message::parse(&q).unwrap();
    assert_eq!(m.id(), 0x180f);
    assert!(!m.is_response() && m.rd() && !m.ra());
    assert_eq!(
        (m.opcode(), m.rcode(), m.qdcount(), m.ancount()),
        (0, 0, 1, 0)
    );
    assert_eq!(m.edns(), None);
    let question = m.questions().next().unwrap();
    assert!(question.name.eq_text(b"wireshark.org"));
    assert_eq!((question.qtype, question.qclass), (rtype::A, 1));

    let r = hex(A_RESPONSE);
    let m = Message::parse(&r).unwrap();
    assert!(m.is_response() && m.rd() && m.ra() && !m.aa() && !m.tc());
    let answers: Vec<_> = m.answers().collect();
    assert_eq!(answers.len(), 1);
    let a = answers[0];
    assert_eq!(text(&a.name), "wireshark.org");
    assert_eq!((a.rtype, a.rclass, a.ttl), (rtype::A, 1, 0x3840));
    assert_eq!(a.a(), Some(Ipv4Addr::new(128, 121, 50, 122)));
    assert_eq!(
        (a.aaaa(), a.target().is_none(), a.txt().count()),
        (None, true, 0)
    );
    assert_eq!(a.rdata_offset, r.len() - 4);
    assert!(a.name.eq_ignore_case(&question.name), "across messages");
}

#[test]
fn cname_chain() {
    let q = hex(CNAME_QUERY);
    let m = Message::parse(&q).unwrap();
    assert_eq!(
        m.edns(),
        Some(Edns {
            udp_size: 4096,
            version: 0,
            do_bit: false
        })
    );
    assert_eq!(m.additionals().next().unwrap().rtype, rtype::OPT);

    let r = hex(CNAME_RESPONSE);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.ancount(), 3);
    let qname = m.questions().next().unwrap().name;
    let answers: Vec<_> = m.answers().collect();
    assert!(answers[0].name.eq_ignore_case(&qname));
    assert_eq!(answers[0].rtype, rtype::CNAME);
    let target = answers[0].target().unwrap();
    assert_eq!(text(&target), "suricata-ids.org");
    assert_eq!(target.label_count(), 2);
    let addrs: Vec<_> = answers[1..]
        .iter()
        .filter(|a| a.name.eq_ignore_case(&target))
        .filter_map(|a| a.a())
        .collect();
    assert_eq!(
        addrs,
        [Ipv4Addr::new(192, 0, 78, 24), Ipv4Addr::new(192, 0, 78, 25)]
    );
}

#[test]
fn txt_with_multiple_strings_and_all_sections() {
    let (_, r) = parse_hex(TXT_QUERY);
    assert_eq!(r, Ok(()));
    let b = hex(TXT_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert!(m.aa());
    assert_eq!((m.ancount(), m.nscount(), m.arcount()), (3, 5, 5));
    let answers: Vec<_> = m.answers().collect();
    assert_eq!(
        text(&answers[0].target().unwrap()),
        "fa14._domainkey.flickr.com"
    );
    assert_eq!(text(&answers[1].name), "fa14._domainkey.flickr.com");
    assert_eq!(
        text(&answers[1].target().unwrap()),
        "fa14._domainkey.yahoo.com"
    );
    let txt = answers[2];
    assert_eq!(txt.rtype, rtype::TXT);
    let strings: Vec<&[u8]> = txt.txt().collect();
    assert_eq!(strings.len(), 2);
    assert_eq!(strings[0].len(), 127);
    assert!(strings[0].starts_with(b"k=rsa; p=MIGfMA0G"));
    assert_eq!(strings[1].len(), 98);
    assert!(strings[1].ends_with(b"IDAQAB"));
    let ns: Vec<String> = m
        .authorities()
        .map(|r| text(&r.target().unwrap()))
        .collect();
    assert_eq!(
        ns,
        [
            "ns5.yahoo.com",
            "ns4.yahoo.com",
            "ns3.yahoo.com",
            "ns2.yahoo.com",
            "ns1.yahoo.com"
        ]
    );
    let glue: Vec<_> = m.additionals().filter_map(|r| r.a()).collect();
    assert_eq!(glue.len(), 5);
    assert_eq!(glue[0], Ipv4Addr::new(68, 180, 131, 16));
}

#[test]
fn txt_spf() {
    let b = hex(TXT_SPF_RESPONSE);
    let m = Message::parse(&b).unwrap();
    let r = m.answers().next().unwrap();
    let strings: Vec<&[u8]> = r.txt().collect();
    assert_eq!(strings, [b"v=spf1 include:_spf.google.com ~all".as_slice()]);
}

#[test]
fn mx_targets_through_pointer_chains() {
    let b = hex(MX_RESPONSE);
    let m = Message::parse(&b).unwrap();
    let mx: Vec<(u16, String)> = m
        .answers()
        .map(|r| {
            let pref = u16::from_be_bytes([r.rdata[0], r.rdata[1]]);
            (pref, text(&r.target().unwrap()))
        })
        .collect();
    assert_eq!(
        mx,
        [
            (10, "aspmx.l.google.com".to_string()),
            (20, "alt1.aspmx.l.google.com".to_string()),
            (30, "alt2.aspmx.l.google.com".to_string()),
            (40, "alt3.aspmx.l.google.com".to_string()),
            (50, "alt4.aspmx.l.google.com".to_string()),
        ]
    );
}

#[test]
fn aaaa_and_round_robin_a() {
    let b = hex(AAAA_RESPONSE);
    let m = Message::parse(&b).unwrap();
    let r = m.answers().next().unwrap();
    assert_eq!(r.aaaa(), Some("2607:f8b0:400f:801::200e".parse().unwrap()));
    assert_eq!(r.a(), None);
    assert_eq!(m.edns().unwrap().udp_size, 512);

    let b = hex(A12_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.answers().filter_map(|r| r.a()).count(), 12);
}

#[test]
fn ptr_answer() {
    let b = hex(PTR_RESPONSE);
    let m = Message::parse(&b).unwrap();
    let q = m.questions().next().unwrap();
    assert_eq!(text(&q.name), "25.206.119.75.in-addr.arpa");
    assert_eq!(type_name(q.qtype), "PTR");
    let r = m.answers().next().unwrap();
    assert_eq!(
        text(&r.target().unwrap()),
        "apache2-rank.fullsail.dreamhost.com"
    );
}

#[test]
fn corrupt_additional_keeps_the_answers() {
    // suricata-verify dns-corrupt-additionals (Redmine #7228): the OPT record at the end
    // claims 258 bytes of data that are not there. The answers must survive it.
    let b = hex(SRV_CORRUPT_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.damage(), Some(DnsError::RecordTruncated));
    assert_eq!(m.answers().count(), 2);
    assert_eq!(m.additionals().count(), 0);
    let r = m.answers().next().unwrap();
    assert_eq!(text(&r.target().unwrap()), "sip-anycast-2.voice.google.com");
    // Cut before the bad OPT, with ARCOUNT 0, the two SRV answers are fine.
    let mut cut = b[..b.len() - 11].to_vec();
    cut[10..12].copy_from_slice(&[0, 0]);
    let m = Message::parse(&cut).unwrap();
    let r = m.answers().next().unwrap();
    assert_eq!(text(&r.target().unwrap()), "sip-anycast-2.voice.google.com");
    assert_eq!(&r.rdata[..6], &[0, 20, 0, 1, 0x13, 0xc4]);
}

#[test]
fn iodine_null() {
    let b = hex(IODINE_NULL_QUERY);
    let m = Message::parse(&b).unwrap();
    let q = m.questions().next().unwrap();
    assert_eq!((q.qtype, type_name(q.qtype)), (10, "NULL"));
    let labels: Vec<&[u8]> = q.name.labels().collect();
    assert_eq!(labels, [&b"yrb0pe"[..], b"t1", b"biillpi", b"com"]);

    let b = hex(IODINE_NULL_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert!(m.aa());
    let r = m.answers().next().unwrap();
    assert_eq!((r.rtype, r.rdata.len(), r.ttl), (10, 48, 0));
    assert_eq!(
        (r.a(), r.target().is_none(), r.txt().count()),
        (None, true, 0)
    );

    let b = hex(IODINE_NULL_QUERY_EDNS);
    let m = Message::parse(&b).unwrap();
    assert_eq!(
        m.edns(),
        Some(Edns {
            udp_size: 4096,
            version: 0,
            do_bit: true
        })
    );
}

#[test]
fn edns_extended_rcode_badvers() {
    let b = hex(BADVERS_QUERY);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.edns().unwrap().version, 255);
    assert!(m.questions().next().unwrap().name.eq_text(b"."));
    assert_eq!(m.additionals().next().unwrap().rdata.len(), 12);

    let b = hex(BADVERS_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.rcode(), 16, "BADVERS: header 0 + (OPT extended 1 << 4)");
    assert_eq!(m.edns().unwrap().udp_size, 512);

    let b = hex(BADVERS_SOA_RESPONSE);
    let m = Message::parse(&b).unwrap();
    assert_eq!((m.rcode(), m.nscount()), (0, 1));
    let soa = m.authorities().next().unwrap();
    assert_eq!((type_name(soa.rtype), soa.name.label_count()), ("SOA", 0));
    assert!(soa.target().is_none());
}

#[test]
fn names_keep_their_case_and_bytes_on_request() {
    // DNS 0x20 case randomisation, a binary label as iodine sends it, and the root.
    let mut body = question(b"\x03WwW\x02\xbc\x00\x03Com\x00", 1);
    body.extend_from_slice(&rr(&[0], 2, 1, 0, &wire("A.Root-Servers.net")));
    let b = msg([1, 1, 0, 0], &body);
    let m = Message::parse(&b).unwrap();
    let q = m.questions().next().unwrap();
    let mut out = [0u8; MAX_NAME_WIRE];
    let n = q.name.write_original(&mut out);
    assert_eq!(&out[..n], b"WwW.\xbc\x00.Com");
    let n = q.name.write_lower(&mut out);
    assert_eq!(&out[..n], b"www.\xbc\x00.com");
    let r = m.answers().next().unwrap();
    assert_eq!(r.name.write_original(&mut out), 0, "the root is empty text");
    let n = r.target().unwrap().write_original(&mut out);
    assert_eq!(&out[..n], b"A.Root-Servers.net");
}

#[test]
fn https_query_type() {
    let b = hex(HTTPS_QUERY);
    let m = Message::parse(&b).unwrap();
    let q = m.questions().next().unwrap();
    assert_eq!(type_name(q.qtype), "HTTPS");
    assert_eq!(text(&q.name), "46-105-202-126.any.cdn.anycast.me");
}

#[test]
fn forward_pointer_capture() {
    let b = hex(FWDPTR_PREFIX);
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DnsError::CountsExceedMessage
    );
    // With believable counts, the same name is refused for its pointer. The real message is
    // 63 165 bytes long, so the target 0x3b03 lies inside it: pad to that length.
    let mut b = b;
    b[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    b.resize(63_165, 0);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::PointerForward);
    b.truncate(0x3b03);
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DnsError::PointerOutOfBounds
    );
}

// ---- Hand-built messages ---------------------------------------------------------------

/// Builds a message: header with the given counts, then `body`.
fn msg(counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80];
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m.extend_from_slice(body);
    m
}

/// A name in wire form from dotted text (no compression).
fn wire(dotted: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A resource record with an explicit owner (wire bytes) and rdata.
fn rr(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

fn question(name: &[u8], qtype: u16) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

/// Pointer to `offset`.
fn ptr(offset: usize) -> [u8; 2] {
    [0xC0 | (offset >> 8) as u8, offset as u8]
}

#[test]
fn every_rdata_helper() {
    // Question "Example.COM" at 12; everything else points back to it.
    let mut body = question(&wire("Example.COM"), 255);
    let q = ptr(12);
    body.extend(rr(&q, rtype::A, 1, 60, &[192, 0, 2, 1]));
    body.extend(rr(
        &q,
        rtype::AAAA,
        1,
        60,
        &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ));
    let mut cname = wire("www");
    cname.truncate(4);
    cname.extend_from_slice(&q);
    body.extend(rr(&q, rtype::CNAME, 1, 60, &cname));
    body.extend(rr(&q, rtype::NS, 1, 60, &wire("ns1.example.net")));
    body.extend(rr(&q, rtype::PTR, 1, 60, &q));
    body.extend(rr(&q, rtype::DNAME, 1, 60, &wire("example.org")));
    let mut mx = vec![0, 10];
    mx.extend(wire("mail.example.com"));
    body.extend(rr(&q, rtype::MX, 1, 60, &mx));
    let mut srv = vec![0, 1, 0, 2, 0x13, 0xc4];
    srv.extend_from_slice(&q);
    body.extend(rr(&q, rtype::SRV, 1, 60, &srv));
    body.extend(rr(&q, rtype::TXT, 1, 60, b"\x05hello\x00\x03abc"));
    body.extend(rr(&q, rtype::SPF, 1, 60, b"\x06v=spf1"));
    body.extend(rr(&q, 10, 1, 60, b"\x01\x02\x03"));
    // RFC 2136 deletion: CNAME of class ANY with no rdata.
    body.extend(rr(&q, rtype::CNAME, 255, 0, &[]));
    // OPT: UDP 1232, extended rcode 0x12, version 0, DO.
    body.extend(rr(&[0], rtype::OPT, 1232, 0x1200_8000, &[]));
    let b = msg([1, 12, 0, 1], &body);
    let m = Message::parse(&b).unwrap();
    exhaust(&m);

    assert_eq!(m.rcode(), 0x12 << 4);
    assert_eq!(
        m.edns(),
        Some(Edns {
            udp_size: 1232,
            version: 0,
            do_bit: true
        })
    );
    let r: Vec<Record<'_>> = m.answers().collect();
    assert_eq!(r[0].a(), Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(r[1].aaaa(), Some("2001:db8::1".parse().unwrap()));
    let t: Vec<Option<String>> = r.iter().map(|r| r.target().map(|n| text(&n))).collect();
    assert_eq!(t[0], None);
    assert_eq!(t[2].as_deref(), Some("www.example.com"));
    assert_eq!(t[3].as_deref(), Some("ns1.example.net"));
    assert_eq!(t[4].as_deref(), Some("example.com"));
    assert_eq!(t[5].as_deref(), Some("example.org"));
    assert_eq!(t[6].as_deref(), Some("mail.example.com"));
    assert_eq!(t[7].as_deref(), Some("example.com"));
    assert_eq!(t[8], None);
    assert_eq!(t[11], None, "update deletion has no target");
    let txt: Vec<&[u8]> = r[8].txt().collect();
    assert_eq!(txt, [&b"hello"[..], b"", b"abc"]);
    assert_eq!(r[9].txt().collect::<Vec<_>>(), [&b"v=spf1"[..]]);
    assert_eq!(r[10].txt().count(), 0);
    // Case is kept in labels and dropped in text.
    let owner = r[0].name;
    assert_eq!(
        owner.labels().collect::<Vec<_>>(),
        [&b"Example"[..], b"COM"]
    );
    assert_eq!(text(&owner), "example.com");
    assert!(owner.eq_text(b"EXAMPLE.com.") && owner.eq_text(b"example.com"));
    assert!(!owner.eq_text(b"example.co") && !owner.eq_text(b"example.com.x"));
    assert!(!owner.eq_text(b"www.example.com") && !owner.eq_text(b""));
    assert_eq!((owner.len_text(), owner.label_count()), (11, 2));
    assert!(r[4].target().unwrap().eq_ignore_case(&owner));
    assert!(!r[5].target().unwrap().eq_ignore_case(&owner));
    assert!(!r[2].target().unwrap().eq_ignore_case(&owner));
    assert_eq!(format!("{owner:?}"), "Name(\"example.com\")");
    let root = m.additionals().next().unwrap().name;
    assert!(root.eq_text(b"") && root.eq_text(b".") && !root.eq_text(b"com"));
    assert_eq!(
        (root.len_text(), root.label_count(), text(&root).as_str()),
        (0, 0, "")
    );
}

#[test]
fn bad_rdata() {
    let q = ptr(12);
    let base = question(&wire("example.com"), 1);
    let cases: Vec<(u16, Vec<u8>)> = vec![
        // CNAME with a byte after its name: a hidden channel.
        (rtype::CNAME, [&wire("a")[..], &[0x41]].concat()),
        // CNAME whose name runs past the rdata.
        (rtype::CNAME, vec![3, b'a', b'b']),
        // MX too short to hold a name.
        (rtype::MX, vec![0, 10]),
        // SRV too short.
        (rtype::SRV, vec![0, 1, 0, 2, 0, 3]),
        // TXT string overrunning its rdata.
        (rtype::TXT, b"\x05abc".to_vec()),
        (rtype::TXT, b"\x01a\x02b".to_vec()),
    ];
    for (t, rdata) in cases {
        let mut body = base.clone();
        body.extend(rr(&q, t, 1, 0, &rdata));
        // Trailing record so a name running past the rdata still finds bytes.
        body.extend(rr(&q, 1, 1, 0, &[1, 2, 3, 4]));
        let b = msg([1, 2, 0, 0], &body);
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            DnsError::BadRdata,
            "{t} {rdata:?}"
        );
    }
    // A pointer inside rdata obeys the same rules as anywhere else.
    let mut body = base.clone();
    let at = HEADER_LEN + body.len() + 2 + RR_FIXED;
    body.extend(rr(&q, rtype::CNAME, 1, 0, &ptr(at)));
    let b = msg([1, 1, 0, 0], &body);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::PointerForward);
}

#[test]
fn compression_loops_are_refused() {
    // A name pointing at its own start.
    let b = msg([1, 0, 0, 0], &[1, b'a', 0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::PointerForward);
    // An answer whose owner is "b" + pointer to itself.
    let mut body = question(&wire("a"), 1);
    let at = HEADER_LEN + body.len();
    body.extend(rr(&[&[1, b'b'][..], &ptr(at)].concat(), 1, 1, 0, &[0; 4]));
    assert_eq!(
        Message::parse(&msg([1, 1, 0, 0], &body)).unwrap_err(),
        DnsError::PointerForward
    );
    // Two names pointing at each other: the first backwards (allowed), the second forwards
    // into the first's run. X = "x" + ptr(Y), Y = "y" + ptr(X).
    let mut body = question(&wire("a"), 1);
    let x = HEADER_LEN + body.len();
    let y = x + 4 + RR_FIXED + 4;
    body.extend(rr(&[&[1, b'x'][..], &ptr(y)].concat(), 1, 1, 0, &[0; 4]));
    body.extend(rr(&[&[1, b'y'][..], &ptr(x)].concat(), 1, 1, 0, &[0; 4]));
    assert_eq!(
        Message::parse(&msg([1, 2, 0, 0], &body)).unwrap_err(),
        DnsError::PointerForward
    );
    // A pointer back to the start of an earlier run, whose labels lead forward to the same
    // pointer again: refused at the second pass, since the run start does not decrease.
    // Question "a" + ptr(14)... built as: at 12: 01 'a' 01 'b' C0 0E.
    let b = msg([1, 0, 0, 0], &[1, b'a', 1, b'b', 0xC0, 14, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::PointerForward);
}

/// Question root at 12, then a NULL record whose rdata is `cells` pointers, each to the one
/// before (the first to the root name at 12), then an A record whose owner points to the last
/// cell: a name of `cells + 1` hops.
fn pointer_chain(cells: usize) -> Vec<u8> {
    let mut body = question(&[0], 1);
    let rdata_at = HEADER_LEN + body.len() + 1 + RR_FIXED;
    let mut rdata = Vec::new();
    for i in 0..cells {
        let target = if i == 0 { 12 } else { rdata_at + 2 * (i - 1) };
        rdata.extend_from_slice(&ptr(target));
    }
    body.extend(rr(&[0], 10, 1, 0, &rdata));
    body.extend(rr(&ptr(rdata_at + 2 * (cells - 1)), 1, 1, 0, &[0; 4]));
    msg([1, 2, 0, 0], &body)
}

#[test]
fn pointer_hops_are_bounded() {
    let b = pointer_chain(usize::from(MAX_POINTER_HOPS) - 1);
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.answers().nth(1).unwrap().name.label_count(), 0);
    let b = pointer_chain(usize::from(MAX_POINTER_HOPS));
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::TooManyPointers);
}

#[test]
fn label_types_and_lengths() {
    let mut body = vec![64];
    body.extend_from_slice(&[b'a'; 64]);
    body.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(
        Message::parse(&msg([1, 0, 0, 0], &body)).unwrap_err(),
        DnsError::LabelTooLong
    );
    let b = msg([1, 0, 0, 0], &[0x7F, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::LabelTooLong);
    let b = msg([1, 0, 0, 0], &[0x80, 0, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::BadLabelType);
    let b = msg([1, 0, 0, 0], &[0xBF, 0, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::BadLabelType);
    // 63 is fine.
    let mut body = vec![63];
    body.extend_from_slice(&[b'a'; 63]);
    body.extend_from_slice(&[0, 0, 1, 0, 1]);
    let b = msg([1, 0, 0, 0], &body);
    assert_eq!(
        Message::parse(&b)
            .unwrap()
            .questions()
            .next()
            .unwrap()
            .name
            .len_text(),
        63
    );
}

#[test]
fn name_length_limit() {
    let long = |lens: &[usize]| {
        let mut n = Vec::new();
        for &l in lens {
            n.push(l as u8);
            n.extend(std::iter::repeat_n(b'x', l));
        }
        n.push(0);
        n
    };
    // 3 × 64 + 62 + root = 255: the longest legal name, 253 characters of text.
    let b = msg([1, 0, 0, 0], &question(&long(&[63, 63, 63, 61]), 1));
    let m = Message::parse(&b).unwrap();
    let name = m.questions().next().unwrap().name;
    assert_eq!((name.len_text(), name.label_count()), (253, 4));
    exhaust(&m);
    // One more byte.
    let b = msg([1, 0, 0, 0], &question(&long(&[63, 63, 63, 62]), 1));
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::NameTooLong);
    // 127 one-byte labels = 254 + root: legal. 128: too long.
    let b = msg([1, 0, 0, 0], &question(&long(&[1; 127]), 1));
    assert_eq!(
        Message::parse(&b)
            .unwrap()
            .questions()
            .next()
            .unwrap()
            .name
            .label_count(),
        127
    );
    let b = msg([1, 0, 0, 0], &question(&long(&[1; 128]), 1));
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::NameTooLong);
    // Too long only once pointers join two legal halves.
    let half = long(&[63, 63]);
    let mut body = question(&half, 1);
    let mut owner = long(&[63, 63]);
    owner.pop();
    owner.extend_from_slice(&ptr(12));
    body.extend(rr(&owner, 1, 1, 0, &[0; 4]));
    assert_eq!(
        Message::parse(&msg([1, 1, 0, 0], &body)).unwrap_err(),
        DnsError::NameTooLong
    );
}

#[test]
fn counts_and_truncation() {
    for len in 0..HEADER_LEN {
        assert_eq!(
            Message::parse(&vec![0; len]).unwrap_err(),
            DnsError::TooShort
        );
    }
    assert!(Message::parse(&[0; HEADER_LEN]).is_ok());
    // The A query (19 bytes after the header) with ANCOUNT 2 needs at least 5 + 2 × 11.
    let mut b = hex(A_QUERY);
    b[7] = 2;
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DnsError::CountsExceedMessage
    );
    // Counts that fit the length but not the content.
    let mut b = hex(A_QUERY);
    b[7] = 1;
    b.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::RecordTruncated);
    let mut b = hex(A_RESPONSE);
    let n = b.len();
    b[n - 5] = 5; // RDLENGTH 5 with 4 bytes left
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::RecordTruncated);
    // Every strict prefix of a real response fails cleanly, or (cut after the answers)
    // parses with its damage reported.
    let full = hex(TXT_RESPONSE);
    for cut in 0..full.len() {
        let r = Message::parse(&full[..cut]);
        assert!(
            r.is_err() || r.is_ok_and(|m| m.damage().is_some()),
            "prefix {cut}"
        );
    }
    // Trailing bytes after the last record are ignored.
    let mut b = hex(A_RESPONSE);
    b.extend_from_slice(b"trailing");
    assert!(Message::parse(&b).is_ok());
}

#[test]
fn question_count_bound() {
    let one = question(&[0], 1);
    let many = |n: usize| one.repeat(n);
    let b = msg([MAX_QUESTIONS, 0, 0, 0], &many(usize::from(MAX_QUESTIONS)));
    assert_eq!(Message::parse(&b).unwrap().questions().count(), 16);
    let b = msg(
        [MAX_QUESTIONS + 1, 0, 0, 0],
        &many(usize::from(MAX_QUESTIONS) + 1),
    );
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::TooManyQuestions);
}

#[test]
fn pointer_bounds() {
    // Into the header.
    let mut body = question(&wire("a"), 1);
    body.extend(rr(&ptr(11), 1, 1, 0, &[0; 4]));
    assert_eq!(
        Message::parse(&msg([1, 1, 0, 0], &body)).unwrap_err(),
        DnsError::PointerOutOfBounds
    );
    // Past the end.
    let mut body = question(&wire("a"), 1);
    body.extend(rr(&ptr(0x3FFF), 1, 1, 0, &[0; 4]));
    assert_eq!(
        Message::parse(&msg([1, 1, 0, 0], &body)).unwrap_err(),
        DnsError::PointerOutOfBounds
    );
    // A pointer cut in half at the end of the message.
    let b = msg([1, 0, 0, 0], &[0xC0]);
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        DnsError::CountsExceedMessage
    );
    let mut b = msg([0, 1, 0, 0], &[0; 10]);
    b.push(0xC0);
    assert_eq!(Message::parse(&b).unwrap_err(), DnsError::RecordTruncated);
}

#[test]
fn header_flags() {
    let mut b = msg([0, 0, 0, 0], &[]);
    b[2] = 0x80 | (5 << 3) | 0x04 | 0x02 | 0x01;
    b[3] = 0x80 | 0x03;
    let m = Message::parse(&b).unwrap();
    assert!(m.is_response() && m.aa() && m.tc() && m.rd() && m.ra());
    assert_eq!((m.opcode(), m.rcode(), m.id()), (5, 3, 0x1234));
    b[2] = 0;
    b[3] = 0;
    let m = Message::parse(&b).unwrap();
    assert!(!m.is_response() && !m.aa() && !m.tc() && !m.rd() && !m.ra());
}

#[test]
fn hand_edited_record_cannot_panic() {
    let b = hex(MX_RESPONSE);
    let m = Message::parse(&b).unwrap();
    let mut r = m.answers().next().unwrap();
    for off in [0, 11, 12, b.len() - 1, b.len(), usize::MAX - 1, usize::MAX] {
        r.rdata_offset = off;
        if let Some(t) = r.target() {
            check_name_bounded(&t);
        }
    }
}

fn check_name_bounded(n: &Name<'_>) {
    let mut out = [0u8; MAX_NAME_WIRE];
    assert!(n.write_lower(&mut out) <= MAX_NAME_TEXT);
    let _ = (
        n.len_text(),
        n.label_count(),
        n.eq_text(b"a.b"),
        format!("{n:?}"),
    );
}

#[test]
fn type_names() {
    let cases = [
        (1, "A"),
        (2, "NS"),
        (5, "CNAME"),
        (6, "SOA"),
        (10, "NULL"),
        (11, "WKS"),
        (12, "PTR"),
        (15, "MX"),
        (16, "TXT"),
        (28, "AAAA"),
        (29, "LOC"),
        (30, "NXT"),
        (33, "SRV"),
        (35, "NAPTR"),
        (41, "OPT"),
        (43, "DS"),
        (44, "SSHFP"),
        (46, "RRSIG"),
        (47, "NSEC"),
        (48, "DNSKEY"),
        (50, "NSEC3"),
        (52, "TLSA"),
        (64, "SVCB"),
        (65, "HTTPS"),
        (99, "SPF"),
        (252, "AXFR"),
        (255, "*"),
        (257, "CAA"),
        (0, ""),
        (54, ""),
        (65534, ""),
    ];
    for (t, name) in cases {
        assert_eq!(type_name(t), name, "{t}");
    }
}

#[test]
fn error_names_are_stable_and_distinct() {
    for (i, e) in DnsError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(e
            .name()
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c == b'_'));
        assert_eq!(e.to_string(), e.name());
    }
    let mut names: Vec<_> = DnsError::ALL.iter().map(|e| e.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DnsError::ALL.len());
}

/// The most expensive 64 KiB message: a 127-label name reached through a 127-pointer chain,
/// owned by as many records as fit, each also holding it as a CNAME target.
fn worst_case() -> Vec<u8> {
    let mut body = question(&[0], 1);
    // Chain cells inside a NULL record: cell i = one-byte label + pointer to cell i-1.
    let rdata_at = HEADER_LEN + body.len() + 1 + RR_FIXED;
    let mut rdata = Vec::new();
    for i in 0..127 {
        rdata.extend_from_slice(&[1, b'a']);
        let target = if i == 0 { 12 } else { rdata_at + 4 * (i - 1) };
        rdata.extend_from_slice(&ptr(target));
    }
    body.extend(rr(&[0], 10, 1, 0, &rdata));
    let last = ptr(rdata_at + 4 * 126);
    let one = rr(&last, rtype::CNAME, 1, 0, &last);
    let n = (65_535 - HEADER_LEN - body.len()) / one.len();
    body.extend(one.repeat(n));
    msg([1, 1 + n as u16, 0, 0], &body)
}

#[test]
fn worst_case_is_bounded() {
    let b = worst_case();
    assert!(b.len() <= 65_535);
    let start = Instant::now();
    let m = Message::parse(&b).unwrap();
    let elapsed = start.elapsed();
    let r = m.answers().nth(1).unwrap();
    assert_eq!(
        (r.name.label_count(), r.target().unwrap().len_text()),
        (127, 253)
    );
    // Debug builds are slow; this catches loops and quadratic walks, not nanoseconds.
    eprintln!("worst case parse: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

// ---- Property tests ----------------------------------------------------------------------

/// Parses and, when that succeeds, exhausts; never panics, always returns quickly.
fn fuzz_one(bytes: &[u8]) {
    let start = Instant::now();
    if let Ok(m) = Message::parse(bytes) {
        exhaust(&m);
    }
    assert!(start.elapsed() < Duration::from_secs(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        fuzz_one(&bytes);
    }

    /// Random bodies behind a header with small counts reach the name and record walkers;
    /// zero, pointer and short-length bytes are made common so that names often end well.
    #[test]
    fn random_bodies_never_panic(
        counts in [0u16..4, 0u16..8, 0u16..4, 0u16..4],
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let body: Vec<u8> = body
            .into_iter()
            .map(|b| match b % 8 {
                0 => 0,
                1 => 0xC0,
                2 => 12,
                3 => b % 16,
                _ => b,
            })
            .collect();
        fuzz_one(&msg(counts, &body));
    }

    #[test]
    fn mutated_real_messages_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let fixtures = all_fixtures();
        let mut b = which.get(&fixtures).clone();
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        fuzz_one(&b);
    }

    #[test]
    fn truncated_real_messages_never_panic(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let fixtures = all_fixtures();
        let b = which.get(&fixtures);
        fuzz_one(&b[..cut.index(b.len() + 1)]);
    }
}
