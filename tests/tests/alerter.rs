//! The alerter against the real broker and a real Alertmanager, with the
//! storage down: the gateway's InfluxDB nodes are unreachable (it spools),
//! yet points written to it fire rules. A webhook receiver gets the firing
//! payload (signed) and later the resolved one; Alertmanager lists the
//! alert through its own API; `for`, regex matchers, templates, group-by
//! and absence are each exercised; a restart mid-incident neither resolves
//! nor re-fires; a malformed rules file keeps the running rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use trident_e2e::{KafkaTopic, StackEnv, unique_name};
use trident_service::config::{Config, Service, WebhookConfig};
use trident_service::shutdown::Shutdown;

type Received = Arc<Mutex<Vec<(serde_json::Value, String)>>>;

async fn receive(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> &'static str {
    let signature = headers
        .get("x-trident-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json = serde_json::from_str(&body).unwrap_or_default();
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((json, signature));
    "ok"
}

/// (status, alertname, host) of every payload received so far.
fn payloads(received: &Received) -> Vec<(String, String, String)> {
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(p, _)| {
            let labels = &p["alerts"][0]["labels"];
            (
                p["status"].as_str().unwrap_or_default().to_owned(),
                labels["alertname"].as_str().unwrap_or_default().to_owned(),
                labels["host"]
                    .as_str()
                    .or(labels["dc"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn wait_for(received: &Received, want: (&str, &str, &str)) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if payloads(received)
            .iter()
            .any(|p| (p.0.as_str(), p.1.as_str(), p.2.as_str()) == want)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn start_alerter(config: Config) -> (Shutdown, String) {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", admin.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    tokio::spawn(alerter::run(config, admin, shutdown.clone()));
    // Assigned to its partitions (three broker round trips) before the
    // test writes, so what it writes next is live, not re-read history.
    let health =
        trident_e2e::wait_for_json(&format!("{url}/health"), Duration::from_secs(60), |h| {
            h["components"]["partitions"]["status"] == "up"
        })
        .await;
    assert_eq!(
        health["components"]["partitions"]["status"], "up",
        "the alerter took its partitions: {health}"
    );
    (shutdown, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fire_and_resolve_to_webhooks_and_alertmanager_with_storage_down() {
    let env = StackEnv::load().expect("stack env (scripts/stack up --with alertmanager)");
    let alertmanager = env
        .vars
        .get("TRIDENT_ALERTMANAGER_URL")
        .cloned()
        .expect("Alertmanager in the stack (scripts/stack up --with alertmanager)");
    let topic = KafkaTopic::create(&env, 2).await.expect("topic");
    let work = std::env::temp_dir().join(unique_name("alerter"));
    std::fs::create_dir_all(&work).expect("work dir");
    let run = unique_name("r");
    let rules_path = work.join("rules.toml");
    let rules = format!(
        r#"
[[rules]]
name = "HighCpu"
measurement = "cpu"
field = "usage"
where = [{{ tag = "host", op = "=~", value = "^web-" }}, {{ tag = "run", op = "=", value = "{run}" }}]
op = ">"
threshold = 90
for = "2s"
labels = {{ severity = "page", run = "{run}" }}
annotations = {{ summary = "{{{{ $labels.host }}}} at {{{{ $value }}}}" }}

[[rules]]
name = "DcErrors"
measurement = "http"
field = "errors"
aggregate = "sum"
window = "10s"
op = ">="
threshold = 10
group_by = ["dc"]
labels = {{ run = "{run}" }}

[[rules]]
name = "Silent"
measurement = "hb"
field = "v"
where = [{{ tag = "run", op = "=", value = "{run}" }}]
absent_for = "3s"
labels = {{ run = "{run}" }}
"#
    );
    std::fs::write(&rules_path, &rules).expect("rules");

    // The webhook receiver.
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The gateway, with every InfluxDB node unreachable.
    let mut vars: Vec<(String, String)> = env.vars.clone().into_iter().collect();
    for (k, v) in [
        ("TRIDENT_INFLUX_URLS", "http://127.0.0.1:9".to_owned()),
        ("TRIDENT_INFLUX_TIMEOUT", "1s".to_owned()),
        ("TRIDENT_KAFKA_ALERT_TOPIC", topic.name.clone()),
        (
            "TRIDENT_ALERTER_RULES",
            rules_path.to_string_lossy().into_owned(),
        ),
        (
            "TRIDENT_GATEWAY_SPOOL_DIR",
            work.join("spool").to_string_lossy().into_owned(),
        ),
    ] {
        vars.push((k.to_owned(), v));
    }
    let mut config = Config::load_with_env(None, vars).expect("config");
    config.alerter.webhooks = vec![WebhookConfig {
        name: "test".into(),
        url: hook.clone(),
        secret: "s3cret".into(),
        timeout: Duration::from_secs(2),
        attempts: 3,
        concurrency: 2,
    }];
    config.alerter.alertmanagers = vec![alertmanager.clone()];
    config.alerter.resend_interval = Duration::from_secs(1);
    config.validate(Service::Gateway).expect("gateway config");
    config.validate(Service::Alerter).expect("alerter config");
    let (gateway, gw_shutdown) = trident_e2e::spawn_gateway(config.clone()).await;
    let gateway = format!("{gateway}/write?db=alerts");
    let (alerter, admin) = start_alerter(config.clone()).await;

    let write = |body: String| {
        let gateway = gateway.clone();
        async move {
            let answer = trident_e2e::post_any(&gateway, body).await.expect("write");
            assert_eq!(
                answer.status, 204,
                "storage down, the write is spooled: {}",
                answer.body
            );
        }
    };
    let t0 = now();
    let s = 1_000_000_000i64;
    // `for`: above 90 for 2 s of the points' own time; db-1 fails the regex.
    write(format!(
        "cpu,host=web-1,run={run} usage=95 {t0}\n\
         cpu,host=db-1,run={run} usage=99 {t0}\n\
         cpu,host=web-1,run={run} usage=96 {}\n",
        t0 + s
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        payloads(&received).is_empty(),
        "pending, not firing, after 1 s"
    );
    let sent = std::time::Instant::now();
    write(format!(
        "cpu,host=web-1,run={run} usage=97 {}\n",
        t0 + 2 * s
    ))
    .await;
    assert!(
        wait_for(&received, ("firing", "HighCpu", "web-1")).await,
        "{:?}",
        payloads(&received)
    );
    // A measurement, not a limit: write → gateway → broker → alerter → webhook.
    println!("write to webhook: {:?}", sent.elapsed());
    {
        let got = received.lock().unwrap_or_else(|e| e.into_inner());
        let (payload, signature) = &got[0];
        assert_eq!(payload["receiver"], "test");
        assert_eq!(
            payload["alerts"][0]["annotations"]["summary"],
            "web-1 at 97"
        );
        assert_eq!(payload["alerts"][0]["labels"]["severity"], "page");
        let body = payload.to_string();
        // The signature is over the bytes sent; re-serialising the parsed
        // JSON keeps them here (no whitespace, same key order).
        assert_eq!(
            signature,
            &alerter::notify::signature("s3cret", body.as_bytes())
        );
    }
    assert!(
        !payloads(&received).iter().any(|p| p.2 == "db-1"),
        "the regex keeps db-1 out"
    );

    // Alertmanager lists it through its own API.
    let listed = trident_e2e::wait_for_json(
        &format!("{alertmanager}/api/v2/alerts?filter=run%3D%22{run}%22"),
        Duration::from_secs(60),
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    assert_eq!(listed[0]["labels"]["alertname"], "HighCpu", "{listed}");
    assert_eq!(listed[0]["status"]["state"], "active", "{listed}");

    // Group-by: errors of two hosts of one dc add up.
    write(format!(
        "http,dc=eu,host=a,run={run} errors=6i {t0}\nhttp,dc=eu,host=b,run={run} errors=5i {}\n",
        t0 + s
    ))
    .await;
    assert!(
        wait_for(&received, ("firing", "DcErrors", "eu")).await,
        "{:?}",
        payloads(&received)
    );

    // Absence: a heartbeat, then silence.
    write(format!("hb,host=x,run={run} v=1 {}\n", now())).await;
    assert!(
        wait_for(&received, ("firing", "Silent", "x")).await,
        "{:?}",
        payloads(&received)
    );

    // Resolve.
    write(format!(
        "cpu,host=web-1,run={run} usage=50 {}\n",
        t0 + 4 * s
    ))
    .await;
    assert!(
        wait_for(&received, ("resolved", "HighCpu", "web-1")).await,
        "{:?}",
        payloads(&received)
    );
    let alerts =
        trident_e2e::wait_for_json(&format!("{admin}/alerts"), Duration::ZERO, |_| true).await;
    assert!(
        alerts["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["rule"] == "DcErrors")),
        "{alerts}"
    );

    // Restart mid-incident: web-2 fires, the alerter restarts, web-2 is
    // neither resolved nor fired again; then it resolves once.
    write(format!(
        "cpu,host=web-2,run={run} usage=95 {}\ncpu,host=web-2,run={run} usage=95 {}\n",
        t0 + 10 * s,
        t0 + 13 * s
    ))
    .await;
    assert!(wait_for(&received, ("firing", "HighCpu", "web-2")).await);
    alerter.trigger();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = payloads(&received).len();
    let (alerter, admin) = start_alerter(config.clone()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<_> = payloads(&received)[before..].to_vec();
    assert!(
        !after
            .iter()
            .any(|p| p.2 == "web-2" || p.1 == "Silent" || p.1 == "DcErrors"),
        "nothing re-sent or resolved by the restart: {after:?}"
    );
    write(format!(
        "cpu,host=web-2,run={run} usage=10 {}\n",
        t0 + 14 * s
    ))
    .await;
    assert!(wait_for(&received, ("resolved", "HighCpu", "web-2")).await);
    let web2: Vec<_> = payloads(&received)
        .into_iter()
        .filter(|p| p.2 == "web-2")
        .collect();
    assert_eq!(
        web2,
        [
            (
                "firing".to_owned(),
                "HighCpu".to_owned(),
                "web-2".to_owned()
            ),
            (
                "resolved".to_owned(),
                "HighCpu".to_owned(),
                "web-2".to_owned()
            )
        ]
    );

    // A malformed rules file: reported, the running rules stay.
    std::fs::write(&rules_path, format!("{rules}\n[[rules]]\nname = \"Bad\"\n")).expect("write");
    let health =
        trident_e2e::wait_for_json(&format!("{admin}/health"), Duration::from_secs(60), |h| {
            h["components"]["rules"]["status"] == "degraded"
        })
        .await;
    let detail = health["components"]["rules"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("rules.toml:") && detail.contains("keeping 3 rules"),
        "{health}"
    );
    write(format!(
        "cpu,host=web-3,run={run} usage=99 {}\ncpu,host=web-3,run={run} usage=99 {}\n",
        t0 + 20 * s,
        t0 + 23 * s
    ))
    .await;
    assert!(
        wait_for(&received, ("firing", "HighCpu", "web-3")).await,
        "the old rules still run"
    );

    alerter.trigger();
    gw_shutdown.trigger();
    let _ = std::fs::remove_dir_all(&work);
}
