//! Helpers of the training tests: the sentences, a text data file, configs pointed at a
//! fixture, runs and their losses.

use std::path::{Path, PathBuf};

use mlxtune_engine::data::batch::make_batch;
use mlxtune_engine::data::{tokenize_record, DataFormat, Example, TokenizeOptions};
use mlxtune_engine::mlx_rs::Dtype;
use mlxtune_engine::train::config::from_value;
use mlxtune_engine::train::{train, Control, TrainResult, TrainSpec};
use mlxtune_engine::{LoadOptions, Model, Tokenizer};
use serde_json::{json, Value};

use super::fixture;

pub const SENTENCES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
    "The five boxing wizards jump quickly.",
    "Jackdaws love my big sphinx of quartz.",
];

pub fn write_text_data(dir: &Path) -> PathBuf {
    let p = dir.join("train.jsonl");
    let lines: Vec<String> = SENTENCES
        .iter()
        .map(|s| json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

pub fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// The product document's config shape pointed at a fixture, plus `extra`.
pub fn config(model: &str, data: &Path, extra: Value) -> Value {
    let mut c = json!({
        "baseModel": fixture(model).to_str().unwrap(),
        "dataset": { "trainingData": format!("local://{}", data.display()), "format": "text" },
        "parameters": { "learningRate": 0.005, "batchSize": 3, "epochs": 12, "sequenceLength": 64, "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSliliconOptimized": true },
        "seed": 3,
        "schedule": { "type": "constant" }
    });
    merge(&mut c, &extra);
    c
}

pub fn spec(c: Value) -> TrainSpec {
    TrainSpec::from_config(&from_value(c).unwrap()).unwrap()
}

pub fn run(spec: &TrainSpec, out: &Path) -> TrainResult {
    train(spec, out, false, &mut |_| Control::Continue).unwrap()
}

pub fn examples(model: &str) -> (Model, Vec<Example>) {
    let m = Model::load(
        &fixture(model),
        &LoadOptions {
            dtype: Some(Dtype::Float32),
            quantize: None,
        },
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&fixture(model), Some(&m.spec.tokens())).unwrap();
    let ex = SENTENCES
        .iter()
        .map(|s| {
            tokenize_record(
                &tok,
                DataFormat::Text,
                &json!({ "text": s }),
                &TokenizeOptions::default(),
            )
            .unwrap()
        })
        .collect();
    (m, ex)
}

/// One batch holding every example in its own (padded, unpacked) row.
pub fn unpacked_batch(ex: &[Example]) -> mlxtune_engine::data::batch::TrainBatch {
    let rows: Vec<Vec<usize>> = (0..ex.len()).map(|i| vec![i]).collect();
    make_batch(ex, &rows, false, 1)
}

/// The output layer's weight (the embedding table when tied).
pub fn output_layer_weight(m: &Model) -> &'static str {
    if m.spec.tie_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}

pub fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}
