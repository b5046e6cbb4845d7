//! The API's JSON shapes, typed: what handlers take and return, what the stream sends, and
//! what the OpenAPI document is generated from (one definition each). Rows of the database
//! become these in one place each (`From<JobRow>`, `From<EventRow>`).

pub mod checkpoint;
pub mod error;
pub mod event;
pub mod event_id;
pub mod file;
pub mod inference;
pub mod job;
pub mod model;

pub use checkpoint::{Checkpoint, CheckpointList, CheckpointMetrics};
pub use error::{ErrorBody, ErrorDetail, ErrorType, RequestError};
pub use event::{
    CheckpointSaved, EventData, EventKind, EventList, JobEvent, MetricsList, Snapshot,
    StatusChange, TrainingUpdate,
};
pub use job::{Deleted, Job, JobList, JobStatus, Progress};
pub use model::{
    fine_tuned_id, Lineage, ModelDeleted, ModelKind, ModelList, ModelObject, RegisterModel,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Liveness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// The MLX backend of this build: cpu, cuda or metal.
    pub backend: String,
}
