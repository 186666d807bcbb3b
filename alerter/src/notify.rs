//! Notifications: webhooks with Alertmanager's webhook payload (optionally
//! signed with HMAC-SHA256) and Alertmanager's own `POST /api/v2/alerts`.
//!
//! Evaluation hands transitions to [`Notifier::send`], which never waits:
//! a bounded queue feeds one task per receiver kind, each receiver has a
//! concurrency limit, a timeout and retries with backoff; what cannot be
//! queued or delivered is counted
//! (`trident_alerter_notifications_dropped_total`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use trident_service::config::WebhookConfig;

use crate::eval::{Alert, Transition};

/// RFC 3339 with nanoseconds, UTC, for a time in ns since the epoch.
pub fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stable id of an alert: XXH3 of its sorted labels, in hex.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (k, v) in labels {
        text.push_str(k);
        text.push('\u{ff}');
        text.push_str(v);
        text.push('\u{ff}');
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Alertmanager's webhook payload (version 4) for one alert.
pub fn webhook_payload(receiver: &str, firing: bool, alert: &Alert) -> Value {
    let status = if firing { "firing" } else { "resolved" };
    let ends = if firing {
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        rfc3339(alert.resolved_at.max(alert.active_since))
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", alert.rule),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": { "alertname": alert.rule },
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.active_since),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": fingerprint(&alert.labels),
        }],
    })
}

/// One alert for Alertmanager's `POST /api/v2/alerts`. Firing alerts end
/// `valid_for` from now unless sent again (the resend keeps them alive);
/// resolved ones end at their resolution.
pub fn alertmanager_alert(alert: &Alert, firing: bool, valid_for: Duration) -> Value {
    let ends = if firing {
        now_ns() + i64::try_from(valid_for.as_nanos()).unwrap_or(i64::MAX / 2)
    } else {
        alert.resolved_at.max(alert.active_since)
    };
    json!({
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.active_since),
        "endsAt": rfc3339(ends),
        "generatorURL": "",
    })
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error arm is unreachable.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Hands transitions to the receivers.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Transition>,
}

struct Receivers {
    client: reqwest::Client,
    webhooks: Vec<(WebhookConfig, Arc<Semaphore>)>,
    alertmanagers: Vec<String>,
    valid_for: Duration,
}

impl Notifier {
    /// Starts the delivery task.
    pub fn start(
        webhooks: Vec<WebhookConfig>,
        alertmanagers: Vec<String>,
        queue: usize,
        resend: Duration,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Transition>(queue.max(1));
        let receivers = Arc::new(Receivers {
            client: reqwest::Client::new(),
            webhooks: webhooks
                .into_iter()
                .map(|w| {
                    let limit = Arc::new(Semaphore::new(w.concurrency.max(1)));
                    (w, limit)
                })
                .collect(),
            alertmanagers,
            valid_for: resend * 3,
        });
        tokio::spawn(async move {
            while let Some(transition) = rx.recv().await {
                let receivers = receivers.clone();
                tokio::spawn(async move { receivers.deliver(&transition).await });
            }
        });
        Self { queue: tx }
    }

    /// Queues a transition; never waits. `false` (and counted) when full.
    pub fn send(&self, transition: Transition) -> bool {
        match self.queue.try_send(transition) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("trident_alerter_notifications_dropped_total", "reason" => "queue_full")
                    .increment(1);
                false
            }
        }
    }
}

/// Sends the firing `alerts` to every Alertmanager (the periodic resend,
/// and the state after a restart: Alertmanager merges repeats).
pub async fn resend_to_alertmanagers(
    client: &reqwest::Client,
    alertmanagers: &[String],
    alerts: &[Alert],
    valid_for: Duration,
) {
    if alerts.is_empty() {
        return;
    }
    let body: Vec<Value> = alerts
        .iter()
        .map(|a| alertmanager_alert(a, true, valid_for))
        .collect();
    for am in alertmanagers {
        let url = format!("{}/api/v2/alerts", am.trim_end_matches('/'));
        if let Err(e) = client.post(&url).json(&body).send().await {
            tracing::warn!(%url, error = %e, "resending to Alertmanager failed");
        }
    }
}

impl Receivers {
    async fn deliver(&self, transition: &Transition) {
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (webhook, limit) in &self.webhooks {
            let body =
                webhook_payload(&webhook.name, transition.firing, &transition.alert).to_string();
            let (client, webhook, limit) = (self.client.clone(), webhook.clone(), limit.clone());
            tasks.spawn(async move {
                let Ok(_permit) = limit.acquire_owned().await else {
                    return;
                };
                post_with_retries(&client, &webhook.url, &webhook.name, body, &webhook).await;
            });
        }
        let body = Value::Array(vec![alertmanager_alert(
            &transition.alert,
            transition.firing,
            self.valid_for,
        )])
        .to_string();
        for am in &self.alertmanagers {
            let url = format!("{}/api/v2/alerts", am.trim_end_matches('/'));
            let (client, body) = (self.client.clone(), body.clone());
            let settings = WebhookConfig {
                name: "alertmanager".into(),
                url: url.clone(),
                secret: String::new(),
                timeout: Duration::from_secs(5),
                attempts: 4,
                concurrency: 1,
            };
            tasks.spawn(async move {
                post_with_retries(&client, &url, "alertmanager", body, &settings).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        metrics::histogram!("trident_alerter_notify_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}

async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    receiver: &str,
    body: String,
    settings: &WebhookConfig,
) {
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=settings.attempts.max(1) {
        let mut request = client
            .post(url)
            .timeout(settings.timeout)
            .header("content-type", "application/json")
            .body(body.clone());
        if !settings.secret.is_empty() {
            request = request.header(
                "x-trident-signature",
                signature(&settings.secret, body.as_bytes()),
            );
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() => {
                metrics::counter!("trident_alerter_notifications_total", "receiver" => receiver.to_owned())
                    .increment(1);
                return;
            }
            Ok(resp) => {
                tracing::warn!(%url, status = %resp.status(), attempt, "notification refused")
            }
            Err(e) => tracing::warn!(%url, error = %e, attempt, "notification failed"),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    metrics::counter!("trident_alerter_notifications_dropped_total", "reason" => "undeliverable")
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::State;

    fn alert() -> Alert {
        Alert {
            rule: "Hot".into(),
            labels: [
                ("alertname".into(), "Hot".into()),
                ("host".into(), "a".into()),
            ]
            .into(),
            annotations: [("summary".into(), "a at 97".into())].into(),
            state: State::Firing,
            value: 97.0,
            active_since: 1_700_000_000_000_000_000,
            resolved_at: 0,
        }
    }

    #[test]
    fn the_webhook_payload_has_alertmanagers_fields() {
        let p = webhook_payload("ops", true, &alert());
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "ops");
        assert_eq!(p["groupLabels"]["alertname"], "Hot");
        assert_eq!(p["commonLabels"]["host"], "a");
        assert_eq!(p["commonAnnotations"]["summary"], "a at 97");
        let a = &p["alerts"][0];
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["fingerprint"].as_str().map(str::len), Some(16));
        let mut resolved = alert();
        resolved.resolved_at = 1_700_000_060_000_000_000;
        let p = webhook_payload("ops", false, &resolved);
        assert_eq!(p["alerts"][0]["endsAt"], "2023-11-14T22:14:20.000000000Z");
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
