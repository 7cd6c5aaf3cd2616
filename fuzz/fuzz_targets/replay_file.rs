//! Any bytes as a capture file, through the whole replay pipeline: libpcap's reader, decode,
//! dispatch to two workers, flow tables, detectors, DNS, the output merge and the JSON
//! writers (into /dev/null). `replay::run` must return, `Ok` or an error, never panic.
//!
//! The configuration is the default with its tables shrunk (flows, DNS, cross-flow, slice
//! ring): the defaults allocate hundreds of MB up front, which would make every execution
//! cost a page-fault storm; thresholds and logic are the defaults'.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::output::{Output, Sinks};
use outflow::config::Config;
use outflow::replay::{run, ReplayOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch file per fuzzing process (jobs run side by side).
fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("outflow-fuzz-replay-{}.pcap", std::process::id()))
    })
}

fn config() -> Config {
    let mut c = Config::default();
    c.capture.batch_packets = 64;
    c.capture.batches_per_worker = 2;
    c.flow.capacity_per_worker = 1024;
    c.flow.fragment_capacity = 64;
    c.dns.pair_capacity = 256;
    c.dns.name_map_capacity = 256;
    c.dns.transaction_capacity = 256;
    c.detect.host_window.capacity = 256;
    c.detect.data_leak.capacity = 256;
    c.detect.baseline.capacity = 256;
    c.slice.ring_bytes = 1 << 16;
    c
}

fuzz_target!(|data: &[u8]| {
    let path = input_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let null = Output::File(PathBuf::from("/dev/null"));
    let opts = ReplayOptions {
        config: config(),
        workers: Some(2),
        inputs: vec![path.clone()],
        sinks: Sinks {
            alerts: Some(null.clone()),
            flows: Some(null.clone()),
            dns: Some(null),
            ordered: true,
            sink_queue: 64,
            ..Sinks::default()
        },
        progress: false,
    };
    match run(&opts) {
        Ok(report) => drop(report.summary.to_string()),
        Err(e) => drop(e.to_string()),
    }
});
