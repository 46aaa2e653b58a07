//! Coordination between requests and processes: creation locks
//! (`lock:<owner>:<id>`), running commands (`running:<container>`) and channel
//! leases (`lease:<container>`).

use std::time::Duration;

use redis::AsyncCommands;

use super::sessions::decode_refreshed;
use super::{scripts, RedisStore};
use crate::session::ids::{Owner, SessionId};
use crate::store::{now_ms, ttl_ms, Begun, CommandStart, StoreError};

/// What `BEGIN_COMMAND` says in place of a lease for another node's session.
const NOT_OURS: i64 = 2;

impl RedisStore {
    pub(super) async fn try_lock(
        &self,
        owner: &Owner,
        id: &SessionId,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
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

    pub(super) async fn unlock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), StoreError> {
        let (key, token) = (self.lock_key(owner, id.as_str()), token.to_string());
        self.call(|mut c| async move { scripts::UNLOCK.key(&key).arg(&token).invoke_async::<i64>(&mut c).await })
            .await
            .map(drop)
    }

    pub(super) async fn extend_lock(
        &self,
        owner: &Owner,
        id: &SessionId,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.hold(&scripts::EXTEND_LOCK, self.lock_key(owner, id.as_str()), token, ttl)
            .await
    }

    /// Runs a holder's script (`LEASE`, `EXTEND_LOCK`: KEYS[1] the key,
    /// ARGV the holder and a TTL in ms): whether the holder has the key now.
    async fn hold(&self, script: &redis::Script, key: String, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (holder, ttl_ms) = (holder.to_string(), ttl_ms(ttl));
        let held: i64 = self
            .call(|mut c| async move { script.key(&key).arg(&holder).arg(ttl_ms).invoke_async(&mut c).await })
            .await?;
        Ok(held == 1)
    }

    pub(super) async fn command_started(
        &self,
        container: &str,
        token: &str,
        deadline_ms: i64,
    ) -> Result<(), StoreError> {
        let (key, token, now) = (self.running_key(container), token.to_string(), now_ms());
        self.call(|mut c| async move {
            scripts::MARK
                .key(&key)
                .arg(&token)
                .arg(deadline_ms)
                .arg(now)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    pub(super) async fn command_finished(&self, container: &str, token: &str) -> Result<(), StoreError> {
        let (key, token) = (self.running_key(container), token.to_string());
        self.call(|mut c| async move { c.zrem::<_, _, ()>(&key, &token).await })
            .await
    }

    pub(super) async fn command_running(&self, container: &str) -> Result<bool, StoreError> {
        let key = self.running_key(container);
        let now = now_ms();
        let running: u64 = self
            .call(|mut c| async move { c.zcount(&key, now, "+inf").await })
            .await?;
        Ok(running > 0)
    }

    pub(super) async fn lease_channel(&self, container: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.hold(
            &scripts::LEASE,
            format!("{}lease:{container}", self.prefix),
            holder,
            ttl,
        )
        .await
    }

    pub(super) async fn begin_command(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        command: &CommandStart<'_>,
    ) -> Result<Option<Begun>, StoreError> {
        let keys = [
            self.session_key(owner, id.as_str()),
            self.owner_key(owner),
            self.instance_key(),
        ];
        let now = now_ms();
        let expiry = now + ttl_ms(ttl);
        let args = [
            ttl_ms(ttl).to_string(),
            expiry.to_string(),
            id.to_string(),
            format!("{}:{}", owner.as_str(), id.as_str()),
            self.prefix.clone(),
            command.token.to_string(),
            command.deadline_ms.to_string(),
            command.holder.to_string(),
            ttl_ms(command.lease).to_string(),
            now.to_string(),
            command.node.unwrap_or_default().to_string(),
        ];
        let begun: Option<(String, i64)> = self
            .call(|mut c| async move {
                let mut invocation = scripts::BEGIN_COMMAND.prepare_invoke();
                invocation.key(&keys).arg(&args);
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let Some((json, leased)) = begun else { return Ok(None) };
        if leased == NOT_OURS {
            let record = decode_refreshed(Some(json), now, ttl)?;
            return Ok(record.map(|record| Begun { record, leased: false }));
        }
        Ok(decode_refreshed(Some(json), now, ttl)?.map(|record| Begun {
            record,
            leased: leased == 1,
        }))
    }
}
