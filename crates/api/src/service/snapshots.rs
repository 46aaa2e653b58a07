//! Snapshots of a session's `/workspace`: taken through the agent (a tar
//! streamed out of the sandbox, never its host-side paths) into the snapshot
//! store, and restored into a new session the same way.

use brig_core::runtime::transfer::{self, Transfer};
use brig_core::session::{Owner, SessionError, SessionId, Sessions};
use brig_core::snapshot::{SnapshotMeta, SnapshotStore};

use crate::error::ApiError;

/// Stores the session's whole workspace as a new snapshot of `owner`'s. A
/// sandbox removed under it while the session lives on (a suspend took it,
/// or a repair) is tried once more, from the sandbox the session has then
/// (a suspended one is resumed): nothing was stored of the first try.
pub async fn take(
    sessions: &Sessions,
    store: &SnapshotStore,
    owner: &Owner,
    id: &SessionId,
) -> Result<SnapshotMeta, ApiError> {
    match take_once(sessions, store, owner, id).await {
        Err(ApiError::SandboxUnavailable) => take_once(sessions, store, owner, id).await,
        taken => taken,
    }
}

async fn take_once(
    sessions: &Sessions,
    store: &SnapshotStore,
    owner: &Owner,
    id: &SessionId,
) -> Result<SnapshotMeta, ApiError> {
    let io = sessions.transfer(owner, id, &Transfer::TarOut(String::new())).await?;
    let archive = match transfer::download(io).await {
        Ok(archive) => archive,
        Err(err) => return Err(sessions.went_away(owner, id, err).await.into()),
    };
    match store.write(owner, id.as_str(), archive).await {
        Ok(meta) => Ok(meta),
        Err(err) => {
            tracing::warn!(%err, session = %id.as_str(), "snapshot not taken");
            // The archive cut because the session was deleted meanwhile (its
            // container removed under the stream): not found, like the session.
            if let Err(gone @ SessionError::NotFound) = sessions.get(owner, id).await {
                return Err(gone.into());
            }
            Err(err.into())
        }
    }
}

/// Extracts snapshot `snapshot_id` into the session's workspace. A damaged
/// archive (its checksum) ends the upload early: nothing is extracted.
pub async fn restore(
    sessions: &Sessions,
    store: &SnapshotStore,
    owner: &Owner,
    id: &SessionId,
    snapshot_id: &str,
) -> Result<(), ApiError> {
    let archive = store.read(owner, snapshot_id).await?;
    let io = sessions.transfer(owner, id, &Transfer::TarIn(String::new())).await?;
    transfer::upload(io, archive).await.map(drop).map_err(|err| {
        tracing::warn!(%err, session = %id.as_str(), snapshot_id, "snapshot not restored");
        match err {
            // The source failed: our own store (a damaged archive, a read error).
            brig_core::runtime::RuntimeError::InvalidRequest(detail) => ApiError::SnapshotStoreUnavailable(detail),
            other => other.into(),
        }
    })
}
