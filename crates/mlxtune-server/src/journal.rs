//! The journal of a job: events stored in the `events` table; the live ones reach stream
//! subscribers through each process's feed (`crate::feed`, kicked here so this process's
//! clients get them at once), and every stored event is replayed to clients that
//! reconnect with `?after=`. Every writer of events goes through here: the workers, the
//! control routes, the pre-flight and the recovery.

use mlxtune_engine::train::{Event, Level};

use crate::api::{CheckpointSaved, EventData, EventKind, JobStatus, StatusChange, TrainingUpdate};
use crate::db;
use crate::state::AppState;

/// Stores an event; a `live` one goes out to stream subscribers of every process (a stored
/// event is still replayed to clients that connect with `?after=`).
pub async fn store_event(
    state: &AppState,
    job: &str,
    (level, kind, message): (Level, EventKind, &str),
    data: Option<EventData>,
    live: bool,
) -> sqlx::Result<()> {
    match db::add_event(&state.db, job, (level, kind, message), data, live).await {
        Ok(_) => {
            if live {
                state.feed_kick.notify_one();
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(job_id = %job, error = %e, "storing an event");
            Err(e)
        }
    }
}

/// Stores and broadcasts a change of a job's state.
pub async fn log_status(state: &AppState, job: &str, level: Level, text: &str, to: JobStatus) {
    let data = EventData::Status(StatusChange { status: to });
    let _ = store_event(
        state,
        job,
        (level, EventKind::Status, text),
        Some(data),
        true,
    )
    .await;
}

/// An engine event as a stored event: kind, message and data.
pub fn as_event(ev: &Event) -> (Level, EventKind, String, Option<EventData>) {
    match ev {
        Event::Step(m) => (
            Level::Info,
            EventKind::MlxTrainingUpdate,
            format!("step {}/{}: loss {:.4}", m.step, m.total_steps, m.loss),
            Some(EventData::TrainingUpdate(TrainingUpdate {
                metrics: m.clone(),
                current_loss: m.loss,
                gpu_memory_used: m.active_memory_bytes,
                gpu_memory_total: mlxtune_engine::runtime::memory_limit().unwrap_or(0),
            })),
        ),
        Event::Eval(v) => (
            Level::Info,
            EventKind::Metrics,
            format!("step {}: validation loss {:.4}", v.step, v.val_loss),
            Some(EventData::Validation(v.clone())),
        ),
        Event::Checkpoint { step, path } => (
            Level::Info,
            EventKind::Checkpoint,
            format!("checkpoint at step {step}"),
            Some(EventData::Checkpoint(CheckpointSaved {
                step: *step,
                path: path.clone(),
            })),
        ),
        Event::Started(s) => (
            Level::Info,
            EventKind::Message,
            format!(
                "pre-flight: {} records, {} tokens ({} in the loss), {} truncated; {} steps",
                s.train.records,
                s.train.tokens,
                s.train.loss_tokens,
                s.train.truncated,
                s.total_steps
            ),
            Some(EventData::Started(s.clone())),
        ),
        Event::Message { level, text } => (*level, EventKind::Message, text.clone(), None),
    }
}

/// Stores and broadcasts a control note (pause or cancellation requested, resumed):
/// clients watching the stream see it as it happens.
pub async fn note(state: &AppState, job: &str, text: &str) -> sqlx::Result<()> {
    let what = (Level::Info, EventKind::Message, text);
    db::add_event(&state.db, job, what, None, true).await?;
    state.feed_kick.notify_one();
    Ok(())
}
