//! `/v1/fine_tuning/jobs` and its sub-resources.

use std::sync::atomic::Ordering;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::remote;
use crate::state::{AppState, CANCEL, PAUSE};
use crate::validate::validate;

fn body(payload: Result<Json<Value>, JsonRejection>) -> ApiResult<Value> {
    match payload {
        Ok(Json(v)) => Ok(v),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "the request body is over the size limit",
        )),
        Err(r) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            r.body_text(),
        )),
    }
}

async fn job_or_404(state: &AppState, id: &str) -> ApiResult<db::JobRow> {
    db::get_job(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("job {id}")))
}

/// POST /v1/fine_tuning/jobs
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/fine_tuning/jobs", request_body = crate::openapi::FineTuneConfig,
    responses((status = 200, body = crate::openapi::Job), (status = 400, body = crate::openapi::ErrorBody),
              (status = 413, body = crate::openapi::ErrorBody), (status = 422, body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let raw = body(payload)?;
    // Remote datasets are fetched into the cache first; the job keeps its URIs.
    let mut local = raw.clone();
    for (key, param) in [
        ("trainingData", "dataset.trainingData"),
        ("validationData", "dataset.validationData"),
    ] {
        if let Some(uri) = raw["dataset"][key]
            .as_str()
            .filter(|u| remote::is_remote(u))
        {
            let path = remote::fetch(uri, &state.settings, param).await?;
            local["dataset"][key] = Value::String(path.display().to_string());
        }
    }
    let models = state.settings.paths.model_roots.clone();
    let mut datasets = state.settings.paths.dataset_roots.clone();
    datasets.push(remote::cache_dir(&state.settings));
    let mut job = tokio::task::spawn_blocking(move || validate(local, &models, &datasets))
        .await
        .map_err(|e| ApiError::internal("validation task", e))??;
    job.raw = raw;
    let id = format!("ftjob-{}", uuid::Uuid::new_v4().simple());
    let output = state.settings.storage.data_dir.join("jobs").join(&id);
    let spec = serde_json::to_string(&job.spec).map_err(|e| ApiError::internal("spec", e))?;
    db::insert_job(
        &state.db,
        &id,
        job.config.name.as_deref(),
        &job.raw.to_string(),
        &spec,
        &output.display().to_string(),
    )
    .await?;
    db::add_event(
        &state.db,
        &id,
        "info",
        "message",
        "job validated and queued",
        None,
    )
    .await?;
    tracing::info!(job_id = %id, "job queued");
    state.wake.notify_waiters();
    let row = job_or_404(&state, &id).await?;
    Ok((StatusCode::OK, Json(row.to_json())))
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
    status: Option<String>,
}

/// GET /v1/fine_tuning/jobs
#[utoipa::path(get, path = "/v1/fine_tuning/jobs",
    params(("after" = Option<String>, Query, description = "job id to continue after"),
           ("limit" = Option<i64>, Query, description = "1..100, default 20"),
           ("status" = Option<String>, Query, description = "only jobs in this state")),
    responses((status = 200, body = crate::openapi::JobList), (status = 422, body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let rows = db::list_jobs(
        &state.db,
        q.after.as_deref(),
        limit + 1,
        q.status.as_deref(),
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    let data: Vec<Value> = rows
        .iter()
        .take(limit as usize)
        .map(db::JobRow::to_json)
        .collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "has_more": has_more }),
    ))
}

/// GET /v1/fine_tuning/jobs/{id}
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::Job), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(job_or_404(&state, &id).await?.to_json()))
}

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

