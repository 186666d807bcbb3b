//! The InfluxDB-compatible HTTP API: `/write`, `/api/v2/write`, `/query`, `/ping`,
//! plus `/health` and `/metrics` from the shared admin routes.
//!
//! A write is answered only after every accepted line was stored or
//! spooled on disk by both required sinks (see [`crate::fanout`]); its status and error text are what an
//! InfluxDB 1.x server answers for the same body
//! ([`trident_line_protocol::compat`]).

pub mod auth;
mod query;
pub mod request;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use trident_line_protocol::{Lines, ParseOptions, compat};

use crate::fanout::Routed;
use crate::fanout::alerts::AlertSink;
use crate::fanout::influx::{ClusterSink, SinkError};
use crate::fanout::kafka::RawSink;
use request::{RequestError, WriteTarget, credentials, decode_body_within, v1_target, v2_target};
use trident_influx_client::Error as NodeError;

/// The version the gateway reports in `X-Influxdb-Version`.
pub const INFLUXDB_VERSION: &str = "1.8.10-trident";

/// What every handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The InfluxDB cluster.
    pub cluster: ClusterSink,
    /// The raw topic.
    pub raw: RawSink,
    /// The alert topic.
    pub alerts: AlertSink,
    /// Largest body, also after inflation.
    pub max_body_bytes: usize,
    /// Users and grants; `None`: anyone may write.
    pub auth: Option<auth::Auth>,
    /// Permits for writes in progress (`gateway.max_inflight_writes`).
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// One permit per byte of request bodies held
    /// (`gateway.max_inflight_bytes`).
    pub inflight_bytes: Arc<tokio::sync::Semaphore>,
    /// Whether a 2xx vouches for the InfluxDB cluster (`gateway.required`).
    pub influx_required: bool,
    /// Whether a 2xx vouches for the raw topic.
    pub kafka_required: bool,
}

/// A sink that is not required could not take a write: logged and
/// counted, the write goes on.
fn unrequired_failure(sink: &'static str, e: &dyn std::fmt::Display) {
    metrics::counter!("trident_gateway_sink_failures_total", "sink" => sink).increment(1);
    tracing::warn!(sink, error = %e, "a sink that gateway.required leaves out did not take a write");
}

/// The API routes (without `/health` and `/metrics`).
pub fn router(state: AppState) -> Router {
    // Shared, not cloned per request: the sinks hold maps and strings.
    let state = Arc::new(state);
    Router::new()
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/query", get(query::query).post(query::query))
        .route("/ping", get(ping).head(ping))
        .with_state(state)
        .layer(axum::middleware::map_response(influx_headers))
}

async fn influx_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "x-influxdb-version",
        HeaderValue::from_static(INFLUXDB_VERSION),
    );
    headers.insert("x-influxdb-build", HeaderValue::from_static("OSS"));
    response
}

