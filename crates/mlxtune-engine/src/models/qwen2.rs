//! Qwen2 (`model_type: qwen2`): Llama with biases on the q, k and v projections.

use super::config::HfConfig;
use super::spec::ModelSpec;
use crate::error::Result;

pub fn spec(cfg: &HfConfig) -> Result<ModelSpec> {
    super::llama::reject_sliding_window(cfg)?;
    let mut spec = super::llama::spec(cfg)?;
    spec.qkv_bias = true;
    spec.o_bias = false;
    spec.mlp_bias = false;
    Ok(spec)
}
