//! `/sessions/{session_id}/files`: files in a session's `/workspace`, through
//! the sandbox's agent (the engine's archive API cannot see tmpfs contents).
//!
//! - `PUT .../files/{path}`: the raw body becomes the file (parents created); 204.
//! - `GET .../files/{path}`: the file's bytes.
//! - `GET .../files?dir=...`: the directory's entries.
//! - `DELETE .../files/{path}`: a file, symlink or empty directory; 204.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_protocol::{EntryKind, FileReply, FileRequest, MAX_FILE_BYTES};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{session_in_path, workspace_path};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Relative to `/workspace`; empty or absent: `/workspace` itself.
    #[serde(default)]
    pub dir: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Bytes, for files.
    pub size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing {
    pub dir: String,
    pub entries: Vec<Entry>,
    /// More than `MAX_DIR_ENTRIES` (4096) entries: the first 4096 by name are listed.
    pub truncated: bool,
}

async fn file(
    state: &AppState,
    principal: &Principal,
    session_id: &str,
    request: FileRequest,
) -> Result<FileReply, ApiError> {
    let session_id = session_in_path(session_id)?;
    Ok(state.sessions.file(&principal.owner(), &session_id, request).await?)
}

fn unexpected(reply: FileReply) -> ApiError {
    ApiError::SandboxProtocol(format!("unexpected file reply {reply:?}"))
}

#[utoipa::path(put, path = "/sessions/{session_id}/files/{path}", operation_id = "writeFile", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ("path" = String, Path, description = "relative to /workspace")),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "the file (empty: an empty file)"),
    responses((status = 204, description = "Written")))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path((session_id, raw)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let path = workspace_path(&raw, false)?;
    if body.len() > MAX_FILE_BYTES {
        return Err(ApiError::FileTooLarge(format!(
            "files are limited to {MAX_FILE_BYTES} bytes"
        )));
    }
    let request = FileRequest::Write {
        path,
        data: body.to_vec(),
    };
    match file(&state, &principal, &session_id, request).await? {
        FileReply::Done => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/sessions/{session_id}/files/{path}", operation_id = "readFile", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ("path" = String, Path, description = "relative to /workspace")),
    responses((status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream")))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((session_id, raw)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let request = FileRequest::Read {
        path: workspace_path(&raw, false)?,
    };
    match file(&state, &principal, &session_id, request).await? {
        FileReply::Data(data) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(delete, path = "/sessions/{session_id}/files/{path}", operation_id = "deleteFile", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ("path" = String, Path, description = "relative to /workspace")),
    responses((status = 204, description = "Removed")))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((session_id, raw)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let request = FileRequest::Delete {
        path: workspace_path(&raw, false)?,
    };
    match file(&state, &principal, &session_id, request).await? {
        FileReply::Done => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/sessions/{session_id}/files", operation_id = "listFiles", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ListQuery),
    responses((status = 200, description = "The directory's entries", body = Listing)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Listing>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::invalid("invalid_query", err.body_text()))?;
    let dir = workspace_path(&query.dir, true)?;
    let request = FileRequest::List { path: dir.clone() };
    match file(&state, &principal, &session_id, request).await? {
        FileReply::Entries { entries, truncated } => Ok(Json(Listing {
            dir,
            entries: entries
                .into_iter()
                .map(|entry| Entry {
                    name: entry.name,
                    kind: match entry.kind {
                        EntryKind::File => "file",
                        EntryKind::Directory => "directory",
                        EntryKind::Symlink => "symlink",
                        EntryKind::Other => "other",
                    },
                    size: entry.size,
                })
                .collect(),
            truncated,
        })),
        other => Err(unexpected(other)),
    }
}
