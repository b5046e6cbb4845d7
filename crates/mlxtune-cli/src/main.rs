//! The `mlxtune` command. Each subcommand lives in `cmd/`; this file parses arguments,
//! sets up logging and the device, and turns errors into one line and a non-zero exit.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mlxtune_engine::runtime::{DeviceChoice, Scheduling};

/// `--device`.
#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Parser)]
#[command(
    name = "mlxtune",
    version,
    about = "Fine-tune, evaluate and run language models with MLX"
)]
struct Cli {
    /// Where to compute: the GPU when the build has one (auto), the CPU, or the GPU (an
    /// error on a CPU-only build).
    #[arg(long, global = true, value_enum, default_value_t = Device::Auto, env = "MLXTUNE_DEVICE")]
    device: Device,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Backend, device and supported architectures.
    Info(cmd::info::Args),
    /// Generate text from a model.
    Generate(cmd::generate::Args),
    /// Loss, perplexity and token accuracy of a model on a JSONL file.
    Eval(cmd::eval::Args),
    /// Quantize a model (MLX affine, 4 or 8 bits) and save it.
    Quantize(cmd::quantize::Args),
    /// Fold an adapter into its base model and write a Hugging Face directory.
    Fuse(cmd::fuse::Args),
    /// Write a model (with an adapter fused) as GGUF, a Hugging Face directory or a PEFT
    /// adapter.
    Export(cmd::export::Args),
    /// Run the job service (REST + WebSocket API and workers).
    Serve(cmd::serve::Args),
    /// Fine-tune a model (LoRA, DoRA, QLoRA or full) from a config file.
    Train(cmd::train::Args),
    /// Start the ranks of a data-parallel run (`launch -n 2 -- train --config job.json`).
    Launch(cmd::launch::Args),
    /// Micro-benchmarks.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Print a shell completion script (`mlxtune completions bash > ~/.local/share/bash-completion/completions/mlxtune`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Memory-lean MLX scheduling for the job service (concurrent jobs) and for a run or benchmark
/// with gradient checkpointing; faster scheduling otherwise. None for `launch`: each rank
/// it starts chooses for itself (variables set here would be inherited and win).
fn scheduling(command: &Command) -> Option<Scheduling> {
    Some(match command {
        Command::Launch(_) => return None,
        Command::Serve(a) => cmd::serve::scheduling(a),
        Command::Train(a) => Scheduling::for_checkpointing(cmd::train_setup::checkpointing(a)),
        Command::Bench(cmd::bench::Bench::Train(a)) => {
            Scheduling::for_checkpointing(a.grad_checkpoint)
        }
        _ => Scheduling::Speed,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts or MLX runs (MLX reads these once).
    if let Some(choice) = scheduling(&cli.command) {
        mlxtune_engine::runtime::apply_scheduling_defaults(choice);
    }
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        use std::io::Write;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "mlxtune", &mut script);
        // A reader that leaves early (`| head`) is not an error.
        let _ = std::io::stdout().write_all(&script);
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLXTUNE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let result = (|| -> anyhow::Result<()> {
        let device = match cli.device {
            Device::Auto => DeviceChoice::Auto,
            Device::Cpu => DeviceChoice::Cpu,
            Device::Gpu => DeviceChoice::Gpu,
        };
        mlxtune_engine::runtime::select_device(device)?;
        match cli.command {
            Command::Info(a) => cmd::info::run(a),
            Command::Generate(a) => cmd::generate::run(a),
            Command::Eval(a) => cmd::eval::run(a),
            Command::Quantize(a) => cmd::quantize::run(a),
            Command::Fuse(a) => cmd::fuse::run(a),
            Command::Export(a) => cmd::export::run(a),
            Command::Train(a) => cmd::train::run(a),
            Command::Launch(a) => cmd::launch::run(a),
            Command::Serve(a) => cmd::serve::run(a),
            Command::Bench(b) => cmd::bench::run(b),
            Command::Completions { .. } => Ok(()),
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: a message that already contains
/// its cause (`path: not found` over `not found`) is not followed by it again.
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every subcommand, without help text.
    fn undocumented(c: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in c.get_arguments() {
            let builtin = ["help", "version"].contains(&a.get_id().as_str());
            if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{path} --{}", a.get_id()));
            }
        }
        for s in c.get_subcommands() {
            undocumented(s, &format!("{path} {}", s.get_name()), out);
        }
    }

    #[test]
    fn every_flag_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "mlxtune", &mut missing);
        assert!(missing.is_empty(), "no help: {missing:#?}");
        Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod scheduling_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn choice(args: &[&str]) -> Option<Scheduling> {
        let cli = Cli::try_parse_from([&["mlxtune"], args].concat()).unwrap();
        scheduling(&cli.command)
    }

    fn job(dir: &std::path::Path, checkpointing: bool) -> String {
        let cfg = serde_json::json!({
            "baseModel": "models/m",
            "dataset": { "trainingData": "local://d.jsonl", "format": "text" },
            "parameters": { "learningRate": 1e-4, "batchSize": 2, "epochs": 1, "sequenceLength": 128 },
            "optimization": { "gradientCheckpointing": checkpointing }
        });
        let path = dir.join(format!("job-{checkpointing}.json"));
        std::fs::write(&path, cfg.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn checkpointed_runs_and_the_service_schedule_for_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (on, off) = (job(dir.path(), true), job(dir.path(), false));
        assert_eq!(
            choice(&["train", "--config", &on]),
            Some(Scheduling::Memory)
        );
        assert_eq!(
            choice(&["train", "--config", &off]),
            Some(Scheduling::Speed)
        );
        let ckpt = ["bench", "train", "--grad-checkpoint"];
        assert_eq!(choice(&ckpt), Some(Scheduling::Memory));
        assert_eq!(choice(&ckpt[..2]), Some(Scheduling::Speed));
        assert_eq!(
            choice(&["serve", "--config-dir", &dir.path().to_string_lossy()]),
            Some(Scheduling::Memory)
        );
        assert_eq!(choice(&["info"]), Some(Scheduling::Speed));
        assert_eq!(
            choice(&["launch", "-n", "2", "--", "train", "--config", &on]),
            None
        );
        // A config that does not read is reported by the run itself; here it means speed.
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert_eq!(
            choice(&["train", "--config", bad.to_str().unwrap()]),
            Some(Scheduling::Speed)
        );
    }

    #[test]
    fn a_service_for_one_job_at_a_time_can_ask_for_speed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one-job.toml");
        let serve = |text: &str| {
            std::fs::write(&file, text).unwrap();
            choice(&["serve", "--config", &file.to_string_lossy()])
        };
        let speed = "[workers]\nscheduling = \"speed\"\n";
        assert_eq!(serve(speed), Some(Scheduling::Speed));
        let memory = "[workers]\nscheduling = \"memory\"\n";
        assert_eq!(serve(memory), Some(Scheduling::Memory));
        // A value that does not read is the run's error to report; here it means memory.
        assert_eq!(
            serve("[workers]\nscheduling = \"fast\"\n"),
            Some(Scheduling::Memory)
        );
        let cli = Cli::try_parse_from(["mlxtune", "serve", "--config", &file.to_string_lossy()]);
        let Command::Serve(a) = cli.unwrap().command else {
            unreachable!("parsed as serve")
        };
        let bad = cmd::serve::settings(&a).unwrap_err().to_string();
        assert!(bad.contains("workers.scheduling"), "{bad}");
    }

    #[test]
    fn a_resumed_run_keeps_its_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let on = job(dir.path(), true);
        let c = mlxtune_engine::train::read_config(std::path::Path::new(&on)).unwrap();
        let spec = mlxtune_engine::train::TrainSpec::from_config(&c).unwrap();
        std::fs::write(
            dir.path().join("train_spec.json"),
            serde_json::to_string(&spec).unwrap(),
        )
        .unwrap();
        let resume = dir.path().to_str().unwrap();
        assert_eq!(
            choice(&["train", "--resume", resume]),
            Some(Scheduling::Memory)
        );
    }
}
