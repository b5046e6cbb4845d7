//! Every error response is the API's JSON error object, including those axum's extractors
//! and router write as plain text or leave empty: a query string that does not parse (400),
//! no such route (404), a method the route does not take (405, keeping `Allow`), a stream
//! request that is not a WebSocket upgrade (400/426).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The longest plain-text error body kept as the message.
const MAX_TEXT: usize = 4096;

pub async fn as_json(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::NOT_FOUND if text.is_empty() => {
            ("not_found", format!("no route {method} {path}"))
        }
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("{path} does not take {method} (see the Allow header)"),
        ),
        StatusCode::UPGRADE_REQUIRED => ("upgrade_required", text),
        s if s.is_server_error() => ("internal_error", "internal server error".into()),
        s if text.is_empty() => (
            "invalid_request",
            s.canonical_reason().unwrap_or("error").to_string(),
        ),
        _ => ("invalid_request", text),
    };
    let param = query_field(&message);
    let mut out = ApiError {
        param,
        ..ApiError::new(status, code, message)
    }
    .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The field axum's `Query` extractor names (`Failed to deserialize query string: limit:
/// invalid digit found in string` → `limit`).
fn query_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Failed to deserialize query string: ")?;
    let (field, _) = rest.split_once(": ")?;
    (!field.is_empty() && !field.contains(' ')).then(|| field.to_string())
}
