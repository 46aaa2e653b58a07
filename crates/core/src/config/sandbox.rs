//! Configuration of the sandbox runtime and the engine connection.

use std::time::Duration;

use super::{parse_instance, parse_size, positive, Env};
use crate::sandbox::budget::{pinnable_bytes, PROCESS_HEADROOM};
use crate::sandbox::SandboxOptions;

/// How to reach the Docker engine.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// `DOCKER_HOST`; `None` uses the local socket.
    pub host: Option<String>,
}

impl DockerConfig {
    /// `DOCKER_HOST`; unset or blank: the local socket.
    pub fn from(env: &mut Env<'_>) -> Self {
        DockerConfig {
            host: env.get("DOCKER_HOST"),
        }
    }

    /// [`from`](Self::from) the process environment (tools and tests).
    pub fn from_env() -> Self {
        Self::from(&mut Env::process())
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
    /// `ALLOWED_IMAGES`: images a session may ask for (the default image always).
    pub allowed_images: Vec<String>,
    /// `CONTAINER_RUNTIME`: the OCI runtime sandboxes run under (`runc`, `runsc`, ...).
    pub runtime: String,
    /// `ALLOWED_RUNTIMES`: runtimes a session may ask for (the default always).
    pub allowed_runtimes: Vec<String>,
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
            allowed_images: Vec::new(),
            runtime: "runc".into(),
            allowed_runtimes: Vec::new(),
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
        let workspace_bytes = env.parse(
            "CONTAINER_WORKSPACE_SIZE",
            defaults.workspace_bytes,
            size("CONTAINER_WORKSPACE_SIZE"),
        );
        let config = SandboxConfig {
            instance: env.parse("BRIG_INSTANCE", defaults.instance, |raw| {
                parse_instance(raw).map_err(|e| e.message)
            }),
            image: env.get("CONTAINER_IMAGE").unwrap_or(defaults.image),
            allowed_images: list(env.get("ALLOWED_IMAGES")),
            runtime: env.parse("CONTAINER_RUNTIME", defaults.runtime, |raw| {
                is_runtime_name(raw)
                    .then(|| raw.to_string())
                    .ok_or_else(|| "a runtime name is letters, digits and ._-".into())
            }),
            allowed_runtimes: list(env.get("ALLOWED_RUNTIMES")),
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
            pids_limit: env.parse("CONTAINER_PIDS_LIMIT", defaults.pids_limit, positive::<i64>),
            tmp_bytes: env.parse("CONTAINER_TMP_SIZE", defaults.tmp_bytes, size("CONTAINER_TMP_SIZE")),
            workspace_bytes,
            nofile: env.parse("CONTAINER_NOFILE", defaults.nofile, positive::<i64>),
            // By default a file may be as large as the workspace holds.
            fsize_bytes: env.parse(
                "CONTAINER_FSIZE_BYTES",
                (defaults.fsize_bytes as u64).max(workspace_bytes),
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
        let pinnable = pinnable_bytes(config.tmp_bytes, config.workspace_bytes);
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

fn list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

fn is_runtime_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The fewest CPUs a session may ask for (unless `CONTAINER_CPU_LIMIT` is
/// lower): a tenth. brig's own work in a session (every file transfer,
/// snapshot, suspend and resume) starts an engine exec whose runc set-up is
/// charged to the session's cgroup; at a hundredth of a CPU each took seconds
/// (over ten under load), holding the session's lock.
pub const MIN_SESSION_NANO_CPUS: i64 = 100_000_000;

/// Why a session's requested image, runtime or limits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("image {0:?} is not in ALLOWED_IMAGES")]
    ImageNotAllowed(String),
    #[error("runtime {0:?} is not in ALLOWED_RUNTIMES")]
    RuntimeNotAllowed(String),
    #[error("memory_limit: {0}")]
    Memory(String),
    #[error("cpu_limit must be a positive number of CPUs")]
    Cpu,
}

impl SandboxConfig {
    /// The runtimes sessions may ask for: `CONTAINER_RUNTIME`, then `ALLOWED_RUNTIMES`.
    pub fn runtimes(&self) -> Vec<String> {
        std::iter::once(self.runtime.clone())
            .chain(self.allowed_runtimes.iter().cloned())
            .collect()
    }

    /// The images sessions may ask for: `CONTAINER_IMAGE`, then `ALLOWED_IMAGES`.
    pub fn images(&self) -> Vec<String> {
        std::iter::once(self.image.clone())
            .chain(self.allowed_images.iter().cloned())
            .collect()
    }

    /// A sandbox's memory (bytes) and CPU (billionths of a CPU) limits with
    /// `options`: its own, else the configured ones.
    pub fn limits(&self, options: &SandboxOptions) -> (i64, i64) {
        (
            options.memory_bytes.unwrap_or(self.memory_bytes),
            options.nano_cpus.unwrap_or((self.cpus * 1e9) as i64),
        )
    }

    /// A session's own image and limits: the image must be the default or in
    /// `ALLOWED_IMAGES`; memory and CPUs are clamped to the configured limits
    /// (the maxima), memory to what the tmpfs mounts need and CPUs to
    /// [`MIN_SESSION_NANO_CPUS`] (the minima).
    pub fn session_options(
        &self,
        image: Option<&str>,
        runtime: Option<&str>,
        memory_limit: Option<&str>,
        cpu_limit: Option<f64>,
    ) -> Result<SandboxOptions, OptionsError> {
        let runtime = match runtime {
            None => None,
            Some(runtime) if runtime == self.runtime => None,
            Some(runtime) if self.allowed_runtimes.iter().any(|allowed| allowed == runtime) => {
                Some(runtime.to_string())
            }
            Some(runtime) => return Err(OptionsError::RuntimeNotAllowed(runtime.to_string())),
        };
        let image = match image {
            None => None,
            Some(image) if image == self.image => None,
            Some(image) if self.allowed_images.iter().any(|allowed| allowed == image) => Some(image.to_string()),
            Some(image) => return Err(OptionsError::ImageNotAllowed(image.to_string())),
        };
        let memory_bytes = match memory_limit {
            None => None,
            Some(raw) => {
                let asked = parse_size("memory_limit", raw).map_err(|err| OptionsError::Memory(err.message))?;
                let floor = pinnable_bytes(self.tmp_bytes, self.workspace_bytes) + PROCESS_HEADROOM;
                Some(asked.clamp(floor, self.memory_bytes as u64) as i64).filter(|m| *m != self.memory_bytes)
            }
        };
        let nano_cpus = match cpu_limit {
            None => None,
            Some(cpus) if cpus.is_finite() && cpus > 0.0 => {
                let max = (self.cpus * 1e9) as i64;
                let floor = MIN_SESSION_NANO_CPUS.min(max);
                Some(((cpus * 1e9) as i64).clamp(floor, max)).filter(|n| *n != max)
            }
            Some(_) => return Err(OptionsError::Cpu),
        };
        Ok(SandboxOptions {
            image,
            runtime,
            memory_bytes,
            nano_cpus,
            egress: Vec::new(),
            env: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(config: &SandboxConfig, asked: f64) -> Option<i64> {
        config.session_options(None, None, None, Some(asked)).unwrap().nano_cpus
    }

    #[test]
    fn a_session_gets_at_least_a_tenth_of_a_cpu_and_at_most_the_configured_limit() {
        let config = SandboxConfig::default();
        assert_eq!(cpus(&config, 0.01), Some(100_000_000));
        assert_eq!(cpus(&config, 0.1), Some(100_000_000));
        assert_eq!(cpus(&config, 0.5), Some(500_000_000));
        // The configured limit is the default: nothing of the session's own.
        assert_eq!(cpus(&config, 1.0), None);
        assert_eq!(cpus(&config, 64.0), None);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                config.session_options(None, None, None, Some(bad)),
                Err(OptionsError::Cpu)
            );
        }
        // An operator's limit below the floor is the floor.
        let small = SandboxConfig {
            cpus: 0.05,
            ..SandboxConfig::default()
        };
        assert_eq!(cpus(&small, 0.01), None);
    }
}
