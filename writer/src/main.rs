//! `trident-writer`: see the crate documentation of `writer`.

use clap::Parser;
use trident_service::cli::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trident-writer",
    version,
    about = "ClickHouse pre-aggregation of business metrics consumed from the raw topic."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.common.load_config(writer::SERVICE)?;
    trident_service::telemetry::init_logs(&config.telemetry)?;
    if cli.common.check_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    anyhow::bail!(writer::NOT_BUILT)
}
