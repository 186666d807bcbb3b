//! `trident-ctl`: see the crate documentation of `trident-ctl`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use trident_cluster::{Move, Node, Topology};
use trident_ctl::{Ctl, Progress, Report};
use trident_service::topology::{Source, etcd_get, etcd_put_if, followers, parse, read_file};

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
    /// add-node/remove-node: with etcd, the longest wait for every live
    /// service (one that reported in the last 10 s) to follow a published
    /// version; with a file, the time they are given (a few times
    /// influx.topology_poll). Data is copied again and dropped from the
    /// old owners only after it.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the topology and whether each node answers.
    Show {
        /// Print the topology itself as JSON (a file for --topology).
        #[arg(long)]
        json: bool,
    },
    /// Make the topology of FILE the one in use (in the topology file or
    /// etcd key of the configuration); its version must be higher.
    Publish {
        /// A JSON or TOML topology.
        #[arg(long)]
        file: PathBuf,
    },
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
    /// Finish a move an earlier add-node or remove-node left published
    /// (the topology in use has a `moving` section).
    FinishMove,
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

/// Where the topology lives: `--topology FILE`, else the Trident
/// configuration's source (a topology file or an etcd key, else its
/// `[influx]` section).
fn source(cli: &Cli) -> anyhow::Result<Source> {
    if let Some(path) = &cli.topology {
        return Ok(Source::File(path.clone()));
    }
    let config = trident_service::config::Config::load(cli.config.as_deref())?;
    Ok(Source::of(&config))
}

async fn current(cli: &Cli) -> anyhow::Result<Topology> {
    let client = reqwest::Client::builder().timeout(cli.timeout).build()?;
    Ok(source(cli)?.load(&client).await?)
}

