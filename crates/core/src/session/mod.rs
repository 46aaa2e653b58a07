//! Sessions: the flow shared by every front end ([`Sessions`]: get-or-create a
//! session's sandbox, run commands in it, keep its record's TTL fresh, tear it
//! down), who owns them and what they are called (`ids`), and the record the
//! store keeps (`record`).
//! Redis (or memory) holds the truth about liveness; the engine holds the
//! container. A record whose container is gone is repaired on next use.

pub mod egress;
pub mod ids;
pub mod record;
mod suspend;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use brig_protocol::{FileReply, FileRequest};
use chrono::{DateTime, Utc};

pub use self::ids::{InvalidSessionId, Owner, SessionId};
pub use self::record::{Recreation, SessionRecord, SessionState, Suspension};
pub use self::suspend::Sweep;
use crate::pool::WarmPool;
use crate::runtime::transfer::{self, Transfer};
use crate::runtime::{Control, ControlReply, RuntimeError, SandboxRuntime};
use crate::sandbox::{CreateSandbox, ExecHooks, ExecOutcome, ExecRequest, SandboxOptions};
use crate::store::{Begun, CommandStart, Guard, Quota, Reservation, SessionStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session for this owner (also: someone else's session).
    #[error("session not found")]
    NotFound,
    /// The owner already has `MAX_SESSIONS_PER_USER` sessions; the soonest
    /// of them expires in `frees_in`.
    #[error("session quota exceeded")]
    OwnerQuotaExceeded { frees_in: Duration },
    /// The instance already runs `MAX_SESSIONS` sessions.
    #[error("capacity exhausted")]
    CapacityExhausted,
    /// Another request held the session's creation lock for too long.
    #[error("session creation is in progress elsewhere")]
    CreationContended,
    /// A command runs in the session: it is not suspended under it.
    #[error("a command runs in the session")]
    InUse,
    /// The session lives on another node, which alone serves it.
    #[error("the session lives on node {0}")]
    Elsewhere(crate::node::NodeRef),
    /// A suspended session could not get its workspace back; it stays
    /// suspended (the message says why).
    #[error("{0}")]
    ResumeFailed(String),
    /// Storing the workspace of a session being suspended failed; it stays active.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What opening a session found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It was active.
    Found,
    /// A new container (a new session, or a lost container replaced).
    Created,
    /// It was suspended: a new container holds its workspace again.
    Resumed,
}

impl Opened {
    pub fn created(self) -> bool {
        self == Opened::Created
    }
}

/// A command's outcome, with when it ran and in which session.
#[derive(Debug, Clone)]
pub struct Executed {
    pub record: SessionRecord,
    /// This call created the session's container.
    pub created: bool,
    /// This call resumed the suspended session.
    pub resumed: bool,
    pub outcome: ExecOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Wall time of the command as brig saw it (channel included, creation not).
    pub elapsed: Duration,
}

/// How long a session's creation lock lasts unless its holder keeps it (see
/// [`Sessions::holding`]); a crashed holder's lock frees itself after this.
const CREATION_LOCK_TTL: Duration = Duration::from_secs(30);

/// How long a request waits for someone else's creation of its session.
const CREATION_WAIT: Duration = Duration::from_secs(35);

pub struct Sessions {
    store: Arc<dyn SessionStore>,
    runtime: Arc<dyn SandboxRuntime>,
    ttl: Duration,
    quota: Quota,
    pool: Option<Arc<WarmPool>>,
    /// This process, as a holder of channel leases.
    replica: String,
    egress: Option<EgressSetup>,
    suspension: Option<suspend::Setup>,
    /// This node (`BRIG_NODE_ID`): the sessions it creates are its own, and
    /// it serves no other node's. `None`: a single host.
    node: Option<String>,
    /// Where this node is reached (`BRIG_NODE_ADDR`), recorded with its sessions.
    node_addr: Option<String>,
    /// This node's own bound on the sandboxes made here (new sessions,
    /// resumes, recoveries).
    room: Option<Arc<crate::node::placement::Room>>,
}

/// How sessions get egress (see [`Sessions::with_egress`]).
struct EgressSetup {
    config: crate::config::EgressConfig,
    /// How long a container's session key is kept: past the age limit.
    owner_ttl: Duration,
}

/// What a session is created with if it does not exist.
#[derive(Clone, Copy)]
struct Spec<'a> {
    options: &'a SandboxOptions,
    ttl: Option<Duration>,
    /// Only an existing session is opened (resumed, or waited for): one
    /// deleted meanwhile is not made anew.
    existing: bool,
}

impl<'a> Spec<'a> {
    fn of(options: &'a SandboxOptions) -> Self {
        Spec {
            options,
            ttl: None,
            existing: false,
        }
    }
}

