//! Logging for the binaries: bunyan JSON lines on stdout, filtered by `RUST_LOG`
//! (default `info`). Secrets never reach a span or an event: they live in
//! `secrecy` types and are never passed to `tracing` macros.

use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `name` becomes bunyan's `name` field.
pub fn init(name: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(JsonStorageLayer)
        .with(BunyanFormattingLayer::new(name.into(), std::io::stdout))
        .try_init();
}
