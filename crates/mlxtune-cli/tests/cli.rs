//! The `mlxtune` command as a user runs it: JSON outputs, exit codes, one-line errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fixture, mlxtune};

use std::process::Output;

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn reference(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap())
        .unwrap()
}

#[test]
fn generate_json_gives_text_and_the_greedy_ids() {
    let model = fixture("llama");
    let out = mlxtune(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "The quick brown fox",
        "--max-tokens",
        "8",
        "--json",
    ]);
    let v = json(&out);
    let ids = v["token_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 8);
    assert!(v["text"].as_str().unwrap().contains("jumps"), "{v}");
    assert_eq!(v["finish_reason"], "length");
}

#[test]
fn generate_stops_at_eos_and_at_stop_strings() {
    let model = fixture("lfm2");
    let m = model.to_str().unwrap();
    let v = json(&mlxtune(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "The quick brown fox",
        "--max-tokens",
        "40",
        "--json",
    ]));
    assert_eq!(
        v["finish_reason"], "stop",
        "the fixture model ends its sentence with <|im_end|>: {v}"
    );
    assert!(v["token_ids"].as_array().unwrap().len() < 40);
    assert_eq!(
        v["stop_sequence"],
        serde_json::Value::Null,
        "EOS is no stop string"
    );
    let v = json(&mlxtune(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "The quick brown fox",
        "--stop",
        "lazy",
        "--json",
    ]));
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["stop_sequence"], "lazy", "which stop string ended it");
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("over the") && !text.contains("lazy"),
        "{text}"
    );
}

#[test]
fn sampling_with_a_seed_repeats_and_chat_mode_uses_the_template() {
    let model = fixture("qwen2");
    let m = model.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello",
        "--chat",
        "--temperature",
        "1.5",
        "--top-p",
        "0.95",
        "--seed",
        "7",
        "--max-tokens",
        "12",
        "--ignore-eos",
        "--json",
    ];
    let a = json(&mlxtune(&args));
    let b = json(&mlxtune(&args));
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert!(
        a["prompt_tokens"].as_u64().unwrap() > 5,
        "the chat template wraps the prompt: {a}"
    );
}

