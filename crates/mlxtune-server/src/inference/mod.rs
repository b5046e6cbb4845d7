//! Inference for the OpenAI-compatible routes: the policy beside training, requests
//! checked at the edge, then handed to the inference thread (`run`), which owns the loaded
//! models (`cache`) and generates one request at a time in arrival order.

pub mod cache;
pub mod run;

use std::sync::{Arc, Mutex};

use mlxtune_engine::generate::{Generation, SamplingOptions};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::registry::Resolved;
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

    /// Queues a request and waits until the inference thread has loaded the model and
    /// accepted the prompt (or said why not).
    pub async fn submit(
        &self,
        req: Request,
        mut pieces: mpsc::Receiver<Piece>,
    ) -> ApiResult<Ready> {
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            tx.send(req)
                .map_err(|e| ApiError::internal("the inference thread stopped", e))?;
        }
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
}

/// An accepted generation: the model's id and its pieces (text, then the end).
pub struct Ready {
    pub model: String,
    pub pieces: mpsc::Receiver<Piece>,
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
