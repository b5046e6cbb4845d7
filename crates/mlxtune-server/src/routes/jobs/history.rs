//! What a job has done: its events, its per-step metrics and its checkpoints.

use axum::extract::{Path, Query, State};
use axum::Json;
use mlxtune_engine::train::checkpoint;
use serde::Deserialize;
use utoipa::IntoParams;

use super::job_or_404;
use crate::api::{
    Checkpoint, CheckpointList, CheckpointMetrics, ErrorBody, EventList, MetricsList,
};
use crate::db;
use crate::error::ApiResult;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// An event id: the page continues after it.
    after: Option<i64>,
    /// 1..1000, default 100.
    limit: Option<i64>,
}

/// GET /v1/fine_tuning/jobs/{id}/events
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/events",
    params(("id" = String, Path, description = "job id"), EventsQuery),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    job_or_404(&state, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut data = db::events(&state.db, &id, q.after.unwrap_or(0), limit + 1).await?;
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    Ok(Json(EventList {
        object: "list".into(),
        data,
        has_more,
    }))
}

/// GET /v1/fine_tuning/jobs/{id}/metrics
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/metrics", params(("id" = String, Path, description = "job id")),
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

/// GET /v1/fine_tuning/jobs/{id}/checkpoints
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/checkpoints", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = CheckpointList), (status = 404, body = ErrorBody)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckpointList>> {
    let row = job_or_404(&state, &id).await?;
    let metrics = db::metrics(&state.db, &id).await?;
    let data = checkpoint::list(std::path::Path::new(&row.output_dir))
        .into_iter()
        .map(|c| {
            let loss = metrics.iter().find(|m| m.step == c.step).map(|m| m.loss);
            Checkpoint {
                object: "fine_tuning.job.checkpoint".into(),
                id: format!("{id}:{}", checkpoint::step_dir_name(c.step)),
                step_number: c.step as i64,
                path: c.path.display().to_string(),
                metrics: CheckpointMetrics { train_loss: loss },
            }
        })
        .collect();
    Ok(Json(CheckpointList {
        object: "list".into(),
        data,
    }))
}
