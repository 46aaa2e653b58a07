//! brig-api: parse the configuration, set up logging, serve.

use anyhow::Context;
use brig_core::config::{ConfigError, ConfigErrors};
use brig_core::policy::rules::LiveRules;
use brig_core::{telemetry, Config};
use tokio::net::TcpListener;

/// brig's HTTP API: runs untrusted commands in hardened, per-session Docker
/// sandboxes. Configured by the environment (README, .env.example); holds the
/// Docker socket, so listen where only your clients reach it.
#[derive(clap::Parser)]
#[command(name = "brig-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Ask the local brig-api's /ready (port PORT); exit 0 when ready, 1 if not.
    Healthcheck,
}

fn main() -> anyhow::Result<()> {
    // Before anything starts: `--help`, `--version` and unknown arguments end here.
    let cli = <Cli as clap::Parser>::parse();
    // `brig-api healthcheck`: for container healthchecks in images without a shell.
    if let Some(Command::Healthcheck) = cli.command {
        std::process::exit(brig_api::healthcheck::probe());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    telemetry::init("brig-api");
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("brig-api: {errors}");
            std::process::exit(2);
        }
    };
    // The policy file is part of the configuration: invalid, it stops start-up
    // the same way (exit 2, naming the variable and the entry).
    let rules = match LiveRules::load(config.policy_path.clone(), &config.commands) {
        Ok(rules) => rules,
        Err(err) => {
            let errors = ConfigErrors(vec![ConfigError::new("ALLOWED_COMMANDS_PATH", err.to_string())]);
            eprintln!("brig-api: {errors}");
            std::process::exit(2);
        }
    };
    // What LANGUAGES offers but the allowlist refuses is not advertised (MCP):
    // say so once, where the operator looks.
    let runnable = rules.current().runnable_languages(&config.languages);
    for (language, interpreter) in config.languages.iter().filter(|(name, _)| !runnable.contains(name)) {
        tracing::warn!(
            language,
            interpreter = interpreter.program(),
            "LANGUAGES offers {language}, but ALLOWED_COMMANDS does not allow its interpreter: its code is refused (403) and MCP does not offer it"
        );
    }
    let address = (config.host.clone(), config.port);
    let mut state = brig_api::AppState::build(config, rules)
        .await
        .context("starting brig-api")?;
    state.metrics = brig_core::metrics::exporter::install();
    brig_api::metrics::serve_port(&state).await.with_context(|| {
        let metrics = &state.config.metrics;
        format!(
            "binding METRICS_PORT {}:{}",
            metrics.host,
            metrics.port.unwrap_or_default()
        )
    })?;
    reload_on_sighup(state.rules.clone(), state.auth.clone())?;
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {}:{}", address.0, address.1))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    // In the embedded mode the session records live in this process: its
    // sandboxes would outlive it as orphans, so they go with it.
    let leftovers = state.embedded_reaper.clone();
    let served = brig_api::run(listener, state, brig_core::shutdown::signal())
        .await
        .context("serving");
    if let Some(reaper) = leftovers {
        if tokio::time::timeout(PURGE_AT_EXIT, reaper.purge()).await.is_err() {
            tracing::warn!(
                "sandboxes still being removed at exit; what is left goes at the age limit \
                 (CLEANUP_MAX_CONTAINER_AGE_SECONDS)"
            );
        }
    }
    served
}

/// How long the embedded mode's exit may spend removing its sandboxes.
const PURGE_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP re-reads `ALLOWED_COMMANDS_PATH`; requests in flight keep the
/// version they started with, and an invalid file leaves the old one in force.
/// SIGHUP re-reads the policy file and the keys file; what is invalid is
/// logged and leaves the previous version in force.
fn reload_on_sighup(
    rules: std::sync::Arc<brig_core::policy::rules::LiveRules>,
    auth: std::sync::Arc<brig_api::auth::Authenticator>,
) -> anyhow::Result<()> {
    let mut hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match rules.reload() {
                Ok(true) => tracing::info!("command policy reloaded"),
                Ok(false) => tracing::info!("SIGHUP: no ALLOWED_COMMANDS_PATH to reload"),
                Err(err) => tracing::error!(%err, "command policy not reloaded; the previous one stays in force"),
            }
            match auth.reload_keys() {
                Ok(Some(keys)) => tracing::info!(keys, "API keys reloaded from API_KEYS_FILE"),
                Ok(None) => tracing::info!("SIGHUP: no API_KEYS_FILE to reload"),
                Err(err) => tracing::error!(%err, "API keys not reloaded; the previous ones stay in force"),
            }
        }
    });
    Ok(())
}
