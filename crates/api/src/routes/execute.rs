//! `POST /execute`: run one command in the caller's session, answering with
//! the whole result, or as Server-Sent Events when the client asks for
//! `text/event-stream`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use brig_core::policy::WorkingDir;
use brig_core::rules::{Cooldown, Rule, Scope};
use brig_core::session::SessionId;
use brig_core::sessions::{Executed, SessionError};
use brig_core::ExecRequest;
use brig_protocol::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::routes::rfc3339;
use crate::state::AppState;

/// Largest `stdin` (or `code`) accepted (the agent protocol's bound).
const MAX_STDIN_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// A command line (split like a shell would, never run by one). Exactly one
    /// of `command` and `code`.
    pub command: Option<String>,
    /// Source fed on stdin to the interpreter of `language` (`LANGUAGES`).
    pub code: Option<String>,
    pub language: Option<String>,
    pub session_id: String,
    /// Seconds; default `DEFAULT_EXEC_TIMEOUT_SECONDS`, at most `MAX_EXEC_TIMEOUT_SECONDS`.
    pub timeout: Option<f64>,
    pub working_dir: Option<String>,
    pub stdin: Option<String>,
}

/// What came of a command: the body of `/execute`, the `exit` event of a
/// stream, and the result part of a finished `/executions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionResult {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub truncated: bool,
    pub execution_time: f64,
    pub started_at: String,
    pub finished_at: String,
    pub session_created: bool,
}

impl From<&Executed> for ExecutionResult {
    fn from(executed: &Executed) -> Self {
        let outcome = &executed.outcome;
        ExecutionResult {
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            stdout: outcome.stdout_str(),
            stderr: outcome.stderr_str(),
            timed_out: outcome.timed_out,
            truncated: outcome.stdout_truncated || outcome.stderr_truncated,
            execution_time: executed.elapsed.as_secs_f64(),
            started_at: rfc3339(executed.started_at),
            finished_at: rfc3339(executed.finished_at),
            session_created: executed.created,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecuteResponse {
    pub session_id: String,
    #[serde(flatten)]
    pub result: ExecutionResult,
}

/// A validated execute request, ready for the runtime.
pub struct Validated {
    pub session_id: SessionId,
    pub request: ExecRequest,
    /// The policy rule that allowed it, and that rule's cooldown.
    pub rule: Rule,
    pub cooldown: Option<Cooldown>,
}

impl Validated {
    /// Charges the rule's cooldown (in the store, so it holds across
    /// replicas); refused with `Retry-After` while it has not passed.
    pub async fn admit(&self, state: &AppState, principal: &Principal) -> Result<(), ApiError> {
        let Some(cooldown) = &self.cooldown else {
            return Ok(());
        };
        let owner = principal.owner();
        let scope = match cooldown.scope {
            Scope::Session => format!("session:{}:{}", owner.as_str(), self.session_id),
            Scope::Principal => format!("principal:{}", owner.as_str()),
            Scope::Global => "global".into(),
        };
        let key = format!("cooldown:{}:{scope}", self.rule);
        match state.sessions.store().set_once(&key, cooldown.every).await {
            Ok(None) => Ok(()),
            Ok(Some(left)) => Err(ApiError::Cooldown {
                rule: self.rule.to_string(),
                retry_after_secs: left.as_secs_f64().ceil() as u64,
            }),
            Err(err) => Err(SessionError::Store(err).into()),
        }
    }
}

impl Validated {
    /// Charges the cooldown, runs the command in the session and writes the
    /// audit line: `/execute`, MCP's `execute` and `/generate-and-execute`.
    pub async fn run(self, state: &AppState, principal: &Principal) -> Result<ExecuteResponse, ApiError> {
        self.admit(state, principal).await?;
        let Validated {
            session_id, request, ..
        } = self;
        let argv = request.argv.clone();
        let result = state.sessions.execute(&principal.owner(), &session_id, request).await;
        audit(principal, &session_id, &argv, &result);
        Ok(ExecuteResponse {
            session_id: session_id.to_string(),
            result: ExecutionResult::from(&result?),
        })
    }
}

/// Checks everything about the body before anything runs.
pub fn validate(state: &AppState, principal: &Principal, body: ExecuteBody) -> Result<Validated, ApiError> {
    let session_id =
        SessionId::parse(&body.session_id).map_err(|err| ApiError::invalid("invalid_session_id", err.to_string()))?;
    let (argv, stdin) = match (body.command, body.code) {
        (Some(command), None) => {
            if body.language.is_some() {
                return Err(ApiError::invalid("invalid_request", "`language` goes with `code`"));
            }
            (command, body.stdin.unwrap_or_default())
        }
        (None, Some(code)) => {
            if body.stdin.is_some() {
                return Err(ApiError::invalid(
                    "invalid_request",
                    "`code` is the stdin of its interpreter",
                ));
            }
            let language = body
                .language
                .ok_or_else(|| ApiError::invalid("invalid_language", "`code` needs a `language`"))?;
            let interpreter = state.config.languages.interpreter(&language).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_language",
                    format!(
                        "unknown language {language:?}; configured: {}",
                        state.config.languages.names().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            (shell_words::join(interpreter.as_slice()), code)
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_request",
                "send exactly one of `command` and `code`",
            ))
        }
    };
    let allowed = state
        .rules
        .current()
        .check(&argv, &principal.name, principal.api_key, &principal.roles)?;
    let timeout = match body.timeout {
        None => state.config.default_exec_timeout,
        Some(seconds) if seconds > 0.0 && seconds <= state.config.max_exec_timeout.as_secs_f64() => {
            Duration::from_secs_f64(seconds)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_timeout",
                format!(
                    "timeout must be in (0, {}] seconds",
                    state.config.max_exec_timeout.as_secs_f64()
                ),
            ))
        }
    };
    let working_dir = match body.working_dir.as_deref() {
        None => WorkingDir::default(),
        Some(dir) => WorkingDir::parse(dir)?,
    };
    let stdin = stdin.into_bytes();
    if stdin.len() > MAX_STDIN_BYTES {
        return Err(ApiError::invalid(
            "invalid_stdin",
            format!("stdin (or code) is limited to {MAX_STDIN_BYTES} bytes"),
        ));
    }
    let request = ExecRequest {
        argv: allowed.argv.into_vec(),
        working_dir: working_dir.as_str().to_string(),
        env: Vec::new(),
        stdin,
        timeout,
        output_cap: state.config.max_output_bytes,
    };
    Ok(Validated {
        session_id,
        request,
        rule: allowed.rule,
        cooldown: allowed.cooldown,
    })
}

