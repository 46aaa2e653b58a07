//! What handlers share, and how it is assembled. Services take their own
//! parts; this struct only holds them for the transports.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use brig_core::agent_binary::AgentBinary;
use brig_core::config::{SessionExpiry, StoreConfig};
use brig_core::policy::rules::LiveRules;
use brig_core::pool::WarmPool;
use brig_core::reaper::Reaper;
use brig_core::sandbox::egress::EgressDialer;
use brig_core::session::Sessions;
use brig_core::shutdown::Shutdown;
use brig_core::store::{ExecutionRecords, IdempotencyRecords, MemoryStore, RedisStore, SessionStore, StoreError};
use brig_core::{Config, DockerRuntime, RuntimeError, SandboxRuntime};

use crate::auth::Authenticator;
use crate::llm::Llm;
use crate::outbox::Outbox;
use crate::rate_limit::{spawn_pruner, AuthFailures, RateLimiter};
use crate::service::execute::{ExecLimits, ExecuteService};
use crate::service::executions::Executions;
use crate::service::idempotency::Idempotency;
use crate::service::readiness::Readiness;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The session flow (store and runtime behind it).
    pub sessions: Arc<Sessions>,
    /// Whatever runs sandboxes.
    pub runtime: Arc<dyn SandboxRuntime>,
    /// `/ready`'s check of the store and the runtime (cached for a second).
    pub readiness: Arc<Readiness>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    /// Failed authentications per source address.
    pub auth_failures: Arc<AuthFailures>,
    /// Answer bytes each principal has not read yet.
    pub outbox: Arc<Outbox>,
    /// The execute use case every transport runs.
    pub execute: Arc<ExecuteService>,
    pub executions: Arc<Executions>,
    /// Stateful code contexts, on top of executions.
    pub contexts: Arc<crate::service::contexts::Contexts>,
    pub idempotency: Arc<Idempotency>,
    /// The command rules in force (the policy file's, reloaded on SIGHUP).
    pub rules: Arc<LiveRules>,
    /// The model behind `/generate`, if `LLM_BASE_URL` is set.
    pub llm: Option<Arc<Llm>>,
    /// The Prometheus recorder's handle, if this process installed one.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Owns every background task; cancelled when shutdown stops waiting.
    pub shutdown: Shutdown,
    /// What keeps tenants apart beyond the container (`gvisor`,
    /// `userns-remap`, `shared-host-uid`), as the engine said at start-up;
    /// `/ready` reports it.
    pub tenant_separation: Option<&'static str>,
    /// The in-process reaper of the embedded mode (`SESSION_STORE=memory`),
    /// whose records live in this process: it also purges at exit.
    pub embedded_reaper: Option<Arc<Reaper>>,
    /// Answers the sandboxes' egress dials (the runtime holds it weakly);
    /// `None` when `EGRESS_ALLOWED` is empty.
    pub egress_dialer: Option<Arc<dyn EgressDialer>>,
    /// Workspace snapshots (`SNAPSHOT_DIR`).
    pub snapshots: Arc<brig_core::snapshot::SnapshotStore>,
    /// Node mode: the hop to other nodes, and the registry it reads.
    pub forwarder: Option<Arc<crate::forward::Forwarder>>,
    /// Node mode: this node's own bound on the sessions made here, which its
    /// heartbeat keeps counted.
    pub room: Option<Arc<brig_core::node::placement::Room>>,
}

