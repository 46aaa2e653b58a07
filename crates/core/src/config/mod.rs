//! Typed configuration, parsed once from the environment (README's table;
//! seed-compatible names first) and validated at start-up: every invalid value
//! is reported by its variable name.
//!
//! This file assembles [`Config`] (brig-api) and [`WorkerConfig`] (the cleanup
//! worker); each concern parses its own variables:
//!
//! - `env`: [`Env`] (every bad value reported at once) and the shared parsers.
//! - `sandbox`: the container limits and the engine connection ([`DockerConfig`]).
//! - `auth`: JWT secret and API keys; `llm`: the model of `/generate`.
//! - `store`, `cleanup`, `metrics`: Redis or memory, the reaper, who may scrape.
//! - `http`: the server's timeouts and connection caps.
//! - `egress`: what sessions may reach ([`EgressConfig`]).
//! - `snapshot`: where workspaces are kept, and what expiry does ([`SnapshotConfig`]).

mod auth;
mod cleanup;
mod egress;
mod env;
mod http;
mod llm;
mod metrics;
mod node;
mod sandbox;
mod snapshot;
mod store;

use std::time::Duration;

pub use self::auth::{ApiKey, AuthConfig, MIN_KEY_LEN};
pub use self::cleanup::CleanupConfig;
pub use self::egress::EgressConfig;
pub use self::env::{parse_instance, parse_size, ConfigError, ConfigErrors, Env};
pub(crate) use self::env::{positive, seconds};
pub use self::http::HttpConfig;
pub use self::llm::LlmConfig;
pub use self::metrics::MetricsConfig;
pub use self::node::NodeConfig;
pub use self::sandbox::{DockerConfig, OptionsError, SandboxConfig};
pub use self::snapshot::{S3Config, SessionExpiry, SnapshotConfig, SnapshotLocation};
pub use self::store::StoreConfig;
use crate::policy::{CommandPolicy, Languages};

/// Limits on live sessions (pending ones count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_owner: u32,
    pub total: u32,
}

/// What brig-cleanup-worker needs: no auth, no API.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub store: StoreConfig,
    /// `METRICS_TOKEN` / `METRICS_PORT`: the worker serves its counters only on the port.
    pub metrics: MetricsConfig,
    /// The metrics port's connection bounds (`HTTP_*`, `MAX_CONNECTIONS*`).
    pub http: HttpConfig,
    pub cleanup: CleanupConfig,
    pub sandbox: SandboxConfig,
    pub docker: DockerConfig,
    /// The node whose engine this worker reaps (`None`: single host).
    pub node: Option<NodeConfig>,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        let mut env = Env::process();
        let config = WorkerConfig {
            store: StoreConfig::from(&mut env),
            metrics: MetricsConfig::from_env(&mut env),
            http: HttpConfig::from(&mut env),
            cleanup: CleanupConfig::from(&mut env),
            sandbox: SandboxConfig::from(&mut env),
            docker: DockerConfig::from(&mut env),
            node: None,
        };
        let config = WorkerConfig {
            node: NodeConfig::from_env(&mut env, &config.store, false),
            ..config
        };
        if config.store == StoreConfig::Memory {
            env.error(
                "SESSION_STORE",
                "the cleanup worker needs Redis; with memory, brig-api reaps in-process",
            );
        }
        env.finish(config)
    }
}

