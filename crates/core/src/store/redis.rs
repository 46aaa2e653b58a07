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
//! - `value:<key>` → free-form values with a TTL (execution records, cooldowns).
//!
//! Every call has a deadline, so an unreachable Redis turns into
//! [`StoreError::Unavailable`] within [`CALL_TIMEOUT`], and the connection
//! manager reconnects by itself once Redis is back.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::{now_ms, ttl_ms, Quota, Reservation, SessionStore, StoreError, CLAIM_MARK_MS};
use crate::session::{Owner, SessionId, SessionRecord};

/// Longest a store call may take before it counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    /// Created on first use, so brig-api starts (and reports not-ready) while
    /// Redis is still down.
    manager: Mutex<Option<ConnectionManager>>,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl RedisStore {
    /// `url` like `redis://host:6379/0`; keys go under `brig:<instance>:`.
    pub fn new(url: &str, instance: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(RedisStore {
            client,
            prefix: format!("brig:{instance}:"),
            manager: Mutex::new(None),
        })
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
}

fn decode(json: Option<String>) -> Result<Option<SessionRecord>, StoreError> {
    json.map(|json| serde_json::from_str(&json).map_err(|err| StoreError::Corrupt(err.to_string())))
        .transpose()
}

fn encode(record: &SessionRecord) -> String {
    serde_json::to_string(record).expect("a session record always serialises")
}

/// Reserve atomically: a ready record wins; else both quotas are checked
/// against the live members of the owner and instance indexes (expired members
/// dropped first) and the record is stored and indexed.
/// KEYS: session, owner index, instance index.
/// ARGV: record json, ttl ms, now ms, expires ms, session id, "owner:session id",
/// per-owner quota, total quota. Returns {status, existing json}.
const RESERVE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and record.container_id ~= '' then return {1, current} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[5]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then
  return {2, ''}
end
if not redis.call('ZSCORE', KEYS[3], ARGV[6]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[8]) then
  return {3, ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return {0, ''}
"#;

/// SPOP KEYS[1]; marks what it took as claimed (ARGV[1] .. id) for ARGV[2] ms.
const POOL_TAKE: &str = r#"
local spare = redis.call('SPOP', KEYS[1])
if spare then redis.call('SET', ARGV[1] .. spare, '1', 'PX', ARGV[2]) end
return spare
"#;

/// Sets KEYS[1] to ARGV[1] for ARGV[2] ms if it is free or already ARGV[1]'s.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Compare-and-set of a session record with its TTL and index scores.
/// KEYS: session, owner index, instance index. ARGV: expected json, new json,
/// ttl ms, new expiry ms, session id, "owner:session id". 1 if swapped.
const TOUCH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return 1
"#;

/// Deletes KEYS[1] only if it still holds ARGV[1].
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

impl RedisStore {
    fn instance_key(&self) -> String {
        format!("{}sessions", self.prefix)
    }

    fn lock_key(&self, owner: &Owner, id: &str) -> String {
        format!("{}lock:{}:{}", self.prefix, owner.as_str(), id)
    }

    fn pool_key(&self) -> String {
        format!("{}pool", self.prefix)
    }

    fn running_key(&self, container: &str) -> String {
        format!("{}running:{container}", self.prefix)
    }

    /// Stores `record` (with `ttl`) and indexes it, in one transaction.
    async fn write(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        let stored = SessionRecord {
            expires_at_ms: now_ms() + ttl_ms(ttl),
            ..record.clone()
        };
        let key = self.session_key(&record.owner, &record.session_id);
        let (owner_key, instance_key) = (self.owner_key(&record.owner), self.instance_key());
        let member = format!("{}:{}", record.owner.as_str(), record.session_id);
        let (json, id, ttl_ms, expires) = (
            encode(&stored),
            record.session_id.clone(),
            ttl_ms(ttl) as u64,
            stored.expires_at_ms,
        );
        self.call(|mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(&json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .zadd(&owner_key, &id, expires)
                .ignore()
                .zadd(&instance_key, &member, expires)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(owner, id.as_str());
        decode(
            self.call(|mut c| async move { c.get::<_, Option<String>>(key).await })
                .await?,
        )
    }

    async fn reserve(&self, record: &SessionRecord, ttl: Duration, quota: Quota) -> Result<Reservation, StoreError> {
        let now = now_ms();
        let stored = SessionRecord {
            expires_at_ms: now + ttl_ms(ttl),
            ..record.clone()
        };
        let keys = [
            self.session_key(&record.owner, &record.session_id),
            self.owner_key(&record.owner),
            self.instance_key(),
        ];
        let member = format!("{}:{}", record.owner.as_str(), record.session_id);
        let json = encode(&stored);
        let (session_id, ttl_ms) = (record.session_id.clone(), ttl_ms(ttl));
        let (status, existing): (i64, String) = self
            .call(|mut c| async move {
                redis::Script::new(RESERVE)
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .arg(&json)
                    .arg(ttl_ms)
                    .arg(now)
                    .arg(stored.expires_at_ms)
                    .arg(&session_id)
                    .arg(&member)
                    .arg(quota.per_owner)
                    .arg(quota.total)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match status {
            0 => Ok(Reservation::Reserved),
            1 => Ok(decode(Some(existing))?.map_or(Reservation::Reserved, Reservation::Exists)),
            2 => Ok(Reservation::OwnerQuotaExceeded),
            _ => Ok(Reservation::CapacityExhausted),
        }
    }

    async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        self.write(record, ttl).await
    }

    async fn touch(&self, owner: &Owner, id: &SessionId, ttl: Duration) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(owner, id.as_str());
        for _ in 0..3 {
            let current: Option<String> = {
                let key = key.clone();
                self.call(|mut c| async move { c.get(key).await }).await?
            };
            let Some(current) = current else { return Ok(None) };
            let Some(record) = decode(Some(current.clone()))? else {
                return Ok(None);
            };
            let touched = SessionRecord {
                expires_at_ms: now_ms() + ttl_ms(ttl),
                ..record
            };
            // Compare-and-set: a plain GET then SET could write back a record that
            // changed in between (a pending one over its ready successor, or an old
            // container over its replacement), and lose that update.
            let keys = [key.clone(), self.owner_key(owner), self.instance_key()];
            let member = format!("{}:{}", owner.as_str(), id.as_str());
            let (json, sid, ttl_ms) = (encode(&touched), id.as_str().to_string(), ttl_ms(ttl));
            let swapped: i64 = self
                .call(|mut c| async move {
                    redis::Script::new(TOUCH)
                        .key(&keys[0])
                        .key(&keys[1])
                        .key(&keys[2])
                        .arg(&current)
                        .arg(&json)
                        .arg(ttl_ms)
                        .arg(touched.expires_at_ms)
                        .arg(&sid)
                        .arg(&member)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if swapped == 1 {
                return Ok(Some(touched));
            }
        }
        // Changed under us three times: someone else keeps it fresh; report it as is.
        self.get(owner, id).await
    }

    async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(owner, id.as_str());
        let (owner_key, instance_key) = (self.owner_key(owner), self.instance_key());
        let (sid, member) = (id.as_str().to_string(), format!("{}:{}", owner.as_str(), id.as_str()));
        let (json,): (Option<String>,) = self
            .call(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("GETDEL")
                    .arg(&key)
                    .zrem(&owner_key, &sid)
                    .ignore()
                    .zrem(&instance_key, &member)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        decode(json)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError> {
        let owner_key = self.owner_key(owner);
        let now = now_ms();
        let ids: Vec<String> = self
            .call(|mut c| async move { c.zrangebyscore(&owner_key, now, "+inf").await })
            .await?;
        let keys: Vec<String> = ids.iter().map(|id| self.session_key(owner, id)).collect();
        let mut records = self.get_many(keys).await?;
        records.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(records)
    }

    async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let instance_key = self.instance_key();
        let now = now_ms();
        let members: Vec<String> = self
            .call(|mut c| async move { c.zrangebyscore(&instance_key, now, "+inf").await })
            .await?;
        let keys: Vec<String> = members
            .iter()
            .filter_map(|member| member.split_once(':'))
            .map(|(owner, id)| format!("{}session:{owner}:{id}", self.prefix))
            .collect();
        self.get_many(keys).await
    }

    async fn try_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (key, token, ttl_ms) = (self.lock_key(owner, id.as_str()), token.to_string(), ttl_ms(ttl));
        let set: Option<String> = self
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn unlock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), StoreError> {
        let (key, token) = (self.lock_key(owner, id.as_str()), token.to_string());
        self.call(|mut c| async move {
            redis::Script::new(UNLOCK)
                .key(&key)
                .arg(&token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    async fn command_started(&self, container: &str, token: &str, deadline_ms: i64) -> Result<(), StoreError> {
        let (key, token) = (self.running_key(container), token.to_string());
        let ttl = (deadline_ms - now_ms()).max(0) + 60_000;
        self.call(|mut c| async move {
            // NX then GT: a new key gets a TTL, an existing one only a longer one.
            redis::pipe()
                .zadd(&key, &token, deadline_ms)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .arg("NX")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .arg("GT")
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn command_finished(&self, container: &str, token: &str) -> Result<(), StoreError> {
        let (key, token) = (self.running_key(container), token.to_string());
        self.call(|mut c| async move { c.zrem::<_, _, ()>(&key, &token).await })
            .await
    }

    async fn command_running(&self, container: &str) -> Result<bool, StoreError> {
        let key = self.running_key(container);
        let now = now_ms();
        let running: u64 = self
            .call(|mut c| async move { c.zcount(&key, now, "+inf").await })
            .await?;
        Ok(running > 0)
    }

    async fn lease_channel(&self, container: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (key, holder, ttl_ms) = (
            format!("{}lease:{container}", self.prefix),
            holder.to_string(),
            ttl_ms(ttl),
        );
        let granted: i64 = self
            .call(|mut c| async move {
                redis::Script::new(LEASE)
                    .key(&key)
                    .arg(&holder)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(granted == 1)
    }

    async fn pool_add(&self, container: &str) -> Result<(), StoreError> {
        let (key, container) = (self.pool_key(), container.to_string());
        self.call(|mut c| async move { c.sadd::<_, _, ()>(&key, &container).await })
            .await
    }

    async fn pool_take(&self) -> Result<Option<String>, StoreError> {
        let (key, claimed_prefix) = (self.pool_key(), format!("{}claimed:", self.prefix));
        // SPOP is atomic: two claimers never get the same spare.
        self.call(|mut c| async move {
            redis::Script::new(POOL_TAKE)
                .key(&key)
                .arg(&claimed_prefix)
                .arg(CLAIM_MARK_MS)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    async fn pool_claimed(&self, container: &str) -> Result<bool, StoreError> {
        let key = format!("{}claimed:{container}", self.prefix);
        self.call(|mut c| async move { c.exists(&key).await }).await
    }

    async fn pool_remove(&self, container: &str) -> Result<bool, StoreError> {
        let (key, container) = (self.pool_key(), container.to_string());
        let removed: u32 = self.call(|mut c| async move { c.srem(&key, &container).await }).await?;
        Ok(removed > 0)
    }

    async fn pool_members(&self) -> Result<Vec<String>, StoreError> {
        let key = self.pool_key();
        self.call(|mut c| async move { c.smembers(&key).await }).await
    }

    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let (key, value, ttl) = (
            format!("{}value:{key}", self.prefix),
            value.to_string(),
            ttl_ms(ttl).max(1),
        );
        self.call(|mut c| async move { c.pset_ex::<_, _, ()>(&key, value, ttl as u64).await })
            .await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{}value:{key}", self.prefix);
        self.call(|mut c| async move { c.get(&key).await }).await
    }

    async fn set_once(&self, key: &str, ttl: Duration) -> Result<Option<Duration>, StoreError> {
        let (key, ttl) = (format!("{}value:{key}", self.prefix), ttl_ms(ttl).max(1));
        let set: bool = self
            .call(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("")
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<Option<String>>(&mut c)
                        .await
                        .map(|reply| reply.is_some())
                }
            })
            .await?;
        if set {
            return Ok(None);
        }
        let left: i64 = self.call(|mut c| async move { c.pttl(&key).await }).await?;
        // -2: expired between the two calls; -1 cannot happen (always set with PX).
        Ok(Some(Duration::from_millis(left.max(1) as u64)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

impl RedisStore {
    /// MGET in chunks; missing keys (expired meanwhile) are skipped.
    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<SessionRecord>, StoreError> {
        let mut records = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let chunk = chunk.to_vec();
            let values: Vec<Option<String>> = self.call(|mut c| async move { c.mget(&chunk).await }).await?;
            for value in values {
                records.extend(decode(value)?);
            }
        }
        Ok(records)
    }
}
