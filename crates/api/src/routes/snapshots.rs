//! Snapshots: `POST /sessions/{id}/snapshots` stores the session's
//! `/workspace`; `GET /snapshots`, `GET` and `DELETE /snapshots/{id}`;
//! `POST /sessions {"from_snapshot"}` starts a session from one. A
//! principal sees only its own (another's is 404).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use brig_core::snapshot::SnapshotMeta;
use serde::Serialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::session_in_path;
use crate::service::snapshots;
use crate::state::AppState;

/// One snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotView {
    pub snapshot_id: String,
    /// The session it was taken from.
    pub session_id: String,
    /// Size of the stored archive.
    pub bytes: u64,
    /// SHA-256 of the archive, checked at every restore.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<SnapshotMeta> for SnapshotView {
    fn from(meta: SnapshotMeta) -> Self {
        SnapshotView {
            created_at: crate::views::rfc3339(
                chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, meta.created_at as i64)
                    .single()
                    .unwrap_or_default(),
            ),
            snapshot_id: meta.snapshot_id,
            session_id: meta.session_id,
            bytes: meta.bytes,
            sha256: meta.sha256,
        }
    }
}

/// The caller's snapshots.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotView>,
}

#[utoipa::path(post, path = "/sessions/{session_id}/snapshots", operation_id = "createSnapshot", tag = "snapshots", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path)),
    responses((status = 201, description = "The workspace, stored", body = SnapshotView),
        (status = 413, description = "Past SNAPSHOT_QUOTA_BYTES or SNAPSHOT_QUOTA_COUNT (named); nothing stored")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    let id = session_in_path(&session_id)?;
    let meta = snapshots::take(&state.sessions, &state.snapshots, &principal.owner(), &id).await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

#[utoipa::path(get, path = "/snapshots", operation_id = "listSnapshots", tag = "snapshots", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The caller's snapshots, oldest first", body = SnapshotList)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<SnapshotList>, ApiError> {
    let listed = state.snapshots.list(&principal.owner()).await?;
    Ok(Json(SnapshotList {
        snapshots: listed.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/snapshots/{snapshot_id}", operation_id = "getSnapshot", tag = "snapshots", security(("api_key" = []), ("bearer" = [])),
    params(("snapshot_id" = String, Path)),
    responses((status = 200, description = "The snapshot", body = SnapshotView)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(snapshot_id): Path<String>,
) -> Result<Json<SnapshotView>, ApiError> {
    Ok(Json(
        state.snapshots.get(&principal.owner(), &snapshot_id).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/snapshots/{snapshot_id}", operation_id = "deleteSnapshot", tag = "snapshots", security(("api_key" = []), ("bearer" = [])),
    params(("snapshot_id" = String, Path)),
    responses((status = 204, description = "Removed")))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(snapshot_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.snapshots.delete(&principal.owner(), &snapshot_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
