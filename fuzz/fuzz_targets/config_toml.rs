//! Any text as a configuration file: `Config::parse` (TOML, serde with
//! deny_unknown_fields, then `validate`) must return. What it accepts must validate again,
//! render with `to_toml` (what `check-config` prints) and parse back to the same config.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text) else {
        return;
    };
    assert!(cfg.validate().is_ok());
    let _ = cfg.effective_workers();
    let shown = cfg.to_toml();
    match Config::parse(&shown) {
        Ok(again) => assert!(again == cfg, "round trip changed the config:\n{shown}"),
        Err(e) => panic!("check-config output does not parse: {e}\n{shown}"),
    }
});
