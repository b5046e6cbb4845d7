//! The job object (`fine_tuning.job`) and its status.

use std::collections::BTreeMap;

use mlxtune_engine::train::config::BatchSize;
use mlxtune_engine::train::{FineTuneConfig, StepMetrics};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorDetail;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// The datasets' pre-flight runs in the background (files over
    /// `files.async_validation_bytes`); the job then becomes queued, or failed with the
    /// `file:line` error.
    #[serde(rename = "validating_files")]
    ValidatingFiles,
    Queued,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::ValidatingFiles,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The name stored in the database (the API's too, but for `validating_files`, which
    /// the database's schema calls `validating`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The name in the API (OpenAI's for `validating_files`).
    pub fn api_name(self) -> &'static str {
        match self {
            JobStatus::ValidatingFiles => "validating_files",
            other => other.as_str(),
        }
    }

    /// A final state: the job will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|j| j.as_str() == s || j.api_name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = JobStatus::ALL.iter().map(|j| j.api_name()).collect();
                format!("`{s}` is not one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.api_name())
    }
}

/// How far a job has come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub step: i64,
    pub total_steps: Option<i64>,
    pub completion_percentage: f64,
}

/// A fine-tuning job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// Always `fine_tuning.job`.
    pub object: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: JobStatus,
    pub name: Option<String>,
    /// The base model as the request named it.
    pub model: String,
    /// The output directory, once succeeded.
    pub fine_tuned_model: Option<String>,
    pub trained_tokens: i64,
    pub progress: Progress,
    /// The last optimizer step's figures.
    pub latest_metrics: Option<StepMetrics>,
    /// Unix time the job should finish at, while running.
    pub estimated_finish: Option<i64>,
    pub error: Option<ErrorDetail>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub output_dir: String,
    /// Once succeeded: what `/v1/fine_tuning/jobs/{id}/artifacts/{name}` offers
    /// (`metrics.csv`, `adapters.tar.gz`, `peft.tar.gz`, `model.tar.gz`).
    pub artifacts: Vec<String>,
    /// The configuration as submitted (remote dataset URIs kept).
    pub config: FineTuneConfig,
    /// OpenAI's names for the same job.
    #[serde(flatten)]
    pub openai: OpenAiJobFields,
}

/// OpenAI's `learning_rate_multiplier` scales this (LoRA's usual rate).
pub const BASE_LEARNING_RATE: f64 = 1e-4;

/// OpenAI's `hyperparameters` of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hyperparameters {
    pub n_epochs: f64,
    pub batch_size: BatchSize,
    /// `parameters.learningRate` / 1e-4.
    pub learning_rate_multiplier: f64,
}

/// `method.supervised`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SupervisedMethod {
    pub hyperparameters: Hyperparameters,
}

/// OpenAI's `method`: always `supervised` here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Method {
    #[serde(rename = "type")]
    pub kind: String,
    pub supervised: SupervisedMethod,
}

/// The fields OpenAI's job object has, taken from the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiJobFields {
    /// `dataset.trainingData` (a path, URI or file id).
    pub training_file: String,
    pub validation_file: Option<String>,
    pub hyperparameters: Hyperparameters,
    pub method: Method,
    pub seed: u64,
    /// OpenAI's `metadata` as submitted (at most 16 string pairs).
    pub metadata: Option<BTreeMap<String, String>>,
    /// Once the job succeeded: its metrics CSV as a file of the Files API (`file-…`,
    /// purpose `fine-tune-results`; `GET /v1/files/{id}/content`).
    pub result_files: Vec<String>,
}

/// The id of a job's results file: `file-` and the job id's own hex part.
pub fn results_file_id(job_id: &str) -> String {
    format!("file-{}", job_id.strip_prefix("ftjob-").unwrap_or(job_id))
}

/// The artifacts a succeeded job offers, by name: by its kind, so every node lists the same
/// (one without the files fetches them from the artifacts store when one is asked for).
pub fn artifact_names(full: bool) -> Vec<String> {
    let outputs: &[&str] = match full {
        true => &["model.tar.gz"],
        false => &["adapters.tar.gz", "peft.tar.gz"],
    };
    std::iter::once(&"metrics.csv")
        .chain(outputs)
        .map(|n| n.to_string())
        .collect()
}

impl OpenAiJobFields {
    pub fn from_config(c: &FineTuneConfig) -> OpenAiJobFields {
        let hyperparameters = Hyperparameters {
            n_epochs: c.parameters.epochs,
            batch_size: c.parameters.batch_size,
            learning_rate_multiplier: c.parameters.learning_rate / BASE_LEARNING_RATE,
        };
        OpenAiJobFields {
            training_file: c.dataset.training_data.clone(),
            validation_file: c.dataset.validation_data.clone(),
            method: Method {
                kind: "supervised".into(),
                supervised: SupervisedMethod {
                    hyperparameters: hyperparameters.clone(),
                },
            },
            hyperparameters,
            seed: c.seed.unwrap_or(0),
            metadata: None,
            result_files: Vec::new(),
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Job>,
    pub has_more: bool,
}

/// The answer to a deletion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_name() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(s.api_name().parse::<JobStatus>(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.api_name()));
        }
        let e = "validated".parse::<JobStatus>().unwrap_err();
        assert!(e.contains("validating_files, queued, running"), "{e}");
    }

    #[test]
    fn only_succeeded_failed_and_cancelled_are_final() {
        let finals: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            finals,
            vec![
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
        );
    }
}
