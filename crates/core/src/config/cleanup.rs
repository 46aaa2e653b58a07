//! The reaper: `CLEANUP_INTERVAL_SECONDS`, `CLEANUP_MAX_CONTAINER_AGE_SECONDS`,
//! `CLEANUP_GRACE_SECONDS`.

use std::time::Duration;

use super::{seconds, Env};

/// The reaper's schedule and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupConfig {
    /// `CLEANUP_INTERVAL_SECONDS`: time between passes.
    pub interval: Duration,
    /// `CLEANUP_MAX_CONTAINER_AGE_SECONDS`: containers older than this go, busy or not.
    pub max_age: Duration,
    /// `CLEANUP_GRACE_SECONDS`: containers and pending records younger than this
    /// are left alone, so a creation in flight is never raced.
    pub grace: Duration,
}

impl CleanupConfig {
    pub(super) fn from(env: &mut Env<'_>) -> Self {
        CleanupConfig {
            interval: env.parse("CLEANUP_INTERVAL_SECONDS", Duration::from_secs(60), seconds),
            max_age: env.parse("CLEANUP_MAX_CONTAINER_AGE_SECONDS", Duration::from_secs(900), seconds),
            grace: env.parse("CLEANUP_GRACE_SECONDS", Duration::from_secs(30), seconds),
        }
    }
}
