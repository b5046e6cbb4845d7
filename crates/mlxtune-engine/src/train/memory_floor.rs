//! The analytic floor of a training step's peak memory: what this step's design must hold
//! at its peak however it is scheduled. `mlxtune bench train` reports it beside the
//! measured peak (issue 14: "report peak memory against the analytic minimum"), so the gap
//! between them is what scheduling, MLX's buffers and work queued ahead cost.
//!
//! It counts the weights, the trainable arrays' state, the values the backward pass reads
//! that the step's checkpointing mode keeps (per token, by layer kind), and the largest
//! transient of the places the peak can come: the loss (one chunk's logits and their
//! gradient), a recomputed layer's or MLP's backward pass (its values, recomputed), or the
//! update (every trainable array's gradient).

use super::step::StepOptions;
use crate::models::spec::{LayerKind, ModelSpec};

/// The floor's parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryFloor {
    /// The frozen weights as stored.
    pub weights: u64,
    /// The trainable arrays: f32 copies, two f32 moments, and their compute-dtype copies
    /// (kept from the forward pass to the backward pass) where that is not f32.
    pub train_state: u64,
    /// The values the backward pass reads that the step keeps from the forward pass.
    pub kept: u64,
    /// The largest transient beside them: the loss chunk's logits and their gradient, the
    /// values of a recomputed layer or MLP, or the trainable arrays' gradients at the update.
    pub working: u64,
    pub total: u64,
}

/// What a step keeps and recomputes: [`StepOptions`]' checkpointing and its loss chunk.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub recomputed_layers: usize,
    pub recomputed_mlps: usize,
    pub lean: bool,
    pub loss_chunk_tokens: u64,
}

impl Mode {
    /// The mode of a step of `layers` decoder layers.
    pub fn of(opts: &StepOptions, layers: usize) -> Mode {
        let chunk = match opts.chunked_loss {
            true => super::step::loss_chunk_tokens(opts, layers) as u64,
            false => u64::MAX,
        };
        Mode {
            recomputed_layers: opts.checkpoint_layers.min(layers),
            recomputed_mlps: opts.checkpoint_mlps.min(layers),
            lean: opts.lean,
            loss_chunk_tokens: chunk,
        }
    }
}

/// Bytes per number of a compute dtype: 4 for f32, 2 for the 16-bit ones.
pub fn compute_bytes(dtype: mlx_rs::Dtype) -> u64 {
    match dtype {
        mlx_rs::Dtype::Float32 => 4,
        _ => 2,
    }
}

/// The floor of a step over `tokens` tokens (batch × sequence) in a compute dtype of
/// `compute_bytes`, with `weights` bytes of frozen weights and `trainable` trainable numbers.
pub fn memory_floor(
    spec: &ModelSpec,
    weights: u64,
    trainable: u64,
    compute_bytes: u64,
    tokens: u64,
    mode: Mode,
) -> MemoryFloor {
    let copies = if compute_bytes < 4 { compute_bytes } else { 0 };
    let train_state = trainable * (4 + 8 + copies);
    let h = spec.hidden_size as u64;
    let mut kept = 0;
    let mut recomputed_layer = 0;
    for (i, kind) in spec.layers.iter().enumerate() {
        let all = layer_values(spec, *kind, false, false);
        if i < mode.recomputed_layers {
            kept += h;
            recomputed_layer = recomputed_layer.max(all - h);
        } else {
            let mlp = i < mode.recomputed_mlps;
            kept += layer_values(spec, *kind, mode.lean, mlp);
            if mlp {
                let f = spec.intermediate_size as u64;
                recomputed_layer = recomputed_layer.max(3 * f + h);
            }
        }
    }
    let chunk = mode.loss_chunk_tokens.min(tokens);
    let logits = chunk * spec.vocab_size as u64 * 2 * compute_bytes;
    let gradients = trainable * compute_bytes;
    let working = logits
        .max(recomputed_layer * tokens * compute_bytes)
        .max(gradients);
    let kept = kept * tokens * compute_bytes;
    MemoryFloor {
        weights,
        train_state,
        kept,
        working,
        total: weights + train_state + kept + working,
    }
}

/// Numbers per token one decoder layer keeps for the backward pass: both norms' inputs
/// (the residual stream), both norms' outputs (the projections' inputs), the mixer's values
/// (attention: q, k, v and its output; LFM2's short convolution: the input projection's
/// three parts and the convolution's output) and the MLP's gate, up and activation. A lean
/// layer recomputes the norms' outputs, the convolution's output and the activation; a
/// layer whose MLP is recomputed keeps none of the MLP's values but its input.
fn layer_values(spec: &ModelSpec, kind: LayerKind, lean: bool, mlp_recomputed: bool) -> u64 {
    let (h, f) = (spec.hidden_size as u64, spec.intermediate_size as u64);
    let q = (spec.num_heads * spec.head_dim) as u64;
    let kv = (spec.num_kv_heads * spec.head_dim) as u64;
    let norm_outputs = if lean { 0 } else { h };
    let mixer = match kind {
        LayerKind::Attention => 2 * q + 2 * kv,
        LayerKind::Conv if lean => 3 * h,
        LayerKind::Conv => 4 * h,
    };
    let mlp = match (mlp_recomputed, lean) {
        (true, _) => 0,
        (false, true) => 2 * f + norm_outputs,
        (false, false) => 3 * f + norm_outputs,
    };
    2 * h + norm_outputs + mixer + mlp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lfm2() -> ModelSpec {
        let cfg = crate::models::random::named_shape("lfm2-1.2b").unwrap();
        let cfg = crate::models::HfConfig::parse(std::path::Path::new("lfm2"), &cfg.to_string());
        crate::models::spec_from_config(&cfg.unwrap()).unwrap()
    }

    #[test]
    fn recomputing_more_lowers_the_floor_and_every_layer_keeps_at_least_its_input() {
        let spec = lfm2();
        let floor = |layers, mlps, lean| {
            let mode = Mode {
                recomputed_layers: layers,
                recomputed_mlps: mlps,
                lean,
                loss_chunk_tokens: 2048,
            };
            memory_floor(&spec, 1 << 30, 11_000_000, 2, 16384, mode)
        };
        let n = spec.num_layers();
        let (none, lean, mlps, whole) = (
            floor(0, 0, false),
            floor(0, 0, true),
            floor(0, n, true),
            floor(n, 0, true),
        );
        assert!(none.kept > lean.kept && lean.kept > mlps.kept && mlps.kept > whole.kept);
        assert_eq!(whole.kept, n as u64 * 2048 * 16384 * 2);
        assert!(
            whole.working > none.working,
            "a recomputed layer's values at once"
        );
        assert_eq!(
            none.total,
            none.weights + none.train_state + none.kept + none.working
        );
    }
}
