//! The `events` table: what happened to a job, in order; listed, replayed and streamed.

use mlxtune_engine::train::Level;

use super::{decode_error, now, on, Db};
use crate::api::{EventData, EventKind, JobEvent};

/// An event row as sqlx reads it.
pub(super) struct RawEvent {
    pub(super) id: i64,
    pub(super) job_id: String,
    pub(super) created_at: i64,
    pub(super) level: String,
    pub(super) kind: String,
    pub(super) message: String,
    pub(super) data: Option<String>,
    /// 1 when it goes out live on streams (a 0/1 integer on both backends).
    pub(super) live: i64,
}

/// An event as a backend stores it.
pub(super) struct NewEvent<'a> {
    pub(super) job: &'a str,
    pub(super) created_at: i64,
    pub(super) level: &'a str,
    pub(super) kind: &'a str,
    pub(super) message: &'a str,
    pub(super) data: Option<String>,
    /// The step it is about: one event per (job, type, step).
    pub(super) step: Option<i64>,
    pub(super) live: i64,
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
    db: &Db,
    job: &str,
    (level, kind, message): (Level, EventKind, &str),
    data: Option<EventData>,
    live: bool,
) -> sqlx::Result<JobEvent> {
    let new = NewEvent {
        job,
        created_at: now(),
        level: level.as_str(),
        kind: kind.as_str(),
        message,
        data: match &data {
            Some(d) => Some(serde_json::to_string(d).map_err(|e| decode_error("event data", e))?),
            None => None,
        },
        step: data.as_ref().and_then(EventData::step).map(|s| s as i64),
        live: live.into(),
    };
    let id = on!(db, events::add_event(&new))?;
    Ok(JobEvent {
        id,
        object: "fine_tuning.job.event".into(),
        job_id: job.to_string(),
        created_at: new.created_at,
        level,
        kind,
        message: message.to_string(),
        data,
    })
}

/// A job's events after event id `after`, oldest first.
pub async fn events(db: &Db, job: &str, after: i64, limit: i64) -> sqlx::Result<Vec<JobEvent>> {
    on!(db, events::events(job, after, limit))?
        .into_iter()
        .map(JobEvent::try_from)
        .collect()
}

/// The newest event id (0 when there is none): where a process's feed starts.
pub async fn last_id(db: &Db) -> sqlx::Result<i64> {
    on!(db, events::last_id())
}

/// Events of every job after event id `after`, oldest first, each with whether it goes
/// out live: what a process's feed reads (by the primary key, so cheap). Ids become
/// visible in order on both backends, so a reader may move past the last id it read.
pub async fn since(db: &Db, after: i64, limit: i64) -> sqlx::Result<Vec<(JobEvent, bool)>> {
    on!(db, events::since(after, limit))?
        .into_iter()
        .map(|raw| {
            let live = raw.live != 0;
            Ok((JobEvent::try_from(raw)?, live))
        })
        .collect()
}

/// Forgets a job's events about steps past `step` (they will be recorded again).
pub async fn drop_events_after(db: &Db, job: &str, step: u64) -> sqlx::Result<u64> {
    on!(db, events::drop_events_after(job, step as i64))
}
