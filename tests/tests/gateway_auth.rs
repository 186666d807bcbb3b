//! Authentication answered as a real InfluxDB 1.x node with
//! `auth-enabled = true` answers: the same requests (missing, malformed,
//! wrong and right credentials from every place a client puts them; users
//! with and without the grant) sent to such a node (a private stack) and
//! to a gateway with the same users get the same status, body and
//! `WWW-Authenticate` challenge.

use ingest_gateway::http::auth::hash_password;
use trident_e2e::{InfluxDb, PrivateStack, StackEnv, unique_name};
use trident_service::config::{AuthConfig, Config, Service, UserConfig};

async fn admin_query(node: &str, q: &str, user: Option<(&str, &str)>) {
    let mut request = trident_e2e::http()
        .post(format!("{node}/query"))
        .query(&[("q", q)]);
    if let Some((u, p)) = user {
        request = request.basic_auth(u, Some(p));
    }
    let resp = request.send().await.expect("query");
    assert!(resp.status().is_success(), "{q}: {}", resp.status());
}

/// (status, body, whether a WWW-Authenticate challenge came).
async fn ask(
    url: &str,
    query: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String, bool) {
    let mut request = trident_e2e::http()
        .post(format!("{url}/write{query}"))
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    let challenge = resp.headers().contains_key("www-authenticate");
    (status, resp.text().await.unwrap_or_default(), challenge)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_answers_are_those_of_an_auth_enabled_node() {
    let shared = StackEnv::load().expect("stack env (scripts/stack up)");
    let private = PrivateStack::up_with(&[], &[("TRIDENT_STACK_INFLUX_AUTH", "true")])
        .expect("a stack with auth-enabled nodes");
    let node = private.env.influx_urls[0].clone();

    // The same users and grants on both sides.
    let cluster_db = InfluxDb::create(&shared).await.expect("database");
    let db = cluster_db.name.clone();
    let other = unique_name("other");
    let admin = Some(("admin", "adm"));
    admin_query(
        &node,
        "CREATE USER admin WITH PASSWORD 'adm' WITH ALL PRIVILEGES",
        None,
    )
    .await;
    for q in [
        format!("CREATE DATABASE {db}"),
        format!("CREATE DATABASE {other}"),
        "CREATE USER w WITH PASSWORD 'wp'".to_owned(),
        "CREATE USER r WITH PASSWORD 'rp'".to_owned(),
        format!("GRANT WRITE ON {db} TO w"),
        format!("GRANT READ ON {db} TO r"),
    ] {
        admin_query(&node, &q, admin).await;
    }
    let user = |name: &str, password: &str, is_admin: bool, write: Vec<String>| UserConfig {
        name: name.to_owned(),
        password_hash: hash_password(password).expect("hash"),
        admin: is_admin,
        write,
        read: vec![db.clone()],
    };
    let mut config = Config::load_with_env(
        None,
        shared.vars.clone().into_iter().chain([(
            "TRIDENT_GATEWAY_SPOOL_DIR".to_owned(),
            std::env::temp_dir()
                .join(unique_name("spool"))
                .to_string_lossy()
                .into_owned(),
        )]),
    )
    .expect("config");
    config.gateway.auth = AuthConfig {
        enabled: true,
        users: vec![
            user("admin", "adm", true, vec![]),
            user("w", "wp", false, vec![db.clone()]),
            user("r", "rp", false, vec![]),
        ],
    };
    config.validate(Service::Gateway).expect("valid config");
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config).await;

    let on_db = format!("?db={db}");
    let on_other = format!("?db={other}");
    let w = basic("w", "wp");
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        ("no credentials", on_db.clone(), None, "m v=1 1"),
        ("no credentials, no db", String::new(), None, "m v=1 1"),
        (
            "wrong password (Basic)",
            on_db.clone(),
            Some(basic("w", "bad")),
            "m v=1 1",
        ),
        (
            "unknown user (Basic)",
            on_db.clone(),
            Some(basic("nobody", "x")),
            "m v=1 1",
        ),
        (
            "wrong password (u/p)",
            format!("{on_db}&u=w&p=bad"),
            None,
            "m v=1 1",
        ),
        (
            "unreadable Basic header",
            on_db.clone(),
            Some("Basic !!!".to_owned()),
            "m v=1 1",
        ),
        (
            "read-only user",
            on_db.clone(),
            Some(basic("r", "rp")),
            "m v=1 1",
        ),
        (
            "read-only user, bad line",
            on_db.clone(),
            Some(basic("r", "rp")),
            "m v=",
        ),
        (
            "no grant on that db",
            on_other.clone(),
            Some(w.clone()),
            "m v=1 1",
        ),
        ("granted", on_db.clone(), Some(w.clone()), "m v=1 2"),
        ("granted, bad line", on_db.clone(), Some(w.clone()), "m v="),
        ("granted, no db", String::new(), Some(w.clone()), "m v=1 3"),
        (
            "u/p win over the header",
            format!("{on_db}&u=w&p=wp"),
            Some(basic("w", "bad")),
            "m v=1 4",
        ),
        (
            "admin",
            on_db.clone(),
            Some(basic("admin", "adm")),
            "m v=1 5",
        ),
    ];
    for (what, query, authorization, body) in &cases {
        let theirs = ask(&node, query, authorization.as_deref(), body).await;
        let ours = ask(&gateway, query, authorization.as_deref(), body).await;
        assert_eq!(ours, theirs, "{what}");
    }
    // 1.8's Token scheme (the node here is older than that).
    let token = ask(&gateway, &on_db, Some("Token w:wp"), "m v=1 6").await;
    assert_eq!(token.0, 204, "{token:?}");
    let token = ask(&gateway, &on_db, Some("Token w:bad"), "m v=1 7").await;
    assert_eq!((token.0, token.2), (401, true), "{token:?}");

    // The v2 API takes the same users through `Authorization: Token
    // user:password` (1.8's compatibility form), answering in 2.x's shape.
    let v2 = |authorization: Option<&'static str>, body: &'static str| {
        let mut request = trident_e2e::http()
            .post(format!("{gateway}/api/v2/write?org=any&bucket={db}"))
            .body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move {
            let resp = request.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let (status, text) = v2(Some("Token w:wp"), "m v=1 8").await;
    assert_eq!(status, 204, "{text}");
    for (authorization, what) in [
        (Some("Token w:bad"), "a wrong password"),
        (None, "no credentials"),
    ] {
        let (status, text) = v2(authorization, "m v=1 9").await;
        assert_eq!(status, 401, "{what}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(json["code"], "unauthorized", "{what}: {text}");
    }
    let (status, text) = v2(Some("Token r:rp"), "m v=1 10").await;
    assert_eq!(status, 403, "a user without the write grant: {text}");
    shutdown.trigger();
}
