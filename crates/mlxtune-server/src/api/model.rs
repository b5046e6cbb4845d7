//! Models (`/v1/models`): OpenAI's model object with mlxtune's lineage beside it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Registered by directory, GGUF file or Hugging Face id.
    Base,
    /// Made by a fine-tuning job.
    FineTuned,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Base => "base",
            ModelKind::FineTuned => "fine_tuned",
        }
    }
}

/// How a fine-tuned model was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    /// The base model as the job named it.
    pub base_model: String,
    pub job_id: String,
    /// The checkpoint the final weights come from.
    pub checkpoint: Option<String>,
    pub train_loss: Option<f64>,
    pub valid_loss: Option<f64>,
    /// The adapter directory (LoRA, DoRA, QLoRA), usable with `--adapter`.
    pub adapter_path: Option<String>,
    /// The model directory of a full fine-tune.
    pub fused_path: Option<String>,
}

/// A model the service can train from and serve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    pub kind: ModelKind,
    /// What was registered: a directory, a `.gguf` file or a Hugging Face id.
    pub source: String,
    /// The local directory, once there is one.
    pub path: Option<String>,
    /// For fine-tuned models.
    pub lineage: Option<Lineage>,
    /// Whether it is loaded for inference now.
    #[serde(default)]
    pub loaded: bool,
}

/// Every registered model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelObject>,
}

/// `POST /v1/models`: registers a base model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModel {
    /// The name to serve it under (default: `source`).
    pub id: Option<String>,
    /// A model directory or `.gguf` file under the model roots, or a Hugging Face id
    /// (`org/name`, downloaded now).
    pub source: String,
}

/// The answer to a deletion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelDeleted {
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub deleted: bool,
}

/// The id a succeeded job's model is served under: `ft:<base>:<suffix>:<job id>` (OpenAI's
/// shape; `/` in a Hugging Face base becomes `--`, so the id is one path segment).
pub fn fine_tuned_id(base: &str, suffix: Option<&str>, job_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.replace('/', "--")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let suffix = suffix.map(clean).filter(|s| !s.is_empty());
    format!(
        "ft:{}:{}:{job_id}",
        clean(base),
        suffix.as_deref().unwrap_or("mlxtune")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_tuned_ids_are_one_path_segment() {
        assert_eq!(
            fine_tuned_id("lfm2-tiny", None, "ftjob-1"),
            "ft:lfm2-tiny:mlxtune:ftjob-1"
        );
        assert_eq!(
            fine_tuned_id("LiquidAI/LFM2-1.2B", Some("my run!"), "ftjob-2"),
            "ft:LiquidAI--LFM2-1.2B:my-run-:ftjob-2"
        );
    }
}
