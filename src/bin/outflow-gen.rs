//! `outflow-gen`: writes the deterministic test captures (see `pcaps/README.md`).

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use outflow::gen::{self, Close, Link, PcapWriter, TcpSession};
use outflow::proto::tls::build::{self as tls_build, HelloSpec};

#[derive(Parser)]
#[command(
    name = "outflow-gen",
    about = "Write deterministic pcap files for outflow's tests, benches and demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo capture: a 150 MB upload crossing the 100 MB alert threshold over background
    /// traffic (pcaps/demo.pcap).
    Demo { out: PathBuf },
    /// A large capture of many concurrent mixed flows, for benchmarks.
    Mixed {
        /// File size to write: 1G, 500M, 1000000, 64MiB...
        #[arg(long, value_parser = gen::parse_size)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Largest TCP payload per segment (small packets for packet-rate tests).
        #[arg(long)]
        mss: Option<u16>,
        out: PathBuf,
    },
    /// Flow-heavy mix for benchmarks: many short TCP sessions (4/5) and DNS transactions
    /// (1/5), tens of thousands open at once (default 250 000 flows, ~2.5 M packets, ~1 GB).
    Flows {
        /// Flows to write (TCP sessions plus DNS transactions).
        #[arg(long, default_value_t = gen::FLOWS_DEFAULT)]
        flows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        out: PathBuf,
    },
    /// Small-packet flood for benchmarks: mostly one-packet flows, each from a new source
    /// (most in 10.0.0.0/8), among long-lived flows of 82-byte frames (default 5 M packets).
    Flood {
        /// Flood packets to write.
        #[arg(long, default_value_t = gen::FLOOD_DEFAULT_PACKETS)]
        packets: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also interleave one TCP upload of this many payload bytes (10.0.0.5:51234 ->
        /// 203.0.113.50:443, 1460-byte segments, handshake and FIN close) through the flood,
        /// and print the packet with which it crosses `--upload-threshold`: 150M, 1000000...
        #[arg(long, value_parser = gen::parse_size)]
        upload: Option<u64>,
        /// Outbound IP bytes the upload's crossing packet reaches (the sensor's
        /// `detect.large_transfer.threshold_bytes`).
        #[arg(long, value_parser = gen::parse_size, default_value = "100000000")]
        upload_threshold: u64,
        out: PathBuf,
    },
    /// One-packet flows all open at once, each from its own home source (SYNs and UDP
    /// datagrams over 20 s of packet time, within every idle timeout), for memory
    /// measurements (`scripts/memory.sh`).
    Concurrent {
        /// Flows to write (at most 16777216).
        #[arg(long)]
        flows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        out: PathBuf,
    },
    /// One TCP upload session, 10.0.0.5:51234 -> 203.0.113.50:443 (IPv6: fd00::5 ->
    /// 2001:db8::50), with handshake and FIN close.
    Upload {
        /// Bytes uploaded (TCP payload): 150M, 1000000...
        #[arg(long, value_parser = gen::parse_size)]
        bytes: u64,
        /// Bytes downloaded (TCP payload).
        #[arg(long, value_parser = gen::parse_size, default_value = "0")]
        download: u64,
        #[arg(long, default_value_t = 65_535)]
        snaplen: u32,
        /// Payload bytes per full segment.
        #[arg(long, default_value_t = 1460)]
        mss: u16,
        /// VLAN id; repeat for QinQ (outermost first).
        #[arg(long)]
        vlan: Vec<u16>,
        #[arg(long)]
        ipv6: bool,
        #[arg(long, value_enum, default_value_t = LinkArg::Ethernet)]
        link: LinkArg,
        /// Microseconds between packets.
        #[arg(long, default_value_t = 10)]
        gap_us: u64,
        /// Receiver ACKs once per this many segments.
        #[arg(long, default_value_t = 2)]
        ack_every: u32,
        #[arg(long, value_enum, default_value_t = CloseArg::Fin)]
        close: CloseArg,
        /// Start mid-connection (no handshake).
        #[arg(long)]
        no_syn: bool,
        /// Deliver the frames as a mirror would: `vxlan:VNI`, `geneve:VNI` or
        /// `erspan3:SESSION` (needs --link ethernet).
        #[arg(long, value_parser = parse_wrap)]
        wrap: Option<gen::Wrap>,
        /// Open with a TLS ClientHello naming this server (SNI), counted in --bytes.
        #[arg(long, conflicts_with = "http_host")]
        sni: Option<String>,
        /// ALPN protocol the hello offers (repeat for several; needs --sni).
        #[arg(long, requires = "sni")]
        alpn: Vec<String>,
        /// TCP segments the ClientHello is cut into (1: whole).
        #[arg(long, default_value_t = 1, requires = "sni")]
        hello_segments: u16,
        /// Open with an HTTP/1.1 request head (`METHOD /upload`) with this Host; --bytes is
        /// then its body (the Content-Length), sent after the head.
        #[arg(long)]
        http_host: Option<String>,
        /// Method of the request head.
        #[arg(long, default_value = "PUT", requires = "http_host")]
        http_method: String,
        out: PathBuf,
    },
    /// A DNS scenario for the tunnel detector (issue 14): `search-retries` and `kubernetes`
    /// (benign patterns that must not alert), `hex-tunnel`, `base32-tunnel`,
    /// `base64-tunnel` (slow tunnels, one query every 10-30 s for 55 min) and `dnscat2` (a
    /// 12-query handshake), each alerting once. `all` writes every one into OUT (a
    /// directory) as `<scenario>.pcap`.
    Dns {
        /// The scenario, or `all`.
        scenario: String,
        out: PathBuf,
    },
    /// Rewrites an Ethernet capture as a mirror would deliver it: each frame inside VXLAN,
    /// Geneve or ERSPAN III from 172.31.0.10 to 172.31.0.99 (tunnelled benches, or a
    /// check of a sensor's mirror setup).
    Wrap {
        /// `vxlan:VNI`, `geneve:VNI` or `erspan3:SESSION`.
        #[arg(value_parser = parse_wrap)]
        tunnel: gen::Wrap,
        input: PathBuf,
        out: PathBuf,
    },
}

