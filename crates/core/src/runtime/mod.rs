//! The seam between brig and whatever runs sandboxes.

pub mod docker;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod transfer;

use std::time::Duration;

use async_trait::async_trait;
use brig_protocol::{FileReply, FileRequest};

use crate::sandbox::{CreateSandbox, ExecHooks, ExecOutcome, ExecRequest, SandboxInfo};

/// The cause of a failure, as reported by whatever runs sandboxes (the engine
/// client's error, or our own account of a step).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached or answered with a server error.
    #[error("container engine unavailable: {0}")]
    EngineUnavailable(#[source] Cause),
    /// The engine refused an operation (a client-side problem of ours).
    #[error("container engine refused the request: {0}")]
    Engine(#[source] Cause),
    /// The sandbox image is not present on the engine.
    #[error("sandbox image {0} not found on the engine")]
    ImageMissing(String),
    /// The sandbox does not exist (removed, or never created).
    #[error("sandbox not found")]
    SandboxNotFound,
    /// The sandbox stopped or was removed while the request was in flight.
    #[error("sandbox channel closed: the container stopped or was removed")]
    ChannelClosed,
    /// The agent did not answer within the command's deadline plus grace.
    #[error("sandbox agent did not answer in time")]
    AgentUnresponsive,
    /// The agent sent bytes that are not a valid frame, or an unexpected one.
    #[error("sandbox agent protocol violation: {0}")]
    Protocol(String),
    /// The command could not be started (not found, not executable, bad cwd).
    #[error("command could not be started: {0}")]
    SpawnFailed(String),
    /// The agent refused the request as invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Too many commands are running in this sandbox.
    #[error("sandbox busy: {0}")]
    Busy(String),
    /// A file operation's target does not exist.
    #[error("{0}")]
    FileNotFound(String),
    /// A file operation does not apply (symlink on the way, not a regular file, ...).
    #[error("{0}")]
    FileRefused(String),
    /// A file is too large to transfer, or the sandbox is out of space.
    #[error("{0}")]
    FileTooLarge(String),
    /// The runtime cannot create sandboxes now: what is missing.
    #[error("{0}")]
    NotReady(String),
    /// The sandbox keeps no execution of this key.
    #[error("no such execution in the sandbox")]
    ExecutionNotFound,
    /// The execution has ended, or its stdin was closed.
    #[error("{0}")]
    NotRunning(String),
    /// The output offset asked for has left the execution's buffer.
    #[error("{0}")]
    CursorExpired(String),
}

/// A request about a kept (durable) execution in a sandbox.
#[derive(Debug, Clone)]
pub enum Control {
    /// Its output from the given offsets on (waiting a bounded time for more).
    Read(brig_protocol::ReadRequest),
    /// Bytes for its stdin pipe, then its end if `close`; answered once the
    /// command took them all.
    Stdin { key: String, data: Vec<u8>, close: bool },
    /// A signal for its process group.
    Signal { key: String, signal: i32 },
    /// A new size for its terminal.
    Resize { key: String, size: brig_protocol::TtySize },
}

impl Control {
    /// How long the agent may take to answer.
    pub fn wait(&self) -> Duration {
        match self {
            Control::Read(read) => Duration::from_millis(u64::from(read.wait_ms)) + Duration::from_secs(10),
            Control::Stdin { .. } => Duration::from_secs(30),
            Control::Signal { .. } | Control::Resize { .. } => Duration::from_secs(10),
        }
    }
}

/// What a [`Control`] request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    Read(brig_protocol::ReadReply),
    Done,
    /// Stdin taken into the agent's queue, not yet by the command.
    Queued,
}

/// An engine's host as placement sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub memory_bytes: u64,
    /// In billionths of a CPU.
    pub nano_cpus: u64,
    /// The images asked about that the engine holds.
    pub images: Vec<String>,
}

/// Creates, runs commands in, and removes sandboxes.
#[async_trait]
pub trait SandboxRuntime: Send + Sync {
    /// Creates and starts the sandbox of `request` and opens its channel. If the
    /// sandbox already exists (created concurrently, by us or another replica),
    /// that one is returned, with `false`: "created by this call" is `true` only
    /// for the caller whose creation the engine accepted.
    async fn create(&self, request: &CreateSandbox) -> Result<(SandboxInfo, bool), RuntimeError>;

