//! Where session records live: Redis (shared by replicas and the cleanup
//! worker) or memory (the embedded, single-process default).

#[cfg(test)]
mod contract;
pub mod facades;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::facades::{
    ContextRecords, CooldownScope, Cooldowns, ExecutionId, ExecutionRecords, IdempotencyRecords, Kept, SavedAnswer,
};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
use crate::session::ids::{Owner, SessionId};
use crate::session::record::SessionRecord;

pub use self::redis::CALL_TIMEOUT;
pub use crate::config::Quota;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer (in time); retry later.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store answered with something that is not a record of ours.
    #[error("session store holds an unreadable record: {0}")]
    Corrupt(String),
}

/// Session records with a TTL, keyed by (owner, session id).
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn get(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Stores `record` (usually still pending: no container yet) unless the
    /// session already has a ready record, checking both quotas in the same
    /// atomic step. A pending record left by a crashed creator is overwritten.
    /// A resume's record (`suspended` set) is stored only over the session's
    /// current one ([`Reservation::Gone`] without it: a deletion wins).
    async fn reserve(&self, record: &SessionRecord, ttl: Duration, quota: Quota) -> Result<Reservation, StoreError>;

    /// Stores `record`, replacing any other (repairs after a lost container).
    async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError>;

    /// Stores `record` over the session's current record only if it still
    /// has one and that names the same node, in one atomic step: a deletion
    /// meanwhile wins, and so does a takeover by another node (a node whose
    /// lock lapsed while it was cut off does not write the session back to
    /// itself). Whether it was stored.
    async fn update(&self, record: &SessionRecord, ttl: Duration) -> Result<bool, StoreError> {
        let guard = Guard {
            node: record.node.as_deref(),
            unless_value: None,
        };
        self.update_if(record, ttl, &guard).await
    }

    /// Stores `record` over the session's current record only if it still
    /// has one and `guard` holds, in one atomic step. Whether it was stored.
    async fn update_if(&self, record: &SessionRecord, ttl: Duration, guard: &Guard<'_>) -> Result<bool, StoreError>;

    /// Pushes the session's expiry to now + `ttl`; `None` if it has none.
    async fn touch(&self, owner: &Owner, id: &SessionId, ttl: Duration) -> Result<Option<SessionRecord>, StoreError>;

    /// Removes and returns the record.
    async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Every live session of `owner`.
    async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError>;

    /// Every live session of this instance (for the reaper).
    async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError>;

    /// Takes the creation lock of a session for `ttl` unless someone holds it.
    async fn try_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Releases the lock if `token` still holds it.
    async fn unlock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), StoreError>;

    /// Keeps the lock `token` holds for `ttl` more; `false` if it no longer
    /// holds it (it lapsed, someone else took it).
    async fn extend_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// A command's first store call (the hot path: one round trip in Redis).
    /// If the session has a ready record: refreshes its TTL
    /// ([`touch`](Self::touch)), notes the command as running in its container
    /// ([`command_started`](Self::command_started)) and takes or renews the
    /// channel lease ([`lease_channel`](Self::lease_channel)). `None`, and
    /// nothing done, without a ready record.
    async fn begin_command(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        command: &CommandStart<'_>,
    ) -> Result<Option<Begun>, StoreError> {
        // A pending record is left as it is (its creator refreshes it).
        let Some(record) = self.get(owner, id).await?.filter(SessionRecord::is_ready) else {
            return Ok(None);
        };
        if record.node.as_deref() != command.node {
            // Another node's: nothing done here.
            return Ok(Some(Begun { record, leased: false }));
        }
        let Some(record) = self.touch(owner, id, ttl).await?.filter(SessionRecord::is_ready) else {
            return Ok(None);
        };
        let container = record.container().unwrap_or_default().to_string();
        self.command_started(&container, command.token, command.deadline_ms)
            .await?;
        let leased = self.lease_channel(&container, command.holder, command.lease).await?;
        Ok(Some(Begun { record, leased }))
    }

    /// A command's last store call: `token` no longer runs in `container`
    /// ([`command_finished`](Self::command_finished)), and the session's TTL
    /// is refreshed ([`touch`](Self::touch)); its record, if it still has one.
    async fn end_command(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        container: &str,
        token: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // The mark also lapses at its deadline: the refresh matters more.
        let _ = self.command_finished(container, token).await;
        self.touch(owner, id, ttl).await
    }

    /// Notes that a command runs in `container` until at most `deadline_ms`.
    async fn command_started(&self, container: &str, token: &str, deadline_ms: i64) -> Result<(), StoreError>;

    async fn command_finished(&self, container: &str, token: &str) -> Result<(), StoreError>;

    /// Whether a command whose deadline has not passed runs in `container`.
    async fn command_running(&self, container: &str) -> Result<bool, StoreError>;

    /// Takes or renews, for `ttl`, the right of `holder` (one API process) to
    /// write to `container`'s attach channel: one writer per channel, or frames
    /// interleave. `false` while another holder has it.
    async fn lease_channel(&self, container: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Adds `container` to the warm pool's set of spares.
    async fn pool_add(&self, container: &str) -> Result<(), StoreError>;

    /// Takes one spare out of the set; each is handed out once, ever. The
    /// spare stays marked as claimed for a minute (see `pool_claimed`).
    async fn pool_take(&self) -> Result<Option<String>, StoreError>;

    /// Whether `container` was taken from the set within the last minute: the
    /// reaper's last check before removing what looks like a stray spare.
    async fn pool_claimed(&self, container: &str) -> Result<bool, StoreError>;

    /// Takes `container` out of the set; `false` if it was not there (claimed).
    async fn pool_remove(&self, container: &str) -> Result<bool, StoreError>;

    /// The spares in the set.
    async fn pool_members(&self) -> Result<Vec<String>, StoreError>;

    /// Stores `value` under `key` (in this instance's namespace) for `ttl`.
    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// The value under `key`, unless it expired.
    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// [`put_value`](Self::put_value), saying whether the key held a value
    /// (one atomic step).
    async fn swap_value(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Appends `item` (no newline) to the list `key`, keeping its last `max`
    /// items; the list expires `ttl` after this call.
    async fn push_bounded(&self, key: &str, item: &str, max: usize, ttl: Duration) -> Result<(), StoreError>;

    /// The items of list `key`, oldest first (none if it does not exist).
    async fn list_items(&self, key: &str) -> Result<Vec<String>, StoreError>;

    /// Sets `key` for `ttl` unless it is set: `Ok(None)` when this call set it,
    /// else how long the holder still has (`SET NX PX`; cooldowns).
    async fn set_once(&self, key: &str, ttl: Duration) -> Result<Option<Duration>, StoreError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete_value(&self, key: &str) -> Result<(), StoreError>;

    /// Stores `value` under `key` for `ttl` as one of the values charged to
    /// `account`, whose live values may hold `quota` bytes in all. To make
    /// room, the account's other values that expire soonest are evicted: each
    /// is replaced by [`EVICTED`] followed by `account` for the rest of its
    /// time. A value larger
    /// than the quota by itself is still stored, alone. Returns how many
    /// values were evicted.
    async fn put_charged(
        &self,
        account: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        quota: u64,
    ) -> Result<usize, StoreError>;

    /// This store's identity: made once and kept (Redis: for as long as its
    /// data), recorded on every container so that a reaper touches only its
    /// own store's (two deployments that share a `BRIG_INSTANCE` on one
    /// engine must not reap each other's sandboxes).
    async fn identity(&self) -> Result<String, StoreError>;

    /// Answers when the store does.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Short name for readiness messages.
    fn name(&self) -> &'static str;
}

/// How an evicted charged value begins (then its account; see
/// [`SessionStore::put_charged`]).
pub const EVICTED: &str = "!evicted";

/// What [`SessionStore::update_if`] requires of the session's current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard<'a> {
    /// The node it names (`None`: none, a single host's).
    pub node: Option<&'a str>,
    /// A value (see [`SessionStore::put_value`]) that must not exist: the
    /// live copy of the node a takeover takes from.
    pub unless_value: Option<&'a str>,
}

/// A command about to run (see [`SessionStore::begin_command`]): its token,
/// its deadline (unix ms) and the channel lease to take.
#[derive(Debug, Clone, Copy)]
pub struct CommandStart<'a> {
    pub token: &'a str,
    pub deadline_ms: i64,
    /// This process, as a holder of channel leases.
    pub holder: &'a str,
    pub lease: Duration,
    /// The node asking (`None`: a single host). The fence: a session whose
    /// record names another node gets nothing done, atomically with the
    /// check (a node that lost a session while cut off cannot run commands
    /// in it once it is back), and [`Begun::leased`] is `false`.
    pub node: Option<&'a str>,
}

/// What [`SessionStore::begin_command`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begun {
    /// The ready record, its TTL refreshed.
    pub record: SessionRecord,
    /// Whether the caller holds the container's channel lease.
    pub leased: bool,
}

/// What [`SessionStore::reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The record is stored; the caller creates the container.
    Reserved,
    /// The session already has a ready record.
    Exists(Box<SessionRecord>),
    /// The owner has `per_owner` live sessions; the soonest of them expires
    /// in `frees_in` (unless it is used meanwhile).
    OwnerQuotaExceeded { frees_in: Duration },
    /// The instance has `total` live sessions.
    CapacityExhausted,
    /// A resume's record (`suspended` set) found no record to resume: the
    /// session was deleted meanwhile.
    Gone,
}

/// How long a taken spare stays marked as claimed.
pub(crate) const CLAIM_MARK_MS: i64 = 60_000;

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    ttl.as_millis().min(i64::MAX as u128) as i64
}
