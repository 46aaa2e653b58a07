//! brig-api: the HTTP service.
//!
//! # Layout (top to bottom: a module uses only those below it)
//!
//! - [`routes`]: the router and one module per resource (`execute`,
//!   `execute_stream`, `executions`, `sessions`, `files`, `generate`, `health`,
//!   `openapi`); [`mcp`] (the MCP tools) and [`metrics`] (`/metrics` and
//!   request counting) are transports beside them.
//! - [`state`]: what handlers share, and how it is assembled.
//! - [`service`]: the use cases every transport calls: execute, executions,
//!   idempotency.
//! - [`forward`]: node mode's hop to another node (signed requests, placement).
//! - [`extract`]: the [`Principal`](auth::Principal) extractor and path parameters.
//! - [`auth`], [`rate_limit`], [`outbox`], [`llm`], [`json`]: authentication,
//!   per-principal limits (requests, unread answer bytes), the chat-completions
//!   client, JSON bodies in our error format.
//! - [`error`], [`views`]: the error type at the edge and the bodies several
//!   transports share.
//! - [`healthcheck`]: `brig-api healthcheck`, a probe of `/ready` for container runtimes.
//!
//! The HTTP/1.1 server under the router, with its timeouts and connection
//! caps, is `brig_core::http_server` (the metrics port of both binaries uses it too).
//!
//! What came of a command, layer by layer: the agent's `RunResult` (protocol)
//! → `ExecOutcome` (runtime) → `Executed` (session flow, with timing) →
//! [`ExecutionResult`](views::ExecutionResult) (what clients see), wrapped as
//! `ExecuteResponse` (`/execute`) or `ExecutionView` (`/executions`).

pub mod auth;
pub mod error;
pub mod extract;
pub mod forward;
pub mod healthcheck;
pub mod json;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod outbox;
pub mod rate_limit;
pub mod routes;
pub mod service;
pub mod state;
pub mod views;

use std::future::Future;
use std::time::Duration;

pub use routes::router;
pub use state::AppState;

/// How long, after the grace, cancelled commands get to report and the
/// process to wind down before it stops waiting.
pub const SHUTDOWN_FINAL_WAIT: Duration = Duration::from_millis(1500);

/// Serves until `signal` resolves, then drains: stops accepting and ends the
/// background loops, lets in-flight requests and background executions
/// finish for up to `SHUTDOWN_GRACE_SECONDS`, then cancels what is left (the
/// commands' process trees are killed in their sandboxes), gives those a
/// moment to answer, and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let grace = state.config.shutdown_grace;
    let limits = state.config.http.clone();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            signal.await;
            tracing::info!(
                grace_secs = grace.as_secs_f64(),
                "shutting down: finishing in-flight requests"
            );
            shutdown.stop();
        }
    };
    let server = brig_core::http_server::serve(listener, router(state), &limits, stop);
    tokio::pin!(server);
    // Serve until the signal (or until serving fails).
    let served = tokio::select! {
        biased;
        _ = shutdown.stopping() => None,
        served = &mut server => Some(served),
    };
    shutdown.stop();
    // Two deadlines for everything that follows: the grace, then a last
    // moment for the cancelled to answer. The process is gone by the second.
    let grace_over = tokio::time::Instant::now() + grace;
    let last = grace_over + SHUTDOWN_FINAL_WAIT;
    let served = match served {
        Some(served) => served,
        None => match tokio::time::timeout_at(grace_over, &mut server).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!("shutdown grace over: cancelling the commands still running");
                shutdown.cancel();
                tokio::time::timeout_at(last, &mut server).await.unwrap_or_else(|_| {
                    tracing::warn!("requests still open after the grace; closing them");
                    Ok(())
                })
            }
        },
    };
    // Executions may outlive the requests that started them.
    if !shutdown.drain_until(grace_over).await {
        tracing::warn!("shutdown grace over: cancelling the executions still running");
        shutdown.cancel();
        if !shutdown.drain_until(last).await {
            tracing::warn!("background tasks still running at exit");
        }
    }
    served
}

#[cfg(test)]
mod layering {
    /// The levels of the map above (higher uses lower).
    const LEVELS: &[(&str, u32)] = &[
        ("main", 10),
        ("healthcheck", 9),
        ("routes", 8),
        ("mcp", 8),
        ("metrics", 8),
        ("state", 7),
        ("service", 6),
        ("forward", 6),
        ("extract", 5),
        ("auth", 4),
        ("rate_limit", 4),
        ("outbox", 4),
        ("llm", 4),
        ("json", 4),
        ("error", 3),
        ("views", 3),
    ];

    #[test]
    fn no_module_uses_one_above_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let violations = brig_testkit::layering::violations(&src, LEVELS);
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
