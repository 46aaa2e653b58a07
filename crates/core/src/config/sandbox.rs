//! Configuration of the sandbox runtime and the engine connection.

use std::time::Duration;

use super::{parse_instance, parse_size, Env};
use crate::runtime::docker::spec::pinnable_bytes;

/// How to reach the Docker engine.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// `DOCKER_HOST`; `None` uses the local socket.
    pub host: Option<String>,
}

impl DockerConfig {
    pub fn from_env() -> Self {
        DockerConfig {
            host: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
        }
    }

    /// Connects and negotiates the API version (our engines speak 1.41, older
    /// than bollard's default).
    pub async fn connect(&self) -> Result<bollard::Docker, bollard::errors::Error> {
        self.client()?.negotiate_version().await
    }

    /// A client that has not talked to the engine yet (nothing is sent until
    /// first use; used where the engine is not needed, e.g. router tests).
    pub fn client(&self) -> Result<bollard::Docker, bollard::errors::Error> {
        match &self.host {
            Some(host) => bollard::Docker::connect_with_host(host),
            // Not connect_with_local_defaults: it reads DOCKER_HOST itself, and an
            // empty DOCKER_HOST (as in .env.example) would become the socket path.
            None => bollard::Docker::connect_with_socket("/var/run/docker.sock", 120, bollard::API_DEFAULT_VERSION),
        }
    }
}

/// What every sandbox container gets. Limits are fixed per deployment; nothing a
/// client sends can loosen them.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// `BRIG_INSTANCE`: label scope of this deployment.
    pub instance: String,
    /// `CONTAINER_IMAGE`.
    pub image: String,
    /// `CONTAINER_MEM_LIMIT` in bytes; also the memory+swap limit.
    pub memory_bytes: i64,
    /// `CONTAINER_CPU_LIMIT` in CPUs.
    pub cpus: f64,
    /// `CONTAINER_PIDS_LIMIT`.
    pub pids_limit: i64,
    /// `CONTAINER_TMP_SIZE` / `CONTAINER_WORKSPACE_SIZE`: tmpfs sizes in bytes.
    pub tmp_bytes: u64,
    pub workspace_bytes: u64,
    /// `CONTAINER_NOFILE`: open-file limit of every process in the sandbox.
    pub nofile: i64,
    /// `CONTAINER_FSIZE_BYTES`: largest file a process may write.
    pub fsize_bytes: i64,
    /// Extra time the API waits past a command's deadline before it gives up on
    /// the agent.
    pub agent_grace: Duration,
    /// `WARM_POOL_SIZE`: spares kept started and attached (0: no pool).
    pub warm_pool_size: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            instance: "default".into(),
            image: "brig-sandbox:latest".into(),
            memory_bytes: 256 << 20,
            cpus: 1.0,
            pids_limit: 128,
            tmp_bytes: 64 << 20,
            workspace_bytes: 128 << 20,
            nofile: 1024,
            fsize_bytes: 64 << 20,
            agent_grace: Duration::from_secs(5),
            warm_pool_size: 0,
        }
    }
}

impl SandboxConfig {
    /// Reads the variables above from the process environment.
    pub fn from_env() -> Result<Self, super::ConfigErrors> {
        let mut env = Env::process();
        let config = SandboxConfig::from(&mut env);
        env.finish(config)
    }

    /// Reads the variables above; unset ones keep their defaults.
    pub(super) fn from(env: &mut Env<'_>) -> Self {
        let defaults = SandboxConfig::default();
        let size = |name: &'static str| move |raw: &str| parse_size(name, raw).map_err(|e| e.message);
        let config = SandboxConfig {
            instance: env.parse("BRIG_INSTANCE", defaults.instance, |raw| {
                parse_instance(raw).map_err(|e| e.message)
            }),
            image: env.get("CONTAINER_IMAGE").unwrap_or(defaults.image),
            memory_bytes: env.parse(
                "CONTAINER_MEM_LIMIT",
                defaults.memory_bytes as u64,
                size("CONTAINER_MEM_LIMIT"),
            ) as i64,
            cpus: env.parse("CONTAINER_CPU_LIMIT", defaults.cpus, |raw| {
                raw.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c >= 0.01 && *c <= 1024.0)
                    .ok_or_else(|| "must be a number of CPUs, at least 0.01".into())
            }),
            pids_limit: env.parse("CONTAINER_PIDS_LIMIT", defaults.pids_limit, positive_i64),
            tmp_bytes: env.parse("CONTAINER_TMP_SIZE", defaults.tmp_bytes, size("CONTAINER_TMP_SIZE")),
            workspace_bytes: env.parse(
                "CONTAINER_WORKSPACE_SIZE",
                defaults.workspace_bytes,
                size("CONTAINER_WORKSPACE_SIZE"),
            ),
            nofile: env.parse("CONTAINER_NOFILE", defaults.nofile, positive_i64),
            fsize_bytes: env.parse(
                "CONTAINER_FSIZE_BYTES",
                defaults.fsize_bytes as u64,
                size("CONTAINER_FSIZE_BYTES"),
            ) as i64,
            agent_grace: defaults.agent_grace,
            warm_pool_size: env.parse("WARM_POOL_SIZE", defaults.warm_pool_size, |raw| {
                raw.parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 256)
                    .ok_or_else(|| "must be 0-256".into())
            }),
        };
        // tmpfs pages, their inodes and SysV segments are charged to the
        // container's memory and are not freed by killing a process: if they
        // could fill the memory limit, a tenant could leave the agent nothing
        // and get the whole sandbox OOM-killed.
        let pinnable = pinnable_bytes(&config);
        if (config.memory_bytes as u64) < pinnable + PROCESS_HEADROOM {
            env.error(
                "CONTAINER_MEM_LIMIT",
                format!(
                    "must exceed what the tmpfs mounts can pin (CONTAINER_TMP_SIZE + CONTAINER_WORKSPACE_SIZE + \
                     16m /dev/shm, plus 1/16 of that for inodes, plus 8m SysV shm) by at least 24m: \
                     {} MiB needed, {} MiB set",
                    (pinnable + PROCESS_HEADROOM).div_ceil(1 << 20),
                    config.memory_bytes >> 20
                ),
            );
        }
        config
    }
}

/// Memory kept free of tmpfs for the agent and the tenant's processes.
const PROCESS_HEADROOM: u64 = 24 << 20;

fn positive_i64(raw: &str) -> Result<i64, String> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "must be a positive integer".into())
}
