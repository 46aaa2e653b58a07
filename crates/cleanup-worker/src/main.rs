//! brig-cleanup-worker: the reaper of brig-core, every CLEANUP_INTERVAL_SECONDS,
//! for this BRIG_INSTANCE only, until SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use brig_core::config::{StoreConfig, WorkerConfig};
use brig_core::metrics::exporter;
use brig_core::reaper::Reaper;
use brig_core::store::RedisStore;
use brig_core::{telemetry, DockerRuntime};

/// brig's cleanup worker: every CLEANUP_INTERVAL_SECONDS, removes the expired,
/// over-age and orphaned sandboxes of this BRIG_INSTANCE (Redis store only).
/// Configured by the environment (README, .env.example).
#[derive(clap::Parser)]
#[command(name = "brig-cleanup-worker", version)]
struct Cli {
    /// Remove every sandbox (busy or not) and every session record of this
    /// BRIG_INSTANCE, then exit: for taking a deployment down (e.g. before
    /// `docker compose down`). Exits 1 if anything could not be removed.
    #[arg(long)]
    purge: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before anything starts (a pass removes containers): `--help`, `--version`
    // and unknown arguments end here.
    let Cli { purge } = <Cli as clap::Parser>::parse();
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
    let node = config.node.as_ref().map(|node| node.id.clone());
    let store = Arc::new(
        RedisStore::new(url, &config.sandbox.instance)
            .context("REDIS_URL")?
            .for_node(node.as_deref()),
    );
    let docker = config
        .docker
        .connect()
        .await
        .context("connecting to the Docker engine")?;
    let runtime = Arc::new(DockerRuntime::new(docker, config.sandbox.clone(), None));
    let reaper = Reaper::new(store, runtime, config.cleanup.clone(), config.sandbox.warm_pool_size).with_node(node);
    if purge {
        let summary = reaper.purge().await;
        println!(
            "purged instance {}: {} containers removed, {} session records deleted, {} errors",
            config.sandbox.instance, summary.containers_removed, summary.records_deleted, summary.errors
        );
        if summary.foreign_left > 0 {
            println!(
                "left {} containers of another store (another deployment with BRIG_INSTANCE={} on this engine)",
                summary.foreign_left, config.sandbox.instance
            );
        }
        std::process::exit(i32::from(summary.errors > 0));
    }
    // The worker's counters, on METRICS_PORT only (never without a port).
    if config.metrics.port.is_some() {
        let handle = exporter::install().context("installing the metrics recorder")?;
        exporter::serve_port(&config.metrics, &config.http, handle, None)
            .await
            .with_context(|| {
                format!(
                    "binding METRICS_PORT {}:{}",
                    config.metrics.host,
                    config.metrics.port.unwrap_or_default()
                )
            })?;
    }
    tracing::info!(
        instance = %config.sandbox.instance,
        interval_seconds = config.cleanup.interval.as_secs_f64(),
        "cleanup worker started"
    );
    reaper.run_until_stopped(brig_core::shutdown::signal()).await;
    tracing::info!("cleanup worker stopped");
    Ok(())
}
