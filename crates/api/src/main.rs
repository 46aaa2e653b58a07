//! brig-api: parse the configuration, set up logging, serve.

use anyhow::Context;
use brig_core::{telemetry, Config};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    // `brig-api healthcheck`: for container healthchecks in images without a shell.
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
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
    let address = (config.host.clone(), config.port);
    let state = brig_api::AppState::build(config).await.context("starting brig-api")?;
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {}:{}", address.0, address.1))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    brig_api::run(listener, state, shutdown_signal())
        .await
        .context("serving")
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
