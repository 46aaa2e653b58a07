//! brig-api: the HTTP service.
//!
//! - [`routes`]: the router and one module per resource.
//! - [`auth`]: API keys and JWTs; the [`Principal`](auth::Principal) extractor.
//! - [`rate_limit`]: per-principal limits.
//! - [`error`], [`json`]: the error format at the edge.
//! - [`state`]: what handlers share.
//! - [`healthcheck`]: `brig-api healthcheck`, a probe of `/ready` for container runtimes.

pub mod auth;
pub mod error;
pub mod executions;
pub mod healthcheck;
pub mod idempotency;
pub mod json;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod state;

use std::future::Future;

pub use routes::router;
pub use state::AppState;

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests (and the commands behind them) finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
