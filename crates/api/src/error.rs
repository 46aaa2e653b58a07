//! The one error type at the HTTP edge: every failure becomes
//! `{"error": "<stable code>", "detail": "<message>"}` with the right status.
//! Internal failures get an opaque detail; their cause goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_core::policy::PolicyError;
use brig_core::runtime::RuntimeError;
use brig_core::sessions::SessionError;
use brig_core::store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized(&'static str),
    RateLimited {
        retry_after_secs: u64,
    },
    NotFound(&'static str),
    Invalid {
        code: &'static str,
        detail: String,
    },
    CommandNotAllowed(String),
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    Unavailable {
        code: &'static str,
        detail: String,
        retry_after_secs: u64,
    },
    SandboxBusy,
    QuotaExceeded,
    /// A policy cooldown has not passed yet.
    Cooldown {
        rule: String,
        retry_after_secs: u64,
    },
    BadGateway(String),
    Internal(String),
    /// Any other client error with its own status and code.
    Status {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl ApiError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            detail: detail.into(),
        }
    }
}

impl ApiError {
    /// Status, stable code, detail and `Retry-After` seconds.
    pub fn parts(self) -> (StatusCode, &'static str, String, Option<u64>) {
        self.count();
        match self {
            ApiError::Unauthorized(detail) => (StatusCode::UNAUTHORIZED, "unauthorized", detail.to_string(), None),
            ApiError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit exceeded; retry in {retry_after_secs} s"),
                Some(retry_after_secs),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", format!("{what} not found"), None),
            ApiError::Invalid { code, detail } => (StatusCode::UNPROCESSABLE_ENTITY, code, detail, None),
            ApiError::CommandNotAllowed(detail) => (StatusCode::FORBIDDEN, "command_not_allowed", detail, None),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large".into(),
                None,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json".into(),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed".into(),
                None,
            ),
            ApiError::Unavailable {
                code,
                detail,
                retry_after_secs,
            } => (StatusCode::SERVICE_UNAVAILABLE, code, detail, Some(retry_after_secs)),
            ApiError::SandboxBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                "sandbox_busy",
                "too many commands running in this session".into(),
                Some(1),
            ),
            ApiError::QuotaExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "session_quota_exceeded",
                "you have the maximum number of sessions; delete one or let it expire".into(),
                Some(30),
            ),
            ApiError::BadGateway(cause) => {
                tracing::error!(%cause, "sandbox protocol error");
                (
                    StatusCode::BAD_GATEWAY,
                    "sandbox_error",
                    "the sandbox answered incorrectly".into(),
                    None,
                )
            }
            ApiError::Status { status, code, detail } => (status, code, detail, None),
            ApiError::Cooldown { rule, retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "cooldown_active",
                format!("{rule} runs at most once per its cooldown; retry in {retry_after_secs} s"),
                Some(retry_after_secs),
            ),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error".into(),
                    None,
                )
            }
        }
    }
}

impl ApiError {
    /// The rejections and dependency failures `/metrics` counts.
    fn count(&self) {
        use brig_core::metrics as names;
        match self {
            ApiError::RateLimited { .. } => metrics::counter!(names::RATE_LIMITED).increment(1),
            ApiError::QuotaExceeded => metrics::counter!(names::QUOTA_REJECTIONS, "quota" => "per_user").increment(1),
            ApiError::Unavailable { code, .. } => match *code {
                "capacity_exhausted" => metrics::counter!(names::QUOTA_REJECTIONS, "quota" => "total").increment(1),
                "store_unavailable" => metrics::counter!(names::STORE_ERRORS).increment(1),
                "engine_unavailable" => metrics::counter!(names::ENGINE_ERRORS).increment(1),
                _ => {}
            },
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail, retry_after) = self.parts();
        let mut response = (status, Json(json!({ "error": code, "detail": detail }))).into_response();
        if let Some(seconds) = retry_after {
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
        response
    }
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::NotAllowed(_) => ApiError::CommandNotAllowed(err.to_string()),
            PolicyError::WorkingDir => ApiError::invalid("invalid_working_dir", err.to_string()),
            _ => ApiError::invalid("invalid_command", err.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        let unavailable = |code, detail: &str, retry_after_secs| ApiError::Unavailable {
            code,
            detail: detail.to_string(),
            retry_after_secs,
        };
        match err {
            SessionError::NotFound => ApiError::NotFound("session"),
            SessionError::OwnerQuotaExceeded => ApiError::QuotaExceeded,
            SessionError::CapacityExhausted => {
                unavailable("capacity_exhausted", "brig is at its session capacity; retry later", 30)
            }
            SessionError::CreationContended => {
                unavailable("session_busy", "the session is still being created; retry shortly", 1)
            }
            SessionError::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(%cause, "session store unavailable");
                unavailable("store_unavailable", "the session store is unavailable", 2)
            }
            SessionError::Store(err @ StoreError::Corrupt(_)) => ApiError::Internal(err.to_string()),
            SessionError::Runtime(err) => match err {
                RuntimeError::EngineUnavailable(cause) => {
                    tracing::error!(%cause, "container engine unavailable");
                    unavailable("engine_unavailable", "the container engine is unavailable", 5)
                }
                RuntimeError::ImageMissing(image) => {
                    tracing::error!(%image, "sandbox image missing");
                    unavailable("engine_unavailable", "the sandbox image is not available", 30)
                }
                RuntimeError::SandboxNotFound | RuntimeError::ChannelClosed => unavailable(
                    "sandbox_unavailable",
                    "the session's sandbox stopped; retry to get a new one",
                    1,
                ),
                RuntimeError::AgentUnresponsive => unavailable(
                    "sandbox_unresponsive",
                    "the session's sandbox stopped answering and was removed",
                    1,
                ),
                RuntimeError::Busy(_) => ApiError::SandboxBusy,
                RuntimeError::FileNotFound(detail) => ApiError::Status {
                    status: StatusCode::NOT_FOUND,
                    code: "file_not_found",
                    detail,
                },
                RuntimeError::FileRefused(detail) => ApiError::Status {
                    status: StatusCode::CONFLICT,
                    code: "file_refused",
                    detail,
                },
                RuntimeError::FileTooLarge(detail) => ApiError::Status {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "file_too_large",
                    detail,
                },
                RuntimeError::InvalidRequest(detail) => ApiError::invalid("invalid_request", detail),
                RuntimeError::Protocol(cause) => ApiError::BadGateway(cause),
                err @ (RuntimeError::Engine(_) | RuntimeError::SpawnFailed(_)) => ApiError::Internal(err.to_string()),
            },
        }
    }
}
