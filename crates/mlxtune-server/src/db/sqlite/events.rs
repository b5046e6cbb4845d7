//! The `events` table's SQL on SQLite.

use sqlx::SqlitePool;

use crate::db::events::{NewEvent, RawEvent};

pub async fn add_event(pool: &SqlitePool, e: &NewEvent<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"INSERT INTO events (job_id, created_at, level, type, message, data, step, live)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (job_id, type, step) WHERE step IS NOT NULL
         DO UPDATE SET message = excluded.message, data = excluded.data
         RETURNING id AS "id!""#,
        e.job,
        e.created_at,
        e.level,
        e.kind,
        e.message,
        e.data,
        e.step,
        e.live
    )
    .fetch_one(pool)
    .await
}

pub async fn events(
    pool: &SqlitePool,
    job: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<RawEvent>> {
    sqlx::query_as!(
        RawEvent,
        r#"SELECT id AS "id!", job_id, created_at, level, type AS kind, message, data, live
         FROM events WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"#,
        job,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn last_id(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT COALESCE(MAX(id), 0) AS "id!: i64" FROM events"#)
        .fetch_one(pool)
        .await
}

/// SQLite serializes writers, so ids become visible in order.
pub async fn since(pool: &SqlitePool, after: i64, limit: i64) -> sqlx::Result<Vec<RawEvent>> {
    sqlx::query_as!(
        RawEvent,
        r#"SELECT id AS "id!", job_id, created_at, level, type AS kind, message, data, live
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"#,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn drop_events_after(pool: &SqlitePool, job: &str, step: i64) -> sqlx::Result<u64> {
    let r = sqlx::query!(
        "DELETE FROM events WHERE job_id = ?1 AND step > ?2",
        job,
        step
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
