//! Pcap slices of flagged flows and the rings behind them: the slice holds the flow's packets
//! from the handshake through the alert to its end, byte for byte and with the input's
//! timestamps, and nothing else; tshark and capinfos read it; `/api/pcap`, `/api/slices` and
//! the download refuse bad ids; the ring stays within its budget under a flood.

mod common;

use common::Sensor;
use outflow::config::Config;
use outflow::decode::{decode, LinkType};
use outflow::flow::{EndReason, Side};
use outflow::gen::{merge, Packet, PcapWriter, TcpSession, UdpExchange};
use sha2::Digest;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn write_pcap(path: &Path, packets: &[Packet]) {
    let mut w = PcapWriter::new_nanos(
        BufWriter::new(std::fs::File::create(path).unwrap()),
        1,
        65535,
    )
    .unwrap();
    for p in packets {
        w.write(p.ts_ns, &p.frame).unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
}

/// A packet read back from a pcap.
#[derive(Debug)]
struct Rec {
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
}

/// Reads a little-endian pcap (µs or ns) with a plain parser: what a slice promises is
/// checked independently of the code that wrote it.
fn read_pcap(bytes: &[u8]) -> (u32, u32, Vec<Rec>) {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let nanos = match u32_at(0) {
        0xa1b2_3c4d => true,
        0xa1b2_c3d4 => false,
        m => panic!("not a little-endian pcap: magic {m:#x}"),
    };
    assert_eq!(&bytes[4..8], &[2, 0, 4, 0], "version 2.4");
    let (snaplen, linktype) = (u32_at(16), u32_at(20));
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (sec, frac, incl, orig) = (
            u64::from(u32_at(at)),
            u64::from(u32_at(at + 4)),
            u32_at(at + 8) as usize,
            u32_at(at + 12),
        );
        assert!(incl as u32 <= orig, "incl_len above orig_len");
        assert!(incl as u32 <= snaplen, "incl_len above snaplen");
        out.push(Rec {
            ts_ns: sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 },
            orig_len: orig,
            data: bytes[at + 16..at + 16 + incl].to_vec(),
        });
        at += 16 + incl;
    }
    assert_eq!(at, bytes.len(), "trailing bytes");
    (snaplen, linktype, out)
}

