//! The one error type at the HTTP edge: every failure becomes
//! `{"error": "<stable code>", "detail": "<message>"}` with the right status.
//!
//! One variant per failure and one `match` per property (status, code,
//! detail, `Retry-After`); all of them pure. Logging and counting happen once,
//! in [`ApiError::observe`]: the [`observe_errors`] middleware calls it for
//! every HTTP answer, and the transports that report an error in a body
//! instead (an SSE `error` event, a failed execution, a refused MCP tool
//! call) call it themselves. Internal failures get an opaque detail; their
//! cause goes to the log only.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_core::config::OptionsError;
use brig_core::policy::PolicyError;
use brig_core::runtime::RuntimeError;
use brig_core::session::InvalidSessionId;
use brig_core::session::SessionError;
use brig_core::store::StoreError;

use crate::views::Failure;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized(&'static str),
    RateLimited {
        retry_after_secs: u64,
    },
    /// The source address failed to authenticate too often.
    AuthRateLimited {
        retry_after_secs: u64,
    },
    /// The principal leaves `MAX_UNREAD_RESPONSE_BYTES` of answers unread.
    UnreadResponses,
    NotFound(&'static str),
    /// Invalid input (422), with its stable code.
    Invalid {
        code: &'static str,
        detail: String,
    },
    CommandNotAllowed(String),
    /// A session asked for egress the operator's `EGRESS_ALLOWED` does not grant.
    EgressNotAllowed(String),
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    /// The owner has `MAX_SESSIONS_PER_USER` sessions; the soonest expires then.
    QuotaExceeded {
        retry_after_secs: u64,
    },
    /// The deployment has `MAX_SESSIONS` sessions.
    CapacityExhausted,
    /// Someone else is still creating this session.
    SessionBusy,
    /// Too many commands run in the session.
    SandboxBusy,
    /// A policy cooldown has not passed yet.
    Cooldown {
        rule: String,
        retry_after_secs: u64,
    },
    /// The session store did not answer (the cause is logged, not shown).
    StoreUnavailable(String),
    /// The container engine did not answer (the cause is logged, not shown).
    EngineUnavailable(String),
    /// The sandbox image is missing on the engine.
    ImageMissing(String),
    /// The session's sandbox stopped; a retry gets a new one.
    SandboxUnavailable,
    /// The session's agent stopped answering; its sandbox was removed.
    SandboxUnresponsive,
    /// The sandbox's agent broke the protocol.
    SandboxProtocol(String),
    /// `/ready`: a dependency is not usable.
    NotReady(String),
    FileNotFound(String),
    FileRefused(String),
    FileTooLarge(String),
    /// An optional feature that this deployment has not configured.
    NotEnabled(&'static str),
    /// The session exists where a new one was asked for (`from_snapshot`).
    SessionExists(String),
    /// A command runs in the session being suspended.
    SessionInUse,
    /// The session lives on another node (named), which alone serves it.
    WrongNode(brig_core::node::NodeRef),
    /// The node holding the session stopped heartbeating (named): its
    /// sessions wait to be recreated on a live node.
    NodeLost(String),
    /// The node holding the session did not take the forwarded request (named, why).
    NodeUnreachable(String),
    /// A request signed as forwarded by another node whose signature does not hold (why).
    ForwardRefused(&'static str),
    /// A drain that could not move sessions: each node keeps its own snapshots.
    SnapshotsNotShared,
    /// An operators' endpoint, for principals with the `admin` role.
    AdminOnly,
    /// Stdin or a signal for an execution that has ended (or whose stdin is closed).
    ExecutionNotRunning(String),
    /// An output offset that has left the execution's buffer (or the buffer itself).
    CursorExpired(String),
    /// A stdin chunk past the protocol's bound.
    StdinTooLarge,
    /// A WebSocket endpoint asked for without the upgrade.
    UpgradeRequired,
    /// Another run of the code context is under way.
    ContextBusy,
    /// A suspended session could not get its workspace back (it stays suspended).
    ResumeFailed(String),
    /// A snapshot would pass the principal's quota (named).
    SnapshotQuota(String),
    /// The snapshot directory could not be used (named).
    SnapshotStoreUnavailable(String),
    /// A kept result (an execution's, an idempotent answer) was evicted to
    /// keep its principal within `RESULT_STORE_QUOTA_BYTES`.
    ResultEvicted,
    /// The first request with this `Idempotency-Key` still runs.
    IdempotencyInProgress,
    /// The process stopped waiting for the command (shutdown grace over) and
    /// cancelled it; another replica, or this one restarted, can run it.
    ShuttingDown,
    /// The language model did not answer in time.
    LlmTimeout,
    LlmUnavailable(String),
    LlmBadReply(String),
    Internal(String),
}

impl ApiError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NotFound(_) | FileNotFound(_) | NotEnabled(_) => StatusCode::NOT_FOUND,
            Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CommandNotAllowed(_) | EgressNotAllowed(_) | AdminOnly => StatusCode::FORBIDDEN,
            WrongNode(_) => StatusCode::MISDIRECTED_REQUEST,
            NodeLost(_) | NodeUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SnapshotsNotShared => StatusCode::CONFLICT,
            ForwardRefused(_) => StatusCode::UNAUTHORIZED,
            PayloadTooLarge | FileTooLarge(_) | SnapshotQuota(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            FileRefused(_)
            | IdempotencyInProgress
            | SessionExists(_)
            | SessionInUse
            | ExecutionNotRunning(_)
            | ContextBusy => StatusCode::CONFLICT,
            StdinTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            CursorExpired(_) => StatusCode::GONE,
            RateLimited { .. }
            | AuthRateLimited { .. }
            | UnreadResponses
            | QuotaExceeded { .. }
            | SandboxBusy
            | Cooldown { .. } => StatusCode::TOO_MANY_REQUESTS,
            CapacityExhausted
            | SessionBusy
            | StoreUnavailable(_)
            | EngineUnavailable(_)
            | ImageMissing(_)
            | SandboxUnavailable
            | SandboxUnresponsive
            | NotReady(_)
            | ShuttingDown
            | ResumeFailed(_)
            | SnapshotStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SandboxProtocol(_) | LlmUnavailable(_) | LlmBadReply(_) => StatusCode::BAD_GATEWAY,
            LlmTimeout => StatusCode::GATEWAY_TIMEOUT,
            ResultEvicted => StatusCode::GONE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            Unauthorized(_) => "unauthorized",
            RateLimited { .. } => "rate_limited",
            UnreadResponses => "unread_responses",
            AuthRateLimited { .. } => "auth_rate_limited",
            NotFound(_) => "not_found",
            Invalid { code, .. } => code,
            CommandNotAllowed(_) => "command_not_allowed",
            EgressNotAllowed(_) => "egress_not_allowed",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            MethodNotAllowed => "method_not_allowed",
            QuotaExceeded { .. } => "session_quota_exceeded",
            CapacityExhausted => "capacity_exhausted",
            SessionBusy => "session_busy",
            SandboxBusy => "sandbox_busy",
            Cooldown { .. } => "cooldown_active",
            StoreUnavailable(_) => "store_unavailable",
            EngineUnavailable(_) | ImageMissing(_) => "engine_unavailable",
            SandboxUnavailable => "sandbox_unavailable",
            SandboxUnresponsive => "sandbox_unresponsive",
            SandboxProtocol(_) => "sandbox_error",
            NotReady(_) => "not_ready",
            FileNotFound(_) => "file_not_found",
            FileRefused(_) => "file_refused",
            FileTooLarge(_) => "file_too_large",
            NotEnabled(_) => "not_enabled",
            SnapshotQuota(_) => "snapshot_quota_exceeded",
            SessionExists(_) => "session_exists",
            SessionInUse => "session_in_use",
            WrongNode(_) => "wrong_node",
            NodeLost(_) => "node_lost",
            SnapshotsNotShared => "snapshots_not_shared",
            NodeUnreachable(_) => "node_unreachable",
            ForwardRefused(_) => "forward_refused",
            AdminOnly => "admin_only",
            ExecutionNotRunning(_) => "execution_not_running",
            CursorExpired(_) => "cursor_expired",
            StdinTooLarge => "stdin_too_large",
            UpgradeRequired => "upgrade_required",
            ContextBusy => "context_busy",
            ResumeFailed(_) => "resume_failed",
            SnapshotStoreUnavailable(_) => "snapshot_store_unavailable",
            IdempotencyInProgress => "idempotency_in_progress",
            ResultEvicted => "result_evicted",
            ShuttingDown => "shutting_down",
            LlmTimeout => "llm_timeout",
            LlmUnavailable(_) => "llm_unavailable",
            LlmBadReply(_) => "llm_bad_reply",
            Internal(_) => "internal_error",
        }
    }

    /// The message for people; never an internal cause.
    pub fn detail(&self) -> String {
        use ApiError::*;
        match self {
            Unauthorized(detail) => detail.to_string(),
            RateLimited { retry_after_secs } => format!("rate limit exceeded; retry in {retry_after_secs} s"),
            AuthRateLimited { retry_after_secs } => format!(
                "too many failed authentications from your address (AUTH_FAILURES_PER_MINUTE); retry in \
                 {retry_after_secs} s"
            ),
            UnreadResponses => "your clients have not read earlier answers (MAX_UNREAD_RESPONSE_BYTES): read them or \
                                close those connections, then retry"
                .into(),
            NotFound(what) => format!("{what} not found"),
            Invalid { detail, .. } | CommandNotAllowed(detail) | EgressNotAllowed(detail) | NotReady(detail) => {
                detail.clone()
            }
            FileNotFound(detail) | FileRefused(detail) | FileTooLarge(detail) => detail.clone(),
            SnapshotQuota(detail) | SnapshotStoreUnavailable(detail) | SessionExists(detail) | ResumeFailed(detail) => {
                detail.clone()
            }
            SessionInUse => "a command runs in the session: suspend it once the command ends".into(),
            WrongNode(node) => {
                format!("the session lives on node {node}, which alone serves it: send its requests to that node")
            }
            NodeLost(node) => format!(
                "the session's node {node} stopped heartbeating: the session is being recreated on a live node \
                 (from its latest snapshot if it has one); retry shortly"
            ),
            NodeUnreachable(why) => format!("the session's node could not be reached: {why}; retry shortly"),
            ForwardRefused(why) => format!("a forwarded request's node signature was refused: {why}"),
            SnapshotsNotShared => "a drain moves sessions by suspending them on one node and resuming them on \
                                   another: the nodes must share their snapshots (SNAPSHOT_STORE=s3, or a shared \
                                   SNAPSHOT_DIR declared with SNAPSHOT_DIR_SHARED=true)"
                .into(),
            AdminOnly => "for operators: a principal with the admin role (a token's role claim, or the policy \
                          file's api_key_roles)"
                .into(),
            ExecutionNotRunning(detail) | CursorExpired(detail) => detail.clone(),
            UpgradeRequired => "this endpoint is a WebSocket: connect with `Upgrade: websocket`".into(),
            ContextBusy => "another run of this context is under way: wait for it, or interrupt it".into(),
            StdinTooLarge => format!(
                "a stdin chunk is at most {} bytes (MAX_STDIN_CHUNK_BYTES): send it in parts",
                brig_protocol::MAX_STDIN_BYTES
            ),
            PayloadTooLarge => "request body too large".into(),
            UnsupportedMediaType => "expected Content-Type: application/json".into(),
            MethodNotAllowed => "method not allowed".into(),
            QuotaExceeded { retry_after_secs } => format!(
                "you have the maximum number of sessions (MAX_SESSIONS_PER_USER; every new session_id on /execute \
                 creates one): delete one, or retry in {retry_after_secs} s when the soonest expires"
            ),
            CapacityExhausted => "brig is at its session capacity; retry later".into(),
            SessionBusy => "the session is still being created; retry shortly".into(),
            SandboxBusy => "too many commands running in this session".into(),
            Cooldown { rule, retry_after_secs } => {
                format!("{rule} runs at most once per its cooldown; retry in {retry_after_secs} s")
            }
            StoreUnavailable(_) => "the session store is unavailable".into(),
            EngineUnavailable(_) => "the container engine is unavailable".into(),
            ImageMissing(_) => "the sandbox image is not available".into(),
            SandboxUnavailable => "the session's sandbox stopped; retry to get a new one".into(),
            SandboxUnresponsive => "the session's sandbox stopped answering and was removed".into(),
            SandboxProtocol(_) => "the sandbox answered incorrectly".into(),
            NotEnabled(detail) => detail.to_string(),
            IdempotencyInProgress => "a request with this Idempotency-Key is still running".into(),
            ResultEvicted => "this result was evicted to keep your stored results within RESULT_STORE_QUOTA_BYTES \
                              (the command ran; it is not run again)"
                .into(),
            ShuttingDown => "brig-api stopped before the command finished and cancelled it; retry".into(),
            LlmTimeout => "the language model did not answer in time".into(),
            LlmUnavailable(detail) => detail.clone(),
            LlmBadReply(detail) => format!("the language model's reply held no usable code: {detail}"),
            Internal(_) => "internal error".into(),
        }
    }

    /// Seconds for `Retry-After`, where retrying later can help.
    pub fn retry_after(&self) -> Option<u64> {
        use ApiError::*;
        match self {
            RateLimited { retry_after_secs }
            | AuthRateLimited { retry_after_secs }
            | Cooldown { retry_after_secs, .. }
            | QuotaExceeded { retry_after_secs } => Some(*retry_after_secs),
            UnreadResponses => Some(5),
            SandboxBusy | SessionBusy | SandboxUnavailable | SandboxUnresponsive | ShuttingDown
            | NodeUnreachable(_) => Some(1),
            NodeLost(_) => Some(2),
            StoreUnavailable(_) | NotReady(_) => Some(2),
            EngineUnavailable(_) => Some(5),
            CapacityExhausted | ImageMissing(_) => Some(30),
            _ => None,
        }
    }

    /// The body form, for transports that report errors inside a 200 answer.
    pub fn failure(&self) -> Failure {
        Failure {
            error: self.code().into(),
            detail: self.detail(),
        }
    }

    /// Logs (server faults at `error`, client faults at `debug`) and counts
    /// the rejections and dependency failures `/metrics` shows. The one place
    /// that does either.
    pub fn observe(&self) {
        use brig_core::metrics as names;
        use ApiError::*;
        match self {
            RateLimited { .. } | AuthRateLimited { .. } => metrics::counter!(names::RATE_LIMITED).increment(1),
            QuotaExceeded { .. } => metrics::counter!(names::QUOTA_REJECTIONS, "quota" => "per_user").increment(1),
            CapacityExhausted => metrics::counter!(names::QUOTA_REJECTIONS, "quota" => "total").increment(1),
            StoreUnavailable(cause) => {
                metrics::counter!(names::STORE_ERRORS).increment(1);
                tracing::error!(%cause, "session store unavailable");
            }
            EngineUnavailable(cause) => {
                metrics::counter!(names::ENGINE_ERRORS).increment(1);
                tracing::error!(%cause, "container engine unavailable");
            }
            ImageMissing(image) => {
                metrics::counter!(names::ENGINE_ERRORS).increment(1);
                tracing::error!(%image, "sandbox image missing");
            }
            SandboxProtocol(cause) => tracing::error!(%cause, "sandbox protocol error"),
            Internal(cause) => tracing::error!(%cause, "internal error"),
            other => tracing::debug!(code = other.code(), detail = %other.detail(), "request refused"),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.detail())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.failure())).into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"brig\", ApiKey header=\"X-API-Key\""),
            );
        }
        // Where the session is, for whoever sends the request on.
        if let ApiError::WrongNode(node) = &self {
            // Its id only: where it is reached is the registry's to say.
            if let Ok(value) = HeaderValue::from_str(&node.id) {
                response.headers_mut().insert(OWNER, value);
            }
        }
        // For `observe_errors`, which logs and counts inside the request's span.
        response.extensions_mut().insert(Arc::new(self));
        response
    }
}

