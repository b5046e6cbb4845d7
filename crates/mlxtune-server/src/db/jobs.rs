//! The `jobs` table: a job's configuration, validated spec, state and progress.

use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::{FineTuneConfig, StepMetrics};
use sqlx::SqlitePool;
use std::collections::BTreeMap;

use super::{decode_error, now};
use crate::api::{fine_tuned_id, ErrorDetail, Job, JobStatus, Progress};

/// A job row as sqlx reads it.
struct RawJob {
    id: String,
    seq: i64,
    created_at: i64,
    updated_at: i64,
    status: String,
    name: Option<String>,
    config: String,
    spec: String,
    output_dir: String,
    step: i64,
    total_steps: Option<i64>,
    trained_tokens: i64,
    latest_metrics: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    error_param: Option<String>,
    worker: Option<String>,
    heartbeat_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    resume: i64,
    metadata: Option<String>,
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
            let dir = std::path::Path::new(&r.output_dir);
            let names = crate::api::job::artifact_names(dir);
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

pub async fn insert_job(pool: &SqlitePool, j: &NewJob<'_>) -> sqlx::Result<()> {
    let (t, status) = (now(), j.status.as_str());
    sqlx::query!(
        "INSERT INTO jobs (id, seq, created_at, updated_at, status, name, config, spec, output_dir, metadata)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        j.id,
        t,
        status,
        j.name,
        j.config,
        j.spec,
        j.output_dir,
        j.metadata
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get_job(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        RawJob,
        r#"SELECT id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata
         FROM jobs WHERE id = ?1"#,
        id
    )
    .fetch_optional(pool)
    .await?
    .map(JobRow::try_from)
    .transpose()
}

/// Jobs newest first; `after` is a job id (the page continues after it).
pub async fn list_jobs(
    pool: &SqlitePool,
    after: Option<&str>,
    limit: i64,
    status: Option<JobStatus>,
) -> sqlx::Result<Vec<JobRow>> {
    let status = status.map(JobStatus::as_str);
    sqlx::query_as!(
        RawJob,
        r#"SELECT id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata
         FROM jobs
         WHERE (?1 IS NULL OR seq < (SELECT seq FROM jobs WHERE id = ?1))
           AND (?2 IS NULL OR status = ?2)
         ORDER BY seq DESC LIMIT ?3"#,
        after,
        status,
        limit
    )
    .fetch_all(pool)
    .await
    .and_then(typed)
}

/// Atomically takes the oldest queued job for `worker` (`<node>/worker-<i>`), with a lease
/// of `lease_seconds` that the worker renews while the job runs (`leases::renew`).
pub async fn claim_next(
    pool: &SqlitePool,
    worker: &str,
    lease_seconds: u64,
) -> sqlx::Result<Option<JobRow>> {
    let t = now();
    let expires = t + lease_seconds as i64;
    sqlx::query_as!(
        RawJob,
        r#"UPDATE jobs SET status = 'running', worker = ?1, heartbeat_at = ?2, updated_at = ?2,
                started_at = COALESCE(started_at, ?2), lease_expires_at = ?3, pause_requested = 0
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1)
           AND status = 'queued'
         RETURNING id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata"#,
        worker,
        t,
        expires
    )
    .fetch_optional(pool)
    .await?
    .map(JobRow::try_from)
    .transpose()
}

/// Moves a job from one of `from` to `to`; false when it was in another state.
pub async fn transition(
    pool: &SqlitePool,
    id: &str,
    from: &[JobStatus],
    to: JobStatus,
) -> sqlx::Result<bool> {
    let names: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let from_json = serde_json::to_string(&names).unwrap_or_default();
    let terminal = to.is_terminal();
    let to = to.as_str();
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET status = ?1, updated_at = ?2,
                finished_at = CASE WHEN ?3 THEN ?2 ELSE finished_at END,
                resume = CASE WHEN ?1 = 'queued' THEN 1 ELSE resume END
         WHERE id = ?4 AND status IN (SELECT value FROM json_each(?5))",
        to,
        t,
        terminal,
        id,
        from_json
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn fail(
    pool: &SqlitePool,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "UPDATE jobs SET status = 'failed', error_code = ?1, error_message = ?2, error_param = ?3,
                updated_at = ?4, finished_at = ?4 WHERE id = ?5",
        code,
        message,
        param,
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a cancel request on a running job; false when the job is not running (it
/// finished meanwhile). Once recorded, the job's final state is `cancelled`.
pub async fn request_cancel(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET cancel_requested = 1, updated_at = ?1 WHERE id = ?2 AND status = 'running'",
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether a cancel was requested for the job.
pub async fn cancel_requested(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query_scalar!("SELECT cancel_requested FROM jobs WHERE id = ?1", id)
        .fetch_optional(pool)
        .await?;
    Ok(r.is_some_and(|c| c != 0))
}

/// Moves a running job to `to`, or to `cancelled` when a cancel was requested (it wins over
/// any outcome); the state it ended in, or None when it was not running.
pub async fn settle(pool: &SqlitePool, id: &str, to: JobStatus) -> sqlx::Result<Option<JobStatus>> {
    let (t, to) = (now(), to.as_str());
    let ended = sqlx::query_scalar!(
        r#"UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE ?1 END,
                updated_at = ?2,
                finished_at = CASE WHEN cancel_requested = 1 OR ?1 IN ('succeeded', 'failed')
                              THEN ?2 ELSE finished_at END,
                resume = CASE WHEN ?1 = 'queued' THEN 1 ELSE resume END, pause_requested = 0
         WHERE id = ?3 AND status = 'running' RETURNING status"#,
        to,
        t,
        id
    )
    .fetch_optional(pool)
    .await?;
    ended
        .map(|s| s.parse().map_err(|e| decode_error("jobs.status", e)))
        .transpose()
}

pub async fn delete_job(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "DELETE FROM jobs WHERE id = ?1 AND status IN ('succeeded', 'failed', 'cancelled')",
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// How many jobs are in each state (states without jobs are absent).
pub async fn count_by_status(pool: &SqlitePool) -> sqlx::Result<Vec<(JobStatus, i64)>> {
    let rows = sqlx::query!(r#"SELECT status, COUNT(*) AS "n!: i64" FROM jobs GROUP BY status"#)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|r| {
            let status = r
                .status
                .parse()
                .map_err(|e| decode_error("jobs.status", e))?;
            Ok((status, r.n))
        })
        .collect()
}
