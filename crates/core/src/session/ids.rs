//! Who owns sessions and what they are called: [`Owner`], [`SessionId`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A client-chosen session id: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(id: &str) -> Result<Self, InvalidSessionId> {
        let bytes = id.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes[0].is_ascii_alphanumeric()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(SessionId(id.to_string()))
        } else {
            Err(InvalidSessionId)
        }
    }

    /// A fresh random id (for `POST /sessions` without one).
    pub fn random() -> Self {
        let bytes: [u8; 12] = rand::random();
        SessionId(format!("s-{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session_id must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$")]
pub struct InvalidSessionId;

/// The owner of sessions: a stable hash of the authenticated principal. Labels,
/// container names and store keys carry this, never the principal itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner(String);

impl Owner {
    pub fn of_principal(principal: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"brig-owner\0")
            .chain_update(principal.as_bytes())
            .finalize();
        Owner(hex::encode(&digest[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An owner as [`as_str`](Self::as_str) wrote it (32 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Owner(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_documented_pattern() {
        for ok in ["a", "my-session-1", "A.b_c-d", &"x".repeat(128), "0"] {
            assert!(SessionId::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "a:b", "ä", &"x".repeat(129), "a\n"] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SessionId::parse(SessionId::random().as_str()).is_ok());
    }

    #[test]
    fn owners_are_stable_distinct_hashes() {
        assert_eq!(Owner::of_principal("alice"), Owner::of_principal("alice"));
        assert_ne!(Owner::of_principal("alice"), Owner::of_principal("bob"));
        assert_eq!(Owner::of_principal("alice").as_str().len(), 32);
    }
}
