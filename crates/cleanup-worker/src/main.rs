//! brig-cleanup-worker: the reaper of brig-core, every CLEANUP_INTERVAL_SECONDS,
//! for this BRIG_INSTANCE only, until SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use brig_core::config::MetricsConfig;
use brig_core::config::{StoreConfig, WorkerConfig};
use brig_core::reaper::Reaper;
use brig_core::store::RedisStore;
use brig_core::{telemetry, DockerRuntime};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("brig-cleanup-worker");
    let config = match WorkerConfig::from_env() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("brig-cleanup-worker: {errors}");
            std::process::exit(2);
        }
    };
    let StoreConfig::Redis { url } = &config.store else {
        unreachable!("WorkerConfig requires Redis")
    };
    let store = Arc::new(RedisStore::new(url, &config.sandbox.instance).context("REDIS_URL")?);
    let docker = config
        .docker
        .connect()
        .await
        .context("connecting to the Docker engine")?;
    let runtime = Arc::new(DockerRuntime::new(docker, config.sandbox.clone(), None));
    serve_metrics(&config.metrics).await?;
    tracing::info!(
        instance = %config.sandbox.instance,
        interval_seconds = config.cleanup.interval.as_secs_f64(),
        "cleanup worker started"
    );
    Reaper::new(store, runtime, config.cleanup, config.sandbox.warm_pool_size)
        .run_until_stopped(brig_core::shutdown::signal())
        .await;
    tracing::info!("cleanup worker stopped");
    Ok(())
}

/// The worker's counters on `METRICS_PORT` (bound to `METRICS_HOST`), with the
/// `METRICS_TOKEN` check if one is set; not served without a port.
async fn serve_metrics(config: &MetricsConfig) -> anyhow::Result<()> {
    let Some(port) = config.port else {
        return Ok(());
    };
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), port))
        .await
        .with_context(|| format!("binding METRICS_PORT {}:{port}", config.host))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    let config = config.clone();
    let scrape = move |headers: HeaderMap| {
        let (handle, config) = (handle.clone(), config.clone());
        async move {
            let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if config.token.is_some() && !config.allows(authorization) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                handle.render(),
            )
                .into_response()
        }
    };
    let router = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(())
}
