//! `DELETE /v1/fine_tuning/jobs/{id}`: a finished job and everything it made — its events and
//! metrics, its fine-tuned model, its files on this node, its results file and, with an
//! artifacts store, its objects in the bucket. A job whose model another model is based on,
//! or a waiting job trains on, is kept (409 naming them): deleting it would break those.

use axum::extract::{Path, State};
use axum::Json;

use super::job_or_404;
use crate::api::{fine_tuned_id, Deleted, ErrorBody, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// DELETE /v1/fine_tuning/jobs/{id}
#[utoipa::path(delete, path = "/v1/fine_tuning/jobs/{id}", operation_id = "deleteFineTuningJob", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let row = job_or_404(&state, &id).await?;
    let model = match row.status {
        JobStatus::Succeeded => {
            let m = fine_tuned_id(&row.config.base_model, row.config.name.as_deref(), &id);
            model_unused(&state, &m).await?;
            Some(m)
        }
        _ => None,
    };
    if !db::delete_job(&state.db, &id).await? {
        // Another request may have deleted it meanwhile: then it is simply gone.
        let now = job_or_404(&state, &id).await?;
        return Err(ApiError::conflict(format!(
            "a {} job cannot be deleted; cancel it first",
            now.status
        )));
    }
    if let Some(m) = model {
        db::delete_model(&state.db, &m).await?;
    }
    let _ = std::fs::remove_dir_all(&row.output_dir);
    let _ = std::fs::remove_dir_all(crate::artifacts::local_dir(&state.settings, &id));
    crate::results::forget(&state, &id).await?;
    crate::artifacts::forget(&state.settings, &id).await;
    Ok(Json(Deleted {
        id,
        object: "fine_tuning.job".into(),
        deleted: true,
    }))
}

/// A 409 when another model is based on the job's model `m`, or a waiting job trains on it.
async fn model_unused(state: &AppState, m: &str) -> ApiResult<()> {
    let users = db::derived_from(&state.db, m).await?;
    if !users.is_empty() {
        let why = format!("the job's model `{m}` is the base of {}", users.join(", "));
        return Err(ApiError::conflict(format!("{why}: delete those first")));
    }
    if db::model_in_use(&state.db, m).await? {
        let why = format!("a queued, running or paused job trains the job's model `{m}`");
        return Err(ApiError::conflict(why));
    }
    Ok(())
}
