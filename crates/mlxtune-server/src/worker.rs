//! Workers: each claims the oldest queued job atomically, runs the trainer on a blocking
//! thread (off the async runtime), and turns its events into database rows and broadcasts.
//! Cancel and pause reach the trainer through a flag it reads after every step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlxtune_engine::train::spec::FineTuneType;
use mlxtune_engine::train::{train, Control, Event, Level, Outcome, TrainResult, TrainSpec};
use mlxtune_engine::EngineError;

use crate::api::{
    fine_tuned_id, CheckpointSaved, EventData, EventKind, JobEvent, JobStatus, Lineage, ModelKind,
    ModelObject, StatusChange, TrainingUpdate,
};
use crate::db;
use crate::hub;
use crate::launched;
use crate::registry;
use crate::state::{AppState, Broadcast, CANCEL, PAUSE, RUN};

/// Stores an event and, when `live`, broadcasts it to stream subscribers (a stored event
/// is still replayed to clients that connect with `?after=`).
async fn store_event(
    state: &AppState,
    job: &str,
    (level, kind, message): (Level, EventKind, &str),
    data: Option<EventData>,
    live: bool,
) {
    match db::add_event(&state.db, job, level, kind, message, data).await {
        Ok(_) if !live => {}
        Ok(event) => broadcast(state, &event),
        Err(e) => tracing::error!(job_id = %job, error = %e, "storing an event"),
    }
}

fn broadcast(state: &AppState, event: &JobEvent) {
    let Ok(text) = serde_json::to_string(event) else {
        return;
    };
    let _ = state.events.send(Broadcast {
        job_id: event.job_id.clone(),
        event_id: event.id,
        text: text.into(),
    });
}

/// Stores and broadcasts a change of a job's state.
pub async fn log_status(state: &AppState, job: &str, level: Level, text: &str, to: JobStatus) {
    let data = EventData::Status(StatusChange { status: to });
    store_event(
        state,
        job,
        (level, EventKind::Status, text),
        Some(data),
        true,
    )
    .await
}

/// Runs until shutdown, taking jobs one at a time.
pub async fn run(state: AppState, name: String) {
    loop {
        if state.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let woken = state.wake.notified();
        match db::claim_next(&state.db, &name).await {
            Ok(Some(job)) => run_job(&state, job).await,
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "claiming a job");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// An engine event as a stored event: kind, message and data.
fn as_event(ev: &Event) -> (Level, EventKind, String, Option<EventData>) {
    match ev {
        Event::Step(m) => (
            Level::Info,
            EventKind::MlxTrainingUpdate,
            format!("step {}/{}: loss {:.4}", m.step, m.total_steps, m.loss),
            Some(EventData::TrainingUpdate(TrainingUpdate {
                metrics: m.clone(),
                current_loss: m.loss,
                gpu_memory_used: m.active_memory_bytes,
                gpu_memory_total: mlxtune_engine::runtime::memory_limit().unwrap_or(0),
            })),
        ),
        Event::Eval(v) => (
            Level::Info,
            EventKind::Metrics,
            format!("step {}: validation loss {:.4}", v.step, v.val_loss),
            Some(EventData::Validation(v.clone())),
        ),
        Event::Checkpoint { step, path } => (
            Level::Info,
            EventKind::Checkpoint,
            format!("checkpoint at step {step}"),
            Some(EventData::Checkpoint(CheckpointSaved {
                step: *step,
                path: path.clone(),
            })),
        ),
        Event::Started(s) => (
            Level::Info,
            EventKind::Message,
            format!(
                "pre-flight: {} records, {} tokens ({} in the loss), {} truncated; {} steps",
                s.train.records,
                s.train.tokens,
                s.train.loss_tokens,
                s.train.truncated,
                s.total_steps
            ),
            Some(EventData::Started(s.clone())),
        ),
        Event::Message { level, text } => (*level, EventKind::Message, text.clone(), None),
    }
}

/// Stores an event (and a step's metrics) and broadcasts it. Step updates go out live at
/// most once per `server.stream_update_interval_ms` per job (plus the last step), so the
/// fan-out to many WebSocket clients costs the same whatever the step rate; every step
/// stays in the events table and the metrics series.
async fn persist(state: &AppState, id: &str, ev: &Event, last_live: &mut Option<Instant>) {
    let live = match ev {
        Event::Step(m) => {
            if let Err(e) = db::record_step(&state.db, id, m).await {
                tracing::error!(job_id = %id, error = %e, "recording a step");
            }
            let interval = Duration::from_millis(state.settings.server.stream_update_interval_ms);
            let due = last_live.is_none_or(|t| t.elapsed() >= interval) || m.step >= m.total_steps;
            if due {
                *last_live = Some(Instant::now());
            }
            due
        }
        _ => true,
    };
    let (level, kind, message, data) = as_event(ev);
    store_event(state, id, (level, kind, &message), data, live).await;
}

/// The stored error of a failed run: code and the offending field.
fn error_code(e: &EngineError) -> (&'static str, Option<&'static str>) {
    match e {
        EngineError::Data { .. } => ("invalid_training_file", Some("dataset.trainingData")),
        EngineError::Invalid { .. } | EngineError::Config { .. } => ("invalid_request", None),
        EngineError::OutOfMemory(_) => ("out_of_memory", None),
        EngineError::Diverged { .. } => ("diverged", None),
        _ => ("training_failed", None),
    }
}

/// Registers the job's control flag while it runs.
fn register_control(state: &AppState, id: &str) -> Arc<AtomicU8> {
    let control = Arc::new(AtomicU8::new(RUN));
    state
        .controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), control.clone());
    control
}

