//! Snapshots of session workspaces: `<owner>/<id>.tar` and `<owner>/<id>.json`
//! in an object store ([`objects`]): a local directory (`SNAPSHOT_DIR`, the
//! default) or an S3-compatible bucket (`SNAPSHOT_STORE=s3`) that several
//! hosts share.
//!
//! - **Atomic**: an object exists only once written whole (the directory: a
//!   scratch file, synced and renamed; S3: a multipart upload, completed at
//!   the end), and the tar is written before its record (`<id>.json`), which
//!   alone makes the snapshot exist. A process killed midway leaves no entry
//!   that lists or restores (the directory sweeps its scratch files after an
//!   hour; an S3 bucket's lifecycle rule should abort incomplete uploads).
//! - **Checksummed**: SHA-256 of the tar, checked again as it is read back; a
//!   mismatch fails the read before its end, so a restore keeps nothing.
//! - **Bounded**: `SNAPSHOT_QUOTA_COUNT` snapshots and `SNAPSHOT_QUOTA_BYTES`
//!   per owner; a write that would pass the bytes stops as soon as it does.

mod local;
mod objects;
mod s3;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::objects::Objects;
use crate::config::{SnapshotConfig, SnapshotLocation};
use crate::session::ids::Owner;

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
    /// The snapshot store could not be used; the message names it.
    #[error("{0}")]
    Storage(String),
}

/// The snapshots of every owner, in one object store.
#[derive(Clone)]
pub struct SnapshotStore {
    objects: Arc<dyn Objects>,
    /// Before every key: empty for the owners' snapshots, `.suspended/` for
    /// suspended sessions' workspaces.
    prefix: String,
    quota_bytes: u64,
    quota_count: usize,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("objects", &self.objects.describe())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A snapshot id: `snap-` and 24 hex digits; nothing else is ever a key.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("snap-")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The largest record read back (a record is a few hundred bytes).
const MAX_RECORD: usize = 64 * 1024;

impl SnapshotStore {
    /// The store `config` describes. An S3 store that cannot be set up
    /// answers every call with the reason (503 naming it), so the API starts.
    pub fn new(config: SnapshotConfig) -> Self {
        let objects: Arc<dyn Objects> = match &config.location {
            SnapshotLocation::Dir(dir) => Arc::new(local::LocalDir::new(dir.clone())),
            SnapshotLocation::S3(s3) => s3::S3Bucket::connect(s3),
        };
        SnapshotStore {
            objects,
            prefix: String::new(),
            quota_bytes: config.quota_bytes,
            quota_count: config.quota_count,
        }
    }

    /// Where suspended sessions' workspaces are kept: `.suspended/` in the
    /// same store (no owner's name starts with a dot), apart from the owners'
    /// own snapshots and outside their quotas (the sessions' quota and
    /// workspace size bound them).
    pub fn for_suspended(&self) -> SnapshotStore {
        SnapshotStore {
            objects: Arc::clone(&self.objects),
            prefix: format!("{}.suspended/", self.prefix),
            quota_bytes: u64::MAX,
            quota_count: usize::MAX,
        }
    }

    fn key(&self, owner: &Owner, name: &str) -> String {
        format!("{}{}/{name}", self.prefix, owner.as_str())
    }

    /// The owners that have snapshots here.
    pub async fn owners(&self) -> Result<Vec<Owner>, SnapshotError> {
        let names = self.objects.list(&self.prefix).await?;
        Ok(names.iter().filter_map(|name| Owner::parse(name)).collect())
    }

