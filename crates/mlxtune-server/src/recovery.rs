//! Jobs whose holder is gone. At start, a process takes back the running jobs of its own
//! node (a restart under the same `server.node_name`) and those whose lease expired, and
//! deletes the half-written checkpoint directories of jobs no process runs (a resumed job's
//! are deleted by the worker resuming it); while it runs workers, it sweeps for
//! expired leases every half lease (another process died). A taken job whose cancel was
//! recorded ends `cancelled`; the others go back to the queue to resume from their last
//! checkpoint, with an event naming the worker whose lease expired (the claim's event then
//! names the worker that took it over).

use std::time::Duration;

use mlxtune_engine::train::checkpoint::sweep_temporary;
use mlxtune_engine::train::Level;

use crate::api::JobStatus;
use crate::db::leases::{self, Expired};
use crate::journal::log_status;
use crate::state::AppState;

/// Recovers the jobs of this node's previous run and of expired leases, and sweeps
/// temporary checkpoint directories.
pub async fn at_start(state: &AppState) -> anyhow::Result<()> {
    recover(state, Some(&state.node)).await?;
    // Another process's trainers may be writing checkpoints of the jobs they run.
    let running = leases::running_ids(&state.db).await?;
    let jobs = state.settings.storage.data_dir.join("jobs");
    let swept: usize = match std::fs::read_dir(&jobs) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| !running.contains(&e.file_name().to_string_lossy().into_owned()))
            .map(|e| sweep_temporary(&e.path()))
            .sum(),
        Err(_) => 0,
    };
    if swept > 0 {
        tracing::warn!(count = swept, "deleted half-written checkpoint directories");
    }
    Ok(())
}

/// Takes the jobs of expired leases (and, with `node`, that node's) from their holders.
async fn recover(state: &AppState, node: Option<&str>) -> sqlx::Result<()> {
    let (cancelled, queued) = leases::recover_expired(&state.db, node).await?;
    for Expired { id, worker } in cancelled {
        tracing::warn!(job_id = %id, %worker, "a job whose cancel was requested lost its worker");
        let text =
            format!("the lease of {worker} expired while this job was being cancelled: cancelled");
        log_status(state, &id, Level::Warn, &text, JobStatus::Cancelled).await;
    }
    for Expired { id, worker } in queued {
        tracing::warn!(job_id = %id, %worker, "re-queuing a job whose worker is gone");
        let text = format!("the lease of {worker} expired (the server stopped while this job ran, or stalled); it resumes from its last checkpoint");
        log_status(state, &id, Level::Warn, &text, JobStatus::Queued).await;
    }
    Ok(())
}

/// Re-queues expired leases every half lease, for as long as the task lives (processes
/// that run workers hold one).
pub async fn sweep(state: AppState) {
    let half = state.settings.workers.lease_seconds * 500;
    let every = Duration::from_millis(half).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        match recover(&state, None).await {
            Ok(()) => state.wake.notify_waiters(),
            Err(e) => tracing::warn!(error = %e, "sweeping expired leases"),
        }
    }
}