fn parse_dns_scenario(s: &str) -> Result<Option<gen::DnsScenario>, String> {
    if s == "all" {
        return Ok(None);
    }
    gen::DnsScenario::from_name(s).map(Some).ok_or_else(|| {
        let names: Vec<&str> = gen::DnsScenario::ALL.iter().map(|d| d.name()).collect();
        format!("{s}: expected all or one of {}", names.join(", "))
    })
}

fn write_dns(kind: gen::DnsScenario, out: &std::path::Path) -> Result<()> {
    let i =
        gen::write_dns_scenario(out, kind).with_context(|| format!("writing {}", out.display()))?;
    let tunnel = i.tunnel.map_or("benign".to_string(), |(d, e)| {
        format!("{e} tunnel under {d}")
    });
    println!(
        "{}: {} {} queries ({} distinct names, {} internal, {} search retries, {} NXDOMAIN) \
         from {} over {:.1} s: {tunnel}",
        out.display(),
        kind.name(),
        i.queries,
        i.unique_names,
        i.internal_queries,
        i.search_retries,
        i.nxdomains,
        i.client,
        (i.span_ns.1 - i.span_ns.0) as f64 / 1e9,
    );
    Ok(())
}

fn parse_wrap(s: &str) -> Result<gen::Wrap, String> {
    let (kind, id) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: expected vxlan:VNI, geneve:VNI or erspan3:SESSION"))?;
    let id: u32 = id.parse().map_err(|e| format!("{s}: {e}"))?;
    match kind {
        "vxlan" if id < 1 << 24 => Ok(gen::Wrap::Vxlan { vni: id }),
        "geneve" if id < 1 << 24 => Ok(gen::Wrap::Geneve { vni: id }),
        "erspan3" if id < 1 << 10 => Ok(gen::Wrap::ErspanIII { session: id as u16 }),
        _ => Err(format!(
            "{s}: expected vxlan:VNI or geneve:VNI (VNI < 2^24) or erspan3:SESSION (< 1024)"
        )),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LinkArg {
    Ethernet,
    Sll,
    Sll2,
    Raw,
}

#[derive(Clone, Copy, ValueEnum)]
enum CloseArg {
    Fin,
    Rst,
    None,
}

fn rate(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)
}

fn print_stress(out: &std::path::Path, s: &gen::StressSummary, started: Instant) {
    println!(
        "{}: {} packets, {} flows, {} bytes ({:.0} bytes/packet); {} tcp ({} uploads), {} dns \
         ({} queries, {} packets), {} other udp, {} one-packet, {} ipv6, {} vlan; {} sources; \
         at most {} flows open at once; {:.1} s of traffic, written at {:.0} MB/s",
        out.display(),
        s.packets,
        s.flows,
        s.file_bytes,
        (s.file_bytes as f64 - 24.0) / s.packets.max(1) as f64 - 16.0,
        s.tcp_flows,
        s.uploads,
        s.dns_flows,
        s.dns_queries,
        s.dns_packets,
        s.udp_flows,
        s.one_packet_flows,
        s.ipv6_flows,
        s.vlan_flows,
        s.sources,
        s.max_open,
        (s.last_ts_ns.saturating_sub(s.first_ts_ns)) as f64 / 1e9,
        rate(s.file_bytes, started),
    );
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    match cli.cmd {
        Cmd::Demo { out } => {
            let s = gen::write_demo(&out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} packets, {} bytes, {:.1} s of traffic; big upload {} packets, {} orig IP \
                 bytes, crosses {} at +{:.3} s, FIN at +{:.3} s",
                out.display(),
                s.packets,
                s.file_bytes,
                (s.last_ts_ns - s.first_ts_ns) as f64 / 1e9,
                s.big_upload_packets,
                s.big_upload.orig_ip_bytes,
                gen::DEMO_ALERT_IP_BYTES,
                (s.big_upload_cross_ts_ns - s.first_ts_ns) as f64 / 1e9,
                (s.big_upload_fin_ts_ns - s.first_ts_ns) as f64 / 1e9,
            );
        }
        Cmd::Mixed {
            bytes,
            seed,
            mss,
            out,
        } => {
            let s = gen::write_mixed_mss(&out, bytes, seed, mss.unwrap_or(u16::MAX))
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} packets, {} bytes, {} sessions ({} tcp, {} udp, {} ipv6, {} vlan), \
                 {:.1} s of traffic, written at {:.0} MB/s",
                out.display(),
                s.packets,
                s.file_bytes,
                s.sessions,
                s.tcp_sessions,
                s.udp_exchanges,
                s.ipv6_sessions,
                s.vlan_sessions,
                (s.last_ts_ns.saturating_sub(s.first_ts_ns)) as f64 / 1e9,
                rate(s.file_bytes, started),
            );
        }
        Cmd::Flows { flows, seed, out } => {
            let s = gen::write_flows(&out, flows, seed)
                .with_context(|| format!("writing {}", out.display()))?;
            print_stress(&out, &s, started);
        }
        Cmd::Flood {
            packets,
            seed,
            upload: None,
            out,
            ..
        } => {
            let s = gen::write_flood(&out, packets, seed)
                .with_context(|| format!("writing {}", out.display()))?;
            print_stress(&out, &s, started);
        }
        Cmd::Concurrent { flows, seed, out } => {
            if flows > gen::CONCURRENT_MAX {
                anyhow::bail!(
                    "--flows {flows}: at most {} (one source each in a /8)",
                    gen::CONCURRENT_MAX
                );
            }
            let s = gen::write_concurrent(&out, flows, seed)
                .with_context(|| format!("writing {}", out.display()))?;
            print_stress(&out, &s, started);
        }
        Cmd::Flood {
            packets,
            seed,
            upload: Some(bytes),
            upload_threshold,
            out,
        } => {
            let (s, u) = gen::write_flood_upload(&out, packets, seed, bytes, upload_threshold)
                .with_context(|| format!("writing {}", out.display()))?;
            print_stress(&out, &s, started);
            // key=value, for scripts: the alert for this upload must carry out_pkts and
            // out_ip_bytes equal to cross_orig_pkts and cross_orig_ip_bytes.
            println!(
                "upload {} -> {}: packets={} orig_pkts={} orig_ip_bytes={} threshold={} \
                 cross_index={} cross_ts_us={} cross_at_s={:.3} cross_orig_pkts={} \
                 cross_orig_ip_bytes={} fin_at_s={:.3}",
                gen::FLOOD_UPLOAD_CLIENT,
                gen::FLOOD_UPLOAD_SERVER,
                u.expect.pkts(),
                u.expect.orig_pkts,
                u.expect.orig_ip_bytes,
                u.threshold_ip_bytes,
                u.cross_index,
                u.cross_ts_ns / 1_000,
                (u.cross_ts_ns - s.first_ts_ns) as f64 / 1e9,
                u.cross_orig_pkts,
                u.cross_orig_ip_bytes,
                (u.fin_ts_ns - s.first_ts_ns) as f64 / 1e9,
            );
        }
        Cmd::Dns { scenario, out } => match parse_dns_scenario(&scenario) {
            Ok(Some(kind)) => write_dns(kind, &out)?,
            Ok(None) => {
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                for kind in gen::DnsScenario::ALL {
                    write_dns(kind, &out.join(format!("{}.pcap", kind.name())))?;
                }
            }
            Err(e) => anyhow::bail!(e),
        },
        Cmd::Wrap { tunnel, input, out } => wrap_capture(tunnel, &input, &out)?,
        Cmd::Upload {
            bytes,
            download,
            snaplen,
            mss,
            vlan,
            ipv6,
            link,
            gap_us,
            ack_every,
            close,
            no_syn,
            wrap,
            sni,
            alpn,
            hello_segments,
            http_host,
            http_method,
            out,
        } => {
            let (client, server): (SocketAddr, SocketAddr) = if ipv6 {
                ("[fd00::5]:51234".parse()?, "[2001:db8::50]:443".parse()?)
            } else {
                ("10.0.0.5:51234".parse()?, "203.0.113.50:443".parse()?)
            };
            let mut s = if let Some(sni) = &sni {
                let alpn: Vec<&[u8]> = alpn.iter().map(String::as_bytes).collect();
                let hello = HelloSpec {
                    alpn: &alpn,
                    ..tls_build::example_spec(sni.as_bytes())
                };
                gen::tls_session(client, server, &hello, hello_segments, bytes, download)
            } else if let Some(host) = &http_host {
                gen::http_upload(
                    client,
                    server,
                    &http_method,
                    host,
                    "/upload",
                    bytes,
                    download,
                )
            } else {
                TcpSession::new(client, server, bytes, download)
            };
            s.link = match link {
                LinkArg::Ethernet => Link::Ethernet { vlans: vlan },
                _ if !vlan.is_empty() => anyhow::bail!("--vlan needs --link ethernet"),
                LinkArg::Sll => Link::Sll,
                LinkArg::Sll2 => Link::Sll2,
                LinkArg::Raw => Link::RawIp,
            };
            s.mss = mss;
            s.gap_ns = gap_us * 1_000;
            s.ack_every = ack_every;
            s.close = match close {
                CloseArg::Fin => Close::Fin,
                CloseArg::Rst => Close::Rst,
                CloseArg::None => Close::None,
            };
            s.syn = !no_syn;
            let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut w = PcapWriter::new(
                BufWriter::with_capacity(4 << 20, file),
                s.link.linktype(),
                snaplen,
            )?;
            if wrap.is_some() && !matches!(s.link, Link::Ethernet { .. }) {
                anyhow::bail!("--wrap needs --link ethernet");
            }
            let mut buf = Vec::new();
            let mut packets = s.packets();
            let mut seq = 0u32;
            while let Some(ts) = packets.next_into(&mut buf) {
                match wrap {
                    Some(t) => {
                        seq = seq.wrapping_add(1);
                        w.write(ts, &gen::wrap(t, &buf, seq))?
                    }
                    None => w.write(ts, &buf)?,
                }
            }
            let (n, written) = (w.packets(), w.bytes_written());
            w.into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", out.display()))?;
            let e = s.expected();
            println!(
                "{}: {} packets, {} bytes; orig {} pkts / {} IP bytes, resp {} pkts / {} IP bytes",
                out.display(),
                n,
                written,
                e.orig_pkts,
                e.orig_ip_bytes,
                e.resp_pkts,
                e.resp_ip_bytes,
            );
        }
    }
    Ok(())
}