    /// The owner's snapshots, oldest first.
    pub async fn list(&self, owner: &Owner) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let names = self
            .objects
            .list(&format!("{}{}/", self.prefix, owner.as_str()))
            .await?;
        let mut out = Vec::new();
        for id in names
            .iter()
            .filter_map(|name| name.strip_suffix(".json"))
            .filter(|id| valid_id(id))
        {
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
        let key = self.key(owner, &format!("{id}.json"));
        let Some(mut body) = self.objects.get(&key).await? else {
            return Err(SnapshotError::NotFound);
        };
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| self.storage(&key, err))?;
            text.extend_from_slice(&chunk);
            if text.len() > MAX_RECORD {
                return Err(self.storage(&key, "a record larger than any brig writes"));
            }
        }
        serde_json::from_slice(&text).map_err(|err| self.storage(&key, format!("a corrupt record: {err}")))
    }

    fn storage(&self, key: &str, err: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Storage(format!("{key} in {}: {err}", self.objects.describe()))
    }

    /// Removes a snapshot: its record first, so it stops existing at once.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<(), SnapshotError> {
        self.get(owner, id).await?;
        self.objects.delete(&self.key(owner, &format!("{id}.json"))).await?;
        let _ = self.objects.delete(&self.key(owner, &format!("{id}.tar"))).await;
        Ok(())
    }

    /// Stores `archive` (a workspace's tar, as it streams) as a new snapshot
    /// of `session_id`.
    pub async fn write<E: std::fmt::Display>(
        &self,
        owner: &Owner,
        session_id: &str,
        archive: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let existing = self.list(owner).await?;
        if existing.len() >= self.quota_count {
            return Err(SnapshotError::QuotaExceeded(format!(
                "{} snapshots kept, the most SNAPSHOT_QUOTA_COUNT allows; delete one first",
                existing.len()
            )));
        }
        let used: u64 = existing.iter().map(|s| s.bytes).sum();
        let id = format!("snap-{}", hex::encode(rand::random::<[u8; 12]>()));
        let tar = self.key(owner, &format!("{id}.tar"));
        let (counted, tally) = counted(archive, self.quota_bytes, used);
        if let Err(err) = self.objects.put(&tar, counted).await {
            let _ = self.objects.delete(&tar).await;
            return Err(err);
        }
        let (bytes, sha256) = tally.take();
        let meta = SnapshotMeta {
            snapshot_id: id.clone(),
            session_id: session_id.to_string(),
            bytes,
            sha256,
            created_at: now_ms(),
        };
        let record = Bytes::from(serde_json::to_vec(&meta).expect("a snapshot record serializes"));
        let record_key = self.key(owner, &format!("{id}.json"));
        if let Err(err) = self
            .objects
            .put(&record_key, futures_util::stream::iter([Ok(record)]).boxed())
            .await
        {
            let _ = self.objects.delete(&tar).await;
            return Err(err);
        }
        Ok(meta)
    }

    /// The snapshot's archive as it is read, checked against its checksum: a
    /// mismatch (or a short archive) is an error before the stream ends.
    pub async fn read(
        &self,
        owner: &Owner,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, SnapshotError> {
        let meta = self.get(owner, id).await?;
        let key = self.key(owner, &format!("{id}.tar"));
        let body = self
            .objects
            .get(&key)
            .await?
            .ok_or_else(|| self.storage(&key, "the archive of a recorded snapshot is missing"))?;
        Ok(checked(body, meta))
    }
}

/// The size and SHA-256 of what went through [`counted`].
struct Tally(Arc<Mutex<(u64, Sha256)>>);

impl Tally {
    fn take(&self) -> (u64, String) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (bytes, hash) = std::mem::take(&mut *state);
        (bytes, hex::encode(hash.finalize()))
    }
}

/// `archive`, counted and hashed as it passes; an error as soon as it
/// passes `quota` (of which `used` is taken), or its source fails.
fn counted<E: std::fmt::Display>(
    archive: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    quota: u64,
    used: u64,
) -> (objects::Body, Tally) {
    let state = Arc::new(Mutex::new((0u64, Sha256::new())));
    let tally = Tally(Arc::clone(&state));
    let budget = quota.saturating_sub(used);
    let body = archive
        .map(move |chunk| {
            let chunk = chunk.map_err(|err| SnapshotError::Source(err.to_string()))?;
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.0 += chunk.len() as u64;
            if state.0 > budget {
                return Err(SnapshotError::QuotaExceeded(format!(
                    "the snapshot passes SNAPSHOT_QUOTA_BYTES ({quota} bytes; {used} already kept)"
                )));
            }
            state.1.update(&chunk);
            Ok(chunk)
        })
        .boxed();
    (body, tally)
}

