//! `POST /sessions`, `GET /sessions`, `GET|DELETE /sessions/{session_id}`,
//! `POST /sessions/{session_id}/suspend`, `POST /sessions/{session_id}/renew`, `GET|PUT /sessions/{session_id}/network`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::session_in_path;
use crate::json::ApiJson;
use crate::service::sessions::{checked_allow_list, checked_ttl, open_session};
use crate::state::AppState;
use crate::views::{CreateSessionBody, NetworkBody, NetworkView, RenewBody, SessionList, SessionView};

/// An optional JSON body: empty means every default.
fn parse_optional_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !crate::json::is_json(headers) {
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
    let body: CreateSessionBody = parse_optional_body(&headers, &body)?;
    let (view, created) = open_session(state.session_setup(&principal), &principal, body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)))
}

#[utoipa::path(get, path = "/sessions", operation_id = "listSessions", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The caller's sessions", body = SessionList)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<SessionList>, ApiError> {
    let records = state.sessions.list(&principal.owner()).await?;
    Ok(Json(SessionList {
        sessions: records.iter().map(|record| state.session_view(record)).collect(),
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
    Ok(Json(state.session_view(&record)))
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

#[utoipa::path(post, path = "/sessions/{session_id}/suspend", operation_id = "suspendSession", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses(
        (status = 200, description = "Suspended: the workspace kept, the container removed; the next use resumes it", body = SessionView),
        (status = 409, description = "A command runs in the session (session_in_use)", body = crate::views::Failure),
    ))]
pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let record = state
        .sessions
        .suspend(&principal.owner(), &session_in_path(&id)?)
        .await?;
    Ok(Json(state.session_view(&record)))
}

#[utoipa::path(post, path = "/sessions/{session_id}/renew", operation_id = "renewSession", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    request_body(content = Option<RenewBody>, description = "optional; `ttl_seconds` sets the session's idle TTL"),
    responses((status = 200, description = "Its expiry pushed one TTL on (suspended: one retention)", body = SessionView)))]
pub async fn renew(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_in_path(&id)?;
    let body: RenewBody = parse_optional_body(&headers, &body)?;
    let ttl = checked_ttl(body.ttl_seconds, state.config.max_session_ttl)?;
    let record = state.sessions.renew(&principal.owner(), &id, ttl).await?;
    Ok(Json(state.session_view(&record)))
}

fn network_view(state: &AppState, record: &brig_core::session::SessionRecord) -> NetworkView {
    let egress = &state.config.egress;
    let default: Vec<String> = egress.default.patterns().iter().map(ToString::to_string).collect();
    NetworkView {
        enabled: state.sessions.has_egress(record),
        allow: record.options.egress.clone(),
        default,
    }
}

#[utoipa::path(get, path = "/sessions/{session_id}/network", operation_id = "getSessionNetwork", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses((status = 200, description = "What the session may reach", body = NetworkView)))]
pub async fn get_network(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<NetworkView>, ApiError> {
    let record = state.sessions.get(&principal.owner(), &session_in_path(&id)?).await?;
    Ok(Json(network_view(&state, &record)))
}

#[utoipa::path(put, path = "/sessions/{session_id}/network", operation_id = "setSessionNetwork", tag = "sessions", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    request_body = NetworkBody,
    responses((status = 200, description = "The new list; new connections follow it", body = NetworkView)))]
pub async fn put_network(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NetworkBody>,
) -> Result<Json<NetworkView>, ApiError> {
    let id = session_in_path(&id)?;
    let allow = checked_allow_list(
        &state.config.egress,
        state.egress_grant(&principal).as_ref(),
        &body.allow,
    )?;
    let record = state.sessions.set_egress(&principal.owner(), &id, allow).await?;
    Ok(Json(network_view(&state, &record)))
}
