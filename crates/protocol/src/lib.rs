//! brig-protocol: the frames spoken between brig-api and brig-agent over the
//! sandbox container's attached stdin/stdout.
//!
//! - [`frame`]: the [`Frame`] enum, its requests and results.
//! - [`wire`]: the byte encoding of one frame.
//! - [`decoder`]: the incremental [`FrameDecoder`].
//!
//! Wire format, all integers big-endian:
//!
//! ```text
//! u32 len | u8 kind | u32 request_id | payload (len - 5 bytes)
//! ```
//!
//! `len` never exceeds [`MAX_FRAME_LEN`]. The client opens with `Hello`, the agent
//! answers `HelloOk` with the version it speaks. Extensions (streamed stdin, file
//! transfer) arrive as new frame kinds; a peer answers a kind it does not know with
//! `Error { code: UnsupportedFrame }` and carries on, so old agents and new clients
//! (and the reverse) degrade instead of desynchronising. Every payload is decoded
//! strictly: a short, overlong or ill-typed payload is an error, never a guess.
//! Egress tunnels (`Dial`, `DialReply`, `Data`, `Credit`, `Shut`, `Close`) carry
//! the connections of the agent's loopback proxy; the agent opens them, with
//! ids of its own, and each direction is flow-controlled by credit.
//! No tokio and no allocation beyond the frame being decoded: the agent is std-only.

mod decoder;
mod frame;
mod wire;

pub use decoder::FrameDecoder;
pub use frame::{
    DirEntry, EntryKind, ErrorCode, FileReply, FileRequest, Frame, Keep, ReadReply, ReadRequest, RunRequest, RunResult,
    Stream, Termination, TtySize,
};
pub use wire::{DecodeError, FrameTooLarge};

/// The protocol version this crate speaks. Version 2 adds kept executions
/// (`keep` on `Run`, `Read`, `Stdin`, `Signal`, `Resize`, `Ack`) and `Ping`;
/// a `Run` without `keep` is encoded as version 1 had it.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest version a client still speaks with (an agent published by an
/// earlier brig, in a sandbox made before an upgrade).
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Hard upper bound of one frame's `len` field (kind + id + payload).
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

/// Largest stdin payload a `Run` frame may carry.
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;

/// Largest data payload of one `Output` frame; the agent splits output into chunks
/// of at most this size, so its per-request memory stays small.
pub const MAX_OUTPUT_CHUNK: usize = 32 * 1024;

/// Largest file a `File` request writes or reads: one frame, with room for the path.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Most argv entries or env pairs one `Run` may carry.
pub const MAX_LIST_LEN: usize = 4096;

/// Most entries one directory listing returns.
pub const MAX_DIR_ENTRIES: usize = 4096;

/// Most encoded bytes of the entries of one listing (names are up to 255
/// bytes, and a name that is not UTF-8 grows by half again when made one):
/// a listing always fits a frame.
pub const MAX_LIST_BYTES: usize = 1024 * 1024;

/// Largest data payload of one tunnel `Data` frame: small, so that a command's
/// frames never wait long behind a download's.
pub const MAX_TUNNEL_CHUNK: usize = 32 * 1024;

/// Bytes of `Data` either side of a tunnel may send before the other side
/// grants more with `Credit`: what one connection may have in flight, so one
/// slow reader holds up nobody else.
pub const TUNNEL_WINDOW: u32 = 256 * 1024;

/// Longest host name a `Dial` carries (a DNS name is at most 253 bytes).
pub const MAX_DIAL_HOST: usize = 255;

/// The port of the egress proxy the agent serves on the sandbox's loopback.
pub const EGRESS_PROXY_PORT: u16 = 3128;

/// The uid `brig-agent relay` runs as (an engine exec's user): the only
/// peer the agent's relay socket accepts. No process of the sandbox has it:
/// commands run as 1000 with no capability to change uid.
pub const RELAY_UID: u32 = 65533;

/// The abstract unix socket (in the sandbox's network namespace) on which
/// PID 1 takes relayed conversations.
pub const RELAY_SOCKET: &str = "brig-agent-relay";

/// How often a client pings the agent on the attach stream.
pub const PING_INTERVAL_MS: u64 = 2_000;

/// Silence on the attach stream after which the agent takes its client for
/// gone and kills what it started.
pub const CLIENT_SILENCE_MS: u64 = 15_000;

/// Longest key of a kept execution.
pub const MAX_KEY_LEN: usize = 64;

/// Most output bytes one `ReadDone` carries (both streams together).
pub const MAX_READ_BYTES: usize = 1024 * 1024;

/// Longest a `Read` may wait for output.
pub const MAX_READ_WAIT_MS: u32 = 30_000;

/// Size of the fixed frame header: len (4), kind (1), request id (4).
pub const HEADER_LEN: usize = 9;
