//! Suspend and resume: a session's `/workspace` moves into a snapshot (read
//! through its agent) and its container goes; the next use of the session
//! makes a new container and restores the workspace into it.
//!
//! The record says where the truth is at every step, so that a process killed
//! anywhere loses nothing a completed suspend kept:
//!
//! | record                              | the workspace is in        |
//! |-------------------------------------|----------------------------|
//! | container, not suspended            | the container (active)     |
//! | container, suspended without snapshot | the container (suspending: commands wait) |
//! | no container, suspended in snapshot | the snapshot (suspended)   |
//! | container, suspended in snapshot    | the snapshot (resuming: the container is new) |
//!
//! Suspend and resume hold the session's creation lock, like creation. A
//! snapshot no record names (a suspend killed before its record, a resume
//! killed after its own, a suspended session past its retention) is removed
//! by [`Sessions::sweep_suspended`] once it is old enough not to be in flight.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::{random_token, time_left, Opened, SessionError, Sessions, CREATION_LOCK_TTL, CREATION_WAIT};
use crate::runtime::transfer::{self, Transfer};
use crate::session::ids::{Owner, SessionId};
use crate::session::record::{SessionRecord, Suspension};
use crate::snapshot::{SnapshotError, SnapshotStore};
use crate::store::Reservation;

/// Where suspended sessions' workspaces are kept, and for how long.
pub(super) struct Setup {
    shelf: SnapshotStore,
    retention: Duration,
    /// A snapshot no record names is removed once it is this old: younger,
    /// it may belong to a suspend still writing its record.
    sweep_after: Duration,
}

/// How long a session being suspended keeps its record at least: a suspend
/// killed midway leaves it to be found, not expired under the next request.
const SUSPENDING_TTL: Duration = Duration::from_secs(300);

/// How long a suspended session's record is kept.
#[derive(Clone, Copy)]
enum Keep {
    /// `SUSPENDED_RETENTION_SECONDS`: it was suspended on purpose (or at expiry).
    Retention,
    /// Until the session would have expired: only its container was recycled.
    Expiry,
}

/// How long a suspend waits for a command running in the session to end.
const COMMAND_WAIT: Duration = Duration::from_secs(2);

/// What one [`Sessions::sweep_suspended`] or [`Sessions::suspend_expiring`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub suspended: usize,
    /// Snapshots no record names any more, removed.
    pub removed: usize,
    /// Sessions left as they were: a command ran in them.
    pub busy: usize,
    pub errors: usize,
}

impl Sessions {
    /// Sessions may be suspended into `shelf` (a snapshot store of their
    /// own, outside their owners' quotas), kept for `retention` once they
    /// are; a snapshot no record names goes once `sweep_after` old.
    pub fn with_suspension(mut self, shelf: SnapshotStore, retention: Duration, sweep_after: Duration) -> Self {
        self.suspension = Some(Setup {
            shelf,
            retention,
            sweep_after,
        });
        self
    }

    fn setup(&self) -> Result<&Setup, SessionError> {
        self.suspension
            .as_ref()
            .ok_or_else(|| SessionError::ResumeFailed("suspension is not set up in this process".into()))
    }

