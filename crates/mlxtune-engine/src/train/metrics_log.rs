//! `metrics.jsonl`: one line per optimizer step, appended as the run goes; on resume the
//! lines past the checkpoint are dropped (they will be computed again).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::events::StepMetrics;
use crate::error::{EngineError, Result};

/// The open metrics file of a run.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// A new, empty log in `output`.
    pub fn create(output: &Path) -> Result<MetricsLog> {
        let path = output.join("metrics.jsonl");
        let _ = std::fs::remove_file(&path);
        Self::open(path)
    }

    /// The log of `output`, keeping the lines of steps up to `step`.
    pub fn resume(output: &Path, step: u64) -> Result<MetricsLog> {
        let path = output.join("metrics.jsonl");
        truncate(&path, step)?;
        Self::open(path)
    }

    fn open(path: PathBuf) -> Result<MetricsLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        Ok(MetricsLog { path, file })
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
        drop(MetricsLog::resume(dir.path(), 3).unwrap());
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
    }
}
