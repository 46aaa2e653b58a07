//! The static brig-agent (x86_64, statically linked), built by `build.rs` with
//! a nested cargo and embedded here. Its own crate so that only the processes
//! that publish the agent into sandboxes (brig-api, brig-bench, the runtime
//! tests) pay for the nested build and carry the bytes; brig-core, the cleanup
//! worker and the CLI do not.

/// The agent executable.
pub static AGENT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/brig-agent"));
