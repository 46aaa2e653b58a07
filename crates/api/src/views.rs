//! Bodies that several transports share (JSON, SSE, MCP, executions): the
//! execute request, what came of a command, how an execution looks to clients.

use brig_core::session::Executed;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Timestamps as clients see them: RFC 3339, milliseconds, `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The body of `/execute` and `/executions`.
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

/// An error as a body (`{"error", "detail"}`) where it is not an HTTP answer:
/// an SSE `error` event, a failed execution, a refused MCP tool call.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub error: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    TimedOut,
    Cancelled,
    Failed,
}

/// An execution as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionView {
    pub execution_id: String,
    pub session_id: String,
    pub status: Status,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub result: Option<ExecutionResult>,
    /// Why an execution failed (`status: failed`): the error `/execute` would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}
