//! A FIN or RST that arrives after a closed connection's linger (issue 13): it joins the
//! connection it belongs to (the original orientation, and a link to the first record)
//! instead of starting a new flow whose originator is its sender, often the external host.
//!
//! Each capture is one generated connection from a home host to an external server that
//! closes with FIN/ACK both ways, then late packets from the server, so the late flow's
//! record comes after the connection's.

mod common;

use etherparse::PacketBuilder;
use outflow::config::Config;
use outflow::decode::Addr;
use outflow::flow::{EndReason, FlowRecord, Side, TcpState};
use outflow::gen::{Packet, TcpSession};
use outflow::output::json::flow_json;
use outflow::replay::ReplayReport;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const HOME: [u8; 4] = [10, 0, 0, 5];
const EXT: [u8; 4] = [203, 0, 113, 50];
const HOME_PORT: u16 = 51_234;
const EXT_PORT: u16 = 443;

/// The connection: handshake, 3000 bytes up, 1000 down, FIN/ACK both ways and the last ACK.
fn session() -> Vec<Packet> {
    let mut s = TcpSession::new(
        "10.0.0.5:51234".parse().unwrap(),
        "203.0.113.50:443".parse().unwrap(),
        3000,
        1000,
    );
    s.start_ns = T0;
    s.packets().collect()
}

/// A segment from the external server to the home host, with `flags` applied to the builder.
fn from_server(
    ts_ns: u64,
    flags: impl FnOnce(etherparse::PacketBuilderStep<etherparse::TcpHeader>) -> Vec<u8>,
) -> Packet {
    let b = PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv4(EXT, HOME, 64)
        .tcp(EXT_PORT, HOME_PORT, 7_000, 65_535);
    Packet {
        ts_ns,
        frame: flags(b),
    }
}

fn rst(b: etherparse::PacketBuilderStep<etherparse::TcpHeader>) -> Vec<u8> {
    let mut f = Vec::new();
    b.rst().write(&mut f, &[]).unwrap();
    f
}

fn syn(b: etherparse::PacketBuilderStep<etherparse::TcpHeader>) -> Vec<u8> {
    let mut f = Vec::new();
    b.syn().write(&mut f, &[]).unwrap();
    f
}

/// Replays the connection followed by what `late` makes of its packets and the time of
/// its last one.
fn replay_with_late(
    cfg: &Config,
    late: impl FnOnce(&[Packet], u64) -> Vec<Packet>,
) -> ReplayReport {
    let mut packets = session();
    let last = packets.last().map(|p| p.ts_ns).unwrap();
    let more = late(&packets, last);
    packets.extend(more);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.pcap");
    common::write_pcap(&path, packets);
    common::replay(cfg, 1, &[path])
}

/// The server's FIN/ACK of the teardown (FIN/ACK from the client, FIN/ACK from the server,
/// the client's ACK), sent again at `ts_ns`: a retransmission, byte for byte.
fn server_fin_again(packets: &[Packet], ts_ns: u64) -> Packet {
    Packet {
        ts_ns,
        frame: packets[packets.len() - 2].frame.clone(),
    }
}

fn home() -> Addr {
    Addr::v4(HOME)
}

fn ext() -> Addr {
    Addr::v4(EXT)
}

/// The connection's own record: written when its linger ran out.
fn check_first(r: &FlowRecord, packets: u64) {
    assert_eq!(r.flow_id, 1);
    assert_eq!((r.orig_addr, r.orig_port), (home(), HOME_PORT));
    assert_eq!((r.resp_addr, r.resp_port), (ext(), EXT_PORT));
    assert_eq!(r.orig.pkts + r.resp.pkts, packets);
    assert_eq!(r.reason, EndReason::Fin);
    assert_eq!(r.tcp, TcpState::Closed);
}

