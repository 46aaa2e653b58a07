//! The Prometheus exporter both binaries serve: the recorder with brig's
//! buckets, the text exposition, and the `METRICS_PORT` router (with the
//! `METRICS_TOKEN` check when a token is set).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{HttpConfig, MetricsConfig};

/// Work done before each scrape (gauges read at scrape time).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Installs the process-wide recorder (once; `None` if another is installed).
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ])
        .ok()?
        .install_recorder()
        .ok()
}

/// The metrics as Prometheus text.
pub fn exposition(handle: &PrometheusHandle) -> Response {
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// The router of `METRICS_PORT`: `GET /metrics` and nothing else; with a
/// token set, only for `Authorization: Bearer <METRICS_TOKEN>`.
pub fn port_router(config: MetricsConfig, handle: PrometheusHandle, refresh: Option<Refresh>) -> axum::Router {
    let scrape = move |headers: HeaderMap| {
        let (config, handle, refresh) = (config.clone(), handle.clone(), refresh.clone());
        async move {
            let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if config.token.is_some() && !config.allows(authorization) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            if let Some(refresh) = refresh {
                refresh().await;
            }
            exposition(&handle)
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}

/// Serves [`port_router`] on `METRICS_PORT` (bound to `METRICS_HOST`) in the
/// background, with the same connection bounds as the API's port (`limits`:
/// header and write timeouts, connection caps; the one route reads no body);
/// nothing without a port.
pub async fn serve_port(
    config: &MetricsConfig,
    limits: &HttpConfig,
    handle: PrometheusHandle,
    refresh: Option<Refresh>,
) -> std::io::Result<()> {
    let Some(port) = config.port else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    let router = port_router(config.clone(), handle, refresh);
    let limits = limits.clone();
    tokio::spawn(async move {
        let served = crate::http_server::serve(listener, router, &limits, std::future::pending()).await;
        if let Err(err) = served {
            tracing::error!(%err, "the metrics port stopped");
        }
    });
    Ok(())
}
