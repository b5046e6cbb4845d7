//! A job's checkpoints (`fine_tuning.job.checkpoint`, OpenAI's shape plus `path`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Figures of the step a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointMetrics {
    pub step: i64,
    pub train_loss: Option<f64>,
    /// From the validation pass at this step, if one ran.
    pub valid_loss: Option<f64>,
    pub valid_mean_token_accuracy: Option<f64>,
    pub valid_perplexity: Option<f64>,
}

/// A complete checkpoint on disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// Always `fine_tuning.job.checkpoint`.
    pub object: String,
    /// `ftckpt_<job>_<step>`.
    pub id: String,
    pub fine_tuning_job_id: String,
    /// Unix time the checkpoint was written.
    pub created_at: i64,
    pub step_number: i64,
    /// Its directory on the server.
    pub path: String,
    pub metrics: CheckpointMetrics,
}

/// The checkpoint id of `step` of `job` (`ftjob-abc` → `ftckpt_abc_12`).
pub fn checkpoint_id(job: &str, step: u64) -> String {
    format!(
        "ftckpt_{}_{step}",
        job.strip_prefix("ftjob-").unwrap_or(job)
    )
}

/// The step a checkpoint id of `job` names.
pub fn checkpoint_step(job: &str, id: &str) -> Option<u64> {
    let prefix = checkpoint_id(job, 0);
    id.strip_prefix(prefix.strip_suffix('0')?)?.parse().ok()
}

/// A page of a job's checkpoints, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Checkpoint>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_ids_name_the_job_and_step_and_read_back() {
        let id = checkpoint_id("ftjob-abc", 12);
        assert_eq!(id, "ftckpt_abc_12");
        assert_eq!(checkpoint_step("ftjob-abc", &id), Some(12));
        assert_eq!(checkpoint_step("ftjob-abd", &id), None);
        assert_eq!(checkpoint_step("ftjob-abc", "ftckpt_abc_x"), None);
    }
}
