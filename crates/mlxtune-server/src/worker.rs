//! Workers: each claims the oldest queued job atomically, runs the trainer on a blocking
//! thread (off the async runtime), and turns its events into database rows and broadcasts.
//! Cancel and pause reach the trainer through a flag it reads before every micro-batch (set
//! by this process's routes, or by the job's lease task from requests recorded on any
//! process); a trainer that ignores it past `workers.stop_timeout_seconds` is abandoned and
//! its job failed. A claim is a lease (`lease.rs`): a worker that finds its lease lost
//! stops and writes nothing more about the job. How the run ends is `ending`'s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlxtune_engine::train::checkpoint;
use mlxtune_engine::train::spec::FineTuneType;
use mlxtune_engine::train::stepper::Interrupt;
use mlxtune_engine::train::{
    train_interruptible, Control, Event, Level, Outcome, ResumeFrom, TrainResult, TrainSpec,
};
use mlxtune_engine::EngineError;

use crate::api::{EventKind, JobStatus, ModelKind, ModelObject};
use crate::artifacts;
use crate::db;
use crate::ending::{self, Failure};
use crate::error::is_disk_full;
use crate::hub;
use crate::journal::{as_event, log_status, store_event};
use crate::launched;
use crate::lease;
use crate::reconcile;
use crate::registry;
use crate::state::{AppState, CANCEL, DISK_FULL, LOST, PAUSE, RUN, TIME_LIMIT};

