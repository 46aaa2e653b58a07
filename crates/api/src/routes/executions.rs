//! `/executions`: commands started in the background, polled and cancelled by id.

use axum::extract::{Path, State};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::executions::ExecutionView;
use crate::json::ApiJson;
use crate::routes::execute::{validate, ExecuteBody, Validated};
use crate::state::AppState;

/// `POST /executions`: the body of `/execute`; 202 with the execution's id.
#[utoipa::path(
    post, path = "/executions", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    request_body = ExecuteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "replay the first answer to a retry")),
    responses((status = 202, description = "Started in the background", body = ExecutionView))
)]
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let idempotent = crate::idempotency::from_request(&headers, "/executions", &body)?;
    let validated = validate(&state, &principal, body)?;
    let run = || async {
        validated.admit(&state, &principal).await?;
        let Validated {
            session_id, request, ..
        } = validated;
        let view = state
            .executions
            .start(&state, principal.clone(), session_id, request)
            .await?;
        let body = serde_json::to_value(view).map_err(|err| ApiError::Internal(err.to_string()))?;
        Ok((StatusCode::ACCEPTED, body))
    };
    crate::idempotency::once(&state, &principal, idempotent, Duration::from_secs(30), run).await
}

/// `GET /executions/{id}`: status, and the result once finished.
#[utoipa::path(
    get, path = "/executions/{execution_id}", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path)),
    responses((status = 200, description = "Status, and the result once finished", body = ExecutionView))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    Ok(Json(state.executions.get(&principal.owner(), &id).await?))
}

/// `POST /executions/{id}/cancel`: kills the command's process tree.
#[utoipa::path(
    post, path = "/executions/{execution_id}/cancel", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path)),
    responses((status = 200, description = "Cancelled (or already finished)", body = ExecutionView))
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    Ok(Json(state.executions.cancel(&principal.owner(), &id).await?))
}
