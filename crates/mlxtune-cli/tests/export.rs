//! Models out, as a user runs them: a trained job's output as `--adapter` on `eval` and
//! `generate`, `fuse` into a model directory, `export` to GGUF / HF / PEFT, and a `.gguf`
//! file as `--model`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// Helpers of this file.
mod helpers {
    use super::*;

    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name)
    }

    /// Runs `mlxtune` with a private cache for imported GGUF files.
    pub fn mlxtune(cache: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mlxtune"))
            .args(args)
            .env("MLXTUNE_CACHE_DIR", cache)
            .output()
            .expect("mlxtune runs")
    }

    pub fn ok(out: &Output) -> String {
        assert!(
            out.status.success(),
            "failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json_of(out: &Output) -> Value {
        serde_json::from_str(&ok(out)).expect("stdout is one JSON object")
    }

    pub fn err(out: &Output) -> String {
        assert!(!out.status.success(), "unexpected success");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn write_data(dir: &Path) -> PathBuf {
        let lines = [
            "The quick brown fox jumps over the lazy dog.",
            "Pack my box with five dozen liquor jugs.",
            "How vexingly quick daft zebras jump!",
            "Sphinx of black quartz, judge my vow.",
        ];
        let p = dir.join("data.jsonl");
        let text: Vec<String> = lines
            .iter()
            .map(|s| json!({ "text": s }).to_string())
            .collect();
        std::fs::write(&p, text.join("\n") + "\n").unwrap();
        p
    }

    /// `mlxtune train` of a small DoRA job on the lfm2 fixture; returns its output dir.
    pub fn train_job(tmp: &Path, data: &Path) -> PathBuf {
        let cfg = json!({
            "baseModel": fixture("lfm2").to_str().unwrap(),
            "dataset": { "trainingData": data.to_str().unwrap(), "format": "text" },
            "parameters": { "learningRate": 0.01, "batchSize": 2, "epochs": 3, "sequenceLength": 64, "loraRank": 4, "loraAlpha": 8 },
            "fineTuneType": "dora",
            "schedule": { "type": "constant" },
            "seed": 1
        });
        let cfg_path = tmp.join("job.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let out = tmp.join("job");
        ok(&mlxtune(
            tmp,
            &[
                "train",
                "--config",
                cfg_path.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        ));
        out
    }

    pub fn eval_loss(cache: &Path, model: &Path, adapter: Option<&Path>, data: &Path) -> f64 {
        let mut args = vec![
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        json_of(&mlxtune(cache, &args))["loss"].as_f64().unwrap()
    }

    pub fn greedy_ids(cache: &Path, model: &Path, adapter: Option<&Path>) -> Value {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "The quick brown",
            "--max-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        json_of(&mlxtune(cache, &args))["token_ids"].clone()
    }
}

use helpers::*;

#[test]
fn a_jobs_output_runs_as_an_adapter_fuses_and_exports_to_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = write_data(t);
    let job = train_job(t, &data);
    let base = fixture("lfm2");

    let plain = eval_loss(t, &base, None, &data);
    let adapted = eval_loss(t, &base, Some(&job), &data);
    assert!(
        adapted < plain,
        "adapter loss {adapted} not below base {plain}"
    );

    let fused = t.join("fused");
    let out = ok(&mlxtune(
        t,
        &[
            "fuse",
            "--model",
            base.to_str().unwrap(),
            "--adapter",
            job.to_str().unwrap(),
            "--output",
            fused.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("(DoRA)"), "{out}");
    let fused_loss = eval_loss(t, &fused, None, &data);
    assert!(
        (fused_loss - adapted).abs() < 1e-4,
        "fused {fused_loss} vs adapter {adapted}"
    );
    assert_eq!(
        greedy_ids(t, &fused, None),
        greedy_ids(t, &base, Some(&job))
    );

    // GGUF with the adapter fused, loaded back by `eval` and `generate`.
    let f32_file = t.join("tuned-F32.gguf");
    let q_file = t.join("tuned-Q4_1.gguf");
    for (file, quant) in [(&f32_file, "F32"), (&q_file, "Q4_1")] {
        let out = ok(&mlxtune(
            t,
            &[
                "export",
                "--model",
                base.to_str().unwrap(),
                "--adapter",
                job.to_str().unwrap(),
                "--format",
                "gguf",
                "--quant",
                quant,
                "--output",
                file.to_str().unwrap(),
            ],
        ));
        assert!(out.contains("tensors"), "{out}");
    }
    let gguf_loss = eval_loss(t, &f32_file, None, &data);
    assert!(
        (gguf_loss - adapted).abs() < 1e-4,
        "F32 GGUF {gguf_loss} vs {adapted}"
    );
    assert_eq!(greedy_ids(t, &f32_file, None), greedy_ids(t, &fused, None));
    // 4-bit blocks of 32 lose about what MLX's own 4-bit quantization (groups of 32) loses.
    let q_loss = eval_loss(t, &q_file, None, &data);
    let mlx4 = json_of(&mlxtune(
        t,
        &[
            "eval",
            "--model",
            fused.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--quantize-bits",
            "4",
            "--group-size",
            "32",
            "--json",
        ],
    ))["loss"]
        .as_f64()
        .unwrap();
    assert!(
        (q_loss - adapted).abs() < 2.0 * (mlx4 - adapted).abs(),
        "Q4_1 GGUF {q_loss}, MLX 4-bit {mlx4}, float {adapted}"
    );

    // The adapter alone in PEFT's layout, naming its base model.
    let peft = t.join("peft-out");
    ok(&mlxtune(
        t,
        &[
            "export",
            "--model",
            base.to_str().unwrap(),
            "--adapter",
            job.to_str().unwrap(),
            "--format",
            "peft",
            "--output",
            peft.to_str().unwrap(),
        ],
    ));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    let base_abs = std::fs::canonicalize(&base).unwrap();
    assert_eq!(cfg["base_model_name_or_path"], base_abs.to_str().unwrap());
    let peft_loss = eval_loss(t, &base, Some(&peft), &data);
    assert!(
        (peft_loss - adapted).abs() < 1e-5,
        "PEFT copy {peft_loss} vs {adapted}"
    );
}

#[test]
fn bad_export_requests_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = fixture("qwen2");
    let m = m.to_str().unwrap();
    let out = t.join("x.gguf");
    let o = out.to_str().unwrap();
    let e = err(&mlxtune(
        t,
        &["export", "--model", m, "--quant", "Q2_XXS", "--output", o],
    ));
    assert!(e.contains("Q2_XXS") && e.contains("Q4_K_M"), "{e}");
    let e = err(&mlxtune(
        t,
        &["export", "--model", m, "--format", "onnx", "--output", o],
    ));
    assert!(e.contains("onnx"), "{e}");
    let e = err(&mlxtune(
        t,
        &["export", "--model", m, "--format", "peft", "--output", o],
    ));
    assert!(e.contains("--adapter"), "{e}");
    let e = err(&mlxtune(
        t,
        &["generate", "--model", m, "--prompt", "x", "--adapter", m],
    ));
    assert!(e.contains("adapter_config.json"), "{e}");
    assert!(!out.exists());
}
