//! A job's checkpoints (`fine_tuning.job.checkpoint`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Figures of the step a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointMetrics {
    pub train_loss: Option<f64>,
}

/// A complete checkpoint on disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// Always `fine_tuning.job.checkpoint`.
    pub object: String,
    /// `<job id>:step-NNNNNNNN`.
    pub id: String,
    pub step_number: i64,
    pub path: String,
    pub metrics: CheckpointMetrics,
}

/// A job's checkpoints, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Checkpoint>,
}
