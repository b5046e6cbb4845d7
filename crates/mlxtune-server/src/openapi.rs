//! The OpenAPI 3.1 document (`GET /openapi.json`), assembled by utoipa from the handlers'
//! annotations in `routes/` and the types of `api` (and the engine's config and metrics):
//! the schemas are derived from the very types the handlers send and receive.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::openapi_generic::GenericResponses;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "mlxtune", description = "Fine-tuning jobs on MLX: REST + WebSocket. \
        The job streams send a `Snapshot`, then `JobEvent`s."),
    paths(
        crate::routes::healthz,
        crate::routes::metrics::metrics,
        crate::routes::jobs::create,
        crate::routes::jobs::list,
        crate::routes::jobs::get,
        crate::routes::jobs::delete::delete,
        crate::routes::jobs::control::cancel,
        crate::routes::jobs::control::pause,
        crate::routes::jobs::control::resume,
        crate::routes::jobs::history::events,
        crate::routes::jobs::history::metrics,
        crate::routes::jobs::history::checkpoints,
        crate::routes::jobs::artifacts::download,
        crate::routes::files::upload,
        crate::routes::files::list,
        crate::routes::files::get_one,
        crate::routes::files::content,
        crate::routes::files::delete,
        crate::routes::stream::job_stream,
        crate::routes::stream::all_stream,
        crate::routes::models::list,
        crate::routes::models::get,
        crate::routes::models::register,
        crate::routes::models::delete,
        crate::routes::models::generate,
        crate::routes::inference::chat,
        crate::routes::inference::completions,
    ),
    components(schemas(crate::api::Snapshot, crate::api::JobEvent, crate::api::inference::ChatCompletionChunk)),
    modifiers(&BearerAuth, &GenericResponses),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(serde_json::Value::Null)
}
