//! Nodes: brig processes that each own one engine and share one store. Each
//! node announces itself (its address, its sessions, its capacity, its
//! runtimes) every heartbeat; a node silent for `NODE_LOSS_SECONDS` is lost.
//!
//! No node compares its clock with another's: each beat also writes the
//! node's *live* copy, which the store expires a loss timeout after the beat
//! began (a node taking another's sessions over also waits until it has
//! seen that node's announcement stand still that long on its own clock). A
//! node holds a [`Lease`] on its sessions while its beats reach the store; a
//! [`Fence`] freezes its sandboxes when the lease lapses, a heartbeat before
//! the others may find the copy gone (a takeover is refused, in the store's
//! own atomic step, while the live copy exists).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::{NodeConfig, SandboxConfig};
use crate::runtime::SandboxRuntime;
use crate::sandbox::{labels, SandboxInfo};
use crate::store::{SessionStore, StoreError};

pub mod placement;

pub use placement::{Placed, Policy, Want};

/// The node ids of the latest announcements (read back deduplicated).
const INDEX: &str = "nodes";
/// Announcements the index keeps (the oldest fall off first).
/// Each node's every beat is an entry, so this bounds how many beats of the
/// others a silent node stays listed for: 4096 keeps one listed well past its
/// loss in fleets of hundreds.
const MAX_NODES: usize = 4096;
/// How long a node's announcement outlives its last heartbeat, so that a lost
/// node is still reported as lost (not forgotten) for a while.
const REPORTED_FOR: u32 = 60;

/// A node as a session's record names it: its id, and where it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: String,
    /// `BRIG_NODE_ADDR`; `None` for a record that did not keep it.
    pub addr: Option<String>,
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            Some(addr) => write!(f, "{} ({addr})", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// What a node says of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub node_id: String,
    pub addr: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// Sandboxes of sessions on its engine now (spares not counted).
    pub sessions: u64,
    /// Sessions it may hold in all (`MAX_SESSIONS`).
    pub max_sessions: u64,
    /// The OCI runtimes it offers sessions (`CONTAINER_RUNTIME`, `ALLOWED_RUNTIMES`).
    pub runtimes: Vec<String>,
    /// An operator drains it: no new sessions, its sessions suspended so
    /// that they resume elsewhere.
    #[serde(default)]
    pub draining: bool,
    /// When its engine last answered (unix ms): a node whose engine has not
    /// for a loss timeout takes no new sessions, though it still beats.
    #[serde(default)]
    pub engine_answered_at_ms: i64,
    /// Its engine has not answered for a loss timeout (judged by the node
    /// itself, on its own clock): it takes no new sessions.
    #[serde(default)]
    pub engine_silent: bool,
    /// Its engine host's memory, and the memory limits of its sandboxes
    /// (spares too) added up.
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub memory_committed: u64,
    /// Its engine host's CPUs, and its sandboxes' CPU limits added up (in
    /// billionths of a CPU).
    #[serde(default)]
    pub nano_cpus: u64,
    #[serde(default)]
    pub nano_cpus_committed: u64,
    /// Which of the images sessions may ask for (`CONTAINER_IMAGE`,
    /// `ALLOWED_IMAGES`) its engine holds.
    #[serde(default)]
    pub images: Vec<String>,
}

/// A node as the registry sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Live,
    /// Silent for longer than the loss timeout.
    Lost,
}

/// What [`Registry::announce`] stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// A live copy.
    pub live: bool,
    /// Over a live copy still there.
    pub was_live: bool,
}

/// The shared list of nodes.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn SessionStore>,
    loss_after: Duration,
}

fn key(node_id: &str) -> String {
    format!("node:{node_id}")
}

/// The node's live copy, which the store expires a loss timeout after its
/// last beat (see [`Registry::live_key`]).
fn live_key(node_id: &str) -> String {
    format!("node-live:{node_id}")
}

fn drain_key(node_id: &str) -> String {
    format!("drain:{node_id}")
}

/// How long a drain lasts unless lifted (a node drained for good is gone long before).
const DRAIN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

impl Registry {
    pub fn new(store: Arc<dyn SessionStore>, loss_after: Duration) -> Self {
        Registry { store, loss_after }
    }

    /// Records `me`, alive for `live_for` more (none: only reported, as
    /// lost), in the index too: the index holds the latest `MAX_NODES`
    /// announcements, so it lives while any node does, is rebuilt by the
    /// next beats if the store lost it, and a lost node drops out of it once
    /// that many beats of the others have come since its last.
    pub async fn announce(&self, me: &Announcement, live_for: Duration) -> Result<Announced, StoreError> {
        let json = serde_json::to_string(me).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let kept = self.loss_after * REPORTED_FOR;
        self.store.put_value(&key(&me.node_id), &json, kept).await?;
        self.store.push_bounded(INDEX, &me.node_id, MAX_NODES, kept).await?;
        if live_for.is_zero() {
            return Ok(Announced::default());
        }
        let was_live = self.store.swap_value(&live_key(&me.node_id), &json, live_for).await?;
        Ok(Announced { live: true, was_live })
    }