/// One audit line (target `brig::audit`) per command; the request id comes
/// from the enclosing HTTP span.
pub fn audit(principal: &Principal, session_id: &SessionId, argv: &[String], result: &Result<Executed, SessionError>) {
    let argv = serde_json::to_string(argv).unwrap_or_default();
    match result {
        Ok(executed) => {
            let outcome = &executed.outcome;
            tracing::info!(
                target: "brig::audit",
                principal = %principal.name,
                session_id = %session_id,
                argv,
                exit_code = outcome.exit_code,
                timed_out = outcome.timed_out,
                cancelled = outcome.cancelled,
                duration_ms = executed.elapsed.as_secs_f64() * 1000.0,
                stdout_bytes = outcome.stdout_bytes,
                stderr_bytes = outcome.stderr_bytes,
                session_created = executed.created,
                "execute"
            );
        }
        Err(err) => tracing::info!(
            target: "brig::audit",
            principal = %principal.name, session_id = %session_id, argv, error = %err,
            "execute failed"
        ),
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| media.split(';').next().unwrap_or("").trim() == "text/event-stream")
}

#[utoipa::path(
    post, path = "/execute", tag = "execute", security(("api_key" = []), ("bearer" = [])),
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
    let idempotent = crate::idempotency::from_request(&headers, "/execute", &body)?;
    let validated = validate(&state, &principal, body)?;
    if wants_event_stream(&headers) {
        if idempotent.is_some() {
            return Err(ApiError::invalid(
                "invalid_request",
                "Idempotency-Key does not apply to a streamed execute",
            ));
        }
        validated.admit(&state, &principal).await?;
        let Validated {
            session_id, request, ..
        } = validated;
        return stream(state, principal, session_id, request).await;
    }
    let run = || async {
        let response = validated.run(&state, &principal).await?;
        let body = serde_json::to_value(response).map_err(|err| ApiError::Internal(err.to_string()))?;
        Ok((StatusCode::OK, body))
    };
    let running_for = state.config.max_exec_timeout + Duration::from_secs(60);
    crate::idempotency::once(&state, &principal, idempotent, running_for, run).await
}

/// The streamed form: `stdout`/`stderr` events as the agent sends output,
/// then one `exit` event with the result (or one `error` event). The session
/// is opened first, so quota and capacity errors are plain HTTP errors. A
/// client that goes away drops the stream, which cancels the command.
async fn stream(
    state: AppState,
    principal: Principal,
    session_id: SessionId,
    request: ExecRequest,
) -> Result<Response, ApiError> {
    state.sessions.open(&principal.owner(), &session_id).await?;
    let (output_tx, mut output) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let hooks = brig_core::sandbox::ExecHooks {
        cancel: Some(cancel.clone()),
        output: Some(output_tx),
    };
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let task_session = session_id.clone();
    tokio::spawn(async move {
        let argv = request.argv.clone();
        let result = state
            .sessions
            .execute_with(&principal.owner(), &task_session, request, hooks)
            .await;
        audit(&principal, &task_session, &argv, &result);
        let _ = done_tx.send(result);
    });
    let (events, events_rx) = mpsc::channel::<Event>(16);
    let producer = tokio::spawn(async move {
        let mut text = [Utf8Tail::default(), Utf8Tail::default()];
        let mut forward = |chunk: brig_core::sandbox::OutputChunk| {
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
            Ok(Ok(executed)) => json_event(
                "exit",
                &ExecuteResponse {
                    session_id: session_id.to_string(),
                    result: ExecutionResult::from(&executed),
                },
            ),
            Ok(Err(err)) => {
                let (_, code, detail, _) = ApiError::from(err).parts();
                json_event("error", &serde_json::json!({ "error": code, "detail": detail }))
            }
            Err(_) => json_event(
                "error",
                &serde_json::json!({ "error": "internal_error", "detail": "internal error" }),
            ),
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
