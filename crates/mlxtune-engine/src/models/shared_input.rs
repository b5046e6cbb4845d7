//! Linear layers that read the same input (attention's q, k and v; the MLP's gate and
//! up): their LoRA products `x·A` are one product over the `A` matrices side by side.
//!
//! Each `x·A` is a skinny product (`r` = 16 columns) bound by reading `x`; so is its
//! backward pair `xᵀ·d(xA)` and `d(xA)·Aᵀ`. Side by side, `x` is read once instead of once
//! per layer in each of the three, and `x`'s gradient gets one LoRA term instead of one per
//! layer. The base products stay apart (their weights are not concatenated: that would
//! copy them every step).

use mlx_rs::ops::{self, concatenate};
use mlx_rs::Array;

use super::forward::{base_product, linear, lora_add, with_bias, Params};
use crate::error::Result;

/// [`linear`] of each layer at `prefixes` on `x`, with one `x·A` product where `share` is
/// set and every layer is a plain LoRA layer (no DoRA, no dropout); otherwise each layer
/// on its own.
pub fn linears(p: &Params, prefixes: &[String], x: &Array, share: bool) -> Result<Vec<Array>> {
    let pairs = match share {
        true => plain_lora(p, prefixes)?,
        false => None,
    };
    let Some(pairs) = pairs else {
        return prefixes.iter().map(|q| linear(p, q, x)).collect();
    };
    let rows: i32 = x.shape()[..x.ndim() - 1].iter().product();
    let a: Vec<&Array> = pairs.iter().map(|(a, _)| a).collect();
    let xa = ops::matmul(x.reshape(&[rows, x.dim(-1)])?, concatenate(&a, 1)?)?;
    let cuts: Vec<i32> = pairs
        .iter()
        .scan(0, |at, (a, _)| {
            *at += a.dim(1);
            Some(*at)
        })
        .take(pairs.len() - 1)
        .collect();
    let parts = xa.split_at_indices(&cuts, 1)?;
    let mut out = Vec::with_capacity(prefixes.len());
    for ((q, part), (_, b)) in prefixes.iter().zip(&parts).zip(&pairs) {
        let y = base_product(p, q, x)?;
        let scale = Array::from_f32(p.lora_scale).as_dtype(y.dtype())?;
        let y = lora_add(&y, part, &b.multiply(&scale)?)?;
        out.push(with_bias(p, q, y)?);
    }
    Ok(out)
}

/// Whether layers on one input share their `x·A` product: yes unless
/// `MLXTUNE_SHARED_LORA_INPUT=0` (for comparisons), read once per process.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLXTUNE_SHARED_LORA_INPUT").map_or(true, |v| v != "0"))
}

/// The `(A, B)` of each layer when all are plain LoRA layers, more than one.
fn plain_lora(p: &Params, prefixes: &[String]) -> Result<Option<Vec<(Array, Array)>>> {
    let dropout = p.dropout.is_some_and(|(rate, _)| rate > 0.0);
    if prefixes.len() < 2 || dropout || !enabled() {
        return Ok(None);
    }
    let mut pairs = Vec::with_capacity(prefixes.len());
    for q in prefixes {
        let a = p.get(&format!("{q}.lora_a"))?;
        if a.is_none() || p.has(&format!("{q}.magnitude")) {
            return Ok(None);
        }
        pairs.extend(a.map(|a| (a, p.req(&format!("{q}.lora_b")))));
    }
    pairs
        .into_iter()
        .map(|(a, b)| Ok((a, b?)))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
