//! `POST /sessions`, `GET /sessions`, `GET|DELETE /sessions/{session_id}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use brig_core::session::{SessionId, SessionRecord};
use brig_core::SandboxConfig;
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::session_in_path;
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    pub session_id: Option<String>,
    /// Like `CONTAINER_MEM_LIMIT` (`200m`); clamped to it.
    pub memory_limit: Option<String>,
    /// CPUs; clamped to `CONTAINER_CPU_LIMIT`.
    pub cpu_limit: Option<f64>,
    /// `CONTAINER_IMAGE` or one of `ALLOWED_IMAGES`.
    pub image: Option<String>,
    /// `CONTAINER_RUNTIME` or one of `ALLOWED_RUNTIMES` (e.g. `runsc`).
    pub runtime: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub image: String,
    pub runtime: String,
    /// Bytes.
    pub memory_limit: i64,
    pub cpu_limit: f64,
}

impl SessionView {
    fn of(record: &SessionRecord, sandbox: &SandboxConfig) -> Self {
        let at = |ms: i64| rfc3339(Utc.timestamp_millis_opt(ms).single().unwrap_or_default());
        let options = &record.options;
        SessionView {
            session_id: record.session_id.clone(),
            created_at: at(record.created_at_ms),
            expires_at: at(record.expires_at_ms),
            image: options.image.clone().unwrap_or_else(|| sandbox.image.clone()),
            runtime: options.runtime.clone().unwrap_or_else(|| sandbox.runtime.clone()),
            memory_limit: options.memory_bytes.unwrap_or(sandbox.memory_bytes),
            cpu_limit: options.nano_cpus.map_or(sandbox.cpus, |n| n as f64 / 1e9),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// The body is optional: empty means "generate an id"; otherwise it must be JSON.
fn parse_create_body(headers: &HeaderMap, body: &Bytes) -> Result<CreateSessionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateSessionBody::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|err| ApiError::invalid("invalid_body", err.to_string()))
}

#[utoipa::path(
    post, path = "/sessions", operation_id = "createSession", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    request_body(content = Option<CreateSessionBody>, description = "optional; empty: a random id"),
    responses(
        (status = 201, description = "Created", body = SessionView),
        (status = 200, description = "Existed already", body = SessionView),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let body = parse_create_body(&headers, &body)?;
    let id = match body.session_id {
        Some(id) => SessionId::parse(&id)?,
        None => SessionId::random(),
    };
    let options = state.config.sandbox.session_options(
        body.image.as_deref(),
        body.runtime.as_deref(),
        body.memory_limit.as_deref(),
        body.cpu_limit,
    )?;
    let (record, created) = state.sessions.open_with(&principal.owner(), &id, &options).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(SessionView::of(&record, &state.config.sandbox))))
}

#[utoipa::path(get, path = "/sessions", operation_id = "listSessions", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The caller's sessions", body = SessionList)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<SessionList>, ApiError> {
    let records = state.sessions.list(&principal.owner()).await?;
    Ok(Json(SessionList {
        sessions: records
            .iter()
            .map(|record| SessionView::of(record, &state.config.sandbox))
            .collect(),
    }))
}

#[utoipa::path(get, path = "/sessions/{session_id}", operation_id = "getSession", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses((status = 200, description = "The session", body = SessionView)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let record = state.sessions.get(&principal.owner(), &session_in_path(&id)?).await?;
    Ok(Json(SessionView::of(&record, &state.config.sandbox)))
}

#[utoipa::path(delete, path = "/sessions/{session_id}", operation_id = "deleteSession", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses((status = 204, description = "Removed with its sandbox")))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .sessions
        .delete(&principal.owner(), &session_in_path(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
