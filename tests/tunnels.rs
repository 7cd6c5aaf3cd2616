//! Suricata-verify's tunnel and PPPoE cases and Zeek's TSO capture, replayed from
//! `../shared/pcaps` (skipped when absent): flows on the inner headers with Suricata's
//! flow counts, the decoder's counters exact, and TSO frames counted with the frame's
//! length. The decapsulation switches of `[decap]` are checked on the same captures.

mod common;

use outflow::config::Config;
use outflow::decode::{DecodeError, Layer, TunnelKind};
use outflow::flow::FlowRecord;
use outflow::replay::ReplayReport;
use std::path::Path;

fn layer(rep: &ReplayReport, l: Layer) -> u64 {
    rep.summary.reader.encap.layers[l as usize]
}

fn row(r: &FlowRecord) -> (String, u16, String, u16, u64, u64, u64, u64) {
    (
        r.orig_addr.to_ip(r.ipv6).to_string(),
        r.orig_port,
        r.resp_addr.to_ip(r.ipv6).to_string(),
        r.resp_port,
        r.orig.pkts,
        r.orig.ip_bytes,
        r.resp.pkts,
        r.resp.ip_bytes,
    )
}

fn replay(root: &Path, file: &str, cfg: &Config) -> ReplayReport {
    common::replay(cfg, 2, &[root.join(file)])
}

#[test]
fn suricata_verify_vxlan_cases() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let cfg = Config::default();
    // vxlan-decoder-02: one ICMP flow inside, 4 packets each way; 4 outer flows to 4789.
    let rep = replay(&root, "suricata-verify/vxlan-decoder-02/vxlan.pcap", &cfg);
    let icmp: Vec<_> = rep.flows.iter().filter(|r| r.proto == 1).collect();
    assert_eq!(icmp.len(), 1);
    assert_eq!((icmp[0].orig.pkts, icmp[0].resp.pkts), (4, 4));
    let hop = icmp[0].tunnel().unwrap().hops()[0];
    assert_eq!(
        (hop.kind, hop.id, hop.dport),
        (TunnelKind::Vxlan, Some(100), 4789)
    );
    let outer: Vec<_> = rep
        .flows
        .iter()
        .filter(|r| r.tunnel_tag.is_outer())
        .collect();
    assert_eq!(outer.len(), 4);
    assert!(outer
        .iter()
        .all(|r| r.resp_port == 4789 && r.outbound.is_none()));
    assert_eq!(layer(&rep, Layer::Vxlan), 10);
    // Two frames carry ARP: counted in their tunnel's flow, not lost.
    assert_eq!(rep.summary.reader.encap.inner_errors, 2);
    assert_eq!(rep.flows.len(), 5);

    // vxlan-decoder-01: a DNS answer inside VNI 37 is a flow of its own.
    let rep = replay(&root, "suricata-verify/vxlan-decoder-01/input.pcap", &cfg);
    let inner: Vec<_> = rep.flows.iter().filter(|r| r.tunnel().is_some()).collect();
    assert_eq!(inner.len(), 1);
    assert_eq!(
        row(inner[0]),
        (
            "10.96.0.10".into(),
            53,
            "185.27.115.6".into(),
            12345,
            1,
            28,
            0,
            0
        )
    );
    assert_eq!(inner[0].tunnel_tag.id, 37);

    // Switched off, VXLAN is plain UDP again: no inner flow, no counter.
    let mut off = Config::default();
    off.decap.vxlan_ports = vec![];
    let rep = replay(&root, "suricata-verify/vxlan-decoder-02/vxlan.pcap", &off);
    assert!(rep
        .flows
        .iter()
        .all(|r| r.proto == 17 && r.tunnel().is_none()));
    assert!(rep.flows.iter().all(|r| !r.tunnel_tag.is_outer()));
    assert_eq!(layer(&rep, Layer::Vxlan), 0);
}