impl AppState {
    /// Node mode: the registry of the nodes sharing the store (the one the
    /// forwarder reads); `None` on a single host.
    pub fn registry(&self) -> Option<&brig_core::node::Registry> {
        self.forwarder.as_ref().map(|forwarder| forwarder.fleet.registry())
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for Arc<RateLimiter> {
    fn from_ref(state: &AppState) -> Self {
        state.limiter.clone()
    }
}

impl FromRef<AppState> for Arc<AuthFailures> {
    fn from_ref(state: &AppState) -> Self {
        state.auth_failures.clone()
    }
}

impl FromRef<AppState> for Arc<Outbox> {
    fn from_ref(state: &AppState) -> Self {
        state.outbox.clone()
    }
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the Docker engine at {host}")]
    Engine {
        host: String,
        #[source]
        source: RuntimeError,
    },
    #[error("REDIS_URL")]
    Store(#[from] StoreError),
    /// Node mode without a way to reach the other nodes.
    #[error("BRIG_NODE_CA: its certificates cannot be used (see the log)")]
    NodeCa,
}

impl AppState {
    /// Connects to the engine (negotiating the API version) and builds the
    /// store; Redis is connected on first use, so the API starts, and says it is
    /// not ready, while Redis is down. Publishing the agent is attempted here
    /// and retried by `/ready` until it succeeds.
    pub async fn build(config: Config, rules: LiveRules) -> Result<Self, StartError> {
        let docker = config.docker.connect().await.map_err(|err| StartError::Engine {
            host: config.docker.host.clone().unwrap_or_else(|| "the local socket".into()),
            source: RuntimeError::EngineUnavailable(err.into()),
        })?;
        let agent = AgentBinary::new(brig_agent_embed::AGENT_BINARY);
        let runtime = Arc::new(DockerRuntime::new(docker, config.sandbox.clone(), Some(agent)));
        if let Err(err) = runtime.publish_agent().await {
            tracing::error!(%err, "publishing the sandbox agent failed; /ready reports it until it works");
        }
        let separation = runtime.tenant_separation().await.ok();
        if separation == Some("shared-host-uid") {
            tracing::warn!(
                "sandboxes run as host uid 1000, shared by every tenant and by any host account with that uid: \
                 per-user kernel limits (inotify instances, pipe buffers) are shared between tenants, and that \
                 host account can reach sandbox processes. Enable the engine's userns-remap, or run sandboxes \
                 under gVisor (CONTAINER_RUNTIME=runsc); see SECURITY.md, Tenant separation"
            );
        }
        let store: Arc<dyn SessionStore> = match &config.store {
            StoreConfig::Redis { url } => Arc::new(
                RedisStore::new(url, &config.sandbox.instance)?.for_node(config.node.as_ref().map(|n| n.id.as_str())),
            ),
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
        };
        let mut state = Self::from_parts(config, rules, store, runtime.clone());
        if state.config.node.is_some() && state.forwarder.is_none() {
            return Err(StartError::NodeCa);
        }
        state.tenant_separation = separation;
        if let Some(dialer) = state.sessions.egress_dialer(host_addresses()) {
            let dialer: Arc<dyn EgressDialer> = Arc::new(dialer);
            runtime.set_egress_dialer(Arc::downgrade(&dialer));
            state.egress_dialer = Some(dialer);
        }
        state
            .shutdown
            .spawn_loop(remove_stale_agent_volumes(runtime, state.config.cleanup.interval));
        if let (Some(node), Some(registry), Some(room)) =
            (&state.config.node, state.registry().cloned(), state.room.clone())
        {
            let sandbox = &state.config.sandbox;
            let lease = Arc::new(brig_core::node::Lease::new(node.heartbeat, node.loss_after));
            let heartbeat = brig_core::node::Heartbeat {
                registry: registry.clone(),
                config: node.clone(),
                sandbox: sandbox.clone(),
                runtime: state.runtime.clone(),
                room,
                lease: lease.clone(),
                started_at_ms: chrono::Utc::now().timestamp_millis(),
            };
            state.shutdown.spawn_loop(heartbeat.run());
            let fence = brig_core::node::Fence {
                lease: lease.clone(),
                runtime: state.runtime.clone(),
                store: state.sessions.store().clone(),
                node: node.id.clone(),
                every: (node.heartbeat / 4).max(std::time::Duration::from_millis(100)),
            };
            state.shutdown.spawn_loop(fence.run());
            let recovery = crate::service::recovery::Recovery::new(
                state.sessions.clone(),
                registry.clone(),
                state.snapshots.clone(),
                sandbox.clone(),
                lease,
            );
            state.shutdown.spawn_loop(recovery.run(node.heartbeat));
            // A drain needs snapshots every node reads (its PUT says so): a
            // node keeping its own would have its sessions resume on it again.
            if state.config.snapshots.shared_between_nodes() {
                state
                    .shutdown
                    .spawn_loop(drain(state.sessions.clone(), registry, node.clone()));
            }
        }
        // Without Redis there is no cleanup worker that could see our sessions:
        // the same reaper runs in this process.
        if state.config.store == StoreConfig::Memory {
            let reaper = Arc::new(Reaper::new(
                state.sessions.store().clone(),
                state.runtime.clone(),
                state.config.cleanup.clone(),
                state.config.sandbox.warm_pool_size,
            ));
            let passes = reaper.clone();
            state
                .shutdown
                .spawn_loop(async move { passes.run_until_stopped(std::future::pending()).await });
            state.embedded_reaper = Some(reaper);
        }
        Ok(state)
    }

    /// Assembles the state from ready parts (tests use this with the memory
    /// store and a fake runtime; `rules` come from [`LiveRules::load`]). Must
    /// run inside a tokio runtime: it starts the warm pool's refill and the
    /// rate limiter's pruning.
    pub fn from_parts(
        config: Config,
        rules: LiveRules,
        store: Arc<dyn SessionStore>,
        runtime: Arc<dyn SandboxRuntime>,
    ) -> Self {
        let shutdown = Shutdown::new();
        let mut sessions = Sessions::new(store.clone(), runtime.clone(), config.session_ttl, config.quota)
            .with_egress(config.egress.clone(), config.cleanup.max_age + Duration::from_secs(600))
            .with_node(config.node.as_ref().map(|node| (node.id.clone(), node.addr.clone())));
        let room = config.node.as_ref().map(|node| {
            let max_sessions = node.max_sessions.unwrap_or(u64::from(config.quota.total));
            Arc::new(brig_core::node::placement::Room::new(
                max_sessions,
                config.sandbox.clone(),
            ))
        });
        if let Some(room) = &room {
            sessions = sessions.with_room(room.clone());
        }
        if config.sandbox.warm_pool_size > 0 {
            let pool = Arc::new(WarmPool::new(
                store.clone(),
                runtime.clone(),
                config.sandbox.warm_pool_size,
            ));
            sessions = sessions.with_pool(pool.clone());
            shutdown.spawn_loop(async move { pool.run_until_stopped(std::future::pending()).await });
        }
        let snapshots = Arc::new(brig_core::snapshot::SnapshotStore::new(config.snapshots.clone()));
        let sessions = Arc::new(sessions.with_suspension(
            snapshots.for_suspended(),
            config.snapshots.suspended_retention,
            config.snapshots.sweep_after,
        ));
        spawn_suspension(&sessions, &config, &shutdown);
        let rules = Arc::new(rules);
        let execute = Arc::new(ExecuteService::new(
            sessions.clone(),
            rules.clone(),
            ExecLimits::of(&config),
        ));
        let executions = Arc::new(Executions::new(
            execute.clone(),
            ExecutionRecords::new(store.clone(), config.result_store_quota),
            config.execution_retention,
            config.execution_buffer_bytes,
            shutdown.clone(),
        ));
        let contexts = Arc::new(crate::service::contexts::Contexts::new(
            execute.clone(),
            executions.clone(),
            brig_core::store::ContextRecords::new(store.clone()),
        ));
        let readiness = Arc::new(Readiness::new(store.clone(), runtime.clone()));
        let idempotency = Arc::new(Idempotency::new(
            IdempotencyRecords::new(store, config.result_store_quota),
            config.idempotency_ttl,
        ));
        let limiter = Arc::new(RateLimiter::new(config.rate_limit_requests, config.rate_limit_window));
        let outbox = Arc::new(Outbox::new(config.http.max_unread_response_bytes));
        let auth_failures = Arc::new(AuthFailures::new(config.auth.failures_per_minute));
        spawn_pruner(&auth_failures, Duration::from_secs(60), &shutdown);
        spawn_pruner(&limiter, Duration::from_secs(60), &shutdown);
        let llm = config.llm.clone().map(|llm| Arc::new(Llm::new(llm)));
        let forwarder = config.node.as_ref().and_then(|node| {
            let registry = brig_core::node::Registry::new(sessions.store().clone(), node.loss_after);
            // Read at most twice a heartbeat: a loss is seen within the
            // loss timeout and half a beat.
            let fleet = brig_core::node::Fleet::new(registry, node.heartbeat / 2);
            crate::forward::Forwarder::new(node, fleet, config.max_exec_timeout).map(Arc::new)
        });
        AppState {
            auth: Arc::new(Authenticator::new(&config.auth)),
            config: Arc::new(config),
            sessions,
            runtime,
            readiness,
            limiter,
            outbox,
            auth_failures,
            execute,
            executions,
            contexts,
            idempotency,
            rules,
            llm,
            metrics: None,
            shutdown,
            tenant_separation: None,
            embedded_reaper: None,
            egress_dialer: None,
            snapshots,
            forwarder,
            room,
        }
    }

    /// What opening a session for `principal` draws on.
    pub fn session_setup(&self, principal: &crate::auth::Principal) -> crate::service::sessions::SessionSetup<'_> {
        crate::service::sessions::SessionSetup {
            sessions: &self.sessions,
            sandbox: &self.config.sandbox,
            egress: &self.config.egress,
            grant: self.egress_grant(principal),
            snapshots: &self.snapshots,
            max_ttl: self.config.max_session_ttl,
        }
    }

    /// A session's record as clients see it.
    pub fn session_view(&self, record: &brig_core::session::SessionRecord) -> crate::views::SessionView {
        crate::views::SessionView::of(record, &self.config.sandbox, self.config.session_ttl)
    }

    /// The egress patterns the policy file's roles let `principal`'s sessions
    /// be granted (`None`: the rules do not narrow `EGRESS_ALLOWED`).
    pub fn egress_grant(&self, principal: &crate::auth::Principal) -> Option<brig_core::egress::AllowList> {
        self.rules.current().egress_grant(principal.caller())
    }
}

/// How often expiring sessions (under `SESSION_EXPIRY=suspend`) and aged
/// containers are looked for, and how long before its expiry a session is
/// suspended: a pass is never missed, and the cleanup worker (which removes
/// what expired) never sees them first.
const EXPIRY_PASS: Duration = Duration::from_secs(5);
const EXPIRY_LEAD: Duration = Duration::from_secs(15);

/// The loops of suspension: expiring sessions suspended (`SESSION_EXPIRY=suspend`),
/// containers near `CLEANUP_MAX_CONTAINER_AGE_SECONDS` recycled (suspended,
/// resumed at next use), and unclaimed suspended workspaces removed (every
/// `CLEANUP_INTERVAL_SECONDS`). Replicas sharing a store may run them side by
/// side: each suspend holds its session's lock.
fn spawn_suspension(sessions: &Arc<Sessions>, config: &Config, shutdown: &Shutdown) {
    let (expiry, max_age) = (config.snapshots.expiry, config.cleanup.max_age);
    // Before the reaper's age limit, with time for a pass and the suspend.
    let recycle_lead = (max_age / 4).min(Duration::from_secs(60));
    let passes = sessions.clone();
    shutdown.spawn_loop(async move {
        loop {
            if expiry == SessionExpiry::Suspend {
                let sweep = passes.suspend_expiring(EXPIRY_LEAD).await;
                if sweep != Default::default() {
                    tracing::info!(target: "brig::cleanup", suspended = sweep.suspended, busy = sweep.busy, errors = sweep.errors, "expiring sessions suspended");
                }
            }
            let sweep = passes.recycle_aged(max_age, recycle_lead).await;
            if sweep != Default::default() {
                tracing::info!(target: "brig::cleanup", recycled = sweep.suspended, busy = sweep.busy, errors = sweep.errors, "aged containers recycled");
            }
            tokio::time::sleep(EXPIRY_PASS).await;
        }
    });
    let (sweeps, every) = (sessions.clone(), config.cleanup.interval);
    shutdown.spawn_loop(async move {
        loop {
            let sweep = sweeps.sweep_suspended().await;
            if sweep.removed > 0 || sweep.errors > 0 {
                tracing::info!(target: "brig::cleanup", removed = sweep.removed, errors = sweep.errors, "unclaimed suspended workspaces removed");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// The addresses of this host's interfaces: a sandbox never dials them
/// (unless `EGRESS_ALLOW_PRIVATE`), public ones included.
fn host_addresses() -> Vec<std::net::IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|interface| interface.ip()).collect(),
        Err(err) => {
            tracing::warn!(%err, "listing the host's addresses failed; only the refused ranges keep sandboxes off it");
            Vec::new()
        }
    }
}

/// Other builds' agent volumes younger than this are left alone: a process of
/// that build may have just published it and be about to mount it (one that
/// finds its volume gone publishes it again, so this only avoids churn).
const AGENT_VOLUME_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every `interval`, removes the agent volumes of other builds that no
/// container mounts (each build publishes into its own `brig-agent-<hash>`).
async fn remove_stale_agent_volumes(runtime: Arc<DockerRuntime>, interval: std::time::Duration) {
    loop {
        match runtime.remove_stale_agent_volumes(AGENT_VOLUME_GRACE).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(target: "brig::cleanup", volumes = ?removed, "removed unused agent volumes of other builds");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(target: "brig::cleanup", %err, "listing or removing old agent volumes failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Sessions a drained node suspends per heartbeat.
const DRAIN_PER_PASS: usize = 32;

/// Node mode: while this node is drained, its active sessions are suspended
/// (each resumes on the node that uses it next), a pass every heartbeat.
async fn drain(sessions: Arc<Sessions>, registry: brig_core::node::Registry, node: brig_core::config::NodeConfig) {
    loop {
        if registry.draining(&node.id).await.unwrap_or(false) {
            let sweep = sessions.suspend_all(DRAIN_PER_PASS).await;
            if sweep != Default::default() {
                tracing::info!(target: "brig::cleanup", suspended = sweep.suspended, busy = sweep.busy, errors = sweep.errors, "drained sessions suspended");
            }
        }
        tokio::time::sleep(node.heartbeat).await;
    }
}
