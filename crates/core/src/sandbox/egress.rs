//! The seam between a runtime's egress tunnels and whoever decides and dials
//! them ([`EgressDialer`], implemented over the session store): a runtime
//! relays bytes and enforces the per-sandbox caps, and knows no policy.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

/// What became of one `Dial` from a sandbox.
pub enum DialOutcome {
    /// Connected: relay `stream`, then call `on_end` once with how it went.
    Connected {
        stream: TcpStream,
        address: SocketAddr,
        on_end: Box<dyn FnOnce(TunnelEnd) + Send>,
    },
    /// Refused (or failed), with a one-line reason for the sandbox.
    Refused(String),
    /// Another process holds this sandbox's channel and answers its dials:
    /// say nothing (one writer per channel).
    NotMine,
}

/// How an open tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEnd {
    /// Sandbox → upstream.
    pub bytes_up: u64,
    /// Upstream → sandbox.
    pub bytes_down: u64,
    pub duration: Duration,
    /// `closed`, `idle`, `byte_cap`, `upstream_error`, `sandbox_error`, `channel_closed`.
    pub reason: &'static str,
}

/// Per-sandbox bounds of its tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Tunnels open at once.
    pub max_connections: usize,
    /// Bytes both ways, over the tunnels of one channel.
    pub max_bytes: u64,
    /// A tunnel with no byte either way for this long is closed.
    pub idle: Duration,
}

/// Decides and dials the connections sandboxes ask for.
#[async_trait]
pub trait EgressDialer: Send + Sync {
    /// `host:port` (a name or an address literal, as the sandbox asked) for
    /// the sandbox `container` (its engine id).
    async fn dial(&self, container: &str, host: &str, port: u16) -> DialOutcome;

    fn limits(&self) -> TunnelLimits;
}