/// `outflow-gen wrap`: every frame of an Ethernet capture inside `tunnel`.
fn wrap_capture(tunnel: gen::Wrap, input: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let mut cap =
        pcap::Capture::from_file(input).with_context(|| format!("opening {}", input.display()))?;
    if cap.get_datalink() != pcap::Linktype::ETHERNET {
        anyhow::bail!("{}: not an Ethernet capture", input.display());
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    // The largest snaplen libpcap accepts: room for the outer headers on any input's.
    let mut w = PcapWriter::new(BufWriter::with_capacity(4 << 20, file), 1, 262_144)?;
    let mut seq = 0u32;
    loop {
        match cap.next_packet() {
            Ok(p) => {
                seq = seq.wrapping_add(1);
                let ts = u64::try_from(p.header.ts.tv_sec).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(p.header.ts.tv_usec).unwrap_or(0) * 1_000;
                // A snaplen-cut frame stays cut, with its wire length kept.
                let wire = p.header.len as usize;
                let frame = gen::wrap_cut(tunnel, p.data, wire, seq);
                let orig_len = frame.len() - p.data.len() + wire.max(p.data.len());
                w.write_raw(ts, &frame, u32::try_from(orig_len).unwrap_or(u32::MAX))?;
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e).with_context(|| format!("reading {}", input.display())),
        }
    }
    let n = w.packets();
    w.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}: {n} frames wrapped", out.display());
    Ok(())
}
