//! Evaluation: token-weighted next-token cross-entropy, perplexity and token accuracy.

use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{Array, Dtype};
use serde::Serialize;

use crate::data::batch::{make_batch, TrainBatch};
use crate::data::Example;
use crate::error::{EngineError, Result};
use crate::models::forward::{self, ForwardCtx, Params};
use crate::models::ModelSpec;

/// Evaluation figures over a set of examples.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy (nats) over the predicted positions.
    pub loss: f64,
    pub perplexity: f64,
    /// Share of predicted positions whose argmax is the target.
    pub token_accuracy: f64,
    /// Number of predicted positions.
    pub tokens: u64,
}

/// Per-position cross-entropy `[B, T]` (float32) of `logits` `[B, T, V]` against `targets`.
/// On a CUDA GPU this is MLX's fused kernel ([`cross_entropy_fused`]: the logits are never
/// upcast to float32 in the graph, and the gradient is one kernel); elsewhere the same
/// figure from upcast logits ([`cross_entropy_reference`]).
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    if fused_cross_entropy_available() {
        cross_entropy_fused(logits, targets)
    } else {
        cross_entropy_reference(logits, targets)
    }
}

static FUSED_CE_DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the fused cross-entropy off (or back on) for this process; for benchmarks that
/// measure what it buys.
pub fn set_fused_cross_entropy(enabled: bool) {
    FUSED_CE_DISABLED.store(!enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`cross_entropy`] uses MLX's fused kernel: the CUDA backend with the GPU as the
/// default device (MLX has no CPU kernel for it, and mlx-lm uses it only on CUDA too).
pub fn fused_cross_entropy_available() -> bool {
    !FUSED_CE_DISABLED.load(std::sync::atomic::Ordering::Relaxed)
        && crate::runtime::backend() == "cuda"
        && mlx_rs::Device::try_default()
            .and_then(|d| d.get_type())
            .is_ok_and(|t| matches!(t, mlx_rs::DeviceType::Gpu))
}

/// `logsumexp(logits) - logits[target]` over upcast float32 logits.
pub fn cross_entropy_reference(logits: &Array, targets: &Array) -> Result<Array> {
    let logits = if logits.dtype() == Dtype::Float32 {
        logits.clone()
    } else {
        logits.as_dtype(Dtype::Float32)?
    };
    let lse = logits.logsumexp_axis(-1, false)?;
    let picked = logits
        .take_along_axis(targets.expand_dims(-1)?, -1)?
        .squeeze_axes(&[-1])?;
    Ok(lse.subtract(&picked)?)
}

/// MLX's `fast::cross_entropy` (float32 loss per position; on a CPU stream MLX computes it
/// with its own composed fallback).
pub fn cross_entropy_fused(logits: &Array, targets: &Array) -> Result<Array> {
    crate::runtime::init()?;
    let stream = mlx_rs::Stream::new();
    let targets = if targets.dtype() == Dtype::Int32 {
        targets.clone()
    } else {
        targets.as_dtype(Dtype::Int32)?
    };
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        if mlx_sys::mlx_fast_cross_entropy(
            &mut res,
            logits.as_ptr(),
            targets.as_ptr(),
            stream.as_ptr(),
        ) != 0
        {
            mlx_sys::mlx_array_free(res);
            return Err(EngineError::Mlx(
                "fast cross-entropy failed (see the MLX error above)".into(),
            ));
        }
        Ok(Array::from_ptr(res))
    }
}

/// Sums of loss and of correct predictions over a batch's masked positions.
pub fn batch_sums(spec: &ModelSpec, p: &Params, batch: &TrainBatch) -> Result<(f64, f64)> {
    let logits = forward::forward(spec, p, &batch.inputs, ForwardCtx::default())?;
    let ce = cross_entropy(&logits, &batch.targets)?;
    let loss_sum = ce.multiply(&batch.mask)?.sum(None)?;
    let pred = argmax_axis(&logits, -1, false)?;
    let correct = pred
        .eq(&batch.targets)?
        .as_dtype(Dtype::Float32)?
        .multiply(&batch.mask)?
        .sum(None)?;
    mlx_rs::transforms::eval([&loss_sum, &correct])?;
    Ok((
        loss_sum.item_cast::<f32>() as f64,
        correct.item_cast::<f32>() as f64,
    ))
}

/// Evaluates `examples` in length-sorted batches of `batch_size`.
pub fn evaluate(
    spec: &ModelSpec,
    p: &Params,
    examples: &[Example],
    batch_size: usize,
) -> Result<EvalResult> {
    if batch_size == 0 {
        return Err(EngineError::invalid("batch_size", "must be at least 1"));
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|i| examples[*i].ids.len());
    let (mut loss, mut correct, mut tokens) = (0f64, 0f64, 0u64);
    for chunk in order.chunks(batch_size) {
        let rows: Vec<Vec<usize>> = chunk.iter().map(|i| vec![*i]).collect();
        let batch = make_batch(examples, &rows, false, 1);
        if batch.loss_tokens == 0 {
            continue;
        }
        let (l, c) = batch_sums(spec, p, &batch)?;
        loss += l;
        correct += c;
        tokens += batch.loss_tokens;
    }
    if tokens == 0 {
        return Err(EngineError::invalid(
            "data",
            "no position counts in the loss",
        ));
    }
    let mean = loss / tokens as f64;
    Ok(EvalResult {
        loss: mean,
        perplexity: mean.exp(),
        token_accuracy: correct / tokens as f64,
        tokens,
    })
}

/// Logits of the last position of each row, for callers that only need that.
pub fn last_position(logits: &Array) -> Array {
    let t = logits.dim(1);
    logits.index((.., t - 1, ..))
}
