//! brig-core: the domain of brig, shared by brig-api, brig-cleanup-worker and
//! brig-bench.
//!
//! # Layout (top to bottom: a module uses only those below it)
//!
//! - [`session`]: the execute flow ([`Sessions`](session::Sessions): get-or-create
//!   a session's sandbox, run in it under the channel lease, repair, delete),
//!   session ids and owners, the record the store keeps.
//! - [`pool`], [`reaper`]: the warm pool of spares; the reaper of expired,
//!   over-age and orphaned sandboxes.
//! - [`policy`]: argv parsing, the allowlist, working directories, languages;
//!   `policy::rules`: the policy file and the rules in force.
//! - [`runtime`]: the [`SandboxRuntime`] seam; `runtime::docker` (hardened
//!   containers, the agent volume, the attach channel), `runtime::fake`
//!   (in-process, for tests; feature `testing`).
//! - [`store`]: the [`SessionStore`](store::SessionStore) seam (Redis, memory)
//!   and its typed facades (cooldowns, idempotency records, execution records).
//! - [`sandbox`]: what a sandbox is and what running a command in it means
//!   ([`ExecRequest`], [`ExecOutcome`]); `sandbox::budget`: the memory it can pin.
//! - [`agent_binary`]: the agent as the runtime sees it (bytes handed in by
//!   brig-agent-embed; the volume they are published into).
//! - [`config`]: typed configuration parsed from the environment.
//! - [`metrics`], [`telemetry`], [`shutdown`]: metric names and recorders,
//!   bunyan logging, the stop signal and the task tracker.
//!
//! What came of a command, layer by layer: the agent's `RunResult` (protocol)
//! → [`ExecOutcome`] (runtime) → `Executed` (session flow, with timing and
//! whether the session was created) → the API's views.

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
