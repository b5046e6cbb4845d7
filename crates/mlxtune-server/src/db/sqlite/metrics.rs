//! The `metrics` table's SQL on SQLite.

use sqlx::SqlitePool;

use crate::db::metrics::StepRecord;
use crate::db::now;

pub async fn record_step(pool: &SqlitePool, r: &StepRecord<'_>) -> sqlx::Result<bool> {
    let stored = sqlx::query!(
        "INSERT OR REPLACE INTO metrics (job_id, step, data)
         SELECT ?1, ?2, ?3 WHERE EXISTS
           (SELECT 1 FROM jobs WHERE id = ?1 AND worker = ?4 AND status = 'running')",
        r.job,
        r.step,
        r.data,
        r.worker
    )
    .execute(pool)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(false);
    }
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET step = ?1, total_steps = ?2, trained_tokens = ?3, latest_metrics = ?4,
                heartbeat_at = ?5, updated_at = ?5
         WHERE id = ?6 AND worker = ?7 AND status = 'running'",
        r.step,
        r.total_steps,
        r.trained_tokens,
        r.data,
        t,
        r.job,
        r.worker
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn metrics(pool: &SqlitePool, job: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT data FROM metrics WHERE job_id = ?1 ORDER BY step",
        job
    )
    .fetch_all(pool)
    .await
}

pub async fn drop_metrics_after(pool: &SqlitePool, job: &str, step: i64) -> sqlx::Result<u64> {
    let r = sqlx::query!(
        "DELETE FROM metrics WHERE job_id = ?1 AND step > ?2",
        job,
        step
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

pub async fn last_step(pool: &SqlitePool, job: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(MAX(step), 0) AS "step!: i64" FROM metrics WHERE job_id = ?1"#,
        job
    )
    .fetch_one(pool)
    .await
}
