//! Adapters after training: a job's output directory (mlx-lm layout) and its PEFT copy
//! load as adapters, give the trainer's own validation loss, fuse into the same model as
//! base + adapter for LoRA and DoRA on every architecture, over a quantized base too; a
//! mismatched adapter is refused with every mismatch listed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use mlxtune_engine::adapters::{Adapter, AdapterLayout};
use mlxtune_engine::data::{load_examples, DataFormat, Example, TokenizeOptions};
use mlxtune_engine::eval;
use mlxtune_engine::fuse::{
    dequantize_model, fuse_and_save, fuse_and_save_with_progress, DEFAULT_MAX_SHARD_BYTES,
};
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::{self, Control, TrainResult, TrainSpec};
use mlxtune_engine::{LoadOptions, Model, QuantSpec, Tokenizer};
use serde_json::json;

/// Helpers of this file: fixtures, a tiny training job, comparisons.
mod helpers {
    use super::*;

    pub const ARCHS: &[&str] = &["lfm2", "llama", "qwen2", "qwen3"];

    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name)
    }

    const TRAIN: &[&str] = &[
        "The quick brown fox jumps over the lazy dog.",
        "Pack my box with five dozen liquor jugs.",
        "How vexingly quick daft zebras jump!",
        "Sphinx of black quartz, judge my vow.",
    ];
    const VALID: &[&str] = &[
        "The five boxing wizards jump quickly.",
        "Jackdaws love my big sphinx of quartz.",
    ];

    fn write_jsonl(path: &Path, lines: &[&str]) {
        let text: Vec<String> = lines
            .iter()
            .map(|s| json!({ "text": s }).to_string())
            .collect();
        std::fs::write(path, text.join("\n") + "\n").unwrap();
    }

    /// Trains `kind` (lora, dora, qlora) on `model` for a few steps, validating every step.
    pub fn train_job(model: &str, kind: &str, out: &Path) -> (TrainSpec, TrainResult) {
        let data = out.with_extension("train.jsonl");
        let valid = out.with_extension("valid.jsonl");
        write_jsonl(&data, TRAIN);
        write_jsonl(&valid, VALID);
        let mut c = json!({
            "baseModel": fixture(model).to_str().unwrap(),
            "dataset": { "trainingData": data.to_str().unwrap(), "validationData": valid.to_str().unwrap(), "format": "text" },
            "parameters": { "learningRate": 0.01, "batchSize": 2, "epochs": 2, "sequenceLength": 64, "loraRank": 4, "loraAlpha": 8 },
            "optimization": { "mixedPrecision": "fp32" },
            "fineTuneType": kind,
            "eval": { "everySteps": 1, "batchSize": 2 },
            "schedule": { "type": "constant" },
            "seed": 5
        });
        if kind == "qlora" {
            c["quantization"] = json!({ "bits": 8, "groupSize": 32 });
        }
        let spec = TrainSpec::from_config(&from_value(c).unwrap()).unwrap();
        let r = train::train(&spec, out, false, &mut |_| Control::Continue).unwrap();
        (spec, r)
    }

    pub fn load(model: &str, quantize: Option<QuantSpec>) -> Model {
        let opts = LoadOptions {
            dtype: Some(Dtype::Float32),
            quantize,
        };
        Model::load(&fixture(model), &opts).unwrap()
    }

    pub fn valid_examples(model: &Model, out: &Path) -> Vec<Example> {
        let tok = Tokenizer::from_dir(&model.dir, Some(&model.spec.tokens())).unwrap();
        let opts = TokenizeOptions {
            train_on_inputs: false,
            max_len: Some(64),
            append_eos: true,
        };
        let path = out.with_extension("valid.jsonl");
        load_examples(&path, &tok, Some(DataFormat::Text), &opts)
            .unwrap()
            .0
    }

    pub fn ids() -> Array {
        Array::from_slice(&[1i32, 40, 41, 42, 100, 7, 9, 11, 250, 3], &[1, 10])
    }

    pub fn max_abs(a: &Array) -> f32 {
        let m = a.abs().unwrap().max(None).unwrap();
        m.eval().unwrap();
        m.item_cast::<f32>()
    }

    pub fn max_abs_diff(a: &Array, b: &Array) -> f32 {
        assert_eq!(a.shape(), b.shape());
        let d = a.subtract(b).unwrap().abs().unwrap().max(None).unwrap();
        d.eval().unwrap();
        d.item_cast::<f32>()
    }
}

use helpers::*;

