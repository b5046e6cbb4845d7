//! The router: routes, authentication, body limit, CORS, request ids and tracing.

mod bearer;
mod body;
pub mod dashboard;
pub mod files;
mod generation;
pub mod inference;
pub mod jobs;
mod json_errors;
pub mod metrics;
pub mod models;
mod names;
mod origin;
pub mod stream;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::Health;
use crate::error::ApiError;
use crate::state::{sha256_hex, AppState};

/// Liveness; never needs a key.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        backend: mlxtune_engine::runtime::backend().into(),
    })
}

/// The OpenAPI document, generated once at start from the types the handlers use.
async fn openapi_json(State(state): State<AppState>) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    (json, state.openapi.to_string()).into_response()
}

/// With API keys configured: no key (header, or WebSocket subprotocol: `bearer.rs`) is 401,
/// an unknown key 403.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.key_hashes.is_empty()
        || req.uri().path() == "/healthz"
        || req.uri().path() == "/openapi.json"
        || dashboard::is_public(req.uri().path())
    {
        return next.run(req).await;
    }
    let presented = bearer::presented_key(req.headers());
    match presented {
        None | Some("") => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <key>`",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Some(key) if state.key_hashes.contains(&sha256_hex(key)) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key is not accepted",
        )
        .into_response(),
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    if origins.iter().any(|o| o == "*") {
        return CorsLayer::permissive();
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods(Any)
        .allow_headers(Any)
}

/// A worker process's routes (`server.role = "worker"`): liveness and its Prometheus
/// metrics, behind the same key check; everything else is the JSON 404.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(json_errors::as_json))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// All routes over `state`; tests call this without a socket.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.server.max_body_bytes;
    let cors = cors(&state.settings.server.cors_origins);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/fine_tuning/jobs", post(jobs::create).get(jobs::list))
        .route(
            "/v1/fine_tuning/jobs/{id}",
            get(jobs::get).delete(jobs::delete::delete),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/cancel",
            post(jobs::control::cancel),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/pause",
            post(jobs::control::pause),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/resume",
            post(jobs::control::resume),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/events",
            get(jobs::history::events),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/metrics",
            get(jobs::history::metrics),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(jobs::history::checkpoints),
        )
        .route("/v1/fine_tuning/jobs/{id}/stream", get(stream::job_stream))
        .route("/v1/fine_tuning/stream", get(stream::all_stream))
        .route("/v1/models", get(models::list).post(models::register))
        .route("/v1/models/{id}", get(models::get).delete(models::delete))
        .route("/v1/models/{id}/generate", post(models::generate))
        .route("/v1/chat/completions", post(inference::chat))
        .route("/v1/completions", post(inference::completions))
        .merge(files::routes(&state))
        .merge(jobs::artifacts::routes())
        .merge(dashboard::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), origin::guard))
        .layer(middleware::from_fn(json_errors::as_json))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(cors)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
