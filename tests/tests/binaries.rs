//! The four service binaries share one command line and one configuration
//! vocabulary: `--version`, `--check-config` against the local stack's
//! environment, a clear error for a misspelt key.

use std::path::PathBuf;
use std::process::{Command, Output};

const BINARIES: [&str; 4] = [
    "trident-gateway",
    "trident-downsampler",
    "trident-alerter",
    "trident-writer",
];

fn binary(name: &str) -> PathBuf {
    let path = trident_e2e::binary(name);
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

/// The stack's environment, plus the example rules file the alerter needs.
fn stack_vars() -> Vec<(String, String)> {
    let env = trident_e2e::StackEnv::load().expect("stack env (scripts/stack up)");
    let mut vars: Vec<(String, String)> = env.vars.into_iter().collect();
    vars.push((
        "TRIDENT_ALERTER_RULES".into(),
        trident_e2e::repo_root()
            .join("config/rules.toml")
            .to_string_lossy()
            .into_owned(),
    ));
    vars
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

/// The gateway binary serves, and stops cleanly on SIGTERM.
#[test]
fn the_gateway_serves_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut vars = stack_vars();
    vars.push(("TRIDENT_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")));
    // Not the default `trident-spool` under the working directory: that
    // is the source tree here.
    let spool = std::env::temp_dir().join(format!("trident-sigterm-spool-{}", std::process::id()));
    vars.push((
        "TRIDENT_GATEWAY_SPOOL_DIR".into(),
        spool.to_string_lossy().into_owned(),
    ));
    let mut child = Command::new(binary("trident-gateway"))
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pinged = loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.0 204") || answer.starts_with("HTTP/1.1 204")
        });
        if ok || std::time::Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(&spool);
    assert!(pinged, "the gateway answered /ping");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn check_rules_names_the_count_or_the_line_and_column() {
    let good = trident_e2e::repo_root().join("config/rules.toml");
    let out = run(
        "trident-alerter",
        &["check-rules", &good.to_string_lossy()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": 3 rules\n"));
    let bad = std::env::temp_dir().join(trident_e2e::unique_name("rules"));
    std::fs::write(
        &bad,
        "[[rules]]\nname = \"x\"\nmeasurement = \"m\"\nfield = \"f\"\nop = \"=>\"\nthreshold = 1\n",
    )
    .expect("write");
    let out = run(
        "trident-alerter",
        &["check-rules", &bad.to_string_lossy()],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":5:6: rule \"x\": unknown op"), "{stderr}");
    let _ = std::fs::remove_file(&bad);
}
