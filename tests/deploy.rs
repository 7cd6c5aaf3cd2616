//! The deployment files in systemd/: the example config is complete and valid, and the unit
//! passes `systemd-analyze verify` (skipped where systemd-analyze is not installed).

use outflow::config::Config;
use std::collections::BTreeSet;
use std::path::Path;

fn keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_table() {
                keys(&path, v, out);
            } else {
                out.insert(path);
            }
        }
    }
}

#[test]
fn example_config_is_valid_and_shows_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/outflow.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.capture.interface, "eth1");

    let mut documented = BTreeSet::new();
    keys(
        "",
        &toml::from_str::<toml::Value>(&text).unwrap(),
        &mut documented,
    );
    let mut all = BTreeSet::new();
    keys(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut all,
    );
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from systemd/outflow.toml: {missing:?}"
    );

    // Apart from what a deployment must choose, the example shows the defaults.
    let mut expected = Config::default();
    expected.capture.interface = "eth1".into();
    expected.output.alerts = "/var/log/outflow/alerts.json".into();
    expected.state.dir = "/var/lib/outflow".into();
    expected.slice.dir = "/var/lib/outflow/slices".into();
    assert_eq!(cfg, expected);
}

/// `systemd-analyze verify` of `unit` with its binary pointed at the one under test.
fn verify(unit: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("unit.service");
    std::fs::write(
        &p,
        unit.replace("/usr/local/bin/outflow", env!("CARGO_BIN_EXE_outflow")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The unit `systemd/<name>`, checked to hold every line of `needed`; `None` (after a
/// message) where systemd-analyze is not installed.
fn unit_with(name: &str, needed: &[&str]) -> Option<String> {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: systemd-analyze not installed");
        return None;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name),
    )
    .unwrap();
    for line in needed {
        assert!(unit.lines().any(|l| l == *line), "{name} lacks {line}");
    }
    Some(unit)
}

#[test]
fn correlator_unit_passes_systemd_analyze_verify() {
    let Some(unit) = unit_with(
        "outflow-correlate.service",
        &[
            "User=outflow",
            "CapabilityBoundingSet=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "Restart=on-failure",
        ],
    ) else {
        return;
    };
    // Its command line parses: the same arguments, asked for help after them.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/outflow "))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"correlate"));
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    verify(&unit);
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(unit) = unit_with(
        "outflow.service",
        &[
            "ExecStart=/usr/local/bin/outflow run --config /etc/outflow/outflow.toml",
            "User=outflow",
            "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN",
            "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "StateDirectory=outflow",
            "Restart=on-failure",
        ],
    ) else {
        return;
    };
    // verify checks that ExecStart exists: point it at the binary under test.
    verify(&unit);
}
