//! Llama (`model_type: llama`): pre-norm decoder, GQA attention with RoPE, SwiGLU MLP.

use super::config::HfConfig;
use super::spec::{LayerKind, ModelSpec, LLAMA_NAMES};
use crate::error::Result;

/// Reads a Llama-family config; Qwen2 and Qwen3 start from it and adjust.
pub fn spec(cfg: &HfConfig) -> Result<ModelSpec> {
    let hidden_size = cfg.req_i32("hidden_size")?;
    let num_heads = cfg.req_i32("num_attention_heads")?;
    let num_kv_heads = cfg.opt_i32("num_key_value_heads")?.unwrap_or(num_heads);
    if num_heads % num_kv_heads != 0 {
        return Err(cfg.err(
            "num_key_value_heads",
            format!("{num_kv_heads} must divide num_attention_heads ({num_heads})"),
        ));
    }
    let head_dim = match cfg.opt_i32("head_dim")? {
        Some(d) => d,
        None => {
            if hidden_size % num_heads != 0 {
                return Err(cfg.err(
                    "num_attention_heads",
                    "must divide hidden_size when head_dim is absent",
                ));
            }
            hidden_size / num_heads
        }
    };
    let layers = cfg.req_i32("num_hidden_layers")?;
    let (rope_theta, rope_scaling) = cfg.rope(10_000.0)?;
    let attention_bias = cfg.opt_bool("attention_bias")?.unwrap_or(false);
    Ok(ModelSpec {
        model_type: cfg.model_type()?,
        hidden_size,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size: cfg.req_i32("intermediate_size")?,
        vocab_size: cfg.req_i32("vocab_size")?,
        norm_eps: cfg.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        max_position_embeddings: cfg.opt_i32("max_position_embeddings")?.unwrap_or(4096),
        tie_embeddings: cfg.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        mlp_bias: cfg.opt_bool("mlp_bias")?.unwrap_or(false),
        qk_norm: false,
        layers: vec![LayerKind::Attention; layers as usize],
        conv_l_cache: 0,
        conv_bias: false,
        names: LLAMA_NAMES,
        bos_token_id: cfg.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: cfg.token_ids("eos_token_id")?,
        pad_token_id: cfg.token_ids("pad_token_id")?.first().copied(),
    })
}

/// Qwen configs may ask for sliding-window attention, which is not implemented.
pub fn reject_sliding_window(cfg: &HfConfig) -> Result<()> {
    if cfg.opt_bool("use_sliding_window")?.unwrap_or(false) {
        return Err(cfg.err(
            "use_sliding_window",
            "sliding-window attention is not supported",
        ));
    }
    Ok(())
}