/// What the caller of [`Sessions::open_from`] already knows of the record.
enum Known {
    Unknown,
    /// It just saw no ready record.
    NotReady,
}

/// How long a channel lease lasts without use; each command renews it.
const CHANNEL_LEASE: Duration = Duration::from_secs(120);

/// The container of a record that `open` returned (so ready): a record
/// without one here is not ours to trust.
fn ready_container(record: &SessionRecord) -> Result<String, SessionError> {
    record.container.clone().ok_or_else(|| {
        StoreError::Corrupt(format!("session {} is ready without a container", record.session_id)).into()
    })
}

/// A node that stopped heartbeating, as [`Sessions::adopt`] takes its
/// sessions: its id, where the sessions' snapshots are, and the registry to
/// look at it again.
#[derive(Clone, Copy)]
pub struct LostNode<'a> {
    pub node: &'a str,
    pub snapshots: &'a crate::snapshot::SnapshotStore,
    pub registry: &'a crate::node::Registry,
}

/// A lost node's session, taken over by this node ([`Sessions::adopt`]).
#[derive(Debug)]
pub struct Adopted {
    pub record: SessionRecord,
    /// The snapshot its workspace was restored from (`None`: it starts empty,
    /// or it stays suspended).
    pub restored: Option<String>,
}

