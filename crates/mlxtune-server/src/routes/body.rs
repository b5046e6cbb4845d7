//! Request bodies parsed at the edge: JSON into the engine's config type, every problem a
//! 4xx naming the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::FineTuneConfig;
use serde_json::Value;

use crate::error::ApiError;

/// A fine-tuning config as the client sent it, parsed (not yet checked against models,
/// data or the configured roots: see `validate`).
pub struct ConfigBody(pub FineTuneConfig);

impl<S: Send + Sync> FromRequest<S> for ConfigBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(req, state)
            .await
            .map_err(rejection)?;
        let config = from_value(value).map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
        Ok(ConfigBody(config))
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
        serde_path_to_error::deserialize(value)
            .map(Body)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = if path == "." {
                    "(body)".to_string()
                } else {
                    path
                };
                ApiError::invalid(&param, e.into_inner().to_string())
            })
    }
}
