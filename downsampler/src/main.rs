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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = cli.common.start(downsampler::SERVICE)? else {
        return Ok(());
    };
    let admin =
        trident_service::admin::bind(config.downsampler.admin_listen, "downsampler.admin_listen")
            .await?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    downsampler::run(config, admin, shutdown).await?;
    Ok(())
}