/// The whole service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Timeouts, connection caps and unread-answer bytes of the HTTP server.
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    /// `METRICS_TOKEN` / `METRICS_PORT`: who may read `/metrics`.
    pub metrics: MetricsConfig,
    /// The LLM of `/generate`; `None` (the endpoints answer 404) unless `LLM_BASE_URL` is set.
    pub llm: Option<LlmConfig>,
    pub rate_limit_requests: u32,
    pub rate_limit_window: Duration,
    pub session_ttl: Duration,
    /// `MAX_SESSION_TTL_SECONDS`: the longest idle TTL a session may ask for
    /// (`ttl_seconds`).
    pub max_session_ttl: Duration,
    pub default_exec_timeout: Duration,
    pub max_exec_timeout: Duration,
    /// Bytes kept per stream, per command.
    pub max_output_bytes: u64,
    /// `EXECUTION_RESULT_TTL_SECONDS`: how long `/executions` results are kept
    /// after they finish.
    pub execution_retention: Duration,
    /// `EXECUTION_BUFFER_BYTES`: output the sandbox's agent keeps per stream
    /// of each execution, for `/executions/{id}/output` and `/events`.
    pub execution_buffer_bytes: u64,
    /// `IDEMPOTENCY_TTL_SECONDS`: how long an `Idempotency-Key`'s answer is replayed.
    pub idempotency_ttl: Duration,
    /// `RESULT_STORE_QUOTA_BYTES`: stored bytes of kept results (executions,
    /// idempotent answers) per principal; past it, its soonest to expire are evicted.
    pub result_store_quota: u64,
    pub commands: CommandPolicy,
    /// `ALLOWED_COMMANDS_PATH`: the policy file that supersedes `ALLOWED_COMMANDS`
    /// (loaded, and reloaded on SIGHUP, by `policy::rules::LiveRules`).
    pub policy_path: Option<std::path::PathBuf>,
    /// `LANGUAGES`: the interpreters `{"code", "language"}` requests use.
    pub languages: Languages,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    pub quota: Quota,
    pub cleanup: CleanupConfig,
    /// `SHUTDOWN_GRACE_SECONDS`: after SIGTERM, how long in-flight requests may
    /// still run before the process exits.
    pub shutdown_grace: Duration,
    pub sandbox: SandboxConfig,
    pub docker: DockerConfig,
    pub egress: EgressConfig,
    pub snapshots: SnapshotConfig,
    /// `BRIG_NODE_ID` and the rest: this process as one of several nodes (`None`: single host).
    pub node: Option<NodeConfig>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from(Env::process())
    }

    pub fn from(mut env: Env<'_>) -> Result<Self, ConfigErrors> {
        let host = env.get("HOST").unwrap_or_else(|| "0.0.0.0".into());
        let port = env.parse("PORT", 8000u16, |raw| {
            raw.parse().map_err(|_| "must be a port number".into())
        });
        let http = HttpConfig::from(&mut env);
        let store = StoreConfig::from(&mut env);
        let auth = AuthConfig::from_env(&mut env);
        let llm = LlmConfig::from_env(&mut env);
        let metrics = MetricsConfig::from_env(&mut env);
        let rate_limit_requests = env.parse("RATE_LIMIT_REQUESTS", 100u32, positive);
        let rate_limit_window = env.parse("RATE_LIMIT_WINDOW_SECONDS", Duration::from_secs(60), seconds);
        let session_ttl = env.parse("SESSION_TTL_SECONDS", Duration::from_secs(600), seconds);
        let max_session_ttl = env.parse("MAX_SESSION_TTL_SECONDS", Duration::from_secs(86400), seconds);
        if session_ttl > max_session_ttl {
            env.error("SESSION_TTL_SECONDS", "must not exceed MAX_SESSION_TTL_SECONDS");
        }
        let default_exec_timeout = env.parse("DEFAULT_EXEC_TIMEOUT_SECONDS", Duration::from_secs(30), seconds);
        let max_exec_timeout = env.parse("MAX_EXEC_TIMEOUT_SECONDS", Duration::from_secs(300), seconds);
        if default_exec_timeout > max_exec_timeout {
            env.error(
                "DEFAULT_EXEC_TIMEOUT_SECONDS",
                "must not exceed MAX_EXEC_TIMEOUT_SECONDS",
            );
        }
        let max_output_bytes = env.parse("MAX_OUTPUT_BYTES", 1u64 << 20, |raw| {
            positive::<u64>(raw).and_then(|n| {
                if n <= 16 << 20 {
                    Ok(n)
                } else {
                    Err("must be at most 16777216".into())
                }
            })
        });
        let idempotency_ttl = env.parse("IDEMPOTENCY_TTL_SECONDS", Duration::from_secs(86400), seconds);
        let execution_retention = env.parse("EXECUTION_RESULT_TTL_SECONDS", Duration::from_secs(3600), seconds);
        let execution_buffer_bytes = env.parse("EXECUTION_BUFFER_BYTES", 8u64 << 20, |raw| {
            let bytes = parse_size("EXECUTION_BUFFER_BYTES", raw).map_err(|e| e.message)?;
            if (64 << 10..=128 << 20).contains(&bytes) {
                Ok(bytes)
            } else {
                Err("must be between 64k and 128m".into())
            }
        });
        let result_store_quota = env.parse("RESULT_STORE_QUOTA_BYTES", 32u64 << 20, |raw| {
            parse_size("RESULT_STORE_QUOTA_BYTES", raw).map_err(|e| e.message)
        });
        let commands = CommandPolicy::from_list(
            &env.get("ALLOWED_COMMANDS")
                .unwrap_or_else(|| "ls,cat,echo,pwd,id,whoami,sh,python3".into()),
        );
        let policy_path = env.get("ALLOWED_COMMANDS_PATH").map(std::path::PathBuf::from);
        if policy_path.is_none() && commands.allowed().next().is_none() {
            env.error("ALLOWED_COMMANDS", "allows nothing");
        }
        let languages = env.parse(
            "LANGUAGES",
            Languages::parse("python=python3 -,sh=sh -s").unwrap_or_default(),
            Languages::parse,
        );
        let max_body_bytes = env.parse("MAX_REQUEST_BYTES", 2usize << 20, positive);
        let quota = Quota {
            per_owner: env.parse("MAX_SESSIONS_PER_USER", 10u32, positive),
            total: env.parse("MAX_SESSIONS", 100u32, positive),
        };
        let cleanup = CleanupConfig::from(&mut env);
        let shutdown_grace = env.parse(
            "SHUTDOWN_GRACE_SECONDS",
            max_exec_timeout + Duration::from_secs(5),
            seconds,
        );
        let sandbox = SandboxConfig::from(&mut env);
        let docker = DockerConfig::from(&mut env);
        let egress = EgressConfig::from(&mut env);
        let snapshots = SnapshotConfig::from(&mut env);
        let node = NodeConfig::from_env(&mut env, &store, true);
        let config = Config {
            host,
            port,
            http,
            store,
            auth,
            metrics,
            llm,
            rate_limit_requests,
            rate_limit_window,
            session_ttl,
            max_session_ttl,
            default_exec_timeout,
            max_exec_timeout,
            max_output_bytes,
            execution_retention,
            execution_buffer_bytes,
            idempotency_ttl,
            result_store_quota,
            commands,
            policy_path,
            languages,
            max_body_bytes,
            quota,
            cleanup,
            shutdown_grace,
            sandbox,
            docker,
            egress,
            snapshots,
            node,
        };
        env.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_value_is_reported_by_name() {
        let vars = [
            ("PORT", "99999"),
            ("SESSION_STORE", "etcd"),
            ("JWT_SECRET", "short"),
            ("RATE_LIMIT_REQUESTS", "0"),
            ("CONTAINER_MEM_LIMIT", "lots"),
            ("BRIG_INSTANCE", "Prod!"),
        ];
        let env = Env::from_fn(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        let errors = Config::from(env).unwrap_err().0;
        let named: Vec<&str> = errors.iter().map(|e| e.variable).collect();
        for variable in [
            "PORT",
            "SESSION_STORE",
            "JWT_SECRET",
            "RATE_LIMIT_REQUESTS",
            "CONTAINER_MEM_LIMIT",
            "BRIG_INSTANCE",
        ] {
            assert!(named.contains(&variable), "{variable} not reported: {errors:?}");
        }
    }

    #[test]
    fn tmpfs_mounts_must_leave_memory_for_processes() {
        let vars = [("API_KEYS", "k-0123456789abcdef"), ("CONTAINER_MEM_LIMIT", "200m")];
        let env = Env::from_fn(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        let errors = Config::from(env).unwrap_err();
        assert!(
            errors.to_string().contains("CONTAINER_MEM_LIMIT: must exceed"),
            "{errors}"
        );
        let vars = [
            ("API_KEYS", "k-0123456789abcdef"),
            ("CONTAINER_MEM_LIMIT", "200m"),
            ("CONTAINER_WORKSPACE_SIZE", "64m"),
        ];
        let env = Env::from_fn(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        assert!(Config::from(env).is_ok());
    }

    #[test]
    fn refuses_to_start_without_auth_or_with_the_placeholder_secret() {
        let none = Config::from(Env::from_fn(|_| None)).unwrap_err();
        assert!(none.to_string().contains("no authentication configured"), "{none}");
        let placeholder = Config::from(Env::from_fn(|name| {
            (name == "JWT_SECRET").then(|| "change-me-in-production".to_string())
        }))
        .unwrap_err();
        assert!(placeholder.to_string().contains("placeholder"), "{placeholder}");
    }

    #[test]
    fn seed_style_settings_parse() {
        let vars = [
            ("API_KEYS", "dev-key-0123456789, ci:ci-key-0123456789"),
            ("REDIS_HOST", "redis"),
            ("ALLOWED_COMMANDS", "ls,echo"),
        ];
        let env = Env::from_fn(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        let config = Config::from(env).unwrap();
        assert_eq!(
            config.store,
            StoreConfig::Redis {
                url: "redis://redis:6379/".into()
            }
        );
        let principals: Vec<&str> = config.auth.api_keys.iter().map(|k| k.principal.as_str()).collect();
        assert_eq!(principals.len(), 2);
        assert!(principals[0].starts_with("key-") && !principals[0].contains("dev-key"));
        assert_eq!(principals[1], "ci");
        assert_eq!(config.port, 8000);
        assert_eq!(config.max_output_bytes, 1 << 20);
    }
}
