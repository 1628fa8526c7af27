//! HTTP adapter: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz` (readiness),
//! and, when `api.enabled`, the admin and query API under `/v1` ([`crate::api`]).
//!
//! Kept separate from the pipeline: the API is one more router here, not a change to the
//! processing loop. Health and metrics answer without credentials; everything under `/v1`
//! requires a bearer token.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::api::Api;
use crate::telemetry::{Health, Metrics};

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// The router, separate from serving so tests can drive it without a socket.
pub fn router(metrics: Metrics, health: Health, api: Option<&Api>) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    match api {
        Some(api) => base.merge(api.router()),
        None => base,
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    // Readiness is sampled at scrape time, so `mailguard_ready` is what /readyz says right now.
    s.metrics.observe_health(&s.health);
    s.metrics.http_request("metrics", 200);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let answer = if s.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failed\n")
    };
    s.metrics.http_request("healthz", answer.0.as_u16());
    answer
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let answer = if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    };
    s.metrics.http_request("readyz", answer.0.as_u16());
    answer
}

/// Bind `listen` and return the bound address (port 0 picks a free one) and the serving future,
/// which ends when `shutdown` completes.
pub async fn bind(
    listen: &str,
    metrics: Metrics,
    health: Health,
    api: Option<&Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(metrics, health, api);
    Ok((addr, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }))
}
