//! The `jobs` table's SQL on PostgreSQL.

use sqlx::PgPool;

use super::models::insert_model;
use crate::db::jobs::{NewJob, RawJob};
use crate::db::models::ModelRecord;
use crate::db::now;

pub async fn insert_job(pool: &PgPool, j: &NewJob<'_>) -> sqlx::Result<()> {
    let (t, status) = (now(), j.status.as_str());
    sqlx::query!(
        "INSERT INTO jobs (id, created_at, updated_at, status, name, config, spec, output_dir, metadata)
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8)",
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

pub async fn get_job(pool: &PgPool, id: &str) -> sqlx::Result<Option<RawJob>> {
    sqlx::query_as!(
        RawJob,
        "SELECT id, seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata
         FROM jobs WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list_jobs(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
    status: Option<&str>,
) -> sqlx::Result<Vec<RawJob>> {
    sqlx::query_as!(
        RawJob,
        "SELECT id, seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata
         FROM jobs
         WHERE ($1::TEXT IS NULL OR seq < (SELECT seq FROM jobs WHERE id = $1))
           AND ($2::TEXT IS NULL OR status = $2)
         ORDER BY seq DESC LIMIT $3",
        after,
        status,
        limit
    )
    .fetch_all(pool)
    .await
}

/// The oldest queued job no other transaction holds (`FOR UPDATE SKIP LOCKED`): workers
/// on several machines claiming at once each take a different job, without waiting.
pub async fn claim_next(pool: &PgPool, worker: &str, expires: i64) -> sqlx::Result<Option<RawJob>> {
    let t = now();
    sqlx::query_as!(
        RawJob,
        "UPDATE jobs SET status = 'running', worker = $1, heartbeat_at = $2, updated_at = $2,
                started_at = COALESCE(started_at, $2), lease_expires_at = $3, pause_requested = 0
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1
                     FOR UPDATE SKIP LOCKED)
           AND status = 'queued'
         RETURNING id, seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume, metadata",
        worker,
        t,
        expires
    )
    .fetch_optional(pool)
    .await
}

pub async fn transition(
    pool: &PgPool,
    id: &str,
    from: &[&str],
    to: &str,
    terminal: bool,
) -> sqlx::Result<bool> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET status = $1, updated_at = $2,
                finished_at = CASE WHEN $3 THEN $2 ELSE finished_at END,
                resume = CASE WHEN $1 = 'queued' THEN 1 ELSE resume END
         WHERE id = $4 AND status = ANY($5)",
        to,
        t,
        terminal,
        id,
        &from
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn fail(
    pool: &PgPool,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "UPDATE jobs SET status = 'failed', error_code = $1, error_message = $2, error_param = $3,
                updated_at = $4, finished_at = $4 WHERE id = $5",
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

pub async fn request_cancel(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn cancel_requested(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query_scalar!("SELECT cancel_requested FROM jobs WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(r.is_some_and(|c| c != 0))
}

pub async fn settle(
    pool: &PgPool,
    id: &str,
    to: &str,
    model: Option<&ModelRecord<'_>>,
) -> sqlx::Result<Option<String>> {
    let t = now();
    let mut tx = pool.begin().await?;
    let ended = sqlx::query_scalar!(
        "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE $1::TEXT END,
                updated_at = $2,
                finished_at = CASE WHEN cancel_requested = 1 OR $1 IN ('succeeded', 'failed')
                              THEN $2 ELSE finished_at END,
                resume = CASE WHEN $1 = 'queued' THEN 1 ELSE resume END, pause_requested = 0
         WHERE id = $3 AND status = 'running' RETURNING status",
        to,
        t,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let (Some("succeeded"), Some(m)) = (ended.as_deref(), model) {
        insert_model(&mut *tx, m).await?;
    }
    tx.commit().await?;
    Ok(ended)
}

pub async fn delete_job(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "DELETE FROM jobs WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled')",
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn count_by_status(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(r#"SELECT status, COUNT(*) AS "n!" FROM jobs GROUP BY status"#)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}