fn tool(name: &str) -> bool {
    std::process::Command::new(name)
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// tshark and capinfos, when installed, read the file without a warning and count `n`.
fn wireshark_reads(path: &Path, n: usize) {
    if !tool("capinfos") || !tool("tshark") {
        eprintln!("skipping the tshark/capinfos check: not installed");
        return;
    }
    let out = std::process::Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(
        text.contains(&format!("Number of packets:   {n}\n")),
        "{text}"
    );
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("appears to be damaged") && !err.contains("warn"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n);
}

#[test]
fn slice_holds_the_flow_from_handshake_to_end_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // A 20 MB upload that crosses a 10 MB threshold halfway, among other traffic of the
    // same host (a second connection to the same server, DNS-like UDP).
    let up = TcpSession::new(
        sa("10.0.0.5:51234"),
        sa("203.0.113.50:443"),
        20_000_000,
        20_000,
    );
    let mut other = TcpSession::new(sa("10.0.0.5:51235"), sa("203.0.113.50:443"), 300_000, 5_000);
    other.start_ns = up.start_ns + 1_000_000;
    let mut streams: Vec<Box<dyn Iterator<Item = Packet>>> =
        vec![Box::new(up.packets()), Box::new(other.packets())];
    for i in 0..20u16 {
        let mut u = UdpExchange::new(
            SocketAddr::from(([10, 0, 0, 5], 40_000 + i)),
            sa("198.51.100.1:53"),
            3,
            40,
            200,
        );
        u.start_ns = up.start_ns + u64::from(i) * 3_000_000;
        streams.push(Box::new(u.packets()));
    }
    let input: Vec<Packet> = merge(streams).collect();
    let pcap = dir.path().join("in.pcap");
    write_pcap(&pcap, &input);

    let slices = dir.path().join("slices");
    let mut cfg = Config::default();
    cfg.detect.large_transfer.threshold_bytes = 10_000_000;
    cfg.detect.large_transfer.tiers = vec![];
    cfg.slice.dir = slices.display().to_string();
    cfg.slice.full_packets = 50;
    cfg.slice.payload_bytes = 32;
    let r = common::replay(&cfg, 2, &[pcap]);
    let alerts: Vec<_> = r
        .alerts
        .iter()
        .filter(|a| a.detector == outflow::detect::Detector::LargeTransfer)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = alerts[0];
    let id = alert.slice_id.clone().expect("slice id on the alert");
    assert_eq!(id, alert.id);
    let json = outflow::output::json::alert_json(alert, 0);
    assert!(
        json.contains(&format!("\"slice_url\":\"/api/slices/{id}.pcap\"")),
        "{json}"
    );

    // The flow's packets, as the generator made them.
    let want: Vec<Packet> = up.packets().collect();
    let rec = r
        .flows
        .iter()
        .find(|f| f.flow_id == alert.flow_id)
        .expect("the upload's record");
    assert_eq!(rec.orig.pkts + rec.resp.pkts, want.len() as u64);

    let file = slices.join(format!("{id}.pcap"));
    let bytes = std::fs::read(&file).unwrap();
    let (snaplen, linktype, got) = read_pcap(&bytes);
    assert_eq!((snaplen, linktype), (65535, 1));
    assert_eq!(got.len(), want.len(), "every packet of the flow, no other");
    let mut cut = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.ts_ns, w.ts_ns, "packet {i}: timestamp");
        assert_eq!(g.orig_len as usize, w.frame.len(), "packet {i}: orig_len");
        assert_eq!(&w.frame[..g.data.len()], &g.data[..], "packet {i}: bytes");
        let m = decode(LinkType::Ethernet, &w.frame, w.frame.len() as u32).unwrap();
        if i < 50 {
            assert_eq!(g.data.len(), w.frame.len(), "packet {i}: kept whole");
        } else {
            let keep = (usize::from(m.payload_offset) + 32).min(w.frame.len());
            assert_eq!(g.data.len(), keep, "packet {i}: headers + 32 payload bytes");
        }
        cut += usize::from(g.data.len() < w.frame.len());
    }
    assert!(got.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    // The handshake, then packets on both sides of the alert.
    let flags = |r: &Rec| {
        decode(LinkType::Ethernet, &r.data, r.orig_len)
            .unwrap()
            .tcp_flags
    };
    use outflow::decode::tcp_flags::{ACK, SYN};
    assert_eq!(flags(&got[0]) & (SYN | ACK), SYN);
    assert_eq!(flags(&got[1]) & (SYN | ACK), SYN | ACK);
    assert_eq!(flags(&got[2]) & (SYN | ACK), ACK);
    let before = got.iter().filter(|g| g.ts_ns < alert.ts_ns).count();
    let after = got.iter().filter(|g| g.ts_ns > alert.ts_ns).count();
    assert!(
        before > 1000 && after > 1000,
        "{before} before, {after} after"
    );

    // The sidecar.
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(slices.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(side["slice_id"], id.as_str());
    assert_eq!(side["flow_id"], alert.flow_id);
    assert_eq!(side["src_ip"], "10.0.0.5");
    assert_eq!(side["dst_port"], 443);
    assert_eq!(side["packets"], want.len());
    assert_eq!(side["packets_truncated"], cut);
    assert_eq!(side["packets_dropped"], 0);
    assert_eq!(side["end_reason"], "flow_ended");
    assert_eq!(side["complete"], true);
    assert_eq!(side["bytes"], bytes.len());
    assert_eq!(
        side["sha256"].as_str().unwrap(),
        hex(&sha2::Sha256::digest(&bytes))
    );
    wireshark_reads(&file, want.len());
    // Exactly one slice: the other flows raised no alert.
    let files: Vec<_> = std::fs::read_dir(&slices).unwrap().collect();
    assert_eq!(files.len(), 2);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_ring_stays_within_its_budget_under_a_flood() {
    // 60 000 small UDP flows through a 1 MiB ring per worker.
    let mut streams: Vec<Box<dyn Iterator<Item = Packet>>> = Vec::new();
    for i in 0..60_000u32 {
        let mut u = UdpExchange::new(
            SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1024 + (i % 50_000) as u16)),
            sa("203.0.113.9:53"),
            1,
            60,
            100,
        );
        u.start_ns += u64::from(i) * 10_000;
        streams.push(Box::new(u.packets()));
    }
    let input: Vec<Packet> = merge(streams).collect();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flood.pcap");
    write_pcap(&pcap, &input);
    let mut cfg = Config::default();
    cfg.slice.ring_bytes = 1 << 20;
    let r = common::replay(&cfg, 2, &[pcap]);
    let (held, used, capacity, evicted) = r.summary.flows.ring;
    assert_eq!(capacity, 2 << 20, "two rings of exactly 1 MiB");
    assert!(used <= capacity, "{used} > {capacity}");
    assert_eq!(
        held + evicted,
        input.len() as u64,
        "every packet went through a ring"
    );
    assert!(evicted > 0 && held > 1000, "{held} held, {evicted} evicted");
}