    /// The store value that exists while node `id` is live: a takeover of its
    /// sessions is stored only without it
    /// ([`SessionStore::update_if`], [`crate::store::Guard::unless_value`]).
    pub fn live_key(&self, id: &str) -> String {
        live_key(id)
    }

    /// Drains node `id` (`on`), or lifts its drain; its next heartbeat says so.
    pub async fn set_draining(&self, id: &str, on: bool) -> Result<(), StoreError> {
        if on {
            self.store.put_value(&drain_key(id), "1", DRAIN_FOR).await
        } else {
            self.store.delete_value(&drain_key(id)).await
        }
    }

    /// Whether node `id` is being drained.
    pub async fn draining(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.store.get_value(&drain_key(id)).await?.is_some())
    }

    /// The status of node `id` from its own announcement (one read), `None`
    /// if it has none (never announced, or forgotten).
    pub async fn status(&self, id: &str) -> Result<Option<NodeStatus>, StoreError> {
        Ok(self.read(id).await?.map(|(_, status)| status))
    }

    /// Node `id`'s latest announcement: its live copy (live), else the
    /// one kept after it (lost); `None` if neither is there or readable.
    async fn read(&self, id: &str) -> Result<Option<(Announcement, NodeStatus)>, StoreError> {
        let (raw, status) = match self.store.get_value(&live_key(id)).await? {
            Some(raw) => (raw, NodeStatus::Live),
            None => match self.store.get_value(&key(id)).await? {
                Some(raw) => (raw, NodeStatus::Lost),
                None => return Ok(None),
            },
        };
        Ok(serde_json::from_str::<Announcement>(&raw)
            .ok()
            .map(|node| (node, status)))
    }

    /// Every node still reported, with its status; by id.
    pub async fn nodes(&self) -> Result<Vec<(Announcement, NodeStatus)>, StoreError> {
        let mut ids = self.store.list_items(INDEX).await?;
        ids.sort();
        ids.dedup();
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            nodes.extend(self.read(&id).await?);
        }
        Ok(nodes)
    }

    /// Whether `node` (of `status`) takes sessions: live, not drained, its
    /// engine answering within the loss timeout.
    pub fn usable(&self, node: &Announcement, status: NodeStatus) -> bool {
        status == NodeStatus::Live && !node.draining && !node.engine_silent
    }
}

/// The registry as one node sees it, read at most once per `fresh_for`:
/// whether a node is live, and where a new session goes.
pub struct Fleet {
    registry: Registry,
    fresh_for: Duration,
    seen: std::sync::Mutex<Option<Seen>>,
}

struct Seen {
    at: std::time::Instant,
    nodes: Vec<(Announcement, NodeStatus)>,
    /// What this node placed on each since the registry was read, so that
    /// placements between two reads do not all pick the same node.
    placed: std::collections::HashMap<String, Placed>,
}

impl Fleet {
    pub fn new(registry: Registry, fresh_for: Duration) -> Self {
        Fleet {
            registry,
            fresh_for,
            seen: std::sync::Mutex::new(None),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn nodes(&self) -> Result<Vec<(Announcement, NodeStatus)>, StoreError> {
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(seen) = seen.as_ref().filter(|seen| seen.at.elapsed() < self.fresh_for) {
                return Ok(seen.nodes.clone());
            }
        }
        let nodes = self.registry.nodes().await?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
            at: std::time::Instant::now(),
            nodes: nodes.clone(),
            placed: Default::default(),
        });
        Ok(nodes)
    }

    /// Node `id` as last announced, and its status (`None`: never heard of,
    /// or forgotten: as good as lost).
    pub async fn node(&self, id: &str) -> Result<Option<(Announcement, NodeStatus)>, StoreError> {
        Ok(self.nodes().await?.into_iter().find(|(node, _)| node.node_id == id))
    }

    /// Where a new session that needs `want` goes: among the live nodes
    /// that are not drained and whose engine answers, the least loaded of
    /// those with room for it (see [`placement`]).
    pub async fn place(&self, want: &Want) -> Result<Placement, StoreError> {
        let nodes = self.nodes().await?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let placed = seen.as_mut().map(|seen| &mut seen.placed);
        let mut placed = placed.map(std::mem::take).unwrap_or_default();
        let usable: Vec<(&Announcement, Placed)> = nodes
            .iter()
            .filter(|(node, status)| self.registry.usable(node, *status))
            .map(|(node, _)| (node, placed.get(&node.node_id).copied().unwrap_or_default()))
            .collect();
        let offered = usable.iter().any(|(node, _)| placement::offers(node, want));
        let candidates: Vec<(&Announcement, Placed)> = usable
            .into_iter()
            .filter(|(node, extra)| placement::fits(node, extra, want))
            .collect();
        let chosen =
            placement::choose(&candidates, placement::POLICY, |n| rand::random_range(0..n)).map(|node| NodeRef {
                id: node.node_id.clone(),
                addr: Some(node.addr.clone()),
            });
        if let Some(node) = &chosen {
            placed.entry(node.id.clone()).or_default().add(want);
        }
        if let Some(seen) = seen.as_mut() {
            seen.placed = placed;
        }
        Ok(match chosen {
            Some(node) => Placement::On(node),
            None if offered => Placement::Full,
            None => Placement::Nowhere,
        })
    }
}

