//! `trident-alerter`: see the crate documentation of `alerter`.

use clap::Parser;
use trident_service::cli::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trident-alerter",
    version,
    about = "Streaming alert rules evaluated on the alert topic, notifying webhooks and Alertmanager."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.common
        .check_config_only(alerter::SERVICE, alerter::NOT_BUILT)?;
    Ok(())
}
