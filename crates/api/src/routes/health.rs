//! `GET /health` (the process answers) and `GET /ready` (its dependencies do).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health",
    responses((status = 200, description = "The process answers", body = Object)))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the session store and the runtime (engine, OCI runtime, agent
/// volume) are usable; otherwise 503 naming the first that is not. Checked at
/// most once a second.
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "health",
    responses((status = 200, description = "Store, engine, runtime and agent volume are usable", body = Object)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let readiness = &state.readiness;
    readiness.check().await.map_err(ApiError::NotReady)?;
    let mut body = json!({ "status": "ready", "store": readiness.store_name() });
    if let Some(separation) = state.tenant_separation {
        body["tenant_separation"] = json!(separation);
    }
    Ok(Json(body))
}
