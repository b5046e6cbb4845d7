//! Job events (`fine_tuning.job.event`): what the trainer and the service reported, as
//! stored, listed and streamed.

use std::path::PathBuf;

use mlxtune_engine::train::{EvalMetrics, Level, Started, StepMetrics};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::job::JobStatus;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A message (pre-flight, warnings, control requests).
    Message,
    /// The job changed state.
    Status,
    /// A validation pass.
    Metrics,
    /// A checkpoint was written.
    Checkpoint,
    /// An optimizer step's figures (the product document's real-time update).
    MlxTrainingUpdate,
}

impl EventKind {
    const ALL: [EventKind; 5] = [
        EventKind::Message,
        EventKind::Status,
        EventKind::Metrics,
        EventKind::Checkpoint,
        EventKind::MlxTrainingUpdate,
    ];

    /// The name stored in the database and sent in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Status => "status",
            EventKind::Metrics => "metrics",
            EventKind::Checkpoint => "checkpoint",
            EventKind::MlxTrainingUpdate => "mlx_training_update",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A step's figures as streamed: the trainer's metrics plus the product document's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingUpdate {
    #[serde(flatten)]
    pub metrics: StepMetrics,
    pub current_loss: f64,
    /// MLX's active memory.
    pub gpu_memory_used: u64,
    /// MLX's memory limit (0 when it reports none).
    pub gpu_memory_total: u64,
}

/// A checkpoint written at `step` into `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointSaved {
    pub step: u64,
    #[schema(value_type = String)]
    pub path: PathBuf,
}

/// The state a job moved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub status: JobStatus,
}

/// The structured part of an event; which one follows from the event's `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventData {
    TrainingUpdate(TrainingUpdate),
    Validation(EvalMetrics),
    Checkpoint(CheckpointSaved),
    Started(Started),
    Status(StatusChange),
}

impl EventData {
    /// The step the event is about, for the kinds that are about one.
    pub fn step(&self) -> Option<u64> {
        match self {
            EventData::TrainingUpdate(u) => Some(u.metrics.step),
            EventData::Validation(v) => Some(v.step),
            EventData::Checkpoint(c) => Some(c.step),
            EventData::Started(_) | EventData::Status(_) => None,
        }
    }
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// OpenAI's `ftevent-<n>`, `n` increasing across all jobs; `?after=` continues after
    /// one (the sequence number inside; `after` also takes the bare number).
    #[serde(with = "super::event_id")]
    #[schema(value_type = String, example = "ftevent-42")]
    pub id: i64,
    /// Always `fine_tuning.job.event`.
    pub object: String,
    pub job_id: String,
    pub created_at: i64,
    pub level: Level,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub message: String,
    pub data: Option<EventData>,
}

/// A page of a job's events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<JobEvent>,
    pub has_more: bool,
}

/// A job's per-step figures, in step order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricsList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<StepMetrics>,
}

/// The first message of a job stream: the job as it is now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Always `snapshot`.
    #[serde(rename = "type")]
    pub kind: String,
    pub job: super::job::Job,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }

    #[test]
    fn event_data_reads_back_as_the_variant_it_was() {
        let status = EventData::Status(StatusChange {
            status: JobStatus::Paused,
        });
        let ckpt = EventData::Checkpoint(CheckpointSaved {
            step: 3,
            path: "/x/step-3".into(),
        });
        for d in [status, ckpt] {
            let text = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<EventData>(&text).unwrap(), d);
        }
    }
}