#[test]
fn a_jobs_output_directory_gives_the_trainers_best_validation_loss() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, kind) in [("lfm2", "lora"), ("qwen3", "dora"), ("llama", "qlora")] {
        let out = tmp.path().join(format!("{model}-{kind}"));
        let (spec, r) = train_job(model, kind, &out);
        let best = r.best_val_loss.expect("validation ran");
        let quantize = (kind == "qlora").then_some(spec.quantization);
        let mut m = load(model, quantize);
        let ex = valid_examples(&m, &out);
        let base = eval::evaluate(&m.spec, &m.params(), &ex, 2).unwrap().loss;
        let adapter = Adapter::load(&out).unwrap();
        assert_eq!(adapter.layout, AdapterLayout::MlxLm);
        assert_eq!(adapter.dora, kind == "dora");
        // mlx-lm's names exactly: its DoRA layer's magnitude is `m`.
        let names: Vec<String> =
            mlxtune_engine::weights::load_file(&out.join("adapters.safetensors"))
                .unwrap()
                .into_keys()
                .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".magnitude")),
            "{names:?}"
        );
        assert_eq!(
            names.iter().any(|n| n.ends_with(".m")),
            kind == "dora",
            "{names:?}"
        );
        adapter.attach(&mut m).unwrap();
        let with = eval::evaluate(&m.spec, &m.params(), &ex, 2).unwrap().loss;
        assert!(
            (with - best).abs() < 1e-5 * best.abs().max(1.0),
            "{model} {kind}: eval with adapter {with}, trainer's best {best}"
        );
        assert!(with < base, "{model} {kind}: {with} not below base {base}");
    }
}

#[test]
fn fused_equals_base_plus_adapter_for_lora_and_dora_on_every_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ARCHS {
        for kind in ["lora", "dora"] {
            let out = tmp.path().join(format!("{model}-{kind}"));
            train_job(model, kind, &out);
            let plain = load(model, None).forward(&ids(), None).unwrap();
            let mut attached = load(model, None);
            Adapter::load(&out).unwrap().attach(&mut attached).unwrap();
            let adapted = attached.forward(&ids(), None).unwrap();
            assert!(
                max_abs_diff(&adapted, &plain) > 1e-3,
                "{model} {kind}: the adapter changes nothing"
            );
            // The same adapter through PEFT's layout (the job's peft/ folder).
            let mut via_peft = load(model, None);
            let peft = Adapter::load(&out.join("peft")).unwrap();
            assert_eq!(peft.layout, AdapterLayout::Peft);
            peft.attach(&mut via_peft).unwrap();
            let d = max_abs_diff(&via_peft.forward(&ids(), None).unwrap(), &adapted);
            assert!(d < 1e-5, "{model} {kind}: PEFT layout differs by {d}");
            // Fused and written as a model directory, then loaded back.
            let fused_dir = tmp.path().join(format!("{model}-{kind}-fused"));
            let mut m = load(model, None);
            let adapter = Adapter::load(&out).unwrap();
            let mut calls = Vec::new();
            fuse_and_save_with_progress(
                &mut m,
                Some(&adapter),
                false,
                &fused_dir,
                DEFAULT_MAX_SHARD_BYTES,
                &mut |done, total| calls.push((done, total)),
            )
            .unwrap();
            let n = adapter.modules().len();
            assert_eq!(
                calls.len(),
                n,
                "{model} {kind}: one progress report per module"
            );
            assert_eq!(calls.last(), Some(&(n, n)));
            let fused = Model::load(&fused_dir, &LoadOptions::default()).unwrap();
            let d = max_abs_diff(&fused.forward(&ids(), None).unwrap(), &adapted);
            assert!(d < 1e-4, "{model} {kind}: fused differs by {d}");
            assert!(fused_dir.join("tokenizer.json").is_file());
            assert!(fused_dir.join("generation_config.json").is_file());
        }
    }
}