#[test]
fn suricata_verify_erspan_gre_and_pppoe_cases() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let cfg = Config::default();
    // decode-erspan-typeI-01: 42 frames of ERSPAN I in GRE; the request and the reply are on
    // different VLANs of the mirrored port, so two ICMP flows (Suricata: 2 flows).
    let rep = replay(
        &root,
        "suricata-verify/decode-erspan-typeI-01/input.pcap",
        &cfg,
    );
    assert_eq!(layer(&rep, Layer::Erspan), 42);
    let mut icmp: Vec<_> = rep
        .flows
        .iter()
        .filter(|r| r.proto == 1)
        .map(|r| (r.orig_addr.to_ip(false).to_string(), r.vlan, r.orig.pkts))
        .collect();
    icmp.sort();
    assert_eq!(
        icmp,
        [
            ("100.95.2.201".to_string(), [1011, 0], 21),
            ("100.95.3.105".to_string(), [999, 0], 21)
        ]
    );
    // The GRE session itself: one outer flow of all 42 frames.
    let outer: Vec<_> = rep
        .flows
        .iter()
        .filter(|r| r.tunnel_tag.is_outer())
        .collect();
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].orig.pkts + outer[0].resp.pkts, 42);
    // The outer flow is named by its carrier (GRE), the same for its fragments.
    assert_eq!(outer[0].tunnel_tag.tunnel_kind(), TunnelKind::Gre);

    // bug-5633-gre-01: UDP syslog inside GRE.
    let rep = replay(&root, "suricata-verify/bug-5633-gre-01/gre-udp.pcap", &cfg);
    let inner: Vec<_> = rep.flows.iter().filter(|r| r.tunnel().is_some()).collect();
    assert_eq!(inner.len(), 1);
    assert_eq!(
        row(inner[0]),
        ("2.2.2.3".into(), 12345, "2.2.2.2".into(), 514, 3, 96, 0, 0)
    );
    assert_eq!(layer(&rep, Layer::Gre), 3);

    // pppoe: discovery and session control only (LCP, IPCP, IP6CP, CCP): nothing is IP.
    let rep = replay(&root, "suricata-verify/pppoe/input.pcap", &cfg);
    assert!(rep.flows.is_empty());
    assert_eq!(
        rep.summary.reader.decode_errors[DecodeError::NonIp.index()],
        37
    );
}

#[test]
fn tso_frames_take_their_length_from_the_frame() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let file = "zeek/scripts__base__protocols__tcp__krb-tcp-tso/kerberos_tso.pcapng";
    let rep = replay(&root, file, &Config::default());
    // Seven segments with IPv4 total length 0: decoded (before: bad_ip_header), counted as
    // offloaded, not as errors.
    assert_eq!(rep.summary.reader.encap.len_from_frame, 7);
    assert_eq!(rep.summary.reader.decode_errors.iter().sum::<u64>(), 0);
    assert_eq!(rep.summary.reader.decoded, 314);
    // The Kerberos exchange Zeek's kerberos.log shows (port 88, 172.16.0.211 -> .100).
    assert!(rep
        .flows
        .iter()
        .any(|r| r.resp_port == 88 && r.orig.pkts > 0 && r.resp.pkts > 0));
}

/// The demo capture (a 150 MB upload, DNS, fragments, malformed frames, snaplen-cut frames)
/// rewritten by `outflow-gen wrap` as VXLAN and ERSPAN III mirrors: the same inner flow
/// records and the same alerts at the same packet and byte as the bare demo.
#[test]
fn the_demo_through_a_mirror_tunnel_gives_the_demos_flows_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap");
    let cfg = Config::default();
    let bare = common::replay(&cfg, 2, std::slice::from_ref(&demo));
    let key = |rep: &ReplayReport| {
        let mut flows: Vec<_> = rep
            .flows
            .iter()
            .filter(|r| !r.tunnel_tag.is_outer())
            .map(row)
            .collect();
        flows.sort();
        let alerts: Vec<_> = rep
            .alerts
            .iter()
            .map(|a| (a.ts_ns, a.out, a.src, a.dst, a.tier))
            .collect();
        (flows, alerts, rep.leak_alerts.len())
    };
    let want = key(&bare);
    assert_eq!(want.1.len(), 1);
    for tunnel in ["vxlan:42", "erspan3:3"] {
        let out = dir.path().join(format!("{tunnel}.pcap").replace(':', "-"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_outflow-gen"))
            .args(["wrap", tunnel])
            .arg(&demo)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let rep = common::replay(&cfg, 2, &[out]);
        assert_eq!(key(&rep), want, "{tunnel}");
        // Every frame reached the tunnel's own flows, once.
        let outer: u64 = rep
            .flows
            .iter()
            .filter(|r| r.tunnel_tag.is_outer())
            .map(|r| r.orig.pkts + r.resp.pkts)
            .sum();
        assert_eq!(outer, rep.summary.reader.frames, "{tunnel}");
        for a in &rep.alerts {
            let h = a.tunnel.as_deref().expect("tunnel named").hops()[0];
            assert_eq!(h.dst.to_ip(false).to_string(), "172.31.0.99");
        }
    }
}
