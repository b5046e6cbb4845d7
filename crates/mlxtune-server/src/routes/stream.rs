//! `GET /v1/fine_tuning/jobs/{id}/stream` (and `/v1/fine_tuning/stream` for all jobs): a
//! snapshot on connect, the stored events after `?after=`, then live events. A client that
//! falls behind the bounded broadcast buffer gets a fresh snapshot instead of blocking
//! training.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{ErrorBody, Snapshot};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct StreamQuery {
    /// `ftevent-<n>` or the number n.
    after: Option<String>,
}

/// WebSocket: a snapshot, the stored events after `after`, then live events of the job.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/stream", operation_id = "streamFineTuningJob",
    params(("id" = String, Path, description = "job id"), ("after" = Option<String>, Query, description = "event id to replay after (ftevent-<n>, or the number n)")),
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn job_stream(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    db::get_job(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("job {id}")))?;
    let after = crate::api::event_id::after(q.after.as_deref())
        .map_err(|m| ApiError::invalid("after", m))?;
    let ws = ws.protocols([super::bearer::SUBPROTOCOL]);
    Ok(ws.on_upgrade(move |socket| serve(socket, state, Some(id), after)))
}

/// WebSocket: live events of every job.
#[utoipa::path(get, path = "/v1/fine_tuning/stream", operation_id = "streamFineTuningJobs", responses((status = 101, description = "switching to the WebSocket protocol")))]
pub async fn all_stream(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.protocols([super::bearer::SUBPROTOCOL])
        .on_upgrade(move |socket| serve(socket, state, None, i64::MAX))
}

async fn snapshot(state: &AppState, id: &str) -> Option<String> {
    let row = db::get_job(&state.db, id).await.ok()??;
    let s = Snapshot {
        kind: "snapshot".into(),
        job: row.into(),
    };
    serde_json::to_string(&s).ok()
}

async fn serve(mut socket: WebSocket, state: AppState, job: Option<String>, after: i64) {
    let _open = crate::telemetry::GaugeGuard::hold(&state.telemetry.websocket_clients);
    // Subscribe first so nothing falls between the replay and the live events.
    let mut rx = state.events.subscribe();
    let mut last = after;
    if let Some(id) = &job {
        let Some(s) = snapshot(&state, id).await else {
            return;
        };
        if socket.send(Message::Text(s.into())).await.is_err() {
            return;
        }
        loop {
            let Ok(rows) = db::events(&state.db, id, last, 500).await else {
                return;
            };
            if rows.is_empty() {
                break;
            }
            for r in rows {
                last = r.id;
                let Ok(text) = serde_json::to_string(&r) else {
                    return;
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(b) => {
                    if job.as_ref().is_some_and(|j| *j != b.job_id) {
                        continue;
                    }
                    if job.is_some() && b.event_id <= last {
                        continue;
                    }
                    last = b.event_id;
                    if socket.send(Message::Text(b.text.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if let Some(id) = &job {
                        let Some(s) = snapshot(&state, id).await else { return };
                        if socket.send(Message::Text(s.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}
