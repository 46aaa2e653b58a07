//! Objects as files under a local directory (`SNAPSHOT_DIR`): each written
//! under a scratch name beside its place, synced, renamed; the directory
//! synced so the rename survives a crash. Scratch files of writes that died
//! are removed once an hour old.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::objects::{Body, Objects, Reading};
use super::SnapshotError;

/// Scratch files older than this are a crashed write's, and are removed.
const SCRATCH_AGE: Duration = Duration::from_secs(3600);
const SCRATCH_PREFIX: &str = ".partial-";

pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: PathBuf) -> Self {
        LocalDir { root }
    }

    /// The path of `key`, whose parts the store made (never `..`).
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn storage(&self, path: &Path, err: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Storage(format!("{} (SNAPSHOT_DIR): {err}", path.display()))
    }
}

#[async_trait]
impl Objects for LocalDir {
    async fn put(&self, key: &str, mut body: Body) -> Result<(), SnapshotError> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| self.storage(&dir, err))?;
        sweep_scratch(&dir).await;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let scratch = dir.join(format!(
            "{SCRATCH_PREFIX}{}-{name}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let written = async {
            let mut file = tokio::fs::File::create(&scratch)
                .await
                .map_err(|err| self.storage(&scratch, err))?;
            while let Some(chunk) = body.next().await {
                file.write_all(&chunk?)
                    .await
                    .map_err(|err| self.storage(&scratch, err))?;
            }
            file.sync_all().await.map_err(|err| self.storage(&scratch, err))?;
            tokio::fs::rename(&scratch, &path)
                .await
                .map_err(|err| self.storage(&path, err))?;
            // The rename itself survives a crash once the directory is synced.
            if let Ok(handle) = tokio::fs::File::open(&dir).await {
                let _ = handle.sync_all().await;
            }
            Ok(())
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&scratch).await;
        }
        written
    }

    async fn get(&self, key: &str) -> Result<Option<Reading>, SnapshotError> {
        let path = self.path(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.storage(&path, err)),
        };
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            match file.read_buf(&mut buffer).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buffer.freeze()), Some(file))),
                Err(err) => Some((Err(err), None)),
            }
        });
        Ok(Some(chunks.boxed()))
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, SnapshotError> {
        let path = self.path(dir);
        let mut entries = match tokio::fs::read_dir(&path).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(self.storage(&path, err)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|err| self.storage(&path, err))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(SCRATCH_PREFIX) {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(self.storage(&path, err)),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        format!("SNAPSHOT_DIR {}", self.root.display())
    }
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