/// Six seconds after the close (one past the 5 s linger) the server retransmits its FIN:
/// the late flow keeps the home host as originator and links to the first record.
#[test]
fn a_late_fin_joins_the_closed_connection() {
    let n = session().len() as u64;
    let rep = replay_with_late(&Config::default(), |p, last| {
        vec![server_fin_again(p, last + 6 * S)]
    });
    assert_eq!(rep.flows.len(), 2, "{:?}", rep.flows);
    check_first(&rep.flows[0], n);
    let late = &rep.flows[1];
    assert_eq!(late.flow_id, n + 1, "its own id: the late packet's");
    assert_eq!((late.orig_addr, late.orig_port), (home(), HOME_PORT));
    assert_eq!((late.resp_addr, late.resp_port), (ext(), EXT_PORT));
    assert_eq!((late.orig.pkts, late.orig.ip_bytes), (0, 0));
    assert_eq!((late.resp.pkts, late.resp.ip_bytes), (1, 40));
    assert_eq!(
        late.outbound,
        Some(Side::Orig),
        "home is still the originator"
    );
    assert_eq!(late.continues.map(|x| x.get()), Some(1));
    assert_eq!(late.tcp, TcpState::HalfClosed);
    let s = &rep.summary.flows.recent;
    assert_eq!((s.inserted, s.joined, s.overwritten), (1, 1, 0));
    let json = flow_json(late, 0);
    assert!(
        json.starts_with(&format!("{{\"flow_id\":{},\"continues\":1,", n + 1)),
        "{json}"
    );
    assert!(!flow_json(&rep.flows[0], 0).contains("continues"));
}

/// A late flow that closes in turn is remembered with the first record's id: a second
/// late RST after its linger links to the first record too, not to the late one.
#[test]
fn a_second_late_flow_links_to_the_first_record() {
    let n = session().len() as u64;
    let rep = replay_with_late(&Config::default(), |_, last| {
        vec![
            from_server(last + 6 * S, rst),
            from_server(last + 20 * S, rst),
        ]
    });
    assert_eq!(rep.flows.len(), 3, "{:?}", rep.flows);
    for (late, id) in rep.flows[1..].iter().zip([n + 1, n + 2]) {
        assert_eq!(late.flow_id, id);
        assert_eq!((late.orig_addr, late.orig_port), (home(), HOME_PORT));
        assert_eq!(late.continues.map(|x| x.get()), Some(1));
        assert_eq!(late.reason, EndReason::Rst);
    }
    let s = &rep.summary.flows.recent;
    assert_eq!((s.inserted, s.joined), (2, 2));
    assert!(
        rep.summary
            .to_string()
            .contains("recent closed  2 tcp closings remembered, 2 late flows joined one"),
        "{}",
        rep.summary
    );
}

/// A RST from the server after the linger joins the same way, and ends as a reset.
#[test]
fn a_late_rst_joins_the_closed_connection() {
    let n = session().len() as u64;
    let rep = replay_with_late(&Config::default(), |_, last| {
        vec![from_server(last + 6 * S, rst)]
    });
    assert_eq!(rep.flows.len(), 2, "{:?}", rep.flows);
    check_first(&rep.flows[0], n);
    let late = &rep.flows[1];
    assert_eq!(late.flow_id, n + 1);
    assert_eq!((late.orig_addr, late.orig_port), (home(), HOME_PORT));
    assert_eq!((late.resp_addr, late.resp_port), (ext(), EXT_PORT));
    assert_eq!((late.orig.pkts, late.orig.ip_bytes), (0, 0));
    assert_eq!((late.resp.pkts, late.resp.ip_bytes), (1, 40));
    assert_eq!(late.outbound, Some(Side::Orig));
    assert_eq!(late.continues.map(|x| x.get()), Some(1));
    assert_eq!((late.tcp, late.reason), (TcpState::Reset, EndReason::Rst));
}