#[test]
fn the_api_serves_ring_packets_and_slices_and_refuses_bad_ids() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap");
    let bytes = std::fs::read(&demo).unwrap();
    let (head, recs) = common::pcap_records(&bytes);
    let n = 19_000;
    let dir = tempfile::tempdir().unwrap();
    let slices = dir.path().join("slices");
    let cfg = dir.path().join("outflow.toml");
    std::fs::write(
        &cfg,
        "[capture]\nbatch_packets = 1\nbatches_per_worker = 4\n",
    )
    .unwrap();
    let mut s = Sensor::start(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--workers",
        "1",
        "--http",
        "127.0.0.1:0",
        "--serve",
        "--slice-dir",
        slices.to_str().unwrap(),
        "-",
    ]);
    {
        let w = s.stdin();
        w.write_all(&head).unwrap();
        for r in &recs[..=n] {
            w.write_all(r).unwrap();
        }
        w.flush().unwrap();
    }
    // What the worker has seen: the first n packets (see tests/http.rs).
    let r = common::replay_prefix(dir.path(), &head, &recs, n);
    let upload = r
        .flows
        .iter()
        .filter(|f| f.reason == EndReason::EndOfInput && f.outbound == Some(Side::Orig))
        .max_by_key(|f| f.orig.ip_bytes)
        .unwrap();
    let seen = upload.orig.pkts + upload.resp.pkts;

    // /api/pcap by flow id, and by the conversation given backwards: the same packets.
    let start = std::time::Instant::now();
    let by_flow = loop {
        let (status, ctype, body) = s.get_with(&format!("/api/pcap?flow={}", upload.flow_id), None);
        assert_eq!(status, 200);
        assert_eq!(ctype, "application/vnd.tcpdump.pcap");
        let (_, _, got) = read_pcap(&body);
        if got.len() as u64 == seen {
            break body;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "ring has {} of {seen}",
            got.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (_, _, by_tuple) = s.get_with(
        "/api/pcap?src=203.0.113.50&sport=443&dst=10.0.0.5&dport=51234&proto=tcp",
        None,
    );
    assert_eq!(by_tuple, by_flow);
    // The demo was captured with snaplen 96: the ring kept what there was, with the wire
    // length, and the timestamps of the input.
    let (_, linktype, got) = read_pcap(&by_flow);
    assert_eq!(linktype, 1);
    assert!(got
        .iter()
        .all(|g| g.data.len() <= 96 && g.orig_len as usize >= g.data.len()));
    let (_, _, input) = read_pcap(&bytes[..24 + recs[..n].iter().map(Vec::len).sum::<usize>()]);
    let first = input.iter().find(|i| i.data == got[0].data).unwrap();
    assert_eq!(first.ts_ns, got[0].ts_ns);
    let (_, _, none) = s.get_with("/api/pcap?src=192.0.2.1", None);
    assert_eq!(read_pcap(&none).2.len(), 0);

    // The slice exists already (the alert fired) and is still recording.
    let (status, body) = s.get("/api/slices");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["count"], 1, "{list}");
    let id = list["slices"][0]["slice_id"].as_str().unwrap().to_string();
    assert_eq!(list["slices"][0]["complete"], false);
    let (status, _, partial) = s.get_with(&format!("/api/slices/{id}.pcap"), None);
    assert_eq!(status, 200);
    assert!(!read_pcap(&partial).2.is_empty());

    // Bad ids and paths.
    for (path, want) in [
        ("/api/slices/..%2F..%2Fetc%2Fpasswd.pcap", 400),
        ("/api/slices/%2E%2E.pcap", 400),
        ("/api/slices/.hidden.pcap", 400),
        ("/api/slices/a%00b.pcap", 400),
        ("/api/slices/a%20b.pcap", 400),
        (&format!("/api/slices/{id}.txt"), 400),
        (&format!("/api/slices/{id}"), 400),
        ("/api/slices/no-such-slice.pcap", 404),
        ("/api/slices/a/b.pcap", 404),
        ("/api/slices?x=1", 400),
        ("/api/pcap", 400),
        ("/api/pcap?flow=abc", 400),
        ("/api/pcap?src=10.0.0", 400),
        ("/api/pcap?src=10.0.0.5&proto=sctpx", 400),
        ("/api/pcap?dport=70000&src=10.0.0.5", 400),
        (
            "/api/pcap?src=10.0.0.5&since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z",
            400,
        ),
    ] {
        let (status, body) = s.get(path);
        assert_eq!(status, want, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string(), "{path}: {body}");
    }

    // The rest of the capture: the flow ends, the slice completes.
    {
        let w = s.stdin();
        for r in &recs[n + 1..] {
            w.write_all(r).unwrap();
        }
    }
    drop(s.child.stdin.take());
    s.wait_finished();
    let (_, body) = s.get("/api/slices");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Now also the slice of the per-flow asymmetry alert raised at the flow's end.
    assert_eq!(list["count"], 2, "{list}");
    let side = list["slices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["slice_id"] == id.as_str())
        .unwrap();
    assert_eq!(side["complete"], true, "{list}");
    let (status, _, file) = s.get_with(&format!("/api/slices/{id}.pcap"), None);
    assert_eq!(status, 200);
    assert_eq!(
        file,
        std::fs::read(slices.join(format!("{id}.pcap"))).unwrap()
    );
    assert_eq!(
        side["sha256"].as_str().unwrap(),
        hex(&sha2::Sha256::digest(&file))
    );
    assert_eq!(
        side["packets"].as_u64().unwrap() as usize,
        read_pcap(&file).2.len()
    );
    let (status, _, sidecar) = s.get_with(&format!("/api/slices/{id}.json"), None);
    assert_eq!(status, 200);
    let sidecar: serde_json::Value = serde_json::from_slice(&sidecar).unwrap();
    assert_eq!(&sidecar, side);
    assert!(s.stop().success());
}

#[test]
fn a_second_tier_supersedes_the_slice_without_duplicates_and_keeps_the_link_type() {
    // Linux cooked capture (SLL, link type 113), crossing a 5 MB threshold then a 10 MB
    // tier, replayed in many small batches.
    let mut up = TcpSession::new(
        sa("10.0.0.5:51234"),
        sa("203.0.113.50:443"),
        20_000_000,
        20_000,
    );
    up.link = outflow::gen::Link::Sll;
    let want: Vec<Packet> = up.packets().collect();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sll.pcap");
    let mut w = PcapWriter::new_nanos(
        BufWriter::new(std::fs::File::create(&pcap).unwrap()),
        113,
        65535,
    )
    .unwrap();
    for p in &want {
        w.write(p.ts_ns, &p.frame).unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
    let slices = dir.path().join("slices");
    let mut cfg = Config::default();
    cfg.capture.batch_packets = 64;
    cfg.detect.large_transfer.threshold_bytes = 5_000_000;
    cfg.detect.large_transfer.tiers = vec![10_000_000];
    cfg.slice.dir = slices.display().to_string();
    let r = common::replay(&cfg, 1, &[pcap]);
    assert_eq!(r.alerts.len(), 2, "{:?}", r.alerts);
    let (first, second) = (&r.alerts[0], &r.alerts[1]);
    let read = |id: &str| {
        let side: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(slices.join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        let (_, linktype, recs) =
            read_pcap(&std::fs::read(slices.join(format!("{id}.pcap"))).unwrap());
        assert_eq!(linktype, 113, "{id}: the capture's link type");
        assert_eq!(side["linktype"], 113);
        (side, recs)
    };
    let (s1, r1) = read(first.slice_id.as_deref().unwrap());
    let (s2, r2) = read(second.slice_id.as_deref().unwrap());
    assert_eq!(s1["end_reason"], "superseded", "{s1}");
    assert_eq!(s1["superseded_by"], second.id.as_str());
    assert_eq!(s2["end_reason"], "flow_ended", "{s2}");
    // The newer slice is whole: every packet once, in order, none from the first slice's
    // staging repeated.
    assert_eq!(r2.len(), want.len());
    assert!(r2.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
    for (g, w) in r2.iter().zip(&want) {
        assert_eq!(g.ts_ns, w.ts_ns);
        assert_eq!(&w.frame[..g.data.len()], &g.data[..]);
    }
    // The older one: the flow's first packets, through its alert, up to the second.
    assert!(r1.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
    assert!(r1.first().unwrap().ts_ns == want[0].ts_ns);
    assert!(r1.last().unwrap().ts_ns >= first.ts_ns && r1.last().unwrap().ts_ns <= second.ts_ns);
    wireshark_reads(&slices.join(format!("{}.pcap", second.id)), want.len());
}

#[test]
fn an_alert_raised_at_the_flows_end_gets_a_slice_from_the_ring() {
    // The demo's upload also raises the per-flow asymmetric-upload alert, on the output
    // thread at the flow's end: the worker holding the flow cuts that slice from its ring.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.slice.dir = dir.path().display().to_string();
    let r = common::replay(&cfg, 2, &[demo]);
    let large = &r.alerts[0];
    let asym = r
        .leak_alerts
        .iter()
        .find(|a| a.scope == "flow")
        .expect("a per-flow asymmetry alert");
    assert_eq!(asym.flow_id, Some(large.flow_id));
    let id = asym
        .slice_id
        .clone()
        .expect("slice id on the per-flow alert");
    let json = outflow::output::json::leak_alert_json(asym);
    assert!(
        json.contains(&format!("\"slice_url\":\"/api/slices/{id}.pcap\"")),
        "{json}"
    );
    let side = |id: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{id}.json"))).unwrap(),
        )
        .unwrap()
    };
    let (s_large, s_asym) = (side(large.slice_id.as_deref().unwrap()), side(&id));
    // The ring still held the whole flow: the same packets as the slice recorded live,
    // with the 5-tuple taken from them.
    assert_eq!(s_asym["packets"], s_large["packets"]);
    assert_eq!(s_asym["sha256"], s_large["sha256"]);
    assert_eq!(s_asym["end_reason"], "flow_ended");
    for k in ["proto", "src_ip", "src_port", "dst_ip", "dst_port"] {
        assert_eq!(s_asym[k], s_large[k], "{k}");
    }
    assert_eq!(s_asym["detector"], "asymmetric_upload");
    // Alerts about many flows have no slice.
    assert!(r
        .leak_alerts
        .iter()
        .filter(|a| a.scope != "flow")
        .all(|a| a.slice_id.is_none()));
}
