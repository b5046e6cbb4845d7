//! How a job that ran ends: the state its outcome calls for (a recorded cancel wins over
//! any outcome), its fine-tuned model registered on success, or its failure stored. A
//! write the full disk refuses is retried with backoff, the ending kept in memory, until
//! one succeeds (or the server shuts down: the job is then recovered at the next start).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mlxtune_engine::train::{Level, Outcome, TrainResult};

use crate::api::{fine_tuned_id, JobStatus, Lineage, ModelKind, ModelObject};
use crate::db;
use crate::error::is_disk_full;
use crate::journal::log_status;
use crate::state::AppState;

/// A run that ended in an error: code, offending field, message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
}

/// Runs a database write until it succeeds, waiting (100 ms, doubling to 5 s) while the
/// disk is full; None when it failed otherwise or the server is shutting down.
pub async fn retrying<T, F, Fut>(state: &AppState, what: &str, mut write: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(v) => return Some(v),
            Err(e) if is_disk_full(&e) && !state.shutting_down.load(Ordering::SeqCst) => {
                tracing::warn!(error = %e, "{what}: the disk is full; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "{what}");
                return None;
            }
        }
    }
}

/// Stores a job's failure (retried while the disk is full) and announces it.
pub async fn fail(state: &AppState, id: &str, f: &Failure) {
    let stored = retrying(state, "storing a job's failure", || {
        db::fail(&state.db, id, f.code, &f.message, f.param)
    })
    .await;
    if stored.is_some() {
        let message = format!("job failed: {}", f.message);
        log_status(state, id, Level::Error, &message, JobStatus::Failed).await;
    }
}

/// The model a succeeded job registers (`ft:<base>:<suffix>:<job id>`), with its lineage.
fn fine_tuned_model(job: &db::JobRow, full: bool, r: &TrainResult) -> ModelObject {
    let out = r.output_dir.display().to_string();
    let lineage = Lineage {
        base_model: job.config.base_model.clone(),
        job_id: job.id.clone(),
        checkpoint: r.best_checkpoint.as_ref().map(|p| p.display().to_string()),
        train_loss: r.final_loss,
        valid_loss: r.best_val_loss,
        adapter_path: (!full).then(|| out.clone()),
        fused_path: full.then(|| r.output_dir.join("model").display().to_string()),
    };
    ModelObject {
        id: fine_tuned_id(&job.config.base_model, job.config.name.as_deref(), &job.id),
        object: "model".into(),
        created: db::now(),
        owned_by: "mlxtune".into(),
        kind: ModelKind::FineTuned,
        source: out,
        path: Some(r.output_dir.display().to_string()),
        lineage: Some(lineage),
        loaded: false,
    }
}

/// Moves a job that ran to the state its outcome calls for (or `cancelled`, when a cancel
/// was recorded before), registering its model in the same write when it succeeded.
pub async fn finish(state: &AppState, job: &db::JobRow, full: bool, r: &TrainResult) {
    let (to, message) = outcome_state(state, r);
    let model = (to == JobStatus::Succeeded).then(|| fine_tuned_model(job, full, r));
    let ended = retrying(state, "finishing a job", || {
        db::settle(&state.db, &job.id, to, model.as_ref())
    })
    .await;
    let Some(ended) = ended.flatten() else {
        tracing::warn!(job_id = %job.id, "the job left the running state during training");
        return;
    };
    let message = match ended == to {
        true => message,
        false => format!(
            "job cancelled at step {} (the cancel request came before it ended)",
            r.step
        ),
    };
    log_status(state, &job.id, Level::Info, &message, ended).await;
}

/// The state an outcome calls for, and its announcement.
fn outcome_state(state: &AppState, r: &TrainResult) -> (JobStatus, String) {
    match r.outcome {
        Outcome::Completed => (
            JobStatus::Succeeded,
            format!("job succeeded at step {}", r.step),
        ),
        Outcome::EarlyStopped => (
            JobStatus::Succeeded,
            format!("job succeeded (early stopping at step {})", r.step),
        ),
        Outcome::Cancelled => (
            JobStatus::Cancelled,
            format!("job cancelled at step {}", r.step),
        ),
        Outcome::Paused if state.shutting_down.load(Ordering::SeqCst) => (
            JobStatus::Queued,
            format!(
                "server shutting down: checkpointed at step {}, will resume",
                r.step
            ),
        ),
        Outcome::Paused => (
            JobStatus::Paused,
            format!("job paused at step {} (checkpointed)", r.step),
        ),
    }
}
