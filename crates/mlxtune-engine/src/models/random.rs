//! Models of named shapes with random weights, for benchmarks and for real jobs at a
//! benchmark's size (`mlxtune bench init-model`): no download needed.

use std::path::Path;

use mlx_rs::Dtype;
use serde_json::json;

use super::{spec_from_config, HfConfig, Model, Role};
use crate::error::{EngineError, Result};
use crate::weights::Weights;

/// Named shapes, as `config.json` text.
pub fn named_shape(name: &str) -> Option<serde_json::Value> {
    let lfm2 = |hidden: i64,
                layers: i64,
                heads: i64,
                kv: i64,
                ff: i64,
                vocab: i64,
                attn: Vec<i64>| {
        json!({
            "model_type": "lfm2", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "block_ff_dim": ff,
            "block_auto_adjust_ff_dim": true, "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256,
            "full_attn_idxs": attn, "rope_theta": 1000000.0, "norm_eps": 1e-5, "conv_L_cache": 3,
            "conv_bias": false, "vocab_size": vocab, "max_position_embeddings": 128000,
            "tie_embedding": true, "eos_token_id": 7
        })
    };
    Some(match name {
        // LFM2-1.2B as published (1,170,340,608 parameters).
        "lfm2-1.2b" => lfm2(2048, 16, 32, 8, 12288, 65536, vec![2, 5, 8, 10, 12, 14]),
        // A ~20M-parameter LFM2 for CPU runs.
        "lfm2-20m" => lfm2(256, 8, 4, 2, 1536, 32000, vec![2, 5, 7]),
        // A ~23M-parameter Llama for CPU runs.
        "llama-20m" => json!({
            "model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 8,
            "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32000,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
            "tie_word_embeddings": false
        }),
        _ => return None,
    })
}

/// A model of a named shape with random weights (N(0, 0.02), norms 1).
pub fn random_model(shape: &str, dtype: Dtype, seed: u64) -> Result<Model> {
    let cfg_json = named_shape(shape).ok_or_else(|| {
        EngineError::invalid(
            "shape",
            format!("`{shape}`: expected lfm2-1.2b, lfm2-20m or llama-20m"),
        )
    })?;
    let config = HfConfig::parse(Path::new(shape), &cfg_json.to_string())?;
    let spec = spec_from_config(&config)?;
    let mut weights = Weights::new();
    for (i, e) in spec.expected_tensors().into_iter().enumerate() {
        let key = mlx_rs::random::key(seed.wrapping_mul(7919).wrapping_add(i as u64))?;
        let a = if e.role == Role::Other && e.shape.len() == 1 && e.name.ends_with("norm.weight") {
            mlx_rs::ops::ones::<f32>(&e.shape)?
        } else {
            mlx_rs::random::normal::<f32>(e.shape.as_slice(), None, 0.02f32, &key)?
        };
        weights.insert(e.name, a.as_dtype(dtype)?);
    }
    mlx_rs::transforms::eval(weights.values())?;
    Ok(Model {
        dir: shape.into(),
        config,
        spec,
        weights,
        dtype,
        quantization: None,
    })
}