/// `body` checked against `meta`: a mismatch is an error in place of its end.
fn checked(
    body: objects::Reading,
    meta: SnapshotMeta,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct Check {
        body: objects::Reading,
        hash: Sha256,
        read: u64,
        meta: SnapshotMeta,
        done: bool,
    }
    let state = Check {
        body,
        hash: Sha256::new(),
        read: 0,
        meta,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        match state.body.next().await {
            Some(Err(err)) => {
                state.done = true;
                Some((Err(err), state))
            }
            None => {
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
            Some(Ok(chunk)) => {
                state.read += chunk.len() as u64;
                state.hash.update(&chunk);
                Some((Ok(chunk), state))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use brig_testkit::S3Server;

    use super::*;
    use crate::config::S3Config;

    /// Where a test's store keeps its objects, seen from outside the store.
    enum Backend {
        Dir(PathBuf),
        S3(S3Server),
    }

    impl Backend {
        /// Every name under the owner's level, scratch and unfinished ones included.
        fn raw_names(&self, owner: &Owner) -> Vec<String> {
            match self {
                Backend::Dir(dir) => std::fs::read_dir(dir.join(owner.as_str()))
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                Backend::S3(server) => server
                    .keys()
                    .into_iter()
                    .filter_map(|key| key.strip_prefix(&format!("{}/", owner.as_str())).map(String::from))
                    .collect(),
            }
        }
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            if let Backend::Dir(dir) = self {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn config(location: SnapshotLocation, quota_bytes: u64, quota_count: usize) -> SnapshotConfig {
        SnapshotConfig {
            location,
            quota_bytes,
            quota_count,
            expiry: crate::config::SessionExpiry::Delete,
            suspended_retention: Duration::from_secs(60),
            sweep_after: Duration::from_secs(60),
            dir_shared: false,
        }
    }

    fn local(quota_bytes: u64, quota_count: usize) -> (SnapshotStore, Backend) {
        let dir = std::env::temp_dir().join(format!("brig-snapshots-{}", hex::encode(rand::random::<[u8; 8]>())));
        let store = SnapshotStore::new(config(SnapshotLocation::Dir(dir.clone()), quota_bytes, quota_count));
        (store, Backend::Dir(dir))
    }

    /// A store on a moto server of its own (a missing moto fails loudly).
    fn s3(quota_bytes: u64, quota_count: usize) -> (SnapshotStore, Backend) {
        let server = S3Server::start();
        let location = SnapshotLocation::S3(S3Config {
            endpoint: Some(server.endpoint()),
            bucket: server.bucket.clone(),
            region: "us-east-1".into(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
        });
        (
            SnapshotStore::new(config(location, quota_bytes, quota_count)),
            Backend::S3(server),
        )
    }

    /// Every case runs against both stores.
    macro_rules! both {
        ($($case:ident),* $(,)?) => {
            mod local_dir {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(super::local).await;
                    }
                )*
            }
            mod s3_bucket {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        super::$case(super::s3).await;
                    }
                )*
            }
        };
    }

    both!(
        a_snapshot_round_trips_belongs_to_its_owner_and_is_deleted,
        quotas_hold_and_a_failed_write_leaves_nothing,
        a_damaged_archive_fails_its_read_before_the_end,
        a_large_archive_streams_through_and_one_cut_short_leaves_nothing,
        suspended_workspaces_are_kept_apart_and_owners_listed,
    );

    type Make = fn(u64, usize) -> (SnapshotStore, Backend);

    fn chunks(data: &[u8]) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static {
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

    async fn a_snapshot_round_trips_belongs_to_its_owner_and_is_deleted(make: Make) {
        let (store, backend) = make(1 << 20, 5);
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
        let left = backend.raw_names(&alice);
        assert!(left.is_empty(), "{left:?}");
    }

    async fn quotas_hold_and_a_failed_write_leaves_nothing(make: Make) {
        let (store, backend) = make(100_000, 2);
        let owner = Owner::of_principal("alice");
        let over = store.write(&owner, "s", chunks(&[1u8; 100_001])).await;
        assert!(matches!(over, Err(SnapshotError::QuotaExceeded(m)) if m.contains("SNAPSHOT_QUOTA_BYTES")));
        let broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"part")), Err("sandbox gone".to_string())]);
        assert!(matches!(
            store.write(&owner, "s", broken).await,
            Err(SnapshotError::Source(_))
        ));
        assert!(backend.raw_names(&owner).is_empty(), "{:?}", backend.raw_names(&owner));
        store.write(&owner, "s", chunks(b"one")).await.unwrap();
        store.write(&owner, "s", chunks(b"two")).await.unwrap();
        let third = store.write(&owner, "s", chunks(b"three")).await;
        assert!(matches!(third, Err(SnapshotError::QuotaExceeded(m)) if m.contains("SNAPSHOT_QUOTA_COUNT")));
        let names = backend.raw_names(&owner);
        assert_eq!(
            names.len(),
            4,
            "two snapshots, a tar and a record each; no scratch: {names:?}"
        );
    }

    async fn a_damaged_archive_fails_its_read_before_the_end(make: Make) {
        let (store, _backend) = make(1 << 20, 5);
        let owner = Owner::of_principal("alice");
        let meta = store.write(&owner, "s", chunks(&[7u8; 10_000])).await.unwrap();
        // Damaged where it is kept (through the store's own objects).
        let key = store.key(&owner, &format!("{}.tar", meta.snapshot_id));
        let mut damaged = vec![7u8; 10_000];
        damaged[5000] ^= 1;
        let body = futures_util::stream::iter([Ok(Bytes::from(damaged))]).boxed();
        store.objects.put(&key, body).await.unwrap();
        let err = read_all(&store, &owner, &meta.snapshot_id).await.unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    /// Past a part (8 MiB) S3 takes a multipart upload: completed only when
    /// the archive ended well, aborted (nothing kept) when it broke.
    async fn a_large_archive_streams_through_and_one_cut_short_leaves_nothing(make: Make) {
        let (store, backend) = make(1 << 30, 5);
        let owner = Owner::of_principal("alice");
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 / 3) as u8).collect();
        let big = futures_util::stream::iter(
            data.chunks(32 * 1024)
                .map(|c| Ok::<_, String>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let meta = store.write(&owner, "s", big).await.unwrap();
        assert_eq!(meta.bytes, data.len() as u64);
        assert!(read_all(&store, &owner, &meta.snapshot_id).await.unwrap() == data);
        store.delete(&owner, &meta.snapshot_id).await.unwrap();
        let cut = futures_util::stream::iter(
            data.chunks(1 << 20)
                .take(12)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .chain([Err("the sandbox went away".to_string())])
                .collect::<Vec<_>>(),
        );
        assert!(matches!(
            store.write(&owner, "s", cut).await,
            Err(SnapshotError::Source(_))
        ));
        assert!(store.list(&owner).await.unwrap().is_empty());
        assert!(backend.raw_names(&owner).is_empty(), "{:?}", backend.raw_names(&owner));
    }

    async fn suspended_workspaces_are_kept_apart_and_owners_listed(make: Make) {
        let (store, _backend) = make(10, 1);
        let (alice, bob) = (Owner::of_principal("alice"), Owner::of_principal("bob"));
        let suspended = store.for_suspended();
        // Outside the owners' quotas (ten bytes, one snapshot here).
        suspended.write(&alice, "s", chunks(&[1u8; 1000])).await.unwrap();
        suspended.write(&alice, "t", chunks(&[2u8; 1000])).await.unwrap();
        suspended.write(&bob, "s", chunks(b"x")).await.unwrap();
        assert!(store.list(&alice).await.unwrap().is_empty());
        assert_eq!(suspended.list(&alice).await.unwrap().len(), 2);
        let mut owners: Vec<String> = suspended
            .owners()
            .await
            .unwrap()
            .iter()
            .map(|o| o.as_str().to_string())
            .collect();
        owners.sort();
        let mut expected = vec![alice.as_str().to_string(), bob.as_str().to_string()];
        expected.sort();
        assert_eq!(owners, expected);
        // The owners' level lists no one: `.suspended` is no owner.
        assert!(store.owners().await.unwrap().is_empty());
    }
}
