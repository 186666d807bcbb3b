//! Differential test against a real InfluxDB 1.x node: for each body, the
//! status and error text a plain node answers equal what
//! `trident_line_protocol::compat::write_outcome` predicts from Trident's
//! parse of the same bytes. This is the wording the gateway will answer in.
//!
//! Left out on purpose (Trident is stricter, see docs/decisions.md): bodies
//! that are not UTF-8, `\r\n` endings, `_field`/`_measurement` keys, and
//! string values over 64 KiB.

use trident_e2e::{InfluxDb, StackEnv};
use trident_line_protocol::compat::write_outcome;
use trident_line_protocol::parse_lines;

const BODIES: &[&str] = &[
    "",
    "# only a comment\n\n",
    "cpu,host=a,region=eu usage=1.5,count=3i,up=true,msg=\"ok\" 1700000000000000000\n",
    "cpu v=1 1\ncpu v=oops 2\ncpu v=3 3\n",
    "cpu v=oops 2\ncpu,host v=1 3\n",
    "cpu v=1 1\ncpu v=oops 2\ncpu,host v=3 3\n",
    ",t=1 v=1",
    "cpu",
    "cpu,host=a",
    "cpu, v=1",
    "cpu,=a v=1",
    "cpu,host v=1",
    "cpu,host= v=1",
    "cpu,host=a=b v=1",
    "cpu,a=1,a=2 v=1",
    "cpu,b=1,a=2,b=3 v=1",
    "cpu =1",
    "cpu a=1,=2",
    "cpu a=1,",
    "cpu a=",
    "cpu a=1,b",
    "cpu a=1.2.3",
    "cpu a=1x",
    "cpu a=1u",
    "cpu a=-1u",
    "cpu a=9223372036854775808i",
    "cpu a=-9223372036854775809i",
    "cpu a=1e400",
    "cpu a=yes",
    "cpu a=\"open",
    "cpu v=1 12a",
    "cpu v=1 1 x",
    "cpu v=1 99999999999999999999",
    "cpu v=1 9223372036854775807",
    "cpu time=1",
    "cpu,time=x v=1",
    "cpu v=1 1\ncpu time=2 2\ncpu,time=x v=3 3\n",
    "cpu v=1 1\ncpu v=oops 2\ncpu time=2 2\n",
    "  cpu v=oops 1",
    "cpu v=1,v=oops",
    "c\\ pu,t\\,k=v\\ x f\\=1=1,s=\"a\\\"b\" 5\n",
    "cpu a=1,a=2 6\n",
    "cpu s=\"line\nbreak\" 7\n",
];

#[tokio::test]
async fn a_real_node_answers_what_compat_predicts() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let db = InfluxDb::create(&env).await.expect("database");
    let url = format!("{}/write", env.influx_urls[0]);
    let client = trident_e2e::http();
    let mut mismatches = Vec::new();
    for body in BODIES {
        let resp = client
            .post(&url)
            .query(&[("db", db.name.as_str())])
            .body(body.to_string())
            .send()
            .await
            .expect("write");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let theirs = if text.is_empty() {
            None
        } else {
            let json: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
            json["error"].as_str().map(str::to_owned)
        };
        let results: Vec<_> = parse_lines(body.as_bytes()).collect();
        let ours = write_outcome(body.as_bytes(), &results);
        if (ours.status, &ours.error) != (status, &theirs) {
            mismatches.push(format!(
                "{body:?}\n  1.x:   {status} {theirs:?}\n  ours:  {} {:?}",
                ours.status, ours.error
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Request-level refusals (before any line is read) answer like a real
/// node: missing database, bad consistency, a body that is not gzip.
#[tokio::test]
async fn request_errors_match_a_real_node() {
    use ingest_gateway::http::request::{decode_body, v1_target};

    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let db = InfluxDb::create(&env).await.expect("database");
    let url = format!("{}/write", env.influx_urls[0]);
    let cases: Vec<(Vec<(String, String)>, bool)> = vec![
        (vec![], false),
        (
            vec![
                ("db".into(), db.name.clone()),
                ("consistency".into(), "bad".into()),
            ],
            false,
        ),
        (vec![("db".into(), db.name.clone())], true),
    ];
    for (query, gzip) in cases {
        let mut request = trident_e2e::http().post(&url).query(&query).body("cpu v=1");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let resp = request.send().await.expect("write");
        let status = resp.status().as_u16();
        let json: serde_json::Value =
            serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
        let ours = v1_target(&query).and_then(|_| decode_body(b"cpu v=1", gzip, 1 << 20));
        let err = ours.expect_err("a refusal");
        assert_eq!(
            (err.status(), err.to_string()),
            (
                status,
                json["error"].as_str().unwrap_or_default().to_owned()
            ),
            "{query:?} gzip={gzip}"
        );
    }
}
