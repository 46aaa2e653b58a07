//! The warm pool's spares (`pool`) and claim marks (`claimed:<container>`).

use redis::AsyncCommands;

use super::{scripts, RedisStore};
use crate::store::{StoreError, CLAIM_MARK_MS};

impl RedisStore {
    pub(super) async fn pool_add(&self, container: &str) -> Result<(), StoreError> {
        let (key, container) = (self.pool_key(), container.to_string());
        self.call(|mut c| async move { c.sadd::<_, _, ()>(&key, &container).await })
            .await
    }

    pub(super) async fn pool_take(&self) -> Result<Option<String>, StoreError> {
        let (key, claimed_prefix) = (self.pool_key(), format!("{}claimed:", self.prefix));
        // SPOP is atomic: two claimers never get the same spare.
        self.call(|mut c| async move {
            scripts::POOL_TAKE
                .key(&key)
                .arg(&claimed_prefix)
                .arg(CLAIM_MARK_MS)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn pool_claimed(&self, container: &str) -> Result<bool, StoreError> {
        let key = format!("{}claimed:{container}", self.prefix);
        self.call(|mut c| async move { c.exists(&key).await }).await
    }

    pub(super) async fn pool_remove(&self, container: &str) -> Result<bool, StoreError> {
        let (key, container) = (self.pool_key(), container.to_string());
        let removed: u32 = self.call(|mut c| async move { c.srem(&key, &container).await }).await?;
        Ok(removed > 0)
    }

    pub(super) async fn pool_members(&self) -> Result<Vec<String>, StoreError> {
        let key = self.pool_key();
        self.call(|mut c| async move { c.smembers(&key).await }).await
    }
}
