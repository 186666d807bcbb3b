//! `trident-alerter`: see the crate documentation of `alerter`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a rules file and exit: "FILE: N rules" or FILE:LINE:COLUMN and what to fix.
    CheckRules {
        /// The rules file.
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::CheckRules { file }) = &cli.command {
        let rules = trident_alert_rules::RuleSet::load(file)?;
        println!("{}: {} rules", file.display(), rules.rules().len());
        return Ok(());
    }
    let Some(config) = cli.common.start(alerter::SERVICE)? else {
        return Ok(());
    };
    let admin =
        trident_service::admin::bind(config.alerter.admin_listen, "alerter.admin_listen").await?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    alerter::run(config, admin, shutdown).await?;
    Ok(())
}
