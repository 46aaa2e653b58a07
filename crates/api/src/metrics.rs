//! `/metrics`: Prometheus text from the `metrics` facade (names in
//! `brig_core::metrics`). Served on the API port only with `METRICS_TOKEN`
//! (Bearer), on `METRICS_PORT` (bound to `METRICS_HOST`) when set, and not at
//! all otherwise.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use brig_core::metrics as names;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::state::AppState;

/// Installs the process-wide Prometheus recorder (once; `None` if another is installed).
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ])
        .ok()?
        .install_recorder()
        .ok()
}

/// Middleware: requests by route and status, and their latency by route.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` on the API port: only with the token.
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if state.config.metrics.token.is_none() {
        return Err(ApiError::NotFound("route"));
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.config.metrics.allows(authorization) {
        return Err(ApiError::Unauthorized(
            "metrics need Authorization: Bearer <METRICS_TOKEN>",
        ));
    }
    Ok(render(&state).await)
}

/// `GET /metrics` on `METRICS_PORT`: the token too, if one is set.
pub async fn scrape_port(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if state.config.metrics.token.is_some() && !state.config.metrics.allows(authorization) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    render(&state).await
}

async fn render(state: &AppState) -> Response {
    let Some(handle) = &state.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Gauges read from the store at scrape time (best effort: a store that is
    // down leaves them as they were, and counts as a store error).
    let store = state.sessions.store();
    match store.list_all().await {
        Ok(sessions) => metrics::gauge!(names::SESSIONS_LIVE).set(sessions.len() as f64),
        Err(_) => metrics::counter!(names::STORE_ERRORS).increment(1),
    }
    if let Ok(spares) = store.pool_members().await {
        metrics::gauge!(names::POOL_SIZE).set(spares.len() as f64);
    }
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// The router of `METRICS_PORT`: `/metrics` and nothing else.
pub fn port_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape_port))
        .with_state(state)
}
