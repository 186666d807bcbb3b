//! # alerter
//!
//! Streaming alert rules evaluated on the alert topic, notifying webhooks
//! and Alertmanager.
//!
//! ```text
//! alert topic, partitions p % instances == instance (assign(), no group)
//!   ── seek to now − lookback; records before it skipped
//!   ──► eval::Engine: rules (docs/alert-rules.md) per group, sliding
//!       event-time windows, inactive → pending → firing → resolved
//!   ──► notify::Notifier (bounded queue, never waited for):
//!       webhooks (Alertmanager's payload, HMAC-signed) and
//!       Alertmanager's POST /api/v2/alerts, re-sent while firing
//! ```
//!
//! No checkpoints: at start the lookback is re-read to rebuild windows and
//! `for` state. Transitions found in that re-read history are not notified
//! (they were, before the restart); once caught up, the firing alerts are
//! sent to Alertmanager again (it merges repeats), and only new
//! transitions reach the webhooks — so a restart neither resolves-and-
//! refires a firing alert nor re-sends a resolved one.
//!
//! `/alerts` lists pending and firing alerts as JSON; the rules are re-read
//! on SIGHUP and when the file changes, keeping the state of unchanged
//! rules; a file with a mistake keeps the running rules.

pub mod eval;
pub mod notify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State as AxumState;
use axum::routing::get;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use trident_alert_rules::RuleSet;
use trident_service::config::{Config, Service};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use eval::{Alert, Engine, State};
use notify::Notifier;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Alerter;

/// How long the re-read of history may go without a record before the
/// alerter evaluates live anyway.
const HISTORY_STALL: Duration = Duration::from_secs(30);

