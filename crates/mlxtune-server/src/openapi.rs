//! The OpenAPI 3.1 document (`GET /openapi.json`), generated with utoipa from the handler
//! annotations in `routes/` and the schemas below (documentation shapes of the JSON the
//! handlers read and write).

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    /// Name or `local://` URI under the dataset roots.
    training_data: String,
    validation_data: Option<String>,
    /// chat | completion | text | custom
    format: Option<String>,
    /// For `custom`: `{"prompt": "...{field}...", "completion": "{field}"}`.
    #[schema(value_type = Option<Object>)]
    template: Option<Value>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    learning_rate: f64,
    /// A number or "auto".
    #[schema(value_type = Object)]
    batch_size: Value,
    epochs: f64,
    sequence_length: u32,
    lora_rank: Option<u32>,
    lora_alpha: Option<f64>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Optimization {
    gradient_checkpointing: Option<bool>,
    /// bf16 | fp16 | fp32
    mixed_precision: Option<String>,
    apple_silicon_optimized: Option<bool>,
    compile: Option<bool>,
}

/// The product document's `MLXFineTuneConfig` with mlxtune's optional extensions
/// (docs/training.md lists every field).
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FineTuneConfig {
    /// Model directory name or `local://` URI under the model roots.
    base_model: String,
    dataset: Dataset,
    parameters: Parameters,
    optimization: Option<Optimization>,
    /// lora | dora | qlora | full
    fine_tune_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    lora: Option<Value>,
    #[schema(value_type = Option<Object>)]
    quantization: Option<Value>,
    #[schema(value_type = Option<Object>)]
    optimizer: Option<Value>,
    #[schema(value_type = Option<Object>)]
    schedule: Option<Value>,
    max_grad_norm: Option<f64>,
    gradient_accumulation_steps: Option<u32>,
    max_steps: Option<u64>,
    seed: Option<u64>,
    #[schema(value_type = Option<Object>)]
    eval: Option<Value>,
    #[schema(value_type = Option<Object>)]
    early_stopping: Option<Value>,
    #[schema(value_type = Option<Object>)]
    checkpoint: Option<Value>,
    packing: Option<bool>,
    train_on_inputs: Option<bool>,
    num_layers: Option<u32>,
    name: Option<String>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Progress {
    step: i64,
    total_steps: Option<i64>,
    completion_percentage: f64,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorDetail {
    code: String,
    message: String,
    /// The field path of the offending input, e.g. `parameters.learningRate`.
    param: Option<String>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Job {
    id: String,
    object: String,
    created_at: i64,
    updated_at: i64,
    /// queued | running | paused | succeeded | failed | cancelled
    status: String,
    name: Option<String>,
    model: Option<String>,
    /// Output directory once succeeded.
    fine_tuned_model: Option<String>,
    trained_tokens: i64,
    progress: Progress,
    #[schema(value_type = Option<Object>)]
    latest_metrics: Option<Value>,
    estimated_finish: Option<i64>,
    error: Option<ErrorDetail>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    output_dir: String,
    #[schema(value_type = Object)]
    config: Value,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct JobList {
    object: String,
    data: Vec<Job>,
    has_more: bool,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct JobEvent {
    id: i64,
    object: String,
    job_id: String,
    created_at: i64,
    /// info | warn | error
    level: String,
    /// message | status | metrics | checkpoint | mlx_training_update
    #[schema(rename = "type")]
    kind: String,
    message: String,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct EventList {
    object: String,
    data: Vec<JobEvent>,
    has_more: bool,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct MetricsList {
    object: String,
    /// One object per optimizer step (docs/training.md, metrics.jsonl).
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Checkpoint {
    object: String,
    id: String,
    step_number: i64,
    path: String,
    #[schema(value_type = Object)]
    metrics: Value,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct CheckpointList {
    object: String,
    data: Vec<Checkpoint>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Deleted {
    id: String,
    object: String,
    deleted: bool,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Health {
    status: String,
    backend: String,
}

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
    info(title = "mlxtune", description = "Fine-tuning jobs on MLX: REST + WebSocket."),
    paths(
        crate::routes::healthz,
        crate::routes::jobs::create,
        crate::routes::jobs::list,
        crate::routes::jobs::get,
        crate::routes::jobs::delete,
        crate::routes::jobs::cancel,
        crate::routes::jobs::pause,
        crate::routes::jobs::resume,
        crate::routes::jobs::events,
        crate::routes::jobs::metrics,
        crate::routes::jobs::checkpoints,
        crate::routes::stream::job_stream,
        crate::routes::stream::all_stream,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}
