//! brig-core: the domain of brig, shared by brig-api, brig-cleanup-worker and
//! brig-bench.
//!
//! # Layout
//!
//! Each line uses only the lines below it (and the ones beside it on its own
//! line); nothing reaches up.
//!
//! 1. [`session`]: the execute flow ([`Sessions`](session::Sessions): get-or-create
//!    a session's sandbox, run in it under the channel lease, repair, delete).
//! 2. [`pool`], [`reaper`]: the warm pool of spares; the reaper of expired,
//!    over-age and orphaned sandboxes. [`node`]: the registry of nodes (each
//!    owning one engine) and this node's heartbeat.
//! 3. [`runtime`]: the [`SandboxRuntime`] seam, `runtime::docker` (hardened
//!    containers, the agent volume, the attach channel) and `runtime::fake`
//!    (in-process, for tests; feature `testing`). [`store`]: the
//!    [`SessionStore`](store::SessionStore) seam (Redis, memory) and its typed
//!    facades (cooldowns, idempotency and execution records).
//!    `policy::file` and `policy::rules`: the policy file and the rules in force.
//! 4. [`config`]: typed configuration from the environment;
//!    `metrics::exporter`: the Prometheus exporter both binaries serve;
//!    [`http_server`]: the bounded HTTP/1.1 server under brig-api's router and
//!    both binaries' metrics port.
//! 5. [`metrics`]: metric names and recorders.
//! 6. [`policy`] (argv, the allowlist, working directories, languages),
//!    [`egress`] (allow-list patterns, refused addresses, the decision for one
//!    connection; nothing dials yet),
//!    [`sandbox`] (what a sandbox is, [`ExecRequest`], [`ExecOutcome`], and
//!    `sandbox::budget`, the memory it can pin), [`agent_binary`] (the agent
//!    as the runtime sees it), `session::record` (what the store keeps).
//! 7. `session::ids`: session ids and owners.
//! 8. [`telemetry`], [`shutdown`]: bunyan logging; the stop signal and the
//!    task tracker.
//!
//! What came of a command, layer by layer: the agent's `RunResult` (protocol)
//! → [`ExecOutcome`] (runtime) → `Executed` (session flow, with timing and
//! whether the session was created) → the API's views.

pub mod agent_binary;
pub mod config;
pub mod egress;
pub mod http_server;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod pool;
pub mod reaper;
pub mod runtime;
pub mod sandbox;
pub mod session;
pub mod shutdown;
pub mod snapshot;
pub mod store;
pub mod telemetry;

pub use config::{Config, ConfigError, DockerConfig, SandboxConfig};
pub use runtime::docker::DockerRuntime;
pub use runtime::{RuntimeError, SandboxRuntime};
pub use sandbox::{CreateSandbox, ExecOutcome, ExecRequest, SandboxInfo};

#[cfg(test)]
mod layering {
    /// The levels of the map above (higher uses lower).
    const LEVELS: &[(&str, u32)] = &[
        ("session", 8),
        ("pool", 7),
        ("reaper", 7),
        ("node", 7),
        ("runtime", 6),
        ("store", 6),
        ("snapshot", 6),
        ("policy::file", 6),
        ("policy::rules", 6),
        ("config", 5),
        ("metrics::exporter", 5),
        ("http_server", 5),
        ("metrics", 4),
        ("policy", 3),
        ("egress", 3),
        ("sandbox", 3),
        ("agent_binary", 3),
        ("session::record", 3),
        ("session::ids", 2),
        ("telemetry", 1),
        ("shutdown", 1),
    ];

    #[test]
    fn no_module_uses_one_above_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let violations = brig_testkit::layering::violations(&src, LEVELS);
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
