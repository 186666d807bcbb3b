//! `scripts/stack` itself: idempotent `up`, a clear error for a taken port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    trident_e2e::repo_root().join("scripts/stack")
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(script())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run scripts/stack")
}

fn pids(state_dir: &Path) -> Vec<(String, String)> {
    let mut pids: Vec<(String, String)> = std::fs::read_dir(state_dir)
        .expect("state dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = std::fs::read_to_string(e.path().join("pid")).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                pid.trim().to_owned(),
            ))
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn up_again_is_harmless_and_keeps_every_server() {
    let env = trident_e2e::StackEnv::load().expect("stack env (scripts/stack up)");
    let state_dir = PathBuf::from(&env.vars["TRIDENT_STACK_DIR"]);
    let before = pids(&state_dir);
    for server in ["influx1", "influx2", "influx3", "clickhouse", "kafka"] {
        assert!(
            before.iter().any(|(name, _)| name == server),
            "{server} in {before:?}"
        );
    }

    let dir = state_dir.to_string_lossy().into_owned();
    let out = run(&["up"], &[("TRIDENT_STACK_DIR", &dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert_eq!(pids(&state_dir), before, "no server was restarted");

    // Each probe has 2 s; on a busy machine one may miss, so ask again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = run(&["status"], &[("TRIDENT_STACK_DIR", &dir)]);
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        let healthy = text.matches(" healthy").count();
        if healthy == before.len() || std::time::Instant::now() >= deadline {
            assert_eq!(healthy, before.len(), "{text}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_taken_port_is_named_and_nothing_is_started() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // The first InfluxDB node listens on base + 1.
    let base = (port - 1).to_string();
    let dir = std::env::temp_dir().join(trident_e2e::unique_name("stack"));
    let dir_s = dir.to_string_lossy().into_owned();

    let out = run(
        &["up"],
        &[
            ("TRIDENT_STACK_DIR", &dir_s),
            ("TRIDENT_STACK_PORT_BASE", &base),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(pids(&dir).is_empty(), "nothing was started");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn down_stops_every_process_up_started_and_frees_every_port() {
    let base = trident_e2e::free_port_block().expect("a free block of ports");
    let dir = std::env::temp_dir().join(trident_e2e::unique_name("stack"));
    let (dir_s, base_s) = (dir.to_string_lossy().into_owned(), base.to_string());
    let envs = [
        ("TRIDENT_STACK_DIR", dir_s.as_str()),
        ("TRIDENT_STACK_PORT_BASE", base_s.as_str()),
    ];

    let up = run(&["up", "--with", "etcd,alertmanager"], &envs);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let started = pids(&dir);
    assert_eq!(started.len(), 7, "{started:?}");
    // Running, not merely an unreaped zombie.
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    assert!(started.iter().all(|(_, pid)| alive(pid)), "{started:?}");

    let down = run(&["down"], &envs);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for (name, pid) in &started {
        assert!(!alive(pid), "{name} (pid {pid}) still runs after down");
    }
    for off in trident_e2e::STACK_PORTS {
        let port = base + off;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after down"
        );
    }
    assert!(pids(&dir).is_empty(), "pid files removed");
    let _ = std::fs::remove_dir_all(&dir);
}
