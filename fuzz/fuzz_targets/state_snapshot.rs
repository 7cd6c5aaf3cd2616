//! Any bytes as a state snapshot (`state.dir/outflow-state.json`, which a restart trusts):
//! `LeakAnalyser::restore` must return, and an analyser restored from whatever it accepts
//! must take volume reports, cross day boundaries, close its windows and finish without
//! panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::config::Config;
use outflow::decode::Addr;
use outflow::correlate::leak::LeakAnalyser;
use outflow::event::Volume;

const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// The default config with the cross-flow tables shrunk: the defaults allocate tens of MB
/// per analyser, which would cap the fuzzer at a few dozen runs a second. A snapshot with
/// more entries than a table holds exercises the eviction paths instead.
fn config() -> Config {
    let mut c = Config::default();
    c.detect.host_window.capacity = 256;
    c.detect.data_leak.capacity = 256;
    c.detect.baseline.capacity = 256;
    c
}

fuzz_target!(|data: &[u8]| {
    let mut l = LeakAnalyser::new(&config());
    if l.restore(data).is_err() {
        return;
    }
    let names = |_: Addr, _: Addr, _: bool| Some("upload.example".to_string());
    let mut alerts = 0u64;
    let mut out = |_| alerts += 1;
    let _ = l.tables();
    // From where the snapshot says time is: whatever it says, since it came from a file.
    let t0 = 1_700_000_000u64 * 1_000_000_000;
    for (i, ts) in [t0, t0 + 1, t0 + DAY_NS, t0 + 40 * DAY_NS, u64::MAX / 2]
        .into_iter()
        .enumerate()
    {
        let v = Volume {
            ts_ns: ts,
            flow_id: i as u64,
            ipv6: i % 2 == 1,
            src: Addr::v4([10, 0, 0, 5]),
            dst: Addr::v4([203, 0, 113, 50]),
            dport: 443,
            sport: 50_000,
            proto: 6,
            home_is_orig: true,
            out_total: 200_000_000,
            in_total: 1_000,
            out_bytes: 200_000_000,
            in_bytes: 1_000,
            end: i % 2 == 0,
        };
        l.on_volume(&v, Some("upload.example"), &names, &mut out);
        l.advance(ts.saturating_add(DAY_NS), &names, &mut out);
    }
    l.finish(&names, &mut out);
    let _ = l.tables();
});
