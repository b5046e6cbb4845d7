//! One training micro-step as a function of arrays: the masked cross-entropy (summed, times
//! the loss scale) and its gradient with respect to the trainable arrays. Shared by the
//! trainer and `mlxtune bench train`.

use std::cell::Cell;
use std::rc::Rc;

use mlx_rs::error::Exception;
use mlx_rs::transforms::value_and_grad_with_argnums;
use mlx_rs::{Array, Dtype};

use crate::error::EngineError;
use crate::eval::cross_entropy;
use crate::models::forward::{self, ForwardCtx, Params};
use crate::models::ModelSpec;
use crate::weights::Weights;

/// How the step computes.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    pub lora_scale: f32,
    /// LoRA dropout probability.
    pub dropout: f32,
    /// Compute dtype (trainable arrays stay in f32 and are cast to it).
    pub compute: Dtype,
    /// Gradient checkpointing of the first this many decoder layers (0: none).
    pub checkpoint_layers: usize,
    /// Of the other layers, recompute the MLP of those before this index (0: none).
    pub checkpoint_mlps: usize,
    /// Recompute the values of every layer that cost no matrix product (norms' outputs, the
    /// convolution's, the MLP's activation) instead of keeping them.
    pub lean: bool,
    /// Output layer + cross-entropy in chunks of [`LOSS_CHUNK_TOKENS`] whose gradients are
    /// computed in the forward pass (only one chunk's logits in memory).
    pub chunked_loss: bool,
    /// Packed rows: how far before its first query each block of the attention's queries
    /// starts its keys (None: at 0). The [`Stepper`](super::stepper::Stepper) sets it per
    /// batch, with one function per value.
    pub attention_reach: Option<i32>,
    /// Return the decoder layers' gradients in the compute dtype ([`cast_once`]) instead of
    /// the trainable arrays' f32: the same numbers, without a cast pass per array.
    pub layer_grads_in_compute: bool,
}

/// Whether a trainable array is used once in a step's graph, so that its gradient is one
/// product's (or kernel's) output in the compute dtype, which a cast to f32 only copies:
/// a decoder layer's weight, norm or adapter. The output layer's weight (the embedding
/// where tied, and in every loss chunk) sums several contributions, which stay in f32.
pub fn cast_once(name: &str) -> bool {
    name.starts_with("model.layers.")
}

/// Whether a step chunks its loss unless told: on a GPU (an LFM2-1.2B LoRA step on an H200
/// holds 3 GiB less and runs 1% faster: docs/benchmarks.md), and with gradient checkpointing
/// (where the full logits would be most of the peak). On the CPU, without checkpointing, the
/// single output-layer product is faster.
pub fn default_chunked_loss(checkpointing: bool) -> bool {
    checkpointing || crate::runtime::current_device() == "gpu"
}

/// Tokens per chunk of the chunked output layer + cross-entropy.
pub const LOSS_CHUNK_TOKENS: i32 = 2048;

/// Tokens per loss chunk where a checkpointed step keeps some layers' values: their peak
/// comes at the loss, while those values are all alive (an H200, LFM2-1.2B, 8 × 2048, 10 of
/// 16 layers recomputed: 1.46 GiB less for 0.5% of the speed; docs/benchmarks.md, eleventh
/// round). Where every layer is recomputed, the smaller chunk saves nothing.
pub const LEAN_LOSS_CHUNK_TOKENS: i32 = 512;

