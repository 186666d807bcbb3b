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
    /// Print the SQL the writer runs for the configured mappings: the
    /// schema it creates at start, the positions query and the query of
    /// every mapped value and interval (for clickhouse-client, Grafana, or
    /// checking a server version).
    Sql {
        /// The server's version as `SELECT version()` reports it; decides
        /// whether the raw table gets a TTL (19.6 and later).
        #[arg(long, default_value = "26.9")]
        server_version: String,
        /// One JSON object (schema, positions, queries) instead of SQL text.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = cli.common.start(writer::SERVICE)? else {
        return Ok(());
    };
    if let Some(Command::Sql {
        server_version,
        json,
    }) = &cli.command
    {
        print_sql(&config, server_version, *json)?;
        return Ok(());
    }
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

/// The writer's SQL for `config`, as text or as one JSON object.
fn print_sql(
    config: &trident_service::config::Config,
    server_version: &str,
    json: bool,
) -> anyhow::Result<()> {
    let db = &config.clickhouse.database;
    let w = &config.writer;
    let ttl = writer::schema::ttl_supported(server_version).then_some(w.raw_ttl_days);
    let schema = writer::schema::setup(db, &w.mappings, &w.intervals, ttl);
    let positions = writer::schema::stored_offsets(db);
    let mut queries = Vec::new();
    for mapping in &w.mappings {
        for value in &mapping.values {
            for interval in &w.intervals {
                let sql = writer::schema::query(db, mapping, *interval, value, 0);
                queries.push(serde_json::json!({
                    "measurement": mapping.measurement,
                    "table": writer::schema::table(mapping),
                    "dimensions": mapping.dimensions,
                    "value": value,
                    "interval": writer::schema::label(*interval),
                    "sql": sql,
                }));
            }
        }
    }
    if json {
        let all = serde_json::json!({"schema": schema, "positions": positions, "queries": queries});
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("-- The schema, created at start (ClickHouse {server_version}).");
    for sql in &schema {
        println!("{sql};\n");
    }
    println!("-- Stored positions of a group and topic.\n{positions};\n");
    for q in &queries {
        println!(
            "-- {} {} every {}.\n{};\n",
            q["measurement"].as_str().unwrap_or_default(),
            q["value"].as_str().unwrap_or_default(),
            q["interval"].as_str().unwrap_or_default(),
            q["sql"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
