//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use outflow::alert::Sinks;
use outflow::config::Config;
use outflow::replay::{run, ReplayOptions, ReplayReport};
use std::path::{Path, PathBuf};

/// `../shared/pcaps` relative to the crate, if present.
pub fn shared_pcaps() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// Replays files and collects every alert and flow record.
pub fn replay(cfg: &Config, workers: usize, inputs: &[PathBuf]) -> ReplayReport {
    run(&ReplayOptions {
        config: cfg.clone(),
        workers: Some(workers),
        inputs: inputs.to_vec(),
        sinks: Sinks {
            alerts: None,
            flows: None,
            dns: None,
            collect: true,
            append: false,
            ordered: true,
            published: None,
        },
    })
    .expect("replay")
}
