//! `trident-loadgen`: see the crate documentation of `trident-loadgen`.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "trident-loadgen",
    version,
    about = "Send a Telegraf-like corpus to an InfluxDB-compatible /write URL and report lines/s, latency and the target's CPU per line."
)]
struct Cli {
    /// Write URL with its query, e.g. http://127.0.0.1:8086/write?db=bench
    #[arg(long)]
    url: String,
    /// Lines to send in all.
    #[arg(long, default_value_t = 200_000)]
    lines: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Corpus seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stamp the corpus so that its last line is now (its lines are 10 ms
    /// apart), instead of its fixed start (2023-11-14), for services that
    /// work on recent data (rollups, alerts).
    #[arg(long)]
    recent: bool,
    /// Pid(s) of the target whose CPU time is measured (repeat for several).
    #[arg(long = "pid")]
    pids: Vec<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = trident_loadgen::Plan {
        url: cli.url,
        lines: cli.lines,
        batch: cli.batch,
        connections: cli.connections,
        seed: cli.seed,
        start_ns: cli.recent.then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            let span = i64::try_from(cli.lines)
                .unwrap_or(i64::MAX)
                .saturating_mul(trident_line_protocol::test_helpers::CORPUS_STEP_NS);
            now.saturating_sub(span)
        }),
        target_pids: cli.pids,
    };
    let report = trident_loadgen::run(&plan).await?;
    println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    Ok(())
}
