//! LFM2 (`model_type: lfm2`): a hybrid of gated short convolutions and GQA attention.
//!
//! Block (pre-norm): `h = x + op(operator_norm(x)); out = h + feed_forward(ffn_norm(h))`,
//! `op` is attention or the short convolution per layer. Both config dialects are read:
//! `block_ff_dim` / `full_attn_idxs` / `rope_theta` (LFM2) and `intermediate_size` /
//! `layer_types` / `rope_parameters` (LFM2.5 and newer transformers).

use super::config::HfConfig;
use super::spec::{LayerKind, ModelSpec, Names, RopeScaling};
use crate::error::Result;

pub const NAMES: Names = Names {
    attn: "self_attn",
    q_proj: "q_proj",
    k_proj: "k_proj",
    v_proj: "v_proj",
    o_proj: "out_proj",
    q_norm: "q_layernorm",
    k_norm: "k_layernorm",
    mlp: "feed_forward",
    gate: "w1",
    up: "w3",
    down: "w2",
    attn_norm: "operator_norm",
    mlp_norm: "ffn_norm",
    final_norm: "model.embedding_norm",
    conv: "conv",
};

/// The feed-forward width after LFM2's optional auto-adjustment.
pub fn ff_dim(cfg: &HfConfig) -> Result<i32> {
    let field = if cfg.has("intermediate_size") {
        "intermediate_size"
    } else {
        "block_ff_dim"
    };
    let mut ff = cfg.req_i32(field)? as f64;
    if cfg.opt_bool("block_auto_adjust_ff_dim")?.unwrap_or(true) {
        ff = (2.0 * ff / 3.0).floor();
        // As transformers does: the multiplier and the rounding apply only when a
        // multiplier is given.
        if let Some(m) = cfg.opt_f32("block_ffn_dim_multiplier")? {
            ff = (m as f64 * ff).floor();
            let multiple = cfg.opt_i32("block_multiple_of")?.unwrap_or(256) as f64;
            ff = multiple * (ff / multiple).ceil();
        }
    }
    Ok(ff as i32)
}

pub fn spec(cfg: &HfConfig) -> Result<ModelSpec> {
    let hidden_size = cfg.req_i32("hidden_size")?;
    let n_layers = cfg.req_i32("num_hidden_layers")? as usize;
    let num_heads = cfg.req_i32("num_attention_heads")?;
    let num_kv_heads = cfg.opt_i32("num_key_value_heads")?.unwrap_or(num_heads);
    if hidden_size % num_heads != 0 || num_heads % num_kv_heads != 0 {
        return Err(cfg.err(
            "num_attention_heads",
            "must divide hidden_size, and num_key_value_heads must divide it",
        ));
    }
    let layers: Vec<LayerKind> = if let Some(types) = cfg.get("layer_types") {
        let types = types
            .as_array()
            .ok_or_else(|| cfg.err("layer_types", "expected a list"))?;
        if types.len() != n_layers {
            return Err(cfg.err(
                "layer_types",
                format!(
                    "has {} entries, num_hidden_layers is {n_layers}",
                    types.len()
                ),
            ));
        }
        types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("conv") => Ok(LayerKind::Conv),
                Some("full_attention") | Some("attention") => Ok(LayerKind::Attention),
                _ => Err(cfg.err(
                    &format!("layer_types[{i}]"),
                    format!("expected \"conv\" or \"full_attention\", got {t}"),
                )),
            })
            .collect::<Result<_>>()?
    } else {
        let idxs = cfg
            .get("full_attn_idxs")
            .ok_or_else(|| cfg.err("layer_types", "required (or the older full_attn_idxs)"))?
            .as_array()
            .ok_or_else(|| cfg.err("full_attn_idxs", "expected a list of layer indices"))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|i| (*i as usize) < n_layers)
                    .ok_or_else(|| cfg.err("full_attn_idxs", format!("index {v} out of range")))
            })
            .collect::<Result<Vec<_>>>()?;
        (0..n_layers)
            .map(|i| {
                if idxs.contains(&(i as u64)) {
                    LayerKind::Attention
                } else {
                    LayerKind::Conv
                }
            })
            .collect()
    };
    let (rope_theta, rope_scaling) = cfg.rope(1_000_000.0)?;
    if rope_scaling != RopeScaling::None {
        return Err(cfg.err(
            "rope_parameters",
            "LFM2 uses plain RoPE; scaling is not supported",
        ));
    }
    let tie = match cfg.opt_bool("tie_word_embeddings")? {
        Some(t) => t,
        None => cfg.opt_bool("tie_embedding")?.unwrap_or(true),
    };
    Ok(ModelSpec {
        model_type: "lfm2".into(),
        hidden_size,
        num_heads,
        num_kv_heads,
        head_dim: hidden_size / num_heads,
        intermediate_size: ff_dim(cfg)?,
        vocab_size: cfg.req_i32("vocab_size")?,
        norm_eps: cfg.opt_f32("norm_eps")?.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        max_position_embeddings: cfg.opt_i32("max_position_embeddings")?.unwrap_or(128_000),
        tie_embeddings: tie,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: true,
        layers,
        conv_l_cache: cfg.opt_i32("conv_L_cache")?.unwrap_or(3),
        conv_bias: cfg.opt_bool("conv_bias")?.unwrap_or(false),
        names: NAMES,
        bos_token_id: cfg.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: cfg.token_ids("eos_token_id")?,
        pad_token_id: cfg.token_ids("pad_token_id")?.first().copied(),
    })
}
