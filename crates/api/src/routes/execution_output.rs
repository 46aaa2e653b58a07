//! An execution's output by offset: `GET /executions/{id}/output` (what
//! follows the given offsets, and the offsets to ask from next) and
//! `GET /executions/{id}/events` (SSE, live, resumable from `Last-Event-ID`).
//!
//! Offsets count bytes of each raw stream. Text is those bytes as UTF-8
//! (invalid sequences replaced); a character cut at the end of what the
//! sandbox has so far waits for its last bytes, so no character is split
//! across two answers and the offsets stay exact.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_core::ExecOutcome;
use brig_protocol::{RunResult, Termination};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiQuery;
use crate::service::executions::{Offsets, Read};
use crate::state::AppState;
use crate::views::Reason;

/// Most bytes of both streams in one answer.
const READ_BYTES: u32 = 1 << 20;

/// Most bytes one SSE round reads (smaller: a slow reader holds less).
const EVENT_READ_BYTES: u32 = 256 << 10;

/// How long one SSE round waits in the sandbox for new output.
const EVENT_WAIT: Duration = Duration::from_secs(15);

/// Pause after a round whose bytes were only part of a character (an empty
/// early answer already paused in the read).
const NO_PROGRESS_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OffsetsQuery {
    /// Bytes of stdout the reader already has (default 0).
    stdout_offset: Option<u64>,
    /// Bytes of stderr the reader already has (default 0).
    stderr_offset: Option<u64>,
}

impl OffsetsQuery {
    pub fn offsets(&self) -> Offsets {
        Offsets {
            stdout: self.stdout_offset.unwrap_or(0),
            stderr: self.stderr_offset.unwrap_or(0),
        }
    }
}

/// How an execution ended, as its sandbox reported it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ending {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: Reason,
    /// Bytes each stream held in all.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl From<&RunResult> for Ending {
    fn from(result: &RunResult) -> Self {
        let signal = match result.termination {
            Termination::Signaled(signal) => Some(signal),
            Termination::Exited(_) => None,
        };
        let outcome = ExecOutcome {
            signal,
            timed_out: result.timed_out,
            cancelled: result.cancelled,
            oom_killed: result.oom_killed,
            ..ExecOutcome::spawn_failure("")
        };
        Ending {
            exit_code: result.shell_exit_code(),
            signal,
            reason: Reason::of(&outcome),
            stdout_bytes: result.stdout_bytes,
            stderr_bytes: result.stderr_bytes,
        }
    }
}

/// `GET /executions/{id}/output`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutputView {
    pub execution_id: String,
    pub stdout: String,
    pub stderr: String,
    /// Where the next read starts.
    pub stdout_offset: u64,
    pub stderr_offset: u64,
    /// The execution has ended and this answer holds the last of its output.
    pub complete: bool,
    /// Once complete: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ending: Option<Ending>,
}

/// `GET /executions/{id}/output`: what follows the offsets (at most 1 MiB).
#[utoipa::path(
    get, path = "/executions/{execution_id}/output", operation_id = "getExecutionOutput", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path), OffsetsQuery),
    responses(
        (status = 200, description = "Output from the offsets on, and where to read next", body = OutputView),
        (status = 410, description = "cursor_expired: the offset has left the buffer (EXECUTION_BUFFER_BYTES per stream)")
    )
)]
pub async fn output(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OffsetsQuery>,
) -> Result<Json<OutputView>, ApiError> {
    let at = query.offsets();
    let read = state
        .executions
        .read(&principal.owner(), &id, at, READ_BYTES, Duration::ZERO)
        .await?;
    let step = Step::of(&read, at);
    Ok(Json(OutputView {
        execution_id: id,
        stdout: step.stdout,
        stderr: step.stderr,
        stdout_offset: step.next.stdout,
        stderr_offset: step.next.stderr,
        complete: step.ending.is_some(),
        ending: step.ending,
    }))
}

/// One read turned into text and the offsets after it.
struct Step {
    stdout: String,
    stderr: String,
    next: Offsets,
    ending: Option<Ending>,
}

impl Step {
    fn of(read: &Read, at: Offsets) -> Self {
        let at_end = read.finished.is_some();
        let (stdout, out) = text_prefix(&read.stdout, at_end);
        let (stderr, err) = text_prefix(&read.stderr, at_end);
        Step {
            stdout,
            stderr,
            next: Offsets {
                stdout: at.stdout + out as u64,
                stderr: at.stderr + err as u64,
            },
            ending: read.finished.as_ref().map(Ending::from),
        }
    }
}

