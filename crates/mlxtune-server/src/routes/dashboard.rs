//! The browser dashboard: static files compiled into the binary and served at `/` and
//! `/dashboard/{file}`. They are public (no key); the page's own API calls carry the key.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// Name, content type, bytes: every file the page loads.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../dashboard/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../dashboard/style.css"),
    ),
    ("app.js", JS, include_str!("../../dashboard/app.js")),
    ("api.js", JS, include_str!("../../dashboard/api.js")),
    ("chart.js", JS, include_str!("../../dashboard/chart.js")),
    ("dom.js", JS, include_str!("../../dashboard/dom.js")),
    (
        "generate.js",
        JS,
        include_str!("../../dashboard/generate.js"),
    ),
    ("jobs.js", JS, include_str!("../../dashboard/jobs.js")),
    ("job.js", JS, include_str!("../../dashboard/job.js")),
    ("stream.js", JS, include_str!("../../dashboard/stream.js")),
    ("submit.js", JS, include_str!("../../dashboard/submit.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Only our own files; the WebSocket goes to this same origin.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Paths served without an API key.
pub fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/dashboard/")
}

/// `/` and `/dashboard/{file}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/dashboard/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
