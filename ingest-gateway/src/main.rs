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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.common
        .check_config_only(ingest_gateway::SERVICE, ingest_gateway::NOT_BUILT)?;
    Ok(())
}
