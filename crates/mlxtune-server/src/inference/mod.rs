//! Inference for the OpenAI-compatible routes: the policy beside training, requests
//! checked at the edge, then handed to the inference thread (`run`), which owns the loaded
//! models (`cache`) and generates one request at a time in arrival order.

pub mod cache;
pub mod run;

use std::sync::{Arc, Mutex};

use mlxtune_engine::generate::{Generation, SamplingOptions};
use tokio::sync::mpsc;

use crate::api::inference::{ChatMessage, Sampling};
use crate::api::JobStatus;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, Resolved};
use crate::settings::DuringTraining;
use crate::state::AppState;
use crate::telemetry::Telemetry;
use cache::ModelCache;
use run::Piece;

/// What to generate from, as the inference thread takes it.
pub enum PromptInput {
    Text(String),
    Chat(Vec<serde_json::Value>),
}

impl PromptInput {
    /// The request field a problem with the prompt is about.
    pub fn param(&self) -> &'static str {
        match self {
            PromptInput::Text(_) => "prompt",
            PromptInput::Chat(_) => "messages",
        }
    }
}

/// One generation request for the inference thread.
pub struct Request {
    pub resolved: Resolved,
    pub prompt: PromptInput,
    pub max_tokens: Option<u32>,
    pub sampling: SamplingOptions,
    pub stop: Vec<String>,
    pub reply: mpsc::Sender<Piece>,
}

/// The handle to the inference thread.
pub struct Inference {
    tx: Mutex<std::sync::mpsc::Sender<Request>>,
    loaded: Arc<Mutex<Vec<String>>>,
}

impl Inference {
    /// Starts the inference thread with a memory budget for loaded models.
    pub fn start(
        memory_budget_bytes: u64,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Inference> {
        let (tx, rx) = std::sync::mpsc::channel();
        let loaded = Arc::new(Mutex::new(Vec::new()));
        let published = loaded.clone();
        std::thread::Builder::new()
            .name("mlxtune-inference".into())
            .spawn(move || {
                let cache = ModelCache::new(memory_budget_bytes, published);
                run::serve(rx, cache, telemetry)
            })?;
        Ok(Inference {
            tx: Mutex::new(tx),
            loaded,
        })
    }

    /// The ids of the loaded models, least recently used first.
    pub fn loaded(&self) -> Vec<String> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn submit(&self, req: Request) -> ApiResult<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.send(req)
            .map_err(|e| ApiError::internal("the inference thread stopped", e))
    }
}

/// An accepted generation: the model's id and its pieces (text, then the end).
pub struct Ready {
    pub model: String,
    pub pieces: mpsc::Receiver<Piece>,
}

/// What a route asks for.
pub enum Prompt<'a> {
    Text(&'a str),
    Chat(&'a [ChatMessage]),
}

/// Checks the request, resolves the model, and waits until the inference thread has
/// loaded it and accepted the prompt.
pub async fn prepare(
    state: &AppState,
    model: &str,
    prompt: Prompt<'_>,
    s: &Sampling,
) -> ApiResult<Ready> {
    let sampling = sampling_options(s)?;
    let prompt = match prompt {
        Prompt::Text(t) => PromptInput::Text(t.to_string()),
        Prompt::Chat([]) => {
            return Err(ApiError::invalid(
                "messages",
                "must hold at least one message",
            ))
        }
        Prompt::Chat(m) => PromptInput::Chat(
            m.iter()
                .map(|m| serde_json::to_value(m).unwrap_or_default())
                .collect(),
        ),
    };
    if s.max_tokens == Some(0) {
        return Err(ApiError::invalid("max_tokens", "must be >= 1"));
    }
    let resolved = match registry::resolve(state, model, "model").await {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(still_training(state, model).await?.unwrap_or(e))
        }
        other => other?,
    };
    check_policy(state)?;
    let (reply, mut pieces) = mpsc::channel(256);
    state.inference.submit(Request {
        resolved,
        prompt,
        max_tokens: s.max_tokens,
        sampling,
        stop: s.stop.clone(),
        reply,
    })?;
    match pieces.recv().await {
        Some(Piece::Started { model }) => Ok(Ready { model, pieces }),
        Some(Piece::Rejected(e)) => Err(e),
        Some(Piece::Failed(e)) => Err(ApiError::internal("generation", e)),
        _ => Err(ApiError::internal(
            "generation",
            "the inference thread gave no answer",
        )),
    }
}

/// Waits for the whole generation.
pub async fn complete(mut ready: Ready) -> ApiResult<Generation> {
    while let Some(p) = ready.pieces.recv().await {
        match p {
            Piece::Done(g) => return Ok(g),
            Piece::Failed(e) => return Err(ApiError::internal("generation", e)),
            Piece::Rejected(e) => return Err(e),
            Piece::Started { .. } | Piece::Text(_) => {}
        }
    }
    Err(ApiError::internal("generation", "stopped without an end"))
}

/// 503 while a job trains, unless `inference.during_training = "share"`.
fn check_policy(state: &AppState) -> ApiResult<()> {
    if state.settings.inference.during_training == DuringTraining::Share {
        return Ok(());
    }
    if state
        .controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
    {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "busy_training",
        "a training job is running and inference.during_training is \"refuse\"; retry when it ends, or set inference.during_training = \"share\"",
    ))
}

/// A 409 when `model` is the fine-tuned id of a job that has not succeeded (yet).
async fn still_training(state: &AppState, model: &str) -> ApiResult<Option<ApiError>> {
    let Some(job_id) = model.strip_prefix("ft:").and_then(|m| m.rsplit(':').next()) else {
        return Ok(None);
    };
    Ok(db::get_job(&state.db, job_id).await?.and_then(|j| {
        (j.status != JobStatus::Succeeded).then(|| {
            ApiError::conflict(format!(
                "`{model}` is not ready: its job {job_id} is {}",
                j.status
            ))
        })
    }))
}

fn sampling_options(s: &Sampling) -> ApiResult<SamplingOptions> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", "must be between 0 and 2"));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "must be in (0, 1]"));
    }
    Ok(SamplingOptions {
        temperature,
        top_p,
        seed: s.seed,
        ..SamplingOptions::default()
    })
}