/// The loss chunk of a step of `layers` decoder layers: `MLXTUNE_LOSS_CHUNK_TOKENS` (for
/// comparisons, read once), else [`LEAN_LOSS_CHUNK_TOKENS`] where the step is checkpointed
/// and keeps some layers, else [`LOSS_CHUNK_TOKENS`].
pub fn loss_chunk_tokens(opts: &StepOptions, layers: usize) -> i32 {
    static N: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    let asked = N.get_or_init(|| {
        std::env::var("MLXTUNE_LOSS_CHUNK_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    });
    let checkpointed = opts.lean || opts.checkpoint_layers > 0 || opts.checkpoint_mlps > 0;
    match asked {
        Some(n) => *n,
        None if checkpointed && opts.checkpoint_layers < layers => LEAN_LOSS_CHUNK_TOKENS,
        None => LOSS_CHUNK_TOKENS,
    }
}

/// Σ mask · CE(lm_head(hidden), targets), computed `chunk` tokens at a time with its
/// gradients ([`chunked_sum`](crate::models::chunked_sum::chunked_sum)): only one chunk's
/// `[chunk, vocab]` logits exist at a time, and none is kept or recomputed.
pub fn chunked_loss_sum(
    spec: &ModelSpec,
    p: &Params,
    hidden: &Array,
    targets: &Array,
    mask: &Array,
    chunk: i32,
) -> crate::error::Result<Array> {
    use mlx_rs::ops::indexing::IndexOp;
    let h = hidden.dim(-1);
    let n = hidden.dim(0) * hidden.dim(1);
    let hidden = hidden.reshape(&[n, h])?;
    let targets = targets.reshape(&[n])?;
    let mask = mask.reshape(&[n])?;
    // The output layer's trainable arrays (full fine-tuning) are inputs, so that they get
    // gradients; frozen ones are captured.
    let head = if spec.tie_embeddings {
        "model.embed_tokens."
    } else {
        "lm_head."
    };
    let forward::PrefixParams {
        base,
        names,
        trainable,
    } = p.split_prefix(head);
    let (lora_scale, compute_dtype) = (p.lora_scale, p.compute_dtype);
    if n == 0 {
        return Err(EngineError::invalid("batch", "is empty"));
    }
    let rows: Vec<(i32, i32)> = (0..n)
        .step_by(chunk as usize)
        .map(|start| (start, (start + chunk).min(n)))
        .collect();
    // Targets (integer indices) and the mask need no gradient: captured, not inputs.
    let (spec, bounds) = (spec.clone(), rows.clone());
    let f = move |k: usize, args: &[Array]| -> crate::error::Result<Array> {
        let over = forward::named(&names, &args[1..]);
        let p = Params {
            base: &base,
            over: Some(&over),
            lora_scale,
            compute_dtype,
            dropout: None,
        };
        let (start, end) = bounds[k];
        let tgt = targets.index(start..end).expand_dims(0)?;
        let logits = forward::lm_head(&spec, &p, &args[0].expand_dims(0)?)?;
        let ce = cross_entropy(&logits, &tgt)?;
        Ok(ce
            .squeeze_axes(&[0])?
            .multiply(mask.index(start..end))?
            .sum(None)?)
    };
    let mut inputs = vec![hidden];
    inputs.extend(trainable);
    crate::models::chunked_sum::chunked_sum(Box::new(f), rows, &inputs)
}

fn to_exc(e: EngineError) -> Exception {
    Exception::custom(e.to_string())
}

/// Returns `f(args) -> ([loss_sum · scale], grads)` where `args` are the trainable arrays
/// (in `names` order) followed by inputs, targets, mask, the loss scale and, for packed
/// rows, the segment ids. `dropout_seed` is read at each call.
pub fn loss_and_grad<'a>(
    spec: &ModelSpec,
    base: Weights,
    names: Vec<String>,
    opts: StepOptions,
    dropout_seed: Rc<Cell<u64>>,
    argnums: &'a [i32],
) -> impl FnMut(&[Array]) -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)> + 'a {
    let spec = spec.clone();
    let n = names.len();
    // Arrays cast before the gradient is taken give their gradient in the compute dtype.
    let before: Vec<bool> = names
        .iter()
        .map(|name| opts.layer_grads_in_compute && cast_once(name))
        .collect();
    let loss_fn = move |args: &[Array]| -> Result<Vec<Array>, Exception> {
        let over: Weights = names
            .iter()
            .cloned()
            .zip(args[..n].iter().cloned())
            .collect();
        let p = Params {
            base: &base,
            over: Some(&over),
            lora_scale: opts.lora_scale,
            compute_dtype: Some(opts.compute),
            dropout: (opts.dropout > 0.0).then(|| (opts.dropout, dropout_seed.get())),
        };
        let (inputs, targets, mask, scale) = (&args[n], &args[n + 1], &args[n + 2], &args[n + 3]);
        let ctx = ForwardCtx {
            cache: None,
            segments: args.get(n + 4),
            attention_reach: opts.attention_reach,
            checkpoint_layers: opts.checkpoint_layers,
            checkpoint_mlps: opts.checkpoint_mlps,
            lean: opts.lean,
        };
        let loss_sum = if opts.chunked_loss {
            let hidden = forward::forward_hidden(&spec, &p, inputs, ctx).map_err(to_exc)?;
            let chunk = loss_chunk_tokens(&opts, spec.num_layers());
            chunked_loss_sum(&spec, &p, &hidden, targets, mask, chunk).map_err(to_exc)?
        } else {
            let logits = forward::forward(&spec, &p, inputs, ctx).map_err(to_exc)?;
            let ce = cross_entropy(&logits, targets).map_err(to_exc)?;
            ce.multiply(mask)?.sum(None)?
        };
        Ok(vec![loss_sum.multiply(scale)?])
    };
    let mut grad = value_and_grad_with_argnums(loss_fn, argnums);
    move |args: &[Array]| {
        let cast: Vec<Array> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match before.get(i) {
                Some(true) => forward::in_compute_dtype(a, opts.compute).map_err(to_exc),
                _ => Ok(a.clone()),
            })
            .collect::<std::result::Result<_, _>>()?;
        grad(&cast)
    }
}

