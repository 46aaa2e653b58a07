//! The in-process store: one brig-api process, no Redis. One mutex guards
//! everything, which makes reserve-with-quota atomic for free.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{now_ms, ttl_ms, Guard, Quota, Reservation, SessionStore, StoreError, CLAIM_MARK_MS, EVICTED};
use crate::session::ids::{Owner, SessionId};
use crate::session::record::SessionRecord;

type Key = (Owner, String);

#[derive(Default)]
struct State {
    records: HashMap<Key, SessionRecord>,
    /// Session → (token, expiry ms).
    locks: HashMap<Key, (String, i64)>,
    /// Container → [(token, deadline ms)].
    running: HashMap<String, Vec<(String, i64)>>,
    pool: std::collections::BTreeSet<String>,
    /// Recently claimed spares → expiry ms.
    claimed: HashMap<String, i64>,
    /// Container → (channel holder, expiry ms).
    leases: HashMap<String, (String, i64)>,
    /// Free-form keys → (value, expiry ms).
    values: HashMap<String, (String, i64)>,
    /// Charged accounts → their values: key → (bytes, expiry ms).
    charged: HashMap<String, HashMap<String, (u64, i64)>>,
}

impl State {
    /// Drops whatever has expired.
    fn expire(&mut self) {
        let now = now_ms();
        self.records.retain(|_, record| record.expires_at_ms > now);
        self.locks.retain(|_, (_, expiry)| *expiry > now);
        self.claimed.retain(|_, expiry| *expiry > now);
        self.leases.retain(|_, (_, expiry)| *expiry > now);
        self.values.retain(|_, (_, expiry)| *expiry > now);
        self.charged.retain(|_, values| {
            values.retain(|_, (_, expiry)| *expiry > now);
            !values.is_empty()
        });
        self.running.retain(|_, commands| {
            commands.retain(|(_, deadline)| *deadline > now);
            !commands.is_empty()
        });
    }
}

pub struct MemoryStore {
    state: Mutex<State>,
    /// Made per process: the records die with it.
    identity: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Mutex::default(),
            identity: hex::encode(rand::random::<[u8; 8]>()),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn live(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire();
        state
    }
}

fn key(owner: &Owner, id: &str) -> Key {
    (owner.clone(), id.to_string())
}

