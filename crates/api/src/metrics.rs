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
use brig_core::metrics::exporter;

use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: requests by route and status, and their latency by route.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// A request's method as a label: the standard ones by name, any other as
/// `other`. Clients choose the method: taken as it came, every new string
/// would be a series kept forever (1,500 requests with 100 kB methods held
/// 146 MiB).
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
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

async fn render(state: &AppState) -> Response {
    let Some(handle) = &state.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    refresh_gauges(state).await;
    exporter::exposition(handle)
}

/// Gauges read from the store at scrape time (best effort: a store that is
/// down leaves them as they were, and counts as a store error).
async fn refresh_gauges(state: &AppState) {
    let store = state.sessions.store();
    match store.list_all().await {
        Ok(sessions) => metrics::gauge!(names::SESSIONS_LIVE).set(sessions.len() as f64),
        Err(_) => metrics::counter!(names::STORE_ERRORS).increment(1),
    }
    if let Ok(spares) = store.pool_members().await {
        metrics::gauge!(names::POOL_SIZE).set(spares.len() as f64);
    }
}

/// Serves `/metrics` on `METRICS_PORT`, if set, with this state's gauges.
pub async fn serve_port(state: &AppState) -> std::io::Result<()> {
    let Some(handle) = state.metrics.clone() else {
        return Ok(());
    };
    let refreshed = state.clone();
    let refresh: exporter::Refresh = std::sync::Arc::new(move || {
        let state = refreshed.clone();
        Box::pin(async move { refresh_gauges(&state).await })
    });
    exporter::serve_port(&state.config.metrics, &state.config.http, handle, Some(refresh)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_from_a_fixed_set() {
        let method = |name: &str| axum::http::Method::from_bytes(name.as_bytes()).unwrap();
        assert_eq!(method_label(&method("GET")), "GET");
        assert_eq!(method_label(&method("DELETE")), "DELETE");
        assert_eq!(method_label(&method("get")), "other");
        assert_eq!(method_label(&method(&"X".repeat(100_000))), "other");
    }
}
