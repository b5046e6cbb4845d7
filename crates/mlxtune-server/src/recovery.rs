//! What a server does at start about the jobs a stopped (or killed) one left behind: a
//! running job whose cancel was recorded ends `cancelled`; the others go back to the queue
//! to resume from their last checkpoint; half-written checkpoint directories are deleted.

use mlxtune_engine::train::checkpoint::sweep_temporary;
use mlxtune_engine::train::Level;

use crate::api::JobStatus;
use crate::db;
use crate::journal::log_status;
use crate::state::AppState;

/// Recovers the jobs of a stopped server and sweeps temporary checkpoint directories.
pub async fn at_start(state: &AppState) -> anyhow::Result<()> {
    let (cancelled, queued) = db::recover_running(&state.db).await?;
    for id in cancelled {
        tracing::warn!(job_id = %id, "a job whose cancel was requested ended with its server");
        let text = "the server stopped while this job was being cancelled: cancelled";
        log_status(state, &id, Level::Warn, text, JobStatus::Cancelled).await;
    }
    for id in queued {
        tracing::warn!(job_id = %id, "recovering a job left running by a stopped server");
        let text = "the server stopped while this job ran; it resumes from its last checkpoint";
        log_status(state, &id, Level::Warn, text, JobStatus::Queued).await;
    }
    let jobs = state.settings.storage.data_dir.join("jobs");
    let swept: usize = match std::fs::read_dir(&jobs) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| sweep_temporary(&e.path()))
            .sum(),
        Err(_) => 0,
    };
    if swept > 0 {
        tracing::warn!(count = swept, "deleted half-written checkpoint directories");
    }
    Ok(())
}