#[tracing::instrument(skip_all, fields(job_id = %job.id))]
async fn run_job(state: &AppState, job: db::JobRow) {
    let id = job.id.clone();
    let spec: TrainSpec = match serde_json::from_str(&job.spec) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("stored spec unreadable: {e}");
            let _ = db::fail(&state.db, &id, "internal_error", &message, None).await;
            return;
        }
    };
    let full = spec.fine_tune_type == FineTuneType::Full;
    let output = PathBuf::from(&job.output_dir);
    let resume = job.resume && output.join("checkpoints").join("latest").exists();
    let control = register_control(state, &id);
    let _busy = crate::telemetry::GaugeGuard::hold(&state.telemetry.workers_busy);
    let msg = if resume {
        "training resumed from the last checkpoint"
    } else {
        "training started"
    };
    log_status(state, &id, Level::Info, msg, JobStatus::Running).await;
    if let Err(e) = fetch_weights(state, &job, &spec.base_model).await {
        state
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let _ = db::fail(&state.db, &id, "download_failed", &e, Some("baseModel")).await;
        let message = format!("job failed: {e}");
        log_status(state, &id, Level::Error, &message, JobStatus::Failed).await;
        return;
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let shutting = state.shutting_down.clone();
    let handle = match job.config.distributed.clone() {
        Some(distributed) => {
            let l = launched::Launch {
                config: job.config.clone(),
                spec,
                distributed,
                output,
                resume,
            };
            tokio::spawn(async move {
                let r = launched::run(l, tx, control, shutting).await;
                r.map_err(|f| ("training_failed", None, f.0))
            })
        }
        None => tokio::task::spawn_blocking(move || {
            let r = train(&spec, &output, resume, &mut |e| {
                let _ = tx.send(e.clone());
                if shutting.load(Ordering::SeqCst) {
                    return Control::Pause;
                }
                match control.load(Ordering::SeqCst) {
                    PAUSE => Control::Pause,
                    CANCEL => Control::Cancel,
                    _ => Control::Continue,
                }
            });
            r.map_err(|e| {
                let (code, param) = error_code(&e);
                (code, param, e.to_string())
            })
        }),
    };
    let mut last_live = None;
    while let Some(ev) = rx.recv().await {
        persist(state, &id, &ev, &mut last_live).await;
    }
    let result = handle.await;
    state
        .controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    match result {
        Ok(Ok(r)) => {
            if matches!(r.outcome, Outcome::Completed | Outcome::EarlyStopped) {
                register_model(state, &job, full, &r).await;
            }
            finish(state, &id, &r).await
        }
        Ok(Err((code, param, text))) => {
            let _ = db::fail(&state.db, &id, code, &text, param).await;
            let message = format!("job failed: {text}");
            log_status(state, &id, Level::Error, &message, JobStatus::Failed).await;
        }
        Err(e) => {
            let message = "the training thread stopped unexpectedly";
            let _ = db::fail(&state.db, &id, "internal_error", message, None).await;
            tracing::error!(error = %e, "training thread");
        }
    }
}

