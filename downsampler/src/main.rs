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
    cli.common
        .check_config_only(downsampler::SERVICE, downsampler::NOT_BUILT)?;
    Ok(())
}
