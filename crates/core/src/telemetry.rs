//! Logging for the binaries, filtered by `RUST_LOG` (default `info`), on
//! stdout. `LOG_FORMAT` picks the shape: `json` (the default: bunyan JSON
//! lines, what log pipelines read) or `pretty` (one readable line per event,
//! for a person at a terminal; `scripts/run.sh` uses it). Secrets never reach
//! a span or an event: they live in `secrecy` types and are never passed to
//! `tracing` macros.

use tracing::{Event, Subscriber};
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The shapes `LOG_FORMAT` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// From `LOG_FORMAT`; unset or blank is `json`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or("") {
            "" | "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!("LOG_FORMAT must be json or pretty, not {other:?}")),
        }
    }
}

/// Installs the global subscriber; `name` becomes bunyan's `name` field. An
/// unknown `LOG_FORMAT` is said on stderr and JSON is used.
pub fn init(name: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref()).unwrap_or_else(|message| {
        eprintln!("{name}: {message}; logging JSON");
        LogFormat::Json
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(JsonStorageLayer)
            .with(EventsOnly(BunyanFormattingLayer::new(name.into(), std::io::stdout)))
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
}

/// A layer that passes on events only. The bunyan layer also writes a JSON
/// line when each span opens and closes (`[HTTP - START]`, `[HTTP - END]`):
/// two formatted lines per span per request on the hot path, saying nothing
/// the events do not. Spans still lend their fields (the request id, the
/// route) to the events inside them, through [`JsonStorageLayer`].
struct EventsOnly<L>(L);

impl<S, L> Layer<S> for EventsOnly<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_json_unless_pretty_is_asked_for() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some(" ")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("pretty")), Ok(LogFormat::Pretty));
        assert!(LogFormat::parse(Some("yaml")).unwrap_err().contains("LOG_FORMAT"));
    }
}
