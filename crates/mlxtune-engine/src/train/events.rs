//! What the trainer reports and how its caller answers: [`Event`]s out, a [`Control`] back
//! after each, and the [`TrainResult`] at the end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::DataStats;

/// Figures of one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct StepMetrics {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub total_epochs: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    /// Loss tokens per second.
    pub tokens_per_second: f64,
    /// All non-padding tokens per second.
    pub all_tokens_per_second: f64,
    pub padding_waste: f64,
    pub trained_tokens: u64,
    pub peak_memory_bytes: u64,
    pub active_memory_bytes: u64,
    pub elapsed_seconds: f64,
    pub eta_seconds: f64,
    pub completion_percentage: f64,
    /// fp16 updates skipped for overflow so far in the run (each retried at a lower loss
    /// scale on the same micro-batches).
    #[serde(default)]
    pub skipped_steps: u64,
}

/// A validation pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EvalMetrics {
    pub step: u64,
    pub val_loss: f64,
    pub val_perplexity: f64,
    pub val_token_accuracy: f64,
    pub val_tokens: u64,
    pub is_best: bool,
}

/// How much a message matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The pre-flight: data and plan, reported before the first step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Started {
    pub total_steps: u64,
    pub start_step: u64,
    pub trainable_parameters: u64,
    pub micro_batch_size: u32,
    pub micro_batches_per_step: u32,
    pub train: DataStats,
    pub validation: Option<DataStats>,
    pub batches_per_epoch: usize,
}

/// What the trainer reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Started(Started),
    Step(StepMetrics),
    Eval(EvalMetrics),
    Checkpoint { step: u64, path: PathBuf },
    Message { level: Level, text: String },
}

impl Event {
    pub(crate) fn info(text: String) -> Event {
        Event::Message {
            level: Level::Info,
            text,
        }
    }

    pub(crate) fn warn(text: String) -> Event {
        Event::Message {
            level: Level::Warn,
            text,
        }
    }
}

/// The callback's answer after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Checkpoint now and return (`Outcome::Paused`).
    Pause,
    /// Return without a checkpoint (`Outcome::Cancelled`).
    Cancel,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    EarlyStopped,
    Paused,
    Cancelled,
}

/// Result of [`super::train`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainResult {
    pub outcome: Outcome,
    pub step: u64,
    pub total_steps: u64,
    pub final_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub trained_tokens: u64,
    /// fp16 updates skipped for overflow (see [`StepMetrics::skipped_steps`]).
    #[serde(default)]
    pub skipped_steps: u64,
}
