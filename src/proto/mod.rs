//! Application protocols the worker taps for names (issue 15): one folder per protocol, each
//! a bounded zero-copy parser plus the extraction of the few fields we keep. Nothing here
//! allocates per packet, locks, blocks or reads the clock.

pub mod quic;
