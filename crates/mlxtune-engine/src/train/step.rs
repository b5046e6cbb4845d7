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
    /// Gradient checkpointing per layer.
    pub checkpoint: bool,
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
            checkpoint: opts.checkpoint,
        };
        let logits = forward::forward(&spec, &p, inputs, ctx).map_err(to_exc)?;
        let ce = cross_entropy(&logits, targets).map_err(to_exc)?;
        Ok(vec![ce.multiply(mask)?.sum(None)?.multiply(scale)?])
    };
    value_and_grad_with_argnums(loss_fn, argnums)
}
