//! `/contexts`: stateful code contexts (see [`crate::service::contexts`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::service::contexts::RunResult;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContextBody {
    /// `python`.
    pub language: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContextView {
    pub context_id: String,
    pub session_id: String,
    pub language: String,
}

/// `POST /sessions/{id}/contexts`: an interpreter kept alive in the session
/// (created if needed), whose variables persist between runs.
#[utoipa::path(
    post, path = "/sessions/{session_id}/contexts", operation_id = "createContext", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    request_body = CreateContextBody,
    responses((status = 201, description = "Started", body = ContextView))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    ApiJson(body): ApiJson<CreateContextBody>,
) -> Result<(StatusCode, Json<ContextView>), ApiError> {
    let context_id = state.contexts.create(&principal, &session_id, &body.language).await?;
    let view = ContextView {
        context_id,
        session_id,
        language: body.language,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub code: String,
    /// Seconds (default `DEFAULT_EXEC_TIMEOUT_SECONDS`, at most
    /// `MAX_EXEC_TIMEOUT_SECONDS`); past it the cell is interrupted.
    pub timeout: Option<f64>,
}

/// `POST /contexts/{id}/run`: runs a cell; its stdout, stderr, the repr of a
/// last expression (`result`) and any error (name, message, traceback).
#[utoipa::path(
    post, path = "/contexts/{context_id}/run", operation_id = "runInContext", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("context_id" = String, Path)),
    request_body = RunBody,
    responses((status = 200, description = "The cell's outcome", body = RunResult))
)]
pub async fn run(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Json<RunResult>, ApiError> {
    let timeout = state.execute.limits().timeout(body.timeout)?;
    let owner = principal.owner();
    Ok(Json(state.contexts.run(&owner, &id, body.code, timeout).await?))
}

/// `POST /contexts/{id}/interrupt`: stops the running cell; the context lives on.
#[utoipa::path(
    post, path = "/contexts/{context_id}/interrupt", operation_id = "interruptContext", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("context_id" = String, Path)),
    responses((status = 204, description = "Interrupted (a cell running now ends with KeyboardInterrupt)"))
)]
pub async fn interrupt(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.contexts.interrupt(&principal.owner(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /contexts/{id}`: ends the context's interpreter.
#[utoipa::path(
    delete, path = "/contexts/{context_id}", operation_id = "deleteContext", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("context_id" = String, Path)),
    responses((status = 204, description = "Ended"))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.contexts.delete(&principal.owner(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
