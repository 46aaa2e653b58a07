//! The router: one file per resource.

pub(crate) mod contexts;
pub(crate) mod execute;
pub(crate) mod execute_stream;
pub(crate) mod execution_attach;
pub(crate) mod execution_output;
pub(crate) mod executions;
pub(crate) mod files;
pub(crate) mod forwarding;
pub(crate) mod generate;
pub(crate) mod health;
pub(crate) mod nodes;
pub mod openapi;
pub(crate) mod sessions;
pub(crate) mod snapshots;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Request};
use axum::routing::{get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

pub use crate::views::{ExecuteBody, ExecuteResponse};

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let rules = state.rules.current();
    let languages = rules.runnable_languages(&state.config.languages);
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(state.clone(), &languages))
        .layer(axum::middleware::from_fn_with_state(body_limit, crate::mcp::protocol))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::authenticate,
        ));
    Router::new()
        .merge(mcp)
        .route("/execute", post(execute::execute))
        .route("/generate", post(generate::generate))
        .route("/generate-and-execute", post(generate::generate_and_execute))
        .route("/executions", post(executions::start))
        .route("/executions/{execution_id}", get(executions::get))
        .route("/executions/{execution_id}/cancel", post(executions::cancel))
        .route("/executions/{execution_id}/output", get(execution_output::output))
        .route("/executions/{execution_id}/events", get(execution_output::events))
        .route("/executions/{execution_id}/stdin", post(executions::stdin))
        .route("/executions/{execution_id}/signal", post(executions::signal))
        .route("/executions/{execution_id}/resize", post(execution_attach::resize))
        .route("/executions/{execution_id}/attach", get(execution_attach::attach))
        .route("/sessions/{session_id}/executions", get(executions::of_session))
        .route("/sessions/{session_id}/contexts", post(contexts::create))
        .route("/contexts/{context_id}/run", post(contexts::run))
        .route("/contexts/{context_id}/interrupt", post(contexts::interrupt))
        .route("/contexts/{context_id}", axum::routing::delete(contexts::delete))
        .route("/sessions", post(sessions::create).get(sessions::list))
        .route("/sessions/{session_id}", get(sessions::get).delete(sessions::delete))
        .route("/sessions/{session_id}/suspend", post(sessions::suspend))
        .route("/sessions/{session_id}/renew", post(sessions::renew))
        .route(
            "/sessions/{session_id}/network",
            get(sessions::get_network).put(sessions::put_network),
        )
        .route("/sessions/{session_id}/files", get(files::list))
        .route("/sessions/{session_id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route(
            "/snapshots/{snapshot_id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route(
            "/sessions/{session_id}/archive",
            get(files::get_archive).put(files::put_archive),
        )
        .route(
            "/sessions/{session_id}/files/{*path}",
            get(files::get).put(files::put).delete(files::delete),
        )
        .route("/metrics", get(crate::metrics::scrape))
        .route("/openapi.json", get(openapi::document))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{node_id}/drain", axum::routing::put(nodes::drain))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), forwarding::route))
        .layer(axum::middleware::from_fn_with_state(
            state.outbox.clone(),
            crate::outbox::track,
        ))
        .layer(axum::middleware::from_fn(crate::error::observe_errors))
        .layer(axum::middleware::from_fn(crate::rate_limit::headers))
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(state.config.http.body_timeout))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            // The route's pattern, never the raw path: session ids and file
            // names stay out of every span.
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("unmatched", |path| path.as_str());
            tracing::info_span!(
                "http",
                method = %request.method(),
                route,
                request_id = request_id(request.headers()),
            )
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

pub(crate) fn request_id(headers: &HeaderMap) -> &str {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-")
}