#[test]
fn an_adapter_over_a_quantized_base_fuses_and_dequantizes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("qwen2-qlora");
    let (spec, _) = train_job("qwen2", "qlora", &out);
    let adapter = Adapter::load(&out).unwrap();
    let mut attached = load("qwen2", Some(spec.quantization));
    adapter.attach(&mut attached).unwrap();
    let adapted = attached.forward(&ids(), None).unwrap();
    // Fusing re-quantizes each layer with its own geometry: close, not equal.
    let mut fused = load("qwen2", Some(spec.quantization));
    adapter.fuse_into(&mut fused).unwrap();
    assert!(fused.quantization.is_some());
    let requantized = fused.forward(&ids(), None).unwrap();
    let d = max_abs_diff(&requantized, &adapted) / max_abs(&adapted);
    assert!(
        d < 0.05,
        "re-quantized fused model differs by {d} (relative)"
    );
    let n = dequantize_model(&mut fused).unwrap();
    assert!(n > 0 && fused.quantization.is_none());
    assert!(!fused.weights.keys().any(|k| k.ends_with(".scales")));
    let d2 = max_abs_diff(&fused.forward(&ids(), None).unwrap(), &requantized);
    assert!(d2 < 1e-4, "dequantizing changed the outputs by {d2}");
    // fuse --dequantize: the float model of exactly what was trained.
    let dir = tmp.path().join("qwen2-qlora-fused-float");
    let mut base = load("qwen2", Some(spec.quantization));
    fuse_and_save(
        &mut base,
        Some(&adapter),
        true,
        &dir,
        DEFAULT_MAX_SHARD_BYTES,
    )
    .unwrap();
    let float = Model::load(&dir, &LoadOptions::default()).unwrap();
    assert!(float.quantization.is_none());
    let d3 = max_abs_diff(&float.forward(&ids(), None).unwrap(), &adapted) / max_abs(&adapted);
    assert!(
        d3 < 1e-5,
        "dequantized fuse differs from base + adapter by {d3} (relative)"
    );
}

#[test]
fn a_peft_export_of_an_adapter_reads_back_to_the_same_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lfm2-dora");
    train_job("lfm2", "dora", &out);
    let a = Adapter::load(&out).unwrap();
    let peft_dir = tmp.path().join("peft-copy");
    a.save_peft(&peft_dir, "/models/lfm2").unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(peft_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["base_model_name_or_path"], "/models/lfm2");
    assert_eq!(cfg["use_dora"], true);
    let b = Adapter::load(&peft_dir).unwrap();
    assert_eq!(b.modules(), a.modules());
    for (k, v) in &a.weights {
        let d = max_abs_diff(v, &b.weights[k]);
        assert!(d < 1e-7, "{k} differs by {d}");
    }
}

#[test]
fn an_adapter_for_another_model_is_refused_with_every_mismatch_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("qwen3-lora");
    train_job("qwen3", "lora", &out);
    let adapter = Adapter::load(&out).unwrap();
    // qwen3's head_dim is 32 (q_proj 128 wide); llama's is 16 (q_proj 64 wide).
    let mut llama = load("llama", None);
    let e = adapter.attach(&mut llama).unwrap_err().to_string();
    assert!(e.contains("does not fit this `llama` model"), "{e}");
    assert!(
        e.contains("self_attn.q_proj.lora_b: shape [4, 128], the model needs [4, 64]"),
        "{e}"
    );
    assert!(e.contains("self_attn.o_proj.lora_a"), "{e}");
    let mut lfm2 = load("lfm2", None);
    let e = adapter.attach(&mut lfm2).unwrap_err().to_string();
    assert!(e.contains("is not an adaptable linear layer"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = Adapter::load(&empty).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
    assert!(e.contains(empty.to_str().unwrap()), "{e}");
}

#[test]
fn a_fused_model_over_the_shard_size_is_written_as_indexed_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("llama-lora");
    train_job("llama", "lora", &out);
    let adapter = Adapter::load(&out).unwrap();
    let mut m = load("llama", None);
    let dir = tmp.path().join("fused-sharded");
    fuse_and_save(&mut m, Some(&adapter), false, &dir, 200_000).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(
        files[0],
        format!("model-00001-of-{:05}.safetensors", files.len())
    );
    assert!(!dir.join("model.safetensors").exists());
    for f in &files {
        let size = std::fs::metadata(dir.join(f)).unwrap().len();
        // A shard holds at most 200 kB of tensors unless one tensor alone is larger.
        assert!(size < 200_000 + 100_000, "{f}: {size} bytes");
    }
    let back = Model::load(&dir, &LoadOptions::default()).unwrap();
    let mut attached = load("llama", None);
    adapter.attach(&mut attached).unwrap();
    let d = max_abs_diff(
        &back.forward(&ids(), None).unwrap(),
        &attached.forward(&ids(), None).unwrap(),
    );
    assert!(d < 1e-4, "sharded fused model differs by {d}");
    // The directory is new or nothing is written.
    let e = fuse_and_save(&mut m, None, false, &dir, 200_000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
}
