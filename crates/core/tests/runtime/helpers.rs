//! Shared set-up: a runtime scoped to a random `BRIG_INSTANCE`, removed on drop.

use std::sync::Arc;
use std::time::Duration;

use brig_core::config::{parse_instance, DockerConfig, SandboxConfig};
use brig_core::{CreateSandbox, DockerRuntime, ExecOutcome, ExecRequest, SandboxInfo, SandboxRuntime};

/// The image the tests run: built by images/sandbox-test/build.sh.
pub fn test_image() -> String {
    std::env::var("BRIG_TEST_IMAGE").unwrap_or_else(|_| "brig-sandbox-test:latest".into())
}

/// A configuration for tests: the test image, a fresh instance, small limits.
pub fn test_config() -> SandboxConfig {
    let suffix: u32 = rand::random();
    SandboxConfig {
        instance: parse_instance(&format!("test-{suffix:08x}")).unwrap(),
        image: test_image(),
        memory_bytes: 128 << 20,
        pids_limit: 64,
        tmp_bytes: 16 << 20,
        workspace_bytes: 32 << 20,
        ..SandboxConfig::default()
    }
}

/// [`test_config`] with sandboxes under the OCI runtime `runtime`.
pub fn test_config_under(runtime: &str) -> SandboxConfig {
    SandboxConfig {
        runtime: runtime.into(),
        ..test_config()
    }
}

/// Whether the tests run under gVisor, whose kernel differs in what it shows
/// and enforces (README, gVisor).
pub fn gvisor(runtime: &str) -> bool {
    brig_core::runtime::docker::spec::is_gvisor(runtime)
}

/// A runtime whose containers are all removed when it is dropped.
pub struct TestRuntime {
    pub runtime: Arc<DockerRuntime>,
    pub instance: String,
}

impl TestRuntime {
    pub async fn new() -> Self {
        Self::with_config(test_config()).await
    }

    /// A runtime whose sandboxes run under the OCI runtime `runtime`; fails
    /// with instructions when the engine does not know it (no silent pass).
    pub async fn under(runtime: &str) -> Self {
        let t = Self::with_config(test_config_under(runtime)).await;
        let known = t.runtime.has_runtime(runtime).await.expect("docker info");
        assert!(
            known,
            "the Docker engine has no runtime {runtime:?}: scripts/test.sh installs runsc (apt-get) and \
             registers it in /etc/docker/daemon.json, which needs root and a writable daemon config"
        );
        t
    }

    pub async fn with_config(config: SandboxConfig) -> Self {
        Self::with_agent(config, agent()).await
    }

    /// A runtime that publishes `agent` (another build's, say).
    pub async fn with_agent(config: SandboxConfig, agent: brig_core::agent_binary::AgentBinary) -> Self {
        let instance = config.instance.clone();
        let runtime = DockerRuntime::connect(&DockerConfig::from_env(), config, agent)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot set up the Docker runtime ({err}). These tests need a running Docker \
                 engine and the image {} (build it with images/sandbox-test/build.sh)",
                    test_image()
                )
            });
        TestRuntime {
            runtime: Arc::new(runtime),
            instance,
        }
    }

    /// A second runtime over the same instance, as after an API restart.
    pub async fn restarted(&self) -> Arc<DockerRuntime> {
        let runtime = DockerRuntime::connect(&DockerConfig::from_env(), self.runtime.config().clone(), agent())
            .await
            .expect("second runtime");
        Arc::new(runtime)
    }

    pub async fn sandbox(&self, session: &str) -> SandboxInfo {
        self.runtime
            .create(&CreateSandbox {
                owner: "owner-hash".into(),
                session_id: session.into(),
                options: Default::default(),
                store: String::new(),
            })
            .await
            .expect("create sandbox")
            .0
    }

    /// Runs `sh -c script` with a 10 s deadline.
    pub async fn sh(&self, sandbox: &SandboxInfo, script: &str) -> ExecOutcome {
        self.run(
            sandbox,
            ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(10)),
        )
        .await
    }

    pub async fn run(&self, sandbox: &SandboxInfo, request: ExecRequest) -> ExecOutcome {
        self.runtime.exec(&sandbox.id, request).await.expect("exec")
    }

    /// Processes in the sandbox other than the agent and `ps` itself, as `pid args`.
    pub async fn stray_processes(&self, sandbox: &SandboxInfo) -> Vec<String> {
        let ps = self.run(sandbox, ExecRequest::new(["ps", "-o", "pid,args"])).await;
        ps.stdout_str()
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|line| !line.ends_with("brig-agent serve") && !line.ends_with("ps -o pid,args"))
            .map(String::from)
            .collect()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        remove_instance_containers(&self.instance);
    }
}

/// Removes every container labelled with `instance`, through the docker CLI
/// (synchronous, so it works from Drop even while a test is unwinding).
pub fn remove_instance_containers(instance: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=brig.instance={instance}")])
        .output();
    if let Ok(listed) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

/// Resident set size of this test process, in KiB.
pub fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A `/proc/self/status` field as printed (e.g. "CapEff" → "0000000000000000").
pub fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

/// The agent the runtime publishes into sandboxes.
pub fn agent() -> brig_core::agent_binary::AgentBinary {
    brig_core::agent_binary::AgentBinary::new(brig_agent_embed::AGENT_BINARY)
}
