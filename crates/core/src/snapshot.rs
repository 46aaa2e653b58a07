//! Snapshots of session workspaces, kept as tar files in a local directory
//! (`SNAPSHOT_DIR`), one subdirectory per owner: `<id>.tar` and `<id>.json`.
//!
//! - **Atomic**: the tar is written under a scratch name, synced, renamed, and
//!   only then its record (`<id>.json`, written the same way) makes it exist.
//!   A process killed midway leaves scratch files only, which the next write
//!   sweeps once they are an hour old; never an entry that lists or restores.
//! - **Checksummed**: SHA-256 of the tar, checked again as it is read back; a
//!   mismatch fails the read before its end, so a restore keeps nothing.
//! - **Bounded**: `SNAPSHOT_QUOTA_COUNT` snapshots and `SNAPSHOT_QUOTA_BYTES`
//!   per owner; a write that would pass the bytes stops as soon as it does.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::SnapshotConfig;
use crate::session::ids::Owner;

/// Scratch files older than this are a crashed write's, and are removed.
const SCRATCH_AGE: Duration = Duration::from_secs(3600);
const SCRATCH_PREFIX: &str = ".partial-";

/// What is known of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub snapshot_id: String,
    /// The session it was taken from.
    pub session_id: String,
    /// Size of the archive.
    pub bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    /// Unix milliseconds.
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot not found")]
    NotFound,
    /// The owner's quota would be passed; the message names it.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The archive's source failed midway (the sandbox, the connection).
    #[error("{0}")]
    Source(String),
    /// The snapshot directory could not be used; the message names it.
    #[error("{0}")]
    Storage(String),
}

/// The snapshots of every owner, in one directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    config: SnapshotConfig,
}

fn storage(path: &Path, err: std::io::Error) -> SnapshotError {
    SnapshotError::Storage(format!("{} (SNAPSHOT_DIR): {err}", path.display()))
}

