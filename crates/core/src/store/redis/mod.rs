//! Redis-backed store. Keys, all under `brig:<instance>:`:
//! - `session:<owner>:<session id>` → the record as JSON, with the session's TTL;
//! - `owner:<owner>` and `sessions` → sorted sets indexing live sessions by
//!   expiry (member: session id, resp. `owner:session id`), from which quotas are
//!   counted atomically (Lua) and listings read;
//! - `lock:<owner>:<session id>` → the creation lock (`SET NX PX`, token-checked release);
//! - `running:<container id>` → sorted set of running commands by deadline;
//! - `pool` → set of warm-pool spares (`SPOP` claims one atomically);
//! - `claimed:<container id>` → a spare taken within the last minute;
//! - `lease:<container id>` → the API process that writes to its channel;
//! - `value:<key>` → free-form values with a TTL, whose keys only the typed
//!   facades in [`crate::store::facades`] write (cooldowns, idempotency, executions).
//!
//! One file per concern: [`sessions`] (records, indexes), [`coordination`]
//! (locks, running commands, leases), [`pool`], [`values`]; [`scripts`] holds
//! the Lua.
//!
//! A record's JSON is written when the session is created or repaired; a
//! refresh moves only the key's TTL and the index scores, and readers take
//! the expiry from the owner index. A warm command costs two calls: one
//! script begins it (refresh, running mark, channel lease), one ends it.
//!
//! Every call has a deadline, so an unreachable Redis turns into
//! [`StoreError::Unavailable`] within [`CALL_TIMEOUT`], and the connection
//! manager reconnects by itself once Redis is back. An operation that is safe
//! to repeat and meets a dead connection (Redis restarted since the last
//! call) is sent once more ([`again_if_dropped`]), so a restart costs no
//! request its answer; locks, reservations, claims and deletions are never
//! repeated.

use std::time::Duration;

mod coordination;
mod pool;
mod scripts;
mod sessions;
mod values;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::{Begun, CommandStart, Guard, Quota, Reservation, SessionStore, StoreError};
use crate::session::ids::{Owner, SessionId};
use crate::session::record::SessionRecord;

/// Longest a store call may take before it counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    /// The warm pool's set: one per node (each node's spares are in its own engine).
    pool: String,
    /// The node this store serves (`BRIG_NODE_ID`): part of its identity.
    node: Option<String>,
    /// Created on first use, so brig-api starts (and reports not-ready) while
    /// Redis is still down.
    manager: Mutex<Option<ConnectionManager>>,
}

fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Unavailable(err.into())
}

impl RedisStore {
    /// `url` like `redis://host:6379/0`; keys go under `brig:<instance>:`.
    pub fn new(url: &str, instance: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let prefix = format!("brig:{instance}:");
        Ok(RedisStore {
            client,
            pool: format!("{prefix}pool"),
            prefix,
            node: None,
            manager: Mutex::new(None),
        })
    }

    /// The store as node `node` (`BRIG_NODE_ID`) sees it: its warm pool is
    /// its own, and so is its identity (`<store>/<node>`), which labels every
    /// container it makes. A reaper therefore treats another node's containers
    /// (or a single host's, or those of a process given another node id on the
    /// same engine) like another store's: left alone, removed only past the
    /// age limit, never as orphans of records it does not judge.
    pub fn for_node(mut self, node: Option<&str>) -> Self {
        if let Some(node) = node {
            self.pool = format!("{}pool:{node}", self.prefix);
            self.node = Some(node.to_string());
        }
        self
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut manager = self.manager.lock().await;
        if let Some(manager) = manager.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connected = tokio::time::timeout(CALL_TIMEOUT, self.client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)?;
        *manager = Some(connected.clone());
        Ok(connected)
    }

    /// Runs one store operation under the call deadline.
    async fn call<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let connection = self.connection().await?;
            operation(connection).await.map_err(unavailable)
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| unavailable("call timed out"))?
    }

    fn session_key(&self, owner: &Owner, id: &str) -> String {
        format!("{}session:{}:{}", self.prefix, owner.as_str(), id)
    }

    fn owner_key(&self, owner: &Owner) -> String {
        format!("{}owner:{}", self.prefix, owner.as_str())
    }

    /// Where [`SessionStore::put_value`]'s `key` lives.
    fn value_key(&self, key: &str) -> String {
        format!("{}value:{key}", self.prefix)
    }
}

/// Runs `operation`, a store call that is safe to repeat; if it met a dead
/// connection, once more (the manager reconnects meanwhile).
async fn again_if_dropped<T, F, Fut>(operation: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match operation().await {
        Err(err) if connection_dropped(&err) => {
            tracing::info!(%err, "redis connection lost; reconnected, sending the call once more");
            operation().await
        }
        done => done,
    }
}

/// Whether the call failed because the connection was gone (not for a slow
/// or refusing Redis, which a repeat would not help).
fn connection_dropped(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable(cause) => cause
            .downcast_ref::<redis::RedisError>()
            .is_some_and(|err| err.is_connection_dropped() && !err.is_connection_refusal()),
        StoreError::Corrupt(_) => false,
    }
}

