//! The `events` table: what happened to a job, in order; listed, replayed and streamed.

use mlxtune_engine::train::Level;
use sqlx::SqlitePool;

use super::{decode_error, now};
use crate::api::{EventData, EventKind, JobEvent};

/// An event row as sqlx reads it.
struct RawEvent {
    id: i64,
    job_id: String,
    created_at: i64,
    level: String,
    kind: String,
    message: String,
    data: Option<String>,
}

fn level(s: &str) -> Option<Level> {
    [Level::Info, Level::Warn, Level::Error]
        .into_iter()
        .find(|l| l.as_str() == s)
}

impl TryFrom<RawEvent> for JobEvent {
    type Error = sqlx::Error;

    fn try_from(r: RawEvent) -> Result<JobEvent, sqlx::Error> {
        let data = match r.data.as_deref() {
            Some(d) => Some(
                serde_json::from_str::<EventData>(d).map_err(|e| decode_error("events.data", e))?,
            ),
            None => None,
        };
        Ok(JobEvent {
            id: r.id,
            object: "fine_tuning.job.event".into(),
            job_id: r.job_id,
            created_at: r.created_at,
            level: level(&r.level).ok_or_else(|| decode_error("events.level", &r.level))?,
            kind: EventKind::parse(&r.kind).ok_or_else(|| decode_error("events.type", &r.kind))?,
            message: r.message,
            data,
        })
    }
}

/// Stores an event; returns it as the API shows it. An event about a step replaces the
/// job's earlier event of the same type and step (keeping its id): one per step. A `live`
/// event is broadcast to stream clients by every process's feed (`crate::feed`).
pub async fn add_event(
    pool: &SqlitePool,
    job: &str,
    (level, kind, message): (Level, EventKind, &str),
    data: Option<EventData>,
    live: bool,
) -> sqlx::Result<JobEvent> {
    let t = now();
    let text = match &data {
        Some(d) => Some(serde_json::to_string(d).map_err(|e| decode_error("event data", e))?),
        None => None,
    };
    let (level_name, kind_name) = (level.as_str(), kind.as_str());
    let step = data.as_ref().and_then(EventData::step).map(|s| s as i64);
    let id = sqlx::query_scalar!(
        r#"INSERT INTO events (job_id, created_at, level, type, message, data, step, live)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (job_id, type, step) WHERE step IS NOT NULL
         DO UPDATE SET message = excluded.message, data = excluded.data
         RETURNING id AS "id!""#,
        job,
        t,
        level_name,
        kind_name,
        message,
        text,
        step,
        live
    )
    .fetch_one(pool)
    .await?;
    Ok(JobEvent {
        id,
        object: "fine_tuning.job.event".into(),
        job_id: job.to_string(),
        created_at: t,
        level,
        kind,
        message: message.to_string(),
        data,
    })
}

/// A job's events after event id `after`, oldest first.
pub async fn events(
    pool: &SqlitePool,
    job: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<JobEvent>> {
    sqlx::query_as!(
        RawEvent,
        r#"SELECT id AS "id!", job_id, created_at, level, type AS kind, message, data
         FROM events WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"#,
        job,
        after,
        limit
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(JobEvent::try_from)
    .collect()
}

/// The newest event id (0 when there is none): where a process's feed starts.
pub async fn last_id(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT COALESCE(MAX(id), 0) AS "id!: i64" FROM events"#)
        .fetch_one(pool)
        .await
}

/// Events of every job after event id `after`, oldest first, each with whether it goes
/// out live: what a process's feed reads (by the primary key, so cheap).
pub async fn since(
    pool: &SqlitePool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<(JobEvent, bool)>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", job_id, created_at, level, type AS kind, message, data, live
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"#,
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let raw = RawEvent {
                id: r.id,
                job_id: r.job_id,
                created_at: r.created_at,
                level: r.level,
                kind: r.kind,
                message: r.message,
                data: r.data,
            };
            Ok((JobEvent::try_from(raw)?, r.live != 0))
        })
        .collect()
}

/// Forgets a job's events about steps past `step` (they will be recorded again).
pub async fn drop_events_after(pool: &SqlitePool, job: &str, step: u64) -> sqlx::Result<u64> {
    let step = step as i64;
    let r = sqlx::query!(
        "DELETE FROM events WHERE job_id = ?1 AND step > ?2",
        job,
        step
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