/// `/ping`: 204, or 200 with the version for any `verbose` but empty,
/// `0` and `false` (as 1.x reads the first `verbose`).
async fn ping(Query(query): Query<Vec<(String, String)>>) -> Response {
    let verbose = query
        .iter()
        .find(|(k, _)| k == "verbose")
        .is_some_and(|(_, v)| !matches!(v.as_str(), "" | "0" | "false"));
    if verbose {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "version": INFLUXDB_VERSION })),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Which write API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/write`: InfluxDB 1.x answers, partial writes.
    V1,
    /// `/api/v2/write`: InfluxDB 2.x answers — a body with a line that
    /// does not parse is refused whole (400), points storage refuses are
    /// 422, errors are `{"code":…,"message":…}`.
    V2,
}

async fn write_v1(
    State(state): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write(&state, &query, v1_target(&query), &headers, body, Api::V1).await
}

async fn write_v2(
    State(state): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = write(&state, &query, v2_target(&query), &headers, body, Api::V2).await;
    v2_answer(response).await
}

/// InfluxDB 2.x's name for an error status, as its API documents them.
fn v2_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        413 => "request too large",
        422 => "unprocessable entity",
        429 => "too many requests",
        503 => "unavailable",
        _ => "internal error",
    }
}

/// A 1.x error answer rewritten as 2.x writes it: `{"code","message"}`,
/// status and headers kept.
async fn v2_answer(response: Response) -> Response {
    let status = response.status();
    if status.is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let json = serde_json::json!({ "code": v2_code(status), "message": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json))
}

/// `{"error":"..."}` byte for byte as InfluxDB writes it: Go's JSON
/// encoder escapes `<`, `>`, `&`, U+2028 and U+2029, and ends with a newline.
fn error_json(message: &str) -> String {
    let mut json = serde_json::json!({ "error": message })
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    json.push('\n');
    json
}

fn error_body(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_json(message),
    )
        .into_response()
}

fn request_error(e: &RequestError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    metrics::counter!("trident_gateway_requests_total", "outcome" => "refused").increment(1);
    metrics::counter!("trident_gateway_refused_requests_total", "reason" => e.reason())
        .increment(1);
    if let RequestError::BodyTooLarge { limit } = e {
        tracing::info!(
            limit,
            "write refused: its body is over gateway.max_body_bytes"
        );
    }
    error_body(status, &e.to_string())
}

/// 503 with `Retry-After`: nothing is lost, the client must send again.
fn unavailable(message: &str) -> Response {
    let mut response = error_body(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// 401/403 as InfluxDB words them, 401 with its challenge header.
fn auth_error(e: &auth::AuthError) -> Response {
    metrics::counter!("trident_gateway_requests_total", "outcome" => "unauthorized").increment(1);
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = error_body(status, &e.to_string());
    if e.challenge() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"InfluxDB\""),
        );
    }
    response
}

/// The user the request's credentials prove (`None` with auth off), or
/// InfluxDB's 401.
async fn authenticated(
    state: &AppState,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    let Some(auth) = &state.auth else {
        return Ok(None);
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Ok(presented) = credentials(query, authorization) else {
        return Err(auth_error(&auth::AuthError::Unparsable));
    };
    auth.authenticate(presented)
        .await
        .map(Some)
        .map_err(|e| auth_error(&e))
}

async fn write(
    state: &AppState,
    query: &[(String, String)],
    target: Result<WriteTarget, RequestError>,
    headers: &HeaderMap,
    body: Body,
    api: Api,
) -> Response {
    // Overload: a bounded number of writes at once; the rest back off.
    let Ok(_permit) = state.inflight.clone().try_acquire_owned() else {
        metrics::counter!("trident_gateway_requests_total", "outcome" => "overloaded").increment(1);
        return unavailable(
            "the gateway is overloaded: too many writes in progress (gateway.max_inflight_writes); retry later",
        );
    };
    // InfluxDB's order: who is asking (401), what is asked (400), whether
    // they may (403), then the body.
    let user = match authenticated(state, query, headers).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => return request_error(&e),
    };
    if let (Some(auth), Some(user)) = (&state.auth, &user)
        && let Err(e) = auth.authorize_write(user, &target.db)
    {
        return auth_error(&e);
    }
    // Read one byte more than allowed, to tell "at the limit" from "over".
    let raw = match axum::body::to_bytes(body, state.max_body_bytes + 1).await {
        Ok(raw) => raw,
        Err(_) => {
            return request_error(&RequestError::BodyTooLarge {
                limit: state.max_body_bytes,
            });
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    // Overload in bytes: many large writes at once must not exhaust memory.
    // The body as received, then what it inflates to as it grows (an
    // uncompressed body is held once: decoding does not copy it).
    let too_many_bytes = || {
        metrics::counter!("trident_gateway_requests_total", "outcome" => "overloaded").increment(1);
        unavailable(&RequestError::InflightBytes.to_string())
    };
    let budget = &state.inflight_bytes;
    let take = |bytes: usize| {
        u32::try_from(bytes)
            .ok()
            .and_then(|n| budget.clone().try_acquire_many_owned(n).ok())
    };
    let Some(mut held) = take(raw.len()) else {
        return too_many_bytes();
    };
    let body = match decode_body_within(&raw, gzip, state.max_body_bytes, |more| {
        take(more).map(|permit| held.merge(permit)).is_some()
    }) {
        Ok(body) => body,
        Err(RequestError::InflightBytes) => return too_many_bytes(),
        Err(e) => return request_error(&e),
    };
    let options = ParseOptions {
        precision: target.precision,
        // Every replica must store the same point: fix the time now.
        default_time: Some(now_nanos()),
        ..ParseOptions::default()
    };
    // Good lines and errors kept apart as they are parsed. Sized for
    // lines of 128 bytes on average: Telegraf's are longer, so a large
    // write is not copied as its vector grows.
    let mut lines = Vec::with_capacity(body.len() / 128 + 16);
    let mut errors = Vec::new();
    for parsed in Lines::new(&body, options) {
        match parsed {
            Ok(line) => lines.push(line),
            Err(e) => errors.push(e),
        }
    }
    if api == Api::V2
        && let Some(e) = errors
            .iter()
            .find(|e| compat::storage_refusal(&body, e).is_none())
    {
        // 2.x: "All request data was rejected and not written."
        metrics::counter!("trident_gateway_requests_total", "outcome" => "refused").increment(1);
        return error_body(StatusCode::BAD_REQUEST, &compat::unparsable(&body, e));
    }
    let outcome = compat::outcome_of(&body, lines.len(), &errors);
    // Lines by what became of them: stored (or spooled), or turned away
    // with the whole write (503, or a node's refusal).
    let count_lines = |outcome: &'static str| {
        metrics::counter!("trident_gateway_lines_total", "outcome" => outcome)
            .increment(lines.len() as u64);
    };
    for error in &errors {
        metrics::counter!("trident_gateway_rejected_lines_total", "reason" => error.kind.code())
            .increment(1);
    }
    metrics::counter!("trident_gateway_bytes_total").increment(body.len() as u64);
    if !lines.is_empty() {
        // Both paths run side by side; `gateway.required` says whose
        // failure fails the write.
        let timed = |sink: &'static str, started: std::time::Instant| {
            metrics::histogram!("trident_gateway_delivery_seconds", "sink" => sink)
                .record(started.elapsed().as_secs_f64());
        };
        // One topology version from routing to storing.
        let view = state.cluster.view();
        if let Err(e) = state.cluster.check_database(&view, &target.db).await {
            return cluster_failure(e, api, count_lines);
        }
        let routed = Routed::new(&view.placement, &target.db, &lines);
        // Best effort, never waited for.
        state.alerts.offer(&target, &lines, &routed);
        let started = std::time::Instant::now();
        let (cluster, raw) = tokio::join!(
            async {
                let r = state.cluster.write(&view, &target, &routed).await;
                timed("influx", started);
                r
            },
            async {
                let r = state.raw.write(&target, &routed).await;
                timed("kafka", started);
                r
            }
        );
        let raw = match raw {
            Err(e) if !state.kafka_required => {
                unrequired_failure("kafka", &e);
                Ok(())
            }
            other => other,
        };
        let cluster = match cluster {
            Err(e @ SinkError::Node(NodeError::Unavailable { .. })) if !state.influx_required => {
                unrequired_failure("influx", &e);
                Ok(())
            }
            other => other,
        };
        if let Err(e) = raw {
            count_lines("unavailable");
            metrics::counter!("trident_gateway_requests_total", "outcome" => "failed").increment(1);
            tracing::warn!(error = %e, "write not appended to the raw topic; answered 503");
            return unavailable(&e.to_string());
        }
        if let Err(e) = cluster {
            return cluster_failure(e, api, count_lines);
        }
    }

    count_lines("accepted");
    metrics::counter!("trident_gateway_requests_total", "outcome" => "ok").increment(1);
    match outcome.error {
        None => StatusCode::NO_CONTENT.into_response(),
        // Only points storage refuses are left for v2: 422, the rest written.
        Some(message) if api == Api::V2 => error_body(StatusCode::UNPROCESSABLE_ENTITY, &message),
        Some(message) => error_body(
            StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::BAD_REQUEST),
            &message,
        ),
    }
}

/// The answer to a write the cluster did not store: InfluxDB's 404 for a
/// database that is not there, its 400 (v2: 422) for points storage
/// refused, 503 otherwise.
fn cluster_failure(e: SinkError, api: Api, count_lines: impl Fn(&'static str)) -> Response {
    metrics::counter!("trident_gateway_requests_total", "outcome" => "failed").increment(1);
    count_lines(match e {
        SinkError::Node(NodeError::DatabaseNotFound(_) | NodeError::Refused(_)) => "refused",
        _ => "unavailable",
    });
    match e {
        SinkError::Node(NodeError::DatabaseNotFound(_)) => {
            error_body(StatusCode::NOT_FOUND, &e.to_string())
        }
        SinkError::Node(NodeError::Refused(message)) => {
            // 2.x: the data is well-formed, storage refused it.
            let status = match api {
                Api::V1 => StatusCode::BAD_REQUEST,
                Api::V2 => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error_body(status, &message)
        }
        SinkError::Node(_) | SinkError::Consistency { .. } => {
            tracing::warn!(error = %e, "write not stored; answered 503");
            unavailable(&e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_encoded_like_go() {
        assert_eq!(error_json("a"), "{\"error\":\"a\"}\n");
        assert_eq!(
            error_json("unable to parse 'x<y>&z': \"q\"\u{2028}"),
            "{\"error\":\"unable to parse 'x\\u003cy\\u003e\\u0026z': \\\"q\\\"\\u2028\"}\n"
        );
    }
}
