//! Bodies that several transports share (JSON, SSE, MCP, executions): the
//! execute request, what came of a command, how an execution looks to clients,
//! a session.

use brig_core::session::{Executed, SessionRecord};
use brig_core::SandboxConfig;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
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
    /// Bytes fed to stdin, which then ends. On `/executions`, the string
    /// `"pipe"` instead keeps stdin open for `POST /executions/{id}/stdin`.
    pub stdin: Option<String>,
    /// Environment variables for the command (names `[A-Za-z_][A-Za-z0-9_]*`;
    /// brig's own, `PATH`, `HOME`, `BRIG_*` and the proxy variables, are refused).
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// `/executions` only: run under a terminal of this size (output as
    /// stdout, stdin a pipe; `GET /executions/{id}/attach` for a WebSocket).
    pub tty: Option<TtyBody>,
}

/// A terminal's size, in characters.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtyBody {
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: u16,
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: u16,
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
    /// Either stream was cut at `MAX_OUTPUT_BYTES`.
    pub truncated: bool,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// How the command ended.
    #[serde(default)]
    pub reason: Reason,
    pub execution_time: f64,
    pub started_at: String,
    pub finished_at: String,
    pub session_created: bool,
    /// The session was suspended: this command resumed it (a new container,
    /// its workspace restored).
    #[serde(default)]
    pub session_resumed: bool,
    /// Present once another node recreated the session after its own node
    /// was lost, as `GET /sessions/{id}` shows: its workspace is then the
    /// snapshot named here, or started empty (`snapshot_id` absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_recreated: Option<RecreationView>,
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
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            reason: Reason::of(outcome),
            execution_time: executed.elapsed.as_secs_f64(),
            started_at: rfc3339(executed.started_at),
            finished_at: rfc3339(executed.finished_at),
            session_created: executed.created,
            session_resumed: executed.resumed,
            session_recreated: executed.record.recreated.as_ref().map(RecreationView::of),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It exited by itself (`exit_code` says how).
    #[default]
    Exited,
    /// A signal ended it (`signal` says which): sent by the client, or by itself.
    Signalled,
    /// Its deadline passed; brig killed its process tree.
    TimedOut,
    /// It was cancelled (by a client, or its connection or brig going away).
    Cancelled,
    /// The sandbox ran out of memory and the kernel killed it.
    OomKilled,
}

impl Reason {
    pub fn of(outcome: &brig_core::ExecOutcome) -> Self {
        if outcome.cancelled {
            Reason::Cancelled
        } else if outcome.timed_out {
            Reason::TimedOut
        } else if outcome.oom_killed {
            Reason::OomKilled
        } else if outcome.signal.is_some() {
            Reason::Signalled
        } else {
            Reason::Exited
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

/// The body of `POST /sessions` (and MCP's `create_session`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    pub session_id: Option<String>,
    /// Like `CONTAINER_MEM_LIMIT` (`200m`); clamped to it.
    pub memory_limit: Option<String>,
    /// CPUs; clamped to `CONTAINER_CPU_LIMIT`, and raised to 0.1.
    pub cpu_limit: Option<f64>,
    /// `CONTAINER_IMAGE` or one of `ALLOWED_IMAGES`.
    pub image: Option<String>,
    /// `CONTAINER_RUNTIME` or one of `ALLOWED_RUNTIMES` (e.g. `runsc`).
    pub runtime: Option<String>,
    /// Egress: the hosts the session's commands may reach through the proxy
    /// (within `EGRESS_ALLOWED`); none by default.
    pub network: Option<NetworkBody>,
    /// A snapshot of the caller's (`POST /sessions/{id}/snapshots`) whose
    /// workspace the new session starts with, as an independent copy. The
    /// session must not exist yet (409 otherwise).
    pub from_snapshot: Option<String>,
    /// The session's idle TTL: how long it lives unused (default
    /// `SESSION_TTL_SECONDS`, at most `MAX_SESSION_TTL_SECONDS`).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
    /// Environment variables every command of the session gets (a command's
    /// own `env` wins), checked like a command's.
    pub env: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /sessions/{id}/renew`'s optional body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// A new idle TTL for the session (at most `MAX_SESSION_TTL_SECONDS`).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A session's own egress allow-list.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkBody {
    /// Patterns: `host`, `*.domain`, an IP address or CIDR, each with an
    /// optional `:port` (`[v6]:port`), or `*`; at most 256.
    #[schema(example = json!(["pypi.org", "*.pythonhosted.org", "api.example.com:443"]))]
    pub allow: Vec<String>,
}

/// What a session may reach (`GET`/`PUT /sessions/{id}/network`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NetworkView {
    /// The session's own patterns.
    pub allow: Vec<String>,
    /// `EGRESS_DEFAULT`: patterns every session has.
    pub default: Vec<String>,
    /// Whether the session's commands get the proxy environment (it has a pattern).
    pub enabled: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    /// `active`; `suspended` (no container: its workspace waits in a
    /// snapshot until its next use resumes it, or `expires_at` drops it);
    /// `starting`, `suspending`, `resuming` in between.
    #[schema(example = "active")]
    pub status: &'static str,
    pub created_at: String,
    /// When it expires unused (suspended: when its workspace is dropped).
    pub expires_at: String,
    /// Its idle TTL: each use pushes `expires_at` this far.
    pub ttl_seconds: u64,
    pub image: String,
    pub runtime: String,
    /// Bytes.
    pub memory_limit: i64,
    pub cpu_limit: f64,
    /// Present once another node recreated the session after its own node
    /// was lost (several nodes): its workspace is then the snapshot named
    /// here, or empty (`snapshot_id` absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recreated: Option<RecreationView>,
}

/// A session's recreation on another node (see [`SessionView::recreated`]).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecreationView {
    pub at: String,
    /// The node that was lost.
    pub lost_node: String,
    /// The snapshot its workspace was restored from; absent: it started empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

impl RecreationView {
    pub fn of(recreated: &brig_core::session::Recreation) -> Self {
        RecreationView {
            at: rfc3339(Utc.timestamp_millis_opt(recreated.at_ms).single().unwrap_or_default()),
            lost_node: recreated.lost_node.clone(),
            snapshot_id: recreated.snapshot_id.clone(),
        }
    }
}

impl SessionView {
    /// `default_ttl`: `SESSION_TTL_SECONDS`, for a session without its own.
    pub fn of(record: &SessionRecord, sandbox: &SandboxConfig, default_ttl: std::time::Duration) -> Self {
        let at = |ms: i64| rfc3339(Utc.timestamp_millis_opt(ms).single().unwrap_or_default());
        let options = &record.options;
        SessionView {
            session_id: record.session_id.clone(),
            status: record.state().as_str(),
            created_at: at(record.created_at_ms),
            expires_at: at(record.expires_at_ms),
            ttl_seconds: record.ttl_or(default_ttl).as_secs(),
            image: options.image.clone().unwrap_or_else(|| sandbox.image.clone()),
            runtime: options.runtime.clone().unwrap_or_else(|| sandbox.runtime.clone()),
            memory_limit: options.memory_bytes.unwrap_or(sandbox.memory_bytes),
            cpu_limit: options.nano_cpus.map_or(sandbox.cpus, |n| n as f64 / 1e9),
            recreated: record.recreated.as_ref().map(RecreationView::of),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}
