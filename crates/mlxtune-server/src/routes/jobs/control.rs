//! Cancel, pause and resume. A running job's cancel or pause is recorded on the job, so the
//! worker running it sees it whichever process it runs in (its lease task reads the
//! requests every 250 ms); in this process the trainer's control flag is also set at once.
//! The trainer honours it before its next micro-batch; other states change here,
//! conditionally. A recorded cancel wins over a later pause and over a trainer that
//! finishes meanwhile; every request is a live event on the job's stream.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::Json;

use super::job_or_404;
use crate::api::{ErrorBody, Job, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::journal;
use crate::state::{AppState, CANCEL, PAUSE, RUN};

/// Sets the control flag of a job running in this process to `value`: from running, or a
/// cancel over a pause. A stop the worker decided (time limit, full disk, lost lease) or an
/// earlier cancel stays. A job running elsewhere gets the request from the database.
fn flag(state: &AppState, id: &str, value: u8) {
    let controls = state.controls.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = controls.get(id) {
        let _ = f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
            (now == RUN || (now == PAUSE && value == CANCEL)).then_some(value)
        });
    }
}

async fn note(state: &AppState, id: &str, text: &str) -> ApiResult<()> {
    journal::note(state, id, text).await?;
    Ok(())
}

/// The answer to a control request on a job that has finished meanwhile.
async fn finished(state: &AppState, id: &str, what: &str) -> ApiError {
    match db::get_job(&state.db, id).await {
        Ok(Some(row)) => ApiError::conflict(format!(
            "job {id} already finished ({}); it cannot be {what}",
            row.status
        )),
        Ok(None) => ApiError::not_found(&format!("job {id}")),
        Err(e) => e.into(),
    }
}

/// POST /v1/fine_tuning/jobs/{id}/cancel
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/cancel", operation_id = "cancelFineTuningJob", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let row = job_or_404(&state, &id).await?;
    match row.status {
        JobStatus::ValidatingFiles | JobStatus::Queued | JobStatus::Paused => {
            let from = [
                JobStatus::ValidatingFiles,
                JobStatus::Queued,
                JobStatus::Paused,
            ];
            if !db::transition(&state.db, &id, &from, JobStatus::Cancelled).await? {
                return Err(ApiError::conflict(format!(
                    "job {id} changed state; try again"
                )));
            }
            note(&state, &id, "job cancelled").await?;
        }
        JobStatus::Running => {
            // Recorded first: from here on the job ends `cancelled`, whatever the trainer
            // does next (even finishing its last step).
            if !db::request_cancel(&state.db, &id).await? {
                return Err(finished(&state, &id, "cancelled").await);
            }
            flag(&state, &id, CANCEL);
            note(&state, &id, "cancellation requested").await?;
        }
        other => {
            return Err(ApiError::conflict(format!(
                "a {other} job cannot be cancelled"
            )))
        }
    }
    Ok(Json(job_or_404(&state, &id).await?.into()))
}

/// POST /v1/fine_tuning/jobs/{id}/pause
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/pause", operation_id = "pauseFineTuningJob", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let row = job_or_404(&state, &id).await?;
    if row.status == JobStatus::Running && db::cancel_requested(&state.db, &id).await? {
        return Err(ApiError::conflict(format!(
            "job {id} is being cancelled; it cannot be paused"
        )));
    }
    if row.status != JobStatus::Running || !db::leases::request_pause(&state.db, &id).await? {
        let now = job_or_404(&state, &id).await?.status;
        return Err(ApiError::conflict(format!("a {now} job cannot be paused")));
    }
    flag(&state, &id, PAUSE);
    note(&state, &id, "pause requested").await?;
    Ok(Json(row.into()))
}

/// POST /v1/fine_tuning/jobs/{id}/resume
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/resume", operation_id = "resumeFineTuningJob", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let row = job_or_404(&state, &id).await?;
    if !db::transition(&state.db, &id, &[JobStatus::Paused], JobStatus::Queued).await? {
        return Err(ApiError::conflict(format!(
            "a {} job cannot be resumed",
            row.status
        )));
    }
    note(
        &state,
        &id,
        "resumed: queued to continue from its checkpoint",
    )
    .await?;
    state.wake.notify_waiters();
    Ok(Json(job_or_404(&state, &id).await?.into()))
}
