//! The `metrics` table: one row per optimizer step of a job.

use mlxtune_engine::train::StepMetrics;
use sqlx::SqlitePool;

use super::{decode_error, now};

/// Records one step's metrics, then the job's progress. Two single statements, no explicit
/// transaction: a transaction whose write the full disk refused was left open on its pooled
/// connection, holding SQLite's write lock for every other writer after space returned. If
/// the second fails, the progress trails the series by a step until the next one.
pub async fn record_step(pool: &SqlitePool, job: &str, m: &StepMetrics) -> sqlx::Result<()> {
    let text = serde_json::to_string(m).map_err(|e| decode_error("step metrics", e))?;
    let (step, total, trained_tokens) =
        (m.step as i64, m.total_steps as i64, m.trained_tokens as i64);
    sqlx::query!(
        "INSERT OR REPLACE INTO metrics (job_id, step, data) VALUES (?1, ?2, ?3)",
        job,
        step,
        text
    )
    .execute(pool)
    .await?;
    let t = now();
    sqlx::query!(
        "UPDATE jobs SET step = ?1, total_steps = ?2, trained_tokens = ?3, latest_metrics = ?4,
                heartbeat_at = ?5, updated_at = ?5 WHERE id = ?6",
        step,
        total,
        trained_tokens,
        text,
        t,
        job
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A job's per-step figures, in step order.
pub async fn metrics(pool: &SqlitePool, job: &str) -> sqlx::Result<Vec<StepMetrics>> {
    let rows = sqlx::query_scalar!(
        "SELECT data FROM metrics WHERE job_id = ?1 ORDER BY step",
        job
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|d| serde_json::from_str(&d).map_err(|e| decode_error("metrics.data", e)))
        .collect()
}

/// Forgets a job's metrics of steps past `step` (they will be recorded again).
pub async fn drop_metrics_after(pool: &SqlitePool, job: &str, step: u64) -> sqlx::Result<u64> {
    let step = step as i64;
    let r = sqlx::query!(
        "DELETE FROM metrics WHERE job_id = ?1 AND step > ?2",
        job,
        step
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The last step a job's metrics hold (0 when none).
pub async fn last_step(pool: &SqlitePool, job: &str) -> sqlx::Result<u64> {
    let step = sqlx::query_scalar!(
        r#"SELECT COALESCE(MAX(step), 0) AS "step!: i64" FROM metrics WHERE job_id = ?1"#,
        job
    )
    .fetch_one(pool)
    .await?;
    Ok(step.max(0) as u64)
}
