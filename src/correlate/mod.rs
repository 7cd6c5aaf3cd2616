//! The cross-flow stage: what can only be seen across flows, after the workers' streams are
//! merged into one order.
//!
//! Input is the ordered stream of [`crate::event::Event`]s the workers produce (flow ends,
//! volume reports, DNS messages, per-flow findings); output is findings and incidents for
//! the sinks in [`crate::output`], which only format and deliver. Nothing here reads a
//! socket or a file other than the state snapshot, so the stage can be tested by feeding it
//! events, and fed from elsewhere than the in-process merge.
//!
//! - [`leak`]: per-host and per-group windows (data-leak totals), asymmetry, upload
//!   baselines, service outliers;
//! - [`dns`]: DNS transactions, per-(client, registered domain) tunnel windows, NXDOMAIN
//!   bursts, and the (client, IP) → name map;
//! - [`dns_pairs`]: the bounded table of (client, domain) windows.

pub mod dns;
pub mod dns_pairs;
pub mod leak;
