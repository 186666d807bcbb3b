//! `trident-gateway`: see the crate documentation of `ingest-gateway`.

use clap::Parser;
use trident_service::cli::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trident-gateway",
    version,
    about = "The InfluxDB-compatible write endpoint that fans every point out to the InfluxDB cluster, the raw Kafka topic and the alert topic."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Read a password from stdin, print its argon2id hash for
    /// `gateway.auth.users[].password_hash`, and exit.
    #[arg(long)]
    hash_password: bool,
}

/// Keeps freed write buffers in the heap instead of handing them back to
/// the kernel. Every write allocates a few buffers of its body's size (the
/// body, each node's part, the topic records); with glibc's defaults, once
/// they are freed the top of the heap is trimmed and the next write faults
/// the same pages in again, and the kernel zeroes each one: 11–13 % of the
/// gateway's CPU in profiles of 5 000-line writes. Measured in interleaved
/// runs: 2.60 / 2.60 / 2.57 µs a line before, 2.37 / 2.43 / 2.40 µs after,
/// peak RSS 57 → 67 MB (docs/benchmarks.md). The cost is resident memory
/// after a burst: up to the trim threshold per malloc arena, bounded in use
/// by `gateway.max_inflight_bytes`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_heap_warm() {
    // Allocations up to 32 MiB (glibc's maximum for this setting, above
    // the default body limit of 25 MB) come from the heap, not mmap, and
    // up to 64 MiB of free space at its top stays mapped.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;
    // SAFETY: mallopt only sets allocator parameters; it takes plain
    // integers and has no memory-safety preconditions. It returns 0 when
    // glibc refuses a value, which leaves its default: slower, not wrong.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_heap_warm() {}

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start allocating.
    keep_heap_warm();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.hash_password {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .map_err(|e| anyhow::anyhow!("cannot read the password from stdin: {e}"))?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!(
                "no password on stdin: echo 'the password' | trident-gateway --hash-password"
            );
        }
        println!(
            "{}",
            ingest_gateway::http::auth::hash_password(password).map_err(anyhow::Error::msg)?
        );
        return Ok(());
    }
    let Some(config) = cli.common.start(ingest_gateway::SERVICE)? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(config.gateway.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.gateway.listen))?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    ingest_gateway::run(config, listener, shutdown).await?;
    Ok(())
}
