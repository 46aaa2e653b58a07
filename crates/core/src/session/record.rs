//! [`SessionRecord`]: what the store keeps per session.

use serde::{Deserialize, Serialize};

use super::Owner;

/// What the store keeps per session. A record without a container id is
/// pending: its container is being created by whoever holds the session's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub owner: Owner,
    pub session_id: String,
    pub container_id: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The image and limits the session was created with (kept so that a lost
    /// container is recreated the same).
    #[serde(default, skip_serializing_if = "crate::sandbox::SandboxOptions::is_default")]
    pub options: crate::sandbox::SandboxOptions,
}

impl SessionRecord {
    /// The container exists (as far as the record knows).
    pub fn is_ready(&self) -> bool {
        !self.container_id.is_empty()
    }
}
