//! The API's error type: a status and `{"error": {"type", "code", "message", "param"}}`. Server
//! errors hide their cause from the client; it is logged where it happens.

use crate::api::{ErrorBody, ErrorType, RequestError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_request",
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// A 404 about a named input (`param`), e.g. an unknown model.
    pub fn not_found_param(param: &str, what: &str) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::not_found(what)
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_state", message)
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }
}

impl ApiError {
    /// 507: the disk is full; nothing was changed.
    pub fn disk_full() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "the server's disk is full: nothing was changed; retry once space is freed",
        )
    }
}

/// Whether a database error is a full disk: SQLite's "database or disk is full"
/// (SQLITE_FULL) or PostgreSQL's `disk_full` (53100).
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c == "13" || c == "53100")
                || d.message().contains("disk is full")
        }
        sqlx::Error::Io(io) => io.raw_os_error() == Some(28),
        _ => false,
    }
}

/// Whether the database could not take the request now: SQLite's "database is locked"
/// (SQLITE_BUSY, SQLITE_LOCKED: another writer held it past the busy timeout), PostgreSQL's
/// serialization failure, deadlock, lock timeout or a server starting or shutting down
/// (40001, 40P01, 55P03, 57P01–57P03), or no pooled connection within its timeout.
fn is_busy(e: &sqlx::Error) -> bool {
    const BUSY: [&str; 8] = [
        "5", "6", "40001", "40P01", "55P03", "57P01", "57P02", "57P03",
    ];
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| BUSY.contains(&c.as_ref())),
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_busy(&e) {
            tracing::warn!(error = %e, "database write refused: the database is busy");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_busy",
                "the database is busy: nothing was changed; retry in a few seconds",
            );
        }
        if is_disk_full(&e) {
            tracing::error!(error = %e, "database write refused: the disk is full");
            return ApiError::disk_full();
        }
        ApiError::internal("database", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: RequestError {
                kind: ErrorType::of_status(self.status.as_u16()),
                code: self.code.into(),
                message: self.message,
                param: self.param,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
