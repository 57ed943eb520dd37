//! The admin HTTP listener (`admin.listen`, loopback by default): the mail flow
//! dashboard (`/`, its JSON API under `/api/`) and `/metrics` (Prometheus text format),
//! all behind the login of [`auth`]; `/healthz` (alive) and `/readyz` (ready to take
//! mail) stay open, for probes: they tell nothing about the mail.

mod api;
pub mod auth;
mod health;
mod listener;
mod pages;
mod reports;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::delivery::QueueHandle;
use crate::metrics::{CONTENT_TYPE, Gauges, Metrics};
use crate::trace::{self, Tracer};
use auth::Auth;
pub use health::Readiness;
pub use listener::{AdminListener, Peer};

/// What the pages read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub queue: QueueHandle,
    /// For its count of dropped trace events.
    pub tracer: Tracer,
    /// The queue alert is raised.
    pub alert_active: Arc<AtomicBool>,
    /// `alerts.queue_threshold`, shown with the alert.
    pub alert_threshold: usize,
    pub readiness: Readiness,
    /// Where the trace is, for the pages' searches; `None` when it is off.
    pub trace_store: Option<trace::Store>,
    pub auth: Arc<Auth>,
    /// The configuration file `serve` was started with, read again by Explain.
    pub config_file: Option<std::path::PathBuf>,
    /// Where stored-form SRS addresses' senders are, for Explain.
    pub sender_store: crate::sender_store::SenderStore,
}

/// The routes of the admin listener.
pub fn router(state: Arc<AdminState>) -> Router {
    let behind_login = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/session", get(auth::session))
        .route("/logout", post(auth::logout))
        .merge(pages::routes())
        .merge(api::routes())
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_login,
        ));
    let login = Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/ui/style.css", get(pages::style))
        .with_state(state.auth.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(behind_login)
        .with_state(state)
        .merge(login)
}

/// Serves `router` on `listener` until `stop` turns true, then lets requests under way
/// finish.
pub async fn serve(listener: AdminListener, router: Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let service = router.into_make_service_with_connect_info::<Peer>();
    if let Err(e) = axum::serve(listener, service)
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
