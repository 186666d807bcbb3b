//! The `/health` and `/metrics` routes every service serves: the gateway
//! merges them into its API router, the other services serve them alone on
//! their `admin_listen` address.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::health::{Health, Status};
use crate::{Error, Result};

#[derive(Debug, Clone)]
struct AdminState {
    health: Health,
    metrics: PrometheusHandle,
}

/// `GET /health` (200 when up or degraded, 503 when down, JSON body) and
/// `GET /metrics` (Prometheus text format).
pub fn router(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { health, metrics })
}

async fn health_handler(State(state): State<AdminState>) -> Response {
    let report = state.health.report();
    let code = if report.status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(report)).into_response()
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Listens on `addr`, the value of configuration key `key` (named in the
/// error when the address is taken or not allowed).
pub async fn bind(addr: std::net::SocketAddr, key: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve {
            addr: format!("{addr} ({key})"),
            source,
        })
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_is_json_and_503_when_down() {
        let health = Health::new("svc", "1.2.3");
        let app = router(health.clone(), crate::telemetry::metrics().unwrap());
        let resp = app
            .clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["service"], "svc");
        assert_eq!(json["status"], "up");

        health.set("node", Status::Down, "refused");
        let resp = app
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn metrics_renders_what_was_recorded() {
        let handle = crate::telemetry::metrics().unwrap();
        metrics::counter!("trident_test_things_total", "outcome" => "ok").increment(3);
        let app = router(Health::new("svc", "0"), handle);
        let resp = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("trident_test_things_total{outcome=\"ok\"} 3"),
            "{text}"
        );
    }
}
