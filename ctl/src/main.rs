//! `trident-ctl`: see the crate documentation of `trident-ctl`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use trident_cluster::{Node, Topology};
use trident_ctl::{Ctl, Progress, Report, load_topology};

#[derive(Debug, Parser)]
#[command(
    name = "trident-ctl",
    version,
    about = "Operate Trident's InfluxDB cluster: show the topology, add or remove a node (moving its data), recover a wiped node, compare replicas."
)]
struct Cli {
    /// Topology file (JSON or TOML). Without it, the topology of the
    /// Trident configuration (`-c`, TRIDENT_INFLUX_* variables).
    #[arg(long, short = 't', global = true, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Trident configuration file, for its `[influx]` section.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "TRIDENT_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// Timeout of one request to a node.
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// No progress lines on stderr.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the topology and whether each node answers.
    Show,
    /// Move data from the placement of one topology to another's.
    Rebalance {
        /// The topology the data is placed by now.
        #[arg(long)]
        from: PathBuf,
        /// The topology to place it by.
        #[arg(long)]
        to: PathBuf,
        /// Keep the copies on nodes that no longer own them.
        #[arg(long)]
        keep: bool,
    },
    /// Add a node: copy what it will own, write the new topology (version
    /// + 1) to the topology file, then drop what moved from the old owners.
    AddNode {
        /// The new node's id (placement is computed from it).
        #[arg(long)]
        id: String,
        /// Its URL.
        #[arg(long)]
        url: String,
    },
    /// Remove a node: copy what it owns to the new owners, write the new
    /// topology, then drop its data.
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: String,
    },
    /// Refill a wiped or replaced node from the replicas of its series, or
    /// from the raw topic (brokers and topic from the Trident configuration).
    Recover {
        /// The node's id.
        #[arg(long)]
        node: String,
        /// Replay the raw Kafka topic instead of copying from replicas.
        #[arg(long)]
        from_kafka: bool,
        /// With --from-kafka: how far back (e.g. 7d); default: all of the
        /// topic's retention.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
    },
    /// Compare every series on its owners; report (and with --repair, fix)
    /// differences and series on nodes that do not own them.
    Check {
        /// Copy each owner's points to the owners that differ.
        #[arg(long)]
        repair: bool,
    },
}

fn current(cli: &Cli) -> anyhow::Result<Topology> {
    if let Some(path) = &cli.topology {
        return Ok(load_topology(path)?);
    }
    let config = trident_service::config::Config::load(cli.config.as_deref())?;
    Ok(config.influx.topology())
}

fn write_topology(path: &Path, topology: &Topology) -> anyhow::Result<()> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(topology)?
    } else {
        toml::to_string_pretty(topology)?
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn print(report: &Report, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "series": report.series,
            "copies": report.copies,
            "points": report.points,
            "bytes": report.bytes,
            "dropped": report.dropped,
            "differences": report.differences,
            "misplaced": report.misplaced,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "seconds_per_gb": if report.bytes > 0 { seconds / (report.bytes as f64 / 1e9) } else { 0.0 },
        })
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let progress = if cli.quiet {
        Progress::Quiet
    } else {
        Progress::Show
    };
    let mut ctl = Ctl::new(cli.timeout, progress)?;
    let started = Instant::now();
    match &cli.command {
        Command::Show => {
            let topology = current(&cli)?;
            let placement = topology.clone().validate()?;
            println!(
                "version {}, replication {}, default strategy {}",
                topology.version, topology.replication, topology.default_strategy
            );
            for rule in &topology.rules {
                println!(
                    "rule: database {} measurement {} → {}",
                    rule.database.as_deref().unwrap_or("*"),
                    rule.measurement.as_deref().unwrap_or("*"),
                    rule.strategy
                );
            }
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?;
            for node in &placement.topology().nodes {
                let up = client
                    .get(format!("{}/ping", node.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                println!(
                    "node {:<24} {:<32} {}",
                    node.id,
                    node.url,
                    if up { "up" } else { "DOWN" }
                );
            }
        }
        Command::Rebalance { from, to, keep } => {
            let old = load_topology(from)?.validate()?;
            let new = load_topology(to)?.validate()?;
            print(&ctl.rebalance(&old, &new, !keep).await?, started);
        }
        Command::AddNode { id, url } => {
            let path = cli
                .topology
                .clone()
                .context("add-node changes a topology file: give it with --topology")?;
            let old = current(&cli)?;
            if old.nodes.iter().any(|n| n.id == *id) {
                anyhow::bail!("node `{id}` is already in the topology");
            }
            let mut new = old.clone();
            new.version += 1;
            new.nodes.push(Node {
                id: id.clone(),
                url: url.trim_end_matches('/').to_owned(),
            });
            move_to(&mut ctl, &path, old, new, started).await?;
        }
        Command::RemoveNode { id } => {
            let path = cli
                .topology
                .clone()
                .context("remove-node changes a topology file: give it with --topology")?;
            let old = current(&cli)?;
            let mut new = old.clone();
            new.version += 1;
            new.nodes.retain(|n| n.id != *id);
            if new.nodes.len() == old.nodes.len() {
                anyhow::bail!("node `{id}` is not in the topology");
            }
            move_to(&mut ctl, &path, old, new, started).await?;
        }
        Command::Recover {
            node,
            from_kafka: false,
            ..
        } => {
            let placement = current(&cli)?.validate()?;
            print(&ctl.recover(&placement, node).await?, started);
        }
        Command::Recover {
            node,
            from_kafka: true,
            since,
        } => {
            let placement = current(&cli)?.validate()?;
            let config = trident_service::config::Config::load(cli.config.as_deref())?;
            let since_ms = since.map_or(0, |since| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                i64::try_from(now.saturating_sub(since).as_millis()).unwrap_or(0)
            });
            let source = trident_ctl::TopicSource {
                brokers: &config.kafka.brokers,
                topic: &config.kafka.raw_topic,
                since_ms,
                timeout: config.kafka.delivery_timeout,
                idle: Duration::from_secs(10),
            };
            print(
                &ctl.recover_from_topic(&placement, node, source).await?,
                started,
            );
        }
        Command::Check { repair } => {
            let placement = current(&cli)?.validate()?;
            let report = ctl.check(&placement, *repair).await?;
            print(&report, started);
            if !*repair && (!report.differences.is_empty() || !report.misplaced.is_empty()) {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

/// Copy to the new owners, switch the file, then drop from the old ones.
async fn move_to(
    ctl: &mut Ctl,
    path: &Path,
    old: Topology,
    new: Topology,
    started: Instant,
) -> anyhow::Result<()> {
    let (old_p, new_p) = (old.validate()?, new.clone().validate()?);
    let copied = ctl.rebalance(&old_p, &new_p, false).await?;
    write_topology(path, &new)?;
    eprintln!(
        "topology version {} written to {}",
        new.version,
        path.display()
    );
    let dropped = ctl.rebalance(&old_p, &new_p, true).await?;
    let total = Report {
        dropped: dropped.dropped,
        copies: copied.copies + dropped.copies,
        points: copied.points + dropped.points,
        bytes: copied.bytes + dropped.bytes,
        ..copied
    };
    print(&total, started);
    Ok(())
}
