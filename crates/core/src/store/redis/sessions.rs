//! Session records and their quota indexes: `session:<owner>:<id>`,
//! `owner:<owner>`, `sessions`.

use std::time::Duration;

use redis::AsyncCommands;

use super::{scripts, RedisStore};
use crate::session::ids::{Owner, SessionId};
use crate::session::record::SessionRecord;
use crate::store::{now_ms, ttl_ms, Quota, Reservation, StoreError};

impl RedisStore {
    pub(super) async fn get(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let (key, owner_key, sid) = (
            self.session_key(owner, id.as_str()),
            self.owner_key(owner),
            id.to_string(),
        );
        let now = now_ms();
        let (json, expiry, left): (Option<String>, Option<f64>, i64) = self
            .call(|mut c| async move {
                redis::pipe()
                    .get(&key)
                    .zscore(&owner_key, &sid)
                    .pttl(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // The index's score, else (an index entry trimmed early) the key's TTL.
        let expiry = expiry.map(|score| score as i64).or((left >= 0).then_some(now + left));
        decode_at(json, expiry)
    }

    /// The keys a record is stored and indexed under (session, owner index,
    /// instance index), and its member in the instance index.
    fn indexed(&self, record: &SessionRecord) -> ([String; 3], String) {
        let keys = [
            self.session_key(&record.owner, &record.session_id),
            self.owner_key(&record.owner),
            self.instance_key(),
        ];
        (keys, format!("{}:{}", record.owner.as_str(), record.session_id))
    }

    pub(super) async fn reserve(
        &self,
        record: &SessionRecord,
        ttl: Duration,
        quota: Quota,
    ) -> Result<Reservation, StoreError> {
        let now = now_ms();
        let stored = SessionRecord {
            expires_at_ms: now + ttl_ms(ttl),
            ..record.clone()
        };
        let (keys, member) = self.indexed(record);
        let json = encode(&stored);
        let (session_id, ttl_ms) = (record.session_id.clone(), ttl_ms(ttl));
        let resuming = record.suspended.is_some();
        let (status, existing, expiry): (i64, String, String) = self
            .call(|mut c| async move {
                scripts::RESERVE
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
                    .arg(if resuming { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match status {
            0 => Ok(Reservation::Reserved),
            1 => Ok(
                decode_at(Some(existing), expiry.parse::<f64>().ok().map(|score| score as i64))?
                    .map_or(Reservation::Reserved, |record| Reservation::Exists(Box::new(record))),
            ),
            2 => {
                let soonest = existing.parse::<i64>().unwrap_or(now);
                Ok(Reservation::OwnerQuotaExceeded {
                    frees_in: Duration::from_millis((soonest - now).max(0) as u64),
                })
            }
            4 => Ok(Reservation::Gone),
            _ => Ok(Reservation::CapacityExhausted),
        }
    }

    pub(super) async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        self.write(record, ttl).await
    }

    /// See [`crate::store::SessionStore::update_if`].
    pub(super) async fn update_if(
        &self,
        record: &SessionRecord,
        ttl: Duration,
        guard: &crate::store::Guard<'_>,
    ) -> Result<bool, StoreError> {
        let unless = (guard.unless_value).map(|key| self.value_key(key));
        let node = guard.node.unwrap_or_default().to_string();
        let stored = SessionRecord {
            expires_at_ms: now_ms() + ttl_ms(ttl),
            ..record.clone()
        };
        let (keys, member) = self.indexed(record);
        let (json, id, ttl_ms, parked) = (
            encode(&stored),
            record.session_id.clone(),
            ttl_ms(ttl) as u64,
            if record.is_parked() { "1" } else { "0" },
        );
        let stored: i64 = self
            .call(|mut c| async move {
                let mut script = scripts::UPDATE.key(&keys[0]);
                script.key(&keys[1]).key(&keys[2]);
                if let Some(unless) = &unless {
                    script.key(unless);
                }
                script
                    .arg(&json)
                    .arg(ttl_ms)
                    .arg(stored.expires_at_ms)
                    .arg(&id)
                    .arg(&member)
                    .arg(parked)
                    .arg(&node)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(stored == 1)
    }

    pub(super) async fn touch(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.touch_ending(owner, id, ttl, None).await
    }

    /// [`touch`](Self::touch); with `ending` (container, token), the command
    /// `token` stops running in that container first, in the same call.
    pub(super) async fn touch_ending(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
        ending: Option<(&str, &str)>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut keys = vec![
            self.session_key(owner, id.as_str()),
            self.owner_key(owner),
            self.instance_key(),
        ];
        let now = now_ms();
        let expiry = now + ttl_ms(ttl);
        let mut args = vec![
            ttl_ms(ttl).to_string(),
            expiry.to_string(),
            id.to_string(),
            format!("{}:{}", owner.as_str(), id.as_str()),
        ];
        if let Some((container, token)) = ending {
            keys.push(self.running_key(container));
            args.push(token.to_string());
        }
        let json: Option<String> = self
            .call(|mut c| async move {
                let mut invocation = scripts::TOUCH.prepare_invoke();
                invocation.key(&keys).arg(&args);
                invocation.invoke_async(&mut c).await
            })
            .await?;
        match decode_refreshed(json, now, ttl)? {
            // Left untouched: its expiry is the one stored.
            Some(record) if record.is_parked() => self.get(owner, id).await,
            other => Ok(other),
        }
    }

    pub(super) async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
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
        decode_at(json, None)
    }

    pub(super) async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError> {
        let owner_key = self.owner_key(owner);
        let now = now_ms();
        let ids: Vec<(String, f64)> = self
            .call(|mut c| async move { c.zrangebyscore_withscores(&owner_key, now, "+inf").await })
            .await?;
        let keyed = ids
            .iter()
            .map(|(id, expiry)| (self.session_key(owner, id), *expiry as i64));
        let mut records = self.get_many(keyed.collect()).await?;
        records.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(records)
    }

    pub(super) async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let instance_key = self.instance_key();
        let now = now_ms();
        let members: Vec<(String, f64)> = self
            .call(|mut c| async move { c.zrangebyscore_withscores(&instance_key, now, "+inf").await })
            .await?;
        let keyed = members.iter().filter_map(|(member, expiry)| {
            let (owner, id) = member.split_once(':')?;
            Some((format!("{}session:{owner}:{id}", self.prefix), *expiry as i64))
        });
        self.get_many(keyed.collect()).await
    }

    /// Stores `record` (with `ttl`) and indexes it, in one transaction.
    pub(super) async fn write(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        let stored = SessionRecord {
            expires_at_ms: now_ms() + ttl_ms(ttl),
            ..record.clone()
        };
        let ([key, owner_key, instance_key], member) = self.indexed(record);
        let (json, id, ttl_ms, expires) = (
            encode(&stored),
            record.session_id.clone(),
            ttl_ms(ttl) as u64,
            stored.expires_at_ms,
        );
        // A suspended session holds no container: it leaves the instance's
        // index (capacity, the reaper's list) but stays its owner's.
        let parked = record.is_parked();
        self.call(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&key)
                .arg(&json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .zadd(&owner_key, &id, expires)
                .ignore();
            if parked {
                pipe.zrem(&instance_key, &member).ignore();
            } else {
                pipe.zadd(&instance_key, &member, expires).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// MGET in chunks of (key, expiry from the index); missing keys (expired
    /// meanwhile) are skipped.
    async fn get_many(&self, keyed: Vec<(String, i64)>) -> Result<Vec<SessionRecord>, StoreError> {
        let mut records = Vec::with_capacity(keyed.len());
        for chunk in keyed.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|(key, _)| key.clone()).collect();
            let values: Vec<Option<String>> = self.call(|mut c| async move { c.mget(&keys).await }).await?;
            for (value, (_, expiry)) in values.into_iter().zip(chunk) {
                records.extend(decode_at(value, Some(*expiry))?);
            }
        }
        Ok(records)
    }
}

/// A stored record, whose expiry is `expiry` (the owner index's score: the
/// JSON keeps the one it was written with, as refreshing the TTL does not
/// rewrite it) when known.
pub(super) fn decode_at(json: Option<String>, expiry: Option<i64>) -> Result<Option<SessionRecord>, StoreError> {
    let Some(json) = json else { return Ok(None) };
    let mut record: SessionRecord = serde_json::from_str(&json).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    if let Some(expiry) = expiry {
        record.expires_at_ms = expiry;
    }
    Ok(Some(record))
}

/// A record just refreshed at `now`: it expires one TTL later, its own
/// (`ttl_ms`) or the caller's `ttl`.
pub(super) fn decode_refreshed(
    json: Option<String>,
    now: i64,
    ttl: Duration,
) -> Result<Option<SessionRecord>, StoreError> {
    Ok(decode_at(json, None)?.map(|mut record| {
        record.expires_at_ms = now + ttl_ms(record.ttl_or(ttl));
        record
    }))
}

fn encode(record: &SessionRecord) -> String {
    serde_json::to_string(record).expect("a session record always serialises")
}
