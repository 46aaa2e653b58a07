//! Free-form values with a TTL (`value:<key>`), for the typed facades in
//! [`crate::store::facades`].

use std::time::Duration;

use redis::AsyncCommands;

use super::{scripts, RedisStore};
use crate::store::{now_ms, ttl_ms, StoreError, EVICTED};

impl RedisStore {
    pub(super) async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let (key, value, ttl) = (self.value_key(key), value.to_string(), ttl_ms(ttl).max(1));
        self.call(|mut c| async move { c.pset_ex::<_, _, ()>(&key, value, ttl as u64).await })
            .await
    }

    pub(super) async fn swap_value(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (key, value, ttl) = (self.value_key(key), value.to_string(), ttl_ms(ttl).max(1));
        let old: Option<String> = self
            .call(|mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("PX")
                        .arg(ttl)
                        .arg("GET")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(old.is_some())
    }

    pub(super) async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = self.value_key(key);
        self.call(|mut c| async move { c.get(&key).await }).await
    }

    pub(super) async fn set_once(&self, key: &str, ttl: Duration) -> Result<Option<Duration>, StoreError> {
        let (key, ttl) = (self.value_key(key), ttl_ms(ttl).max(1));
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

    /// See [`crate::store::SessionStore::put_charged`]. Keys: the value, and
    /// the account's index (`charged:<account>`: value key → expiry), sizes
    /// (`charged-size:`) and total (`charged-total:`).
    pub(super) async fn put_charged(
        &self,
        account: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        quota: u64,
    ) -> Result<usize, StoreError> {
        let keys = [
            self.value_key(key),
            format!("{}charged:{account}", self.prefix),
            format!("{}charged-size:{account}", self.prefix),
            format!("{}charged-total:{account}", self.prefix),
        ];
        let ttl = ttl_ms(ttl).max(1);
        let now = now_ms();
        let value = value.to_string();
        let marker = format!("{EVICTED}{account}");
        self.call(|mut c| {
            let (keys, value, marker) = (keys.clone(), value.clone(), marker.clone());
            async move {
                scripts::PUT_CHARGED
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(value)
                    .arg(ttl)
                    .arg(now)
                    .arg(quota)
                    .arg(&marker)
                    .invoke_async::<usize>(&mut c)
                    .await
            }
        })
        .await
    }

    /// `store-id`: set once (`SET NX`, no expiry), then read, in one round trip.
    pub(super) async fn identity(&self) -> Result<String, StoreError> {
        let key = format!("{}store-id", self.prefix);
        let fresh = hex::encode(rand::random::<[u8; 8]>());
        self.call(|mut c| {
            let (key, fresh) = (key.clone(), fresh.clone());
            async move {
                let (identity,): (String,) = redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&fresh)
                    .arg("NX")
                    .ignore()
                    .get(&key)
                    .query_async(&mut c)
                    .await?;
                Ok(identity)
            }
        })
        .await
    }

    pub(super) async fn push_bounded(
        &self,
        key: &str,
        item: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (key, item, ttl) = (
            format!("{}list:{key}", self.prefix),
            item.to_string(),
            ttl_ms(ttl).max(1),
        );
        self.call(|mut c| {
            let (key, item) = (key.clone(), item.clone());
            async move {
                redis::pipe()
                    .atomic()
                    .rpush(&key, item)
                    .ignore()
                    .ltrim(&key, -(max as isize), -1)
                    .ignore()
                    .pexpire(&key, ttl)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await
    }

    pub(super) async fn list_items(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = format!("{}list:{key}", self.prefix);
        self.call(|mut c| async move { c.lrange(&key, 0, -1).await }).await
    }

    pub(super) async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        let key = self.value_key(key);
        self.call(|mut c| async move { c.del::<_, ()>(&key).await }).await
    }
}
