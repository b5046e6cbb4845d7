//! After a crash the database can trail the trainer (a kill -9 between the trainer's
//! writing of a step and the worker's recording of it). Before a job resumes from its
//! checkpoint at step S, the database is brought in line with the run's own record,
//! `metrics.jsonl` (written before a step is reported): the steps up to S that the database
//! lacks are recorded from it, with their events, and whatever it holds past S is dropped,
//! since those steps run again. So every step is recorded exactly once, in order.

use std::path::Path;

use mlxtune_engine::train::checkpoint::{checkpoints_dir, step_of};
use mlxtune_engine::train::{Event, StepMetrics};

use crate::db;
use crate::journal::{as_event, note, store_event};
use crate::state::AppState;

/// The step of the checkpoint `latest` names.
fn latest_step(output: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(checkpoints_dir(output).join("latest")).ok()?;
    step_of(name.trim())
}

/// The run's own step lines up to `step` (unreadable lines are skipped: a line cut by the
/// crash is past the checkpoint anyway).
fn logged_steps(output: &Path, step: u64) -> Vec<StepMetrics> {
    let Ok(text) = std::fs::read_to_string(output.join("metrics.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
        .filter(|m| m.step <= step)
        .collect()
}

/// Brings the database in line with the checkpoint a job is about to resume from, and
/// returns that checkpoint's step: the trainer resumes from it (not from one a process
/// that lost the job may write meanwhile).
pub async fn before_resume(state: &AppState, job: &db::JobRow) -> Option<u64> {
    let step = latest_step(Path::new(&job.output_dir))?;
    if let Err(e) = reconcile(state, job, step).await {
        tracing::error!(job_id = %job.id, error = %e, "reconciling a job's metrics with its checkpoint");
    }
    Some(step)
}

async fn reconcile(state: &AppState, job: &db::JobRow, step: u64) -> sqlx::Result<()> {
    let output = Path::new(&job.output_dir);
    let pool = &state.db;
    let dropped = db::metrics::drop_metrics_after(pool, &job.id, step).await?;
    db::events::drop_events_after(pool, &job.id, step).await?;
    let recorded = db::metrics::last_step(pool, &job.id).await?;
    let missing: Vec<StepMetrics> = logged_steps(output, step)
        .into_iter()
        .filter(|m| m.step > recorded)
        .collect();
    let worker = job.worker.as_deref().unwrap_or_default();
    for m in &missing {
        if !db::record_step(pool, &job.id, worker, m).await? {
            return Ok(()); // taken over meanwhile: the new holder reconciles
        }
        let (level, kind, message, data) = as_event(&Event::Step(m.clone()));
        store_event(state, &job.id, (level, kind, &message), data, false).await?;
    }
    if dropped > 0 || !missing.is_empty() {
        let text = format!(
            "recovered: {} step(s) restored from the run's metrics.jsonl, {} past the checkpoint at step {step} dropped (they run again)",
            missing.len(),
            dropped
        );
        note(state, &job.id, &text).await?;
    }
    Ok(())
}