/// How long the store still keeps `record` (at least a second): what a
/// rewrite that keeps its expiry passes as its TTL.
fn time_left(record: &SessionRecord) -> Duration {
    Duration::from_millis((record.expires_at_ms - Utc::now().timestamp_millis()).max(1000) as u64)
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Sessions {
    pub fn new(store: Arc<dyn SessionStore>, runtime: Arc<dyn SandboxRuntime>, ttl: Duration, quota: Quota) -> Self {
        Sessions {
            store,
            runtime,
            ttl,
            quota,
            pool: None,
            replica: random_token(),
            egress: None,
            suspension: None,
            node: None,
            node_addr: None,
            room: None,
        }
    }

    /// This process is node `node`: it stamps the sessions it creates (or
    /// resumes) with it and serves no other node's.
    pub fn with_node(mut self, node: Option<(String, String)>) -> Self {
        (self.node, self.node_addr) = node.unzip();
        self
    }

    /// Sandboxes made here (new sessions, resumes, recoveries) only while
    /// `room` has room for them (503 `capacity_exhausted` otherwise).
    pub fn with_room(mut self, room: Arc<crate::node::placement::Room>) -> Self {
        self.room = Some(room);
        self
    }

    /// Room on this node for a sandbox with `options` (held while it is
    /// made); `CapacityExhausted` when there is none. Always on a single host.
    pub(crate) fn admit(
        &self,
        options: &SandboxOptions,
    ) -> Result<Option<crate::node::placement::Admission>, SessionError> {
        match &self.room {
            None => Ok(None),
            Some(room) => room.admit(options).map(Some).ok_or(SessionError::CapacityExhausted),
        }
    }

    /// The node this process is (`None`: a single host).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether `record` is this node's to serve.
    pub fn owns(&self, record: &SessionRecord) -> bool {
        record.node == self.node
    }

    /// Among nodes: [`SessionError::Elsewhere`] if the session exists and
    /// another node serves it (a suspended one is anyone's to resume). On a
    /// single host this asks nothing (the checks on the way catch a record of
    /// a node's), so the hot path pays no store call for it.
    pub async fn check_served_here(&self, owner: &Owner, id: &SessionId) -> Result<(), SessionError> {
        if self.node.is_none() {
            return Ok(());
        }
        match self.store.get(owner, id).await? {
            Some(record) if !self.owns(&record) && !record.is_parked() => Err(self.elsewhere(&record)),
            _ => Ok(()),
        }
    }

    fn elsewhere(&self, record: &SessionRecord) -> SessionError {
        SessionError::Elsewhere(crate::node::NodeRef {
            id: record
                .node
                .clone()
                .unwrap_or_else(|| "(a single host: not a node)".into()),
            addr: record.node_addr.clone(),
        })
    }

    /// The container of a ready `record`, if this node is the one to serve it.
    fn owned_container(&self, record: &SessionRecord) -> Result<String, SessionError> {
        if !self.owns(record) {
            return Err(self.elsewhere(record));
        }
        ready_container(record)
    }

    /// Sessions may have egress, within `config` (no effect when it allows
    /// nothing). Each container's session is recorded for the dialer for
    /// `owner_ttl` (longer than a container may live).
    pub fn with_egress(mut self, config: crate::config::EgressConfig, owner_ttl: Duration) -> Self {
        self.egress = config.enabled().then_some(EgressSetup { config, owner_ttl });
        self
    }

    /// The dialer that answers these sessions' sandboxes (`own`: the host's
    /// addresses); `None` when egress is off.
    pub fn egress_dialer(&self, own: Vec<std::net::IpAddr>) -> Option<egress::SessionDialer> {
        let setup = self.egress.as_ref()?;
        Some(egress::SessionDialer::new(
            Arc::clone(&self.store),
            self.replica.clone(),
            setup.config.clone(),
            own,
        ))
    }

    /// Whether the session has egress: its commands get the proxy environment.
    pub fn has_egress(&self, record: &SessionRecord) -> bool {
        self.egress
            .as_ref()
            .is_some_and(|setup| !setup.config.default.is_empty() || !record.options.egress.is_empty())
    }

    /// Records whose session `record`'s container serves, for the dialer.
    /// Best effort: without it the sandbox's dials are refused, nothing else.
    async fn note_sandbox_owner(&self, record: &SessionRecord) {
        let (Some(setup), Some(container)) = (self.egress.as_ref(), record.container()) else {
            return;
        };
        let value = serde_json::json!({"owner": record.owner, "session_id": record.session_id}).to_string();
        if let Err(err) = self
            .store
            .put_value(&egress::owner_key(container), &value, setup.owner_ttl)
            .await
        {
            tracing::warn!(%err, session = %record.session_id, "recording the sandbox's session for egress failed; its dials will be refused");
        }
    }

    /// Replaces the session's own egress allow-list (already checked against
    /// the operator's bounds); its new connections follow the new list.
    pub async fn set_egress(
        &self,
        owner: &Owner,
        id: &SessionId,
        allow: Vec<String>,
    ) -> Result<SessionRecord, SessionError> {
        // Under the session's lock: a suspend or resume rewrites the record
        // meanwhile, and this must not write back the one it read.
        let token = random_token();
        self.lock(owner, id, &token).await?;
        let set = async {
            let mut record = self.store.get(owner, id).await?.ok_or(SessionError::NotFound)?;
            record.options.egress = allow;
            // Keep the expiry the store has: `update` sets a TTL. Deleted
            // meanwhile: it stays so.
            if !self.store.update(&record, time_left(&record)).await? {
                return Err(SessionError::NotFound);
            }
            self.note_sandbox_owner(&record).await;
            Ok(record)
        }
        .await;
        let _ = self.store.unlock(owner, id, &token).await;
        set
    }

    /// New sessions claim a spare from `pool` when it has one.
    pub fn with_pool(mut self, pool: Arc<WarmPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// `SESSION_TTL_SECONDS`: the idle TTL of a session without its own.
    pub fn default_ttl(&self) -> Duration {
        self.ttl
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub fn runtime(&self) -> &Arc<dyn SandboxRuntime> {
        &self.runtime
    }

    /// The session's record, created (with its container) if it has none,
    /// resumed if it is suspended. Refreshes the TTL. Says which it was.
    ///
    /// Creation is serialised per session by a lock in the store (so replicas
    /// sharing Redis agree), quotas are checked atomically when the record is
    /// reserved, and the deterministic container name is the last line: two
    /// creators that both got past the lock still share one container.
    pub async fn open(&self, owner: &Owner, id: &SessionId) -> Result<(SessionRecord, Opened), SessionError> {
        self.open_with(owner, id, &SandboxOptions::default()).await
    }

    /// [`open`](Self::open), creating a missing session with `options` (an
    /// existing one keeps its own).
    #[tracing::instrument(level = "debug", skip_all, fields(session = %id))]
    pub async fn open_with(
        &self,
        owner: &Owner,
        id: &SessionId,
        options: &SandboxOptions,
    ) -> Result<(SessionRecord, Opened), SessionError> {
        self.open_for(owner, id, options, None).await
    }

    /// [`open_with`](Self::open_with), a missing session created with its
    /// own idle TTL `ttl` (`None`: `SESSION_TTL_SECONDS`; the caller bounds it).
    pub async fn open_for(
        &self,
        owner: &Owner,
        id: &SessionId,
        options: &SandboxOptions,
        ttl: Option<Duration>,
    ) -> Result<(SessionRecord, Opened), SessionError> {
        let spec = Spec {
            ttl,
            ..Spec::of(options)
        };
        self.open_from(owner, id, &spec, Known::Unknown).await
    }

    /// [`open_with`](Self::open_with), skipping the first look at the record
    /// when the caller has just seen that the session has no ready one.
    async fn open_from(
        &self,
        owner: &Owner,
        id: &SessionId,
        spec: &Spec<'_>,
        mut known: Known,
    ) -> Result<(SessionRecord, Opened), SessionError> {
        let token = random_token();
        let give_up = Instant::now() + CREATION_WAIT;
        loop {
            let ready = match std::mem::replace(&mut known, Known::Unknown) {
                Known::NotReady => None,
                Known::Unknown => self
                    .store
                    .touch(owner, id, self.ttl)
                    .await?
                    .filter(SessionRecord::is_ready),
            };
            if let Some(record) = ready {
                return Ok((record, Opened::Found));
            }
            if self.store.try_lock(owner, id, &token, CREATION_LOCK_TTL).await? {
                let created = self
                    .holding(owner, id, &token, self.create_locked(owner, id, spec))
                    .await;
                // Best effort: the lock also expires by itself.
                let _ = self.store.unlock(owner, id, &token).await;
                return created;
            }
            if Instant::now() >= give_up {
                return Err(SessionError::CreationContended);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `work` under the session's lock, which `token` holds, keeping the
    /// lock alive meanwhile: a suspend or a resume of a large workspace may
    /// take longer than [`CREATION_LOCK_TTL`], and must not lose the lock to
    /// another request midway. (A holder that dies stops keeping it.)
    async fn holding<T>(
        &self,
        owner: &Owner,
        id: &SessionId,
        token: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let keep = async {
            loop {
                tokio::time::sleep(CREATION_LOCK_TTL / 3).await;
                if !matches!(
                    self.store.extend_lock(owner, id, token, CREATION_LOCK_TTL).await,
                    Ok(true)
                ) {
                    tracing::warn!(session = %id, "could not keep the session's lock; another request may take it");
                }
            }
        };
        tokio::select! {
            done = work => done,
            never = keep => never,
        }
    }

    /// Creates the session while holding its lock (or resumes it: a
    /// suspended session's record says so).
    async fn create_locked(
        &self,
        owner: &Owner,
        id: &SessionId,
        spec: &Spec<'_>,
    ) -> Result<(SessionRecord, Opened), SessionError> {
        match self.store.get(owner, id).await? {
            Some(existing) if existing.suspended.is_some() => return self.resume_locked(existing).await,
            None if spec.existing => return Err(SessionError::NotFound),
            _ => {}
        }
        let now = Utc::now().timestamp_millis();
        let ttl = spec.ttl.unwrap_or(self.ttl);
        let pending = SessionRecord {
            owner: owner.clone(),
            session_id: id.as_str().into(),
            container: None,
            created_at_ms: now,
            // What the store will keep (it sets the same TTL), so that the
            // creator's answer says when the session expires.
            expires_at_ms: now + ttl.as_millis() as i64,
            options: spec.options.clone(),
            suspended: None,
            ttl_ms: spec.ttl.map(|ttl| ttl.as_millis() as i64),
            node: self.node.clone(),
            node_addr: self.node_addr.clone(),
            recreated: None,
        };
        match self.store.reserve(&pending, ttl, self.quota).await? {
            Reservation::Reserved => tracing::debug!(session = %id, "reserved; creating the session's container"),
            Reservation::Exists(record) => return Ok((*record, Opened::Found)),
            Reservation::OwnerQuotaExceeded { frees_in } => return Err(SessionError::OwnerQuotaExceeded { frees_in }),
            Reservation::CapacityExhausted => return Err(SessionError::CapacityExhausted),
            Reservation::Gone => return Err(SessionError::NotFound),
        }
        let admitted = match self.admit(spec.options) {
            Ok(admitted) => admitted,
            Err(err) => {
                let _ = self.store.delete(owner, id).await;
                return Err(err);
            }
        };
        let made = self.make_container(&pending, ttl).await;
        drop(admitted);
        match made {
            Ok((record, created)) => Ok((record, if created { Opened::Created } else { Opened::Found })),
            Err(err) => {
                let _ = self.store.delete(owner, id).await;
                Err(err)
            }
        }
    }

    /// Gives the reserved `pending` record a container (a spare from the
    /// pool, or a new one) and stores it with it for `ttl`; whether a
    /// container was made. On failure the record is left to the caller; a
    /// session deleted meanwhile stays deleted (its new container goes) and
    /// is [`SessionError::NotFound`].
    async fn make_container(
        &self,
        pending: &SessionRecord,
        ttl: Duration,
    ) -> Result<(SessionRecord, bool), SessionError> {
        // Asked before creating, so that a failure leaves no container.
        let store = self.store.identity().await?;
        let request = CreateSandbox {
            owner: pending.owner.as_str().into(),
            session_id: pending.session_id.clone(),
            options: pending.options.clone(),
            store,
        };
        // We hold the lock and there is no ready record: a container by this
        // session's name is an orphan (the store was flushed, or its creator died
        // before recording it). Sessions start clean, so it goes.
        // Spares run the default image and limits.
        if let Some(pool) = self.pool.as_ref().filter(|_| pending.options.fits_spare()) {
            if let Some(spare) = pool.take().await {
                let record = SessionRecord {
                    container: Some(spare.clone()),
                    ..pending.clone()
                };
                let stored = self.store.update(&record, ttl).await;
                if !matches!(stored, Ok(true)) {
                    // Not recorded: the spare would look unclaimed; let it go.
                    let _ = self.runtime.remove(&spare).await;
                    return Err(stored.map_or_else(SessionError::from, |_| SessionError::NotFound));
                }
                self.note_sandbox_owner(&record).await;
                // The rename also replaces an orphan holding the session's name.
                pool.rename_claimed(spare, request);
                metrics::counter!(crate::metrics::POOL_CLAIMS).increment(1);
                crate::metrics::container_created("pool");
                return Ok((record, true));
            }
        }
        self.runtime.remove(&self.runtime.sandbox_name(&request)).await?;
        let (sandbox, created) = self.runtime.create(&request).await?;
        if created {
            crate::metrics::container_created("new");
        }
        let record = SessionRecord {
            container: Some(sandbox.id),
            ..pending.clone()
        };
        let stored = self.store.update(&record, ttl).await;
        if !matches!(stored, Ok(true)) {
            let _ = self.runtime.remove(record.container().unwrap_or_default()).await;
            return Err(stored.map_or_else(SessionError::from, |_| SessionError::NotFound));
        }
        self.note_sandbox_owner(&record).await;
        Ok((record, created))
    }

    /// Runs `request` in the session, creating it if needed.
    pub async fn execute(&self, owner: &Owner, id: &SessionId, request: ExecRequest) -> Result<Executed, SessionError> {
        self.execute_with(owner, id, request, ExecHooks::default()).await
    }

    /// [`execute`](Self::execute), streaming output to and taking cancellation from `hooks`.
    #[tracing::instrument(level = "debug", skip_all, fields(session = %id))]
    pub async fn execute_with(
        &self,
        owner: &Owner,
        id: &SessionId,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<Executed, SessionError> {
        let token = random_token();
        // Warm: one store call refreshes the session, marks the command
        // running (for the reaper, possibly another process) and renews the
        // channel lease. Cold: the session is opened (created) first.
        let deadline = |request: &ExecRequest| {
            Utc::now().timestamp_millis() + (request.timeout + Duration::from_secs(10)).as_millis() as i64
        };
        let command = |request: &ExecRequest| CommandStart {
            token: &token,
            deadline_ms: deadline(request),
            holder: &self.replica,
            lease: CHANNEL_LEASE,
            node: self.node.as_deref(),
        };
        let begun = self
            .store
            .begin_command(owner, id, self.ttl, &command(&request))
            .await?;
        let (mut record, mut opened, leased) = match begun {
            Some(Begun { record, leased }) => (record, Opened::Found, leased),
            None => {
                let (_, opened) = self
                    .open_from(owner, id, &Spec::of(&SandboxOptions::default()), Known::NotReady)
                    .await?;
                let Begun { record, leased } = self.begin_opened(owner, id, &command(&request)).await?;
                (record, opened, leased)
            }
        };
        if !self.owns(&record) {
            // Never served here: its node alone runs its commands.
            if let Some(container) = record.container() {
                let _ = self.store.command_finished(container, &token).await;
            }
        }
        let mut container = self.owned_container(&record)?;
        let mut request = request;
        // The session's environment, under the command's own.
        let mut env: Vec<(String, String)> = (record.options.env.iter())
            .filter(|(name, _)| !request.env.iter().any(|(own, _)| own == name))
            .cloned()
            .collect();
        env.append(&mut request.env);
        request.env = env;
        if self.has_egress(&record) {
            request.env.extend(egress::proxy_env());
        }
        let started_at = Utc::now();
        let started = Instant::now();
        let outcome = async {
            match self.run_in(&container, leased, request.clone(), hooks.clone()).await {
                // The record outlived its container (removed or killed from
                // outside, lost with the engine): start over with a fresh one,
                // through the same locked path as any creation.
                Err(SessionError::Runtime(RuntimeError::SandboxNotFound)) => {
                    tracing::warn!(session = %id, %container, "sandbox not found; recreating the session's container");
                    let _ = self.store.command_finished(&container, &token).await;
                    self.runtime.remove(&container).await?;
                    match self.store.get(owner, id).await? {
                        // Deleted meanwhile (its container with it): it stays so.
                        None => return Err(SessionError::NotFound),
                        Some(now) if now.container() == Some(container.as_str()) => {
                            self.store.delete(owner, id).await?;
                        }
                        // A concurrent request has already replaced it.
                        Some(_) => {}
                    }
                    opened = self.open_with(owner, id, &record.options).await?.1;
                    // Through the lease like any command: another replica may
                    // hold the channel of the container that replaced the lost one.
                    let Begun { record: opened, leased } = self.begin_opened(owner, id, &command(&request)).await?;
                    record = opened;
                    container = self.owned_container(&record)?;
                    self.run_in(&container, leased, request, hooks).await
                }
                other => other,
            }
        }
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Like a shell: an allowed command missing from the image, or a
            // working directory that does not exist, is exit 127 with a message.
            Err(SessionError::Runtime(RuntimeError::SpawnFailed(message))) => ExecOutcome::spawn_failure(&message),
            Err(err) => {
                // The container is no longer busy with this command.
                let _ = self.store.command_finished(&container, &token).await;
                crate::metrics::command_failed();
                // A wedged agent: replace the container on next use rather
                // than keep sending it work. The record stays: the next
                // command finds its container gone and recreates it with the
                // session's own image and limits (deleting the record lost
                // them to the defaults).
                if matches!(err, SessionError::Runtime(RuntimeError::AgentUnresponsive)) {
                    tracing::warn!(session = %id, "sandbox agent unresponsive; removing the container");
                    crate::metrics::container_removed("agent_unresponsive", 1);
                    let _ = self.runtime.remove(&container).await;
                }
                return Err(err);
            }
        };
        let elapsed = started.elapsed();
        crate::metrics::command_finished(&outcome, elapsed);
        let finished_at = Utc::now();
        self.end_in_background(owner, id, container, token);
        Ok(Executed {
            record,
            created: opened.created(),
            resumed: opened == Opened::Resumed,
            outcome,
            started_at,
            finished_at,
            elapsed,
        })
    }

    /// The command's last store call (no longer busy, the session's TTL
    /// refreshed once more), off the answer's path: the result is the
    /// client's whatever becomes of this call, which only tidies up (the
    /// running mark also lapses at its deadline, and the command's first call
    /// refreshed the TTL, which the answer reports).
    fn end_in_background(&self, owner: &Owner, id: &SessionId, container: String, token: String) {
        let (store, owner, id, ttl) = (Arc::clone(&self.store), owner.clone(), id.clone(), self.ttl);
        tokio::spawn(async move {
            if let Err(err) = store.end_command(&owner, &id, ttl, &container, &token).await {
                tracing::warn!(%err, session = %id, "ending a command in the store failed; its running mark lapses at its deadline");
            }
        });
    }

    /// [`SessionStore::begin_command`] on a session that was just opened: one
    /// call marks the command running and takes the channel lease. The
    /// session deleted in between is `NotFound`.
    async fn begin_opened(
        &self,
        owner: &Owner,
        id: &SessionId,
        command: &CommandStart<'_>,
    ) -> Result<Begun, SessionError> {
        self.store
            .begin_command(owner, id, self.ttl, command)
            .await?
            .ok_or(SessionError::NotFound)
    }

    /// Runs `request` over this process's channel to `container` if it holds
    /// the channel's lease (`leased`, taken with the command's first store
    /// call), else through the engine's exec (another replica writes to that
    /// channel, and two writers would interleave frames).
    async fn run_in(
        &self,
        container: &str,
        leased: bool,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<ExecOutcome, SessionError> {
        let outcome = if leased {
            self.runtime.exec_with(container, request, hooks).await
        } else {
            tracing::debug!(container, "channel leased by another replica; using docker exec");
            self.runtime.exec_via_engine(container, request, hooks).await
        };
        Ok(outcome?)
    }

    /// Takes or renews this process's lease of `container`'s channel: `false`
    /// while another replica writes to it.
    async fn holds_channel(&self, container: &str) -> Result<bool, StoreError> {
        self.store.lease_channel(container, &self.replica, CHANNEL_LEASE).await
    }

    /// A file operation in the session's `/workspace` (the session must exist;
    /// its TTL is refreshed).
    #[tracing::instrument(level = "debug", skip_all, fields(session = %id))]
    pub async fn file(&self, owner: &Owner, id: &SessionId, request: FileRequest) -> Result<FileReply, SessionError> {
        let container = &self.touched_container(owner, id).await?;
        let reply = if self.holds_channel(container).await? {
            self.runtime.file(container, request).await?
        } else {
            self.runtime.file_via_engine(container, request).await?
        };
        Ok(reply)
    }

    /// Starts a streamed transfer in the session's sandbox (any replica: the
    /// engine's exec, never the channel).
    pub async fn transfer(
        &self,
        owner: &Owner,
        id: &SessionId,
        transfer: &crate::runtime::transfer::Transfer,
    ) -> Result<crate::runtime::transfer::AgentIo, SessionError> {
        let container = &self.touched_container(owner, id).await?;
        match self.runtime.transfer(container, transfer).await {
            Ok(io) => Ok(io),
            // Its container removed under this start: the session's deletion.
            Err(err) => Err(self.went_away(owner, id, err).await),
        }
    }

    /// What a sandbox failing under a request means to the client: the
    /// session was deleted meanwhile (`NotFound`: its record is gone; the
    /// engine's error then is only the deletion seen from inside, whichever
    /// step it cut: the exec's output, its start, the container), or its
    /// sandbox failed (the error as it is).
    pub async fn went_away(&self, owner: &Owner, id: &SessionId, err: RuntimeError) -> SessionError {
        let gone = matches!(self.store.get(owner, id).await, Ok(None));
        if gone {
            SessionError::NotFound
        } else {
            err.into()
        }
    }

    /// The container of a session, whose lifetime this use extends: a
    /// suspended session is resumed (one being created is waited for), a
    /// missing one is not found.
    async fn touched_container(&self, owner: &Owner, id: &SessionId) -> Result<String, SessionError> {
        let record = self
            .store
            .touch(owner, id, self.ttl)
            .await?
            .ok_or(SessionError::NotFound)?;
        if record.is_ready() {
            return self.owned_container(&record);
        }
        let spec = Spec {
            existing: true,
            ..Spec::of(&record.options)
        };
        let (record, _) = self.open_from(owner, id, &spec, Known::NotReady).await?;
        self.owned_container(&record)
    }

    /// A request about a kept execution in the session's sandbox (the
    /// session must exist; its TTL is refreshed). Kept executions live in
    /// the sandbox's agent: reached over this process's channel, or relayed
    /// while another replica holds that channel.
    pub async fn control(&self, owner: &Owner, id: &SessionId, control: Control) -> Result<ControlReply, SessionError> {
        let container = &self.touched_container(owner, id).await?;
        let reply = if self.holds_channel(container).await? {
            self.runtime.control(container, control).await
        } else {
            self.runtime.control_via_engine(container, control).await
        };
        match reply {
            Ok(reply) => Ok(reply),
            Err(err) => Err(self.went_away(owner, id, err).await),
        }
    }

    /// The session's record, without refreshing it.
    pub async fn get(&self, owner: &Owner, id: &SessionId) -> Result<SessionRecord, SessionError> {
        self.store.get(owner, id).await?.ok_or(SessionError::NotFound)
    }

    /// Takes over a session of node `lost`, which stopped heartbeating: under
    /// the session's lock, if its record still names that node, it becomes
    /// this node's, with a new container made the same (its image, limits,
    /// environment and expiry) holding the session's latest snapshot in
    /// `snapshots` (or an empty workspace when it has none). Commands wait
    /// meanwhile, as for a resume: the session is not ready until its
    /// workspace is. A session suspended or resuming there is parked
    /// instead, its snapshot still the truth, for whichever node resumes it.
    /// `None` when there was nothing to take (another node took it first, it
    /// moved, it is gone).
    ///
    /// The record names this node before the container is made, so from then
    /// on the lost node's commands in it are refused by the store (see
    /// [`CommandStart::node`]), even if that node comes back; and it is
    /// written only while the lost node's live copy is gone, so a node that
    /// beat again keeps its session (its [`Fence`](crate::node::Fence) thaws
    /// only what it still holds).
    #[tracing::instrument(skip_all, fields(session = %id, lost))]
    pub async fn adopt(
        &self,
        owner: &Owner,
        id: &SessionId,
        from: &LostNode<'_>,
    ) -> Result<Option<Adopted>, SessionError> {
        let token = random_token();
        if self.node.is_none() || !self.store.try_lock(owner, id, &token, CREATION_LOCK_TTL).await? {
            return Ok(None);
        }
        let adopted = self
            .holding(owner, id, &token, self.adopt_locked(owner, id, from))
            .await;
        let _ = self.store.unlock(owner, id, &token).await;
        adopted
    }

    async fn adopt_locked(
        &self,
        owner: &Owner,
        id: &SessionId,
        from: &LostNode<'_>,
    ) -> Result<Option<Adopted>, SessionError> {
        let LostNode {
            node: lost,
            snapshots,
            registry,
        } = *from;
        let Some(record) = self.store.get(owner, id).await? else {
            return Ok(None);
        };
        if record.node.as_deref() != Some(lost) || record.is_parked() {
            return Ok(None);
        }
        // Looked at again under the lock: a node that beat meanwhile (slow,
        // not gone) keeps its sessions; the takeover's first write checks
        // again in the store's own step (the node may beat in between).
        if registry.status(lost).await? == Some(crate::node::NodeStatus::Live) {
            return Ok(None);
        }
        let live = registry.live_key(lost);
        let from_lost = Guard {
            node: Some(lost),
            unless_value: Some(&live),
        };
        let ttl = time_left(&record);
        let now = Utc::now().timestamp_millis();
        // Held until the adoption ends (a suspended one takes no room).
        let _admitted = match record.suspended_in() {
            Some(_) => None,
            None => self.admit(&record.options)?,
        };
        if let Some(snapshot) = record.suspended_in() {
            let parked = SessionRecord {
                container: None,
                suspended: Some(Suspension {
                    snapshot_id: Some(snapshot.to_string()),
                    since_ms: now,
                    resuming: false,
                }),
                ..record.clone()
            };
            if !self.store.update_if(&parked, ttl, &from_lost).await? {
                return Ok(None);
            }
            return Ok(Some(Adopted {
                record: parked,
                restored: None,
            }));
        }
        let latest = match snapshots.list(owner).await {
            Ok(all) => all
                .into_iter()
                .filter(|meta| meta.session_id == id.as_str())
                .max_by_key(|meta| meta.created_at)
                .map(|meta| meta.snapshot_id),
            Err(err) => {
                tracing::warn!(%err, "listing the session's snapshots failed; it starts empty");
                None
            }
        };
        // Not ready until its workspace is back: commands wait for the lock.
        // (No snapshot id in it: those name the suspended shelf's; a node
        // that dies midway leaves it to the next adopter, which starts over.)
        // Its workspace is made now: so says its creation time.
        let pending = SessionRecord {
            container: None,
            created_at_ms: now,
            suspended: Some(Suspension {
                snapshot_id: None,
                since_ms: now,
                resuming: true,
            }),
            node: self.node.clone(),
            node_addr: self.node_addr.clone(),
            ..record.clone()
        };
        // Deleted since it was read: it stays so. Back since it was looked
        // at (its live copy there again): it keeps its session.
        if !self.store.update_if(&pending, ttl, &from_lost).await? {
            return Ok(None);
        }
        let made = async {
            let (made, _) = self.make_container(&pending, ttl).await?;
            let mut restored = None;
            if let Some(snapshot) = latest {
                let container = made.container().unwrap_or_default().to_string();
                let copied = async {
                    let archive = snapshots.read(owner, &snapshot).await?;
                    let io = self.runtime.transfer(&container, &Transfer::TarIn(String::new())).await?;
                    transfer::upload(io, archive).await?;
                    Ok::<_, SessionError>(())
                }
                .await;
                match copied {
                    Ok(()) => restored = Some(snapshot),
                    Err(err) => {
                        tracing::warn!(%err, %snapshot, "restoring the session's latest snapshot failed; it starts empty")
                    }
                }
            }
            // Its answers say so from now on (`GET /sessions/{id}`): the
            // workspace is a snapshot's, or empty.
            let ready = SessionRecord {
                suspended: None,
                recreated: Some(Recreation {
                    at_ms: now,
                    lost_node: lost.to_string(),
                    snapshot_id: restored.clone(),
                }),
                ..made
            };
            // Deleted meanwhile (delete does not wait for the lock): it stays so.
            if !self.store.update(&ready, ttl).await? {
                if let Some(container) = ready.container() {
                    let _ = self.runtime.remove(container).await;
                }
                return Err(SessionError::NotFound);
            }
            Ok::<_, SessionError>(Adopted {
                record: ready,
                restored,
            })
        }
        .await;
        match made {
            Ok(adopted) => Ok(Some(adopted)),
            Err(SessionError::NotFound) => Ok(None),
            Err(err) => {
                // No half-adopted session: its new container goes, and it is
                // the lost node's again, for a later pass (here or on
                // another node) to try.
                if let Some(current) = self.store.get(owner, id).await? {
                    if let Some(made) = current.container() {
                        let _ = self.runtime.remove(made).await;
                    }
                    // Over its own pending record only.
                    let ours = Guard {
                        node: self.node.as_deref(),
                        unless_value: None,
                    };
                    let _ = self.store.update_if(&record, ttl, &ours).await;
                }
                Err(err)
            }
        }
    }

    pub async fn list(&self, owner: &Owner) -> Result<Vec<SessionRecord>, SessionError> {
        Ok(self.store.list(owner).await?)
    }

    /// Removes the session's container (or, suspended, its snapshot) and record.
    #[tracing::instrument(skip_all, fields(session = %id))]
    pub async fn delete(&self, owner: &Owner, id: &SessionId) -> Result<(), SessionError> {
        // Its node removes its container with it: deleting it elsewhere would
        // leave the container to that node's reaper.
        self.check_served_here(owner, id).await?;
        let record = self.store.delete(owner, id).await?.ok_or(SessionError::NotFound)?;
        self.drop_suspension(&record).await;
        // A pending record has no container yet: its creator owns what comes.
        if let Some(container) = record.container() {
            self.forget_container(container).await;
            self.runtime.remove(container).await?;
            crate::metrics::container_removed("deleted", 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
