//! The `jobs` table: a job's configuration, validated spec, state and progress.

use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::{FineTuneConfig, StepMetrics};
use std::collections::BTreeMap;

use super::models::ModelRecord;
use super::{decode_error, now, on, Db};
use crate::api::{fine_tuned_id, ErrorDetail, Job, JobStatus, ModelObject, Progress};

/// A job row as sqlx reads it.
pub(super) struct RawJob {
    pub(super) id: String,
    pub(super) seq: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) status: String,
    pub(super) name: Option<String>,
    pub(super) config: String,
    pub(super) spec: String,
    pub(super) output_dir: String,
    pub(super) step: i64,
    pub(super) total_steps: Option<i64>,
    pub(super) trained_tokens: i64,
    pub(super) latest_metrics: Option<String>,
    pub(super) error_code: Option<String>,
    pub(super) error_message: Option<String>,
    pub(super) error_param: Option<String>,
    pub(super) worker: Option<String>,
    pub(super) heartbeat_at: Option<i64>,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) resume: i64,
    pub(super) metadata: Option<String>,
}

/// A job as stored, typed.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: JobStatus,
    pub name: Option<String>,
    /// The configuration as submitted.
    pub config: FineTuneConfig,
    /// The validated `TrainSpec`, as JSON (the worker reads it).
    pub spec: String,
    pub output_dir: String,
    pub step: i64,
    pub total_steps: Option<i64>,
    pub trained_tokens: i64,
    pub latest_metrics: Option<StepMetrics>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_param: Option<String>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Continue from the latest checkpoint when next run.
    pub resume: bool,
    /// OpenAI's `metadata`, as submitted.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl TryFrom<RawJob> for JobRow {
    type Error = sqlx::Error;

    fn try_from(r: RawJob) -> Result<JobRow, sqlx::Error> {
        let status = r
            .status
            .parse()
            .map_err(|e| decode_error("jobs.status", e))?;
        let config_json: serde_json::Value =
            serde_json::from_str(&r.config).map_err(|e| decode_error("jobs.config", e))?;
        let config = from_value(config_json).map_err(|e| decode_error("jobs.config", e))?;
        let latest_metrics = match r.latest_metrics.as_deref() {
            Some(m) => {
                Some(serde_json::from_str(m).map_err(|e| decode_error("jobs.latest_metrics", e))?)
            }
            None => None,
        };
        Ok(JobRow {
            id: r.id,
            seq: r.seq,
            created_at: r.created_at,
            updated_at: r.updated_at,
            status,
            name: r.name,
            config,
            spec: r.spec,
            output_dir: r.output_dir,
            step: r.step,
            total_steps: r.total_steps,
            trained_tokens: r.trained_tokens,
            latest_metrics,
            error_code: r.error_code,
            error_message: r.error_message,
            error_param: r.error_param,
            worker: r.worker,
            heartbeat_at: r.heartbeat_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            resume: r.resume != 0,
            metadata: r
                .metadata
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|e| decode_error("jobs.metadata", e))?,
        })
    }
}

fn typed(rows: Vec<RawJob>) -> sqlx::Result<Vec<JobRow>> {
    rows.into_iter().map(JobRow::try_from).collect()
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Job {
        let completion_percentage = match r.total_steps {
            Some(t) if t > 0 => 100.0 * r.step as f64 / t as f64,
            _ if r.status == JobStatus::Succeeded => 100.0,
            _ => 0.0,
        };
        let eta = r.latest_metrics.as_ref().map(|m| m.eta_seconds);
        let error = r.error_code.map(|code| ErrorDetail {
            code,
            message: r.error_message.unwrap_or_default(),
            param: r.error_param,
        });
        let (result_files, artifacts) = if r.status == JobStatus::Succeeded {
            let full = r.config.fine_tune_type.as_deref() == Some("full");
            let names = crate::api::job::artifact_names(full);
            (vec![crate::api::job::results_file_id(&r.id)], names)
        } else {
            (Vec::new(), Vec::new())
        };
        Job {
            object: "fine_tuning.job".into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            status: r.status,
            name: r.name,
            model: r.config.base_model.clone(),
            fine_tuned_model: (r.status == JobStatus::Succeeded)
                .then(|| fine_tuned_id(&r.config.base_model, r.config.name.as_deref(), &r.id)),
            trained_tokens: r.trained_tokens,
            progress: Progress {
                step: r.step,
                total_steps: r.total_steps,
                completion_percentage,
            },
            latest_metrics: r.latest_metrics,
            estimated_finish: match (r.status, eta) {
                (JobStatus::Running, Some(e)) if e.is_finite() => Some(now() + e as i64),
                _ => None,
            },
            error,
            started_at: r.started_at,
            finished_at: r.finished_at,
            output_dir: r.output_dir,
            artifacts,
            openai: crate::api::job::OpenAiJobFields {
                result_files,
                metadata: r.metadata,
                ..crate::api::job::OpenAiJobFields::from_config(&r.config)
            },
            config: r.config,
            id: r.id,
        }
    }
}

