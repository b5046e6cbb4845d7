//! Qwen3 (`model_type: qwen3`): Llama with an explicit `head_dim` and RMSNorm on each
//! query and key head (`q_norm`, `k_norm`) before RoPE.

use super::config::HfConfig;
use super::spec::ModelSpec;
use crate::error::Result;

pub fn spec(cfg: &HfConfig) -> Result<ModelSpec> {
    super::llama::reject_sliding_window(cfg)?;
    let mut spec = super::llama::spec(cfg)?;
    if !cfg.has("head_dim") {
        spec.head_dim = 128;
    }
    spec.qk_norm = true;
    spec.mlp_bias = false;
    Ok(spec)
}
