//! The reaper: one pass over this instance's containers and session records.
//!
//! It removes containers whose session record is gone (expired in the store,
//! deleted, or lost with a flushed Redis) unless a command is running in them,
//! containers past their maximum age whatever they are doing, and stopped
//! containers (their agent is gone); it deletes records whose container no
//! longer exists, so the next use creates a fresh one. Anything younger than the
//! grace period is left alone: it may be a creation in flight.
//!
//! Only its own store's containers (`brig.store`, the store's identity) are
//! judged by its records. Another store's, which means another deployment
//! with the same `BRIG_INSTANCE` on this engine (or this store lost its data),
//! are reported and left to their owner, and removed only past the age limit
//! (newcomer trial P4: two deployments reaped each other's live sandboxes).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::Serialize;

use crate::config::CleanupConfig;
use crate::runtime::SandboxRuntime;
use crate::sandbox::{labels, SandboxInfo};
use crate::session::ids::SessionId;
use crate::session::record::SessionRecord;
use crate::store::SessionStore;

/// Containers removed concurrently within one pass.
const REMOVALS_AT_ONCE: usize = 8;

/// What one pass found and did; logged as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassSummary {
    pub found: usize,
    pub removed_session_gone: usize,
    pub removed_over_age: usize,
    pub removed_stopped: usize,
    pub removed_pool_surplus: usize,
    pub skipped_busy: usize,
    pub records_repaired: usize,
    /// Containers of another store (left to their owner).
    pub foreign: usize,
    pub errors: usize,
    pub duration_ms: f64,
}

impl PassSummary {
    pub fn removed(&self) -> usize {
        self.removed_session_gone + self.removed_over_age + self.removed_stopped + self.removed_pool_surplus
    }
}

/// What [`Reaper::purge`] removed; logged as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurgeSummary {
    pub containers_removed: usize,
    pub records_deleted: usize,
    /// Containers of another store, left alone.
    pub foreign_left: usize,
    pub errors: usize,
}

pub struct Reaper {
    store: Arc<dyn SessionStore>,
    runtime: Arc<dyn SandboxRuntime>,
    config: CleanupConfig,
    /// `WARM_POOL_SIZE`: spares beyond it are surplus.
    pool_size: usize,
    /// Other stores already reported (once each).
    reported: std::sync::Mutex<HashSet<String>>,
    /// The node whose engine this is (`None`: a single host).
    node: Option<String>,
}

/// Whether `sandbox` belongs to a store other than `identity` (a container
/// without the label predates it and is judged as our own).
fn is_foreign(sandbox: &SandboxInfo, identity: &str) -> bool {
    sandbox.labels.get(labels::STORE).is_some_and(|store| store != identity)
}

/// The summary's counter a removal adds to.
type Counter = fn(&mut PassSummary) -> &mut usize;

fn over_age(summary: &mut PassSummary) -> &mut usize {
    &mut summary.removed_over_age
}

enum Verdict {
    Keep,
    Busy,
    Remove(Counter),
}

impl Reaper {
    pub fn new(
        store: Arc<dyn SessionStore>,
        runtime: Arc<dyn SandboxRuntime>,
        config: CleanupConfig,
        pool_size: usize,
    ) -> Self {
        Reaper {
            store,
            runtime,
            config,
            pool_size,
            reported: Default::default(),
            node: None,
        }
    }

    /// The reaper of node `node`: it judges only that node's session records
    /// (another node's container is in another engine), so a container of its
    /// engine whose session now lives elsewhere (resumed on another node while
    /// this one was away) is stale and goes.
    pub fn with_node(mut self, node: Option<String>) -> Self {
        self.node = node;
        self
    }