/// Where [`Fleet::place`] sends a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    On(NodeRef),
    /// Nodes offer its runtime and image, but none has room.
    Full,
    /// No usable node offers its runtime and image.
    Nowhere,
}

/// What the heartbeat last learnt from its engine.
#[derive(Debug, Default)]
pub struct EngineSeen {
    /// Sandboxes of sessions on it.
    pub sessions: u64,
    /// Its sandboxes' memory and CPU limits added up (spares too).
    pub memory_committed: u64,
    pub nano_cpus_committed: u64,
    /// Its host, and the images it holds.
    pub host: crate::runtime::Host,
    /// When it last answered (unix ms; 0: never).
    pub answered_at_ms: i64,
}

impl EngineSeen {
    /// Counts `sandboxes` (a sandbox that does not say its limits has the
    /// configured ones).
    fn count(&mut self, sandboxes: &[SandboxInfo], sandbox: &SandboxConfig, is_spare: impl Fn(&SandboxInfo) -> bool) {
        self.sessions = sandboxes.iter().filter(|s| !is_spare(s)).count() as u64;
        let limit = |s: &SandboxInfo, label: &str, default: u64| {
            s.labels
                .get(label)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let default = Want::of(sandbox, &Default::default());
        self.memory_committed = (sandboxes.iter())
            .map(|s| limit(s, labels::MEMORY, default.memory_bytes))
            .sum();
        self.nano_cpus_committed = (sandboxes.iter())
            .map(|s| limit(s, labels::NANO_CPUS, default.nano_cpus))
            .sum();
    }
}

/// This node's heartbeat: what it announces, made fresh each beat.
pub struct Heartbeat {
    pub registry: Registry,
    pub config: NodeConfig,
    pub sandbox: SandboxConfig,
    pub runtime: Arc<dyn SandboxRuntime>,
    /// Its own check of new sessions (and the sessions it may hold), told
    /// what each beat counted.
    pub room: Arc<placement::Room>,
    /// Renewed by each beat that reached the store.
    pub lease: Arc<Lease>,
    pub started_at_ms: i64,
}

impl Heartbeat {
    /// One beat: counts its sandboxes and announces itself. An engine that
    /// is slow or failing does not stop the beat (the node is alive; its
    /// sessions' requests say what is wrong): `sessions` is then the last
    /// count, which the beat updates when the engine answers in time.
    pub async fn beat(&self, engine: &mut EngineSeen) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // The beat's moment: its live copy lasts a loss timeout from here,
        // and the lease a heartbeat less.
        let started = tokio::time::Instant::now();
        let heartbeat_at_ms = Utc::now().timestamp_millis();
        let images = self.sandbox.images();
        let listed_at = std::time::Instant::now();
        let asked = async { tokio::join!(self.runtime.list(), self.runtime.host(&images)) };
        let node = &self.config.id;
        // Fresh: the engine listed its sandboxes this beat (a failed look at
        // the host keeps the last one).
        let fresh = match tokio::time::timeout(self.config.heartbeat, asked).await {
            Ok((listed, host)) => {
                match host {
                    Ok(host) => engine.host = host,
                    Err(err) => tracing::warn!(%node, error = %err, "looking at the node's engine host failed"),
                }
                match listed {
                    Ok(sandboxes) => {
                        engine.count(&sandboxes, &self.sandbox, |s| self.runtime.is_spare(s));
                        engine.answered_at_ms = Utc::now().timestamp_millis();
                        true
                    }
                    Err(err) => {
                        tracing::warn!(%node, error = %err, "counting the node's sandboxes failed");
                        false
                    }
                }
            }
            Err(_) => {
                tracing::warn!(%node, "counting the node's sandboxes took longer than a heartbeat");
                false
            }
        };
        let now = Utc::now().timestamp_millis();
        let me = Announcement {
            node_id: self.config.id.clone(),
            addr: self.config.addr.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms,
            sessions: engine.sessions,
            max_sessions: self.room.max_sessions(),
            runtimes: self.sandbox.runtimes(),
            draining: self.registry.draining(&self.config.id).await?,
            engine_answered_at_ms: engine.answered_at_ms,
            engine_silent: now - engine.answered_at_ms > self.config.loss_after.as_millis() as i64,
            memory_bytes: engine.host.memory_bytes,
            memory_committed: engine.memory_committed,
            nano_cpus: engine.host.nano_cpus,
            nano_cpus_committed: engine.nano_cpus_committed,
            images: engine.host.images.clone(),
        };
        // Admissions since count until a beat has counted them on the engine.
        if fresh {
            self.room.counted(&me, listed_at);
        }
        let live_for = self.config.loss_after.saturating_sub(started.elapsed());
        let held = self.lease.held();
        let announced = self.registry.announce(&me, live_for).await?;
        if !announced.live {
            return Err("the beat took a loss timeout: the node is reported lost".into());
        }
        // Gone while held (the store restarted from an older state, evicted
        // or flushed it): other nodes may have judged this one lost.
        if held && !announced.was_live {
            tracing::warn!(%node, "the node's live copy had vanished from the store: its sandboxes are checked against the sessions' records");
            self.lease.vanished();
        }
        self.lease.renewed(started);
        Ok(())
    }

