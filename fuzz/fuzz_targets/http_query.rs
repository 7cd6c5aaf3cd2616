//! Any text as what a client sends the API: the query strings of `/api/alerts`,
//! `/api/flows/top` and `/api/pcap`, and the `{name}` of `/api/slices/{name}`. Each parser
//! must return, and what it accepts must keep its promises: limits in range, a slice id
//! that cannot leave `slice.dir`, a time range in order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::http::api::{alerts_query, pcap_query, slice_name, top_query, MAX_ALERTS};
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    // The raw query is whatever follows `?`: any bytes, percent-decoded by the parser.
    let text = String::from_utf8_lossy(data);
    let raw = Some(text.as_ref());
    if let Ok(q) = alerts_query(raw) {
        assert!((1..=MAX_ALERTS).contains(&q.limit));
    }
    if let Ok((_, n)) = top_query(raw) {
        assert!((1..=outflow::telemetry::TOP_MAX).contains(&n));
    }
    if let Ok(f) = pcap_query(raw) {
        assert!(f.flow.is_some() || f.src.is_some() || f.dst.is_some());
        if let (Some(a), Some(b)) = (f.since_ns, f.until_ns) {
            assert!(a <= b);
        }
    }
    if let Ok((id, ext, _)) = slice_name(&text) {
        assert!(outflow::slice::valid_id(id));
        assert!(ext == "pcap" || ext == "json");
        // The file it names is a plain name inside the directory.
        let file = format!("{id}.{ext}");
        let mut parts = Path::new(&file).components();
        assert!(matches!(parts.next(), Some(Component::Normal(_))));
        assert!(parts.next().is_none());
    }
});
