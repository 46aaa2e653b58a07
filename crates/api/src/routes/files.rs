//! `/sessions/{session_id}/files`: files in a session's `/workspace`, through
//! the sandbox's agent (the engine's archive API cannot see tmpfs contents).
//!
//! - `PUT .../files/{path}`: the raw body becomes the file (parents created); 204.
//!   Up to 1 MiB with a `Content-Length`: one frame over the channel; else
//!   streamed ([`transfer`]) and kept only once complete.
//! - `GET .../files/{path}`: the file's bytes (streamed past 1 MiB).
//! - `GET .../archive?path=DIR`: the directory as a tar; `PUT` extracts one.
//! - `GET .../files?dir=...`: the directory's entries.
//! - `DELETE .../files/{path}`: a file, symlink or empty directory; 204.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_core::runtime::transfer::{self, Transfer};
use brig_core::runtime::RuntimeError;
use brig_protocol::{EntryKind, FileReply, FileRequest, MAX_FILE_BYTES};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{session_in_path, workspace_path};
use crate::json::ApiQuery;
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
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "the file (empty: an empty file), of any size the workspace holds; streamed"),
    responses((status = 204, description = "Written"), (status = 413, description = "Larger than the workspace's free space (nothing is kept)")))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path((session_id, raw)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let path = workspace_path(&raw, false)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n <= MAX_FILE_BYTES as u64) {
        // Small and announced: one frame over the channel, no exec.
        let data = axum::body::to_bytes(body, MAX_FILE_BYTES)
            .await
            .map_err(|err| ApiError::invalid("invalid_body", format!("the body could not be read: {err}")))?;
        let request = FileRequest::Write {
            path,
            data: data.to_vec(),
        };
        return match file(&state, &principal, &session_id, request).await? {
            FileReply::Done => Ok(StatusCode::NO_CONTENT),
            other => Err(unexpected(other)),
        };
    }
    upload(&state, &principal, &session_id, Transfer::Put(path), body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/sessions/{session_id}/files/{path}", operation_id = "readFile", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ("path" = String, Path, description = "relative to /workspace")),
    responses((status = 200, description = "The file's bytes (streamed when larger than 1 MiB)", body = Vec<u8>, content_type = "application/octet-stream")))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((session_id, raw)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = workspace_path(&raw, false)?;
    let request = FileRequest::Read { path: path.clone() };
    match file(&state, &principal, &session_id, request).await {
        Ok(FileReply::Data(data)) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()),
        Ok(other) => Err(unexpected(other)),
        // Larger than a frame: streamed through the engine's exec.
        Err(ApiError::FileTooLarge(_)) => {
            download(
                &state,
                &principal,
                &session_id,
                Transfer::Get(path),
                "application/octet-stream",
            )
            .await
        }
        Err(err) => Err(err),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    /// A directory relative to `/workspace`; empty or absent: `/workspace` itself.
    #[serde(default)]
    pub path: String,
}

fn archive_dir(query: ArchiveQuery) -> Result<String, ApiError> {
    workspace_path(&query.path, true)
}

#[utoipa::path(get, path = "/sessions/{session_id}/archive", operation_id = "readArchive", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ArchiveQuery),
    responses((status = 200, description = "The directory as a tar (streamed): files, directories and symlinks, none followed", body = Vec<u8>, content_type = "application/octet-stream")))]
pub async fn get_archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    ApiQuery(query): ApiQuery<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let dir = archive_dir(query)?;
    download(
        &state,
        &principal,
        &session_id,
        Transfer::TarOut(dir),
        "application/octet-stream",
    )
    .await
}

#[utoipa::path(put, path = "/sessions/{session_id}/archive", operation_id = "writeArchive", tag = "files", security(("api_key" = []), ("bearer" = [])),
    params(("session_id" = String, Path), ArchiveQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a tar to extract into the directory (created); entries with `..`, absolute paths, links leading outside, hard links, devices or FIFOs refuse the whole archive"),
    responses((status = 204, description = "Extracted"), (status = 422, description = "An entry was refused (named), or the body is empty; nothing was extracted"), (status = 413, description = "Larger than the workspace's free space; nothing was extracted")))]
pub async fn put_archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    ApiQuery(query): ApiQuery<ArchiveQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let dir = archive_dir(query)?;
    upload(&state, &principal, &session_id, Transfer::TarIn(dir), body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Streams `body` into the session's sandbox.
async fn upload(
    state: &AppState,
    principal: &Principal,
    session_id: &str,
    transfer: Transfer,
    body: Body,
) -> Result<(), ApiError> {
    let session_id = session_in_path(session_id)?;
    let archive = matches!(transfer, Transfer::TarIn(_));
    let mut stream = body.into_data_stream();
    let outcome = match state
        .sessions
        .transfer(&principal.owner(), &session_id, &transfer)
        .await
    {
        Ok(io) => match transfer::upload(io, stream.by_ref()).await {
            Ok(_) => Ok(()),
            Err(err) => Err(transfer_error(state, principal, &session_id, err, archive).await),
        },
        Err(err) => Err(err.into()),
    };
    if outcome.is_err() {
        drain(&mut stream).await;
    }
    outcome
}

/// Most of a refused upload read (and dropped) so that its client, still
/// sending, gets to read the answer; and how long that may take.
const DRAIN_BYTES: u64 = 256 << 20;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads what is left of a refused upload, within bounds: a client that
/// writes its whole body before reading sees the answer instead of a reset.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, read).await;
}

/// Streams a file or an archive out of the session's sandbox.
async fn download(
    state: &AppState,
    principal: &Principal,
    session_id: &str,
    transfer: Transfer,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let session_id = session_in_path(session_id)?;
    let io = state
        .sessions
        .transfer(&principal.owner(), &session_id, &transfer)
        .await?;
    let bytes = match transfer::download(io).await {
        Ok(bytes) => bytes,
        Err(err) => return Err(transfer_error(state, principal, &session_id, err, false).await),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(bytes)).into_response())
}

/// A transfer's failure, as the client should read it: a full workspace names
/// its size, a refused archive entry is `invalid_archive`, a session deleted
/// under it is not found.
async fn transfer_error(
    state: &AppState,
    principal: &Principal,
    session_id: &brig_core::session::SessionId,
    err: RuntimeError,
    archive: bool,
) -> ApiError {
    let err = match state.sessions.went_away(&principal.owner(), session_id, err).await {
        brig_core::session::SessionError::Runtime(err) => err,
        other => return other.into(),
    };
    match err {
        RuntimeError::FileTooLarge(detail) => ApiError::FileTooLarge(format!(
            "{detail}: the workspace holds {} bytes (CONTAINER_WORKSPACE_SIZE) and one file {} \
             (CONTAINER_FSIZE_BYTES); nothing was kept",
            state.config.sandbox.workspace_bytes, state.config.sandbox.fsize_bytes
        )),
        RuntimeError::InvalidRequest(detail) if archive => ApiError::invalid("invalid_archive", detail),
        other => other.into(),
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
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Listing>, ApiError> {
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
