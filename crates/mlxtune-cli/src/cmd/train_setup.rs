//! What `train` settles before the first step: the spec (config file with `--set`
//! overrides, or the run to resume), the output directory (never two runs mixed in one),
//! `--stop-after` against the run's progress; and a stdout that survives its reader leaving.

use std::io::Write;
use std::path::{Path, PathBuf};

use mlxtune_engine::train::{self, checkpoint, TrainSpec};

use super::train::Args;

/// The spec, the output directory and whether the run resumes.
pub fn setup(a: &Args) -> anyhow::Result<(TrainSpec, PathBuf, bool)> {
    match (&a.config, &a.resume) {
        (Some(cfg), None) => {
            let at = |e: train::ConfigError| anyhow::anyhow!("{}: {e}", cfg.display());
            let c = train::config::read_config_with(cfg, &a.set).map_err(at)?;
            if let Some(d) = &c.distributed {
                anyhow::bail!(
                    "{}: distributed: on the command line, run `mlxtune launch -n {} -- train …` with a config without it",
                    cfg.display(),
                    d.processes
                );
            }
            let spec = TrainSpec::from_config(&c).map_err(at)?;
            let stem = cfg
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let output = a
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(stem));
            // Under `mlxtune launch` rank 0 alone checks (and with --overwrite empties) the
            // directory: two ranks emptying it at once would trip over each other.
            if std::env::var("MLX_RANK").map_or(true, |r| r == "0") {
                fresh_output(&output, a.overwrite)?;
            }
            Ok((spec, output, false))
        }
        (None, Some(dir)) => {
            let spec = stored_spec(dir)?;
            check_stop_after(dir, a.stop_after)?;
            Ok((spec, dir.clone(), true))
        }
        // clap requires exactly one of them.
        _ => anyhow::bail!("give --config FILE or --resume DIR"),
    }
}

/// Whether the run `a` describes uses gradient checkpointing, read before anything else runs
/// (to choose MLX's scheduling). A config that does not read says no here; [`setup`] reports
/// its error.
pub fn checkpointing(a: &Args) -> bool {
    let spec = match (&a.config, &a.resume) {
        (Some(cfg), _) => train::config::read_config_with(cfg, &a.set)
            .ok()
            .and_then(|c| TrainSpec::from_config(&c).ok()),
        (None, Some(dir)) => stored_spec(dir).ok(),
        (None, None) => None,
    };
    spec.is_some_and(|s| s.gradient_checkpointing)
}

/// The spec a run in `dir` was started with.
fn stored_spec(dir: &Path) -> anyhow::Result<TrainSpec> {
    let path = dir.join("train_spec.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A new run's output directory must be absent or empty; `--overwrite` empties it.
fn fresh_output(output: &Path, overwrite: bool) -> anyhow::Result<()> {
    let non_empty = std::fs::read_dir(output).is_ok_and(|mut d| d.next().is_some());
    if !non_empty {
        return Ok(());
    }
    if !overwrite {
        anyhow::bail!(
            "{} already holds files (a previous run?): give another --output, --resume {0} \
             to continue it, or --overwrite to replace it",
            output.display()
        );
    }
    std::fs::remove_dir_all(output).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))
}

/// `--stop-after N` on a run that already reached step N would train on; refuse it.
fn check_stop_after(dir: &Path, stop_after: Option<u64>) -> anyhow::Result<()> {
    let (Some(stop), Some(done)) = (
        stop_after,
        checkpoint::list(dir).iter().map(|c| c.step).max(),
    ) else {
        return Ok(());
    };
    if stop <= done {
        anyhow::bail!(
            "--stop-after {stop}: the run in {} is already at step {done}; give a later step",
            dir.display()
        );
    }
    Ok(())
}

/// A run's error; one about a config field (checked against the model once it is read)
/// names the file it came from, as the errors found before the run do.
pub fn in_config(e: mlxtune_engine::EngineError, a: &Args) -> anyhow::Error {
    let source = match (&a.config, &a.resume) {
        (Some(cfg), _) => cfg.clone(),
        (None, Some(dir)) => dir.join("train_spec.json"),
        (None, None) => return e.into(),
    };
    match e {
        mlxtune_engine::EngineError::Invalid { .. } => {
            anyhow::anyhow!("{}: {e}", source.display())
        }
        other => other.into(),
    }
}

/// Standard output that stops writing once its reader has gone (a broken pipe), instead
/// of panicking in the middle of a run.
pub struct Stdout {
    gone: bool,
}

impl Stdout {
    pub fn new() -> Self {
        Stdout { gone: false }
    }

    /// Writes one line; after the first failure nothing more is attempted.
    pub fn line(&mut self, text: &str) {
        if self.gone {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.gone = true;
            tracing::warn!("stdout is closed; the run goes on without printing");
        }
    }
}
