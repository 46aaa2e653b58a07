//! `POST /execute`: run one command in the caller's session.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use brig_core::policy::{Argv, WorkingDir};
use brig_core::session::SessionId;
use brig_core::ExecRequest;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::routes::rfc3339;
use crate::state::AppState;

/// Largest `stdin` accepted (the agent protocol's bound).
const MAX_STDIN_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    pub command: String,
    pub session_id: String,
    /// Seconds; default `DEFAULT_EXEC_TIMEOUT_SECONDS`, at most `MAX_EXEC_TIMEOUT_SECONDS`.
    pub timeout: Option<f64>,
    pub working_dir: Option<String>,
    pub stdin: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ExecuteResponse {
    pub session_id: String,
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

/// The validated request, ready for the runtime.
fn validate(state: &AppState, body: ExecuteBody) -> Result<(SessionId, ExecRequest), ApiError> {
    let session_id =
        SessionId::parse(&body.session_id).map_err(|err| ApiError::invalid("invalid_session_id", err.to_string()))?;
    let argv = Argv::parse(&body.command)?;
    state.config.commands.check(&argv)?;
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
    let stdin = body.stdin.unwrap_or_default().into_bytes();
    if stdin.len() > MAX_STDIN_BYTES {
        return Err(ApiError::invalid(
            "invalid_stdin",
            format!("stdin is limited to {MAX_STDIN_BYTES} bytes"),
        ));
    }
    let request = ExecRequest {
        argv: argv.into_vec(),
        working_dir: working_dir.as_str().to_string(),
        env: Vec::new(),
        stdin,
        timeout,
        output_cap: state.config.max_output_bytes,
    };
    Ok((session_id, request))
}

/// The audit line (target `brig::audit`) carries the request id through the
/// enclosing HTTP span.
pub async fn execute(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let (session_id, request) = validate(&state, body)?;
    let argv = serde_json::to_string(&request.argv).unwrap_or_default();
    let result = state.sessions.execute(&principal.owner(), &session_id, request).await;
    let executed = match result {
        Ok(executed) => executed,
        Err(err) => {
            tracing::info!(
                target: "brig::audit",
                principal = %principal.name, session_id = %session_id, argv, error = %err,
                "execute failed"
            );
            return Err(err.into());
        }
    };
    let outcome = &executed.outcome;
    tracing::info!(
        target: "brig::audit",
        principal = %principal.name,
        session_id = %session_id,
        argv,
        exit_code = outcome.exit_code,
        timed_out = outcome.timed_out,
        duration_ms = executed.elapsed.as_secs_f64() * 1000.0,
        stdout_bytes = outcome.stdout_bytes,
        stderr_bytes = outcome.stderr_bytes,
        session_created = executed.created,
        "execute"
    );
    Ok(Json(ExecuteResponse {
        session_id: session_id.to_string(),
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        timed_out: outcome.timed_out,
        truncated: outcome.stdout_truncated || outcome.stderr_truncated,
        execution_time: executed.elapsed.as_secs_f64(),
        started_at: rfc3339(executed.started_at),
        finished_at: rfc3339(executed.finished_at),
        session_created: executed.created,
    }))
}
