//! `docker-compose.yml` cannot run on a machine without a Docker engine, so
//! this checks what can be checked without one: it parses, declares every
//! server and service, wires dependencies to services that exist, and hands
//! each Trident service an environment its own config loader accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value;
use trident_service::config::{Config, Service};

fn root() -> PathBuf {
    trident_e2e::repo_root()
}

fn compose() -> BTreeMap<String, Value> {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("read compose file");
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("merge keys resolve");
    let services = doc["services"].as_mapping().expect("services map").clone();
    services
        .into_iter()
        .map(|(k, mut v)| {
            v.apply_merge().expect("merge keys resolve");
            (k.as_str().expect("service name").to_owned(), v)
        })
        .collect()
}

fn image(service: &Value) -> &str {
    service["image"].as_str().unwrap_or_default()
}

#[test]
fn every_server_is_declared_with_the_expected_image() {
    let services = compose();
    assert!(image(&services["kafka"]).starts_with("apache/kafka:"));
    for n in 1..=3 {
        assert_eq!(image(&services[&format!("influxdb{n}")]), "influxdb:1.8");
    }
    assert!(image(&services["clickhouse"]).starts_with("clickhouse/clickhouse-server:"));
    assert!(image(&services["alertmanager"]).starts_with("prom/alertmanager:"));
    for server in [
        "kafka",
        "influxdb1",
        "influxdb2",
        "influxdb3",
        "clickhouse",
        "alertmanager",
    ] {
        assert!(
            services[server]["healthcheck"]["test"].is_sequence(),
            "{server} has a health check"
        );
    }
    // KRaft: no ZooKeeper anywhere.
    assert!(!services.keys().any(|k| k.contains("zookeeper")));
}

#[test]
fn dependencies_name_declared_services() {
    let services = compose();
    for (name, service) in &services {
        if let Some(deps) = service["depends_on"].as_mapping() {
            for dep in deps.keys() {
                let dep = dep.as_str().expect("dependency name");
                assert!(
                    services.contains_key(dep),
                    "{name} depends on undeclared {dep}"
                );
            }
        }
    }
}

/// The four Trident services: built by the one Dockerfile, started with
/// their own binary, health-checked, and configured by an environment that
/// their configuration loader accepts and validates.
#[test]
fn trident_services_are_built_configured_and_checked() {
    let services = compose();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let cases = [
        (
            "gateway",
            "ingest-gateway",
            "trident-gateway",
            Service::Gateway,
        ),
        (
            "downsampler",
            "downsampler",
            "trident-downsampler",
            Service::Downsampler,
        ),
        ("alerter", "alerter", "trident-alerter", Service::Alerter),
        ("writer", "writer", "trident-writer", Service::Writer),
    ];
    for (name, crate_dir, binary, kind) in cases {
        let service = &services[name];
        assert_eq!(
            service["build"]["dockerfile"].as_str(),
            Some("Dockerfile"),
            "{name}"
        );
        assert_eq!(service["command"][0].as_str(), Some(binary), "{name}");
        let manifest = std::fs::read_to_string(root().join(crate_dir).join("Cargo.toml"))
            .expect("crate manifest");
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{crate_dir} builds {binary}"
        );
        assert!(
            dockerfile.contains(&format!("/release/{binary}")),
            "Dockerfile copies {binary}"
        );
        assert!(
            service["healthcheck"]["test"].is_sequence(),
            "{name} health check"
        );

        let env: Vec<(String, String)> = service["environment"]
            .as_mapping()
            .expect("environment map")
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .expect("scalar")
                        .trim()
                        .to_owned(),
                };
                (k.as_str().expect("variable name").to_owned(), value)
            })
            .collect();
        // The file TRIDENT_CONFIG names, as the service mounts it from
        // the repository.
        let file = env
            .iter()
            .find(|(k, _)| k == "TRIDENT_CONFIG")
            .map(|(_, inside)| {
                mounted(service, inside).unwrap_or_else(|| {
                    panic!("{name}: {inside} is not mounted from the repository")
                })
            });
        let config = Config::load_with_env(
            file.as_deref(),
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .unwrap_or_else(|e| panic!("{name}: environment is not valid config: {e}"));
        config
            .validate(kind)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The repository file a service mounts (`./path:inside[:ro]`) at `inside`.
fn mounted(service: &Value, inside: &str) -> Option<PathBuf> {
    service["volumes"].as_sequence()?.iter().find_map(|v| {
        let mut parts = v.as_str()?.split(':');
        let (host, target) = (parts.next()?, parts.next()?);
        (target == inside && host.starts_with("./")).then(|| root().join(&host[2..]))
    })
}

/// The sample traffic scripts/run sends, sent the same way once the
/// gateway is healthy, by a load generator the image holds; and the
/// writer has its mapping for it.
#[test]
fn sample_traffic_follows_a_healthy_gateway() {
    let services = compose();
    let sample = &services["sample-traffic"];
    let command: Vec<&str> = sample["command"]
        .as_sequence()
        .expect("command list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command.first(), Some(&"trident-loadgen"));
    assert!(
        command.contains(&"http://gateway:8086/write?db=telegraf"),
        "{command:?}"
    );
    assert!(command.contains(&"--recent"), "{command:?}");
    assert_eq!(
        sample["depends_on"]["gateway"]["condition"].as_str(),
        Some("service_healthy")
    );
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    assert!(
        dockerfile.contains("-p trident-loadgen")
            && dockerfile.contains("/release/trident-loadgen")
    );
    let file = mounted(&services["writer"], "/etc/trident/trident.toml").expect("writer config");
    let config = Config::load_with_env(Some(&file), [("TRIDENT_CLICKHOUSE_URL", "http://c:8123")])
        .expect("config");
    assert!(
        config
            .writer
            .mappings
            .iter()
            .any(|m| m.measurement == "http_requests"),
        "the writer maps the sample's http_requests"
    );
}
