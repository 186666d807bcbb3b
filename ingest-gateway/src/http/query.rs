//! `/query`: the InfluxDB 1.x query API over the cluster.
//!
//! ```text
//! q ─parse─► statements ─authorize─► for each: plan (trident-influxql)
//!   Forward     the first owner that answers, in the client's epoch
//!   Fanout      every node at once (epoch=ns) ─► merge; nodes that did not
//!               answer are skipped, and when as many failed as there are
//!               replicas the result says it may be partial
//!   Everywhere  every node; an error names the nodes that missed it
//!   AnyNode     the first node that answers
//! ```
//!
//! Nodes with nothing queued for them (an empty hinted-handoff spool) are
//! asked first, so a node still catching up answers only when it must.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde_json::{Map, Value, json};
use trident_influx_client::statement as run_statement;
use trident_influxql::plan::{Merge, Plan};
use trident_influxql::statement::{Source, StatementKind};
use trident_influxql::time::Epoch;
use trident_influxql::{Statement, merge, parse, plan};

use super::{AppState, auth_error, authenticated, error_body};
use crate::fanout::influx::{ClusterSink, View};

/// What the client asked for besides the statements.
#[derive(Debug, Default)]
struct Params {
    db: Option<String>,
    rp: Option<String>,
    epoch: Option<String>,
    bind: Option<String>,
}

impl Params {
    /// The parameters a node gets for `statement`; `epoch` overrides.
    fn for_node<'a>(
        &'a self,
        statement: &'a str,
        epoch: Option<&'a str>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut out = vec![("q", statement)];
        for (k, v) in [
            ("db", self.db.as_deref()),
            ("rp", self.rp.as_deref()),
            ("epoch", epoch),
            ("params", self.bind.as_deref()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                out.push((k, v));
            }
        }
        out
    }
}