/// [`loss_and_grad`] through MLX `compile` (fused kernels; one compilation per input
/// shape). Only without dropout: its masks would be frozen into the compiled graph.
pub fn compiled_loss_and_grad(
    spec: &ModelSpec,
    base: Weights,
    names: Vec<String>,
    opts: StepOptions,
) -> crate::error::Result<impl FnMut(&[Array]) -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)>> {
    if opts.dropout > 0.0 {
        return Err(EngineError::invalid(
            "compile",
            "a compiled step cannot use LoRA dropout",
        ));
    }
    // Leaked once per run: compile needs a 'static function.
    let argnums: &'static [i32] = Vec::leak((0..names.len() as i32).collect());
    let mut plain = loss_and_grad(spec, base, names, opts, Rc::new(Cell::new(0)), argnums);
    let mut compiled = mlx_rs::transforms::compile::compile(
        move |args: &[Array]| -> Result<Vec<Array>, Exception> {
            let (mut v, g) = plain(args)?;
            v.extend(g);
            Ok(v)
        },
        false,
    );
    Ok(
        move |args: &[Array]| -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)> {
            let mut out = compiled(args)?;
            let g = out.split_off(1);
            Ok((out, g))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(checkpoint_layers: usize, checkpoint_mlps: usize, lean: bool) -> StepOptions {
        StepOptions {
            lora_scale: 1.0,
            dropout: 0.0,
            compute: Dtype::Float32,
            checkpoint_layers,
            checkpoint_mlps,
            lean,
            chunked_loss: true,
            attention_reach: None,
            layer_grads_in_compute: true,
        }
    }

    #[test]
    fn a_checkpointed_step_that_keeps_layers_takes_smaller_loss_chunks() {
        let chunk = |o: StepOptions| loss_chunk_tokens(&o, 16);
        assert_eq!(chunk(opts(0, 0, false)), LOSS_CHUNK_TOKENS);
        assert_eq!(chunk(opts(usize::MAX, 0, true)), LOSS_CHUNK_TOKENS);
        assert_eq!(chunk(opts(16, 0, true)), LOSS_CHUNK_TOKENS);
        assert_eq!(chunk(opts(10, 0, true)), LEAN_LOSS_CHUNK_TOKENS);
        assert_eq!(chunk(opts(0, 16, true)), LEAN_LOSS_CHUNK_TOKENS);
        assert_eq!(chunk(opts(0, 0, true)), LEAN_LOSS_CHUNK_TOKENS);
    }
}
