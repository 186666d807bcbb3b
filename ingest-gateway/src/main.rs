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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