    /// Beats every `NODE_HEARTBEAT_SECONDS` from the start of the last one
    /// (a slow engine does not space the beats out), for ever (the caller
    /// stops the task); a failed beat is logged, and the node is reported
    /// lost only if beats keep failing.
    pub async fn run(self) {
        let mut engine = EngineSeen::default();
        let mut beats = tokio::time::interval(self.config.heartbeat);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            if let Err(err) = self.beat(&mut engine).await {
                tracing::warn!(node = %self.config.id, error = %err, "node heartbeat failed");
            }
        }
    }
}

/// This node's hold on its sessions: renewed by every heartbeat that reached
/// the store, held for a loss timeout less one heartbeat from the moment the
/// beat began. The beat's live copy lasts a loss timeout from that moment
/// (its time to expire is what is left of the loss timeout when it is
/// written), so the lease lapses a heartbeat before any other node may find
/// the copy gone.
pub struct Lease {
    held_for: Duration,
    loss_after: Duration,
    state: std::sync::Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    renewed: Option<tokio::time::Instant>,
    /// When the current unbroken run of renewals began.
    since: Option<tokio::time::Instant>,
    /// A beat found the live copy gone while the lease was held.
    vanished: bool,
}

impl Lease {
    /// For beats every `heartbeat`, a node lost after `loss_after` without one.
    pub fn new(heartbeat: Duration, loss_after: Duration) -> Self {
        Lease {
            held_for: loss_after.saturating_sub(heartbeat),
            loss_after,
            state: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A beat begun at `began` reached the store.
    pub fn renewed(&self, began: tokio::time::Instant) {
        let mut state = self.state();
        let lapsed = state
            .renewed
            .is_none_or(|last| began.saturating_duration_since(last) >= self.held_for);
        if lapsed {
            state.since = Some(began);
        }
        state.renewed = Some(state.renewed.map_or(began, |last| last.max(began)));
    }

    /// The live copy was found gone while the lease was held.
    pub fn vanished(&self) {
        self.state().vanished = true;
    }

    fn take_vanished(&self) -> bool {
        std::mem::take(&mut self.state().vanished)
    }

    /// Whether a beat of this process ever got through.
    pub fn ever_held(&self) -> bool {
        self.state().renewed.is_some()
    }

    /// Whether this node may act on its sessions now.
    pub fn held(&self) -> bool {
        self.held_in(&self.state())
    }

    fn held_in(&self, state: &LeaseState) -> bool {
        state.renewed.is_some_and(|last| last.elapsed() < self.held_for)
    }

    /// Held without a lapse for a whole loss timeout: every node alive now
    /// has beaten since, so one without a live copy is really lost (after an
    /// outage of the store every node's copy is gone, and a node that took
    /// the others' sessions at its first beat back would take live ones).
    pub fn settled(&self) -> bool {
        let state = self.state();
        self.held_in(&state) && state.since.is_some_and(|since| since.elapsed() >= self.loss_after)
    }

    pub fn loss_after(&self) -> Duration {
        self.loss_after
    }
}

/// Keeps this node's sandboxes in step with its hold on their sessions.
/// While its [`Lease`] has lapsed (cut off from the store, its sessions may
/// be taken over elsewhere) it freezes them all (the engine's pause); once
/// the lease is back, and after its live copy was found gone, and once a
/// loss timeout in any case, it reconciles: a frozen sandbox whose session
/// is still this node's (or a spare nobody claimed) thaws, a running one
/// whose session another node now holds is frozen; the reaper removes what
/// is not this node's.
pub struct Fence {
    pub lease: Arc<Lease>,
    pub runtime: Arc<dyn SandboxRuntime>,
    pub store: Arc<dyn SessionStore>,
    pub node: String,
    /// How often it looks (a fraction of a heartbeat).
    pub every: Duration,
}

/// What [`Fence::pass`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fenced {
    pub frozen: usize,
    pub thawed: usize,
    /// Frozen sandboxes left frozen: their sessions are no longer this node's.
    pub left: usize,
}

#[derive(Default)]
pub struct FenceState {
    /// The store label of this node's sandboxes (known once the store answered).
    identity: Option<String>,
    /// After a lapse: reconcile as soon as the lease is back.
    due: bool,
    reconciled_at: Option<tokio::time::Instant>,
}

/// How long the fence waits for the engine in one look.
const FENCE_ENGINE_WAIT: Duration = Duration::from_secs(5);

impl Fence {
    /// Looks every `every`, for ever (the caller stops the task).
    pub async fn run(self) {
        let mut state = FenceState::default();
        loop {
            self.pass(&mut state).await;
            tokio::time::sleep(self.every).await;
        }
    }

