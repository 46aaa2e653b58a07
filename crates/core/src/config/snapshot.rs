//! Snapshots: `SNAPSHOT_DIR`, `SNAPSHOT_QUOTA_BYTES`, `SNAPSHOT_QUOTA_COUNT`.

use std::path::PathBuf;

use super::{parse_size, positive, Env};

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
        }
    }
}