#[test]
fn eval_json_matches_the_transformers_reference() {
    let r = reference("qwen3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("eval.jsonl");
    let lines: Vec<String> = r["eval_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let model = fixture("qwen3");
    let v = json(&mlxtune(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "2",
        "--json",
    ]));
    let loss = r["eval"]["loss"].as_f64().unwrap();
    assert!(
        (v["loss"].as_f64().unwrap() - loss).abs() < 1e-4,
        "{v} vs {loss}"
    );
    assert_eq!(v["tokens"], r["eval"]["tokens"]);
    assert!((v["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-2);
    assert!(v["token_accuracy"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_reports_the_file_and_line_of_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"text\": \"fine\"}\n\n{\"text\": 3}\n").unwrap();
    let model = fixture("llama");
    let out = mlxtune(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:3") && err.contains("`text` must be a string"),
        "{err}"
    );
}

#[test]
fn chat_eval_counts_only_assistant_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("chat.jsonl");
    let rec = serde_json::json!({"messages": [
        {"role": "user", "content": "The quick brown fox"},
        {"role": "assistant", "content": "jumps over the lazy dog."}
    ]});
    std::fs::write(&data, rec.to_string()).unwrap();
    let model = fixture("lfm2");
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let masked = json(&mlxtune(&["eval", "--model", m, "--data", d, "--json"]));
    let all = json(&mlxtune(&[
        "eval",
        "--model",
        m,
        "--data",
        d,
        "--train-on-inputs",
        "--json",
    ]));
    assert!(masked["tokens"].as_u64().unwrap() < all["tokens"].as_u64().unwrap());
}

#[test]
fn bench_matmul_reports_gflops() {
    let v = json(&mlxtune(&[
        "bench", "matmul", "--size", "128", "--iters", "2", "--json",
    ]));
    assert!(v["gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(v["size"], 128);
}

#[test]
fn bench_train_runs_the_trainers_step_and_profiles_memory() {
    let model = fixture("llama");
    let args = [
        "bench",
        "train",
        "--model",
        model.to_str().unwrap(),
        "--batch",
        "2",
        "--seq",
        "16",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--memory-profile",
        "--json",
    ];
    let v = json(&mlxtune(&args));
    // Random tokens over a random model: the loss is about ln(vocab) and finite.
    let loss = v["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 1.0, "{v}");
    assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["fine_tune_type"], "lora");
    let m = &v["memory"];
    assert!(
        m["loss_and_grad_peak_bytes"].as_u64().unwrap() >= m["weights_bytes"].as_u64().unwrap()
    );
    // The analytic floor: the weights and kept values, at most the measured peak.
    let floor = |v: &serde_json::Value, part: &str| v["memory_floor"][part].as_u64().unwrap();
    // The f32 adapters are in the train state, with their two moments.
    let adapters = v["trainable_parameters"].as_u64().unwrap() * 4;
    assert_eq!(
        floor(&v, "weights") + adapters,
        m["weights_bytes"].as_u64().unwrap()
    );
    assert_eq!(floor(&v, "train_state"), 3 * adapters);
    let peak = v["peak_memory_bytes"].as_u64().unwrap();
    assert!(floor(&v, "kept") > 0 && floor(&v, "total") <= peak, "{v}");
    let out = mlxtune(&[
        "bench",
        "train",
        "--type",
        "lorax",
        "--model",
        model.to_str().unwrap(),
    ]);
    // A usage error: clap lists the values.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'lorax'") && err.contains("qlora"), "{err}");
    // Recomputing the MLPs (and the element-wise values): the report says so, the loss stays.
    let mlps = json(&mlxtune(
        &[&args[..], &["--grad-checkpoint", "--checkpoint-mlps", "1"]].concat(),
    ));
    assert_eq!(
        (
            mlps["checkpoint_layers"].as_u64(),
            mlps["checkpoint_mlps"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(mlps["lean"], true, "{mlps}");
    assert!(floor(&mlps, "kept") < floor(&v, "kept"), "{mlps}");
    let l = mlps["loss"].as_f64().unwrap();
    assert!((l - loss).abs() < 1e-4 * loss, "{l} vs {loss}");
    let out = mlxtune(&["bench", "train", "--checkpoint-mlps", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--checkpoint-mlps need --grad-checkpoint"),
        "{err}"
    );
}

#[test]
fn bench_train_on_packed_rows_reports_its_attention_blocks_and_reach_and_refuses_a_bad_size() {
    let model = fixture("llama");
    let packed_with = |block: Option<&str>, extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mlxtune"));
        c.args(["bench", "train", "--model", model.to_str().unwrap()])
            .args(["--batch", "2", "--seq", "40", "--segments", "3"])
            .args(["--steps", "1", "--warmup", "1", "--json"])
            .args(extra);
        match block {
            Some(b) => c.env("MLXTUNE_PACKED_ATTENTION_BLOCK", b),
            None => c.env_remove("MLXTUNE_PACKED_ATTENTION_BLOCK"),
        };
        c.output().unwrap()
    };
    let packed = |block: Option<&str>| packed_with(block, &[]);
    assert_eq!(json(&packed(None))["attention_block"], 256);
    let blocks = json(&packed(Some("16")));
    assert_eq!(blocks["attention_block"], 16);
    // Examples of 14, 14 and 12 positions: blocks starting at 16 and 32 are 2 and 4 into
    // theirs, so each block's keys start one block before it.
    assert_eq!(blocks["attention_reach"], 16);
    assert!(json(&packed(None)).get("attention_reach").is_none());
    // The same step over the whole square: the same loss after a step that learned.
    let whole = json(&packed(Some("0")));
    assert!(whole.get("attention_reach").is_none());
    let (a, b) = (
        whole["loss"].as_f64().unwrap(),
        blocks["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4 * a.abs(), "{a} vs {b}");
    assert!(blocks["loss"].as_f64().unwrap().is_finite(), "{blocks}");
    // A reach asked for (a real job's) is rounded up to whole blocks; the loss stays.
    let asked = json(&packed_with(Some("8"), &["--attention-reach", "20"]));
    assert_eq!(asked["attention_reach"], 24, "{asked}");
    let c = asked["loss"].as_f64().unwrap();
    assert!((a - c).abs() < 1e-4 * a.abs(), "{a} vs {c}");
    let out = packed(Some("many"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let named = "error: MLXTUNE_PACKED_ATTENTION_BLOCK: \"many\" is not a block size";
    assert!(err.starts_with(named), "{err}");
    let out = mlxtune(&["bench", "train", "--attention-reach", "8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--attention-reach needs --segments"), "{err}");
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let out = mlxtune(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("/nonexistent/model"),
        "{err}"
    );
    if mlxtune_engine::runtime::backend() == "cpu" {
        let out = mlxtune(&["--device", "gpu", "info"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a GPU was requested") && err.contains("MLXTUNE_BACKEND=cuda"),
            "{err}"
        );
    }
    let out = mlxtune(&[
        "generate",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--prompt",
        "x",
        "--dtype",
        "f64",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dtype"));
    let out = mlxtune(&[
        "generate",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--prompt",
        "x",
        "--top-p",
        "0",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("top_p"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn train_runs_the_product_documents_config_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let recs = [
        json_chat("Say fox.", "The quick brown fox."),
        json_chat("Say dog.", "The lazy dog."),
        json_chat("Say box.", "Pack my box."),
        json_chat("Say vow.", "Judge my vow."),
    ];
    std::fs::write(&data, recs.join("\n")).unwrap();
    // The product document's LoRA example, pointed at a fixture and local data.
    let cfg = serde_json::json!({
        "baseModel": fixture("lfm2").to_str().unwrap(),
        "dataset": {
            "trainingData": format!("local://{}", data.display()),
            "validationData": format!("local://{}", data.display()),
            "format": "chat"
        },
        "parameters": { "learningRate": 3e-3, "batchSize": 2, "epochs": 4, "sequenceLength": 128, "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": true, "mixedPrecision": "fp32", "appleSliliconOptimized": true }
    });
    let cfg_path = dir.path().join("job.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = mlxtune(&[
        "train",
        "--config",
        cfg_path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--json",
        "--stop-after",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["outcome"], "paused");
    // A picture can only be SVG: refused before anything runs.
    let o = mlxtune(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--plot",
        "loss.png",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name it *.svg"));
    let svg = out.join("loss.svg");
    let run_dir = out.to_str().unwrap();
    let o = mlxtune(&["train", "--resume", run_dir, "--memory-limit-gib", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--memory-limit-gib: must be a positive number"),
        "{err}"
    );
    // The rest of the run under a memory limit (MLX waits rather than allocate past it).
    let o = mlxtune(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--json",
        "--memory-limit-gib",
        "4",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for k in ["loss", "learning_rate", "tokens_per_second"] {
            assert!(l[k].is_number(), "{k} in {l}");
        }
    }
    assert!(lines[7]["loss"].as_f64().unwrap() < lines[0]["loss"].as_f64().unwrap());
    // The loss curve: one polyline through every step (the resumed run's included), one
    // point per validation pass, axis titles.
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"), "{}", &picture[..80]);
    let longest = picture
        .split("<polyline")
        .skip(1)
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
        .map(|points| points.split_whitespace().count())
        .max();
    assert_eq!(longest, Some(8), "the training curve has a point per step");
    assert!(picture.matches("<circle").count() >= 1);
    for title in ["step", "loss", "training", "validation"] {
        assert!(picture.contains(&format!("\n{title}\n")), "{title}");
    }
    for f in [
        "adapters.safetensors",
        "adapter_config.json",
        "peft/adapter_model.safetensors",
        "peft/adapter_config.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    resumes_from_the_newest_checkpoint_of_at_most(&out);
}

/// From the newest checkpoint of at most 3 steps (the one a job service reconciled its
/// records with), not the latest; the flag means nothing without --resume.
fn resumes_from_the_newest_checkpoint_of_at_most(out: &std::path::Path) {
    let o = mlxtune(&["train", "--resume", out.to_str().unwrap(), "--json"]);
    let at_most = |step: &str| {
        let dir = out.to_str().unwrap();
        mlxtune(&["train", "--resume", dir, "--resume-at-most", step, "--json"])
    };
    let start_step = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        let started = text.lines().find(|l| l.contains("\"started\"")).unwrap();
        let started: serde_json::Value = serde_json::from_str(started).unwrap();
        started["start_step"].as_u64().unwrap()
    };
    assert!(start_step(&o) > 3);
    assert_eq!(start_step(&at_most("3")), 3);
    let o = mlxtune(&["train", "--resume-at-most", "3"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    assert!(!o.status.success());
}

#[test]
fn train_rejects_a_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "baseModel = \"m\"\n[dataset]\ntrainingData = \"d.jsonl\"\n[parameters]\nlearningRate = -1\nbatchSize = 2\nepochs = 1\nsequenceLength = 64\n").unwrap();
    let o = mlxtune(&["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("parameters.learningRate must be > 0"), "{err}");
}

fn json_chat(user: &str, assistant: &str) -> String {
    serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}).to_string()
}
