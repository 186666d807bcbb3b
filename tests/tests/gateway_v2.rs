//! `/api/v2/write` answers as InfluxDB 2.x documents its write API
//! (docs.influxdata.com/influxdb/v2/write-data/troubleshoot/): 204 when
//! everything is stored; 400 `invalid` and nothing written when a line does
//! not parse; 422 `unprocessable entity` for points storage refuses, the
//! rest written; 404 `not found` for an unknown bucket; 413 `request too
//! large`; every error as `{"code": …, "message": …}`. No InfluxDB 2 runs
//! here, so the documented behaviour is the reference.

use serde_json::{Value, json};
use trident_e2e::{InfluxDb, StackEnv, influx_query, post_any, spawn_gateway};

async fn count(env: &StackEnv, db: &str, q: &str) -> u64 {
    let mut total = 0;
    for url in &env.influx_urls {
        let v = influx_query(url, q, Some(db)).await.expect("query");
        total += v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0);
    }
    total
}

fn error_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_write_api_answers_as_influxdb_2_documents() {
    let env = StackEnv::load().expect("the stack is up (scripts/stack up)");
    let db = InfluxDb::create(&env).await.expect("database");
    let (gateway, shutdown) = spawn_gateway(env.config(&[
        ("TRIDENT_INFLUX_REPLICATION", "1"),
        ("TRIDENT_GATEWAY_MAX_BODY_BYTES", "4096"),
    ]))
    .await;
    let write = |query: String| format!("{gateway}/api/v2/write?org=any&{query}");

    let ok = post_any(
        &write(format!("bucket={}&precision=ms", db.name)),
        "cpu,host=a v=1 1700000000000\ncpu,host=b v=2 1700000000000",
    )
    .await
    .expect("write");
    assert_eq!((ok.status, ok.body.as_str()), (204, ""));
    assert_eq!(count(&env, &db.name, "SELECT count(v) FROM cpu").await, 2);

    // One bad line: the whole body is refused.
    let bad = post_any(
        &write(format!("bucket={}", db.name)),
        "cpu,host=c v=3\ncpu,host=d v=\ncpu,host=e v=5",
    )
    .await
    .expect("write");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let e = error_of(&bad.body);
    assert_eq!(e["code"], json!("invalid"));
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("unable to parse 'cpu,host=d v='")),
        "{e}"
    );
    assert_eq!(
        count(&env, &db.name, "SELECT count(v) FROM cpu").await,
        2,
        "nothing written"
    );

    // A point storage refuses (a `time` field): 422, the others written.
    let refused = post_any(
        &write(format!("bucket={}", db.name)),
        "mem,host=a used=1\nmem,host=b time=2",
    )
    .await
    .expect("write");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        error_of(&refused.body)["code"],
        json!("unprocessable entity")
    );
    assert_eq!(
        count(&env, &db.name, "SELECT count(used) FROM mem").await,
        1
    );

    // A field type conflict with stored data (types are per shard: the
    // same time): 422.
    let conflict = post_any(
        &write(format!("bucket={}&precision=ms", db.name)),
        "cpu,host=a v=\"text\" 1700000000000",
    )
    .await
    .expect("write");
    assert_eq!(conflict.status, 422, "{}", conflict.body);
    assert!(
        conflict.body.contains("field type conflict"),
        "{}",
        conflict.body
    );

    // bucket = db/rp.
    for url in &env.influx_urls {
        influx_query(
            url,
            &format!(
                "CREATE RETENTION POLICY week ON \"{}\" DURATION 7d REPLICATION 1",
                db.name
            ),
            None,
        )
        .await
        .expect("rp");
    }
    let rp = post_any(
        &write(format!("bucket={}/week", db.name)),
        "disk,host=a free=1",
    )
    .await
    .expect("write");
    assert_eq!(rp.status, 204, "{}", rp.body);
    assert_eq!(
        count(&env, &db.name, "SELECT count(free) FROM week.disk").await,
        1
    );

    // No bucket; too large.
    let none = post_any(&write(String::new()), "cpu v=1")
        .await
        .expect("write");
    assert_eq!(
        (none.status, error_of(&none.body)["code"].clone()),
        (400, json!("invalid"))
    );
    let big = post_any(&write(format!("bucket={}", db.name)), "x".repeat(5000))
        .await
        .expect("write");
    assert_eq!(big.status, 413);
    assert_eq!(error_of(&big.body)["code"], json!("request too large"));
    shutdown.trigger();

    // An unknown bucket, where the gateway may not create databases.
    let (strict, shutdown) =
        spawn_gateway(env.config(&[("TRIDENT_GATEWAY_CREATE_DATABASES", "false")])).await;
    let missing = post_any(
        &format!("{strict}/api/v2/write?org=any&bucket=no_such_bucket_here"),
        "cpu v=1",
    )
    .await
    .expect("write");
    assert_eq!(missing.status, 404, "{}", missing.body);
    let e = error_of(&missing.body);
    assert_eq!(e["code"], json!("not found"));
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_bucket_here")),
        "{e}"
    );
    shutdown.trigger();
}
