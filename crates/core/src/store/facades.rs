//! Typed views of the store's free-form values: each facade owns its key
//! namespace, so no caller ever formats a store key.
//!
//! | facade | keys (under `value:`) |
//! |---|---|
//! | [`Cooldowns`] | `cooldown:<rule>:<scope>` |
//! | [`IdempotencyRecords`] | `idempotency:<owner>:<sha256 of key>`, `idempotency-run:<...>` |
//! | [`ExecutionRecords`] | `execution:<id>`, `execution-cancel:<id>` |
//! | [`ContextRecords`] | `context:<id>`, `context-run:<id>` |
//!
//! Kept results (an execution's, an idempotent request's answer) hold
//! command output, so they are stored compactly ([`pack`]: deflated past a
//! kilobyte; JSON escapes a NUL byte to six) and charged to their owner
//! (`RESULT_STORE_QUOTA_BYTES`, red team H3): past it, the owner's results
//! that expire soonest are evicted, and read as [`Kept::Evicted`].

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use base64::Engine;

use super::{SessionStore, StoreError, EVICTED};
use crate::session::ids::{Owner, SessionId};

/// Who shares a cooldown.
#[derive(Debug, Clone, Copy)]
pub enum CooldownScope<'a> {
    /// One per session of one owner.
    Session(&'a Owner, &'a SessionId),
    /// One per owner.
    Principal(&'a Owner),
    /// One for the whole deployment.
    Global,
}

/// Policy cooldowns, kept in the store so that they hold across replicas.
#[derive(Clone)]
pub struct Cooldowns {
    store: Arc<dyn SessionStore>,
}

impl Cooldowns {
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Cooldowns { store }
    }

    /// Starts the cooldown of `rule` in `scope` for `every`: `Ok(None)` when it
    /// had passed (this call started a new one), else how long is left.
    pub async fn charge(
        &self,
        rule: &str,
        scope: CooldownScope<'_>,
        every: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let scope = match scope {
            CooldownScope::Session(owner, id) => format!("session:{}:{id}", owner.as_str()),
            CooldownScope::Principal(owner) => format!("principal:{}", owner.as_str()),
            CooldownScope::Global => "global".into(),
        };
        self.store.set_once(&format!("cooldown:{rule}:{scope}"), every).await
    }
}

/// A kept result, or the mark of one evicted to keep its owner (named, so
/// that another principal still sees nothing) within `RESULT_STORE_QUOTA_BYTES`.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept<T> {
    Present(T),
    Evicted { owner: String },
}

/// The account results of `owner` are charged to.
fn account(owner: &Owner) -> String {
    format!("results:{}", owner.as_str())
}

/// Values at least this long are stored deflated.
const PACK_FROM: usize = 1024;

/// Prefix of a deflated value (no JSON document starts with it).
const PACKED: &str = "z:";

/// Most bytes a packed value may inflate to: more than any result holds
/// (two streams of at most 16 MiB, escaped), so only a corrupt value meets it.
const MAX_UNPACKED: u64 = 256 << 20;

/// `json` as stored: as it is when short, else deflated (base64, as values
/// are text) if that is smaller.
pub fn pack(json: String) -> String {
    use std::io::Write;
    if json.len() < PACK_FROM {
        return json;
    }
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let packed = deflate
        .write_all(json.as_bytes())
        .and_then(|()| deflate.finish())
        .map(|bytes| format!("{PACKED}{}", base64::engine::general_purpose::STANDARD.encode(bytes)));
    match packed {
        Ok(packed) if packed.len() < json.len() => packed,
        _ => json,
    }
}

