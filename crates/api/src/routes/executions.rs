//! `/executions`: commands started in the background, polled and cancelled by id.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_protocol::TtySize;
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::{ApiJson, ApiQuery};
use crate::service::execute::ExecuteInput;
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
    let tty = body.tty.map(|tty| TtySize {
        rows: tty.rows,
        cols: tty.cols,
    });
    let mut input = ExecuteInput::from(body);
    // `"stdin": "pipe"`: stdin stays open for `POST /executions/{id}/stdin`.
    if input.stdin.as_deref() == Some("pipe") {
        input.stdin = None;
        input.stdin_pipe = true;
    }
    input.tty = tty;
    let validated = state.execute.validate(&principal, input)?;
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

/// `GET /sessions/{id}/executions`: the session's executions still on record.
#[utoipa::path(
    get, path = "/sessions/{session_id}/executions", operation_id = "listSessionExecutions", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses((status = 200, description = "The session's latest executions, oldest first", body = [ExecutionView]))
)]
pub async fn of_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
) -> Result<Json<Vec<ExecutionView>>, ApiError> {
    Ok(Json(
        state.executions.of_session(&principal.owner(), &session_id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StdinQuery {
    /// End stdin after this chunk.
    #[serde(default)]
    close: bool,
}

/// `POST /executions/{id}/stdin`: raw bytes for the stdin pipe of an
/// execution started with `"stdin": "pipe"`; answered once the command took
/// them (204), or with 202 when after 30 s they still wait in the sandbox's
/// queue for the command to read them: they are not to be sent again.
#[utoipa::path(
    post, path = "/executions/{execution_id}/stdin", operation_id = "writeExecutionStdin", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path), StdinQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "The command took the bytes (and stdin ended, with close=true)"),
        (status = 202, description = "Queued in the sandbox: the command has not read them yet (do not send them again)")
    )
)]
pub async fn stdin(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<StdinQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let owner = principal.owner();
    let taken = state.executions.stdin(&owner, &id, body.to_vec(), query.close).await?;
    Ok(if taken {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// `INT`, `TERM`, `KILL` or `HUP`.
    signal: String,
}

/// `POST /executions/{id}/signal`: a signal for the command's process group.
#[utoipa::path(
    post, path = "/executions/{execution_id}/signal", operation_id = "signalExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path)),
    request_body = SignalBody,
    responses((status = 200, description = "Sent; the execution as it was", body = ExecutionView))
)]
pub async fn signal(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<Json<ExecutionView>, ApiError> {
    let signal = signal_number(&body.signal)?;
    Ok(Json(state.executions.signal(&principal.owner(), &id, signal).await?))
}

/// The number of a signal a client may send (`INT`, `TERM`, `KILL`, `HUP`,
/// with or without `SIG`); 422 `invalid_signal` for any other.
pub fn signal_number(name: &str) -> Result<i32, ApiError> {
    match name.trim_start_matches("SIG") {
        "HUP" => Ok(1),
        "INT" => Ok(2),
        "KILL" => Ok(9),
        "TERM" => Ok(15),
        other => Err(ApiError::invalid(
            "invalid_signal",
            format!("unknown signal {other:?}: send INT, TERM, KILL or HUP"),
        )),
    }
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