    /// Says, once per store, that another store's containers share this
    /// instance on this engine.
    fn report_foreign<'a>(&self, foreign: impl IntoIterator<Item = &'a SandboxInfo>) {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for sandbox in foreign {
            let store = sandbox.labels.get(labels::STORE).cloned().unwrap_or_default();
            if reported.insert(store.clone()) {
                tracing::warn!(
                    target: "brig::cleanup",
                    other_store = %store,
                    instance = sandbox.labels.get(labels::INSTANCE).map(String::as_str).unwrap_or(""),
                    "containers of this BRIG_INSTANCE belong to another store: another deployment uses the same \
                     BRIG_INSTANCE on this engine (give each its own), or this store lost its data. They are left \
                     to their owner, and removed only past CLEANUP_MAX_CONTAINER_AGE_SECONDS"
                );
            }
        }
    }

    /// One pass; errors are counted and logged, never fatal.
    pub async fn run_once(&self) -> PassSummary {
        let started = Instant::now();
        let mut summary = PassSummary::default();
        let (sandboxes, records) = match (self.runtime.list().await, self.store.list_all().await) {
            (Ok(sandboxes), Ok(records)) => (sandboxes, records),
            (Err(err), _) => {
                tracing::error!(%err, "cleanup: listing containers failed");
                summary.errors += 1;
                return self.finish(summary, started);
            }
            (_, Err(err)) => {
                tracing::error!(%err, "cleanup: listing sessions failed");
                summary.errors += 1;
                return self.finish(summary, started);
            }
        };
        let records: Vec<SessionRecord> = records.into_iter().filter(|r| r.node == self.node).collect();
        let identity = match self.store.identity().await {
            Ok(identity) => identity,
            Err(err) => {
                tracing::error!(%err, "cleanup: reading the store's identity failed");
                summary.errors += 1;
                return self.finish(summary, started);
            }
        };
        summary.found = sandboxes.len();
        let now = unix_now();
        let (foreign, sandboxes): (Vec<SandboxInfo>, Vec<SandboxInfo>) =
            sandboxes.into_iter().partition(|s| is_foreign(s, &identity));
        summary.foreign = foreign.len();
        self.report_foreign(&foreign);
        let live: HashSet<&str> = records.iter().filter_map(SessionRecord::container).collect();
        // Sessions whose container is being created right now (pending record):
        // a slow creation can outlast the grace period.
        let pending: HashSet<(&str, &str)> = records
            .iter()
            .filter(|r| r.container().is_none() && !r.is_parked())
            .map(|r| (r.owner.as_str(), r.session_id.as_str()))
            .collect();
        // A spare with a live record has been claimed (its rename may still be
        // in flight): it is a session's container.
        let (spares, sandboxes): (Vec<&SandboxInfo>, Vec<&SandboxInfo>) = sandboxes
            .iter()
            .partition(|s| self.runtime.is_spare(s) && !live.contains(s.id.as_str()));
        self.reap_spares(&spares, now, &mut summary).await;
        // Another store's containers go only past the age limit.
        let mut doomed: Vec<(String, String, Counter)> = foreign
            .iter()
            .filter(|s| settled_age(s, now) >= self.config.max_age)
            .map(|s| (s.id.clone(), s.name.clone(), over_age as Counter))
            .collect();
        for sandbox in sandboxes.iter().copied() {
            match self.judge(sandbox, now, &live, &pending).await {
                Ok(Verdict::Keep) => {}
                Ok(Verdict::Busy) => summary.skipped_busy += 1,
                Ok(Verdict::Remove(counter)) => doomed.push((sandbox.id.clone(), sandbox.name.clone(), counter)),
                Err(err) => {
                    tracing::warn!(%err, container = %sandbox.name, "cleanup: cannot tell whether the sandbox is busy");
                    summary.errors += 1;
                }
            }
        }
        for ((id, name, counter), removed) in self.remove_each(doomed, |(id, _, _)| id.clone()).await {
            if let Err(err) = removed {
                tracing::warn!(%err, container = %name, "cleanup: removal failed");
                summary.errors += 1;
                continue;
            }
            *counter(&mut summary) += 1;
            // An over-age container takes its record along.
            if let Some(record) = records.iter().find(|r| r.container() == Some(id.as_str())) {
                self.delete_record(record, &mut summary.errors).await;
            }
        }
        let existing: HashSet<&str> = sandboxes
            .iter()
            .chain(&spares)
            .copied()
            .chain(&foreign)
            .map(|s| s.id.as_str())
            .collect();
        let grace_ms = self.config.grace.as_millis() as i64;
        for record in &records {
            let settled = now as i64 * 1000 - record.created_at_ms >= grace_ms;
            // A suspended session has no container by design: its workspace
            // is a snapshot, and only its record names it.
            if settled
                && record.suspended.is_none()
                && record.container().is_none_or(|container| !existing.contains(container))
                && self.delete_record(record, &mut summary.errors).await
            {
                summary.records_repaired += 1;
            }
        }
        self.finish(summary, started)
    }

    /// Warm-pool spares: over-age or stopped ones go; so do members of the set
    /// beyond the pool size (taken out of the set first, so nobody can claim
    /// them meanwhile) and settled spares the set does not know (left by an
    /// earlier process), re-checked just before removal in case one was claimed.
    async fn reap_spares(&self, spares: &[&SandboxInfo], now: u64, summary: &mut PassSummary) {
        let members: HashSet<String> = match self.store.pool_members().await {
            Ok(members) => members.into_iter().collect(),
            Err(err) => {
                tracing::warn!(%err, "cleanup: reading the warm pool failed");
                summary.errors += 1;
                return;
            }
        };
        let mut kept = 0;
        for spare in spares {
            let age = settled_age(spare, now);
            let counter: fn(&mut PassSummary) -> &mut usize = if age >= self.config.max_age {
                |s| &mut s.removed_over_age
            } else if !spare.running {
                |s| &mut s.removed_stopped
            } else if members.contains(&spare.id) {
                kept += 1;
                if kept <= self.pool_size || !matches!(self.store.pool_remove(&spare.id).await, Ok(true)) {
                    continue;
                }
                |s| &mut s.removed_pool_surplus
            } else if age >= self.config.grace && self.still_spare(&spare.id).await {
                |s| &mut s.removed_pool_surplus
            } else {
                continue;
            };
            let _ = self.store.pool_remove(&spare.id).await;
            match self.runtime.remove(&spare.id).await {
                Ok(()) => *counter(summary) += 1,
                Err(err) => {
                    tracing::warn!(%err, container = %spare.name, "cleanup: removing a spare failed");
                    summary.errors += 1;
                }
            }
        }
    }

    /// Still an unclaimed spare: not taken from the set lately (a claim renames
    /// in the background) and still carrying a pool name.
    async fn still_spare(&self, id: &str) -> bool {
        if !matches!(self.store.pool_claimed(id).await, Ok(false)) {
            return false;
        }
        matches!(self.runtime.inspect(id).await, Ok(Some(info)) if self.runtime.is_spare(&info))
    }

    async fn judge(
        &self,
        sandbox: &SandboxInfo,
        now: u64,
        live: &HashSet<&str>,
        pending: &HashSet<(&str, &str)>,
    ) -> Result<Verdict, crate::store::StoreError> {
        let age = settled_age(sandbox, now);
        if age >= self.config.max_age {
            return Ok(Verdict::Remove(over_age));
        }
        if age < self.config.grace {
            return Ok(Verdict::Keep);
        }
        if !sandbox.running {
            return Ok(Verdict::Remove(|s| &mut s.removed_stopped));
        }
        if live.contains(sandbox.id.as_str())
            || pending.contains(&(sandbox.owner.as_str(), sandbox.session_id.as_str()))
        {
            return Ok(Verdict::Keep);
        }
        if self.store.command_running(&sandbox.id).await? {
            return Ok(Verdict::Busy);
        }
        Ok(Verdict::Remove(|s| &mut s.removed_session_gone))
    }

    /// Removes the container of each item (`id_of` names it), a few at once:
    /// removal is the slow part (tens of ms each, mostly in the engine), so a
    /// backlog drains in seconds. Each item comes back with its outcome.
    async fn remove_each<T>(
        &self,
        items: Vec<T>,
        id_of: impl Fn(&T) -> String,
    ) -> Vec<(T, Result<(), crate::runtime::RuntimeError>)> {
        futures_util::stream::iter(items)
            .map(|item| {
                let (runtime, id) = (Arc::clone(&self.runtime), id_of(&item));
                async move { (item, runtime.remove(&id).await) }
            })
            .buffer_unordered(REMOVALS_AT_ONCE)
            .collect()
            .await
    }

    /// Deletes `record`; a failure is logged and counted in `errors`.
    async fn delete_record(&self, record: &SessionRecord, errors: &mut usize) -> bool {
        let Ok(id) = SessionId::parse(&record.session_id) else {
            return false;
        };
        match self.store.delete(&record.owner, &id).await {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(%err, "cleanup: deleting a record failed");
                *errors += 1;
                false
            }
        }
    }

    fn finish(&self, mut summary: PassSummary, started: Instant) -> PassSummary {
        summary.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!(crate::metrics::CLEANUP_PASSES).increment(1);
        metrics::counter!(crate::metrics::CLEANUP_ERRORS).increment(summary.errors as u64);
        crate::metrics::container_removed("session_gone", summary.removed_session_gone as u64);
        crate::metrics::container_removed("over_age", summary.removed_over_age as u64);
        crate::metrics::container_removed("stopped", summary.removed_stopped as u64);
        crate::metrics::container_removed("pool_surplus", summary.removed_pool_surplus as u64);
        tracing::info!(
            target: "brig::cleanup",
            found = summary.found,
            removed = summary.removed(),
            removed_session_gone = summary.removed_session_gone,
            removed_over_age = summary.removed_over_age,
            removed_stopped = summary.removed_stopped,
            removed_pool_surplus = summary.removed_pool_surplus,
            skipped_busy = summary.skipped_busy,
            records_repaired = summary.records_repaired,
            foreign = summary.foreign,
            errors = summary.errors,
            duration_ms = summary.duration_ms,
            "cleanup pass"
        );
        summary
    }

    /// Everything of this instance's store, busy or not: every session
    /// record, the warm pool, and every container (sessions' and spares;
    /// another store's are left and reported). For the process
    /// whose records die with it (the embedded mode's exit) and for an
    /// operator taking a deployment down (`brig-cleanup-worker --purge`).
    pub async fn purge(&self) -> PurgeSummary {
        let mut summary = PurgeSummary::default();
        match self.store.list_all().await {
            Ok(records) => {
                // A node purges its own sessions only.
                for record in records.iter().filter(|r| r.node == self.node) {
                    if self.delete_record(record, &mut summary.errors).await {
                        summary.records_deleted += 1;
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "purge: listing sessions failed");
                summary.errors += 1;
            }
        }
        for spare in self.store.pool_members().await.unwrap_or_default() {
            let _ = self.store.pool_remove(&spare).await;
        }
        let identity = self.store.identity().await;
        if let Err(err) = &identity {
            tracing::error!(%err, "purge: reading the store's identity failed; containers of any store are left");
            summary.errors += 1;
        }
        match self.runtime.list().await {
            Ok(sandboxes) => {
                // Another store's are another deployment's: not ours to purge.
                let (foreign, sandboxes): (Vec<SandboxInfo>, Vec<SandboxInfo>) =
                    sandboxes.into_iter().partition(|s| match &identity {
                        Ok(id) => is_foreign(s, id),
                        // Unknown: whatever carries a store label might not be ours.
                        Err(_) => s.labels.contains_key(labels::STORE),
                    });
                summary.foreign_left = foreign.len();
                self.report_foreign(&foreign);
                for (sandbox, removed) in self.remove_each(sandboxes, |s| s.id.clone()).await {
                    match removed {
                        Ok(()) => summary.containers_removed += 1,
                        Err(err) => {
                            tracing::warn!(%err, container = %sandbox.name, "purge: removal failed");
                            summary.errors += 1;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "purge: listing containers failed");
                summary.errors += 1;
            }
        }
        crate::metrics::container_removed("purged", summary.containers_removed as u64);
        tracing::info!(
            target: "brig::cleanup",
            containers_removed = summary.containers_removed,
            records_deleted = summary.records_deleted,
            foreign_left = summary.foreign_left,
            errors = summary.errors,
            "purge"
        );
        summary
    }

    /// Passes every `CLEANUP_INTERVAL_SECONDS` until `shutdown` resolves.
    pub async fn run_until_stopped(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.run_once().await;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

/// How long `sandbox` has existed, rounded down to be safe: `brig.created` has
/// whole seconds, so a container made at 10.99 s looks a second old at 11.01 s;
/// one second less keeps the grace period a floor, never less (a container
/// caught between its creation and its start or its record looked reapable).
fn settled_age(sandbox: &SandboxInfo, now: u64) -> Duration {
    Duration::from_secs(now.saturating_sub(sandbox.created_unix).saturating_sub(1))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::sandbox::CreateSandbox;
    use crate::session::ids::Owner;
    use crate::store::MemoryStore;

    /// A ready session record of `node`, with a container made on `runtime`.
    async fn session(
        store: &Arc<MemoryStore>,
        runtime: &FakeRuntime,
        id: &str,
        node: &str,
        created_ms_ago: i64,
    ) -> SessionRecord {
        let owner = Owner::of_principal("alice");
        let identity = store.identity().await.unwrap();
        let request = CreateSandbox {
            owner: owner.as_str().into(),
            session_id: id.into(),
            options: Default::default(),
            store: identity,
        };
        let (sandbox, _) = runtime.create(&request).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let record = SessionRecord {
            owner,
            session_id: id.into(),
            container: Some(sandbox.id),
            created_at_ms: now - created_ms_ago,
            expires_at_ms: now + 600_000,
            options: Default::default(),
            suspended: None,
            ttl_ms: None,
            node: Some(node.into()),
            node_addr: None,
            recreated: None,
        };
        store.replace(&record, Duration::from_secs(600)).await.unwrap();
        record
    }

    #[tokio::test]
    async fn a_nodes_reaper_judges_its_own_records_and_removes_its_engines_stale_containers() {
        let store = Arc::new(MemoryStore::new());
        let (engine_a, engine_b) = (Arc::new(FakeRuntime::new()), Arc::new(FakeRuntime::new()));
        let config = CleanupConfig {
            interval: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            grace: Duration::ZERO,
        };
        let on_a = session(&store, &engine_a, "on-a", "a", 10_000).await;
        let on_b = session(&store, &engine_b, "on-b", "b", 10_000).await;
        // A container on a's engine whose session has since moved to b (resumed
        // there while a was away): stale.
        let moved = session(&store, &engine_a, "moved", "b", 10_000).await;
        let moved_away = SessionRecord {
            container: Some("elsewhere".into()),
            ..moved.clone()
        };
        store.replace(&moved_away, Duration::from_secs(600)).await.unwrap();

        let reaper = Reaper::new(store.clone(), engine_a.clone(), config, 0).with_node(Some("a".into()));
        let summary = reaper.run_once().await;
        assert_eq!(summary.errors, 0, "{summary:?}");
        // b's records are b's to judge, though their containers are not on a's engine.
        let owner = Owner::of_principal("alice");
        for record in [&on_a, &on_b, &moved_away] {
            let id = crate::session::ids::SessionId::parse(&record.session_id).unwrap();
            assert!(
                store.get(&owner, &id).await.unwrap().is_some(),
                "{} kept",
                record.session_id
            );
        }
        let left: Vec<String> = engine_a.list().await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(
            left,
            vec![on_a.container.clone().unwrap()],
            "the stale container went, a's own stayed"
        );
    }
}
