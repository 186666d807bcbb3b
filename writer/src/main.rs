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
    cli.common
        .check_config_only(writer::SERVICE, writer::NOT_BUILT)?;
    Ok(())
}
