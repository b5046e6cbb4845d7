//! `metrics.jsonl`: one line per optimizer step, and `validation.jsonl`: one line per
//! validation pass (`EvalMetrics`), appended as the run goes; on resume the lines past the
//! checkpoint are dropped from both (they will be computed again).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::events::{EvalMetrics, StepMetrics};
use crate::error::{EngineError, Result};

/// The open metrics file of a run.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    valid_path: PathBuf,
    valid: File,
}

impl MetricsLog {
    /// A new, empty log in `output`.
    pub fn create(output: &Path) -> Result<MetricsLog> {
        let path = output.join("metrics.jsonl");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(output.join("validation.jsonl"));
        Self::open(output)
    }

    /// The log of `output`, keeping the lines of steps up to `step`.
    pub fn resume(output: &Path, step: u64) -> Result<MetricsLog> {
        truncate(&output.join("metrics.jsonl"), step)?;
        truncate(&output.join("validation.jsonl"), step)?;
        Self::open(output)
    }

    fn open(output: &Path) -> Result<MetricsLog> {
        let append = |path: &PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| EngineError::io(path, e))
        };
        let path = output.join("metrics.jsonl");
        let valid_path = output.join("validation.jsonl");
        Ok(MetricsLog {
            file: append(&path)?,
            valid: append(&valid_path)?,
            path,
            valid_path,
        })
    }

    /// Appends one validation pass's line.
    pub fn append_eval(&mut self, m: &EvalMetrics) -> Result<()> {
        let line = serde_json::to_string(m)
            .map_err(|e| EngineError::serialization("validation metrics", e))?;
        writeln!(self.valid, "{line}").map_err(|e| EngineError::io(&self.valid_path, e))
    }

    /// Appends one step's line.
    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let line =
            serde_json::to_string(m).map_err(|e| EngineError::serialization("step metrics", e))?;
        writeln!(self.file, "{line}").map_err(|e| EngineError::io(&self.path, e))
    }
}

/// Keeps the metric lines of steps up to `step`.
fn truncate(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<StepLine>(l)
                .ok()
                .is_some_and(|s| s.step <= step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::fsutil::write_atomic(path, body.as_bytes())
}

/// The one field of a line that truncation reads.
#[derive(serde::Deserialize)]
struct StepLine {
    step: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_drops_the_lines_past_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let lines: Vec<String> = (1..=5).map(|s| format!("{{\"step\":{s}}}")).collect();
        std::fs::write(&path, lines.join("\n") + "\nnot json\n").unwrap();
        std::fs::write(dir.path().join("validation.jsonl"), lines.join("\n")).unwrap();
        drop(MetricsLog::resume(dir.path(), 3).unwrap());
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
        let valid = std::fs::read_to_string(dir.path().join("validation.jsonl")).unwrap();
        assert_eq!(valid, kept, "validation lines past the checkpoint go too");
    }
}
