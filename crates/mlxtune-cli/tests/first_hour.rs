//! A new user's first hour (issue 17): `serve` from any directory, strict settings, choice
//! flags checked by clap, `--set` overrides, errors printed once.
#![allow(clippy::unwrap_used)]

mod common;

use common::fixture;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn mlxtune(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlxtune"));
    c.current_dir(dir)
        .env("HOME", dir.join("home"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("MLXTUNE_HOME")
        .env_remove("MLXTUNE_CONFIG_DIR")
        .env_remove("MLXTUNE_DATA_DIR");
    c
}

/// The line `serve` prints once it listens.
fn serving_line(mut c: Command) -> (std::process::Child, String) {
    let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if line.starts_with("mlxtune serving on port ") {
            return (child, line);
        }
    }
    panic!("serve exited: {:?}", child.wait());
}

#[test]
fn serve_starts_outside_a_checkout_with_built_in_defaults_and_prints_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = mlxtune(dir.path());
    c.args(["serve", "--port", "0", "--host", "127.0.0.1"]);
    let (mut child, line) = serving_line(c);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("at http://127.0.0.1:"), "{line}");
    let data = dir.path().join("home/.local/share/mlxtune/data");
    assert!(line.contains(&data.display().to_string()), "{line}");
    assert!(data.join("mlxtune.sqlite3").exists());

    let mut c = mlxtune(dir.path());
    let own = dir.path().join("own-data");
    c.args(["serve", "--port", "0", "--data-dir", own.to_str().unwrap()]);
    let (mut child, line) = serving_line(c);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains(&own.display().to_string()), "{line}");
}

#[test]
fn a_misspelled_setting_is_named_with_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, "[server]\nprot = 9000\n").unwrap();
    let out = mlxtune(dir.path())
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.prot is an unknown field; did you mean server.port?"),
        "{err}"
    );
}

/// A LoRA config for the LFM2 fixture over four chat records, written into `dir`.
fn job(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("train.jsonl");
    let recs: Vec<String> = ["The quick brown fox.", "The lazy dog.", "Pack my box.", "Judge my vow."]
        .iter()
        .map(|a| serde_json::json!({"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": a}]}).to_string())
        .collect();
    std::fs::write(&data, recs.join("\n")).unwrap();
    let cfg = serde_json::json!({
        "baseModel": fixture("lfm2").to_str().unwrap(),
        "dataset": {"trainingData": data.to_str().unwrap(), "format": "chat"},
        "parameters": {"learningRate": 3e-3, "batchSize": 2, "epochs": 4, "sequenceLength": 64, "loraRank": 4},
        "checkpoint": {"everySteps": 1, "keepLast": 10}
    });
    let path = dir.join("job.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    mlxtune(dir).args(args).output().unwrap()
}

fn steps(out: &Path) -> Vec<u64> {
    let mut s: Vec<u64> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()
        })
        .collect();
    s.sort();
    s
}