/// The JSON a stored value holds.
pub fn unpack(raw: String) -> Result<String, StoreError> {
    use std::io::Read;
    let Some(encoded) = raw.strip_prefix(PACKED) else {
        return Ok(raw);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("packed value: {what}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| corrupt("not base64"))?;
    let mut json = String::new();
    flate2::read::DeflateDecoder::new(bytes.as_slice())
        .take(MAX_UNPACKED)
        .read_to_string(&mut json)
        .map_err(|_| corrupt("not deflate of UTF-8"))?;
    Ok(json)
}

/// A stored result, unpacked and parsed.
fn read_kept<T: DeserializeOwned>(raw: Option<String>) -> Result<Option<Kept<T>>, StoreError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.starts_with(EVICTED) => Ok(Some(Kept::Evicted {
            owner: raw[EVICTED.len()..].trim_start_matches("results:").to_string(),
        })),
        Some(raw) => serde_json::from_str(&unpack(raw)?)
            .map(|value| Some(Kept::Present(value)))
            .map_err(|err| StoreError::Corrupt(err.to_string())),
    }
}

/// A result to keep, packed.
fn packed<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map(pack)
        .map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Results charged to owners, each within `quota` bytes.
#[derive(Clone)]
struct Charged {
    store: Arc<dyn SessionStore>,
    quota: u64,
}

impl Charged {
    async fn put<T: Serialize>(&self, owner: &Owner, key: &str, value: &T, ttl: Duration) -> Result<(), StoreError> {
        let evicted = self
            .store
            .put_charged(&account(owner), key, &packed(value)?, ttl, self.quota)
            .await?;
        if evicted > 0 {
            tracing::info!(
                owner = owner.as_str(),
                evicted,
                "RESULT_STORE_QUOTA_BYTES reached: the owner's results that expire soonest were evicted"
            );
        }
        Ok(())
    }
}

/// A kept answer to an idempotent request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAnswer {
    /// What identifies "the same request" (route and body), hashed.
    pub fingerprint: String,
    pub status: u16,
    pub body: serde_json::Value,
}

/// `Idempotency-Key` records: the saved answer, and a marker held while the
/// first request with the key runs. Keys are stored hashed, per owner.
#[derive(Clone)]
pub struct IdempotencyRecords {
    store: Arc<dyn SessionStore>,
    answers: Charged,
}

impl IdempotencyRecords {
    /// Answers are charged to their owner, within `quota` bytes each.
    pub fn new(store: Arc<dyn SessionStore>, quota: u64) -> Self {
        let answers = Charged {
            store: store.clone(),
            quota,
        };
        IdempotencyRecords { store, answers }
    }

