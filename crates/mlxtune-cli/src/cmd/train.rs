use std::path::PathBuf;
use std::rc::Rc;

use indicatif::{ProgressBar, ProgressStyle};

use super::plot;
use super::train_setup::{setup, Stdout};
use mlxtune_engine::train::distributed::Group;
use mlxtune_engine::train::{self, Control, Event, Outcome, ResumeFrom};

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tuning config (JSON or TOML): the MLXFineTuneConfig shape plus extensions.
    #[arg(long, conflicts_with = "resume", required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override one config value before it is checked, e.g.
    /// `--set parameters.learningRate=1e-4` (repeatable; VALUE is JSON, else a string).
    #[arg(long = "set", value_name = "PATH=VALUE", conflicts_with = "resume")]
    pub set: Vec<String>,
    /// Output directory (default: runs/<config file stem>). It must be empty or absent
    /// unless --overwrite.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Delete what the output directory holds before training (never mix two runs).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Resume the run in this output directory from its latest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// With --resume: start from the newest checkpoint of at most this many steps instead of
    /// the latest (a job service resumes from the one it reconciled its records with).
    #[arg(long, value_name = "STEP", requires = "resume")]
    pub resume_at_most: Option<u64>,
    /// Print events as JSON lines instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// Stop (with a checkpoint) after this many steps: for trying a config, or to resume later.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// At the end, draw the loss curve (training and validation loss by step) as an SVG
    /// picture into this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// MLX's memory limit for this process, in GiB: evaluation waits for running work to
    /// finish rather than allocate past it (default: MLX's; on CUDA 95% of the device's).
    /// With gradient checkpointing it holds the peak near the limit at little cost
    /// (docs/benchmarks.md, eleventh round).
    #[arg(long, value_name = "GIB")]
    pub memory_limit_gib: Option<f64>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(gib) = a.memory_limit_gib {
        mlxtune_engine::runtime::set_memory_limit_gib(gib, "--memory-limit-gib")?;
    }
    let (spec, output, resume) = setup(&a)?;
    if let Some(file) = &a.plot {
        plot::check_target(file)?;
    }
    // Started by `mlxtune launch`: join the group; rank 0 alone prints and writes.
    let group = Group::from_env()?.map(Rc::new);
    let rank = group.as_ref().map_or(0, |g| g.rank());
    let bar = progress_bar(!a.json && rank == 0);
    let stop_after = a.stop_after;
    let json = a.json;
    // A closed stdout (`train --json | head -3`) stops the printing, never the run.
    let out = std::cell::RefCell::new(Stdout::new());
    let mut validation = plot::Points::new();
    // Without a terminal the bar is hidden: its lines go to stderr as they are.
    let say = |text: String| {
        if rank != 0 {
            return;
        }
        if bar.is_hidden() {
            eprintln!("{text}");
        } else {
            bar.println(text);
        }
    };
    let mut on_event = |e: &Event| -> Control {
        if let Event::Eval(v) = e {
            validation.push((v.step, v.val_loss));
        }
        if json {
            if let Ok(line) = serde_json::to_string(e) {
                out.borrow_mut().line(&line);
            }
        }
        match e {
            Event::Started(s) => {
                bar.set_length(s.total_steps);
                bar.set_position(s.start_step);
                if !json {
                    let t = &s.train;
                    say(format!(
                        "{} records, {} tokens ({} in the loss), {} truncated",
                        t.records, t.tokens, t.loss_tokens, t.truncated
                    ));
                }
            }
            Event::Step(m) => {
                // The message first: moving the bar draws it (the last frame shows the last
                // step's loss).
                bar.set_message(format!(
                    "loss {:.4}  lr {:.2e}  {:.0} tok/s  {:.0} MB",
                    m.loss,
                    m.learning_rate,
                    m.tokens_per_second,
                    m.peak_memory_bytes as f64 / 1e6
                ));
                bar.set_position(m.step);
                if stop_after.is_some_and(|s| m.step >= s) {
                    return Control::Pause;
                }
            }
            Event::Eval(v) if !json => say(format!(
                "step {}: val loss {:.4} ppl {:.3}{}",
                v.step,
                v.val_loss,
                v.val_perplexity,
                if v.is_best { " (best)" } else { "" }
            )),
            Event::Message { level, text } if !json => say(format!("{}: {text}", level.as_str())),
            _ => {}
        }
        Control::Continue
    };
    let from = resume.then_some(resume_from(a.resume_at_most));
    let r =
        train::train_in_group(&spec, &output, from, group.clone(), &mut on_event).map_err(|e| {
            match &group {
                Some(g) => anyhow::anyhow!("rank {} of {}: {e}", g.rank(), g.size()),
                None => super::train_setup::in_config(e, &a),
            }
        })?;
    bar.finish_and_clear();
    if rank != 0 {
        return Ok(());
    }
    if let Some(file) = &a.plot {
        plot::loss_curve(file, &plot::train_losses(&output)?, &validation)?;
    }
    if json {
        let done = serde_json::json!({ "type": "finished", "result": r });
        out.borrow_mut().line(&done.to_string());
    } else {
        eprintln!("{}", summary(&r));
    }
    Ok(())
}

/// The progress bar on stderr when `shown`, else a hidden one (its lines printed as they are).
fn progress_bar(shown: bool) -> ProgressBar {
    let bar = ProgressBar::hidden();
    if shown {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
    bar
}

/// Which checkpoint `--resume` starts from: the newest of at most `at_most` steps, or the
/// latest.
fn resume_from(at_most: Option<u64>) -> ResumeFrom {
    match at_most {
        Some(step) => ResumeFrom::AtMost(step),
        None => ResumeFrom::Latest,
    }
}

/// The run's last line without --json: how it ended, where, and its output.
fn summary(r: &train::TrainResult) -> String {
    let how = match r.outcome {
        Outcome::Completed => "finished",
        Outcome::EarlyStopped => "stopped early",
        Outcome::Paused => "paused (resume with --resume)",
        Outcome::Cancelled => "cancelled",
    };
    let skipped = match r.skipped_steps {
        0 => String::new(),
        n => format!("; {n} fp16 updates skipped for overflow (retried)"),
    };
    format!(
        "{how} at step {}/{}; final loss {}{skipped}; output in {}",
        r.step,
        r.total_steps,
        r.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
        r.output_dir.display()
    )
}
