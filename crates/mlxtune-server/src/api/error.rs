//! The error object every failed request gets: `{"error": {"code", "message", "param"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`invalid_request`, `not_found`, ...).
    pub code: String,
    pub message: String,
    /// The field path of the offending input, e.g. `parameters.learningRate`.
    pub param: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
