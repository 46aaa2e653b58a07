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
}

impl SessionRecord {
    /// The container exists (as far as the record knows).
    pub fn is_ready(&self) -> bool {
        self.container.is_some()
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
        };
        let json = serde_json::to_value(&pending).unwrap();
        assert_eq!(json["container_id"], "");
        let ready = SessionRecord {
            container: Some("abc".into()),
            ..pending.clone()
        };
        let back: SessionRecord = serde_json::from_value(serde_json::to_value(&ready).unwrap()).unwrap();
        assert_eq!(back, ready);
        assert_eq!(serde_json::from_value::<SessionRecord>(json).unwrap(), pending);
    }
}
