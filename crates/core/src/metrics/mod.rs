//! Prometheus metrics: their names in one place, recorded through the
//! `metrics` facade (a no-op until a binary installs a recorder), and the
//! exporter's set-up and access rules shared by brig-api and the cleanup worker.
//!
//! Access (never public by accident): with `METRICS_TOKEN`, `/metrics` needs
//! `Authorization: Bearer <token>`; with `METRICS_PORT`, it is served on that
//! port (only); with neither, it is not served at all.

pub mod exporter;

use std::time::Duration;

use crate::sandbox::ExecOutcome;

pub const HTTP_REQUESTS: &str = "brig_http_requests_total";
pub const HTTP_DURATION: &str = "brig_http_request_duration_seconds";
pub const COMMANDS: &str = "brig_commands_total";
pub const COMMAND_DURATION: &str = "brig_command_duration_seconds";
pub const SESSIONS_LIVE: &str = "brig_sessions_live";
pub const CONTAINERS_CREATED: &str = "brig_containers_created_total";
pub const CONTAINERS_REMOVED: &str = "brig_containers_removed_total";
pub const POOL_SIZE: &str = "brig_pool_spares";
pub const POOL_CLAIMS: &str = "brig_pool_claims_total";
pub const RATE_LIMITED: &str = "brig_rate_limited_total";
pub const QUOTA_REJECTIONS: &str = "brig_quota_rejections_total";
pub const STORE_ERRORS: &str = "brig_store_errors_total";
pub const ENGINE_ERRORS: &str = "brig_engine_errors_total";
pub const CHANNEL_REATTACHES: &str = "brig_channel_reattaches_total";
pub const CLEANUP_PASSES: &str = "brig_cleanup_passes_total";
pub const CLEANUP_ERRORS: &str = "brig_cleanup_errors_total";
/// Egress connections a sandbox asked for, by `outcome` (`allowed`, `denied`).
pub const EGRESS_CONNECTIONS: &str = "brig_egress_connections_total";
/// Bytes through egress tunnels, by `direction` (`up`: sandbox → upstream; `down`).
pub const EGRESS_BYTES: &str = "brig_egress_bytes_total";
/// Sessions suspended, and the time a resume took (container and workspace).
pub const SESSIONS_SUSPENDED: &str = "brig_sessions_suspended_total";
pub const RESUME_DURATION: &str = "brig_session_resume_seconds";
/// Requests this node sent on to the node holding their session (label `to`).
pub const FORWARDED: &str = "brig_forwarded_requests_total";
/// Sessions of lost nodes this node recreated (label `from_snapshot`: `true`/`false`).
pub const SESSIONS_RECOVERED: &str = "brig_sessions_recovered_total";

/// A finished command: `ok` (exit 0), `nonzero`, `timed_out`, `cancelled` or
/// `oom_killed` (SIGKILL that brig did not send: the OOM killer).
pub fn command_finished(outcome: &ExecOutcome, elapsed: Duration) {
    let kind = if outcome.timed_out {
        "timed_out"
    } else if outcome.cancelled {
        "cancelled"
    } else if outcome.signal == Some(9) {
        "oom_killed"
    } else if outcome.exit_code == 0 {
        "ok"
    } else {
        "nonzero"
    };
    metrics::counter!(COMMANDS, "outcome" => kind).increment(1);
    metrics::histogram!(COMMAND_DURATION).record(elapsed.as_secs_f64());
}

/// A command that never ran to an outcome (store, engine, sandbox failure).
pub fn command_failed() {
    metrics::counter!(COMMANDS, "outcome" => "failed").increment(1);
}

pub fn container_created(source: &'static str) {
    metrics::counter!(CONTAINERS_CREATED, "source" => source).increment(1);
}

pub fn container_removed(reason: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(CONTAINERS_REMOVED, "reason" => reason).increment(count);
    }
}

pub fn session_suspended() {
    metrics::counter!(SESSIONS_SUSPENDED).increment(1);
}

pub fn session_resumed(elapsed: Duration) {
    metrics::histogram!(RESUME_DURATION).record(elapsed.as_secs_f64());
}