fn with_ttl(record: &SessionRecord, ttl: Duration) -> SessionRecord {
    SessionRecord {
        expires_at_ms: now_ms() + ttl_ms(ttl),
        ..record.clone()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.live().records.get(&key(owner, id.as_str())).cloned())
    }

    async fn reserve(&self, record: &SessionRecord, ttl: Duration, quota: Quota) -> Result<Reservation, StoreError> {
        let mut state = self.live();
        let session = key(&record.owner, &record.session_id);
        let existing = state.records.get(&session);
        if existing.is_none() && record.suspended.is_some() {
            return Ok(Reservation::Gone);
        }
        if let Some(ready) = existing.filter(|r| r.is_ready()) {
            return Ok(Reservation::Exists(Box::new(ready.clone())));
        }
        // A pending record (a crashed creator's) is already counted; a
        // suspended one only by its owner (it holds no container).
        let (owner_counted, total_counted) = (existing.is_some(), existing.is_some_and(|r| !r.is_parked()));
        if !owner_counted {
            let owned = state.records.keys().filter(|(owner, _)| owner == &record.owner).count();
            if owned >= quota.per_owner as usize {
                let soonest = state
                    .records
                    .values()
                    .filter(|r| r.owner == record.owner)
                    .map(|r| r.expires_at_ms)
                    .min()
                    .unwrap_or_default();
                return Ok(Reservation::OwnerQuotaExceeded {
                    frees_in: Duration::from_millis((soonest - now_ms()).max(0) as u64),
                });
            }
        }
        if !total_counted && state.records.values().filter(|r| !r.is_parked()).count() >= quota.total as usize {
            return Ok(Reservation::CapacityExhausted);
        }
        state.records.insert(session, with_ttl(record, ttl));
        Ok(Reservation::Reserved)
    }

    async fn replace(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        self.live()
            .records
            .insert(key(&record.owner, &record.session_id), with_ttl(record, ttl));
        Ok(())
    }

    async fn update_if(&self, record: &SessionRecord, ttl: Duration, guard: &Guard<'_>) -> Result<bool, StoreError> {
        let mut live = self.live();
        if guard.unless_value.is_some_and(|value| live.values.contains_key(value)) {
            return Ok(false);
        }
        let Some(current) = live.records.get_mut(&key(&record.owner, &record.session_id)) else {
            return Ok(false);
        };
        if current.node.as_deref() != guard.node {
            return Ok(false);
        }
        *current = with_ttl(record, ttl);
        Ok(true)
    }

    async fn touch(&self, owner: &Owner, id: &SessionId, ttl: Duration) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.live().records.get_mut(&key(owner, id.as_str())).map(|record| {
            // A suspended session's expiry is its retention.
            if !record.is_parked() {
                record.expires_at_ms = now_ms() + ttl_ms(record.ttl_or(ttl));
            }
            record.clone()
        }))
    }

    async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.live().records.remove(&key(owner, id.as_str())))
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions: Vec<_> = self
            .live()
            .records
            .values()
            .filter(|r| &r.owner == owner)
            .cloned()
            .collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(sessions)
    }

    async fn list_all(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .live()
            .records
            .values()
            .filter(|r| !r.is_parked())
            .cloned()
            .collect())
    }

    async fn try_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut state = self.live();
        let session = key(owner, id.as_str());
        if state.locks.contains_key(&session) {
            return Ok(false);
        }
        state.locks.insert(session, (token.to_string(), now_ms() + ttl_ms(ttl)));
        Ok(true)
    }

    async fn extend_lock(&self, owner: &Owner, id: &SessionId, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut state = self.live();
        match state.locks.get_mut(&key(owner, id.as_str())) {
            Some((holder, expiry)) if holder == token => {
                *expiry = now_ms() + ttl_ms(ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), StoreError> {
        let mut state = self.live();
        let session = key(owner, id.as_str());
        if state.locks.get(&session).is_some_and(|(holder, _)| holder == token) {
            state.locks.remove(&session);
        }
        Ok(())
    }

    async fn command_started(&self, container: &str, token: &str, deadline_ms: i64) -> Result<(), StoreError> {
        self.live()
            .running
            .entry(container.to_string())
            .or_default()
            .push((token.to_string(), deadline_ms));
        Ok(())
    }

    async fn command_finished(&self, container: &str, token: &str) -> Result<(), StoreError> {
        let mut state = self.live();
        if let Some(commands) = state.running.get_mut(container) {
            commands.retain(|(t, _)| t != token);
        }
        Ok(())
    }

    async fn command_running(&self, container: &str) -> Result<bool, StoreError> {
        Ok(self
            .live()
            .running
            .get(container)
            .is_some_and(|commands| !commands.is_empty()))
    }

    async fn lease_channel(&self, container: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut state = self.live();
        let expiry = now_ms() + ttl_ms(ttl);
        match state.leases.get_mut(container) {
            Some((current, _)) if current != holder => Ok(false),
            Some((_, until)) => {
                *until = expiry;
                Ok(true)
            }
            None => {
                state.leases.insert(container.to_string(), (holder.to_string(), expiry));
                Ok(true)
            }
        }
    }

    async fn pool_add(&self, container: &str) -> Result<(), StoreError> {
        self.live().pool.insert(container.to_string());
        Ok(())
    }

    async fn pool_take(&self) -> Result<Option<String>, StoreError> {
        let mut state = self.live();
        let taken = state.pool.pop_first();
        if let Some(spare) = &taken {
            state.claimed.insert(spare.clone(), now_ms() + CLAIM_MARK_MS);
        }
        Ok(taken)
    }

    async fn pool_claimed(&self, container: &str) -> Result<bool, StoreError> {
        Ok(self.live().claimed.contains_key(container))
    }

    async fn pool_remove(&self, container: &str) -> Result<bool, StoreError> {
        Ok(self.live().pool.remove(container))
    }

    async fn pool_members(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.live().pool.iter().cloned().collect())
    }

    async fn put_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.live()
            .values
            .insert(key.into(), (value.into(), now_ms() + ttl_ms(ttl)));
        Ok(())
    }

    async fn put_charged(
        &self,
        account: &str,
        key: &str,
        value: &str,
        ttl: Duration,
        quota: u64,
    ) -> Result<usize, StoreError> {
        let mut state = self.live();
        let state = &mut *state;
        let charged = state.charged.entry(account.to_string()).or_default();
        charged.remove(key);
        let size = value.len() as u64;
        let mut total: u64 = charged.values().map(|(bytes, _)| bytes).sum();
        let mut evicted = 0;
        while total + size > quota {
            let Some(soonest) = charged
                .iter()
                .min_by_key(|(k, (_, expiry))| (*expiry, (*k).clone()))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let (bytes, _) = charged.remove(&soonest).expect("just found");
            total -= bytes;
            if let Some((stored, _)) = state.values.get_mut(&soonest) {
                *stored = format!("{EVICTED}{account}");
            }
            evicted += 1;
        }
        let expiry = now_ms() + ttl_ms(ttl).max(1);
        charged.insert(key.to_string(), (size, expiry));
        state.values.insert(key.into(), (value.into(), expiry));
        Ok(evicted)
    }

    async fn identity(&self) -> Result<String, StoreError> {
        Ok(self.identity.clone())
    }

    async fn swap_value(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self
            .live()
            .values
            .insert(key.into(), (value.into(), now_ms() + ttl_ms(ttl)))
            .is_some())
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.live().values.get(key).map(|(value, _)| value.clone()))
    }

    async fn push_bounded(&self, key: &str, item: &str, max: usize, ttl: Duration) -> Result<(), StoreError> {
        // Kept as a value of newline-separated items, under its own key space.
        let mut state = self.live();
        let key = format!("\0list:{key}");
        let mut items: Vec<String> = state
            .values
            .get(&key)
            .map(|(value, _)| value.lines().map(str::to_string).collect())
            .unwrap_or_default();
        items.push(item.to_string());
        let skip = items.len().saturating_sub(max);
        state
            .values
            .insert(key, (items[skip..].join("\n"), now_ms() + ttl_ms(ttl)));
        Ok(())
    }

    async fn list_items(&self, key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .live()
            .values
            .get(&format!("\0list:{key}"))
            .map(|(value, _)| value.lines().map(str::to_string).collect())
            .unwrap_or_default())
    }

    async fn set_once(&self, key: &str, ttl: Duration) -> Result<Option<Duration>, StoreError> {
        let mut state = self.live();
        let now = now_ms();
        if let Some((_, expiry)) = state.values.get(key) {
            return Ok(Some(Duration::from_millis((expiry - now).max(1) as u64)));
        }
        state.values.insert(key.into(), (String::new(), now + ttl_ms(ttl)));
        Ok(None)
    }

    async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        self.live().values.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
