//! Typed views of the store's free-form values: each facade owns its key
//! namespace, so no caller ever formats a store key.
//!
//! | facade | keys (under `value:`) |
//! |---|---|
//! | [`Cooldowns`] | `cooldown:<rule>:<scope>` |
//! | [`IdempotencyRecords`] | `idempotency:<owner>:<sha256 of key>`, `idempotency-run:<...>` |
//! | [`ExecutionRecords`] | `execution:<id>`, `execution-cancel:<id>` |

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SessionStore, StoreError};
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
}

impl IdempotencyRecords {
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        IdempotencyRecords { store }
    }

    fn scope(owner: &Owner, key: &str) -> String {
        format!("{}:{}", owner.as_str(), hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// The answer saved for (`owner`, `key`), if any.
    pub async fn saved(&self, owner: &Owner, key: &str) -> Result<Option<SavedAnswer>, StoreError> {
        let raw = self
            .store
            .get_value(&format!("idempotency:{}", Self::scope(owner, key)))
            .await?;
        raw.map(|raw| serde_json::from_str(&raw).map_err(|err| StoreError::Corrupt(err.to_string())))
            .transpose()
    }

    /// Marks the first request with (`owner`, `key`) as running for at most
    /// `running_for`: `true` if this call did, `false` if another holds it.
    pub async fn begin(&self, owner: &Owner, key: &str, running_for: Duration) -> Result<bool, StoreError> {
        let marker = format!("idempotency-run:{}", Self::scope(owner, key));
        Ok(self.store.set_once(&marker, running_for).await?.is_none())
    }

    /// Keeps `answer` for `ttl`.
    pub async fn save(&self, owner: &Owner, key: &str, answer: &SavedAnswer, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(answer).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        self.store
            .put_value(&format!("idempotency:{}", Self::scope(owner, key)), &json, ttl)
            .await
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
#[derive(Clone)]
pub struct ExecutionRecords {
    store: Arc<dyn SessionStore>,
}

impl ExecutionRecords {
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        ExecutionRecords { store }
    }

    pub async fn put<T: Serialize>(&self, id: &ExecutionId, record: &T, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        self.store.put_value(&format!("execution:{id}"), &json, ttl).await
    }

    pub async fn get<T: DeserializeOwned>(&self, id: &ExecutionId) -> Result<Option<T>, StoreError> {
        let raw = self.store.get_value(&format!("execution:{id}")).await?;
        raw.map(|raw| serde_json::from_str(&raw).map_err(|err| StoreError::Corrupt(err.to_string())))
            .transpose()
    }

    /// Asks whichever process runs `id` to cancel it (kept for `ttl`).
    pub async fn request_cancel(&self, id: &ExecutionId, ttl: Duration) -> Result<(), StoreError> {
        self.store.put_value(&format!("execution-cancel:{id}"), "1", ttl).await
    }

    pub async fn cancel_requested(&self, id: &ExecutionId) -> Result<bool, StoreError> {
        Ok(self.store.get_value(&format!("execution-cancel:{id}")).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_released_idempotency_marker_can_be_taken_again() {
        let records = IdempotencyRecords::new(Arc::new(MemoryStore::new()));
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

    #[test]
    fn execution_ids_are_32_lowercase_hex_digits() {
        assert!(ExecutionId::parse(ExecutionId::random().as_str()).is_some());
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33)] {
            assert!(ExecutionId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
