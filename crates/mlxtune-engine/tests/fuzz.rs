//! Property tests over everything that reads outside input: the config parser (JSON and
//! TOML, and valid configs with one field replaced by anything), the JSONL readers of every
//! format, the safetensors header reader, the chat-template renderer and the GGUF reader.
//! The property: no panic, and every failure is a typed error that names where it is.
//! Each runs a bounded number of cases here; `PROPTEST_CASES=20000 cargo test -p
//! mlxtune-engine --test fuzz` runs a longer campaign (docs/reliability.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::fixture;
use mlxtune_engine::data::{self, DataFormat, DataSpec, TokenizeOptions};
use mlxtune_engine::train::config::{from_value, parse_config};
use mlxtune_engine::train::TrainSpec;
use mlxtune_engine::{EngineError, Tokenizer};
use proptest::prelude::*;
use serde_json::{json, Value};

fn config_cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_config() -> Value {
    json!({
        "baseModel": "m", "dataset": { "trainingData": "d.jsonl", "format": "chat" },
        "parameters": { "learningRate": 1e-4, "batchSize": 4, "epochs": 1, "sequenceLength": 64,
                        "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "bf16" },
        "lora": { "dropout": 0.1, "targetModules": ["q_proj"] },
        "schedule": { "type": "cosine", "warmupSteps": 2 },
        "eval": { "everySteps": 5 }, "checkpoint": { "keepLast": 2 }
    })
}

const PATHS: &[&[&str]] = &[
    &["baseModel"],
    &["dataset"],
    &["dataset", "format"],
    &["dataset", "template"],
    &["parameters", "learningRate"],
    &["parameters", "batchSize"],
    &["parameters", "epochs"],
    &["parameters", "sequenceLength"],
    &["parameters", "loraRank"],
    &["optimization"],
    &["optimization", "mixedPrecision"],
    &["lora", "targetModules"],
    &["lora", "dropout"],
    &["schedule", "type"],
    &["schedule"],
    &["eval", "everySteps"],
    &["maxSteps"],
    &["gradientAccumulationSteps"],
    &["fineTuneType"],
    &["quantization"],
    &["seed"],
];

fn replace(v: &mut Value, path: &[&str], new: Value) {
    let mut at = v;
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = new;
}

proptest! {
    #![proptest_config(config_cases())]

    #[test]
    fn config_text_never_panics_and_errors_name_a_field(text in ".{0,200}", toml in any::<bool>()) {
        if let Err(e) = parse_config(&text, toml) {
            prop_assert!(!e.param.is_empty() && !e.message.is_empty());
        }
    }

    #[test]
    fn a_config_with_any_field_replaced_is_accepted_or_names_a_field(
        which in 0..PATHS.len(), value in any_json()
    ) {
        let mut c = valid_config();
        replace(&mut c, PATHS[which], value);
        match from_value(c) {
            Err(e) => prop_assert!(!e.param.is_empty(), "{e:?}"),
            Ok(cfg) => {
                if let Err(e) = TrainSpec::from_config(&cfg) {
                    prop_assert!(!e.param.is_empty(), "{e:?}");
                }
            }
        }
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixture("lfm2"), None).unwrap()
}

fn temp_file(bytes: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (dir, path)
}

/// JSONL-ish lines: records of every format with fields of any JSON, broken lines, BOMs.
fn jsonl_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any_json().prop_map(|v| v.to_string()),
        any_json().prop_map(|v| json!({"text": v}).to_string()),
        (any_json(), any_json()).prop_map(|(p, c)| json!({"prompt": p, "completion": c}).to_string()),
        prop::collection::vec((prop::sample::select(vec!["user", "assistant", "system", "tool", "x"]), any_json()), 0..4)
            .prop_map(|m| json!({"messages": m.into_iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>()}).to_string()),
        ".{0,40}",
        Just("\u{feff}{\"text\": \"bom\"}".to_string()),
    ]
}

proptest! {
    #![proptest_config(config_cases())]

    #[test]
    fn jsonl_of_every_format_never_panics_and_errors_name_file_and_line(
        lines in prop::collection::vec(jsonl_line(), 0..6),
        format in prop::sample::select(vec![None, Some(DataFormat::Chat), Some(DataFormat::Completion), Some(DataFormat::Text)]),
    ) {
        let (_d, path) = temp_file(lines.join("\n").as_bytes(), "data.jsonl");
        let opts = TokenizeOptions { max_len: Some(32), ..TokenizeOptions::default() };
        match data::load(&path, &tokenizer(), &DataSpec::Builtin(format), &opts) {
            Ok((examples, stats)) => prop_assert_eq!(examples.len(), stats.records),
            Err(EngineError::Data { file, message, .. }) => {
                prop_assert_eq!(file, path);
                prop_assert!(!message.is_empty());
            }
            Err(e) => prop_assert!(matches!(e, EngineError::Io { .. } | EngineError::Tokenizer { .. }), "{e:?}"),
        }
    }

    #[test]
    fn chat_templates_never_panic(
        messages in prop::collection::vec((prop::sample::select(vec!["user", "assistant", "system", "tool", "bogus"]), ".{0,30}"), 0..5),
        model in prop::sample::select(vec!["lfm2", "llama", "qwen2", "qwen3"]),
    ) {
        let tok = Tokenizer::from_dir(&fixture(model), None).unwrap();
        let msgs: Vec<Value> = messages.into_iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
        if let Err(e) = tok.apply_chat_template(&msgs, None, true) {
            prop_assert!(matches!(e, EngineError::Tokenizer { .. }), "{e:?}");
        }
    }

    #[test]
    fn safetensors_headers_never_panic(
        header in prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
            (any::<u32>(), prop::collection::vec(0usize..3, 0..3)).prop_map(|(n, s)| json!({"t": {"dtype": "F32", "shape": s, "data_offsets": [0, n]}}).to_string().into_bytes()),
        ],
        declared in prop::option::of(any::<u64>()),
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = declared.unwrap_or(header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(&header);
        bytes.extend(&tail);
        let (_d, path) = temp_file(&bytes, "model.safetensors");
        if let Err(e) = mlxtune_engine::weights::read_header(&path) {
            prop_assert!(matches!(e, EngineError::Safetensors { .. } | EngineError::Io { .. }), "{e:?}");
        }
    }

    #[test]
    fn gguf_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), cut in 0usize..4096) {
        // Random bytes, and a real file cut short anywhere.
        let (_d, path) = temp_file(&bytes, "model.gguf");
        let _ = mlxtune_engine::gguf::GgufFile::open(&path);
        let real = real_gguf();
        let (_d2, cut_path) = temp_file(&real[..cut.min(real.len())], "cut.gguf");
        let _ = mlxtune_engine::gguf::GgufFile::open(&cut_path);
    }
}

/// A small valid GGUF file (the LFM2 fixture in F32), made once.
fn real_gguf() -> Vec<u8> {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        use mlxtune_engine::gguf::{export_gguf, GgufQuant};
        use mlxtune_engine::{LoadOptions, Model};
        let model = Model::load(
            &fixture("lfm2"),
            &LoadOptions {
                dtype: Some(mlxtune_engine::mlx_rs::Dtype::Float32),
                quantize: None,
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        export_gguf(
            &model,
            &path,
            "F32".parse::<GgufQuant>().unwrap(),
            &mut |_| {},
        )
        .unwrap();
        std::fs::read(&path).unwrap()
    })
    .clone()
}
