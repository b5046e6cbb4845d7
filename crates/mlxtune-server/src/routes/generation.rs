//! From an inference request to an accepted generation: the model's name through the
//! registry, the policy beside training, the sampling fields checked, then the request
//! handed to the inference thread.

use mlxtune_engine::generate::SamplingOptions;
use tokio::sync::mpsc;

use super::names;
use crate::api::inference::{ChatMessage, Sampling};
use crate::api::JobStatus;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::inference::{PromptInput, Ready, Request};
use crate::settings::DuringTraining;
use crate::state::AppState;

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
    let resolved = match names::resolve(state, model, "model").await {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(still_training(state, model).await?.unwrap_or(e))
        }
        other => other?,
    };
    check_policy(state)?;
    let (reply, pieces) = mpsc::channel(256);
    let req = Request {
        resolved,
        prompt,
        max_tokens: s.max_tokens,
        sampling,
        stop: s.stop.clone(),
        reply,
    };
    state.inference.submit(req, pieces).await
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
