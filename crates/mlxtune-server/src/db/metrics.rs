//! The `metrics` table: one row per optimizer step of a job.

use mlxtune_engine::train::StepMetrics;

use super::{decode_error, on, Db};

/// One step's record, as a backend stores it.
pub(super) struct StepRecord<'a> {
    pub(super) job: &'a str,
    /// The worker the step comes from: recorded only while the job runs under it.
    pub(super) worker: &'a str,
    pub(super) step: i64,
    pub(super) total_steps: i64,
    pub(super) trained_tokens: i64,
    /// The step's metrics as JSON.
    pub(super) data: String,
}

/// Records one step's metrics (replacing an earlier record of the step), then the job's
/// progress, both only while the job runs under `worker` (the fence: a worker that lost
/// its job to another records nothing, even in the moments before its lease task notices);
/// false when it does not. Two single statements, no explicit transaction: on SQLite, a
/// transaction whose write the full disk refused was left open on its pooled connection,
/// holding the write lock for every other writer after space returned. If the second
/// fails, the progress trails the series by a step until the next one.
pub async fn record_step(db: &Db, job: &str, worker: &str, m: &StepMetrics) -> sqlx::Result<bool> {
    let record = StepRecord {
        job,
        worker,
        step: m.step as i64,
        total_steps: m.total_steps as i64,
        trained_tokens: m.trained_tokens as i64,
        data: serde_json::to_string(m).map_err(|e| decode_error("step metrics", e))?,
    };
    on!(db, metrics::record_step(&record))
}

/// A job's per-step figures, in step order.
pub async fn metrics(db: &Db, job: &str) -> sqlx::Result<Vec<StepMetrics>> {
    on!(db, metrics::metrics(job))?
        .into_iter()
        .map(|d| serde_json::from_str(&d).map_err(|e| decode_error("metrics.data", e)))
        .collect()
}

/// Forgets a job's metrics of steps past `step` (they will be recorded again).
pub async fn drop_metrics_after(db: &Db, job: &str, step: u64) -> sqlx::Result<u64> {
    on!(db, metrics::drop_metrics_after(job, step as i64))
}

/// The last step a job's metrics hold (0 when none).
pub async fn last_step(db: &Db, job: &str) -> sqlx::Result<u64> {
    Ok(on!(db, metrics::last_step(job))?.max(0) as u64)
}
