//! Graceful, ordered shutdown.
//!
//! A service is built from stages that feed each other, e.g. the gateway's
//! HTTP server feeds its sinks. Stopping them all at once would drop what is
//! in flight between them, so [`StopOrder`] stops the stages one after
//! another in the order they were registered: a stage is told to stop, its
//! tasks are awaited, and only then is the next (downstream) stage told.
//!
//! [`Shutdown`] is the trigger: SIGINT/SIGTERM, or [`Shutdown::trigger`]
//! from a test.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Error, Result};

/// The trigger that starts a shutdown. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A trigger that only fires when [`Shutdown::trigger`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// A trigger that also fires on SIGINT (Ctrl-C) or SIGTERM.
    pub fn on_signals() -> Result<Self> {
        let shutdown = Self::new();
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| Error::Signal {
                signal: "SIGTERM",
                source,
            })?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
            }
            trigger.trigger();
        });
        Ok(shutdown)
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the shutdown has started; `'static`, so it can be handed
    /// to `axum::serve(..).with_graceful_shutdown`.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }
}

/// One stage's handle: spawn its tasks through it and watch its stop signal.
#[derive(Debug, Clone)]
pub struct Stage {
    name: &'static str,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Stage {
    /// The stage's name, as given to [`StopOrder::stage`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Spawns a task that [`StopOrder::stop`] waits for.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Resolves when this stage is told to stop.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Whether this stage has been told to stop.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// How one stage's stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOutcome {
    /// The stage.
    pub name: &'static str,
    /// False if its tasks were still running when the timeout ran out.
    pub finished: bool,
}

/// Stages in stop order (upstream first).
#[derive(Debug, Default)]
pub struct StopOrder {
    stages: Vec<Stage>,
}

impl StopOrder {
    /// No stages yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next stage; stages stop in registration order.
    pub fn stage(&mut self, name: &'static str) -> Stage {
        let stage = Stage {
            name,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        self.stages.push(stage.clone());
        stage
    }

    /// Stops every stage in order, giving each at most `per_stage` to finish
    /// its tasks. A stage that overruns is logged and left behind; the next
    /// stage is still stopped, so a stuck stage cannot hang the process.
    pub async fn stop(self, per_stage: Duration) -> Vec<StageOutcome> {
        let mut outcomes = Vec::with_capacity(self.stages.len());
        for stage in self.stages {
            stage.token.cancel();
            stage.tracker.close();
            let finished = tokio::time::timeout(per_stage, stage.tracker.wait())
                .await
                .is_ok();
            if finished {
                tracing::info!(stage = stage.name, "stopped");
            } else {
                tracing::warn!(stage = stage.name, timeout = ?per_stage, "did not stop in time");
            }
            outcomes.push(StageOutcome {
                name: stage.name,
                finished,
            });
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn stages_stop_one_after_another_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut order = StopOrder::new();
        let http = order.stage("http");
        let sinks = order.stage("sinks");

        let (l, s) = (log.clone(), http.clone());
        http.spawn(async move {
            s.stopping().await;
            // Still draining when the next stage would be told to stop.
            tokio::time::sleep(Duration::from_millis(50)).await;
            l.lock().unwrap().push("http drained");
        });
        let (l, s) = (log.clone(), sinks.clone());
        sinks.spawn(async move {
            s.stopping().await;
            l.lock().unwrap().push("sinks flushed");
        });

        let outcomes = order.stop(Duration::from_secs(5)).await;
        assert!(outcomes.iter().all(|o| o.finished));
        assert_eq!(*log.lock().unwrap(), ["http drained", "sinks flushed"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_stage_times_out_and_the_rest_still_stop() {
        let mut order = StopOrder::new();
        let stuck = order.stage("stuck");
        let next = order.stage("next");
        stuck.spawn(std::future::pending::<()>());
        let n = next.clone();
        next.spawn(async move { n.stopping().await });
        let outcomes = order.stop(Duration::from_secs(1)).await;
        assert_eq!(
            outcomes,
            [
                StageOutcome {
                    name: "stuck",
                    finished: false
                },
                StageOutcome {
                    name: "next",
                    finished: true
                },
            ]
        );
    }

    #[tokio::test]
    async fn trigger_resolves_the_future() {
        let shutdown = Shutdown::new();
        let fut = shutdown.triggered();
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        fut.await;
        assert!(shutdown.is_triggered());
    }
}
