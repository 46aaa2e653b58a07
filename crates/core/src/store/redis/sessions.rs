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
        let key = self.session_key(owner, id.as_str());
        decode(
            self.call(|mut c| async move { c.get::<_, Option<String>>(key).await })
                .await?,
        )
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
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match status {
            0 => Ok(Reservation::Reserved),
            1 => Ok(decode(Some(existing))?.map_or(Reservation::Reserved, Reservation::Exists)),
            2 => {
                let soonest = existing.parse::<i64>().unwrap_or(now);
                Ok(Reservation::OwnerQuotaExceeded {
                    frees_in: Duration::from_millis((soonest - now).max(0) as u64),
                })
            }
            _ => Ok(Reservation::CapacityExhausted),
        }
    }

    pub(super) async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        self.write(record, ttl).await
    }

    pub(super) async fn touch(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
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
                    scripts::TOUCH
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
        decode(json)
    }

    pub(super) async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError> {
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

    pub(super) async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
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

    /// Stores `record` (with `ttl`) and indexes it, in one transaction.
    pub(super) async fn write(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
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

fn decode(json: Option<String>) -> Result<Option<SessionRecord>, StoreError> {
    json.map(|json| serde_json::from_str(&json).map_err(|err| StoreError::Corrupt(err.to_string())))
        .transpose()
}

fn encode(record: &SessionRecord) -> String {
    serde_json::to_string(record).expect("a session record always serialises")
}