/// What a submission stores: `queued` with its validated spec, or `validating_files` with
/// none yet (`{}` until the background pre-flight fills it in).
pub struct NewJob<'a> {
    pub id: &'a str,
    pub status: JobStatus,
    pub name: Option<&'a str>,
    pub config: &'a str,
    pub spec: &'a str,
    pub output_dir: &'a str,
    pub metadata: Option<&'a str>,
}

pub async fn insert_job(db: &Db, j: &NewJob<'_>) -> sqlx::Result<()> {
    on!(db, jobs::insert_job(j))
}

pub async fn get_job(db: &Db, id: &str) -> sqlx::Result<Option<JobRow>> {
    on!(db, jobs::get_job(id))?
        .map(JobRow::try_from)
        .transpose()
}

/// Jobs newest first; `after` is a job id (the page continues after it).
pub async fn list_jobs(
    db: &Db,
    after: Option<&str>,
    limit: i64,
    status: Option<JobStatus>,
) -> sqlx::Result<Vec<JobRow>> {
    let status = status.map(JobStatus::as_str);
    typed(on!(db, jobs::list_jobs(after, limit, status))?)
}

/// Atomically takes the oldest queued job for `worker` (`<node>/worker-<i>`), with a lease
/// of `lease_seconds` that the worker renews while the job runs (`leases::renew`). Two
/// workers, of any processes, never take the same job.
pub async fn claim_next(db: &Db, worker: &str, lease_seconds: u64) -> sqlx::Result<Option<JobRow>> {
    let expires = now() + lease_seconds as i64;
    on!(db, jobs::claim_next(worker, expires))?
        .map(JobRow::try_from)
        .transpose()
}

/// Moves a job from one of `from` to `to`; false when it was in another state.
pub async fn transition(
    db: &Db,
    id: &str,
    from: &[JobStatus],
    to: JobStatus,
) -> sqlx::Result<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    on!(
        db,
        jobs::transition(id, &from, to.as_str(), to.is_terminal())
    )
}

pub async fn fail(
    db: &Db,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<()> {
    on!(db, jobs::fail(id, code, message, param))
}

/// Records a cancel request on a running job; false when the job is not running (it
/// finished meanwhile). Once recorded, the job's final state is `cancelled`.
pub async fn request_cancel(db: &Db, id: &str) -> sqlx::Result<bool> {
    on!(db, jobs::request_cancel(id))
}

/// Whether a cancel was requested for the job.
pub async fn cancel_requested(db: &Db, id: &str) -> sqlx::Result<bool> {
    on!(db, jobs::cancel_requested(id))
}

/// Moves a running job to `to`, or to `cancelled` when a cancel was requested (it wins over
/// any outcome); the state it ended in, or None when it was not running. When it ends
/// `succeeded`, `model` is registered in the same transaction, so nobody sees a succeeded
/// job whose model is not there yet.
pub async fn settle(
    db: &Db,
    id: &str,
    to: JobStatus,
    model: Option<&ModelObject>,
) -> sqlx::Result<Option<JobStatus>> {
    let record = model.map(ModelRecord::from);
    on!(db, jobs::settle(id, to.as_str(), record.as_ref()))?
        .map(|s| s.parse().map_err(|e| decode_error("jobs.status", e)))
        .transpose()
}

/// Deletes a finished job (with its events and metrics); false when it is not finished.
pub async fn delete_job(db: &Db, id: &str) -> sqlx::Result<bool> {
    on!(db, jobs::delete_job(id))
}

/// How many jobs are in each state (states without jobs are absent).
pub async fn count_by_status(db: &Db) -> sqlx::Result<Vec<(JobStatus, i64)>> {
    on!(db, jobs::count_by_status())?
        .into_iter()
        .map(|(status, n)| {
            let status = status.parse().map_err(|e| decode_error("jobs.status", e))?;
            Ok((status, n))
        })
        .collect()
}
