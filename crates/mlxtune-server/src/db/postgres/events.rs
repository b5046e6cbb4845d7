//! The `events` table's SQL on PostgreSQL, and the `NOTIFY` that wakes every process's feed.
//!
//! Ids come from an identity column, whose values a plain insert takes before it commits:
//! a later id could become visible first, and a feed that moved past it would never send the
//! earlier one. So an insert takes a transaction-scoped advisory lock first: ids are handed
//! out and committed one transaction at a time, and become visible in id order, as on SQLite.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::db::events::{NewEvent, RawEvent};

/// The channel every event insert notifies (its payload: the event id).
const CHANNEL: &str = "mlxtune_events";

/// The advisory lock key that orders event inserts ("mlxtune" in ASCII, as a number).
const ORDER_LOCK: i64 = 0x006d_6c78_7475_6e65;

pub async fn add_event(pool: &PgPool, e: &NewEvent<'_>) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        r#"SELECT 1 AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        ORDER_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO events (job_id, created_at, level, type, message, data, step, live)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (job_id, type, step) WHERE step IS NOT NULL
         DO UPDATE SET message = excluded.message, data = excluded.data
         RETURNING id",
        e.job,
        e.created_at,
        e.level,
        e.kind,
        e.message,
        e.data,
        e.step,
        e.live
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        r#"SELECT 1 AS "sent!" FROM pg_notify($1, $2)"#,
        CHANNEL,
        id.to_string()
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn events(
    pool: &PgPool,
    job: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<RawEvent>> {
    sqlx::query_as!(
        RawEvent,
        "SELECT id, job_id, created_at, level, type AS kind, message, data, live
         FROM events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        job,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn last_id(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT COALESCE(MAX(id), 0) AS "id!" FROM events"#)
        .fetch_one(pool)
        .await
}

pub async fn since(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<RawEvent>> {
    sqlx::query_as!(
        RawEvent,
        "SELECT id, job_id, created_at, level, type AS kind, message, data, live
         FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn drop_events_after(pool: &PgPool, job: &str, step: i64) -> sqlx::Result<u64> {
    let r = sqlx::query!(
        "DELETE FROM events WHERE job_id = $1 AND step > $2",
        job,
        step
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Wakes `kick` on every notification of [`CHANNEL`], for as long as the process runs;
/// a lost connection is opened again after a second (the feed polls meanwhile).
pub async fn listen(pool: PgPool, kick: Arc<Notify>) {
    loop {
        if let Err(e) = relay(&pool, &kick).await {
            tracing::warn!(error = %e, "listening for new events; retrying in 1 s");
        }
        kick.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn relay(pool: &PgPool, kick: &Notify) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        listener.recv().await?;
        kick.notify_one();
    }
}
