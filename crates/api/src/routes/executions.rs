//! `/executions`: commands started in the background, polled and cancelled by id.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::service::idempotency::{IdempotentRequest, NextAction};
use crate::state::AppState;
use crate::views::{ExecuteBody, ExecutionView};

/// How long a duplicate `POST /executions` waits for the first to be recorded.
const START_WAIT: Duration = Duration::from_secs(30);

/// `POST /executions`: the body of `/execute`; 202 with the execution's id.
#[utoipa::path(
    post, path = "/executions", operation_id = "startExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
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
    let idempotent = IdempotentRequest::from_headers(&headers, "/executions", &body)?;
    let validated = state.execute.validate(&principal, body.into())?;
    let Some(request) = idempotent else {
        let view = state.executions.start(principal, validated).await?;
        return Ok((StatusCode::ACCEPTED, Json(view)).into_response());
    };
    let owner = principal.owner();
    let claim = match state.idempotency.try_processing(&owner, request, START_WAIT).await? {
        NextAction::StartProcessing(claim) => claim,
        NextAction::ReturnSavedResponse(saved) => return Ok(saved),
    };
    let result = state.executions.start(principal, validated).await;
    state.idempotency.save(claim, StatusCode::ACCEPTED, result).await
}

/// `GET /executions/{id}`: status, and the result once finished.
#[utoipa::path(
    get, path = "/executions/{execution_id}", operation_id = "getExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
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
    post, path = "/executions/{execution_id}/cancel", operation_id = "cancelExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
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