    /// One look: freezes while the lease has lapsed, reconciles when due.
    pub async fn pass(&self, state: &mut FenceState) -> Fenced {
        let mut done = Fenced::default();
        // Nothing to judge before this process's first beat got through.
        if !self.lease.ever_held() {
            return done;
        }
        if !self.lease.held() {
            state.due = true;
            if let Some(identity) = state.identity.clone() {
                self.freeze_all(&identity, &mut done).await;
            }
            return done;
        }
        let due = std::mem::take(&mut state.due)
            | self.lease.take_vanished()
            | state
                .reconciled_at
                .is_none_or(|at| at.elapsed() >= self.lease.loss_after());
        if !due {
            return done;
        }
        // Read again each time: a store that lost everything makes a new one.
        let identity = match self.store.identity().await {
            Ok(identity) => identity,
            Err(err) => {
                state.due = true;
                tracing::warn!(node = %self.node, %err, "reading the store's identity failed; the next look tries again");
                return done;
            }
        };
        state.identity = Some(identity.clone());
        // A lapse while it runs stops it: the freeze cannot wait.
        let lapsed = async {
            while self.lease.held() {
                tokio::time::sleep(self.every).await;
            }
        };
        let checked = tokio::select! {
            checked = tokio::time::timeout(FENCE_ENGINE_WAIT * 2, self.reconcile(&identity, &mut done)) => checked,
            () = lapsed => {
                state.due = true;
                self.freeze_all(&identity, &mut done).await;
                return done;
            }
        };
        match checked {
            Ok(Ok(true)) => state.reconciled_at = Some(tokio::time::Instant::now()),
            Ok(Ok(false)) => state.due = true,
            Ok(Err(err)) => {
                state.due = true;
                tracing::warn!(node = %self.node, %err, "checking the node's sandboxes against their sessions failed; the next look tries again");
            }
            Err(_) => {
                state.due = true;
                tracing::warn!(node = %self.node, "checking the node's sandboxes against their sessions timed out; the next look tries again");
            }
        }
        done
    }

    async fn freeze_all(&self, identity: &str, done: &mut Fenced) {
        let sandboxes = match tokio::time::timeout(FENCE_ENGINE_WAIT, self.runtime.list()).await {
            Ok(Ok(sandboxes)) => sandboxes,
            Ok(Err(err)) => {
                tracing::error!(node = %self.node, %err, "the node's heartbeats do not reach the store, and listing its sandboxes to freeze them failed");
                return;
            }
            Err(_) => {
                tracing::error!(node = %self.node, "the node's heartbeats do not reach the store, and its engine did not list its sandboxes in time to freeze them");
                return;
            }
        };
        let running: Vec<&SandboxInfo> = (sandboxes.iter())
            .filter(|s| is_ours(s, identity) && s.running && !s.paused)
            .collect();
        done.frozen = self.freeze(&running).await;
        if done.frozen > 0 {
            tracing::warn!(node = %self.node, frozen = done.frozen, "the node's heartbeats do not reach the store: its sandboxes are frozen until they do");
        }
    }

    /// Freezes `sandboxes` all at once (the others may take them over a
    /// heartbeat from now); how many it froze.
    async fn freeze(&self, sandboxes: &[&SandboxInfo]) -> usize {
        let freezing = (sandboxes.iter()).map(|sandbox| async move {
            let frozen = tokio::time::timeout(FENCE_ENGINE_WAIT, self.runtime.freeze(&sandbox.id, true)).await;
            match frozen {
                Ok(Ok(())) => true,
                Ok(Err(err)) => {
                    tracing::error!(node = %self.node, sandbox = %sandbox.id, %err, "freezing a sandbox failed");
                    false
                }
                Err(_) => {
                    tracing::error!(node = %self.node, sandbox = %sandbox.id, "freezing a sandbox took too long");
                    false
                }
            }
        });
        (futures_util::future::join_all(freezing).await.into_iter())
            .filter(|frozen| *frozen)
            .count()
    }