#[test]
fn a_second_run_into_a_used_output_directory_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let (cfg, out) = (cfg.to_str().unwrap(), dir.path().join("out"));
    let o = out.to_str().unwrap();
    let r = run(
        dir.path(),
        &["train", "--config", cfg, "--output", o, "--stop-after", "3"],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(steps(&out), vec![1, 2, 3]);
    let r = run(
        dir.path(),
        &["train", "--config", cfg, "--output", o, "--stop-after", "1"],
    );
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("already holds files") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(steps(&out), vec![1, 2, 3], "the first run is untouched");
    let r = run(
        dir.path(),
        &[
            "train",
            "--config",
            cfg,
            "--output",
            o,
            "--stop-after",
            "1",
            "--overwrite",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(steps(&out), vec![1], "nothing of the first run is left");
}

#[test]
fn resume_refuses_a_stop_after_the_run_already_passed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let r = run(
        dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            o,
            "--stop-after",
            "4",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run(dir.path(), &["train", "--resume", o, "--stop-after", "3"]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("already at step 4"), "{err}");
    assert_eq!(steps(&out), vec![1, 2, 3, 4], "nothing trained");
}

#[test]
fn a_closed_stdout_does_not_stop_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let out = dir.path().join("out");
    let mut child = mlxtune(dir.path())
        .args(["train", "--json", "--config", cfg.to_str().unwrap()])
        .args(["--set", "parameters.epochs=25", "--output"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader is dropped here: `| head -1`
    assert!(first.starts_with('{'), "{first}");
    let r = child.wait_with_output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("adapters.safetensors").exists());
    assert_eq!(steps(&out).last(), Some(&50));
}

#[test]
fn set_overrides_config_values_and_is_checked_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let cfg = cfg.to_str().unwrap();
    let r = run(
        dir.path(),
        &["train", "--config", cfg, "--set", "lora.dropuot=0.1"],
    );
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("lora.dropuot is an unknown field; did you mean lora.dropout?"),
        "{err}"
    );
    let out = dir.path().join("out");
    let r = run(
        dir.path(),
        &[
            "train",
            "--config",
            cfg,
            "--output",
            out.to_str().unwrap(),
            "--set",
            "maxSteps=2",
            "--set",
            "parameters.learningRate=1e-3",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(steps(&out), vec![1, 2]);
    let spec = std::fs::read_to_string(out.join("train_spec.json")).unwrap();
    assert!(spec.contains("0.001"), "{spec}");
}

#[test]
fn usage_errors_exit_2_and_errors_say_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &["train"]).status.code(), Some(2));
    assert_eq!(
        run(dir.path(), &["--device", "tpu", "info"]).status.code(),
        Some(2)
    );
    let r = run(dir.path(), &["train", "--config", "missing.json"]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.matches("missing.json").count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn choices_are_listed_and_checked_by_clap_and_quantize_writes_the_bits_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let m = model.to_str().unwrap();
    let help = String::from_utf8(run(dir.path(), &["quantize", "--help"]).stdout).unwrap();
    assert!(help.contains("[possible values: 4, 8]"), "{help}");
    for bad in [
        vec!["quantize", "--model", m, "--output", "q", "--bits", "3"],
        vec!["export", "--model", m, "--output", "x", "--format", "onnx"],
        vec!["eval", "--model", m, "--data", "d.jsonl", "--dtype", "f64"],
        vec![
            "generate", "--model", m, "--prompt", "hi", "--system", "be brief",
        ],
    ] {
        let r = run(dir.path(), &bad);
        assert_eq!(r.status.code(), Some(2), "{bad:?}");
    }
    let q = dir.path().join("q8");
    let out = run(
        dir.path(),
        &[
            "quantize",
            "--model",
            m,
            "--bits",
            "8",
            "--group-size",
            "32",
            "--json",
            "--output",
            q.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bits"], 8);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(q.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["bits"], 8, "{cfg}");
    let r = run(
        dir.path(),
        &[
            "quantize",
            "--model",
            m,
            "--bits",
            "4",
            "--quantize-bits",
            "8",
            "--output",
            "q",
        ],
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("disagree"));
}

#[test]
fn shell_completions_are_printed_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let r = run(dir.path(), &["completions", shell]);
        assert!(r.status.success(), "{shell}");
        let script = String::from_utf8(r.stdout).unwrap();
        assert!(
            script.contains("mlxtune") && script.contains("quantize"),
            "{shell}"
        );
    }
    assert_eq!(
        run(dir.path(), &["completions", "tcsh"]).status.code(),
        Some(2)
    );
}

#[test]
fn generation_stops_at_the_context_length_and_eval_refuses_a_longer_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("lfm2");
    let m = model.to_str().unwrap();
    let r = run(
        dir.path(),
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "Once upon",
            "--max-tokens",
            "600",
            "--ignore-eos",
            "--json",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let total =
        v["prompt_tokens"].as_u64().unwrap() + v["token_ids"].as_array().unwrap().len() as u64;
    assert_eq!(total, 256, "the fixture's context length");
    assert_eq!(v["finish_reason"], "length");
    std::fs::write(dir.path().join("d.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
    let r = run(
        dir.path(),
        &[
            "eval",
            "--model",
            m,
            "--data",
            "d.jsonl",
            "--max-seq-len",
            "100000",
        ],
    );
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("exceeds the model's context length 256"),
        "{err}"
    );
}

#[test]
fn a_config_error_found_against_the_model_names_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let r = run(
        dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "parameters.sequenceLength=100000",
        ],
    );
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("job.json: parameters.sequenceLength") && err.contains("context length 256"),
        "{err}"
    );
}

#[test]
fn without_a_terminal_train_prints_the_data_summary_and_validation_results() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let r = run(
        dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "maxSteps=2",
            "--set",
            "eval.everySteps=1",
            "--set",
            &format!(
                "dataset.validationData={}",
                dir.path().join("train.jsonl").display()
            ),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("4 records,"), "{err}");
    assert!(err.contains("step 1: val loss"), "{err}");
    assert!(err.contains("step 2: val loss"), "{err}");
    // And the validation results are in the output directory (defect 5).
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("runs/job/validation.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["step"].as_u64(), lines[1]["step"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(lines[1]["val_loss"].is_number());
}

#[test]
fn a_group_size_wider_than_a_layer_is_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let q = dir.path().join("q");
    let r = run(
        dir.path(),
        &[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--group-size",
            "128",
            "--output",
            q.to_str().unwrap(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("left unquantized") && err.contains("group size 128"),
        "{err}"
    );
    let r = run(
        dir.path(),
        &[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--group-size",
            "32",
            "--output",
            dir.path().join("q32").to_str().unwrap(),
        ],
    );
    assert!(!String::from_utf8_lossy(&r.stderr).contains("left unquantized"));
}
