//! `POST /execute`: run one command in the caller's session, answering with
//! the whole result, or as Server-Sent Events (see [`super::execute_stream`])
//! when the client asks for `text/event-stream`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::service::idempotency::{IdempotentRequest, NextAction};
use crate::state::AppState;
use crate::views::{ExecuteBody, ExecuteResponse};

/// Slack past the longest command before a duplicate stops waiting for the
/// first request with its `Idempotency-Key`.
const IDEMPOTENT_SLACK: Duration = Duration::from_secs(60);

#[utoipa::path(
    post, path = "/execute", operation_id = "execute", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    request_body = ExecuteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "replay the first answer to a retry")),
    responses(
        (status = 200, description = "The command ran (any exit code, or timed out). With `Accept: text/event-stream`: `stdout`/`stderr` events, then `exit` (this body) or `error`.",
         content((ExecuteResponse = "application/json"), (String = "text/event-stream"))),
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let idempotent = IdempotentRequest::from_headers(&headers, "/execute", &body)?;
    if body.tty.is_some() {
        return Err(ApiError::invalid(
            "invalid_request",
            "`tty` runs a command for a terminal to attach to: use POST /executions",
        ));
    }
    let validated = state.execute.validate(&principal, body.into())?;
    if wants_event_stream(&headers) {
        if idempotent.is_some() {
            return Err(ApiError::invalid(
                "invalid_request",
                "Idempotency-Key does not apply to a streamed execute",
            ));
        }
        return super::execute_stream::stream(&state, principal, validated).await;
    }
    let stop = state.shutdown.token();
    let Some(request) = idempotent else {
        return Ok(Json(state.execute.run(&principal, validated, stop).await?).into_response());
    };
    let owner = principal.owner();
    let running_for = state.config.max_exec_timeout + IDEMPOTENT_SLACK;
    let claim = match state.idempotency.try_processing(&owner, request, running_for).await? {
        NextAction::StartProcessing(claim) => claim,
        NextAction::ReturnSavedResponse(saved) => return Ok(saved),
    };
    let result = state.execute.run(&principal, validated, stop).await;
    state.idempotency.save(claim, StatusCode::OK, result).await
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| media.split(';').next().unwrap_or("").trim() == "text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_is_recognised_among_other_media_types() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/json, text/event-stream;q=0.9".parse().unwrap(),
        );
        assert!(wants_event_stream(&headers));
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_event_stream(&headers));
    }
}
