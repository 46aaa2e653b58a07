//! `POST /execute` with `Accept: text/event-stream`: `stdout`/`stderr` events
//! as the agent sends output, then one `exit` event with the result (or one
//! `error` event). The session is opened first, so quota and capacity errors
//! are plain HTTP errors. A client that goes away drops the stream, which
//! cancels the command; so does a shutdown whose grace ran out.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use brig_core::sandbox::{ExecHooks, OutputChunk};
use brig_protocol::Stream;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::execute::Validated;
use crate::state::AppState;
use crate::views::{ExecuteResponse, ExecutionResult};

/// Events queued for a client that reads slowly (output beyond is held by
/// the producer, bounded by the command's output cap).
const EVENT_QUEUE: usize = 16;

pub(super) async fn stream(state: &AppState, principal: Principal, validated: Validated) -> Result<Response, ApiError> {
    state.execute.admit(&principal, &validated).await?;
    let Validated {
        session_id, request, ..
    } = validated;
    state.sessions.open(&principal.owner(), &session_id).await?;
    let (output_tx, mut output) = mpsc::unbounded_channel();
    let cancel = state.shutdown.token();
    let hooks = ExecHooks {
        cancel: Some(cancel.clone()),
        output: Some(output_tx),
    };
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let (execute, task_session) = (state.execute.clone(), session_id.clone());
    state.shutdown.spawn(async move {
        let result = execute.run_admitted(&principal, &task_session, request, hooks).await;
        let _ = done_tx.send(result);
    });
    let (events, events_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let producer = state.shutdown.spawn(async move {
        let mut text = [Utf8Tail::default(), Utf8Tail::default()];
        let mut forward = |chunk: OutputChunk| {
            let (name, tail) = match chunk.stream {
                Stream::Stdout => ("stdout", &mut text[0]),
                Stream::Stderr => ("stderr", &mut text[1]),
            };
            let data = tail.push(&chunk.data);
            (!data.is_empty()).then(|| json_event(name, &serde_json::json!({ "data": data })))
        };
        let result = loop {
            tokio::select! {
                biased;
                Some(chunk) = output.recv() => {
                    if let Some(event) = forward(chunk) {
                        let _ = events.send(event).await;
                    }
                }
                result = &mut done => break result,
            }
        };
        // Output that arrived before the result is already queued.
        while let Ok(chunk) = output.try_recv() {
            if let Some(event) = forward(chunk) {
                let _ = events.send(event).await;
            }
        }
        let event = match result {
            // Cancelled here means the process stopped waiting (a client that
            // went away reads no more events).
            Ok(Ok(executed)) if executed.outcome.cancelled => json_event("error", &ApiError::ShuttingDown.failure()),
            Ok(Ok(executed)) => json_event(
                "exit",
                &ExecuteResponse {
                    session_id: session_id.to_string(),
                    result: ExecutionResult::from(&executed),
                },
            ),
            Ok(Err(err)) => {
                let err = ApiError::from(err);
                err.observe();
                json_event("error", &err.failure())
            }
            Err(_) => {
                let err = ApiError::Internal("the command's task ended without a result".into());
                err.observe();
                json_event("error", &err.failure())
            }
        };
        let _ = events.send(event).await;
    });
    // Both held by the response body: a client that disconnects drops them,
    // which cancels the command and stops the producer.
    let held = (AbortOnDrop(producer), cancel.drop_guard());
    let body = futures_util::stream::unfold((events_rx, held), |(mut events, held)| async move {
        events
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), (events, held)))
    });
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns output chunks into text without splitting a UTF-8 character across
/// events: an incomplete sequence at the end of a chunk waits for the next.
#[derive(Default)]
struct Utf8Tail {
    held: Vec<u8>,
}

impl Utf8Tail {
    fn push(&mut self, data: &[u8]) -> String {
        self.held.extend_from_slice(data);
        // Skip over invalid bytes (replaced below); stop at an incomplete tail.
        let mut at = 0;
        let keep = loop {
            match std::str::from_utf8(&self.held[at..]) {
                Ok(_) => break 0,
                Err(err) => match err.error_len() {
                    Some(bad) => at += err.valid_up_to() + bad,
                    None => break self.held.len() - at - err.valid_up_to(),
                },
            }
        };
        let ready = self.held.len() - keep;
        let text = String::from_utf8_lossy(&self.held[..ready]).into_owned();
        self.held.drain(..ready);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_joined_and_garbage_is_replaced() {
        let mut tail = Utf8Tail::default();
        let euro = "€".as_bytes();
        assert_eq!(tail.push(&[b'a', euro[0]]), "a");
        assert_eq!(tail.push(&euro[1..]), "€");
        assert_eq!(tail.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(tail.push(&[0xff, euro[0], euro[1]]), "\u{fffd}");
        assert_eq!(tail.push(&euro[2..]), "€");
    }
}
