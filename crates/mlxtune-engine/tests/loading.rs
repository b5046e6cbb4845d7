//! Strict loading: every kind of bad model directory gives one clear error naming the
//! file or field; quantized checkpoints load; both LFM2 config dialects are read.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use mlxtune_engine::mlx_rs::ops::dequantize;
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::models::{forward, spec_from_config, HfConfig, Params};
use mlxtune_engine::{weights, EngineError, LoadOptions, Model, QuantSpec, Tokenizer};

fn load_err(dir: &Path) -> String {
    Model::load(dir, &LoadOptions::default())
        .expect_err("must fail")
        .to_string()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut cfg);
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

#[test]
fn a_missing_config_is_named() {
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("missing config.json"), "{e}");
}

#[test]
fn missing_weights_are_named() {
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn an_unsupported_model_type_lists_the_supported_ones() {
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |c| {
        c.insert("model_type".into(), "gpt_neox".into());
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("`gpt_neox` is not supported") && e.contains("lfm2, llama, qwen2, qwen3"),
        "{e}"
    );
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn a_bad_config_field_is_named() {
    let dir = copy_fixture("llama");
    edit_config(dir.path(), |c| {
        c.insert("num_attention_heads".into(), "four".into());
    });
    let e = load_err(dir.path());
    assert!(e.contains("field `num_attention_heads`"), "{e}");
}

#[test]
fn a_truncated_safetensors_file_is_named() {
    let dir = copy_fixture("llama");
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&f, &bytes[..5]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn every_weight_problem_is_listed_in_one_error() {
    let dir = copy_fixture("llama");
    let f = dir.path().join("model.safetensors");
    let mut w = weights::load_file(&f).unwrap();
    let gone = "model.layers.1.mlp.up_proj.weight";
    w.remove(gone).unwrap();
    w.insert(
        "model.layers.0.self_attn.extra.weight".into(),
        Array::from_slice(&[1.0f32], &[1]),
    );
    w.insert(
        "model.norm.weight".into(),
        Array::from_slice(&[1.0f32; 3], &[3]),
    );
    weights::save_atomic(&f, &w, &Default::default()).unwrap();
    let e = Model::load(dir.path(), &LoadOptions::default()).expect_err("must fail");
    match &e {
        EngineError::WeightMismatch { problems, .. } => assert_eq!(problems.len(), 3, "{e}"),
        other => panic!("expected a weight mismatch, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&format!("missing {gone}")), "{msg}");
    assert!(
        msg.contains("unexpected model.layers.0.self_attn.extra.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("model.norm.weight: shape [3], expected [64]"),
        "{msg}"
    );
}

#[test]
fn a_config_that_disagrees_with_the_weights_lists_every_mis_shaped_tensor() {
    let dir = copy_fixture("qwen2");
    edit_config(dir.path(), |c| {
        c.insert("intermediate_size".into(), 96.into());
    });
    let e = load_err(dir.path());
    // 3 MLP matrices in each of 4 layers.
    assert_eq!(
        e.matches("expected [96, 64]").count() + e.matches("expected [64, 96]").count(),
        12,
        "{e}"
    );
}

#[test]
fn a_shard_named_by_the_index_but_absent_is_named() {
    let dir = copy_fixture("qwen3");
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(dir.path().join(&shard)).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains(&shard), "{e}");
}

#[test]
fn a_broken_tokenizer_is_named() {
    let dir = copy_fixture("lfm2");
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let e = Tokenizer::from_dir(dir.path(), None)
        .expect_err("must fail")
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("does not load"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Tokenizer::from_dir(dir.path(), None)
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("missing tokenizer.json"), "{e}");
}

const LFM2_OLD: &str = r#"{
  "model_type": "lfm2", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
  "num_key_value_heads": 8, "block_ff_dim": 12288, "block_auto_adjust_ff_dim": true,
  "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256, "full_attn_idxs": [2, 5, 8, 10, 12, 14],
  "rope_theta": 1000000.0, "norm_eps": 1e-05, "conv_L_cache": 3, "conv_bias": false,
  "vocab_size": 65536, "max_position_embeddings": 128000, "bos_token_id": 1, "eos_token_id": 7,
  "pad_token_id": 0, "tie_embedding": true
}"#;

const LFM2_NEW: &str = r#"{
  "model_type": "lfm2", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
  "num_key_value_heads": 8, "intermediate_size": 12288, "block_auto_adjust_ff_dim": true,
  "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256,
  "layer_types": ["conv","conv","full_attention","conv","conv","full_attention","conv","conv",
                  "full_attention","conv","full_attention","conv","full_attention","conv","full_attention","conv"],
  "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "norm_eps": 1e-05,
  "conv_L_cache": 3, "conv_bias": false, "vocab_size": 65536, "max_position_embeddings": 128000,
  "bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0, "tie_word_embeddings": true
}"#;

#[test]
fn both_lfm2_config_dialects_describe_lfm2_1_2b() {
    let old = spec_from_config(&HfConfig::parse(Path::new("old.json"), LFM2_OLD).unwrap()).unwrap();
    let new = spec_from_config(&HfConfig::parse(Path::new("new.json"), LFM2_NEW).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&old).unwrap(),
        serde_json::to_value(&new).unwrap()
    );
    assert_eq!(old.intermediate_size, 8192);
    assert_eq!(old.num_parameters(), 1_170_340_608);
    assert_eq!(old.expected_tensors().len(), 148);
    assert_eq!(old.eos_token_ids, vec![7]);
}

#[test]
fn lfm2_layer_types_must_match_the_layer_count() {
    let bad = LFM2_NEW.replace("\"num_hidden_layers\": 16", "\"num_hidden_layers\": 15");
    let e = spec_from_config(&HfConfig::parse(Path::new("c.json"), &bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `layer_types`") && e.contains("16 entries"),
        "{e}"
    );
}

#[test]
fn quantized_models_compute_with_their_dequantized_weights_and_save_as_mlx_checkpoints() {
    for name in ARCHS {
        let f32m = Model::load(
            &fixture(name),
            &LoadOptions {
                dtype: Some(Dtype::Float32),
                quantize: None,
            },
        )
        .unwrap();
        let ids = Array::from_slice(&[3i32, 40, 41, 42, 100, 7, 9, 11], &[1, 8]);
        let want = f32m.forward(&ids, None).unwrap();
        let mut errs = vec![];
        for bits in [8, 4] {
            let q = QuantSpec {
                group_size: 32,
                bits,
            };
            let m = Model::load(
                &fixture(name),
                &LoadOptions {
                    dtype: Some(Dtype::Float32),
                    quantize: Some(q),
                },
            )
            .unwrap();
            let n_quantized = m.weights.keys().filter(|k| k.ends_with(".scales")).count();
            assert_eq!(
                n_quantized,
                m.spec.linear_modules().len() + 1,
                "{name}: every linear layer and the embedding"
            );
            let got = m.forward(&ids, None).unwrap();
            // The quantized kernels compute exactly what the float model computes with the
            // dequantized weights.
            let mut deq = m.weights.clone();
            for k in m.weights.keys().filter(|k| k.ends_with(".scales")) {
                let prefix = k.trim_end_matches(".scales");
                let w = format!("{prefix}.weight");
                let dense = dequantize(
                    &m.weights[&w],
                    &m.weights[k],
                    &m.weights[&format!("{prefix}.biases")],
                    32,
                    bits,
                )
                .unwrap();
                deq.remove(k);
                deq.remove(&format!("{prefix}.biases"));
                deq.insert(w, dense);
            }
            let reference =
                forward::forward(&m.spec, &Params::new(&deq), &ids, Default::default()).unwrap();
            let d = max_abs_diff(&got, &reference);
            assert!(
                d < 1e-3,
                "{name} {bits}-bit: quantized path differs from dequantized weights by {d}"
            );
            errs.push(max_abs_diff(&got, &want));
            // Save as an mlx-lm style checkpoint and load it back through config.json's
            // `quantization` entry: identical logits.
            let out = tempfile::tempdir().unwrap();
            m.save(out.path()).unwrap();
            let cfg: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(cfg["quantization"]["bits"], bits);
            let again = Model::load(out.path(), &LoadOptions::default()).unwrap();
            assert_eq!(again.quantization, Some(q));
            assert_eq!(
                max_abs_diff(&again.forward(&ids, None).unwrap(), &got),
                0.0,
                "{name} {bits}-bit reload"
            );
        }
        assert!(
            errs[0] < errs[1],
            "{name}: 8-bit ({}) must be closer to f32 than 4-bit ({})",
            errs[0],
            errs[1]
        );
    }
}

#[test]
fn quantized_checkpoint_with_wrong_bits_in_config_is_rejected() {
    let m = Model::load(
        &fixture("llama"),
        &LoadOptions {
            dtype: None,
            quantize: Some(QuantSpec {
                group_size: 64,
                bits: 4,
            }),
        },
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    m.save(out.path()).unwrap();
    edit_config(out.path(), |c| {
        c.insert(
            "quantization".into(),
            serde_json::json!({"group_size": 64, "bits": 8}),
        );
    });
    let e = load_err(out.path());
    assert!(e.contains("8-bit, group size 64"), "{e}");
}

#[test]
fn mlx_layout_lfm2_conv_kernels_are_accepted() {
    let dir = copy_fixture("lfm2");
    let f = dir.path().join("model.safetensors");
    let mut w = weights::load_file(&f).unwrap();
    let name = "model.layers.0.conv.conv.weight";
    let hf = w[name].clone();
    w.insert(name.into(), hf.transpose_axes(&[0, 2, 1]).unwrap());
    weights::save_atomic(&f, &w, &Default::default()).unwrap();
    let a = Model::load(&fixture("lfm2"), &LoadOptions::default()).unwrap();
    let b = Model::load(dir.path(), &LoadOptions::default()).unwrap();
    let ids = Array::from_slice(&[1i32, 20, 30, 40], &[1, 4]);
    assert_eq!(
        max_abs_diff(
            &a.forward(&ids, None).unwrap(),
            &b.forward(&ids, None).unwrap()
        ),
        0.0
    );
}
