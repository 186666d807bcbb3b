//! `trident-downsampler`: see the crate documentation of `downsampler`.

use clap::Parser;
use trident_service::cli::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trident-downsampler",
    version,
    about = "Partition-pinned windowed rollups of the raw topic, written back into the InfluxDB cluster."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.common.load_config(downsampler::SERVICE)?;
    trident_service::telemetry::init_logs(&config.telemetry)?;
    if cli.common.check_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    anyhow::bail!(downsampler::NOT_BUILT)
}
