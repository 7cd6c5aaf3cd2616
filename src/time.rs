//! Packet time as text. Every output that shows a timestamp (JSON lines, syslog, slice
//! metadata, the HTTP API) uses this one form, so an analyst can join them by string.

use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 UTC timestamp with microseconds, e.g. `2026-11-23T14:20:37.123456Z`.
pub fn rfc3339(ts_ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ts_ns)).to_string()
}