/// Runs until shutdown, taking jobs one at a time; `name` is `<node>/worker-<i>`.
pub async fn run(state: AppState, name: String) {
    loop {
        if state.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let woken = state.wake.notified();
        let lease = state.settings.workers.lease_seconds;
        match db::claim_next(&state.db, &name, lease).await {
            Ok(Some(job)) => run_job(&state, job, &name).await,
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

/// What became of an event the trainer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persisted {
    Stored,
    /// The disk refused a write.
    DiskFull,
    /// The job no longer runs under this worker: nothing was recorded.
    Lost,
}

/// Stores an event (and a step's metrics, fenced by `worker`) and broadcasts it. Step
/// updates go out live at most once per `server.stream_update_interval_ms` per job (plus
/// the last step), so the fan-out to many WebSocket clients costs the same whatever the
/// step rate; every step stays in the events table and the metrics series.
async fn persist(
    state: &AppState,
    (id, worker): (&str, &str),
    ev: &Event,
    last_live: &mut Option<Instant>,
) -> Persisted {
    let mut stored = Persisted::Stored;
    let live = match ev {
        Event::Step(m) => {
            match db::record_step(&state.db, id, worker, m).await {
                Ok(true) => {}
                Ok(false) => return Persisted::Lost,
                Err(e) => {
                    tracing::error!(job_id = %id, error = %e, "recording a step");
                    if is_disk_full(&e) {
                        stored = Persisted::DiskFull;
                    }
                }
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
    match store_event(state, id, (level, kind, &message), data, live).await {
        Err(e) if is_disk_full(&e) => Persisted::DiskFull,
        _ => stored,
    }
}

/// The stored error of a failed run: code and the offending field.
fn error_code(e: &EngineError) -> (&'static str, Option<&'static str>) {
    match e {
        EngineError::Data { .. } => ("invalid_training_file", Some("dataset.trainingData")),
        EngineError::Invalid { .. } | EngineError::Config { .. } => ("invalid_request", None),
        EngineError::OutOfMemory(_) => ("out_of_memory", None),
        EngineError::Diverged { .. } => ("diverged", None),
        EngineError::Io { source, .. } if source.raw_os_error() == Some(28) => ("disk_full", None),
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

fn unregister_control(state: &AppState, id: &str) {
    state
        .controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
}

/// The trainer's answer to the job's control flag (a shutdown pauses, to resume later).
fn control_of(flag: u8, shutting: bool) -> Control {
    match flag {
        CANCEL | DISK_FULL | LOST => Control::Cancel,
        PAUSE | TIME_LIMIT => Control::Pause,
        _ if shutting => Control::Pause,
        _ => Control::Continue,
    }
}

type Handle = tokio::sync::oneshot::Receiver<Result<TrainResult, Failure>>;

/// Starts the trainer: on its own thread (a step that never ends can then be abandoned),
/// or as a launched process group for a distributed job.
fn start_trainer(
    state: &AppState,
    job: &db::JobRow,
    spec: TrainSpec,
    resume: Option<ResumeFrom>,
    control: Arc<AtomicU8>,
) -> (Handle, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (done, handle) = tokio::sync::oneshot::channel();
    let shutting = state.shutting_down.clone();
    let output = PathBuf::from(&job.output_dir);
    if let Some(distributed) = job.config.distributed.clone() {
        let l = launched::Launch {
            config: job.config.clone(),
            spec,
            distributed,
            output,
            resume,
        };
        tokio::spawn(async move {
            let r = launched::run(l, tx, control, shutting).await;
            let _ = done.send(r.map_err(|f| Failure {
                code: "training_failed",
                param: None,
                message: f.0,
            }));
        });
        return (handle, rx);
    }
    let stop = (control.clone(), shutting.clone());
    let interrupt: Interrupt =
        Arc::new(move || stop.0.load(Ordering::SeqCst) != RUN || stop.1.load(Ordering::SeqCst));
    std::thread::spawn(move || {
        let r = train_interruptible(&spec, &output, resume, interrupt, &mut |e| {
            let _ = tx.send(e.clone());
            control_of(
                control.load(Ordering::SeqCst),
                shutting.load(Ordering::SeqCst),
            )
        });
        let _ = done.send(r.map_err(|e| {
            let (code, param) = error_code(&e);
            Failure {
                code,
                param,
                message: e.to_string(),
            }
        }));
    });
    (handle, rx)
}

/// Stores the trainer's events as they come while watching the clock: past
/// `workers.max_job_seconds` the trainer is asked to stop, and a write the full disk
/// refuses stops it too. False when the trainer has not ended
/// `workers.stop_timeout_seconds` after a stop request (it is then abandoned).
async fn pump(
    state: &AppState,
    (id, worker): (&str, &str),
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    control: &AtomicU8,
) -> bool {
    let w = &state.settings.workers;
    let (started, mut stop_since) = (Instant::now(), None::<Instant>);
    let mut last_live = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                // Another process runs the job now: nothing more is recorded from here.
                Some(_) if control.load(Ordering::SeqCst) == LOST => {}
                Some(ev) => match persist(state, (id, worker), &ev, &mut last_live).await {
                    Persisted::Stored => {}
                    Persisted::DiskFull => {
                        let _ = control.compare_exchange(RUN, DISK_FULL, Ordering::SeqCst, Ordering::SeqCst);
                    }
                    Persisted::Lost => control.store(LOST, Ordering::SeqCst),
                },
                None => return true,
            },
            _ = tick.tick() => {
                if w.max_job_seconds > 0 && started.elapsed().as_secs() >= w.max_job_seconds {
                    let _ = control.compare_exchange(RUN, TIME_LIMIT, Ordering::SeqCst, Ordering::SeqCst);
                }
                if control.load(Ordering::SeqCst) == RUN && !state.shutting_down.load(Ordering::SeqCst) {
                    continue;
                }
                let since = *stop_since.get_or_insert_with(Instant::now);
                if since.elapsed().as_secs() >= w.stop_timeout_seconds {
                    return false;
                }
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(job_id = %job.id, worker = %worker))]
async fn run_job(state: &AppState, job: db::JobRow, worker: &str) {
    let id = job.id.clone();
    // Held from the claim on (reconciling and downloading weights take time too).
    let control = register_control(state, &id);
    let lease = lease::hold(state, &id, worker, control.clone());
    let spec: TrainSpec = match serde_json::from_str(&job.spec) {
        Ok(s) => s,
        Err(e) => {
            unregister_control(state, &id);
            let message = format!("stored spec unreadable: {e}");
            let _ = db::fail(&state.db, &id, "internal_error", &message, None).await;
            return;
        }
    };
    // A job stored before the bounds existed must not wedge this worker either.
    if let Err(e) = mlxtune_engine::train::bounds::check(&job.config) {
        unregister_control(state, &id);
        let f = Failure {
            code: "invalid_request",
            param: None,
            message: e.to_string(),
        };
        return ending::fail(state, &id, &f).await;
    }
    let job = match artifacts::before_run(state, job).await {
        Ok(job) => job,
        Err(f) => {
            unregister_control(state, &id);
            return ending::fail(state, &id, &f).await;
        }
    };
    let spec = match artifacts::datasets_here(state, &job, spec).await {
        Ok(spec) => spec,
        Err(f) => {
            unregister_control(state, &id);
            return ending::fail(state, &id, &f).await;
        }
    };
    let full = spec.fine_tune_type == FineTuneType::Full;
    let resume = job.resume
        && PathBuf::from(&job.output_dir)
            .join("checkpoints")
            .join("latest")
            .exists();
    if resume {
        // This worker holds the lease: no trainer writes there but the one it starts.
        let swept = checkpoint::sweep_temporary(std::path::Path::new(&job.output_dir));
        if swept > 0 {
            tracing::warn!(count = swept, "deleted half-written checkpoint directories");
        }
    }
    let resume_from = match resume {
        true => Some(match reconcile::before_resume(state, &job).await {
            Some(step) => ResumeFrom::AtMost(step),
            None => ResumeFrom::Latest,
        }),
        false => None,
    };
    let _busy = crate::telemetry::GaugeGuard::hold(&state.telemetry.workers_busy);
    // The claim: one such event per run, naming the worker that took the job.
    let msg = if resume {
        format!("training resumed from the last checkpoint by {worker}")
    } else {
        format!("training started by {worker}")
    };
    log_status(state, &id, Level::Info, &msg, JobStatus::Running).await;
    if let Err(e) = fetch_weights(state, &job, &spec.base_model).await {
        unregister_control(state, &id);
        let f = Failure {
            code: "download_failed",
            param: Some("baseModel"),
            message: e,
        };
        return ending::fail(state, &id, &f).await;
    }
    let (handle, rx) = start_trainer(state, &job, spec, resume_from, control.clone());
    let (sync, mut rx) = artifacts::CheckpointSync::tap(state, &id, control.clone(), rx);
    let ended = pump(state, (&id, worker), &mut rx, &control).await;
    // Its artifacts go up while the lease holds: no other node resumes from an older checkpoint.
    let result = match ended {
        true => Some(artifacts::after_run(state, &job, sync, trainer_result(handle).await).await),
        false => None,
    };
    if !lease.release().await {
        control.store(LOST, Ordering::SeqCst);
    }
    unregister_control(state, &id);
    if control.load(Ordering::SeqCst) == LOST {
        tracing::warn!(job_id = %id, "stopped a job another process took over");
        return;
    }
    let Some(result) = result else {
        let f = Failure {
            code: "unresponsive",
            param: None,
            message: format!(
                "the trainer did not stop within {} s of a stop request (workers.stop_timeout_seconds); its thread was abandoned",
                state.settings.workers.stop_timeout_seconds
            ),
        };
        return ending::fail(state, &id, &f).await;
    };
    conclude(state, &job, full, result, control.load(Ordering::SeqCst)).await
}

/// What the trainer returned.
async fn trainer_result(handle: Handle) -> Result<TrainResult, Failure> {
    handle.await.unwrap_or_else(|_| {
        Err(Failure {
            code: "internal_error",
            param: None,
            message: "the training thread stopped unexpectedly".into(),
        })
    })
}

/// The ending of a run the trainer returned from: a recorded cancel wins; a stop the worker
/// asked for (time limit, full disk) is a failure; otherwise the outcome decides.
async fn conclude(
    state: &AppState,
    job: &db::JobRow,
    full: bool,
    result: Result<TrainResult, Failure>,
    flag: u8,
) {
    let stopped = |code, message: String| Failure {
        code,
        param: None,
        message,
    };
    // A cancel answered 200 while the worker was stopping the job still decides its end.
    let cancelled = db::cancel_requested(&state.db, &job.id)
        .await
        .unwrap_or(false);
    match (result, flag) {
        (Ok(r), _) if cancelled => ending::finish(state, job, full, &r).await,
        (Ok(r), TIME_LIMIT) if r.outcome == Outcome::Paused => {
            let limit = state.settings.workers.max_job_seconds;
            let text = format!("stopped at step {} by the {limit} s limit (workers.max_job_seconds); its last checkpoint is kept", r.step);
            ending::fail(state, &job.id, &stopped("time_limit_exceeded", text)).await
        }
        (Ok(r), DISK_FULL) => {
            let text = format!(
                "stopped at step {}: the disk is full, its progress could not be recorded",
                r.step
            );
            ending::fail(state, &job.id, &stopped("disk_full", text)).await
        }
        (Ok(r), _) => ending::finish(state, job, full, &r).await,
        (Err(f), _) => ending::fail(state, &job.id, &f).await,
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
        let _ = store_event(
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
