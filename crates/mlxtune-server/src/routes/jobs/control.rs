//! Cancel, pause and resume. A running job's trainer sees the request through its control
//! flag after its current step; other states change here, conditionally.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::Json;
use mlxtune_engine::train::Level;

use super::job_or_404;
use crate::api::{ErrorBody, EventKind, Job, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, CANCEL, PAUSE};

/// Sets a running job's control flag; false when no trainer of this process runs it.
fn flag(state: &AppState, id: &str, value: u8) -> bool {
    let controls = state.controls.lock().unwrap_or_else(|p| p.into_inner());
    match controls.get(id) {
        Some(f) => {
            f.store(value, Ordering::SeqCst);
            true
        }
        None => false,
    }
}

async fn note(state: &AppState, id: &str, text: &str) -> ApiResult<()> {
    db::add_event(&state.db, id, Level::Info, EventKind::Message, text, None).await?;
    Ok(())
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
    if row.status != JobStatus::Running || !flag(&state, &id, PAUSE) {
        return Err(ApiError::conflict(format!(
            "a {} job cannot be paused",
            row.status
        )));
    }
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
