//! What every handler can reach.

use std::sync::Arc;
use std::time::Duration;

use brig_core::config::StoreConfig;
use brig_core::pool::WarmPool;
use brig_core::reaper::Reaper;
use brig_core::rules::LiveRules;
use brig_core::sessions::Sessions;
use brig_core::store::{MemoryStore, RedisStore, SessionStore};
use brig_core::{Config, DockerRuntime};

use crate::auth::Authenticator;
use crate::executions::Executions;
use crate::llm::Llm;
use crate::rate_limit::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub sessions: Arc<Sessions>,
    pub runtime: Arc<DockerRuntime>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    pub executions: Arc<Executions>,
    /// The command rules in force (the policy file's, reloaded on SIGHUP).
    pub rules: Arc<LiveRules>,
    /// The model behind `/generate`, if `LLM_BASE_URL` is set.
    pub llm: Option<Arc<Llm>>,
    /// The Prometheus recorder's handle, if this process installed one.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    /// Connects to the engine (negotiating the API version) and builds the
    /// store; Redis is connected on first use, so the API starts, and says it is
    /// not ready, while Redis is down. Publishing the agent is attempted here
    /// and retried by `/ready` until it succeeds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let docker = config.docker.connect().await.with_context(|| {
            format!(
                "cannot reach the Docker engine at {}",
                config.docker.host.as_deref().unwrap_or("the local socket")
            )
        })?;
        let runtime = Arc::new(DockerRuntime::new(docker, config.sandbox.clone()));
        if let Err(err) = runtime.publish_agent().await {
            tracing::error!(%err, "publishing the sandbox agent failed; /ready reports it until it works");
        }
        let store: Arc<dyn SessionStore> = match &config.store {
            StoreConfig::Redis { url } => {
                Arc::new(RedisStore::new(url, &config.sandbox.instance).context("REDIS_URL")?)
            }
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
        };
        let state = Self::from_parts(config, store, runtime);
        // Without Redis there is no cleanup worker that could see our sessions:
        // the same reaper runs in this process.
        if state.config.store == StoreConfig::Memory {
            let reaper = Reaper::new(
                state.sessions.store().clone(),
                state.runtime.clone(),
                state.config.cleanup.clone(),
                state.config.sandbox.warm_pool_size,
            );
            tokio::spawn(async move { reaper.run_until_stopped(std::future::pending()).await });
        }
        Ok(state)
    }

    /// Assembles the state from ready parts (tests use this with the memory store).
    pub fn from_parts(config: Config, store: Arc<dyn SessionStore>, runtime: Arc<DockerRuntime>) -> Self {
        let mut sessions = Sessions::new(store.clone(), runtime.clone(), config.session_ttl, config.quota);
        if config.sandbox.warm_pool_size > 0 {
            let pool = Arc::new(WarmPool::new(store, runtime.clone(), config.sandbox.warm_pool_size));
            sessions = sessions.with_pool(pool.clone());
            tokio::spawn(async move { pool.run_until_stopped(std::future::pending()).await });
        }
        let sessions = Arc::new(sessions);
        let executions = Arc::new(Executions::new(sessions.store().clone(), config.execution_retention));
        let limiter = Arc::new(RateLimiter::new(config.rate_limit_requests, config.rate_limit_window));
        limiter.spawn_pruner(Duration::from_secs(60));
        let llm = config.llm.clone().map(|llm| Arc::new(Llm::new(llm)));
        let rules = Arc::new(LiveRules::new(config.policy_path.clone(), config.rules.clone()));
        AppState {
            auth: Arc::new(Authenticator::new(&config.auth)),
            config: Arc::new(config),
            sessions,
            runtime,
            limiter,
            executions,
            rules,
            llm,
            metrics: None,
        }
    }
}
