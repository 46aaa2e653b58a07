//! Snapshots and suspension: `SNAPSHOT_STORE`, `SNAPSHOT_DIR`, `S3_*`,
//! `SNAPSHOT_QUOTA_BYTES`, `SNAPSHOT_QUOTA_COUNT`, `SESSION_EXPIRY`,
//! `SUSPENDED_RETENTION_SECONDS`, `SUSPENDED_SWEEP_AFTER_SECONDS`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

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

/// `SNAPSHOT_STORE`: where snapshots (and suspended workspaces) are kept.
#[derive(Debug, Clone)]
pub enum SnapshotLocation {
    /// `local` (the default): `SNAPSHOT_DIR`, the local directory (default
    /// `$XDG_DATA_HOME/brig/snapshots`, else `$HOME/.local/share/brig/snapshots`,
    /// else `/var/lib/brig/snapshots`); created at the first snapshot. Serves
    /// the replicas of one host.
    Dir(PathBuf),
    /// `s3`: an S3-compatible bucket, shared by hosts.
    S3(S3Config),
}

/// `S3_ENDPOINT`, `S3_BUCKET`, `S3_REGION`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `S3_ENDPOINT`: the service's URL (`http://` allowed); none: AWS's own.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// `S3_REGION` (default `us-east-1`).
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
}

/// Where snapshots are kept and how much of it each principal may use.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    pub location: SnapshotLocation,
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
    /// `SNAPSHOT_DIR_SHARED` (false): `SNAPSHOT_DIR` is the same directory
    /// on every node (a shared mount), so a session suspended on one node
    /// resumes on another.
    pub dir_shared: bool,
}

impl SnapshotConfig {
    /// Whether every node reads the snapshots any node writes (S3, or a
    /// shared `SNAPSHOT_DIR`): what moving a session between nodes needs.
    pub fn shared_between_nodes(&self) -> bool {
        matches!(self.location, SnapshotLocation::S3(_)) || self.dir_shared
    }

    pub(super) fn from(env: &mut Env<'_>) -> Self {
        let local = env.get("SNAPSHOT_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let data = env
                .get("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| env.get("HOME").map(|home| PathBuf::from(home).join(".local/share")));
            data.map_or_else(
                || PathBuf::from("/var/lib/brig/snapshots"),
                |d| d.join("brig/snapshots"),
            )
        });
        let location = match env.get("SNAPSHOT_STORE").as_deref() {
            None | Some("local") => SnapshotLocation::Dir(local),
            Some("s3") => SnapshotLocation::S3(S3Config::from(env)),
            Some(_) => {
                env.error("SNAPSHOT_STORE", "must be local or s3");
                SnapshotLocation::Dir(local)
            }
        };
        SnapshotConfig {
            location,
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
            dir_shared: env.parse("SNAPSHOT_DIR_SHARED", false, |raw| match raw {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err("must be true or false".into()),
            }),
        }
    }
}

impl S3Config {
    fn from(env: &mut Env<'_>) -> Self {
        let endpoint = env.get("S3_ENDPOINT");
        if let Some(endpoint) = &endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                env.error("S3_ENDPOINT", "must be an http:// or https:// URL");
            }
        }
        let bucket = env.get("S3_BUCKET").unwrap_or_default();
        if bucket.is_empty() {
            env.error("S3_BUCKET", "is required with SNAPSHOT_STORE=s3");
        }
        let access_key_id = env.get("S3_ACCESS_KEY_ID");
        let secret_access_key = env.get("S3_SECRET_ACCESS_KEY").map(SecretString::from);
        if access_key_id.is_some() != secret_access_key.is_some() {
            env.error(
                "S3_SECRET_ACCESS_KEY",
                "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together",
            );
        }
        S3Config {
            endpoint,
            bucket,
            region: env.get("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
        }
    }
}
