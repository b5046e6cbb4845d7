//! Request bodies parsed at the edge: JSON into the engine's config type, every problem a
//! 4xx naming the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::strict::unknown_field;
use mlxtune_engine::train::FineTuneConfig;
use serde_json::Value;

use crate::error::ApiError;

/// A job body as the client sent it: the product config, OpenAI's job body, or both (see
/// `jobs/openai.rs`), parsed strictly (not yet checked against models, data or the
/// configured roots: see `validate`).
pub struct ConfigBody {
    pub config: FineTuneConfig,
    /// OpenAI's `metadata`.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// `parameters.sequenceLength` came from the OpenAI body's default: cap it at the
    /// model's context.
    pub default_sequence_length: bool,
}

impl<S: Send + Sync> FromRequest<S> for ConfigBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(req, state)
            .await
            .map_err(rejection)?;
        let mapped = super::jobs::openai::map(value)?;
        let config =
            from_value(mapped.config).map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
        Ok(ConfigBody {
            config,
            metadata: mapped.metadata,
            default_sequence_length: mapped.default_sequence_length,
        })
    }
}

fn rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "the request body is over the size limit",
        );
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", r.body_text())
}

/// Any JSON body type, parsed with the path of the first problem as `param`
/// (`messages[1].content`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(req, state)
            .await
            .map_err(rejection)?;
        parse_named(value).map(Body)
    }
}

/// Deserializes `value`, naming the path of the first problem as `param` and the closest
/// known name of an unknown field.
pub fn parse_named<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some((param, message)) = unknown_field(&path, &inner) {
            return ApiError::invalid(&param, format!("{param} {message}"));
        }
        let param = if path == "." {
            "(body)".to_string()
        } else {
            path
        };
        ApiError::invalid(&param, inner)
    })
}