    /// Creates and starts a warm-pool spare: hardened like any sandbox, channel
    /// open, owned by no session yet, labelled with the `store` identity.
    async fn create_spare(&self, store: &str) -> Result<SandboxInfo, RuntimeError>;

    /// Whether `sandbox` is an unclaimed spare of this runtime's pool.
    fn is_spare(&self, sandbox: &SandboxInfo) -> bool;

    /// Turns spare `spare` into the sandbox of `request` (it takes the session's
    /// name; a container already holding that name is an orphan and is removed).
    /// The caller must own the spare exclusively (the store's pool set hands each
    /// out once) and hold the session's creation lock. `SandboxNotFound` if the
    /// spare is gone.
    async fn claim(&self, spare: &str, request: &CreateSandbox) -> Result<(), RuntimeError>;

    /// The engine name the sandbox of `request` gets: deterministic, so that
    /// concurrent creations collide instead of duplicating.
    fn sandbox_name(&self, request: &CreateSandbox) -> String;

    /// Runs one command in sandbox `id` (engine id or name).
    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        self.exec_with(id, request, ExecHooks::default()).await
    }

    /// [`exec`](Self::exec), streaming output to and taking cancellation from `hooks`.
    async fn exec_with(&self, id: &str, request: ExecRequest, hooks: ExecHooks) -> Result<ExecOutcome, RuntimeError>;

    /// Runs one command without this process's channel: for a sandbox whose
    /// channel another API process owns (one writer per channel). Slower (an
    /// engine exec per command) but with the same deadline, caps, kill, output
    /// streaming and cancellation.
    async fn exec_via_engine(
        &self,
        id: &str,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<ExecOutcome, RuntimeError>;

    /// A request about a kept execution of sandbox `id`, over this
    /// process's channel (kept executions live in the agent that runs them).
    async fn control(&self, id: &str, control: Control) -> Result<ControlReply, RuntimeError>;

    /// [`control`](Self::control) for a sandbox whose channel another API
    /// process owns: relayed to the same agent through an engine exec.
    async fn control_via_engine(&self, id: &str, control: Control) -> Result<ControlReply, RuntimeError>;

    /// A file operation under `/workspace` of sandbox `id`, through the agent.
    async fn file(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError>;

    /// [`file`](Self::file) without this process's channel (see `exec_via_engine`).
    async fn file_via_engine(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError>;

    /// Starts a streamed transfer under `/workspace` of sandbox `id` (see
    /// [`transfer`]): through the engine's exec, whoever holds the channel.
    async fn transfer(&self, id: &str, transfer: &transfer::Transfer) -> Result<transfer::AgentIo, RuntimeError>;

    /// Removes sandbox `id` with everything in it. Removing a missing sandbox succeeds.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// The sandbox `id`, or `None` if it does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<SandboxInfo>, RuntimeError>;

    /// Every sandbox of this instance, running or not.
    async fn list(&self) -> Result<Vec<SandboxInfo>, RuntimeError>;

    /// Freezes every process of sandbox `id` (`frozen`), or thaws them
    /// (the engine's pause). A missing sandbox, or one already so, succeeds.
    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), RuntimeError>;

    /// `Ok` when sandboxes can be created now; else `NotReady` naming what is
    /// missing (the engine, the configured OCI runtime, the agent).
    async fn ready(&self) -> Result<(), RuntimeError>;

    /// The engine's host: its memory and CPUs, and which of `images` it holds.
    async fn host(&self, images: &[String]) -> Result<Host, RuntimeError>;
}

/// What an engine exec's output that never held a frame means: the engine
/// wrote its own message there (`OCI runtime exec failed: ...`: the container
/// is stopping, or at its pids limit), not the agent. The sandbox could not
/// serve the request; the message is logged, never shown to a client.
pub(crate) fn exec_not_started(output: &[u8]) -> RuntimeError {
    let message = String::from_utf8_lossy(output);
    tracing::warn!(message = %message.trim(), "the engine could not start the agent in the sandbox");
    RuntimeError::ChannelClosed
}
