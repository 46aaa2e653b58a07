//! [`SessionRecord`]: what the store keeps per session.

use serde::{Deserialize, Serialize};

use super::ids::Owner;

/// What the store keeps per session. A record without a container is
/// pending: its container is being created by whoever holds the session's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub owner: Owner,
    pub session_id: String,
    /// The container's engine id; `None` while pending. Stored as
    /// `"container_id": ""` then: the format the store's scripts read.
    #[serde(rename = "container_id", with = "pending_is_empty")]
    pub container: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The image and limits the session was created with (kept so that a lost
    /// container is recreated the same).
    #[serde(default, skip_serializing_if = "crate::sandbox::SandboxOptions::is_default")]
    pub options: crate::sandbox::SandboxOptions,
    /// Set while the session is being suspended (its container still holds
    /// the workspace), once it is (no container: the workspace is a snapshot)
    /// and while it resumes (a new container, the snapshot not yet restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspension>,
    /// The session's own idle TTL (`ttl_seconds`), in milliseconds; `None`:
    /// `SESSION_TTL_SECONDS`. Every refresh of the record uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// The node whose engine holds the session (`BRIG_NODE_ID`); `None` on a
    /// single host. Only that node serves it; a resume moves it to the node
    /// that resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Where that node is reached (`BRIG_NODE_ADDR`), for a client sent to the wrong one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addr: Option<String>,
    /// Set once another node recreated the session after its node was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreated: Option<Recreation>,
}

/// A session's recreation after its node was lost (see [`SessionRecord::recreated`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recreation {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The node that was lost.
    pub lost_node: String,
    /// The snapshot its workspace was restored from; `None`: it started empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// A session's suspension (see [`SessionRecord::suspended`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// The snapshot holding the workspace; `None` while it is being taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Unix milliseconds.
    pub since_ms: i64,
    /// A resume holds the session's place (and capacity) while it makes a
    /// container: the snapshot is still the truth.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resuming: bool,
}

/// Where a session is in its life, as `GET /sessions/{id}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Its container is being created.
    Starting,
    Active,
    /// Its workspace is being stored; commands wait.
    Suspending,
    /// No container: the workspace waits in a snapshot.
    Suspended,
    /// A suspended session getting a container and its workspace back.
    Resuming,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Active => "active",
            SessionState::Suspending => "suspending",
            SessionState::Suspended => "suspended",
            SessionState::Resuming => "resuming",
        }
    }
}

impl SessionRecord {
    /// Its idle TTL: its own, else `default`.
    pub fn ttl_or(&self, default: std::time::Duration) -> std::time::Duration {
        self.ttl_ms
            .map_or(default, |ms| std::time::Duration::from_millis(ms.max(1) as u64))
    }

    /// The container exists (as far as the record knows) and takes commands.
    pub fn is_ready(&self) -> bool {
        self.container.is_some() && self.suspended.is_none()
    }

    /// The snapshot a suspended (or resuming) session's workspace waits in.
    pub fn suspended_in(&self) -> Option<&str> {
        self.suspended.as_ref()?.snapshot_id.as_deref()
    }

    /// Whether the record holds no container because its session is
    /// suspended (not a creation in flight): such a session uses no capacity.
    pub fn is_parked(&self) -> bool {
        self.container.is_none() && self.suspended.as_ref().is_some_and(|s| !s.resuming)
    }

    pub fn state(&self) -> SessionState {
        let snapshot = self.suspended.as_ref().map(|s| s.snapshot_id.is_some());
        match (&self.container, snapshot) {
            (Some(_), None) => SessionState::Active,
            (None, None) => SessionState::Starting,
            // The container holds the truth until the snapshot is recorded...
            (Some(_), Some(false)) => SessionState::Suspending,
            // ... and the snapshot from then on, until it is restored into a
            // new container.
            (Some(_), Some(true)) => SessionState::Resuming,
            (None, Some(_)) if self.is_parked() => SessionState::Suspended,
            (None, Some(_)) => SessionState::Resuming,
        }
    }

    /// The container, once the record is ready.
    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }
}

/// `None` ↔ `""` on the wire.
mod pending_is_empty {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(container: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(container.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        let container = String::deserialize(deserializer)?;
        Ok((!container.is_empty()).then_some(container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_record_keeps_the_stored_format() {
        let pending = SessionRecord {
            owner: Owner::of_principal("alice"),
            session_id: "s".into(),
            container: None,
            created_at_ms: 1,
            expires_at_ms: 2,
            options: Default::default(),
            suspended: None,
            ttl_ms: None,
            node: None,
            node_addr: None,
            recreated: None,
        };
        let json = serde_json::to_value(&pending).unwrap();
        assert_eq!(json["container_id"], "");
        // A single host's records carry no node: the format stays as it was.
        assert!(json.get("node").is_none(), "{json}");
        let placed = SessionRecord {
            node: Some("n1".into()),
            ..pending.clone()
        };
        let back: SessionRecord = serde_json::from_value(serde_json::to_value(&placed).unwrap()).unwrap();
        assert_eq!(back.node.as_deref(), Some("n1"));
        let ready = SessionRecord {
            container: Some("abc".into()),
            ..pending.clone()
        };
        let back: SessionRecord = serde_json::from_value(serde_json::to_value(&ready).unwrap()).unwrap();
        assert_eq!(back, ready);
        assert_eq!(serde_json::from_value::<SessionRecord>(json).unwrap(), pending);
        // The store's scripts test the key's absence: never a `null`.
        assert!(serde_json::to_value(&ready).unwrap().get("suspended").is_none());
        let parked = SessionRecord {
            suspended: Some(Suspension {
                snapshot_id: Some("snap-1".into()),
                since_ms: 3,
                resuming: false,
            }),
            ..pending
        };
        assert!(!parked.is_ready() && parked.is_parked());
        assert_eq!(parked.state(), SessionState::Suspended);
        let back: SessionRecord = serde_json::from_value(serde_json::to_value(&parked).unwrap()).unwrap();
        assert_eq!(back, parked);
    }
}
