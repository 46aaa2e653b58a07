//! A terminal (or any piped execution) over a WebSocket:
//! `GET /executions/{id}/attach`. Binary messages are raw bytes both ways
//! (the client's go to the command's stdin, answered by the next one only
//! once the command took them; the command's output comes from the
//! sandbox's buffer, from `stdout_offset` on, replayed then live). Text
//! messages from the client are JSON controls: `{"resize": {"rows", "cols"}}`,
//! `{"signal": "INT"}` or `{"eof": true}` (the end of stdin, in order with
//! the bytes before it). The last message is text, `{"exit": {...}}` (how
//! it ended) or `{"error": {...}}`, then a close. A client that goes away
//! detaches: the command runs on, and can be attached to again.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use brig_core::session::Owner;
use brig_protocol::{TtySize, MAX_STDIN_BYTES};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;

use super::execution_output::{Ending, OffsetsQuery};
use super::executions::signal_number;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::{ApiJson, ApiQuery};
use crate::service::executions::Offsets;
use crate::state::AppState;
use crate::views::{ExecutionView, TtyBody};

/// Output read per round (the socket's backpressure holds the rest in the sandbox).
const READ_BYTES: u32 = 256 << 10;

/// How long one round waits in the sandbox for new output.
const READ_WAIT: Duration = Duration::from_secs(15);

/// A client's control message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum ClientControl {
    Resize(TtyBody),
    Signal(String),
    Eof(bool),
}

/// `GET /executions/{id}/attach`: a WebSocket to the command's terminal.
#[utoipa::path(
    get, path = "/executions/{execution_id}/attach", operation_id = "attachExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path), OffsetsQuery),
    responses(
        (status = 101, description = "A WebSocket: binary messages are raw bytes both ways; text ones JSON controls (resize, signal) and the last, exit or error"),
        (status = 409, description = "execution_not_running: it ended, or its stdin is no pipe"),
        (status = 426, description = "upgrade_required: not a WebSocket request")
    )
)]
pub async fn attach(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OffsetsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let owner = principal.owner();
    state.executions.attachable(&owner, &id).await?;
    let upgrade = upgrade.map_err(|_| ApiError::UpgradeRequired)?;
    let at = query.offsets();
    Ok(upgrade
        .max_message_size(MAX_STDIN_BYTES)
        .max_frame_size(MAX_STDIN_BYTES)
        .on_upgrade(move |socket| attached(state, owner, id, at, socket)))
}

async fn attached(state: AppState, owner: Owner, id: String, at: Offsets, socket: WebSocket) {
    let (mut to_client, mut from_client) = socket.split();
    let executions = &state.executions;
    let output = async {
        let mut at = at;
        let last = loop {
            let read = match executions.read(&owner, &id, at, READ_BYTES, READ_WAIT).await {
                Ok(read) => read,
                Err(err) => break serde_json::json!({ "error": err.failure() }),
            };
            for (bytes, offset) in [(read.stdout, &mut at.stdout), (read.stderr, &mut at.stderr)] {
                if bytes.is_empty() {
                    continue;
                }
                *offset += bytes.len() as u64;
                if to_client.send(Message::Binary(bytes.into())).await.is_err() {
                    return;
                }
            }
            if let Some(result) = read.finished {
                break serde_json::json!({ "exit": Ending::from(&result) });
            }
        };
        let _ = to_client.send(Message::Text(last.to_string().into())).await;
        let _ = to_client.send(Message::Close(None)).await;
    };
    let input = async {
        // After the command stopped taking input (it ended, or closed its
        // stdin) the rest is dropped, but the output and the exit still come.
        let mut refused = false;
        while let Some(Ok(message)) = from_client.next().await {
            if refused && !matches!(message, Message::Close(_)) {
                continue;
            }
            let done = match message {
                Message::Binary(bytes) => executions.stdin(&owner, &id, bytes.to_vec(), false).await.map(drop),
                Message::Text(text) => match serde_json::from_str::<ClientControl>(&text) {
                    Ok(ClientControl::Resize(size)) => {
                        let size = TtySize {
                            rows: size.rows,
                            cols: size.cols,
                        };
                        executions.resize(&owner, &id, size).await.map(drop)
                    }
                    Ok(ClientControl::Signal(name)) => match signal_number(&name) {
                        Ok(signal) => executions.signal(&owner, &id, signal).await.map(drop),
                        Err(err) => Err(err),
                    },
                    Ok(ClientControl::Eof(true)) => executions.stdin(&owner, &id, Vec::new(), true).await.map(drop),
                    Ok(ClientControl::Eof(false)) => Ok(()),
                    // A control this server does not know: ignored, like a
                    // newer client's extension.
                    Err(_) => Ok(()),
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            // Only the command's end stops the input; a bad control is
            // passed over.
            refused |= matches!(done, Err(ApiError::ExecutionNotRunning(_)));
        }
    };
    // The output's end, or the client's leaving, ends the attachment.
    tokio::select! {
        () = output => {}
        () = input => {}
    }
}

/// `POST /executions/{id}/resize`: a new size for the command's terminal.
#[utoipa::path(
    post, path = "/executions/{execution_id}/resize", operation_id = "resizeExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path)),
    request_body = TtyBody,
    responses((status = 200, description = "Resized; the execution as it was", body = ExecutionView))
)]
pub async fn resize(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(size): ApiJson<TtyBody>,
) -> Result<Json<ExecutionView>, ApiError> {
    let size = TtySize {
        rows: size.rows,
        cols: size.cols,
    };
    Ok(Json(state.executions.resize(&principal.owner(), &id, size).await?))
}
