//! outflow: a packet-capture sensor that detects data exfiltration while it happens.
//!
//! ```text
//!  capture ─> decode ─> worker: flow table, dns tap, detect ─> event ─> merge ─> correlate ─> output
//!  pcap/live  PacketMeta  live counters, inline large-    (ordered    windows,    JSON lines,
//!  + dispatch (Copy)      transfer alert, DNS events      stream)     DNS rates,  syslog, API
//!                                                                     incidents
//! ```
//!
//! Data moves one way. [`capture`] reads frames into reusable batches and spreads them over
//! workers by a symmetric flow hash, so both directions of a connection reach one worker;
//! [`decode`] turns a frame into a small `Copy` [`decode::PacketMeta`]; each [`worker`] owns a
//! fixed-capacity [`flow::FlowTable`] whose per-direction counters are updated on every
//! packet, and runs the per-flow [`detect`]ors inline, so a large upload alerts on the packet
//! that crosses the threshold, not when the connection ends. A DNS message that arrived in IP
//! fragments is put back together on the worker ([`defrag`]) before it is parsed. What a
//! worker produces — flow ends, volume reports, DNS messages, findings — is an [`event`]
//! stream; the output thread merges the workers' streams into one deterministic order and
//! feeds it to the cross-flow stage, [`correlate`] (host windows, data-leak totals, DNS
//! rates, incidents), whose findings and incidents [`output`] renders and delivers.
//! [`pipeline`] and [`telemetry`] publish counters for `/metrics` and the API ([`http`]).
//!
//! Imports point upstream only: no module imports one that imports it back
//! (`tests/layout.rs` checks it).
//!
//! Invariants: packet time is the only clock in decode/flow/detect/correlate (a replay gives
//! the same output whatever the number of workers); nothing on the per-packet path
//! allocates, locks or panics; every table is bounded and every drop or eviction is counted.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bus;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod defrag;
pub mod detect;
pub mod dns;
pub mod event;
pub mod flow;
pub mod gen;
pub mod http;
pub mod output;
pub mod pipeline;
pub mod proto;
pub mod replay;
pub mod run;
pub mod slice;
pub mod stats;
pub mod telemetry;
pub mod time;
pub mod worker;