/// A Hugging Face base model whose weights are not here yet (the submission fetched only
/// its config and tokenizer): fetched now, with progress events on the job every 10%, then
/// registered.
async fn fetch_weights(state: &AppState, job: &db::JobRow, dir: &str) -> Result<(), String> {
    let repo = registry::aliased(&state.settings, &job.config.base_model).to_string();
    if !hub::is_repo_id(&repo) || hub::has_weights(std::path::Path::new(dir)) {
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, u64)>();
    let progress = move |f: &str, done: u64, total: u64| {
        let _ = tx.send((f.to_string(), done, total));
    };
    let cfg = hub::HubConfig::from_env();
    let name = repo.clone();
    let download = tokio::spawn(async move { hub::download(&name, &cfg, Some(&progress)).await });
    let mut shown: std::collections::HashMap<String, u64> = Default::default();
    while let Some((file, done, total)) = rx.recv().await {
        let tenth = done * 10 / total.max(1);
        if shown.get(&file).is_some_and(|t| *t >= tenth) {
            continue;
        }
        shown.insert(file.clone(), tenth);
        let text = format!(
            "downloading {file} of {repo} from the Hugging Face Hub: {}% of {:.1} MB",
            tenth * 10,
            total as f64 / 1e6
        );
        store_event(
            state,
            &job.id,
            (Level::Info, EventKind::Message, &text),
            None,
            true,
        )
        .await;
    }
    let snapshot = download
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let m = ModelObject {
        id: repo.clone(),
        object: "model".into(),
        created: db::now(),
        owned_by: "user".into(),
        kind: ModelKind::Base,
        source: repo,
        path: Some(snapshot.display().to_string()),
        lineage: None,
        loaded: false,
    };
    db::insert_model(&state.db, &m)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Registers a succeeded job's model (`ft:<base>:<suffix>:<job id>`) with its lineage.
async fn register_model(state: &AppState, job: &db::JobRow, full: bool, r: &TrainResult) {
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
    let m = ModelObject {
        id: fine_tuned_id(&job.config.base_model, job.config.name.as_deref(), &job.id),
        object: "model".into(),
        created: db::now(),
        owned_by: "mlxtune".into(),
        kind: ModelKind::FineTuned,
        source: out,
        path: Some(r.output_dir.display().to_string()),
        lineage: Some(lineage),
        loaded: false,
    };
    if let Err(e) = db::insert_model(&state.db, &m).await {
        tracing::error!(job_id = %job.id, error = %e, "registering the fine-tuned model");
    }
}

/// Moves a job that ran to the state its outcome calls for.
async fn finish(state: &AppState, id: &str, r: &TrainResult) {
    let (to, message) = match r.outcome {
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
    };
    match db::transition(&state.db, id, &[JobStatus::Running], to).await {
        Ok(true) => log_status(state, id, Level::Info, &message, to).await,
        Ok(false) => tracing::warn!("job left the running state during training"),
        Err(e) => tracing::error!(error = %e, "finishing a job"),
    }
}
