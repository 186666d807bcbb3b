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
    let admin = tokio::net::TcpListener::bind(config.downsampler.admin_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (downsampler.admin_listen): {e}",
                config.downsampler.admin_listen
            )
        })?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    downsampler::run(config, admin, shutdown).await?;
    Ok(())
}
