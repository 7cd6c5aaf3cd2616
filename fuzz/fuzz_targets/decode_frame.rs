//! Any byte string as a captured frame, read as Ethernet and as raw IP: `decode` must return
//! a `PacketMeta` or a reason, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::decode::{decode, LinkType};

fuzz_target!(|data: &[u8]| {
    let wire_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let _ = decode(LinkType::Ethernet, data, wire_len);
    let _ = decode(LinkType::RawIp, data, wire_len);
});