    /// Takes the session's creation lock (waiting for another holder, as
    /// creation does) as `token`.
    pub(super) async fn lock(&self, owner: &Owner, id: &SessionId, token: &str) -> Result<(), SessionError> {
        let give_up = Instant::now() + CREATION_WAIT;
        while !self.store.try_lock(owner, id, token, CREATION_LOCK_TTL).await? {
            if Instant::now() >= give_up {
                return Err(SessionError::CreationContended);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// Stores the session's workspace in a snapshot and removes its
    /// container; its next use resumes it. Already suspended: answered as it
    /// is. A command running in it: [`SessionError::InUse`], nothing done.
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn suspend(&self, owner: &Owner, id: &SessionId) -> Result<SessionRecord, SessionError> {
        self.suspend_keeping(owner, id, Keep::Retention).await
    }

    async fn suspend_keeping(&self, owner: &Owner, id: &SessionId, keep: Keep) -> Result<SessionRecord, SessionError> {
        let setup = self.setup()?;
        let token = random_token();
        self.lock(owner, id, &token).await?;
        let suspended = self
            .holding(owner, id, &token, self.suspend_locked(setup, owner, id, keep))
            .await;
        let _ = self.store.unlock(owner, id, &token).await;
        suspended
    }

    /// Pushes the session's expiry one TTL on (a suspended one's: one
    /// retention); with `ttl`, that becomes its idle TTL (already bounded by
    /// the caller).
    pub async fn renew(
        &self,
        owner: &Owner,
        id: &SessionId,
        ttl: Option<Duration>,
    ) -> Result<SessionRecord, SessionError> {
        let token = random_token();
        self.lock(owner, id, &token).await?;
        let renewed = async {
            let mut record = self.store.get(owner, id).await?.ok_or(SessionError::NotFound)?;
            if let Some(ttl) = ttl {
                record.ttl_ms = Some(ttl.as_millis() as i64);
            }
            let keep = match (&self.suspension, record.is_parked()) {
                (Some(setup), true) => setup.retention,
                _ => record.ttl_or(self.ttl),
            };
            record.expires_at_ms = Utc::now().timestamp_millis() + keep.as_millis() as i64;
            // Deleted meanwhile (delete does not wait for the lock): it stays so.
            if !self.store.update(&record, keep).await? {
                return Err(SessionError::NotFound);
            }
            Ok(record)
        }
        .await;
        let _ = self.store.unlock(owner, id, &token).await;
        renewed
    }

    async fn suspend_locked(
        &self,
        setup: &Setup,
        owner: &Owner,
        id: &SessionId,
        keep: Keep,
    ) -> Result<SessionRecord, SessionError> {
        let record = self.store.get(owner, id).await?.ok_or(SessionError::NotFound)?;
        if record.is_parked() {
            return Ok(record);
        }
        if !self.owns(&record) {
            // Its workspace is in another node's engine: that node suspends it.
            return Err(self.elsewhere(&record));
        }
        if record.suspended_in().is_some() {
            // A resume that died midway: finish it, then suspend.
            self.resume_locked(record).await?;
            return Box::pin(self.suspend_locked(setup, owner, id, keep)).await;
        }
        // A pending record's creator died (we hold the lock): nothing to keep.
        let Some(container) = record.container.clone() else {
            return Err(SessionError::NotFound);
        };
        let active = SessionRecord {
            suspended: None,
            ..record.clone()
        };
        let since_ms = Utc::now().timestamp_millis();
        // From here commands wait for the lock (they see no ready record),
        // and one already running shows in the store: it was marked running
        // in the same step that found the record ready.
        let marked = SessionRecord {
            suspended: Some(Suspension {
                snapshot_id: None,
                since_ms,
                resuming: false,
            }),
            ..active.clone()
        };
        if !self
            .store
            .update(&marked, time_left(&record).max(SUSPENDING_TTL))
            .await?
        {
            return Err(SessionError::NotFound);
        }
        // Back to active; deleted meanwhile, it stays so, and that is the
        // answer.
        let unmark = |err: SessionError| async {
            match self.store.update(&active, time_left(&record)).await? {
                true => Err(err),
                false => Err(SessionError::NotFound),
            }
        };
        // A command that just answered is marked running until its last
        // store call, off its answer's path: it gets a moment to end.
        let give_up = Instant::now() + COMMAND_WAIT;
        while self.store.command_running(&container).await? {
            if Instant::now() >= give_up {
                return unmark(SessionError::InUse).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let taken = async {
            let io = self
                .runtime
                .transfer(&container, &Transfer::TarOut(String::new()))
                .await?;
            let archive = transfer::download(io).await?;
            Ok::<_, SessionError>(setup.shelf.write(owner, id.as_str(), archive).await?)
        }
        .await;
        let meta = match taken {
            Ok(meta) => meta,
            Err(err) => {
                tracing::warn!(%err, "the workspace was not stored; the session stays active");
                return unmark(err).await;
            }
        };
        let retention = match keep {
            Keep::Retention => setup.retention,
            Keep::Expiry => time_left(&record),
        };
        let parked = SessionRecord {
            container: None,
            expires_at_ms: since_ms + retention.as_millis() as i64,
            suspended: Some(Suspension {
                snapshot_id: Some(meta.snapshot_id.clone()),
                since_ms,
                resuming: false,
            }),
            ..active.clone()
        };
        // Deleted meanwhile (delete does not wait for the lock): it stays so.
        match self.store.update(&parked, retention).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = setup.shelf.delete(owner, &meta.snapshot_id).await;
                let _ = self.runtime.remove(&container).await;
                return Err(SessionError::NotFound);
            }
            Err(err) => {
                let _ = setup.shelf.delete(owner, &meta.snapshot_id).await;
                return unmark(err.into()).await;
            }
        }
        // The snapshot is the truth now: the container goes (or, failing
        // that, the reaper takes it: no record names it).
        self.forget_container(&container).await;
        if let Err(err) = self.runtime.remove(&container).await {
            tracing::warn!(%err, %container, "removing a suspended session's container failed; the reaper will");
        } else {
            crate::metrics::container_removed("suspended", 1);
        }
        crate::metrics::session_suspended();
        tracing::info!(snapshot = %meta.snapshot_id, bytes = meta.bytes, "session suspended");
        Ok(parked)
    }

    /// Brings a suspended (or suspending) session back, holding its lock.
    pub(super) async fn resume_locked(&self, record: SessionRecord) -> Result<(SessionRecord, Opened), SessionError> {
        let Some(snapshot) = record.suspended_in().map(String::from) else {
            // A suspend that died before its snapshot was recorded: the
            // container still holds the workspace (if it is gone, the next
            // command finds out and replaces it, as for any lost container).
            let active = SessionRecord {
                suspended: None,
                ..record
            };
            if !self.store.update(&active, active.ttl_or(self.ttl)).await? {
                return Err(SessionError::NotFound);
            }
            return Ok((active, Opened::Found));
        };
        let setup = self.setup()?;
        let (owner, id) = (
            record.owner.clone(),
            SessionId::parse(&record.session_id).map_err(|_| {
                SessionError::Store(crate::store::StoreError::Corrupt(format!(
                    "session id {:?}",
                    record.session_id
                )))
            })?,
        );
        // Room for it here, held until the resume ends.
        let _admitted = self.admit(&record.options)?;
        // A container from a resume that died midway is not the truth.
        if let Some(stale) = record.container() {
            self.runtime.remove(stale).await?;
        }
        // Resumed here: the session becomes this node's.
        let parked = SessionRecord {
            container: None,
            suspended: record.suspended.clone().map(|s| Suspension { resuming: false, ..s }),
            node: self.node.clone(),
            node_addr: self.node_addr.clone(),
            ..record.clone()
        };
        let resuming = SessionRecord {
            suspended: record.suspended.clone().map(|s| Suspension { resuming: true, ..s }),
            ..parked.clone()
        };
        // Against both quotas again: it holds capacity from here. Kept at
        // least as long as the suspended record would have been.
        let keep = time_left(&record).max(record.ttl_or(self.ttl));
        match self.store.reserve(&resuming, keep, self.quota).await? {
            Reservation::Reserved => {}
            Reservation::Exists(record) => return Ok((*record, Opened::Found)),
            Reservation::OwnerQuotaExceeded { frees_in } => return Err(SessionError::OwnerQuotaExceeded { frees_in }),
            Reservation::CapacityExhausted => return Err(SessionError::CapacityExhausted),
            Reservation::Gone => return Err(SessionError::NotFound),
        }
        let started = Instant::now();
        let resumed = async {
            let (with_container, _) = self.make_container(&resuming, keep).await?;
            let container = with_container.container.clone().unwrap_or_default();
            let restored = async {
                let archive = setup.shelf.read(&owner, &snapshot).await?;
                let io = self
                    .runtime
                    .transfer(&container, &Transfer::TarIn(String::new()))
                    .await?;
                transfer::upload(io, archive).await?;
                Ok::<_, SessionError>(())
            }
            .await;
            if let Err(err) = restored {
                let _ = self.runtime.remove(&container).await;
                return Err(err);
            }
            Ok(with_container)
        }
        .await;
        let with_container = match resumed {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, session = %id, %snapshot, "resume failed; the session stays suspended");
                // Back to what it was (parked, out of the instance's
                // capacity), unless deleted meanwhile.
                let _ = self.store.update(&parked, time_left(&record)).await;
                return Err(match err {
                    SessionError::Snapshot(SnapshotError::NotFound) => SessionError::ResumeFailed(format!(
                        "the suspended session's snapshot {snapshot} is gone; delete the session"
                    )),
                    SessionError::Runtime(crate::runtime::RuntimeError::InvalidRequest(detail))
                    | SessionError::Snapshot(SnapshotError::Storage(detail)) => SessionError::ResumeFailed(format!(
                        "the suspended session's workspace could not be restored: {detail}"
                    )),
                    other => other,
                });
            }
        };
        let active = SessionRecord {
            suspended: None,
            ..with_container
        };
        let (now, ttl) = (Utc::now().timestamp_millis(), active.ttl_or(self.ttl));
        let active = SessionRecord {
            expires_at_ms: now + ttl.as_millis() as i64,
            ..active
        };
        // Deleted meanwhile (delete does not wait for the lock): it stays so.
        match self.store.update(&active, ttl).await {
            Ok(true) => {}
            stored => {
                if let Some(container) = active.container() {
                    let _ = self.runtime.remove(container).await;
                }
                return Err(stored.map_or_else(SessionError::from, |_| SessionError::NotFound));
            }
        }
        // Best effort: a snapshot no record names is swept.
        let _ = setup.shelf.delete(&owner, &snapshot).await;
        crate::metrics::session_resumed(started.elapsed());
        tracing::info!(session = %id, %snapshot, "session resumed");
        Ok((active, Opened::Resumed))
    }

    /// The suspended workspace of a deleted session's `record` goes with it.
    pub(super) async fn drop_suspension(&self, record: &SessionRecord) {
        if let (Some(setup), Some(snapshot)) = (self.suspension.as_ref(), record.suspended_in()) {
            // Best effort: a snapshot no record names is swept.
            let _ = setup.shelf.delete(&record.owner, snapshot).await;
        }
    }

    /// Forgets what was kept about `container` besides the session's record.
    pub(super) async fn forget_container(&self, container: &str) {
        if self.egress.is_some() {
            // Best effort: the key also expires, and names a gone container.
            let _ = self.store.delete_value(&super::egress::owner_key(container)).await;
        }
    }

    /// Suspends the active sessions that expire within `lead` (the
    /// `SESSION_EXPIRY=suspend` pass, run more often than `lead`), skipping
    /// those running a command (each command refreshes its session anyway).
    pub async fn suspend_expiring(&self, lead: Duration) -> Sweep {
        let horizon = Utc::now().timestamp_millis() + lead.as_millis() as i64;
        self.suspend_own(|r| r.expires_at_ms <= horizon, Keep::Retention, None)
            .await
    }

    /// Suspends the active sessions of this node (a drain), `per_pass` at
    /// most: each keeps its expiry, and moves to whichever node uses it next.
    /// One running a command is left alone (not held up) for a later pass.
    pub async fn suspend_all(&self, per_pass: usize) -> Sweep {
        if self.node.is_none() {
            return Sweep::default();
        }
        self.suspend_own(|_| true, Keep::Expiry, Some(per_pass)).await
    }

    /// Suspends this node's active sessions that `pick` picks; with
    /// `idle_only`, at most that many, and only those running no command.
    async fn suspend_own(&self, pick: impl Fn(&SessionRecord) -> bool, keep: Keep, idle_only: Option<usize>) -> Sweep {
        let mut sweep = Sweep::default();
        let records = match self.store.list_all().await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(%err, "listing sessions to suspend failed");
                sweep.errors += 1;
                return sweep;
            }
        };
        // Each node suspends its own sessions: another's workspace is in another engine.
        let mut picked = Vec::new();
        for record in (records.iter()).filter(|r| self.owns(r) && r.is_ready() && pick(r)) {
            if let Some(most) = idle_only {
                if picked.len() >= most {
                    break;
                }
                let container = record.container().unwrap_or_default();
                if self.store.command_running(container).await.unwrap_or(true) {
                    sweep.busy += 1;
                    continue;
                }
            }
            picked.push(record);
        }
        self.suspend_each(picked.into_iter(), keep, &mut sweep).await;
        sweep
    }

    /// Suspends each of `records` in turn, counting what came of it in `sweep`.
    async fn suspend_each<'a>(&self, records: impl Iterator<Item = &'a SessionRecord>, keep: Keep, sweep: &mut Sweep) {
        for record in records {
            let Ok(id) = SessionId::parse(&record.session_id) else {
                continue;
            };
            match self.suspend_keeping(&record.owner, &id, keep).await {
                Ok(_) => sweep.suspended += 1,
                Err(SessionError::InUse | SessionError::CreationContended) => sweep.busy += 1,
                // Deleted meanwhile.
                Err(SessionError::NotFound) => {}
                Err(err) => {
                    tracing::warn!(%err, session = %record.session_id, "suspending a session failed");
                    sweep.errors += 1;
                }
            }
        }
    }

    /// Recycles the containers of active sessions that reach `max_age`
    /// within `lead` (`CLEANUP_MAX_CONTAINER_AGE_SECONDS`, past which the
    /// reaper removes a container whatever it does): each is suspended, its
    /// record kept until it would have expired, and its next use resumes it
    /// in a new container. One running a command is left (and, if it still
    /// runs at the age limit, removed by the reaper as before).
    pub async fn recycle_aged(&self, max_age: Duration, lead: Duration) -> Sweep {
        let mut sweep = Sweep::default();
        let (records, sandboxes) = match (self.store.list_all().await, self.runtime.list().await) {
            (Ok(records), Ok(sandboxes)) => (records, sandboxes),
            (Err(err), _) => {
                tracing::warn!(%err, "listing sessions to recycle failed");
                sweep.errors += 1;
                return sweep;
            }
            (_, Err(err)) => {
                tracing::warn!(%err, "listing containers to recycle failed");
                sweep.errors += 1;
                return sweep;
            }
        };
        let now = Utc::now().timestamp().max(0) as u64;
        let due = max_age.saturating_sub(lead).as_secs();
        let aged: std::collections::HashSet<&str> = sandboxes
            .iter()
            .filter(|s| now.saturating_sub(s.created_unix) >= due)
            .map(|s| s.id.as_str())
            .collect();
        let due = records
            .iter()
            .filter(|r| r.is_ready() && r.container().is_some_and(|c| aged.contains(c)));
        self.suspend_each(due, Keep::Expiry, &mut sweep).await;
        sweep
    }

    /// Removes suspended workspaces no record names any more (their session
    /// was deleted, passed its retention, was resumed; or a suspend died
    /// before its record), once they are older than any suspend in flight.
    pub async fn sweep_suspended(&self) -> Sweep {
        let mut sweep = Sweep::default();
        let Some(setup) = self.suspension.as_ref() else {
            return sweep;
        };
        let age = setup.sweep_after;
        let owners = match setup.shelf.owners().await {
            Ok(owners) => owners,
            Err(err) => {
                tracing::warn!(%err, "listing suspended workspaces failed");
                sweep.errors += 1;
                return sweep;
            }
        };
        let old_enough = |created_at: u64| Utc::now().timestamp_millis() as u64 >= created_at + age.as_millis() as u64;
        for owner in owners {
            let Ok(snapshots) = setup.shelf.list(&owner).await else {
                sweep.errors += 1;
                continue;
            };
            for meta in snapshots.into_iter().filter(|m| old_enough(m.created_at)) {
                let named = match SessionId::parse(&meta.session_id) {
                    Ok(id) => match self.store.get(&owner, &id).await {
                        Ok(record) => record.is_some_and(|r| r.suspended_in() == Some(meta.snapshot_id.as_str())),
                        Err(_) => {
                            // Unknown: kept until the store answers.
                            sweep.errors += 1;
                            continue;
                        }
                    },
                    Err(_) => false,
                };
                if !named && setup.shelf.delete(&owner, &meta.snapshot_id).await.is_ok() {
                    sweep.removed += 1;
                }
            }
        }
        sweep
    }
}
