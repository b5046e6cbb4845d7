//! When a submission's datasets are checked: inside the request (a 422 at once), or, when
//! its local and uploaded datasets total more than `files.async_validation_bytes`, in the
//! background: the job is stored as `validating_files` and becomes `queued`, or `failed`
//! with the pre-flight's error (`file:line`), when the check ends. A server that stopped
//! during a pre-flight runs it again at its next start.

use std::path::PathBuf;

use mlxtune_engine::train::{FineTuneConfig, Level, TrainSpec};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::api::{EventData, EventKind, JobStatus, StatusChange};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::journal;
use crate::remote;
use crate::state::AppState;

/// Bytes of the job's local and uploaded datasets (remote ones are fetched and checked
/// inside the request; a path that does not resolve counts 0 and gets its 422 there).
pub(super) async fn dataset_bytes(state: &AppState, config: &FineTuneConfig) -> ApiResult<u64> {
    let d = &config.dataset;
    let named = [
        (Some(&d.training_data), "dataset.trainingData"),
        (d.validation_data.as_ref(), "dataset.validationData"),
    ];
    let mut total = 0;
    for (uri, param) in named {
        let Some(uri) = uri else { continue };
        let path = if uri.starts_with("file-") {
            db::files::file_path(&state.db, uri)
                .await?
                .map(PathBuf::from)
        } else if remote::is_remote(uri) {
            None
        } else {
            crate::validate::confine(uri, &state.settings.paths.dataset_roots, param).ok()
        };
        if let Some(p) = path {
            total += tokio::fs::metadata(&p).await.map_or(0, |m| m.len());
        }
    }
    Ok(total)
}

/// What a `validating_files` job's spec column holds until its pre-flight ends: what the
/// pre-flight needs besides the stored config.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// An OpenAI body's default sequence length, to be lowered to the model's context.
    cap_sequence_length: bool,
}

/// The spec column of a job stored as `validating_files`.
pub(super) fn placeholder(cap: bool) -> String {
    let p = Pending {
        cap_sequence_length: cap,
    };
    serde_json::to_string(&p).unwrap_or_else(|_| "{}".into())
}

/// Pre-flights again the jobs a stopped server left `validating_files` (at start).
pub async fn resume_interrupted(state: &AppState) -> sqlx::Result<()> {
    let waiting = JobStatus::ValidatingFiles;
    for row in db::list_jobs(&state.db, None, i64::MAX, Some(waiting)).await? {
        let cap = serde_json::from_str::<Pending>(&row.spec).is_ok_and(|p| p.cap_sequence_length);
        tracing::warn!(job_id = %row.id, "the server stopped during this job's pre-flight; running it again");
        spawn(state.clone(), row.id, row.config, cap);
    }
    Ok(())
}

/// Runs the pre-flight of the stored `validating_files` job `id` in the background.
pub(super) fn spawn(state: AppState, id: String, config: FineTuneConfig, cap: bool) {
    let span = tracing::info_span!("preflight", job_id = %id);
    tokio::spawn(
        async move {
            let result = match super::validated_spec(&state, &config, cap).await {
                Ok(spec) => crate::artifacts::share_datasets(&state, &id, &spec)
                    .await
                    .map(|()| spec),
                Err(e) => Err(e),
            };
            if let Err(e) = conclude(&state, &id, result).await {
                tracing::error!(error = %e, "recording the pre-flight's outcome");
            }
        }
        .instrument(span),
    );
}

/// Queues the job with its spec, or fails it with the error (unless it was cancelled
/// meanwhile), and says so in a status event.
async fn conclude(state: &AppState, id: &str, result: ApiResult<TrainSpec>) -> sqlx::Result<()> {
    match result {
        Ok(spec) => {
            let text = serde_json::to_string(&spec)
                .map_err(|e| sqlx::Error::Protocol(format!("spec: {e}")))?;
            if db::preflight::passed(&state.db, id, &text).await? {
                let note = "files validated; job queued";
                status_event(state, id, Level::Info, note, JobStatus::Queued).await?;
                state.wake.notify_waiters();
            }
        }
        Err(ApiError {
            code,
            message,
            param,
            ..
        }) => {
            let param = param.as_deref();
            if db::preflight::failed(&state.db, id, code, &message, param).await? {
                let note = format!("validation failed: {message}");
                status_event(state, id, Level::Error, &note, JobStatus::Failed).await?;
            }
        }
    }
    Ok(())
}

/// Stores a status event and sends it to the job's stream subscribers.
async fn status_event(
    state: &AppState,
    id: &str,
    level: Level,
    text: &str,
    to: JobStatus,
) -> sqlx::Result<()> {
    let data = EventData::Status(StatusChange { status: to });
    let what = (level, EventKind::Status, text);
    journal::store_event(state, id, what, Some(data), true).await
}
