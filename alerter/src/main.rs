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
    let config = cli.common.load_config(alerter::SERVICE)?;
    trident_service::telemetry::init_logs(&config.telemetry)?;
    if cli.common.check_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    anyhow::bail!(alerter::NOT_BUILT)
}