/// A snapshot id: `snap-` and 24 hex digits; nothing else is ever a path.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("snap-")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SnapshotStore {
    pub fn new(config: SnapshotConfig) -> Self {
        SnapshotStore { config }
    }

    /// Where suspended sessions' workspaces are kept: `.suspended` under the
    /// same directory (no owner's directory has that name), apart from the
    /// owners' own snapshots and outside their quotas (the sessions' quota
    /// and workspace size bound them).
    pub fn for_suspended(&self) -> SnapshotStore {
        SnapshotStore {
            config: SnapshotConfig {
                dir: self.config.dir.join(".suspended"),
                quota_bytes: u64::MAX,
                quota_count: usize::MAX,
                ..self.config.clone()
            },
        }
    }

    /// The owners that have a directory here.
    pub async fn owners(&self) -> Result<Vec<Owner>, SnapshotError> {
        let dir = &self.config.dir;
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(storage(dir, err)),
        };
        let mut owners = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|err| storage(dir, err))? {
            if let Some(owner) = entry.file_name().to_str().and_then(Owner::parse) {
                owners.push(owner);
            }
        }
        Ok(owners)
    }

    fn owner_dir(&self, owner: &Owner) -> PathBuf {
        self.config.dir.join(owner.as_str())
    }

    /// The owner's snapshots, oldest first.
    pub async fn list(&self, owner: &Owner) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let dir = self.owner_dir(owner);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(storage(&dir, err)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|err| storage(&dir, err))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id)) else {
                continue;
            };
            if let Ok(meta) = self.get(owner, id).await {
                out.push(meta);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.snapshot_id).cmp(&(b.created_at, &b.snapshot_id)));
        Ok(out)
    }

    /// One snapshot of the owner's (another owner's is not found).
    pub async fn get(&self, owner: &Owner, id: &str) -> Result<SnapshotMeta, SnapshotError> {
        if !valid_id(id) {
            return Err(SnapshotError::NotFound);
        }
        let path = self.owner_dir(owner).join(format!("{id}.json"));
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::NotFound),
            Err(err) => return Err(storage(&path, err)),
        };
        serde_json::from_slice(&text)
            .map_err(|err| SnapshotError::Storage(format!("{}: a corrupt record: {err}", path.display())))
    }

    /// Removes a snapshot: its record first, so it stops existing at once.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<(), SnapshotError> {
        self.get(owner, id).await?;
        let dir = self.owner_dir(owner);
        let record = dir.join(format!("{id}.json"));
        match tokio::fs::remove_file(&record).await {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::NotFound),
            other => other.map_err(|err| storage(&record, err))?,
        }
        let _ = tokio::fs::remove_file(dir.join(format!("{id}.tar"))).await;
        Ok(())
    }

    /// Stores `archive` (a workspace's tar, as it streams) as a new snapshot
    /// of `session_id`.
    pub async fn write<E: std::fmt::Display>(
        &self,
        owner: &Owner,
        session_id: &str,
        archive: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let dir = self.owner_dir(owner);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| storage(&dir, err))?;
        sweep_scratch(&dir).await;
        let existing = self.list(owner).await?;
        if existing.len() >= self.config.quota_count {
            return Err(SnapshotError::QuotaExceeded(format!(
                "{} snapshots kept, the most SNAPSHOT_QUOTA_COUNT allows; delete one first",
                existing.len()
            )));
        }
        let used: u64 = existing.iter().map(|s| s.bytes).sum();
        let budget = self.config.quota_bytes.saturating_sub(used);
        let id = format!("snap-{}", hex::encode(rand::random::<[u8; 12]>()));
        let scratch = dir.join(format!("{SCRATCH_PREFIX}{id}.tar"));
        let written = write_archive(&scratch, archive, budget, self.config.quota_bytes, used).await;
        let (bytes, sha256) = match written {
            Ok(done) => done,
            Err(err) => {
                let _ = tokio::fs::remove_file(&scratch).await;
                return Err(err);
            }
        };
        let meta = SnapshotMeta {
            snapshot_id: id.clone(),
            session_id: session_id.to_string(),
            bytes,
            sha256,
            created_at: now_ms(),
        };
        let tar = dir.join(format!("{id}.tar"));
        let committed = async {
            tokio::fs::rename(&scratch, &tar)
                .await
                .map_err(|err| storage(&tar, err))?;
            let record = serde_json::to_vec(&meta).expect("a snapshot record serializes");
            let staged = dir.join(format!("{SCRATCH_PREFIX}{id}.json"));
            let mut file = tokio::fs::File::create(&staged)
                .await
                .map_err(|err| storage(&staged, err))?;
            file.write_all(&record).await.map_err(|err| storage(&staged, err))?;
            file.sync_all().await.map_err(|err| storage(&staged, err))?;
            let path = dir.join(format!("{id}.json"));
            tokio::fs::rename(&staged, &path)
                .await
                .map_err(|err| storage(&path, err))?;
            // The renames themselves survive a crash once the directory is synced.
            if let Ok(handle) = tokio::fs::File::open(&dir).await {
                let _ = handle.sync_all().await;
            }
            Ok::<_, SnapshotError>(())
        }
        .await;
        if let Err(err) = committed {
            let _ = tokio::fs::remove_file(&scratch).await;
            let _ = tokio::fs::remove_file(&tar).await;
            return Err(err);
        }
        Ok(meta)
    }

    /// The snapshot's archive as it is read, checked against its checksum: a
    /// mismatch (or a short file) is an error before the stream ends.
    pub async fn read(
        &self,
        owner: &Owner,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, SnapshotError> {
        let meta = self.get(owner, id).await?;
        let path = self.owner_dir(owner).join(format!("{id}.tar"));
        let file = tokio::fs::File::open(&path).await.map_err(|err| storage(&path, err))?;
        struct Reading {
            file: tokio::fs::File,
            hash: Sha256,
            read: u64,
            meta: SnapshotMeta,
            done: bool,
        }
        let state = Reading {
            file,
            hash: Sha256::new(),
            read: 0,
            meta,
            done: false,
        };
        Ok(futures_util::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            match state.file.read_buf(&mut buffer).await {
                Err(err) => {
                    state.done = true;
                    Some((Err(err), state))
                }
                Ok(0) => {
                    state.done = true;
                    let digest = hex::encode(std::mem::take(&mut state.hash).finalize());
                    if digest != state.meta.sha256 || state.read != state.meta.bytes {
                        let err = std::io::Error::other(format!(
                            "snapshot {} does not match its checksum: not restored",
                            state.meta.snapshot_id
                        ));
                        return Some((Err(err), state));
                    }
                    None
                }
                Ok(n) => {
                    state.read += n as u64;
                    state.hash.update(&buffer);
                    Some((Ok(buffer.freeze()), state))
                }
            }
        }))
    }
}