/// Once the recently-closed entry has expired (default 2 min), a late FIN starts a flow of
/// its own as before: its sender is the originator, and nothing links it.
#[test]
fn a_late_fin_after_the_entry_expired_is_a_flow_of_its_own() {
    let n = session().len() as u64;
    let rep = replay_with_late(&Config::default(), |p, last| {
        vec![server_fin_again(p, last + 5 * S + 121 * S)]
    });
    assert_eq!(rep.flows.len(), 2);
    check_first(&rep.flows[0], n);
    let late = &rep.flows[1];
    assert_eq!((late.orig_addr, late.orig_port), (ext(), EXT_PORT));
    assert_eq!((late.resp_addr, late.resp_port), (home(), HOME_PORT));
    assert_eq!((late.orig.pkts, late.orig.ip_bytes), (1, 40));
    assert_eq!(late.resp.pkts, 0);
    assert_eq!(late.continues, None);
    let s = &rep.summary.flows.recent;
    assert_eq!((s.inserted, s.joined), (1, 0));
}

/// With `flow.tcp_recent_closed = 0` the table is off: a late FIN is a flow of its own.
#[test]
fn a_zero_window_turns_joining_off() {
    let mut cfg = Config::default();
    cfg.flow.tcp_recent_closed = std::time::Duration::ZERO;
    cfg.validate().unwrap();
    let rep = replay_with_late(&cfg, |p, last| vec![server_fin_again(p, last + 6 * S)]);
    let late = &rep.flows[1];
    assert_eq!((late.orig_addr, late.continues), (ext(), None));
    assert_eq!(
        (late.orig.pkts, late.orig.ip_bytes, late.resp.pkts),
        (1, 40, 0)
    );
    assert_eq!(rep.summary.flows.recent.inserted, 0);
}

/// A SYN never joins: after the linger, the server opening a connection back to the
/// home host's port is a new connection with the server as originator.
#[test]
fn a_syn_after_the_linger_is_a_new_connection() {
    let rep = replay_with_late(&Config::default(), |_, last| {
        vec![from_server(last + 6 * S, syn)]
    });
    assert_eq!(rep.flows.len(), 2);
    let new = &rep.flows[1];
    assert_eq!((new.orig_addr, new.orig_port), (ext(), EXT_PORT));
    assert_eq!((new.orig.pkts, new.resp.pkts), (1, 0));
    assert_eq!(new.continues, None);
    assert_eq!(new.outbound, Some(Side::Resp));
    assert_eq!(rep.summary.flows.recent.joined, 0);
}

/// Zeek's Teredo capture (`core__tunnels__teredo`, in `../shared/pcaps`): a server's RST
/// two seconds after the connection 192.168.2.16:1578 → 75.126.203.78:80 was reset. Zeek
/// logs it as a connection of its own, flipped to the client as originator (history `^r`,
/// 0/0 and 1/40 packets/IP bytes); outflow's late flow now has that orientation and those
/// counts, and links to the connection's record.
#[test]
fn a_late_rst_in_zeeks_teredo_capture_matches_its_conn_log() {
    let Some(root) = common::shared_pcaps() else {
        return;
    };
    let pcap = root.join("zeek/core__tunnels__teredo/Teredo.pcap");
    if !pcap.exists() {
        eprintln!("skipping: {} is absent", pcap.display());
        return;
    }
    let rep = common::replay(&Config::default(), 1, &[pcap]);
    let client: Addr = Addr::v4([192, 168, 2, 16]);
    let on_1578: Vec<&FlowRecord> = rep
        .flows
        .iter()
        .filter(|r| r.proto == 6 && (r.orig_port == 1578 || r.resp_port == 1578))
        .collect();
    assert_eq!(on_1578.len(), 2, "{on_1578:?}");
    let (first, late) = (on_1578[0], on_1578[1]);
    assert_eq!((first.orig_addr, first.orig_port), (client, 1578));
    assert_eq!((late.orig_addr, late.orig_port), (client, 1578));
    assert_eq!(
        (late.resp_addr, late.resp_port),
        (Addr::v4([75, 126, 203, 78]), 80)
    );
    let counts = (
        late.orig.pkts,
        late.orig.ip_bytes,
        late.resp.pkts,
        late.resp.ip_bytes,
    );
    assert_eq!(counts, (0, 0, 1, 40));
    assert_eq!(late.continues.map(|x| x.get()), Some(first.flow_id));
}
