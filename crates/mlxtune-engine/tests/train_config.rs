//! Training configs: bad fields are named, TOML and the product document's spelling work.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::train::*;
use common::*;
use mlxtune_engine::train::config::{from_value, parse_config};
use mlxtune_engine::train::TrainSpec;
use mlxtune_engine::{LoadOptions, Model};
use serde_json::{json, Value};
#[test]
fn bad_configs_name_the_field() {
    let good = config("llama", Path::new("d.jsonl"), json!({}));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "parameters": { "learningRate": 0 } }),
            "parameters.learningRate must be > 0",
        ),
        (
            json!({ "parameters": { "learningRate": "fast" } }),
            "parameters.learningRate",
        ),
        (
            json!({ "parameters": { "batchSize": 0 } }),
            "parameters.batchSize",
        ),
        (
            json!({ "parameters": { "batchSize": "huge" } }),
            "parameters.batchSize",
        ),
        (
            json!({ "parameters": { "epochs": -1 } }),
            "parameters.epochs must be > 0",
        ),
        (
            json!({ "parameters": { "sequenceLength": 1 } }),
            "parameters.sequenceLength",
        ),
        (
            json!({ "parameters": { "loraRank": 0 } }),
            "parameters.loraRank",
        ),
        (json!({ "dataset": { "format": "xml" } }), "dataset.format"),
        (
            json!({ "dataset": { "format": "custom" } }),
            "dataset.template",
        ),
        (
            json!({ "optimization": { "mixedPrecision": "fp8" } }),
            "optimization.mixedPrecision",
        ),
        (json!({ "fineTuneType": "prefix" }), "fineTuneType"),
        (json!({ "optimizer": { "name": "lamb" } }), "optimizer.name"),
        (json!({ "schedule": { "type": "step" } }), "schedule.type"),
        (
            json!({ "lora": { "targetModules": [3] } }),
            "lora.targetModules[0]",
        ),
        (json!({ "lora": { "dropout": 2 } }), "lora.dropout"),
        (
            json!({ "fineTuneType": "qlora", "quantization": { "bits": 3 } }),
            "quantization.bits",
        ),
        (
            json!({ "earlyStopping": { "patience": 2 } }),
            "earlyStopping.patience",
        ),
        (
            json!({ "optimization": { "gradientCheckpointingLayers": 2 } }),
            "optimization.gradientCheckpointingLayers needs optimization.gradientCheckpointing",
        ),
        (
            json!({ "optimization": { "gradientCheckpointingMlps": 2 } }),
            "optimization.gradientCheckpointingMlps needs optimization.gradientCheckpointing",
        ),
        (
            json!({ "optimization": { "gradientCheckpointing": true, "gradientCheckpointingMlps": 0 } }),
            "optimization.gradientCheckpointingMlps must be >= 1",
        ),
    ];
    for (patch, want) in cases {
        let mut c = good.clone();
        merge(&mut c, &patch);
        let e = from_value(c)
            .and_then(|c| TrainSpec::from_config(&c))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{patch}: got `{e}`, want `{want}`");
    }
    let mut c = good.clone();
    c["parameters"]
        .as_object_mut()
        .unwrap()
        .remove("learningRate");
    let e = from_value(c).unwrap_err();
    assert_eq!(e.param, "parameters.learningRate");
}

#[test]
fn checks_against_the_model_name_the_field() {
    let s = spec(config(
        "llama",
        Path::new("d.jsonl"),
        json!({ "parameters": { "sequenceLength": 100000 } }),
    ));
    let m = Model::load(&fixture("llama"), &LoadOptions::default()).unwrap();
    assert_eq!(
        s.check_against_model(&m.spec).unwrap_err().param,
        "parameters.sequenceLength"
    );
    let s = spec(config(
        "llama",
        Path::new("d.jsonl"),
        json!({ "lora": { "targetModules": ["q_proj", "w9"] } }),
    ));
    assert_eq!(
        s.check_against_model(&m.spec).unwrap_err().param,
        "lora.targetModules[1]"
    );
    let s = spec(config(
        "llama",
        Path::new("d.jsonl"),
        json!({ "optimization": { "gradientCheckpointing": true, "gradientCheckpointingLayers": 99 } }),
    ));
    let e = s.check_against_model(&m.spec).unwrap_err();
    assert_eq!(e.param, "optimization.gradientCheckpointingLayers");
    assert!(e.message.contains("exceeds the model's"), "{}", e.message);
    // Only MLPs asked for: no layer is recomputed whole, and 0 whole layers is accepted.
    let mlps = |o: serde_json::Value| {
        spec(config(
            "llama",
            Path::new("d.jsonl"),
            json!({ "optimization": o }),
        ))
    };
    let s = mlps(json!({ "gradientCheckpointing": true, "gradientCheckpointingMlps": 2 }));
    assert_eq!((s.recomputed_layers(), s.recomputed_mlps()), (0, 2));
    let s = mlps(
        json!({ "gradientCheckpointing": true, "gradientCheckpointingLayers": 1, "gradientCheckpointingMlps": 3 }),
    );
    assert_eq!((s.recomputed_layers(), s.recomputed_mlps()), (1, 3));
    // No layer whole and no MLP: only the element-wise values are recomputed.
    let s = mlps(json!({ "gradientCheckpointing": true, "gradientCheckpointingLayers": 0 }));
    assert_eq!((s.recomputed_layers(), s.recomputed_mlps()), (0, 0));
    assert!(s.gradient_checkpointing);
    let s = mlps(json!({ "gradientCheckpointing": true, "gradientCheckpointingMlps": 99 }));
    let e = s.check_against_model(&m.spec).unwrap_err();
    assert_eq!(e.param, "optimization.gradientCheckpointingMlps");
}

#[test]
fn toml_configs_and_the_product_documents_spelling_are_accepted() {
    let toml = r#"
baseModel = "lfm2-1.2b"
[dataset]
trainingData = "s3://bucket/training.jsonl"
format = "chat"
[parameters]
learningRate = 1e-4
batchSize = "auto"
epochs = 3
sequenceLength = 2048
[optimization]
gradientCheckpointing = true
mixedPrecision = "bf16"
appleSliliconOptimized = true
"#;
    let c = parse_config(toml, true).unwrap();
    let s = TrainSpec::from_config(&c).unwrap();
    assert_eq!(s.batch_size, None);
    assert_eq!(s.precision, "bf16");
    let e = parse_config("baseModel = 3", true).unwrap_err();
    assert_eq!(e.param, "baseModel");
}
