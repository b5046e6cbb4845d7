//! Checkpoints: `checkpoints/step-NNNNNNNN/` holding the trainable arrays, the optimizer
//! state and `state.json` (everything needed to resume exactly). A checkpoint is written
//! into a temporary directory and renamed into place, then `checkpoints/latest` is
//! rewritten atomically: a kill leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::fsutil::write_atomic;
use crate::weights::{self, Weights};

/// The trainer's position and bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Micro-batches consumed (with the per-epoch shuffles, this fixes the data order).
    pub micro: u64,
    pub total_steps: u64,
    pub optimizer_t: u64,
    /// fp16 dynamic loss scale.
    pub loss_scale: f32,
    pub good_steps: u64,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<u64>,
    /// Evaluations in a row without improvement (early stopping).
    pub evals_without_improvement: u32,
    pub trained_tokens: u64,
    pub last_loss: Option<f64>,
    /// Each planned batch runs as this many micro-batches (doubled after an out-of-memory
    /// error); `micro` counts in these units.
    #[serde(default = "one")]
    pub split: u32,
    /// fp16 updates skipped for overflow (their micro-batches are retried, not dropped).
    #[serde(default)]
    pub skipped_steps: u64,
}

fn one() -> u32 {
    1
}

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step of a checkpoint directory's name (`step-00000012` → 12).
pub fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// A complete checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub step: u64,
    pub path: PathBuf,
}

/// The complete checkpoints of a run, newest first (temporary directories are not listed).
pub fn list(output: &Path) -> Vec<CheckpointInfo> {
    let root = checkpoints_dir(output);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<CheckpointInfo> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = step_of(&e.file_name().to_string_lossy())?;
            Some(CheckpointInfo {
                step,
                path: e.path(),
            })
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.step));
    found
}

/// What a run resumes from: the latest checkpoint's state, arrays and directory.
#[derive(Debug)]
pub struct Resume {
    pub state: TrainState,
    pub trainable: Weights,
    pub optimizer: Weights,
    pub dir: PathBuf,
}

/// Writes a checkpoint and points `latest` at it.
pub fn save(
    output: &Path,
    state: &TrainState,
    trainable: &Weights,
    optimizer: &Weights,
) -> Result<PathBuf> {
    let root = checkpoints_dir(output);
    std::fs::create_dir_all(&root).map_err(|e| EngineError::io(&root, e))?;
    let name = step_dir_name(state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // A failed write (a full disk) leaves no half-written directory behind.
    if let Err(e) = write_contents(&tmp, state, trainable, optimizer) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| EngineError::io(&dir, e))?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    Ok(dir)
}

fn write_contents(
    tmp: &Path,
    state: &TrainState,
    trainable: &Weights,
    optimizer: &Weights,
) -> Result<()> {
    std::fs::create_dir_all(tmp).map_err(|e| EngineError::io(tmp, e))?;
    let meta = Default::default();
    weights::save_atomic(&tmp.join("trainable.safetensors"), trainable, &meta)?;
    if !optimizer.is_empty() {
        weights::save_atomic(&tmp.join("optimizer.safetensors"), optimizer, &meta)?;
    }
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| EngineError::serialization("checkpoint state", e))?;
    write_atomic(&tmp.join("state.json"), text.as_bytes())
}

/// Deletes the temporary directories of checkpoints whose writing never finished (a crash,
/// a kill or a full disk); returns how many went. Run where no trainer writes into `output`.
pub fn sweep_temporary(output: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(output)) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".step-") && name.contains(".tmp")
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Marks `step`'s checkpoint as the best one.
pub fn mark_best(output: &Path, step: u64) -> Result<()> {
    write_atomic(
        &checkpoints_dir(output).join("best"),
        step_dir_name(step).as_bytes(),
    )
}

/// Reads the checkpoint `latest` points at.
pub fn load_latest(output: &Path) -> Result<Option<Resume>> {
    let root = checkpoints_dir(output);
    let latest = root.join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(|e| EngineError::io(&latest, e))?;
    load_dir(root.join(name.trim())).map(Some)
}

/// Reads the newest checkpoint of at most `step` steps (a resuming worker's: one written
/// later may come from a process that lost the job and must not count).
pub fn load_at_most(output: &Path, step: u64) -> Result<Option<Resume>> {
    match list(output).into_iter().find(|c| c.step <= step) {
        Some(c) => load_dir(c.path).map(Some),
        None => Ok(None),
    }
}

fn load_dir(dir: PathBuf) -> Result<Resume> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| EngineError::io(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| {
        EngineError::config(
            &state_path,
            "(file)",
            format!("not a checkpoint state: {e}"),
        )
    })?;
    let trainable = weights::load_file(&dir.join("trainable.safetensors"))?;
    let opt_path = dir.join("optimizer.safetensors");
    let optimizer = if opt_path.exists() {
        weights::load_file(&opt_path)?
    } else {
        Weights::new()
    };
    Ok(Resume {
        state,
        trainable,
        optimizer,
        dir,
    })
}

/// Deletes all but the newest `keep` checkpoints (never the best one) and stale
/// temporary directories.
pub fn prune(output: &Path, keep: u32) -> Result<()> {
    let root = checkpoints_dir(output);
    let best = std::fs::read_to_string(root.join("best"))
        .ok()
        .map(|s| s.trim().to_string());
    let mut steps: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| EngineError::io(&root, e))? {
        let entry = entry.map_err(|e| EngineError::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") && !name.ends_with(&format!("-{}", std::process::id())) {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if let Some(s) = step_of(&name) {
            if Some(&name) != best.as_ref() {
                steps.push((s, entry.path()));
            }
        }
    }
    steps.sort();
    let n = steps.len().saturating_sub(keep as usize);
    for (_, p) in steps.into_iter().take(n) {
        std::fs::remove_dir_all(&p).map_err(|e| EngineError::io(&p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_directories_are_named_and_parsed_back() {
        assert_eq!(step_dir_name(12), "step-00000012");
        assert_eq!(step_of(&step_dir_name(123_456_789)), Some(123_456_789));
        assert_eq!(step_of(".step-00000012.tmp-99"), None);
        assert_eq!(step_of("latest"), None);
    }

    #[test]
    fn listing_is_newest_first_and_skips_temporary_and_pointer_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = checkpoints_dir(dir.path());
        for name in ["step-00000002", "step-00000010", ".step-00000011.tmp-1"] {
            std::fs::create_dir_all(root.join(name)).unwrap();
        }
        std::fs::write(root.join("latest"), "step-00000010").unwrap();
        let steps: Vec<u64> = list(dir.path()).iter().map(|c| c.step).collect();
        assert_eq!(steps, vec![10, 2]);
        assert!(list(&dir.path().join("nothing")).is_empty());
    }
}
