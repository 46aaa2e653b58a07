//! The use cases behind the transports. Each service takes the parts it
//! needs (sessions, a store facade, limits), never the application state, so
//! every front end (JSON, SSE, MCP, generate) runs the same code.
//!
//! - [`execute`]: validate, charge the cooldown, run, audit.
//! - [`executions`]: commands in the background, with records any replica reads.
//! - [`idempotency`]: `Idempotency-Key`: try → run or replay → save.
//! - [`readiness`]: `/ready`, checked at most once a second.
//! - [`recovery`]: node mode: a lost node's sessions recreated on a live one.
//! - [`sessions`]: opening a session with a client's options.

pub mod contexts;
pub mod execute;
pub mod executions;
pub mod idempotency;
pub mod readiness;
pub mod recovery;
pub mod sessions;
pub mod snapshots;
