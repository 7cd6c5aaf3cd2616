//! Any byte string as a captured frame, read as Ethernet and as raw IP, with every
//! encapsulation on: `decode_frame` must return a packet or a reason, never panic, and what
//! it says must hold together (the tunnel list has one hop per tunnel unwrapped, up to
//! the list's size; a tunnel's outer packet is marked as such).

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::decode::{decode, decode_frame, tunnel_chain, Decap, LinkType, MAX_CHAIN};

fuzz_target!(|data: &[u8]| {
    let wire_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    for link in [LinkType::Ethernet, LinkType::RawIp] {
        let _ = decode(link, data, wire_len);
        let Ok(d) = decode_frame(link, data, wire_len, &Decap::DEFAULT) else {
            continue;
        };
        let chain = tunnel_chain(link, data, wire_len, &Decap::DEFAULT);
        if d.inner_error.is_none() {
            assert_eq!(
                usize::from(chain.len),
                usize::from(d.meta.encap.depth).min(MAX_CHAIN)
            );
            assert!(!d.meta.tunnel.is_outer());
        } else {
            assert!(d.meta.tunnel.is_outer());
        }
        if let Some(o) = d.outer {
            assert!(o.tunnel.is_outer());
        }
        // A snaplen-cut view of the same frame must not panic either.
        let _ = decode_frame(link, data.get(..data.len() / 2).unwrap_or(&[]), wire_len, &Decap::DEFAULT);
    }
});
