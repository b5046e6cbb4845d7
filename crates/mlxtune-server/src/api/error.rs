//! The error object every failed request gets:
//! `{"error": {"type", "code", "message", "param"}}` (OpenAI's shape), and a failed job's
//! `error` (`{"code", "message", "param"}`, as OpenAI's job object has it).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong with a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`invalid_request`, `not_found`, ...).
    pub code: String,
    pub message: String,
    /// The field path of the offending input, e.g. `parameters.learningRate`.
    pub param: Option<String>,
}

/// The class of a failed request, as OpenAI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// A 4xx about the request itself (bad field, wrong state, too large).
    InvalidRequestError,
    /// 401: no key.
    AuthenticationError,
    /// 403: a key that is not accepted.
    PermissionError,
    /// 404.
    NotFoundError,
    /// 5xx (503 included).
    ServerError,
}

impl ErrorType {
    /// The type of a response with this HTTP status.
    pub fn of_status(status: u16) -> ErrorType {
        match status {
            401 => ErrorType::AuthenticationError,
            403 => ErrorType::PermissionError,
            404 => ErrorType::NotFoundError,
            s if s >= 500 => ErrorType::ServerError,
            _ => ErrorType::InvalidRequestError,
        }
    }
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// A stable machine-readable code (`invalid_request`, `not_found`, ...).
    pub code: String,
    pub message: String,
    /// The field path of the offending input, e.g. `parameters.learningRate`.
    pub param: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: RequestError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_openais_error_types() {
        let t = |s| serde_json::to_value(ErrorType::of_status(s)).unwrap();
        assert_eq!(t(422), "invalid_request_error");
        assert_eq!(t(409), "invalid_request_error");
        assert_eq!(t(401), "authentication_error");
        assert_eq!(t(403), "permission_error");
        assert_eq!(t(404), "not_found_error");
        assert_eq!(t(503), "server_error");
    }
}
