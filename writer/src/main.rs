//! `trident-writer`: see the crate documentation of `writer`.

use clap::{Parser, Subcommand};
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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print count, success rate and P50/P90/P95/P99 per dimension and bucket.
    Query {
        /// A mapped measurement.
        measurement: String,
        /// One of its values.
        value: String,
        /// A configured interval, e.g. 1m.
        #[arg(long, default_value = "1m")]
        interval: String,
        /// Only buckets from this many seconds ago.
        #[arg(long, default_value_t = 3600)]
        last: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = cli.common.start(writer::SERVICE)? else {
        return Ok(());
    };
    if let Some(Command::Query {
        measurement,
        value,
        interval,
        last,
    }) = cli.command
    {
        let interval = writer::parse_interval(&interval)
            .ok_or_else(|| anyhow::anyhow!("interval \"{interval}\": use e.g. 1m or 1h"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let stats = writer::query(
            &config,
            &measurement,
            interval,
            &value,
            now.saturating_sub(last),
        )
        .await?;
        println!("bucket\tdimensions\tcount\tsuccess_rate\tp50\tp90\tp95\tp99");
        for s in stats {
            let q: Vec<String> = s.quantiles.iter().map(|v| format!("{v:.3}")).collect();
            println!(
                "{}\t{}\t{}\t{:.4}\t{}",
                s.bucket,
                s.dimensions.join(","),
                s.count,
                s.success_rate,
                q.join("\t")
            );
        }
        return Ok(());
    }
    let admin =
        trident_service::admin::bind(config.writer.admin_listen, "writer.admin_listen").await?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    writer::run(config, admin, shutdown).await?;
    Ok(())
}
