//! `GET /health` (the process answers) and `GET /ready` (its dependencies do).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process answers", body = Object)))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the session store, the engine and the agent volume are all
/// usable; otherwise 503 naming the first that is not.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, description = "Store, engine, runtime and agent volume are usable", body = Object)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let not_ready = |detail: String| ApiError::Unavailable {
        code: "not_ready",
        detail,
        retry_after_secs: 2,
    };
    let store = state.sessions.store();
    store
        .ping()
        .await
        .map_err(|err| not_ready(format!("{}: {err}", store.name())))?;
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.runtime.docker().ping()).await;
    match ping {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(not_ready(format!("docker: {err}"))),
        Err(_) => return Err(not_ready("docker: no answer within 2 s".into())),
    }
    let runtime = &state.config.sandbox.runtime;
    match state.runtime.has_runtime(runtime).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(not_ready(format!(
                "docker: the container runtime {runtime:?} (CONTAINER_RUNTIME) is not registered with the engine \
                 (docker info → Runtimes); see README, gVisor"
            )))
        }
        Err(err) => return Err(not_ready(format!("docker: {err}"))),
    }
    state
        .runtime
        .publish_agent()
        .await
        .map_err(|err| not_ready(format!("agent volume: {err}")))?;
    Ok(Json(json!({ "status": "ready", "store": store.name() })))
}
