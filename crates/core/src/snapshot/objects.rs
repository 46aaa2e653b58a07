//! What the snapshot store needs of where it keeps its objects: whole
//! objects by key (`owner/name`), written atomically, read as streams, listed
//! one level at a time.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use super::SnapshotError;

/// What is written: chunks, or the error that ends the write (nothing kept).
pub type Body = BoxStream<'static, Result<Bytes, SnapshotError>>;

/// What is read back.
pub type Reading = BoxStream<'static, Result<Bytes, std::io::Error>>;

#[async_trait]
pub trait Objects: Send + Sync {
    /// Stores `body` under `key`, visible only once it is whole: a body that
    /// fails (or a process killed midway) leaves nothing under `key`.
    async fn put(&self, key: &str, body: Body) -> Result<(), SnapshotError>;

    /// The object under `key`, as it is read; `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Reading>, SnapshotError>;

    /// The names one level under `dir` (empty, or a prefix ending in `/`):
    /// objects and the next level's names, without scratch entries.
    async fn list(&self, dir: &str) -> Result<Vec<String>, SnapshotError>;

    /// Removes the object under `key`; a missing one is no error.
    async fn delete(&self, key: &str) -> Result<(), SnapshotError>;

    /// Where the objects are, for messages: the setting to look at.
    fn describe(&self) -> String;
}