impl RedisStore {
    fn instance_key(&self) -> String {
        format!("{}sessions", self.prefix)
    }

    fn lock_key(&self, owner: &Owner, id: &str) -> String {
        format!("{}lock:{}:{}", self.prefix, owner.as_str(), id)
    }

    fn pool_key(&self) -> String {
        self.pool.clone()
    }

    fn running_key(&self, container: &str) -> String {
        format!("{}running:{container}", self.prefix)
    }
}

/// Each operation lives in the module of its concern; these are the inherent
/// methods of the same names (inherent methods win method resolution). Those
/// safe to repeat go through [`again_if_dropped`]; `reserve`, `delete`,
/// `try_lock`, `pool_take`, `pool_remove` and `set_once` do not (a repeat
/// could take twice, or mistake its own first success for someone else's).
#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        again_if_dropped(|| RedisStore::get(self, owner, id)).await
    }

    async fn reserve(&self, record: &SessionRecord, ttl: Duration, quota: Quota) -> Result<Reservation, StoreError> {
        RedisStore::reserve(self, record, ttl, quota).await
    }

    async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::replace(self, record, ttl)).await
    }

    async fn update_if(&self, record: &SessionRecord, ttl: Duration, guard: &Guard<'_>) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::update_if(self, record, ttl, guard)).await
    }

    async fn touch(&self, owner: &Owner, id: &SessionId, ttl: Duration) -> Result<Option<SessionRecord>, StoreError> {
        again_if_dropped(|| RedisStore::touch(self, owner, id, ttl)).await
    }

    async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        RedisStore::delete(self, owner, id).await
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError> {
        again_if_dropped(|| RedisStore::list(self, owner)).await
    }

    async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
        again_if_dropped(|| RedisStore::list_all(self)).await
    }

    async fn try_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        RedisStore::try_lock(self, owner, id, token, ttl).await
    }

    async fn unlock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::unlock(self, owner, id, token)).await
    }

    async fn extend_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::extend_lock(self, owner, id, token, ttl)).await
    }

    async fn begin_command(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        command: &CommandStart<'_>,
    ) -> Result<Option<Begun>, StoreError> {
        again_if_dropped(|| RedisStore::begin_command(self, owner, id, ttl, command)).await
    }

    async fn end_command(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        container: &str,
        token: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        again_if_dropped(|| RedisStore::touch_ending(self, owner, id, ttl, Some((container, token)))).await
    }

    async fn command_started(&self, container: &str, token: &str, deadline_ms: i64) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::command_started(self, container, token, deadline_ms)).await
    }

    async fn command_finished(&self, container: &str, token: &str) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::command_finished(self, container, token)).await
    }

    async fn command_running(&self, container: &str) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::command_running(self, container)).await
    }

    async fn lease_channel(&self, container: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::lease_channel(self, container, holder, ttl)).await
    }

    async fn pool_add(&self, container: &str) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::pool_add(self, container)).await
    }

    async fn pool_take(&self) -> Result<Option<String>, StoreError> {
        RedisStore::pool_take(self).await
    }

    async fn pool_claimed(&self, container: &str) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::pool_claimed(self, container)).await
    }

    async fn pool_remove(&self, container: &str) -> Result<bool, StoreError> {
        RedisStore::pool_remove(self, container).await
    }

    async fn pool_members(&self) -> Result<Vec<String>, StoreError> {
        again_if_dropped(|| RedisStore::pool_members(self)).await
    }

    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::put_value(self, key, value, ttl)).await
    }

    async fn swap_value(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        again_if_dropped(|| RedisStore::swap_value(self, key, value, ttl)).await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        again_if_dropped(|| RedisStore::get_value(self, key)).await
    }

    async fn set_once(&self, key: &str, ttl: Duration) -> Result<Option<Duration>, StoreError> {
        RedisStore::set_once(self, key, ttl).await
    }

    async fn push_bounded(&self, key: &str, item: &str, max: usize, ttl: Duration) -> Result<(), StoreError> {
        // Repeating it may list the item twice; readers drop duplicates.
        again_if_dropped(|| RedisStore::push_bounded(self, key, item, max, ttl)).await
    }

    async fn list_items(&self, key: &str) -> Result<Vec<String>, StoreError> {
        again_if_dropped(|| RedisStore::list_items(self, key)).await
    }

    async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        again_if_dropped(|| RedisStore::delete_value(self, key)).await
    }

    async fn put_charged(
        &self,
        account: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        quota: u64,
    ) -> Result<usize, StoreError> {
        // Repeating it stores the same value again and charges it once.
        again_if_dropped(|| RedisStore::put_charged(self, account, key, value, ttl, quota)).await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        let identity = again_if_dropped(|| RedisStore::identity(self)).await?;
        Ok(match &self.node {
            Some(node) => format!("{identity}/{node}"),
            None => identity,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        again_if_dropped(|| self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }))
            .await
            .map(drop)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
