//! Each process's one reader of new events: it reads the `events` table after the last id
//! it saw and broadcasts the live events to this process's stream clients (`state.events`),
//! whichever process wrote them — so a client of an API process sees a job that runs in a
//! worker process. Writers in this process kick it (`state.feed_kick`) so their events go
//! out at once; on PostgreSQL every process's inserts kick it through `LISTEN/NOTIFY`
//! (`Db::listen`); otherwise it reads every `Db::feed_poll`. One feed per process, never
//! one per client. Broadcasts leave in id order (both backends make ids visible in order,
//! `db::events::since`), which the stream's `?after=` deduplication relies on.

use std::sync::atomic::Ordering;

use crate::db;
use crate::state::{AppState, Broadcast};

/// Rows read at once; a longer backlog is read in several rounds without waiting.
const BATCH: i64 = 500;

/// Starts the feed after the newest stored event (older ones are replayed by the stream
/// from the table, never broadcast).
pub async fn start(state: &AppState) -> sqlx::Result<tokio::task::JoinHandle<()>> {
    state.db.listen(state.feed_kick.clone());
    let from = db::events::last_id(&state.db).await?;
    Ok(tokio::spawn(run(state.clone(), from)))
}

async fn run(state: AppState, mut last: i64) {
    let poll = state.db.feed_poll();
    loop {
        let kicked = state.feed_kick.notified();
        match read(&state, &mut last).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading new events for the streams"),
        }
        if state.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            _ = kicked => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Broadcasts the live events after `last`, advancing it past every event read; the
/// number of rows read.
async fn read(state: &AppState, last: &mut i64) -> sqlx::Result<usize> {
    let rows = db::events::since(&state.db, *last, BATCH).await?;
    for (event, live) in &rows {
        *last = event.id;
        if !live {
            continue;
        }
        let Ok(text) = serde_json::to_string(event) else {
            continue;
        };
        let _ = state.events.send(Broadcast {
            job_id: event.job_id.clone(),
            event_id: event.id,
            text: text.into(),
        });
    }
    Ok(rows.len())
}