/// `bytes` as text, without a character cut at the end unless `at_end`;
/// with the count of bytes that text stands for.
fn text_prefix(bytes: &[u8], at_end: bool) -> (String, usize) {
    let mut take = bytes.len();
    if !at_end {
        // An incomplete sequence is at most 3 bytes, from its lead byte on.
        let tail_start = bytes.len().saturating_sub(3);
        if let Some(lead) = (tail_start..bytes.len()).rev().find(|&i| bytes[i] & 0xC0 != 0x80) {
            if let Err(err) = std::str::from_utf8(&bytes[lead..]) {
                if err.error_len().is_none() {
                    take = lead + err.valid_up_to();
                }
            }
        }
    }
    (String::from_utf8_lossy(&bytes[..take]).into_owned(), take)
}

/// Parses `Last-Event-ID` (`"<stdout_offset>:<stderr_offset>"`).
fn resumed_from(headers: &HeaderMap) -> Result<Option<Offsets>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let parsed = value.to_str().ok().and_then(|text| {
        let (out, err) = text.split_once(':')?;
        Some(Offsets {
            stdout: out.parse().ok()?,
            stderr: err.parse().ok()?,
        })
    });
    parsed
        .map(Some)
        .ok_or_else(|| ApiError::invalid("invalid_event_id", "Last-Event-ID is `<stdout_offset>:<stderr_offset>`"))
}

fn json_event(name: &str, at: Offsets, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .id(format!("{}:{}", at.stdout, at.stderr))
        .data(serde_json::to_string(data).unwrap_or_default())
}

/// `GET /executions/{id}/events`: SSE. `stdout`/`stderr` events (`{"data"}`)
/// whose id is the offsets after them, then `exit` (how it ended) or
/// `error`. Reconnecting with `Last-Event-ID` (or the offsets as query)
/// resumes with no byte lost or repeated.
#[utoipa::path(
    get, path = "/executions/{execution_id}/events", operation_id = "followExecution", tag = "execute", security(("api_key" = []), ("bearer" = [])),
    params(("execution_id" = String, Path), OffsetsQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "resume after this event: `<stdout_offset>:<stderr_offset>`")),
    responses((status = 200, description = "An SSE stream of stdout, stderr and a last exit (or error) event", content_type = "text/event-stream"))
)]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OffsetsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let at = match resumed_from(&headers)? {
        Some(at) => at,
        None => query.offsets(),
    };
    let owner = principal.owner();
    // The first read answers plain HTTP errors (unknown execution, expired cursor).
    let first = state
        .executions
        .read(&owner, &id, at, EVENT_READ_BYTES, Duration::ZERO)
        .await?;
    let follow = Follow {
        state,
        owner,
        id,
        at,
        pending: Some(Ok(first)),
        events: Vec::new(),
        done: false,
    };
    let body = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next_event().await?;
        Some((Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The state of one SSE follower.
struct Follow {
    state: AppState,
    owner: brig_core::session::Owner,
    id: String,
    at: Offsets,
    pending: Option<Result<Read, ApiError>>,
    /// Events made from the last read, not yet sent (in reverse).
    events: Vec<Event>,
    done: bool,
}

impl Follow {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let read = match self.pending.take() {
                Some(read) => read,
                None => {
                    self.state
                        .executions
                        .read(&self.owner, &self.id, self.at, EVENT_READ_BYTES, EVENT_WAIT)
                        .await
                }
            };
            let read = match read {
                Ok(read) => read,
                Err(err) => {
                    self.done = true;
                    return Some(json_event("error", self.at, &err.failure()));
                }
            };
            let step = Step::of(&read, self.at);
            let moved = step.next != self.at;
            let mut made = Vec::new();
            if !step.stdout.is_empty() {
                self.at.stdout = step.next.stdout;
                made.push(json_event(
                    "stdout",
                    self.at,
                    &serde_json::json!({ "data": step.stdout }),
                ));
            }
            if !step.stderr.is_empty() {
                self.at.stderr = step.next.stderr;
                made.push(json_event(
                    "stderr",
                    self.at,
                    &serde_json::json!({ "data": step.stderr }),
                ));
            }
            self.at = step.next;
            if let Some(ending) = step.ending {
                made.push(json_event("exit", self.at, &ending));
                self.done = true;
            }
            made.reverse();
            self.events = made;
            if !moved && !self.done && (!read.stdout.is_empty() || !read.stderr.is_empty()) {
                // Only part of a character so far: let its rest arrive.
                tokio::time::sleep(NO_PROGRESS_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_the_end_waits_unless_the_stream_ended() {
        let euro = "€".as_bytes();
        let mut bytes = b"ab".to_vec();
        bytes.extend_from_slice(&euro[..2]);
        assert_eq!(text_prefix(&bytes, false), ("ab".to_string(), 2));
        assert_eq!(text_prefix(&bytes, true).1, 4);
        // Invalid bytes in the middle are replaced and counted.
        assert_eq!(text_prefix(&[0xff, b'x'], false), ("\u{fffd}x".to_string(), 2));
        assert_eq!(text_prefix(euro, false), ("€".to_string(), 3));
    }
}
