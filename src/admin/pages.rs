//! The dashboard's files: one HTML page, its script and its style sheet, built into the
//! binary (no build step, nothing fetched from the internet). The page loads nothing
//! from elsewhere, which its Content-Security-Policy enforces.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AdminState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route(
            "/",
            get(|| file("text/html; charset=utf-8", include_str!("web/index.html"))),
        )
        .route(
            "/ui/app.js",
            get(|| file("text/javascript; charset=utf-8", include_str!("web/app.js"))),
        )
}

/// `GET /ui/style.css`: open, for the login page too.
pub async fn style() -> Response {
    file("text/css; charset=utf-8", include_str!("web/style.css")).await
}

pub(super) async fn file(content_type: &'static str, body: &'static str) -> Response {
    (headers(content_type), body).into_response()
}

/// The headers of every page and file: no caching, nothing loaded from elsewhere, no
/// framing, no sniffing, no referrer.
pub(super) fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}
