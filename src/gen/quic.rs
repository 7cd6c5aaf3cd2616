//! QUIC client connections as a client would send them: Initial packets sealed with the keys
//! RFC 9001 §5 derives from the client's Destination Connection ID (v1, or v2 per RFC 9369),
//! carrying a ClientHello in CRYPTO frames — whole, or spread over several datagrams — then
//! 1-RTT datagrams (opaque bytes: only the Initials are ever decrypted) for an upload or a
//! download. For the QUIC tap's tests and the cloud-upload scenarios.

use super::wire::{push_udp, Direction};
use super::{Link, Packet};
use crate::proto::quic::crypto::{InitialKeys, Opener};
use crate::proto::quic::Version;
use aes::cipher::{generic_array::GenericArray, KeyInit};
use aes_gcm::{AeadInPlace, Aes128Gcm};
use std::net::SocketAddr;

/// One client Initial packet: `frames` sealed under the keys of `key_dcid`, addressed to
/// `dcid`, packet number `pn`, padded with PADDING frames so the packet is at least `pad_to`
/// bytes. Sealing is the opener's steps the other way round (RFC 9001 §5.3–5.4).
pub fn seal_initial(
    version: Version,
    key_dcid: &[u8],
    dcid: &[u8],
    pn: u32,
    frames: &[u8],
    pad_to: usize,
) -> Vec<u8> {
    let (Some(k), Some(o)) = (
        InitialKeys::client(version, key_dcid),
        Opener::client(version, key_dcid),
    ) else {
        return Vec::new();
    };
    let ty: u8 = match version {
        Version::V1 => 0,
        Version::V2 => 1,
    };
    let mut h = vec![0xc0 | (ty << 4) | 0x03];
    h.extend(version.wire().to_be_bytes());
    h.push(dcid.len() as u8);
    h.extend(dcid);
    h.extend([0, 0]); // empty SCID, empty token
    let fixed = h.len() + 2 + 4 + 16;
    let mut plain = frames.to_vec();
    plain.resize(plain.len().max(pad_to.saturating_sub(fixed)).max(4), 0);
    let len = 4 + plain.len() + 16;
    h.extend((0x4000u16 | len as u16).to_be_bytes());
    let pn_at = h.len();
    h.extend(pn.to_be_bytes());
    let mut nonce = k.iv;
    for (n, p) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
        *n ^= p;
    }
    let aead = Aes128Gcm::new(GenericArray::from_slice(&k.key));
    let Ok(tag) = aead.encrypt_in_place_detached(GenericArray::from_slice(&nonce), &h, &mut plain)
    else {
        return Vec::new();
    };
    let mut pkt = h;
    pkt.extend(&plain);
    pkt.extend(tag);
    let mut sample = [0u8; 16];
    sample.copy_from_slice(&pkt[pn_at + 4..pn_at + 20]);
    let mask = o.header_mask(&sample);
    pkt[0] ^= mask[0] & 0x0f;
    for i in 0..4 {
        pkt[pn_at + i] ^= mask[1 + i];
    }
    pkt
}

/// A CRYPTO frame of `data` at `offset` (4-byte offset and 2-byte length varints).
pub fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    f.extend((0x8000_0000u32 | offset as u32).to_be_bytes());
    f.extend((0x4000u16 | data.len() as u16).to_be_bytes());
    f.extend(data);
    f
}

/// A QUIC connection from `client` to `server`: the ClientHello `hello` (a handshake
/// message) in `initials` client Initial datagrams of 1200 bytes (its CRYPTO data split
/// evenly between them), then `upload` bytes up and `download` bytes down in 1200-byte
/// 1-RTT datagrams, `gap_ns` apart.
#[allow(clippy::too_many_arguments)]
pub fn quic_connection(
    client: SocketAddr,
    server: SocketAddr,
    version: Version,
    hello: &[u8],
    initials: usize,
    upload: u64,
    download: u64,
    start_ns: u64,
    gap_ns: u64,
) -> Vec<Packet> {
    let link = Link::ethernet();
    let up = Direction::new(
        &link,
        (client.ip(), client.port()),
        (server.ip(), server.port()),
        true,
    );
    let down = Direction::new(
        &link,
        (server.ip(), server.port()),
        (client.ip(), client.port()),
        false,
    );
    let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
    let mut out = Vec::new();
    let mut ts = start_ns;
    let mut id = 0u16;
    let push = |out: &mut Vec<Packet>, dir: &Direction, ts: u64, payload: &[u8], id: &mut u16| {
        let mut f = Vec::new();
        push_udp(&mut f, dir, *id, payload);
        *id = id.wrapping_add(1);
        out.push(Packet {
            ts_ns: ts,
            frame: f,
        });
    };
    let n = initials.max(1);
    let chunk = hello.len().div_ceil(n).max(1);
    for (i, part) in hello.chunks(chunk).enumerate() {
        let d = seal_initial(
            version,
            &dcid,
            &dcid,
            i as u32,
            &crypto_frame(i * chunk, part),
            1200,
        );
        push(&mut out, &up, ts, &d, &mut id);
        ts += gap_ns;
    }
    // The server's Initial/Handshake flight, opaque here.
    push(&mut out, &down, ts, &[0xc0; 1200], &mut id);
    ts += gap_ns;
    let (mut sent, mut got) = (0u64, 0u64);
    while sent < upload || got < download {
        if sent < upload {
            let n = (upload - sent).min(1200) as usize;
            let mut d = vec![0x5a; n.max(24)];
            d[0] = 0x41;
            push(&mut out, &up, ts, &d, &mut id);
            sent += n as u64;
            ts += gap_ns;
        }
        if got < download || sent % (12 * 1200) == 0 {
            let n = if got < download {
                (download - got).min(1200) as usize
            } else {
                40
            };
            let mut d = vec![0xa5; n.max(24)];
            d[0] = 0x41;
            push(&mut out, &down, ts, &d, &mut id);
            got += n as u64;
            ts += gap_ns;
        }
    }
    out
}
