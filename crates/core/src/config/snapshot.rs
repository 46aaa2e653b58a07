//! Snapshots and suspension: `SNAPSHOT_DIR`, `SNAPSHOT_QUOTA_BYTES`,
//! `SNAPSHOT_QUOTA_COUNT`, `SESSION_EXPIRY`, `SUSPENDED_RETENTION_SECONDS`.

use std::path::PathBuf;
use std::time::Duration;

use super::{parse_size, positive, seconds, Env};

/// `SESSION_EXPIRY`: what becomes of a session whose TTL runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// Its container and workspace go (the default).
    Delete,
    /// It is suspended: its workspace kept as a snapshot for
    /// `SUSPENDED_RETENTION_SECONDS`, its next use resumes it.
    Suspend,
}

/// Where snapshots are kept and how much of it each principal may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// `SNAPSHOT_DIR`: the local directory snapshots are kept in (default
    /// `$XDG_DATA_HOME/brig/snapshots`, else `$HOME/.local/share/brig/snapshots`,
    /// else `/var/lib/brig/snapshots`); created at the first snapshot.
    pub dir: PathBuf,
    /// `SNAPSHOT_QUOTA_BYTES`: bytes of snapshots per principal (default 1g).
    pub quota_bytes: u64,
    /// `SNAPSHOT_QUOTA_COUNT`: snapshots per principal (default 20).
    pub quota_count: usize,
    pub expiry: SessionExpiry,
    /// `SUSPENDED_RETENTION_SECONDS`: how long a suspended session (its
    /// record and snapshot) is kept unused (default 7 days).
    pub suspended_retention: Duration,
    /// `SUSPENDED_SWEEP_AFTER_SECONDS`: how old a suspended workspace that no
    /// session names (its session deleted or expired, or a suspend killed
    /// before it recorded it) must be before it is removed (default 600: no
    /// suspend in flight takes that long to record its snapshot).
    pub sweep_after: Duration,
}

impl SnapshotConfig {
    pub(super) fn from(env: &mut Env<'_>) -> Self {
        let dir = env.get("SNAPSHOT_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let data = env
                .get("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| env.get("HOME").map(|home| PathBuf::from(home).join(".local/share")));
            data.map_or_else(
                || PathBuf::from("/var/lib/brig/snapshots"),
                |d| d.join("brig/snapshots"),
            )
        });
        SnapshotConfig {
            dir,
            quota_bytes: env.parse("SNAPSHOT_QUOTA_BYTES", 1u64 << 30, |raw| {
                parse_size("SNAPSHOT_QUOTA_BYTES", raw).map_err(|e| e.message)
            }),
            quota_count: env.parse("SNAPSHOT_QUOTA_COUNT", 20usize, positive),
            expiry: env.parse("SESSION_EXPIRY", SessionExpiry::Delete, |raw| match raw {
                "delete" => Ok(SessionExpiry::Delete),
                "suspend" => Ok(SessionExpiry::Suspend),
                _ => Err("must be delete or suspend".into()),
            }),
            suspended_retention: env.parse("SUSPENDED_RETENTION_SECONDS", Duration::from_secs(7 * 86400), seconds),
            sweep_after: env.parse("SUSPENDED_SWEEP_AFTER_SECONDS", Duration::from_secs(600), seconds),
        }
    }
}
