//! Where llama.cpp's tensor layouts differ from the checkpoint's: llama's q/k rows are
//! permuted from rotate-half pairs to interleaved pairs; LFM2's conv kernel `[h, 1, L]` is
//! stored as `[h, L]`. Each change has its inverse for import.

use mlx_rs::Array;

use super::names::permutes_qk;
use crate::error::Result;
use crate::models::ModelSpec;

/// Heads of a q or k tensor whose rows llama.cpp stores interleaved.
fn permuted_heads(spec: &ModelSpec, gguf: &str) -> Option<i32> {
    if !permutes_qk(spec) {
        return None;
    }
    let part = gguf.rsplit('.').nth(1)?;
    match part {
        "attn_q" => Some(spec.num_heads),
        "attn_k" => Some(spec.num_kv_heads),
        _ => None,
    }
}

/// Reorders the rows of each head: `[heads, a, b, rest] → [heads, b, a, rest]`.
fn swap_row_halves(x: &Array, heads: i32, a: i32, b: i32) -> Result<Array> {
    let shape = x.shape().to_vec();
    let rest = &shape[1..];
    let mut split = vec![heads, a, b];
    split.extend_from_slice(rest);
    let mut axes: Vec<i32> = vec![0, 2, 1];
    axes.extend((3..split.len() as i32).collect::<Vec<_>>());
    Ok(x.reshape(&split)?.transpose_axes(&axes)?.reshape(&shape)?)
}

/// The checkpoint array `x` in llama.cpp's layout for the tensor named `gguf`.
pub fn to_gguf(spec: &ModelSpec, gguf: &str, x: &Array) -> Result<Array> {
    if let Some(heads) = permuted_heads(spec, gguf) {
        let half = x.dim(0) / heads / 2;
        return swap_row_halves(x, heads, 2, half);
    }
    if gguf.contains("shortconv.conv.") && x.ndim() == 3 {
        return Ok(x.reshape(&[x.dim(0), x.dim(2)])?);
    }
    Ok(x.clone())
}

/// The inverse of [`to_gguf`]: a GGUF tensor back in the checkpoint's layout.
pub fn from_gguf(spec: &ModelSpec, gguf: &str, x: &Array) -> Result<Array> {
    if let Some(heads) = permuted_heads(spec, gguf) {
        let half = x.dim(0) / heads / 2;
        return swap_row_halves(x, heads, half, 2);
    }
    if gguf.contains("shortconv.conv.") && x.ndim() == 2 {
        return Ok(x.reshape(&[x.dim(0), 1, x.dim(1)])?);
    }
    Ok(x.clone())
}
