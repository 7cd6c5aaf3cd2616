//! DNS analysis: parse, score, per-domain rates, IP→name map.
//!
//! Data flow: on the worker, [`extract`] recognises DNS packets (UDP and TCP on the
//! configured ports, TCP reassembled from length-prefixed segments), parses them with the
//! zero-copy [`parser`] and condenses each message into a fixed-size, `Copy` [`DnsEvent`]
//! (no allocation on the capture path). The events travel with the flow events to the output
//! thread, where [`analyse`] — after the ordered merge, so results do not depend on the
//! number of workers — scores each query ([`score`]: Public Suffix split, entropy, length),
//! keeps per-(client, registered domain) sliding windows and per-client NXDOMAIN windows,
//! raises the tunnelling and NXDOMAIN-burst alerts, matches queries with responses into
//! transaction records, and keeps the bounded (client, IP) → name map that gives flow alerts
//! their `dst_fqdn`.

pub mod extract;
pub mod parser;
pub mod score;
pub mod text;

pub use extract::{DnsEvent, DnsExtractor};