    /// Brings this node's sandboxes in step with the sessions' records,
    /// read after the lease was renewed: a takeover is stored only while
    /// this node's live copy is gone, so a record that names this node now
    /// stays its own while the lease holds. Whether every sandbox was dealt
    /// with (a failure on one is logged, and the next look tries again).
    async fn reconcile(
        &self,
        identity: &str,
        done: &mut Fenced,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let ours: Vec<SandboxInfo> = (self.runtime.list().await?.into_iter())
            .filter(|s| is_ours(s, identity))
            .collect();
        if ours.is_empty() {
            return Ok(true);
        }
        let records = self.store.list_all().await?;
        let mine = |node: &Option<String>| node.as_deref() == Some(self.node.as_str());
        let held: std::collections::HashSet<&str> = (records.iter())
            .filter(|record| mine(&record.node))
            .filter_map(|record| record.container())
            .collect();
        let elsewhere: std::collections::HashSet<(&str, &str)> = (records.iter())
            .filter(|record| record.node.is_some() && !mine(&record.node))
            .map(|record| (record.owner.as_str(), record.session_id.as_str()))
            .collect();
        // First what another node holds: it must not run here.
        let taken: Vec<&SandboxInfo> = (ours.iter())
            .filter(|s| s.running && !s.paused && !held.contains(s.id.as_str()))
            .filter(|s| elsewhere.contains(&(s.owner.as_str(), s.session_id.as_str())))
            .collect();
        done.frozen = self.freeze(&taken).await;
        let mut complete = done.frozen == taken.len();
        let frozen: Vec<&SandboxInfo> = ours.iter().filter(|s| s.paused).collect();
        let spares: std::collections::HashSet<String> = if frozen.iter().any(|s| self.runtime.is_spare(s)) {
            self.store.pool_members().await?.into_iter().collect()
        } else {
            Default::default()
        };
        for sandbox in frozen {
            match self.is_held(sandbox, &held, &spares).await {
                Ok(true) => match self.runtime.freeze(&sandbox.id, false).await {
                    Ok(()) => done.thawed += 1,
                    Err(err) => {
                        complete = false;
                        tracing::warn!(node = %self.node, sandbox = %sandbox.id, %err, "thawing a sandbox failed");
                    }
                },
                Ok(false) => done.left += 1,
                Err(err) => {
                    complete = false;
                    tracing::warn!(node = %self.node, sandbox = %sandbox.id, %err, "looking up a frozen sandbox's session failed");
                }
            }
        }
        if done.thawed + done.left + done.frozen > 0 {
            tracing::info!(node = %self.node, thawed = done.thawed, left = done.left, frozen = done.frozen, "the node's sandboxes checked against their sessions: its own thawed, others' frozen for the reaper");
        }
        Ok(complete)
    }