/// POST /v1/fine_tuning/jobs/{id}/cancel
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/cancel", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::Job), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = job_or_404(&state, &id).await?;
    match row.status.as_str() {
        "queued" | "paused" | "validating" => {
            if !db::transition(
                &state.db,
                &id,
                &["queued", "paused", "validating"],
                "cancelled",
            )
            .await?
            {
                return Err(ApiError::conflict(format!(
                    "job {id} changed state; try again"
                )));
            }
            db::add_event(&state.db, &id, "info", "message", "job cancelled", None).await?;
        }
        "running" => {
            flag(&state, &id, CANCEL);
            db::add_event(
                &state.db,
                &id,
                "info",
                "message",
                "cancellation requested",
                None,
            )
            .await?;
        }
        other => {
            return Err(ApiError::conflict(format!(
                "a {other} job cannot be cancelled"
            )))
        }
    }
    Ok(Json(job_or_404(&state, &id).await?.to_json()))
}

/// POST /v1/fine_tuning/jobs/{id}/pause
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/pause", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::Job), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = job_or_404(&state, &id).await?;
    if row.status != "running" || !flag(&state, &id, PAUSE) {
        return Err(ApiError::conflict(format!(
            "a {} job cannot be paused",
            row.status
        )));
    }
    db::add_event(&state.db, &id, "info", "message", "pause requested", None).await?;
    Ok(Json(row.to_json()))
}

/// POST /v1/fine_tuning/jobs/{id}/resume
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/resume", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::Job), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = job_or_404(&state, &id).await?;
    if !db::transition(&state.db, &id, &["paused"], "queued").await? {
        return Err(ApiError::conflict(format!(
            "a {} job cannot be resumed",
            row.status
        )));
    }
    db::add_event(
        &state.db,
        &id,
        "info",
        "message",
        "resumed: queued to continue from its checkpoint",
        None,
    )
    .await?;
    state.wake.notify_waiters();
    Ok(Json(job_or_404(&state, &id).await?.to_json()))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// GET /v1/fine_tuning/jobs/{id}/events
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/events",
    params(("id" = String, Path, description = "job id"), ("after" = Option<i64>, Query, description = "event id"),
           ("limit" = Option<i64>, Query, description = "1..1000, default 100")),
    responses((status = 200, body = crate::openapi::EventList), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    job_or_404(&state, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = db::events(&state.db, &id, q.after.unwrap_or(0), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    let data: Vec<Value> = rows
        .iter()
        .take(limit as usize)
        .map(db::EventRow::to_json)
        .collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "has_more": has_more }),
    ))
}

/// GET /v1/fine_tuning/jobs/{id}/metrics
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/metrics", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::MetricsList), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    job_or_404(&state, &id).await?;
    Ok(Json(
        json!({ "object": "list", "data": db::metrics(&state.db, &id).await? }),
    ))
}

/// GET /v1/fine_tuning/jobs/{id}/checkpoints
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/checkpoints", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::CheckpointList), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = job_or_404(&state, &id).await?;
    let dir = std::path::Path::new(&row.output_dir).join("checkpoints");
    let metrics = db::metrics(&state.db, &id).await?;
    let mut data = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("step-"))
            .collect();
        names.sort();
        for n in names.iter().rev() {
            let step: i64 = n.trim_start_matches("step-").parse().unwrap_or(0);
            let m = metrics.iter().find(|m| m["step"].as_i64() == Some(step));
            data.push(json!({
                "object": "fine_tuning.job.checkpoint",
                "id": format!("{id}:{n}"),
                "step_number": step,
                "path": dir.join(n),
                "metrics": { "train_loss": m.and_then(|m| m["loss"].as_f64()) },
            }));
        }
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// DELETE /v1/fine_tuning/jobs/{id}
#[utoipa::path(delete, path = "/v1/fine_tuning/jobs/{id}", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = crate::openapi::Deleted), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = job_or_404(&state, &id).await?;
    if !db::delete_job(&state.db, &id).await? {
        return Err(ApiError::conflict(format!(
            "a {} job cannot be deleted; cancel it first",
            row.status
        )));
    }
    let _ = std::fs::remove_dir_all(&row.output_dir);
    Ok(Json(
        json!({ "id": id, "object": "fine_tuning.job", "deleted": true }),
    ))
}
