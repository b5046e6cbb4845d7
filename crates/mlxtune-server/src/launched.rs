//! A distributed job (`"distributed": {"processes": N, "backend": …}`) runs as
//! `mlxtune launch -n N --backend B -- train … --json`: rank 0's JSON lines are the job's
//! events, its last line the result. Cancel stops the group (the last checkpoint stays);
//! pause and shutdown stop it too, and the job continues later from the checkpoint the
//! resuming worker reconciled its records with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use mlxtune_engine::train::config::DistributedConfig;
use mlxtune_engine::train::{Event, FineTuneConfig, Outcome, ResumeFrom, TrainResult, TrainSpec};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

use crate::state::{CANCEL, DISK_FULL, LOST, PAUSE, TIME_LIMIT};

/// Why a launched run failed.
pub struct LaunchFailure(pub String);

/// What a launched run needs.
pub struct Launch {
    pub config: FineTuneConfig,
    pub spec: TrainSpec,
    pub distributed: DistributedConfig,
    pub output: PathBuf,
    /// Which checkpoint a resumed group starts from (`train --resume-at-most`); None: a
    /// fresh run.
    pub resume: Option<ResumeFrom>,
}

/// The `mlxtune` binary serving now.
fn launcher() -> Result<PathBuf, LaunchFailure> {
    let exe = std::env::current_exe().map_err(|e| LaunchFailure(e.to_string()))?;
    if exe.file_stem().is_some_and(|s| s == "mlxtune") {
        return Ok(exe);
    }
    Err(LaunchFailure(format!(
        "distributed jobs are launched with the mlxtune binary; this server runs as {}",
        exe.display()
    )))
}

/// The job's config as rank 0 reads it: the validated paths and sequence length, no
/// `distributed` section.
fn write_config(l: &Launch) -> Result<PathBuf, LaunchFailure> {
    let mut c = l.config.clone();
    c.base_model = l.spec.base_model.clone();
    c.dataset.training_data = l.spec.train_data.clone();
    c.dataset.validation_data = l.spec.valid_data.clone();
    c.parameters.sequence_length = l.spec.sequence_length as u32;
    c.distributed = None;
    let path = l.output.with_extension("launch.json");
    let text = serde_json::to_string_pretty(&c).map_err(|e| LaunchFailure(e.to_string()))?;
    mlxtune_engine::fsutil::write_atomic(&path, text.as_bytes())
        .map_err(|e| LaunchFailure(e.to_string()))?;
    Ok(path)
}

fn command(l: &Launch, config: &Path) -> Result<tokio::process::Command, LaunchFailure> {
    let mut cmd = tokio::process::Command::new(launcher()?);
    let n = l.distributed.processes.to_string();
    let backend = l.distributed.backend.as_deref().unwrap_or("ring");
    cmd.args([
        "launch",
        "-n",
        &n,
        "--backend",
        backend,
        "--",
        "train",
        "--json",
    ]);
    let out = l.output.display().to_string();
    if let Some(from) = l.resume {
        cmd.args(["--resume", &out]);
        if let ResumeFrom::AtMost(step) = from {
            cmd.args(["--resume-at-most", &step.to_string()]);
        }
    } else {
        cmd.args([
            "--config",
            &config.display().to_string(),
            "--output",
            &out,
            "--overwrite",
        ]);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs the group to its end; every event of rank 0 goes to `tx`.
pub async fn run(
    l: Launch,
    tx: UnboundedSender<Event>,
    control: Arc<AtomicU8>,
    shutting: Arc<AtomicBool>,
) -> Result<TrainResult, LaunchFailure> {
    let config = write_config(&l)?;
    let mut child = command(&l, &config)?
        .spawn()
        .map_err(|e| LaunchFailure(format!("starting mlxtune launch: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or(LaunchFailure("no stdout".into()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or(LaunchFailure("no stderr".into()))?;
    // Drained as it comes (a full pipe would block the ranks); the last lines are kept.
    let tail = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut last: std::collections::VecDeque<String> = Default::default();
        while let Ok(Some(l)) = lines.next_line().await {
            if last.len() == 3 {
                last.pop_front();
            }
            last.push_back(l);
        }
        Vec::from(last).join(" | ")
    });
    let mut lines = BufReader::new(stdout).lines();
    let (mut result, mut stopped, mut last_step) = (None, None, 0);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) => {
                    if let Some(r) = finished(&text) {
                        result = Some(r);
                    } else if let Ok(ev) = serde_json::from_str::<Event>(&text) {
                        if let Event::Step(m) = &ev {
                            last_step = m.step;
                        }
                        let _ = tx.send(ev);
                    }
                }
                _ => break,
            },
            _ = tick.tick() => {
                let wanted = match control.load(Ordering::SeqCst) {
                    CANCEL | DISK_FULL | LOST => Some(Outcome::Cancelled),
                    PAUSE | TIME_LIMIT => Some(Outcome::Paused),
                    _ if shutting.load(Ordering::SeqCst) => Some(Outcome::Paused),
                    _ => None,
                };
                if stopped.is_none() && wanted.is_some() {
                    stopped = wanted;
                    let _ = child.start_kill();
                }
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| LaunchFailure(e.to_string()))?;
    let _ = std::fs::remove_file(&config);
    if let Some(outcome) = stopped {
        return Ok(stopped_result(&l, outcome, last_step));
    }
    let tail = tail.await.unwrap_or_default();
    match result {
        Some(r) if status.success() => Ok(r),
        _ => Err(LaunchFailure(format!(
            "the distributed run ended with {status}: {tail}"
        ))),
    }
}

#[derive(serde::Deserialize)]
struct Finished {
    #[serde(rename = "type")]
    kind: String,
    result: TrainResult,
}

fn finished(line: &str) -> Option<TrainResult> {
    let f: Finished = serde_json::from_str(line).ok()?;
    (f.kind == "finished").then_some(f.result)
}

fn stopped_result(l: &Launch, outcome: Outcome, step: u64) -> TrainResult {
    TrainResult {
        outcome,
        step,
        total_steps: 0,
        final_loss: None,
        best_val_loss: None,
        best_checkpoint: None,
        output_dir: l.output.clone(),
        trained_tokens: 0,
        skipped_steps: 0,
    }
}
