//! `/executions`: commands started in the background, polled and cancelled by id.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::executions::ExecutionView;
use crate::json::ApiJson;
use crate::routes::execute::{validate, ExecuteBody, Validated};
use crate::state::AppState;

/// `POST /executions`: the body of `/execute`; 202 with the execution's id.
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<(StatusCode, Json<ExecutionView>), ApiError> {
    let validated = validate(&state, &principal, body)?;
    validated.admit(&state, &principal).await?;
    let Validated {
        session_id, request, ..
    } = validated;
    let view = state.executions.start(&state, principal, session_id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// `GET /executions/{id}`: status, and the result once finished.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    Ok(Json(state.executions.get(&principal.owner(), &id).await?))
}

/// `POST /executions/{id}/cancel`: kills the command's process tree.
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    Ok(Json(state.executions.cancel(&principal.owner(), &id).await?))
}