pub(super) async fn query(
    State(state): State<Arc<AppState>>,
    Query(mut params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let Ok(bytes) = axum::body::to_bytes(body, state.max_body_bytes).await else {
            return error_body(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        };
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) {
            Ok(more) => params.extend(more),
            Err(e) => return error_body(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let param = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let user = match authenticated(&state, &params, &headers).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let Some(q) = param("q").filter(|q| !q.trim().is_empty()) else {
        return error_body(StatusCode::BAD_REQUEST, "missing required parameter \"q\"");
    };
    let epoch_param = param("epoch").filter(|e| !e.is_empty());
    let epoch = match Epoch::from_param(epoch_param.as_deref()) {
        Ok(epoch) => epoch,
        Err(e) => return error_body(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let statements = match parse(&q) {
        Ok(statements) => statements,
        Err(e) => return error_body(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let params = Params {
        db: param("db").filter(|d| !d.is_empty()),
        rp: param("rp").filter(|r| !r.is_empty()),
        epoch: epoch_param,
        bind: param("params"),
    };
    if let (Some(auth), Some(user)) = (&state.auth, &user) {
        for s in &statements {
            let db = database_of(s).or(params.db.as_deref());
            let admin_only = s.kind == StatementKind::Everywhere;
            let db = match &s.kind {
                StatementKind::Show(show)
                    if show
                        .node_text
                        .to_ascii_uppercase()
                        .starts_with("SHOW DATABASES") =>
                {
                    None
                }
                _ => db,
            };
            if let Err(e) = auth.authorize_query(user, &s.text, db, admin_only) {
                return auth_error(&e);
            }
        }
    }
    let mut results = Vec::with_capacity(statements.len());
    for (id, s) in statements.iter().enumerate() {
        let started = Instant::now();
        let mut result = execute(&state.cluster, s, &params, epoch).await;
        let outcome = if result.contains_key("error") {
            "error"
        } else {
            "ok"
        };
        metrics::counter!("trident_gateway_statements_total", "outcome" => outcome).increment(1);
        metrics::histogram!("trident_gateway_statement_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut ordered = Map::new();
        ordered.insert("statement_id".into(), Value::from(id));
        ordered.append(&mut result);
        results.push(Value::Object(ordered));
    }
    let chunked = param("chunked").is_some_and(|c| c == "true");
    let body = if chunked {
        results
            .into_iter()
            .map(|r| format!("{}\n", json!({ "results": [r] })))
            .collect::<String>()
    } else {
        format!("{}\n", json!({ "results": results }))
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The database a statement names itself (`FROM db.rp.m`).
fn database_of(s: &Statement) -> Option<&str> {
    match &s.kind {
        StatementKind::Select(select) => select.sources.iter().find_map(|src| match src {
            Source::Measurement { database, .. } => database.as_deref(),
            _ => None,
        }),
        _ => None,
    }
}

/// Node indices, those with nothing queued for them first.
fn preferred(view: &View, among: &[usize]) -> Vec<usize> {
    let mut nodes = among.to_vec();
    nodes.sort_by_key(|&i| view.nodes.get(i).is_some_and(|n| !n.spool.is_empty()));
    nodes
}

fn error(message: impl ToString) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("error".into(), Value::from(message.to_string()));
    m
}

/// The statement's answer: its result object without `statement_id`.
async fn execute(
    cluster: &ClusterSink,
    s: &Statement,
    params: &Params,
    epoch: Epoch,
) -> Map<String, Value> {
    // One topology version for the whole statement.
    let view = cluster.view();
    let placement = &*view.placement;
    let nodes = &placement.topology().nodes;
    let all: Vec<usize> = (0..nodes.len()).collect();
    let plan = match plan(s, placement, params.db.as_deref()) {
        Ok(plan) => plan,
        Err(e) => return error(e),
    };
    match plan {
        Plan::Forward {
            nodes: owners,
            statement,
        } => {
            first_answer(
                cluster,
                &view,
                &preferred(&view, &owners),
                &statement,
                params,
            )
            .await
        }
        Plan::AnyNode { statement } => {
            first_answer(cluster, &view, &preferred(&view, &all), &statement, params).await
        }
        Plan::Everywhere { statement } => {
            let answers = on_all(
                cluster,
                &view,
                &all,
                &statement,
                params,
                params.epoch.as_deref(),
            )
            .await;
            cluster.forget_databases();
            let missed: Vec<String> = answers
                .iter()
                .filter_map(|(i, a)| a.as_ref().err().map(|e| format!("{} ({e})", nodes[*i].id)))
                .collect();
            if !missed.is_empty() {
                return error(format!(
                    "applied on {} of {} nodes; not on {}: run the statement again once they are back",
                    answers.len() - missed.len(),
                    answers.len(),
                    missed.join(", ")
                ));
            }
            match answers
                .into_iter()
                .find_map(|(_, a)| a.ok().filter(|a| a.get("error").is_some()))
            {
                Some(Value::Object(mut refused)) => {
                    refused.remove("statement_id");
                    refused
                }
                _ => Map::new(),
            }
        }
        Plan::Fanout {
            statement,
            merge: how,
        } => {
            // During a move, the old side: the new one may hold partial
            // copies, which would win over whole series when replicas collapse.
            let order = preferred(&view, &placement.read_nodes());
            let answers = on_all(cluster, &view, &order, &statement, params, Some("ns")).await;
            let mut ok = Vec::new();
            let mut answered = Vec::new();
            let mut failed = Vec::new();
            for (i, a) in answers {
                match a {
                    Ok(a) => {
                        if let Some(e) = a.get("error").and_then(Value::as_str) {
                            return error(e);
                        }
                        ok.push(a);
                        answered.push(i);
                    }
                    Err(trident_influx_client::Error::Refused(e)) => return error(e),
                    Err(e) => failed.push(format!("{} ({e})", nodes[i].id)),
                }
            }
            // A series counts only where it is owned: a node a move left a
            // stale copy on is not asked for it.
            let db = database_of(s).or(params.db.as_deref());
            let owns = |answer: usize, measurement: &str, tags: &BTreeMap<String, String>| {
                let (Some(db), Some(&node)) = (db, answered.get(answer)) else {
                    return true;
                };
                placement
                    .read_owners(placement.series_hash(db, measurement, tags))
                    .contains(node)
            };
            // first()/last() across series: the same nodes' raw points.
            let mut points = Vec::new();
            if let Merge::Aggregate {
                points: Some(p), ..
            } = &how
            {
                let raw = on_all(cluster, &view, &answered, &p.statement, params, Some("ns")).await;
                for (i, a) in raw {
                    match a {
                        Ok(a) if a.get("error").is_none() => points.push(a),
                        Ok(a) => return error(a["error"].as_str().unwrap_or_default()),
                        Err(e) => {
                            return error(format!(
                                "node {} answered the aggregate but not its points: {e}",
                                nodes[i].id
                            ));
                        }
                    }
                }
            }
            let series = match merge(&how, &ok, &points, epoch, &owns) {
                Ok(series) => series,
                Err(e) => return error(e),
            };
            let mut result = Map::new();
            if !series.is_empty() {
                result.insert("series".into(), Value::Array(series));
            }
            if !failed.is_empty() {
                tracing::warn!(nodes = %failed.join(", "), "nodes did not answer a query");
            }
            if failed.len() >= placement.topology().replication {
                metrics::counter!("trident_gateway_partial_results_total").increment(1);
                result.insert("partial".into(), Value::Bool(true));
                result.insert(
                    "messages".into(),
                    json!([{
                        "level": "warning",
                        "text": format!(
                            "results may be partial: {} of {} nodes did not answer ({}), and data can live on those nodes alone (replication {})",
                            failed.len(),
                            order.len(),
                            failed.join(", "),
                            placement.topology().replication
                        )
                    }]),
                );
            }
            result
        }
    }
}

/// Runs `statement` on every node of `order` at once; answers in `order`.
async fn on_all(
    cluster: &ClusterSink,
    view: &View,
    order: &[usize],
    statement: &str,
    params: &Params,
    epoch: Option<&str>,
) -> Vec<(usize, Result<Value, trident_influx_client::Error>)> {
    let nodes = &view.placement.topology().nodes;
    let calls = order.iter().map(|&i| {
        let node_params = params.for_node(statement, epoch);
        async move {
            let answer = run_statement(cluster.client(), &nodes[i].url, &node_params).await;
            (i, answer)
        }
    });
    futures_util::future::join_all(calls).await
}

/// The answer of the first node of `order` that answers.
async fn first_answer(
    cluster: &ClusterSink,
    view: &View,
    order: &[usize],
    statement: &str,
    params: &Params,
) -> Map<String, Value> {
    let nodes = &view.placement.topology().nodes;
    let mut missed = Vec::new();
    for &i in order {
        let node_params = params.for_node(statement, params.epoch.as_deref());
        match run_statement(cluster.client(), &nodes[i].url, &node_params).await {
            Ok(Value::Object(mut answer)) => {
                answer.remove("statement_id");
                return answer;
            }
            Ok(other) => return error(format!("node {} answered {other}", nodes[i].id)),
            Err(trident_influx_client::Error::Refused(e)) => return error(e),
            Err(e) => missed.push(format!("{} ({e})", nodes[i].id)),
        }
    }
    error(format!(
        "no node that holds this data answered: {}",
        missed.join(", ")
    ))
}