/// A 421 names the session's node in this, for the node (or client) that
/// sends the request on.
pub const OWNER: &str = "x-brig-owner";

/// Middleware: logs and counts every error answer (once, in the request span).
pub async fn observe_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if let Some(err) = response.extensions().get::<Arc<ApiError>>() {
        err.observe();
    }
    response
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::NotAllowed { .. } => ApiError::CommandNotAllowed(err.to_string()),
            PolicyError::WorkingDir => ApiError::invalid("invalid_working_dir", err.to_string()),
            _ => ApiError::invalid("invalid_command", err.to_string()),
        }
    }
}

impl From<InvalidSessionId> for ApiError {
    fn from(err: InvalidSessionId) -> Self {
        ApiError::invalid("invalid_session_id", err.to_string())
    }
}

impl From<OptionsError> for ApiError {
    fn from(err: OptionsError) -> Self {
        let code = match err {
            OptionsError::ImageNotAllowed(_) => "image_not_allowed",
            OptionsError::RuntimeNotAllowed(_) => "runtime_not_allowed",
            _ => "invalid_limits",
        };
        ApiError::invalid(code, err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => ApiError::StoreUnavailable(cause.to_string()),
            err @ StoreError::Corrupt(_) => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::EngineUnavailable(cause) => ApiError::EngineUnavailable(cause.to_string()),
            RuntimeError::ImageMissing(image) => ApiError::ImageMissing(image),
            RuntimeError::SandboxNotFound | RuntimeError::ChannelClosed => ApiError::SandboxUnavailable,
            RuntimeError::AgentUnresponsive => ApiError::SandboxUnresponsive,
            RuntimeError::Busy(_) => ApiError::SandboxBusy,
            RuntimeError::FileNotFound(detail) => ApiError::FileNotFound(detail),
            RuntimeError::FileRefused(detail) => ApiError::FileRefused(detail),
            RuntimeError::FileTooLarge(detail) => ApiError::FileTooLarge(detail),
            RuntimeError::InvalidRequest(detail) => ApiError::invalid("invalid_request", detail),
            RuntimeError::Protocol(cause) => ApiError::SandboxProtocol(cause),
            RuntimeError::NotReady(detail) => ApiError::NotReady(detail),
            RuntimeError::NotRunning(detail) => ApiError::ExecutionNotRunning(detail),
            RuntimeError::CursorExpired(detail) => ApiError::CursorExpired(format!(
                "{detail}: it keeps the last EXECUTION_BUFFER_BYTES of each stream; read from a later offset"
            )),
            RuntimeError::ExecutionNotFound => ApiError::CursorExpired(
                "the sandbox no longer keeps this execution's output (its container was replaced, or newer \
                 executions took its place)"
                    .into(),
            ),
            err @ (RuntimeError::Engine(_) | RuntimeError::SpawnFailed(_)) => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<brig_core::snapshot::SnapshotError> for ApiError {
    fn from(err: brig_core::snapshot::SnapshotError) -> Self {
        use brig_core::snapshot::SnapshotError;
        match err {
            SnapshotError::NotFound => ApiError::NotFound("snapshot"),
            SnapshotError::QuotaExceeded(detail) => ApiError::SnapshotQuota(detail),
            // The sandbox's stream broke: the cause is logged by the caller.
            SnapshotError::Source(_) => ApiError::SandboxUnavailable,
            SnapshotError::Storage(detail) => ApiError::SnapshotStoreUnavailable(detail),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::NotFound => ApiError::NotFound("session"),
            SessionError::OwnerQuotaExceeded { frees_in } => ApiError::QuotaExceeded {
                retry_after_secs: frees_in.as_secs_f64().ceil().max(1.0) as u64,
            },
            SessionError::CapacityExhausted => ApiError::CapacityExhausted,
            SessionError::CreationContended => ApiError::SessionBusy,
            SessionError::InUse => ApiError::SessionInUse,
            SessionError::Elsewhere(node) => ApiError::WrongNode(node),
            SessionError::ResumeFailed(detail) => ApiError::ResumeFailed(detail),
            SessionError::Snapshot(err) => err.into(),
            SessionError::Store(err) => err.into(),
            SessionError::Runtime(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_never_reach_the_body() {
        for err in [
            ApiError::Internal("/var/lib/docker/secret".into()),
            ApiError::StoreUnavailable("redis://10.0.0.1".into()),
            ApiError::EngineUnavailable("unix:///var/run/docker.sock".into()),
            ApiError::SandboxProtocol("frame 0xdeadbeef".into()),
        ] {
            let failure = err.failure();
            assert!(
                !failure.detail.contains('/') && !failure.detail.contains("0x"),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn dependency_failures_say_when_to_retry() {
        for err in [
            ApiError::StoreUnavailable(String::new()),
            ApiError::EngineUnavailable(String::new()),
            ApiError::CapacityExhausted,
            ApiError::SessionBusy,
        ] {
            assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(err.retry_after().is_some(), "{err:?}");
        }
    }
}
