//! Our adapters in mlx-lm's layout, loaded by mlx-lm itself (0.32.2 with MLX's CPU wheels,
//! from PyPI, installed by scripts/pytools.sh): LoRA and DoRA give mlx-lm the loss they
//! give us on the same examples (issue 17, defect 12).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;
use common::train::*;
use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::data::{load_examples, DataFormat, Example, TokenizeOptions};
use mlxtune_engine::eval;
use mlxtune_engine::mlx_rs::Dtype;
use mlxtune_engine::{LoadOptions, Model, Tokenizer};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture `name` loaded and written again by our code into `dir` (config, weights,
/// tokenizer). mlx-lm's LFM2 needs `block_dim`, which LFM2's published configs carry and
/// transformers 5 (which wrote the fixture) leaves out: it is added for LFM2.
fn model_dir(name: &str, dir: &Path) -> PathBuf {
    let opts = LoadOptions {
        dtype: Some(Dtype::Float32),
        quantize: None,
    };
    let mut m = Model::load(&fixture(name), &opts).unwrap();
    if m.spec.model_type == "lfm2" {
        m.config
            .json
            .insert("block_dim".into(), json!(m.spec.hidden_size));
    }
    let out = dir.join(name);
    m.save(&out).unwrap();
    mlxtune_engine::tokenizer::copy_tokenizer_files(&m.dir, &out).unwrap();
    out
}

fn examples(model: &Model, data: &Path) -> Vec<Example> {
    let tok = Tokenizer::from_dir(&model.dir, Some(&model.spec.tokens())).unwrap();
    let opts = TokenizeOptions {
        train_on_inputs: false,
        max_len: Some(64),
        append_eos: true,
    };
    load_examples(data, &tok, Some(DataFormat::Text), &opts)
        .unwrap()
        .0
}

/// mlx-lm's loss of `ex` with the adapter directory `adapter` over the model in `model`.
fn mlx_lm_loss(model: &Path, adapter: &Path, ex: &[Example]) -> f64 {
    let site = std::env::var_os("MLXTUNE_MLXLM_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".native/pytools/mlxlm-site"));
    assert!(
        site.join("mlx_lm").is_dir(),
        "mlx-lm is not installed in {} (./test.sh installs it: scripts/pytools.sh)",
        site.display()
    );
    let file = adapter.join("examples-for-mlx-lm.json");
    let rows: Vec<Value> = ex
        .iter()
        .map(|e| json!({"ids": e.ids, "mask": e.mask}))
        .collect();
    std::fs::write(&file, serde_json::to_string(&rows).unwrap()).unwrap();
    let r = Command::new("python3")
        .arg(repo().join("scripts/mlx_lm_check/loss.py"))
        .args([model, adapter, &file])
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "mlx-lm failed on {}: {}",
        adapter.display(),
        String::from_utf8_lossy(&r.stderr)
    );
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn mlx_lm_loads_our_lora_and_dora_adapters_with_our_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    for (name, kind) in [
        ("llama", "lora"),
        ("llama", "dora"),
        ("qwen3", "dora"),
        ("lfm2", "lora"),
        ("lfm2", "dora"),
    ] {
        let dir = model_dir(name, tmp.path());
        let out = tmp.path().join(format!("{name}-{kind}"));
        let extra = json!({"fineTuneType": kind, "maxSteps": 4});
        let mut c = config(name, &data, extra);
        c["baseModel"] = json!(dir.to_str().unwrap());
        run(&spec(c), &out);

        let mut m = Model::load(
            &dir,
            &LoadOptions {
                dtype: Some(Dtype::Float32),
                quantize: None,
            },
        )
        .unwrap();
        let ex = examples(&m, &data);
        let base = eval::evaluate(&m.spec, &m.params(), &ex, 2).unwrap().loss;
        Adapter::load(&out).unwrap().attach(&mut m).unwrap();
        let ours = eval::evaluate(&m.spec, &m.params(), &ex, 2).unwrap().loss;
        let theirs = mlx_lm_loss(&dir, &out, &ex);
        assert!(
            (ours - theirs).abs() < 1e-5 * ours.abs().max(1.0),
            "{name} {kind}: ours {ours}, mlx-lm {theirs}"
        );
        // The adapter changed the model, so agreement is not the base's.
        assert!(
            (ours - base).abs() > 1e-3,
            "{name} {kind}: {ours} vs base {base}"
        );
    }
}