/// Why the alerter cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rules file is unreadable or invalid.
    #[error(transparent)]
    Rules(#[from] trident_alert_rules::Error),
    /// Serving, metrics, signals or the broker failed.
    #[error(transparent)]
    Service(#[from] trident_service::Error),
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

type Snapshot = Arc<RwLock<Vec<Alert>>>;

async fn alerts_json(AxumState(snapshot): AxumState<Snapshot>) -> axum::Json<serde_json::Value> {
    let alerts = snapshot.read().unwrap_or_else(|e| e.into_inner()).clone();
    let list: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            serde_json::json!({
                "rule": a.rule,
                "state": match a.state {
                    State::Firing => "firing",
                    State::Pending => "pending",
                    State::Inactive => "inactive",
                },
                "labels": a.labels,
                "annotations": a.annotations,
                "value": a.value,
                "activeSince": notify::rfc3339(a.active_since),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "alerts": list }))
}

/// Re-reads the rules on SIGHUP and when the file's modification time
/// changes; sends what it read.
fn watch_rules(path: PathBuf, shutdown: &Shutdown) -> mpsc::Receiver<Result<RuleSet, String>> {
    let (tx, rx) = mpsc::channel(4);
    let stop = shutdown.triggered();
    tokio::spawn(async move {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = modified(&path);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let watch = async {
            loop {
                let signalled = async {
                    match hangup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = signalled => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        let now = modified(&path);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                    }
                }
                let read = RuleSet::load(&path).map_err(|e| e.to_string());
                if tx.send(read).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = watch => {}
            () = stop => {}
        }
    });
    rx
}

/// Runs the alerter until `shutdown`; `/health`, `/metrics` and
/// `/alerts` on `admin`.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let a = &config.alerter;
    let mut engine = Engine::new(RuleSet::load(&a.rules)?);
    let health = Health::new("trident-alerter", env!("CARGO_PKG_VERSION"));
    health.set(
        "rules",
        Status::Up,
        format!("{} rules", engine.rule_count()),
    );
    let snapshot: Snapshot = Arc::default();
    let app =
        trident_service::admin::router(health.clone(), trident_service::telemetry::metrics()?)
            .merge(
                Router::new()
                    .route("/alerts", get(alerts_json))
                    .with_state(snapshot.clone()),
            );
    let stop_admin = shutdown.triggered();
    tokio::spawn(async move {
        if let Err(e) = trident_service::admin::serve(admin, app, stop_admin).await {
            tracing::error!(error = %e, "the admin endpoint stopped");
        }
    });
    let notifier = Notifier::start(
        a.webhooks.clone(),
        a.alertmanagers.clone(),
        a.notify_queue,
        a.resend_interval,
    );
    let client = reqwest::Client::new();

    let started = now_ns();
    let replay_from = started - i64::try_from(a.lookback.as_nanos()).unwrap_or(i64::MAX);
    let pinned = trident_service::pinned::pin(trident_service::pinned::PinOptions {
        brokers: config.kafka.alert_brokers(),
        topic: &config.kafka.alert_topic,
        instance: a.instance,
        instances: a.instances,
        partitions: &a.partitions,
        replay_from_ms: replay_from / 1_000_000,
        resume: &std::collections::HashMap::new(),
        timeout: config.kafka.delivery_timeout,
    })
    .await?;
    pinned.report(&health);
    // History is re-read until every partition reached the end it had at
    // assignment. A partition that started there has none to re-read.
    let mut behind = pinned.history();
    let ends = pinned.ends;
    let mut caught_up = false;
    let mut last_history = std::time::Instant::now();
    let consumer = pinned.consumer;

    let mut reloads = watch_rules(a.rules.clone(), &shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut resend = tokio::time::interval(a.resend_interval);
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    let mut consuming = false;
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(read) = reloads.recv() => match read {
                Ok(set) => {
                    engine.replace(set);
                    tracing::info!(rules = engine.rule_count(), "rules reloaded");
                    health.set("rules", Status::Up, format!("{} rules", engine.rule_count()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "rules not reloaded; the running rules stay");
                    health.set(
                        "rules",
                        Status::Degraded,
                        format!("{e} (keeping {} rules)", engine.rule_count()),
                    );
                }
            },
            _ = tick.tick() => {
                // The timeout only keeps a broker that stops delivering
                // history from holding notifications back for ever; a slow
                // one (tansu serves a fetch in seconds) must not end the
                // re-read early, or history would be notified again.
                if !caught_up && (behind.is_empty() || last_history.elapsed() > HISTORY_STALL) {
                    caught_up = true;
                    // Silences found now may predate the restart: like
                    // other re-read history, they go to Alertmanager only.
                    let silent = engine.tick(now_ns()).len();
                    metrics::counter!("trident_alerter_history_transitions_total").increment(silent as u64);
                    let firing: Vec<Alert> = engine.alerts().into_iter().filter(|a| a.state == State::Firing).collect();
                    tracing::info!(firing = firing.len(), "history re-read; evaluating live");
                    resend_alerts(&client, &config.alerter.alertmanagers, &firing, a.resend_interval).await;
                }
                if caught_up {
                    for t in engine.tick(now_ns()) {
                        notifier.send(t);
                    }
                }
                let alerts = engine.alerts();
                metrics::gauge!("trident_alerter_rules").set(engine.rule_count() as f64);
                metrics::gauge!("trident_alerter_groups").set(engine.groups() as f64);
                for (state, name) in [(State::Pending, "pending"), (State::Firing, "firing")] {
                    metrics::gauge!("trident_alerter_alerts", "state" => name)
                        .set(alerts.iter().filter(|a| a.state == state).count() as f64);
                }
                *snapshot.write().unwrap_or_else(|e| e.into_inner()) = alerts;
            }
            _ = resend.tick() => {
                if caught_up {
                    let firing: Vec<Alert> = engine.alerts().into_iter().filter(|a| a.state == State::Firing).collect();
                    resend_alerts(&client, &config.alerter.alertmanagers, &firing, a.resend_interval).await;
                }
            }
            message = consumer.recv() => {
                let Some(message) = trident_service::pinned::received(message, &health, &mut consuming) else {
                    continue;
                };
                let partition = message.partition();
                // Records that existed when the partitions were assigned are
                // re-read history.
                let end = ends.get(&partition).copied().unwrap_or(0);
                let history = message.offset() < end;
                if history {
                    last_history = std::time::Instant::now();
                }
                if message.offset() + 1 >= end {
                    behind.remove(&partition);
                }
                let ingest = message.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000);
                if ingest < replay_from {
                    continue;
                }
                let live = caught_up || !history;
                let mut evaluated = 0u64;
                for line in trident_line_protocol::parse_lines(message.payload().unwrap_or_default()).flatten() {
                    evaluated += 1;
                    for t in engine.observe(&line, ingest) {
                        if live {
                            notifier.send(t);
                        } else {
                            metrics::counter!("trident_alerter_history_transitions_total").increment(1);
                        }
                    }
                }
                metrics::counter!("trident_alerter_evaluations_total").increment(evaluated);
            }
        }
    }
    let _ = consumer.unassign();
    Ok(())
}

async fn resend_alerts(
    client: &reqwest::Client,
    alertmanagers: &[String],
    firing: &[Alert],
    interval: Duration,
) {
    notify::resend_to_alertmanagers(client, alertmanagers, firing, interval * 3).await;
}