/// Makes `topology` the one in use at the source; its version must be
/// higher than the one there (in etcd, checked and set atomically).
async fn publish(cli: &Cli, topology: &Topology) -> anyhow::Result<()> {
    let source = source(cli)?;
    let client = reqwest::Client::builder().timeout(cli.timeout).build()?;
    match &source {
        Source::Config(_) => anyhow::bail!(
            "the topology comes from the [influx] section: give --topology FILE, or set influx.topology_file or influx.topology_key"
        ),
        Source::File(path) => {
            if let Ok(old) = source.load(&client).await {
                anyhow::ensure!(
                    topology.version > old.version,
                    "version {} is not higher than {} in {}",
                    topology.version,
                    old.version,
                    path.display()
                );
            }
            write_topology(path, topology)?;
        }
        Source::Etcd { endpoints, key } => {
            let existing = etcd_get(&client, endpoints, key).await?;
            let revision = match &existing {
                Some((text, revision)) => {
                    let old = parse(text, true).map_err(anyhow::Error::msg)?;
                    anyhow::ensure!(
                        topology.version > old.version,
                        "version {} is not higher than {} in etcd key {key}",
                        topology.version,
                        old.version
                    );
                    Some(*revision)
                }
                None => None,
            };
            let text = serde_json::to_string(topology)?;
            if !etcd_put_if(&client, endpoints, key, &text, revision).await? {
                anyhow::bail!("etcd key {key} changed while publishing: read it again and retry");
            }
        }
    }
    eprintln!(
        "topology version {} published to {}",
        topology.version,
        source.describe()
    );
    Ok(())
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
        Command::Publish { file } => {
            let topology = read_file(file)?;
            topology.clone().validate()?;
            publish(&cli, &topology).await?;
        }
        Command::Show { json: true } => {
            println!("{}", serde_json::to_string_pretty(&current(&cli).await?)?);
        }
        Command::Show { json: false } => {
            let topology = current(&cli).await?;
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
            let old = read_file(from)?.validate()?;
            let new = read_file(to)?.validate()?;
            print(&ctl.rebalance(&old, &new, !keep).await?, started);
        }
        Command::FinishMove => {
            let moving = current(&cli).await?;
            let Some(m) = moving.moving.clone() else {
                anyhow::bail!(
                    "no move in progress: the topology in use (version {}) has no `moving` section",
                    moving.version
                );
            };
            let side = |ids: &[String], version: u64| Topology {
                version,
                nodes: moving
                    .nodes
                    .iter()
                    .filter(|n| ids.contains(&n.id))
                    .cloned()
                    .collect(),
                moving: None,
                ..moving.clone()
            };
            let (old, new) = (
                side(&m.from, moving.version - 1),
                side(&m.to, moving.version + 1),
            );
            move_to(&mut ctl, &cli, old, new, started).await?;
        }
        Command::AddNode { id, url } => {
            let old = current(&cli).await?;
            refuse_mid_move(&old)?;
            if old.nodes.iter().any(|n| n.id == *id) {
                anyhow::bail!("node `{id}` is already in the topology");
            }
            let mut new = old.clone();
            new.version += 2;
            new.nodes.push(Node {
                id: id.clone(),
                url: url.trim_end_matches('/').to_owned(),
            });
            move_to(&mut ctl, &cli, old, new, started).await?;
        }
        Command::RemoveNode { id } => {
            let old = current(&cli).await?;
            refuse_mid_move(&old)?;
            let mut new = old.clone();
            new.version += 2;
            new.nodes.retain(|n| n.id != *id);
            if new.nodes.len() == old.nodes.len() {
                anyhow::bail!("node `{id}` is not in the topology");
            }
            move_to(&mut ctl, &cli, old, new, started).await?;
        }
        Command::Recover {
            node,
            from_kafka: false,
            ..
        } => {
            let placement = current(&cli).await?.validate()?;
            print(&ctl.recover(&placement, node).await?, started);
        }
        Command::Recover {
            node,
            from_kafka: true,
            since,
        } => {
            let placement = current(&cli).await?.validate()?;
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
                // Only a broker that stops delivering waits this long: the
                // read ends when every partition reached its end.
                idle: Duration::from_secs(60),
            };
            print(
                &ctl.recover_from_topic(&placement, node, source).await?,
                started,
            );
        }
        Command::Check { repair } => {
            let placement = current(&cli).await?.validate()?;
            let report = ctl.check(&placement, *repair).await?;
            print(&report, started);
            if !*repair && (!report.differences.is_empty() || !report.misplaced.is_empty()) {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

fn refuse_mid_move(topology: &Topology) -> anyhow::Result<()> {
    if topology.moving.is_some() {
        anyhow::bail!(
            "a move is in progress (version {}): finish it first with `trident-ctl finish-move`",
            topology.version
        );
    }
    Ok(())
}

/// Waits until the services follow `version`: with etcd, until every
/// instance that reported in the last 10 s says it uses it (then a second
/// more, for writes routed just before the switch), at most `--grace`;
/// with a file, `--grace`.
async fn wait_followed(cli: &Cli, version: u64) -> anyhow::Result<()> {
    let source = source(cli)?;
    let Source::Etcd { endpoints, key } = &source else {
        eprintln!(
            "waiting {:?} for services to follow version {version}",
            cli.grace
        );
        tokio::time::sleep(cli.grace).await;
        return Ok(());
    };
    let client = reqwest::Client::builder().timeout(cli.timeout).build()?;
    let deadline = Instant::now() + cli.grace;
    loop {
        let live = followers(&client, endpoints, key, Duration::from_secs(10)).await?;
        let behind: Vec<String> = live
            .iter()
            .filter(|(_, f)| f.version < version)
            .map(|(name, f)| format!("{name} (version {})", f.version))
            .collect();
        if behind.is_empty() {
            eprintln!("{} instance(s) follow version {version}", live.len());
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "after {:?}, {} still use an older topology; nothing was dropped: run the command again once they follow version {version}, or stop them",
                cli.grace,
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves from `old` to `new` (whose version is `old`'s + 2) while the
/// services keep writing: publish a move version (`old` + 1: writes go to
/// the owners on both sides, reads to the old side), wait until every
/// service follows it, copy every series to its new owners, publish `new`,
/// wait again, then copy what is still missing, verify, and drop from the
/// nodes that no longer own a series.
async fn move_to(
    ctl: &mut Ctl,
    cli: &Cli,
    old: Topology,
    new: Topology,
    started: Instant,
) -> anyhow::Result<()> {
    let kept = std::env::temp_dir().join(format!("trident-topology-v{}.json", old.version));
    write_topology(&kept, &old)?;
    let (old_p, new_p) = (old.clone().validate()?, new.clone().validate()?);
    let mut moving = new.clone();
    moving.version = old.version + 1;
    for node in &old.nodes {
        if !moving.nodes.iter().any(|n| n.id == node.id) {
            moving.nodes.push(node.clone());
        }
    }
    moving.moving = Some(Move {
        from: old.nodes.iter().map(|n| n.id.clone()).collect(),
        to: new.nodes.iter().map(|n| n.id.clone()).collect(),
    });
    moving.clone().validate()?;
    // finish-move: the move version is already the one in use.
    if current(cli).await?.version < moving.version {
        publish(cli, &moving).await?;
    }
    let finish = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e}\nNothing was dropped. Once every service follows the topology in use: `trident-ctl finish-move` while it shows a move, else `trident-ctl show --json > new.json && trident-ctl rebalance --from {} --to new.json`",
            kept.display()
        )
    };
    wait_followed(cli, moving.version).await.map_err(finish)?;
    let copied = ctl.rebalance(&old_p, &new_p, false).await?;
    if current(cli).await?.version < new.version {
        publish(cli, &new).await?;
    }
    wait_followed(cli, new.version).await.map_err(finish)?;
    let last = ctl.rebalance(&old_p, &new_p, true).await?;
    let total = Report {
        dropped: last.dropped,
        copies: copied.copies + last.copies,
        points: copied.points + last.points,
        bytes: copied.bytes + last.bytes,
        ..copied
    };
    print(&total, started);
    Ok(())
}
