//! brig-core: the domain of brig, shared by brig-api and brig-cleanup-worker.
//!
//! - [`config`]: typed configuration parsed from the environment.
//! - [`sandbox`]: what a sandbox is and what running a command in it means
//!   ([`ExecRequest`], [`ExecOutcome`]).
//! - [`runtime`]: the [`SandboxRuntime`] seam and its Docker implementation
//!   (hardened container spec, agent volume, attach channel).
//! - [`agent_binary`]: the agent as the runtime sees it (bytes handed in by
//!   brig-agent-embed, the volume they are published into).
//! - [`policy`]: argv parsing, the command allowlist, working directories.
//! - [`session`], [`store`], [`sessions`]: session ids and owners, the
//!   [`SessionStore`](store::SessionStore) seam (Redis, memory), and the execute flow.
//! - [`telemetry`]: bunyan JSON logging for the binaries.

pub mod agent_binary;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod reaper;

pub mod runtime;
pub mod sandbox;
pub mod session;

pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use config::{Config, ConfigError, DockerConfig, SandboxConfig};
pub use runtime::docker::DockerRuntime;
pub use runtime::{RuntimeError, SandboxRuntime};
pub use sandbox::{CreateSandbox, ExecOutcome, ExecRequest, SandboxInfo};
