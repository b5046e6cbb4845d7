//! Leases of running jobs and the control requests their workers read: several processes
//! share one queue, so a claim (`jobs::claim_next`) holds the job only while its worker
//! renews the lease, and a pause or cancel requested on any process reaches the worker
//! through the job's row.

use sqlx::SqlitePool;

use super::now;

/// What the worker holding a job is asked to do, as recorded on the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub cancel: bool,
    pub pause: bool,
}

/// A job taken from a holder whose lease expired: its id and the worker that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: String,
    pub worker: String,
}

/// Extends `worker`'s lease on a running job by `seconds` from now; false when the job is
/// no longer running under this worker (another process took it over, or it ended).
pub async fn renew(pool: &SqlitePool, id: &str, worker: &str, seconds: u64) -> sqlx::Result<bool> {
    let t = now();
    let expires = t + seconds as i64;
    let r = sqlx::query!(
        "UPDATE jobs SET lease_expires_at = ?1, heartbeat_at = ?2
         WHERE id = ?3 AND worker = ?4 AND status = 'running'",
        expires,
        t,
        id,
        worker
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The requests recorded on a job `worker` runs; None when it no longer runs it.
pub async fn requests(pool: &SqlitePool, id: &str, worker: &str) -> sqlx::Result<Option<Requests>> {
    let row = sqlx::query!(
        "SELECT cancel_requested, pause_requested FROM jobs
         WHERE id = ?1 AND worker = ?2 AND status = 'running'",
        id,
        worker
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Requests {
        cancel: r.cancel_requested != 0,
        pause: r.pause_requested != 0,
    }))
}

/// Records a pause request on a running job whose cancel was not requested; false
/// otherwise (the worker running it, on any process, pauses it at its next micro-batch).
pub async fn request_pause(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET pause_requested = 1, updated_at = ?1
         WHERE id = ?2 AND status = 'running' AND cancel_requested = 0",
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Running jobs whose lease expired (rows from before leases have none), or held by a
/// worker of `node` (this process's own name: what it ran before it restarted), are taken
/// from their holder: those whose cancel was requested end `cancelled` (first list), the
/// others go back to the queue to resume from their checkpoint. Each update is atomic, so
/// two processes sweeping at once take each job once.
pub async fn recover_expired(
    pool: &SqlitePool,
    node: Option<&str>,
) -> sqlx::Result<(Vec<Expired>, Vec<Expired>)> {
    let t = now();
    let prefix = node.map(|n| format!("{n}/"));
    let cancelled = sqlx::query!(
        r#"UPDATE jobs SET status = 'cancelled', updated_at = ?1, finished_at = ?1,
                pause_requested = 0
         WHERE status = 'running' AND cancel_requested = 1
           AND (lease_expires_at IS NULL OR lease_expires_at < ?1
                OR (?2 IS NOT NULL AND substr(worker, 1, length(?2)) = ?2))
         RETURNING id AS "id!", worker"#,
        t,
        prefix
    )
    .fetch_all(pool)
    .await?;
    let queued = sqlx::query!(
        r#"UPDATE jobs SET status = 'queued', resume = 1, updated_at = ?1, pause_requested = 0
         WHERE status = 'running'
           AND (lease_expires_at IS NULL OR lease_expires_at < ?1
                OR (?2 IS NOT NULL AND substr(worker, 1, length(?2)) = ?2))
         RETURNING id AS "id!", worker"#,
        t,
        prefix
    )
    .fetch_all(pool)
    .await?;
    let expired = |id: String, worker: Option<String>| Expired {
        id,
        worker: worker.unwrap_or_else(|| "an unknown worker".into()),
    };
    Ok((
        cancelled
            .into_iter()
            .map(|r| expired(r.id, r.worker))
            .collect(),
        queued
            .into_iter()
            .map(|r| expired(r.id, r.worker))
            .collect(),
    ))
}

/// The ids of the running jobs (of any process).
pub async fn running_ids(pool: &SqlitePool) -> sqlx::Result<std::collections::HashSet<String>> {
    let ids = sqlx::query_scalar!(r#"SELECT id AS "id!" FROM jobs WHERE status = 'running'"#)
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().collect())
}