/// Writes `archive` to `path`, synced: its size and SHA-256. Stops with
/// `QuotaExceeded` as soon as it passes `budget`.
async fn write_archive<E: std::fmt::Display>(
    path: &Path,
    archive: impl Stream<Item = Result<Bytes, E>>,
    budget: u64,
    quota: u64,
    used: u64,
) -> Result<(u64, String), SnapshotError> {
    let mut file = tokio::fs::File::create(path).await.map_err(|err| storage(path, err))?;
    let mut archive = std::pin::pin!(archive);
    let (mut bytes, mut hash) = (0u64, Sha256::new());
    while let Some(chunk) = archive.next().await {
        let chunk = chunk.map_err(|err| SnapshotError::Source(err.to_string()))?;
        bytes += chunk.len() as u64;
        if bytes > budget {
            return Err(SnapshotError::QuotaExceeded(format!(
                "the snapshot passes SNAPSHOT_QUOTA_BYTES ({quota} bytes; {used} already kept)"
            )));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(|err| storage(path, err))?;
    }
    file.sync_all().await.map_err(|err| storage(path, err))?;
    Ok((bytes, hex::encode(hash.finalize())))
}

/// Removes scratch files of writes that died (older than [`SCRATCH_AGE`]).
async fn sweep_scratch(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX)
            && entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > SCRATCH_AGE);
        if stale {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(quota_bytes: u64, quota_count: usize) -> (SnapshotStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("brig-snapshots-{}", hex::encode(rand::random::<[u8; 8]>())));
        let config = SnapshotConfig {
            dir: dir.clone(),
            quota_bytes,
            quota_count,
            expiry: crate::config::SessionExpiry::Delete,
            suspended_retention: Duration::from_secs(60),
            sweep_after: Duration::from_secs(60),
        };
        (SnapshotStore::new(config), dir)
    }

    fn chunks(data: &[u8]) -> impl Stream<Item = Result<Bytes, String>> {
        futures_util::stream::iter(
            data.chunks(1000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    async fn read_all(store: &SnapshotStore, owner: &Owner, id: &str) -> Result<Vec<u8>, std::io::Error> {
        let mut stream = std::pin::pin!(store.read(owner, id).await.unwrap());
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_snapshot_round_trips_belongs_to_its_owner_and_is_deleted() {
        let (store, dir) = store(1 << 20, 5);
        let (alice, bob) = (Owner::of_principal("alice"), Owner::of_principal("bob"));
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let meta = store.write(&alice, "s1", chunks(&data)).await.unwrap();
        assert_eq!(meta.bytes, data.len() as u64);
        assert_eq!(read_all(&store, &alice, &meta.snapshot_id).await.unwrap(), data);
        assert_eq!(store.list(&alice).await.unwrap(), vec![meta.clone()]);
        assert!(store.list(&bob).await.unwrap().is_empty());
        assert!(matches!(
            store.get(&bob, &meta.snapshot_id).await,
            Err(SnapshotError::NotFound)
        ));
        assert!(matches!(
            store.delete(&bob, &meta.snapshot_id).await,
            Err(SnapshotError::NotFound)
        ));
        for hostile in ["../x", "snap-../../etc", "", "snap-ABCDEF0123456789abcdef01"] {
            assert!(
                matches!(store.get(&alice, hostile).await, Err(SnapshotError::NotFound)),
                "{hostile}"
            );
        }
        store.delete(&alice, &meta.snapshot_id).await.unwrap();
        assert!(store.list(&alice).await.unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.join(alice.as_str())).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn quotas_hold_and_a_failed_write_leaves_nothing() {
        let (store, dir) = store(100_000, 2);
        let owner = Owner::of_principal("alice");
        let over = store.write(&owner, "s", chunks(&[1u8; 100_001])).await;
        assert!(matches!(over, Err(SnapshotError::QuotaExceeded(m)) if m.contains("SNAPSHOT_QUOTA_BYTES")));
        let broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"part")), Err("sandbox gone".to_string())]);
        assert!(matches!(
            store.write(&owner, "s", broken).await,
            Err(SnapshotError::Source(_))
        ));
        store.write(&owner, "s", chunks(b"one")).await.unwrap();
        store.write(&owner, "s", chunks(b"two")).await.unwrap();
        let third = store.write(&owner, "s", chunks(b"three")).await;
        assert!(matches!(third, Err(SnapshotError::QuotaExceeded(m)) if m.contains("SNAPSHOT_QUOTA_COUNT")));
        let files = std::fs::read_dir(dir.join(owner.as_str())).unwrap().count();
        assert_eq!(files, 4, "two snapshots, a tar and a record each; no scratch");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_damaged_archive_fails_its_read_before_the_end() {
        let (store, dir) = store(1 << 20, 5);
        let owner = Owner::of_principal("alice");
        let meta = store.write(&owner, "s", chunks(&[7u8; 10_000])).await.unwrap();
        let tar = dir.join(owner.as_str()).join(format!("{}.tar", meta.snapshot_id));
        let mut bytes = std::fs::read(&tar).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&tar, bytes).unwrap();
        let err = read_all(&store, &owner, &meta.snapshot_id).await.unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
