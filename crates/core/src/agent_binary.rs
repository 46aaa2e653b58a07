//! The agent as the runtime sees it: bytes handed in by the binary that
//! embeds them (brig-agent-embed), and the Docker volume they are published
//! into.

use sha2::{Digest, Sha256};

/// Where sandboxes see the agent volume, and the agent's path in it.
pub const AGENT_MOUNT: &str = "/opt/brig";
pub const AGENT_PATH: &str = "/opt/brig/brig-agent";

/// A static brig-agent executable.
#[derive(Clone, Copy)]
pub struct AgentBinary {
    bytes: &'static [u8],
}

impl AgentBinary {
    pub fn new(bytes: &'static [u8]) -> Self {
        AgentBinary { bytes }
    }

    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// `brig-agent-<first 16 hex digits of the binary's SHA-256>`: the content
    /// decides the name, so every build publishes into its own volume and a
    /// volume never changes under a running sandbox.
    pub fn volume_name(&self) -> String {
        let digest = Sha256::digest(self.bytes);
        format!("brig-agent-{}", &hex::encode(digest)[..16])
    }
}

impl std::fmt::Debug for AgentBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentBinary({} bytes)", self.bytes.len())
    }
}
