//! The admin HTTP listener (`admin.listen`, loopback by default): `/metrics` (Prometheus
//! text format), `/healthz` (alive) and `/readyz` (ready to take mail). It holds no
//! address and no secret (see [`crate::metrics`]). Pages added later (the dashboard,
//! behind a login) are routers of their own merged into [`router`]'s, with their own
//! layers, so these three stay open to the scraper.

mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::delivery::QueueHandle;
use crate::metrics::{CONTENT_TYPE, Gauges, Metrics};
use crate::trace::Tracer;
pub use health::Readiness;

/// What the pages read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub queue: QueueHandle,
    /// For its count of dropped trace events.
    pub tracer: Tracer,
    /// The queue alert is raised.
    pub alert_active: Arc<AtomicBool>,
    pub readiness: Readiness,
}

/// The routes of the admin listener.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop` turns true, then lets requests under way
/// finish.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let snap = s.queue.snapshot(0).await.unwrap_or_default();
    let now = crate::srs::unix_now();
    let gauges = Gauges {
        queued: snap.queued as u64,
        oldest_age_secs: snap
            .oldest
            .as_ref()
            .map_or(0, |(_, at)| now.saturating_sub(*at)),
        over_hour: snap.over_hour as u64,
        in_flight: snap.in_flight as u64,
        alert_active: s.alert_active.load(Ordering::Relaxed),
        trace_dropped: s.tracer.dropped(),
    };
    let text = s.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    match s.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
