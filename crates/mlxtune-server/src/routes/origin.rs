//! Requests a browser on another site can send without asking first — a form post, a
//! `text/plain` fetch, a WebSocket — are refused, so a page elsewhere cannot drive a server
//! that has no API keys. A state-changing request (POST, PUT, PATCH, DELETE) or a WebSocket
//! upgrade whose `Origin` is neither this server's own nor in `server.cors_origins` is 403;
//! a state-changing request with a body must say `application/json`
//! (`multipart/form-data` for file uploads), else 415.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The route that takes multipart bodies.
const UPLOADS: &str = "/v1/files";

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let host = req.uri().authority().map(|a| a.as_str().to_string());
    if (changes || upgrade)
        && !origin_allowed(req.headers(), host, &state.settings.server.cors_origins)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "requests from this origin are not allowed (server.cors_origins)",
        )
        .into_response();
    }
    if changes && !content_type_allowed(req.headers(), req.uri().path()) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send `Content-Type: application/json` (multipart/form-data for POST /v1/files)",
        )
        .into_response();
    }
    next.run(req).await
}

/// No `Origin` (not a browser's cross-site request), the server's own origin, or one of
/// `allowed` (`*`: any).
fn origin_allowed(headers: &HeaderMap, authority: Option<String>, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or(authority);
    origin
        .split_once("://")
        .is_some_and(|(_, o)| host.is_some_and(|h| h.eq_ignore_ascii_case(o)))
}

/// No content type (no body), JSON, or multipart on the upload route.
fn content_type_allowed(headers: &HeaderMap, path: &str) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || (essence == "multipart/form-data" && path == UPLOADS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn own_listed_and_absent_origins_pass_others_do_not() {
        let allowed = vec!["http://dash.test".to_string()];
        let own = headers(&[
            (header::ORIGIN, "http://127.0.0.1:8080"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        assert!(origin_allowed(&own, None, &allowed));
        assert!(origin_allowed(
            &headers(&[(header::ORIGIN, "http://dash.test")]),
            None,
            &allowed
        ));
        assert!(origin_allowed(&HeaderMap::new(), None, &allowed));
        let evil = headers(&[
            (header::ORIGIN, "http://evil.test"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        assert!(!origin_allowed(&evil, None, &allowed));
        assert!(origin_allowed(&evil, None, &["*".to_string()]));
        assert!(!origin_allowed(
            &headers(&[(header::ORIGIN, "null")]),
            None,
            &allowed
        ));
    }

    #[test]
    fn only_json_or_uploads_as_multipart_change_state() {
        let ct = |v: &str| headers(&[(header::CONTENT_TYPE, v)]);
        assert!(content_type_allowed(
            &ct("application/json; charset=utf-8"),
            "/x"
        ));
        assert!(content_type_allowed(&HeaderMap::new(), "/x"));
        assert!(!content_type_allowed(&ct("text/plain"), "/x"));
        assert!(!content_type_allowed(
            &ct("multipart/form-data; boundary=a"),
            "/x"
        ));
        assert!(content_type_allowed(
            &ct("multipart/form-data; boundary=a"),
            UPLOADS
        ));
        assert!(!content_type_allowed(
            &ct("application/x-www-form-urlencoded"),
            "/x"
        ));
    }
}
