//! Workers: each claims the oldest queued job atomically, runs the trainer on a blocking
//! thread (off the async runtime), and turns its events into database rows and broadcasts.
//! Cancel and pause reach the trainer through a flag it reads after every step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlxtune_engine::train::{train, Control, Event, Outcome, TrainSpec};
use mlxtune_engine::EngineError;
use serde_json::{json, Value};

use crate::db;
use crate::state::{AppState, Broadcast, CANCEL, PAUSE, RUN};

/// Stores an event and broadcasts it to stream subscribers.
pub async fn log_event(
    state: &AppState,
    job: &str,
    level: &str,
    kind: &str,
    message: &str,
    data: Option<Value>,
) {
    store_event(state, job, level, kind, message, data, true).await
}

/// Stores an event; broadcasts it live only when `live` (the stored row is still replayed
/// to clients that connect with `?after=`).
async fn store_event(
    state: &AppState,
    job: &str,
    level: &str,
    kind: &str,
    message: &str,
    data: Option<Value>,
    live: bool,
) {
    match db::add_event(&state.db, job, level, kind, message, data.as_ref()).await {
        Ok(_) if !live => {}
        Ok(id) => {
            let event = json!({
                "id": id, "object": "fine_tuning.job.event", "job_id": job, "created_at": db::now(),
                "level": level, "type": kind, "message": message, "data": data,
            });
            let _ = state.events.send(Broadcast {
                job_id: job.to_string(),
                event_id: id,
                text: event.to_string().into(),
            });
        }
        Err(e) => tracing::error!(job_id = %job, error = %e, "storing an event"),
    }
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

fn update_json(ev: &Event) -> Option<(String, String, Value)> {
    Some(match ev {
        Event::Step(m) => {
            let mut data = serde_json::to_value(m).ok()?;
            let total_mem = mlxtune_engine::mlx_rs::memory::memory_limit().unwrap_or(0) as u64;
            data["epoch"] = json!(m.epoch);
            data["total_epochs"] = json!(m.total_epochs);
            data["current_loss"] = json!(m.loss);
            data["gpu_memory_used"] = json!(m.active_memory_bytes);
            data["gpu_memory_total"] = json!(total_mem);
            (
                "mlx_training_update".into(),
                format!("step {}/{}: loss {:.4}", m.step, m.total_steps, m.loss),
                data,
            )
        }
        Event::Eval(v) => (
            "metrics".into(),
            format!("step {}: validation loss {:.4}", v.step, v.val_loss),
            serde_json::to_value(v).ok()?,
        ),
        Event::Checkpoint { step, path } => (
            "checkpoint".into(),
            format!("checkpoint at step {step}"),
            json!({ "step": step, "path": path }),
        ),
        Event::Started {
            total_steps, train, ..
        } => (
            "message".into(),
            format!(
                "pre-flight: {} records, {} tokens ({} in the loss), {} truncated; {} steps",
                train.records, train.tokens, train.loss_tokens, train.truncated, total_steps
            ),
            serde_json::to_value(ev).ok()?,
        ),
        Event::Message { level: _, text } => ("message".into(), text.clone(), Value::Null),
    })
}

/// Stores an event (and a step's metrics) and broadcasts it. Step updates go out live at
/// most once per `server.stream_update_interval_ms` per job (plus the last step), so the
/// fan-out to many WebSocket clients costs the same whatever the step rate; every step
/// stays in the events table and the metrics series.
async fn persist(state: &AppState, id: &str, ev: &Event, last_live: &mut Option<Instant>) {
    if let Event::Step(m) = ev {
        let metrics = serde_json::to_value(m).unwrap_or(Value::Null);
        if let Err(e) = db::record_step(
            &state.db,
            id,
            m.step as i64,
            m.total_steps as i64,
            m.trained_tokens as i64,
            &metrics,
        )
        .await
        {
            tracing::error!(job_id = %id, error = %e, "recording a step");
        }
    }
    let level = match ev {
        Event::Message { level, .. } => level.clone(),
        _ => "info".into(),
    };
    let live = match ev {
        Event::Step(m) => {
            let interval = Duration::from_millis(state.settings.server.stream_update_interval_ms);
            let due = last_live.is_none_or(|t| t.elapsed() >= interval) || m.step >= m.total_steps;
            if due {
                *last_live = Some(Instant::now());
            }
            due
        }
        _ => true,
    };
    if let Some((kind, message, data)) = update_json(ev) {
        store_event(
            state,
            id,
            &level,
            &kind,
            &message,
            (!data.is_null()).then_some(data),
            live,
        )
        .await;
    }
}

fn error_code(e: &EngineError) -> (&'static str, Option<&'static str>) {
    match e {
        EngineError::Data { .. } => ("invalid_training_file", Some("dataset.trainingData")),
        EngineError::Invalid { .. } | EngineError::Config { .. } => ("invalid_request", None),
        _ => ("training_failed", None),
    }
}

#[tracing::instrument(skip_all, fields(job_id = %job.id))]
async fn run_job(state: &AppState, job: db::JobRow) {
    let id = job.id.clone();
    let spec: TrainSpec = match serde_json::from_str(&job.spec) {
        Ok(s) => s,
        Err(e) => {
            let _ = db::fail(
                &state.db,
                &id,
                "internal_error",
                &format!("stored spec unreadable: {e}"),
                None,
            )
            .await;
            return;
        }
    };
    let output = PathBuf::from(&job.output_dir);
    let resume = job.resume != 0 && output.join("checkpoints").join("latest").exists();
    let control = Arc::new(AtomicU8::new(RUN));
    state
        .controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), control.clone());
    let msg = if resume {
        "training resumed from the last checkpoint"
    } else {
        "training started"
    };
    log_event(
        state,
        &id,
        "info",
        "status",
        msg,
        Some(json!({ "status": "running" })),
    )
    .await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let shutting = state.shutting_down.clone();
    let flag = control.clone();
    let handle = tokio::task::spawn_blocking(move || {
        train(&spec, &output, resume, &mut |e| {
            let _ = tx.send(e.clone());
            if shutting.load(Ordering::SeqCst) {
                return Control::Pause;
            }
            match flag.load(Ordering::SeqCst) {
                PAUSE => Control::Pause,
                CANCEL => Control::Cancel,
                _ => Control::Continue,
            }
        })
    });
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
    let db = &state.db;
    match result {
        Ok(Ok(r)) => {
            let (to, message) = match r.outcome {
                Outcome::Completed => ("succeeded", format!("job succeeded at step {}", r.step)),
                Outcome::EarlyStopped => (
                    "succeeded",
                    format!("job succeeded (early stopping at step {})", r.step),
                ),
                Outcome::Cancelled => ("cancelled", format!("job cancelled at step {}", r.step)),
                Outcome::Paused if state.shutting_down.load(Ordering::SeqCst) => (
                    "queued",
                    format!(
                        "server shutting down: checkpointed at step {}, will resume",
                        r.step
                    ),
                ),
                Outcome::Paused => (
                    "paused",
                    format!("job paused at step {} (checkpointed)", r.step),
                ),
            };
            match db::transition(db, &id, &["running"], to).await {
                Ok(true) => {
                    log_event(
                        state,
                        &id,
                        "info",
                        "status",
                        &message,
                        Some(json!({ "status": to })),
                    )
                    .await
                }
                Ok(false) => tracing::warn!("job left the running state during training"),
                Err(e) => tracing::error!(error = %e, "finishing a job"),
            }
        }
        Ok(Err(e)) => {
            let (code, param) = error_code(&e);
            let text = e.to_string();
            let _ = db::fail(db, &id, code, &text, param).await;
            log_event(
                state,
                &id,
                "error",
                "status",
                &format!("job failed: {text}"),
                Some(json!({ "status": "failed" })),
            )
            .await;
        }
        Err(e) => {
            let _ = db::fail(
                db,
                &id,
                "internal_error",
                "the training thread stopped unexpectedly",
                None,
            )
            .await;
            tracing::error!(error = %e, "training thread");
        }
    }
}
