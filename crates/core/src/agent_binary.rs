//! The static brig-agent, built by `build.rs` and embedded here, and the name of
//! the Docker volume it is published into.

use sha2::{Digest, Sha256};

/// The agent executable (x86_64, statically linked).
pub static AGENT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/brig-agent"));

/// Where sandboxes see the agent volume, and the agent's path in it.
pub const AGENT_MOUNT: &str = "/opt/brig";
pub const AGENT_PATH: &str = "/opt/brig/brig-agent";

/// `brig-agent-<first 16 hex digits of the binary's SHA-256>`: the content
/// decides the name, so every build publishes into its own volume and a volume
/// never changes under a running sandbox.
pub fn agent_volume_name() -> String {
    let digest = Sha256::digest(AGENT_BINARY);
    format!("brig-agent-{}", &hex::encode(digest)[..16])
}
