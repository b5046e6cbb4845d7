//! What a job has done: its events, its per-step metrics and its checkpoints.

use axum::extract::{Path, Query, State};
use axum::Json;
use mlxtune_engine::train::checkpoint;
use serde::Deserialize;
use utoipa::IntoParams;

use super::job_or_404;
use crate::api::checkpoint::{checkpoint_id, checkpoint_step};
use crate::api::event_id;
use crate::api::{
    Checkpoint, CheckpointList, CheckpointMetrics, ErrorBody, EventData, EventList, MetricsList,
};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use mlxtune_engine::train::EvalMetrics;

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// An event id (`ftevent-<n>`, or the number n): the page continues after it.
    after: Option<String>,
    /// 1..1000, default 100.
    limit: Option<i64>,
}

/// GET /v1/fine_tuning/jobs/{id}/events
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/events", operation_id = "listFineTuningEvents",
    params(("id" = String, Path, description = "job id"), EventsQuery),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    job_or_404(&state, &id).await?;
    let limit = limit_in(q.limit, 100, 1000)?;
    let after = event_id::after(q.after.as_deref()).map_err(|m| ApiError::invalid("after", m))?;
    let mut data = db::events(&state.db, &id, after, limit + 1).await?;
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    Ok(Json(EventList {
        object: "list".into(),
        data,
        has_more,
    }))
}

/// GET /v1/fine_tuning/jobs/{id}/metrics
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/metrics", operation_id = "listFineTuningJobMetrics", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = MetricsList), (status = 404, body = ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<MetricsList>> {
    job_or_404(&state, &id).await?;
    Ok(Json(MetricsList {
        object: "list".into(),
        data: db::metrics(&state.db, &id).await?,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct CheckpointsQuery {
    /// A checkpoint id: the page continues after it (older checkpoints).
    after: Option<String>,
    /// 1..100, default 10.
    limit: Option<i64>,
}

/// GET /v1/fine_tuning/jobs/{id}/checkpoints
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/checkpoints", operation_id = "listFineTuningJobCheckpoints",
    params(("id" = String, Path, description = "job id"), CheckpointsQuery),
    responses((status = 200, body = CheckpointList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CheckpointsQuery>,
) -> ApiResult<Json<CheckpointList>> {
    let limit = limit_in(q.limit, 10, 100)?;
    let row = job_or_404(&state, &id).await?;
    let after = match &q.after {
        None => None,
        Some(a) => Some(checkpoint_step(&id, a).ok_or_else(|| {
            ApiError::invalid("after", format!("`{a}` is not a checkpoint id of {id}"))
        })?),
    };
    let metrics = db::metrics(&state.db, &id).await?;
    let validations = validations(&state, &id).await?;
    let mut data: Vec<Checkpoint> = checkpoint::list(std::path::Path::new(&row.output_dir))
        .into_iter()
        .filter(|c| after.is_none_or(|a| c.step < a))
        .take(limit as usize + 1)
        .map(|c| {
            let v = validations.iter().find(|v| v.step == c.step);
            Checkpoint {
                object: "fine_tuning.job.checkpoint".into(),
                id: checkpoint_id(&id, c.step),
                fine_tuning_job_id: id.clone(),
                created_at: modified(&c.path),
                step_number: c.step as i64,
                path: c.path.display().to_string(),
                metrics: CheckpointMetrics {
                    step: c.step as i64,
                    train_loss: metrics.iter().find(|m| m.step == c.step).map(|m| m.loss),
                    valid_loss: v.map(|v| v.val_loss),
                    valid_mean_token_accuracy: v.map(|v| v.val_token_accuracy),
                    valid_perplexity: v.map(|v| v.val_perplexity),
                },
            }
        })
        .collect();
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    Ok(Json(CheckpointList {
        object: "list".into(),
        first_id: data.first().map(|c| c.id.clone()),
        last_id: data.last().map(|c| c.id.clone()),
        data,
        has_more,
    }))
}

/// A job's validation passes, from its stored events.
async fn validations(state: &AppState, id: &str) -> ApiResult<Vec<EvalMetrics>> {
    Ok(db::events(&state.db, id, 0, i64::MAX)
        .await?
        .into_iter()
        .filter_map(|e| match e.data {
            Some(EventData::Validation(v)) => Some(v),
            _ => None,
        })
        .collect())
}

/// Unix time a file or directory was last written (0 when unknown).
fn modified(path: &std::path::Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// `limit`, `default` when absent; outside 1..=`max` is a 422 (the same rule on every list).
pub(crate) fn limit_in(limit: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}
