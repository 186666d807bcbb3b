//! The four service binaries share one command line and one configuration
//! vocabulary: `--version`, `--check-config` against the local stack's
//! environment, a clear error for a misspelt key, and an honest refusal to
//! run while their data paths are not built.

use std::path::PathBuf;
use std::process::{Command, Output};

const BINARIES: [&str; 4] = [
    "trident-gateway",
    "trident-downsampler",
    "trident-alerter",
    "trident-writer",
];

/// `cargo test --workspace` builds every binary next to the test
/// executables' `deps/` directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build`) so the binaries are built",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run binary")
}

fn stack_vars() -> Vec<(String, String)> {
    let env = trident_e2e::StackEnv::load().expect("stack env (scripts/stack up)");
    env.vars.into_iter().collect()
}

#[test]
fn every_binary_prints_its_version_and_help() {
    for name in BINARIES {
        let out = run(name, &["--version"], &[]);
        assert!(out.status.success(), "{name}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(name) && text.contains(env!("CARGO_PKG_VERSION")),
            "{text}"
        );
        let help = String::from_utf8_lossy(&run(name, &["--help"], &[]).stdout).into_owned();
        assert!(
            help.contains("--config") && help.contains("--check-config"),
            "{help}"
        );
    }
}

#[test]
fn check_config_accepts_the_stack_environment_and_prints_it() {
    let vars = stack_vars();
    for name in BINARIES {
        let out = run(name, &["--check-config"], &vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let config: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("--check-config prints JSON");
        let brokers = vars
            .iter()
            .find(|(k, _)| k == "TRIDENT_KAFKA_BROKERS")
            .map(|(_, v)| v.clone());
        assert_eq!(
            config["kafka"]["brokers"][0].as_str(),
            brokers.as_deref(),
            "{name}"
        );
        assert_eq!(
            config["influx"]["urls"].as_array().map(Vec::len),
            Some(3),
            "{name}"
        );
    }
}

#[test]
fn a_misspelt_key_is_named() {
    let mut vars = stack_vars();
    vars.push(("TRIDENT_KAFKA_BROKRES".into(), "x:1".into()));
    for name in BINARIES {
        let out = run(name, &["--check-config"], &vars);
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("brokres"), "{name}: {stderr}");
    }
}

#[test]
fn a_missing_setting_says_what_to_set() {
    for name in ["trident-gateway", "trident-downsampler", "trident-writer"] {
        let out = run(name, &["--check-config"], &[]);
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is empty"), "{name}: {stderr}");
    }
}

#[test]
fn services_without_a_data_path_refuse_to_start() {
    let vars = stack_vars();
    for name in BINARIES {
        let out = run(name, &[], &vars);
        assert!(!out.status.success(), "{name} must not pretend to run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not built yet"), "{name}: {stderr}");
    }
}