    fn scope(owner: &Owner, key: &str) -> String {
        format!("{}:{}", owner.as_str(), hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// The answer saved for (`owner`, `key`), if any.
    pub async fn saved(&self, owner: &Owner, key: &str) -> Result<Option<Kept<SavedAnswer>>, StoreError> {
        let raw = self
            .store
            .get_value(&format!("idempotency:{}", Self::scope(owner, key)))
            .await?;
        read_kept(raw)
    }

    /// Marks the first request with (`owner`, `key`) as running for at most
    /// `running_for`: `true` if this call did, `false` if another holds it.
    pub async fn begin(&self, owner: &Owner, key: &str, running_for: Duration) -> Result<bool, StoreError> {
        let marker = format!("idempotency-run:{}", Self::scope(owner, key));
        Ok(self.store.set_once(&marker, running_for).await?.is_none())
    }

    /// Keeps `answer` for `ttl`.
    pub async fn save(&self, owner: &Owner, key: &str, answer: &SavedAnswer, ttl: Duration) -> Result<(), StoreError> {
        let key = format!("idempotency:{}", Self::scope(owner, key));
        self.answers.put(owner, &key, answer, ttl).await
    }

    /// Drops the running marker, so that a retry runs afresh.
    pub async fn release(&self, owner: &Owner, key: &str) -> Result<(), StoreError> {
        self.store
            .delete_value(&format!("idempotency-run:{}", Self::scope(owner, key)))
            .await
    }
}

/// An execution's id: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecutionId(String);

impl ExecutionId {
    pub fn random() -> Self {
        ExecutionId(hex::encode(rand::random::<[u8; 16]>()))
    }

    /// `None` for anything that cannot be an id (and so cannot exist).
    pub fn parse(id: &str) -> Option<Self> {
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| ExecutionId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Execution records (any serialisable record type) and cancel requests, so
/// that any replica can answer for an execution and cancel it.
/// Code contexts (`context:<id>`) and the mark of the run that holds one
/// (`context-run:<id>`): one run at a time per context, across replicas.
#[derive(Clone)]
pub struct ContextRecords {
    store: Arc<dyn SessionStore>,
}

impl ContextRecords {
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        ContextRecords { store }
    }

    pub async fn put<T: Serialize>(&self, id: &ExecutionId, record: &T, ttl: Duration) -> Result<(), StoreError> {
        self.store
            .put_value(&format!("context:{id}"), &packed(record)?, ttl)
            .await
    }

    pub async fn get<T: DeserializeOwned>(&self, id: &ExecutionId) -> Result<Option<T>, StoreError> {
        match read_kept(self.store.get_value(&format!("context:{id}")).await?)? {
            Some(Kept::Present(record)) => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    pub async fn delete(&self, id: &ExecutionId) -> Result<(), StoreError> {
        self.store.delete_value(&format!("context:{id}")).await
    }

    /// Takes context `id` for one run (for `ttl` at most): `false` while
    /// another run holds it.
    pub async fn begin_run(&self, id: &ExecutionId, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.store.set_once(&format!("context-run:{id}"), ttl).await?.is_none())
    }

    pub async fn end_run(&self, id: &ExecutionId) -> Result<(), StoreError> {
        self.store.delete_value(&format!("context-run:{id}")).await
    }
}

/// Executions listed per session (the latest).
pub const SESSION_EXECUTIONS: usize = 100;

#[derive(Clone)]
pub struct ExecutionRecords {
    store: Arc<dyn SessionStore>,
    results: Charged,
}

impl ExecutionRecords {
    /// Finished records are charged to their owner, within `quota` bytes each.
    pub fn new(store: Arc<dyn SessionStore>, quota: u64) -> Self {
        let results = Charged {
            store: store.clone(),
            quota,
        };
        ExecutionRecords { store, results }
    }

    /// Stores a record that holds no output yet (not charged).
    pub async fn put<T: Serialize>(&self, id: &ExecutionId, record: &T, ttl: Duration) -> Result<(), StoreError> {
        self.store
            .put_value(&format!("execution:{id}"), &packed(record)?, ttl)
            .await
    }

    /// Stores a finished record, charged to `owner`.
    pub async fn put_result<T: Serialize>(
        &self,
        owner: &Owner,
        id: &ExecutionId,
        record: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.results.put(owner, &format!("execution:{id}"), record, ttl).await
    }

    pub async fn get<T: DeserializeOwned>(&self, id: &ExecutionId) -> Result<Option<Kept<T>>, StoreError> {
        read_kept(self.store.get_value(&format!("execution:{id}")).await?)
    }

    /// Asks whichever process runs `id` to cancel it (kept for `ttl`).
    pub async fn request_cancel(&self, id: &ExecutionId, ttl: Duration) -> Result<(), StoreError> {
        self.store.put_value(&format!("execution-cancel:{id}"), "1", ttl).await
    }

    pub async fn cancel_requested(&self, id: &ExecutionId) -> Result<bool, StoreError> {
        Ok(self.store.get_value(&format!("execution-cancel:{id}")).await?.is_some())
    }

    /// Lists `id` among the executions of `owner`'s session `session` (the
    /// last [`SESSION_EXECUTIONS`] of them, for `ttl`).
    pub async fn index(
        &self,
        owner: &Owner,
        session: &SessionId,
        id: &ExecutionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("executions:{}:{session}", owner.as_str());
        self.store
            .push_bounded(&key, id.as_str(), SESSION_EXECUTIONS, ttl)
            .await
    }

    /// The executions listed for `owner`'s session `session`, oldest first.
    pub async fn of_session(&self, owner: &Owner, session: &SessionId) -> Result<Vec<ExecutionId>, StoreError> {
        let key = format!("executions:{}:{session}", owner.as_str());
        let mut ids: Vec<ExecutionId> = Vec::new();
        for item in self.store.list_items(&key).await? {
            if let Some(id) = ExecutionId::parse(&item).filter(|id| !ids.contains(id)) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_released_idempotency_marker_can_be_taken_again() {
        let records = IdempotencyRecords::new(Arc::new(MemoryStore::new()), 1 << 20);
        let owner = Owner::of_principal("alice");
        assert!(records.begin(&owner, "k", Duration::from_secs(60)).await.unwrap());
        assert!(!records.begin(&owner, "k", Duration::from_secs(60)).await.unwrap());
        // Another owner's key of the same name is another record.
        assert!(records
            .begin(&Owner::of_principal("bob"), "k", Duration::from_secs(60))
            .await
            .unwrap());
        records.release(&owner, "k").await.unwrap();
        assert!(records.begin(&owner, "k", Duration::from_secs(60)).await.unwrap());
    }

    /// Red team H3: 2 MiB of NUL output was 12 MiB of JSON in Redis.
    #[test]
    fn results_are_packed_when_that_is_smaller_and_read_back_exactly() {
        let short = r#"{"stdout":"hi"}"#.to_string();
        assert_eq!(pack(short.clone()), short);
        let nul = serde_json::to_string(&serde_json::json!({"stdout": "\0".repeat(1 << 20)})).unwrap();
        assert!(nul.len() > 6 << 20);
        let packed = pack(nul.clone());
        assert!(packed.len() < 64 << 10, "{} bytes", packed.len());
        assert_eq!(unpack(packed).unwrap(), nul);
        // What does not shrink is kept as it is; garbage is an error, not a panic.
        let noise: String = (0..4096u32)
            .map(|i| char::from_u32(0x4e00 + (i * 7919) % 20000).unwrap())
            .collect();
        let noisy = serde_json::to_string(&serde_json::json!({"stdout": noise})).unwrap();
        assert_eq!(unpack(pack(noisy.clone())).unwrap(), noisy);
        assert!(matches!(unpack("z:!!".into()), Err(StoreError::Corrupt(_))));
        assert!(matches!(unpack("z:AAAA".into()), Err(StoreError::Corrupt(_))));
    }

    #[tokio::test]
    async fn an_owners_results_past_the_quota_are_evicted_soonest_first() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let records = ExecutionRecords::new(store.clone(), 48 << 10);
        let (alice, bob) = (Owner::of_principal("alice"), Owner::of_principal("bob"));
        // Text that deflate cannot shrink much: each result costs about 33 kB.
        let noise = |seed: u64| -> String {
            let mut state = seed | 1;
            (0..30_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'!' + (state % 90) as u8)
                })
                .collect()
        };
        let (first, second, bobs) = (ExecutionId::random(), ExecutionId::random(), ExecutionId::random());
        let hour = Duration::from_secs(3600);
        records.put_result(&alice, &first, &noise(1), hour).await.unwrap();
        records.put_result(&bob, &bobs, &noise(2), hour).await.unwrap();
        records.put_result(&alice, &second, &noise(3), hour * 2).await.unwrap();
        assert_eq!(
            records.get::<String>(&first).await.unwrap(),
            Some(Kept::Evicted {
                owner: alice.as_str().into()
            })
        );
        let kept = |id: ExecutionId, seed: u64| {
            let records = records.clone();
            async move { records.get::<String>(&id).await.unwrap() == Some(Kept::Present(noise(seed))) }
        };
        assert!(kept(second, 3).await, "the newest result was not kept");
        assert!(kept(bobs, 2).await, "bob paid for alice");
    }

    #[test]
    fn execution_ids_are_32_lowercase_hex_digits() {
        assert!(ExecutionId::parse(ExecutionId::random().as_str()).is_some());
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33)] {
            assert!(ExecutionId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
