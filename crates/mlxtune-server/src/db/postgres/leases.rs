//! Leases and control requests, in SQL on PostgreSQL. A sweep's `UPDATE` re-checks its
//! condition on each row it waits for, so two processes sweeping at once take a job once.

use sqlx::PgPool;

use crate::db::now;

pub async fn renew(pool: &PgPool, id: &str, worker: &str, expires: i64) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET lease_expires_at = $1, heartbeat_at = $2
         WHERE id = $3 AND worker = $4 AND status = 'running'",
        expires,
        t,
        id,
        worker
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `(cancel_requested, pause_requested)`.
pub async fn requests(pool: &PgPool, id: &str, worker: &str) -> sqlx::Result<Option<(i64, i64)>> {
    let row = sqlx::query!(
        "SELECT cancel_requested, pause_requested FROM jobs
         WHERE id = $1 AND worker = $2 AND status = 'running'",
        id,
        worker
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.cancel_requested, r.pause_requested)))
}

pub async fn request_pause(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET pause_requested = 1, updated_at = $1
         WHERE id = $2 AND status = 'running' AND cancel_requested = 0",
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Expired (or `prefix`'s) running jobs whose cancel was requested end `cancelled`.
pub async fn cancel_expired(
    pool: &PgPool,
    prefix: Option<&str>,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let t = now();
    let rows = sqlx::query!(
        "UPDATE jobs SET status = 'cancelled', updated_at = $1, finished_at = $1,
                pause_requested = 0
         WHERE status = 'running' AND cancel_requested = 1
           AND (lease_expires_at IS NULL OR lease_expires_at < $1
                OR ($2::TEXT IS NOT NULL AND starts_with(worker, $2::TEXT)))
         RETURNING id, worker",
        t,
        prefix
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.worker)).collect())
}

/// The other expired (or `prefix`'s) running jobs go back to the queue.
pub async fn requeue_expired(
    pool: &PgPool,
    prefix: Option<&str>,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let t = now();
    let rows = sqlx::query!(
        "UPDATE jobs SET status = 'queued', resume = 1, updated_at = $1, pause_requested = 0
         WHERE status = 'running'
           AND (lease_expires_at IS NULL OR lease_expires_at < $1
                OR ($2::TEXT IS NOT NULL AND starts_with(worker, $2::TEXT)))
         RETURNING id, worker",
        t,
        prefix
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.worker)).collect())
}

pub async fn running_ids(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT id FROM jobs WHERE status = 'running'")
        .fetch_all(pool)
        .await
}
