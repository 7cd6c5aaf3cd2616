//! Alerts and flow records leave the sensor here: JSON rendering with stable field names, and
//! the output thread that merges the workers' event streams into one deterministic order.
//!
//! This stage runs on its own thread, off the per-packet path: it may allocate and block on
//! I/O, but never slows a worker (workers only hand it events over a channel).

pub mod deliver;
pub mod ipfix;
pub mod json;
pub mod sink;
pub mod syslog;

pub use sink::{Output, OutputThread, Sinks};
