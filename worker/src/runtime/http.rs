//! `/metrics` (Prometheus text) and `/health` (per-provider lights, 503 when
//! any provider is red) on `CONNECTOR_HTTP_ADDR`.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::health::{Health, Light};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once).
pub fn install_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn health_body(health: &Health) -> (StatusCode, Value) {
    let snap = health.snapshot();
    let providers: serde_json::Map<String, Value> = snap
        .iter()
        .map(|(name, (light, tasks))| (name.clone(), json!({"status": light, "tasks": tasks})))
        .collect();
    let worst = snap
        .values()
        .map(|(l, _)| *l)
        .fold(Light::Green, |a, b| match (a, b) {
            (Light::Red, _) | (_, Light::Red) => Light::Red,
            (Light::Yellow, _) | (_, Light::Yellow) => Light::Yellow,
            _ => Light::Green,
        });
    let code = if worst == Light::Red {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, json!({"status": worst, "providers": providers}))
}

/// Binds and serves in the background until shutdown.
pub async fn serve(
    addr: &str,
    metrics: PrometheusHandle,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("CONNECTOR_HTTP_ADDR={addr}: cannot listen: {e}"))?;
    let upkeep = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route(
            "/health",
            get(move || {
                let h = health.clone();
                async move {
                    let (code, body) = health_body(&h);
                    (code, Json(body))
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tracing::info!(%addr, "serving /metrics and /health");
    Ok(())
}
