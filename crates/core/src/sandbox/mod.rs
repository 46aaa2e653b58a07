//! Sandboxes and the commands run in them, independent of the engine.

use std::collections::HashMap;
use std::time::Duration;

pub mod budget;
pub mod egress;

/// Labels every brig container carries (README: "Security model").
pub mod labels {
    pub const MANAGED: &str = "brig.managed";
    pub const INSTANCE: &str = "brig.instance";
    pub const OWNER: &str = "brig.owner";
    pub const SESSION: &str = "brig.session";
    pub const CREATED: &str = "brig.created";
    /// Set on warm-pool containers: started ahead, owned by no session until
    /// claimed (then renamed to the session's name; labels cannot change).
    pub const POOL: &str = "brig.pool";
    /// The identity of the store whose records the container belongs to: a
    /// reaper removes another store's containers only past the age limit.
    pub const STORE: &str = "brig.store";
    /// Its memory limit in bytes and its CPU limit in billionths of a CPU,
    /// which a node adds up to announce what its engine has committed.
    pub const MEMORY: &str = "brig.memory";
    pub const NANO_CPUS: &str = "brig.nano-cpus";
}

/// What to create: the sandbox of one session of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSandbox {
    /// A stable, non-reversible hash of the principal (never the principal itself).
    pub owner: String,
    /// The client's session id (already validated by the caller).
    pub session_id: String,
    /// Per-session departures from the configured image and limits, already
    /// checked against `ALLOWED_IMAGES` and clamped to the configured maxima.
    pub options: SandboxOptions,
    /// The identity of the store that records the session (`brig.store`;
    /// empty: none recorded).
    pub store: String,
}

/// A session's own image and limits; `None` is the configured default.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SandboxOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// The session's egress allow-list (patterns as given, already checked
    /// against `EGRESS_ALLOWED`); empty: only `EGRESS_DEFAULT`. It shapes no
    /// container: the dialer reads it from the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Environment variables every command of the session gets (a
    /// command's own `env` wins over them); already checked. Shapes no
    /// container either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

impl SandboxOptions {
    /// Nothing departs from the configuration.
    pub fn is_default(&self) -> bool {
        *self == SandboxOptions::default()
    }

    /// Whether a warm-pool spare (created with the default image and
    /// limits) fits: the allow-list and the environment are no property of
    /// the container.
    pub fn fits_spare(&self) -> bool {
        SandboxOptions {
            egress: Vec::new(),
            env: Vec::new(),
            ..self.clone()
        }
        .is_default()
    }
}

/// A sandbox as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Engine id of the container.
    pub id: String,
    /// Deterministic container name (see `SandboxRuntime::sandbox_name`), or a
    /// pool name while it is an unclaimed warm-pool spare.
    pub name: String,
    /// From the labels; empty for warm-pool containers (the store knows whose
    /// session a claimed one serves).
    pub owner: String,
    pub session_id: String,
    /// Started as a warm-pool spare (claimed or not).
    pub pool: bool,
    /// Unix seconds, from the `brig.created` label.
    pub created_unix: u64,
    /// Running (frozen or not).
    pub running: bool,
    /// Frozen (its node cut off from the store: see the node module).
    pub paused: bool,
    pub labels: HashMap<String, String>,
}

/// One command to run in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Executed directly, without a shell.
    pub argv: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    /// Bytes kept per stream.
    pub output_cap: u64,
    /// Keep the output in the agent for readers and take stdin and signals
    /// later: a durable execution (over the channel only).
    pub keep: Option<brig_protocol::Keep>,
}

impl ExecRequest {
    /// `argv` in `/workspace`, with a 30 s deadline and a 1 MiB cap per stream.
    pub fn new(argv: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            working_dir: "/workspace".into(),
            env: Vec::new(),
            stdin: Vec::new(),
            timeout: Duration::from_secs(30),
            output_cap: 1 << 20,
            keep: None,
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn output_cap(mut self, cap: u64) -> Self {
        self.output_cap = cap;
        self
    }

    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = dir.into();
        self
    }
}

/// A chunk of a running command's output, within the request's cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: brig_protocol::Stream,
    pub data: Vec<u8>,
}

/// How a caller follows and steers a running command, beyond waiting for it.
#[derive(Debug, Clone, Default)]
pub struct ExecHooks {
    /// Cancelling it kills the command's process tree; the outcome then says
    /// `cancelled`. (Dropping the exec future kills it too, without an outcome.)
    pub cancel: Option<tokio_util::sync::CancellationToken>,
    /// Receives the output as it is produced, up to the cap per stream. Bounded
    /// by the caps, so unbounded here costs at most twice the cap.
    pub output: Option<tokio::sync::mpsc::UnboundedSender<OutputChunk>>,
}

impl ExecHooks {
    pub(crate) fn emit(&self, stream: brig_protocol::Stream, data: &[u8]) {
        if let (Some(output), false) = (&self.output, data.is_empty()) {
            let _ = output.send(OutputChunk {
                stream,
                data: data.to_vec(),
            });
        }
    }

    pub(crate) async fn cancelled(&self) {
        match &self.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// What came of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit code a shell would report: the command's own, 128 + signal when
    /// killed, and 124 when the deadline killed it (as timeout(1) does).
    pub exit_code: i32,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The sandbox's OOM killer struck while it ran, and it died of SIGKILL.
    pub oom_killed: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Bytes the command wrote, including those dropped past the cap.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Spawn to exit, as measured by the agent.
    pub duration: Duration,
}

impl ExecOutcome {
    /// What a shell reports when it cannot start a command: exit 127 and a
    /// message on stderr.
    pub fn spawn_failure(message: &str) -> Self {
        let stderr = format!("brig: {message}\n").into_bytes();
        ExecOutcome {
            exit_code: 127,
            signal: None,
            timed_out: false,
            cancelled: false,
            oom_killed: false,
            stdout_bytes: 0,
            stderr_bytes: stderr.len() as u64,
            stdout: Vec::new(),
            stderr,
            stdout_truncated: false,
            stderr_truncated: false,
            duration: Duration::ZERO,
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}