    /// Whether frozen `sandbox` is this node's: a record of this node names
    /// it (`held`), or its session's record names this node (being made,
    /// resumed or taken over here), or it is a spare in the pool (`spares`)
    /// that nobody claimed.
    async fn is_held(
        &self,
        sandbox: &SandboxInfo,
        held: &std::collections::HashSet<&str>,
        spares: &std::collections::HashSet<String>,
    ) -> Result<bool, StoreError> {
        if held.contains(sandbox.id.as_str()) {
            return Ok(true);
        }
        if !sandbox.session_id.is_empty() {
            let (Some(owner), Ok(id)) = (
                crate::session::ids::Owner::parse(&sandbox.owner),
                crate::session::ids::SessionId::parse(&sandbox.session_id),
            ) else {
                return Ok(false);
            };
            let record = self.store.get(&owner, &id).await?;
            return Ok(record.is_some_and(|record| record.node.as_deref() == Some(self.node.as_str())));
        }
        Ok(spares.contains(&sandbox.id) && !self.store.pool_claimed(&sandbox.id).await?)
    }
}

fn is_ours(sandbox: &SandboxInfo, identity: &str) -> bool {
    sandbox.labels.get(labels::STORE).map(String::as_str) == Some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn announcement(id: &str, heartbeat_at_ms: i64) -> Announcement {
        Announcement {
            node_id: id.into(),
            addr: format!("http://{id}:8000"),
            heartbeat_at_ms,
            sessions: 1,
            max_sessions: 100,
            runtimes: vec!["runc".into()],
            engine_answered_at_ms: heartbeat_at_ms,
            images: vec!["img".into()],
            ..Announcement::default()
        }
    }

    /// Announces `node` as its heartbeat's age says: live for the loss
    /// timeout, or (older than it) only reported.
    async fn put(registry: &Registry, node: &Announcement) {
        let age = Utc::now().timestamp_millis() - node.heartbeat_at_ms;
        let live_for = if age > registry.loss_after.as_millis() as i64 {
            Duration::ZERO
        } else {
            registry.loss_after
        };
        registry.announce(node, live_for).await.unwrap();
    }

    fn want(runtime: &str) -> Want {
        Want {
            runtime: runtime.into(),
            image: "img".into(),
            memory_bytes: 1,
            nano_cpus: 1,
        }
    }

    #[tokio::test]
    async fn nodes_are_listed_once_each_and_lost_once_silent_past_the_timeout() {
        let registry = Registry::new(Arc::new(MemoryStore::new()), Duration::from_secs(10));
        let now = Utc::now().timestamp_millis();
        put(&registry, &announcement("b", now)).await;
        put(&registry, &announcement("a", now - 11_000)).await;
        put(&registry, &announcement("b", now)).await;
        let nodes = registry.nodes().await.unwrap();
        let seen: Vec<(&str, NodeStatus)> = nodes.iter().map(|(n, s)| (n.node_id.as_str(), *s)).collect();
        assert_eq!(seen, vec![("a", NodeStatus::Lost), ("b", NodeStatus::Live)]);
        assert_eq!(nodes[1].0.addr, "http://b:8000");
    }

    #[tokio::test]
    async fn new_sessions_go_to_the_live_node_with_the_most_room_that_offers_their_runtime() {
        let registry = Registry::new(Arc::new(MemoryStore::new()), Duration::from_secs(10));
        let now = Utc::now().timestamp_millis();
        let node = |id: &str, sessions: u64, max: u64, runtime: &str, at: i64| Announcement {
            sessions,
            max_sessions: max,
            runtimes: vec![runtime.into()],
            ..announcement(id, at)
        };
        put(&registry, &node("a", 5, 10, "runc", now)).await;
        put(&registry, &node("b", 7, 100, "runc", now)).await;
        put(&registry, &node("c", 0, 10, "runc", now - 60_000)).await;
        put(&registry, &node("d", 0, 10, "runsc", now)).await;
        let drained = Announcement {
            draining: true,
            ..node("e", 0, 1000, "runc", now)
        };
        put(&registry, &drained).await;
        let fleet = Fleet::new(registry, Duration::from_secs(60));
        let place = || async {
            match fleet.place(&want("runc")).await.unwrap() {
                Placement::On(node) => Some(node.id),
                _ => None,
            }
        };
        // b has 7 of 100 in use, a 5 of 10; c is lost; d lacks runc; e is drained.
        assert!(fleet.node("e").await.unwrap().unwrap().0.draining);
        assert_eq!(place().await.as_deref(), Some("b"));
        assert!(matches!(fleet.place(&want("runsc")).await.unwrap(), Placement::On(n) if n.id == "d"));
        assert_eq!(fleet.place(&want("kata")).await.unwrap(), Placement::Nowhere);
        // Placements count until the next read: b fills to a's share (50%).
        let mut to_b = 1;
        while place().await.as_deref() == Some("b") {
            to_b += 1;
        }
        assert_eq!(
            to_b, 43,
            "b fills to 50 of 100, a's share (5 of 10), which wins the tie"
        );
        // Full: b and a at their maxima, as counted since the last read.
        let mut left = 0;
        while place().await.is_some() {
            left += 1;
        }
        assert_eq!(left, 50 + 4, "b's 50 slots and a's 4 (the loop's last went to a)");
        assert_eq!(fleet.place(&want("runc")).await.unwrap(), Placement::Full);
        assert_eq!(fleet.node("c").await.unwrap().unwrap().1, NodeStatus::Lost);
        assert!(fleet.node("zz").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_node_is_live_while_its_last_beat_is_younger_than_the_loss_timeout() {
        let registry = Registry::new(Arc::new(MemoryStore::new()), Duration::from_millis(300));
        // A timestamp a day off changes nothing: what counts is the store's
        // expiry of the live copy.
        let skewed = announcement("a", Utc::now().timestamp_millis() - 86_400_000);
        let first = registry.announce(&skewed, Duration::from_millis(300)).await.unwrap();
        assert_eq!(
            first,
            Announced {
                live: true,
                was_live: false
            }
        );
        assert_eq!(registry.status("a").await.unwrap(), Some(NodeStatus::Live));
        let again = registry.announce(&skewed, Duration::from_millis(300)).await.unwrap();
        assert_eq!(
            again,
            Announced {
                live: true,
                was_live: true
            }
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(registry.status("a").await.unwrap(), Some(NodeStatus::Lost));
        assert_eq!(registry.status("zz").await.unwrap(), None);
        // Announced too late to count: only reported.
        let late = registry.announce(&skewed, Duration::ZERO).await.unwrap();
        assert_eq!(late, Announced::default());
        assert_eq!(registry.status("a").await.unwrap(), Some(NodeStatus::Lost));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lapses_a_heartbeat_before_the_loss_timeout_and_settles_after_one() {
        let lease = Lease::new(Duration::from_secs(1), Duration::from_secs(4));
        assert!(!lease.held());
        let beat = |at| lease.renewed(at);
        let start = tokio::time::Instant::now();
        beat(start);
        assert!(lease.held() && !lease.settled());
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            beat(tokio::time::Instant::now());
        }
        assert!(lease.settled(), "four seconds of beats a second apart");
        // A beat sent before the last one to come back does not shorten it.
        beat(start);
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert!(lease.held());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!lease.held() && !lease.settled(), "lapsed at 4 s less a heartbeat");
        // Back: held again, but settled only a loss timeout later.
        beat(tokio::time::Instant::now());
        assert!(lease.held() && !lease.settled());
        tokio::time::advance(Duration::from_secs(2)).await;
        beat(tokio::time::Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        beat(tokio::time::Instant::now());
        assert!(lease.settled());
    }

    /// A lapse freezes this node's sandboxes (spares too) and no other
    /// node's; once the lease is back, the ones whose sessions are still
    /// this node's (and the spares) thaw, a session taken over meanwhile
    /// stays frozen for the reaper; a running sandbox whose session another
    /// node holds is frozen when the live copy was found gone.
    #[tokio::test(start_paused = true)]
    async fn the_fence_freezes_while_the_lease_has_lapsed_and_thaws_only_what_the_node_still_holds() {
        use crate::runtime::fake::FakeRuntime;
        use crate::sandbox::CreateSandbox;
        use crate::session::ids::Owner;
        use crate::session::record::SessionRecord;

        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let runtime = Arc::new(FakeRuntime::new());
        let identity = store.identity().await.unwrap();
        let owner = Owner::of_principal("alice");
        let mut records = Vec::new();
        for (session, label) in [
            ("kept", identity.as_str()),
            ("taken", identity.as_str()),
            ("else", "other/n9"),
            ("made", identity.as_str()),
        ] {
            let request = CreateSandbox {
                owner: owner.as_str().into(),
                session_id: session.into(),
                options: Default::default(),
                store: label.into(),
            };
            let (sandbox, _) = runtime.create(&request).await.unwrap();
            let record = SessionRecord {
                owner: owner.clone(),
                session_id: session.into(),
                // "made": its container made, its record not told yet.
                container: (session != "made").then_some(sandbox.id),
                created_at_ms: 0,
                expires_at_ms: 0,
                options: Default::default(),
                suspended: None,
                ttl_ms: None,
                node: Some("n1".into()),
                node_addr: None,
                recreated: None,
            };
            store.replace(&record, Duration::from_secs(600)).await.unwrap();
            records.push(record);
        }
        let spare = runtime.create_spare(&identity).await.unwrap();
        store.pool_add(&spare.id).await.unwrap();
        let lease = Arc::new(Lease::new(Duration::from_secs(1), Duration::from_secs(4)));
        let fence = Fence {
            lease: lease.clone(),
            runtime: runtime.clone(),
            store: store.clone(),
            node: "n1".into(),
            every: Duration::from_millis(250),
        };
        let paused = || async {
            let mut paused: Vec<String> = (runtime.list().await.unwrap().into_iter())
                .filter(|s| s.paused)
                .map(|s| if s.pool { "spare".into() } else { s.session_id })
                .collect();
            paused.sort();
            paused
        };
        let mut state = FenceState::default();
        // Before the first beat got through: nothing is judged.
        assert_eq!(fence.pass(&mut state).await, Fenced::default());
        assert!(paused().await.is_empty());
        lease.renewed(tokio::time::Instant::now());
        assert_eq!(fence.pass(&mut state).await, Fenced::default());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(fence.pass(&mut state).await.frozen, 4);
        assert_eq!(paused().await, ["kept", "made", "spare", "taken"]);
        assert_eq!(fence.pass(&mut state).await, Fenced::default(), "frozen once");
        // Taken over meanwhile by n2.
        let taken = SessionRecord {
            node: Some("n2".into()),
            ..records[1].clone()
        };
        store.replace(&taken, Duration::from_secs(600)).await.unwrap();
        lease.renewed(tokio::time::Instant::now());
        let thawed = fence.pass(&mut state).await;
        assert_eq!((thawed.thawed, thawed.left), (3, 1));
        assert_eq!(paused().await, ["taken"]);
        assert!(!runtime
            .list()
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == spare.id && s.paused));
        assert_eq!(fence.pass(&mut state).await, Fenced::default(), "thawed once");
        // Taken over without a lapse (the store lost this node's live copy):
        // frozen once a beat says the copy had vanished.
        let kept = SessionRecord {
            node: Some("n2".into()),
            ..records[0].clone()
        };
        store.replace(&kept, Duration::from_secs(600)).await.unwrap();
        assert_eq!(fence.pass(&mut state).await, Fenced::default(), "not looked at yet");
        lease.vanished();
        let checked = fence.pass(&mut state).await;
        assert_eq!((checked.frozen, checked.left), (1, 1));
        assert_eq!(paused().await, ["kept", "taken"]);
    }

    #[test]
    fn the_heartbeat_adds_up_its_sandboxes_limits_spares_too() {
        let sandbox = |memory: Option<&str>, cpus: Option<&str>, pool: bool| SandboxInfo {
            id: String::new(),
            name: String::new(),
            owner: String::new(),
            session_id: String::new(),
            pool,
            created_unix: 0,
            running: true,
            paused: false,
            labels: [(labels::MEMORY, memory), (labels::NANO_CPUS, cpus)]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                .collect(),
        };
        let sandboxes = [
            sandbox(Some("100"), Some("500000000"), false),
            sandbox(Some("300"), Some("100000000"), true),
            // Made before the labels: the configured limits.
            sandbox(None, Some("junk"), false),
        ];
        let config = SandboxConfig {
            memory_bytes: 1000,
            cpus: 2.0,
            ..SandboxConfig::default()
        };
        let mut seen = EngineSeen::default();
        seen.count(&sandboxes, &config, |s| s.pool);
        assert_eq!(seen.sessions, 2);
        assert_eq!(seen.memory_committed, 1400);
        assert_eq!(seen.nano_cpus_committed, 2_600_000_000);
    }
}
