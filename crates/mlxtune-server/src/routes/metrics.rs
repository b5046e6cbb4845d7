//! `GET /metrics`: the Prometheus exposition of `telemetry`, with the state gauges read at
//! scrape time.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::telemetry::{label, resident_memory_bytes};

/// Prometheus metrics of this server (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", operation_id = "prometheusMetrics",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
              (status = 401, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    refresh_state_gauges(&state).await?;
    let text = state
        .telemetry
        .render()
        .map_err(|e| ApiError::internal("encoding metrics", e))?;
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    Ok((content_type, text).into_response())
}

async fn refresh_state_gauges(state: &AppState) -> ApiResult<()> {
    let t = &state.telemetry;
    let counts = db::count_by_status(&state.db).await?;
    for s in JobStatus::ALL {
        let n = counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
        t.jobs.get_or_create(&label("status", s.api_name())).set(n);
        if s == JobStatus::Queued {
            t.queue_depth.set(n);
        }
    }
    // Only jobs running now have series: a finished job's disappear.
    t.job_tokens_per_second.clear();
    t.job_loss.clear();
    for job in db::list_jobs(&state.db, None, 1000, Some(JobStatus::Running)).await? {
        if let Some(m) = &job.latest_metrics {
            let l = label("job_id", &job.id);
            t.job_tokens_per_second
                .get_or_create(&l)
                .set(m.tokens_per_second);
            t.job_loss.get_or_create(&l).set(m.loss);
        }
    }
    t.resident_memory
        .set(resident_memory_bytes().unwrap_or(0) as i64);
    let mlx = mlxtune_engine::runtime::memory_stats();
    t.mlx_active_memory.set(mlx.active as i64);
    t.mlx_peak_memory.set(mlx.peak as i64);
    Ok(())
}

/// Counts every request and its latency by method, matched route and status.
pub async fn track_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    let seconds = start.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state
        .telemetry
        .observe_request(&method, &route, status, seconds);
    response
}
