//! Attention for packed rows (several examples per row) without a full-square mask.
//!
//! MLX's fused attention takes a causal flag or an array mask, not both, and hands the
//! mask to cuDNN as a bias over every query-key pair: a packed row then pays the whole
//! `T × T` square where causal rows pay half (issue 14: −6% per step at 8 × 2048). Here
//! the queries are cut into blocks of `block` positions; block `i` attends only to the
//! keys up to its own end, `0..(i+1)·block`, with its own mask slice (same example and
//! causal). The work is `T²/2 · (1 + block/T)` instead of `T²`; each query still sees
//! exactly its example's earlier positions, so values and gradients equal the
//! full-square call's (`tests/kernels.rs`, against each example attended alone).

use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{arange, concatenate, select};
use mlx_rs::{Array, Dtype};

use crate::error::{EngineError, Result};
use crate::kernels::vjp::{custom_vjp, Backward, Forward};

/// The fewest query positions per block by default.
const MIN_BLOCK: i32 = 256;
/// The most blocks a row is cut into by default.
const MAX_BLOCKS: i32 = 8;

/// The query block size for rows of `t` positions: `MLXTUNE_PACKED_ATTENTION_BLOCK` when
/// set (0: one call over the whole row, the full-square mask), else `t / 8` and at least
/// 256. On the H200 at 2,048 positions, 8 blocks of 256 and 4 of 512 ran level, 16 of 128
/// about 8% slower (more calls, each on fewer queries): docs/benchmarks.md, sixth round.
pub fn block_for(t: i32) -> Result<i32> {
    match std::env::var(BLOCK_VAR) {
        Ok(v) => parse_block(&v),
        Err(_) => Ok(default_block(t)),
    }
}

const BLOCK_VAR: &str = "MLXTUNE_PACKED_ATTENTION_BLOCK";

fn default_block(t: i32) -> i32 {
    MIN_BLOCK.max((t + MAX_BLOCKS - 1) / MAX_BLOCKS)
}

fn parse_block(v: &str) -> Result<i32> {
    v.parse::<i32>()
        .ok()
        .filter(|b| *b >= 0)
        .ok_or_else(|| EngineError::Invalid {
            field: BLOCK_VAR.into(),
            message: format!("{v:?} is not a block size in positions (0 or more)"),
        })
}

/// One query block: its positions and its additive mask `[B, 1, len, end]` over the keys
/// `0..end` (0 where the key is in the query's example and not after it, else -inf).
#[derive(Clone)]
struct Block {
    start: i32,
    end: i32,
    mask: Array,
}

/// The masks of packed rows' attention, made once per forward pass and shared by every
/// attention layer.
#[derive(Clone)]
pub struct PackedMasks {
    blocks: Vec<Block>,
}

impl PackedMasks {
    /// Masks for the example ids `segments` `[B, T]` (int32), in the compute `dtype`, with
    /// `block` query positions per block (0 or ≥ T: a single block).
    pub fn new(segments: &Array, block: i32, dtype: Dtype) -> Result<Self> {
        let t = segments.dim(1);
        let step = if block <= 0 { t } else { block.min(t) };
        let zero = Array::from_f32(0.0).as_dtype(dtype)?;
        let neg = Array::from_f32(f32::NEG_INFINITY).as_dtype(dtype)?;
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < t {
            let end = (start + step).min(t);
            let same = segments
                .index((.., start..end))
                .expand_dims(2)?
                .eq(segments.index((.., 0..end)).expand_dims(1)?)?;
            let q_pos = arange::<_, i32>(start, end, None)?;
            let k_pos = arange::<_, i32>(None, end, None)?;
            let causal = q_pos.expand_dims(1)?.ge(k_pos.expand_dims(0)?)?;
            let keep = same.logical_and(&causal)?.expand_dims(1)?;
            let mask = select(&keep, &zero, &neg)?;
            blocks.push(Block { start, end, mask });
            start = end;
        }
        Ok(PackedMasks { blocks })
    }

    /// Attention of `q` `[B, H, T, D]` over `k`, `v` `[B, Hkv, T, D]`, returned as
    /// `[B, T, H, D]` (the caller flattens the heads).
    ///
    /// The queries are split into the blocks (MLX's `Split`, whose gradient is one
    /// concatenation); each block's keys and values are a prefix of `k` and `v`
    /// ([`prefixes`]), views whose gradients are summed once per key block. A plain slice
    /// would give each block a full-size zero gradient to scatter into, and concatenating
    /// key blocks copies them in every layer: measured on the H200, both cost more than
    /// the attention they saved.
    pub fn attend(&self, q: &Array, k: &Array, v: &Array, scale: f32) -> Result<Array> {
        if let [b] = self.blocks.as_slice() {
            let mask = ScaledDotProductAttentionMask::Array(&b.mask);
            let o = fast::scaled_dot_product_attention(q, k, v, scale, mask, None)?;
            return Ok(o.transpose_axes(&[0, 2, 1, 3])?);
        }
        let cuts: Vec<i32> = self.blocks[1..].iter().map(|b| b.start).collect();
        let ends: Vec<i32> = self.blocks.iter().map(|b| b.end).collect();
        let qs = q.split_at_indices(&cuts, 2)?;
        let (ks, vs) = (prefixes(k, &ends)?, prefixes(v, &ends)?);
        let mut outs = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let mask = ScaledDotProductAttentionMask::Array(&b.mask);
            let o = fast::scaled_dot_product_attention(&qs[i], &ks[i], &vs[i], scale, mask, None)?;
            outs.push(o.transpose_axes(&[0, 2, 1, 3])?);
        }
        Ok(concatenate(&outs, 1)?)
    }

    /// How many attention calls a layer makes (1: the full-square mask).
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// `x[.., .., ..e, ..]` for each of the increasing `ends` (the last one `x`'s length along
/// axis 2), as views. Backward pass: the gradient of the positions `s..e` of each block is
/// the sum of that range in every prefix reaching it, then the blocks are concatenated:
/// each cotangent is read once and `x`'s gradient written once.
fn prefixes(x: &Array, ends: &[i32]) -> Result<Vec<Array>> {
    let ends_f = ends.to_vec();
    let forward: Forward = Box::new(move |a: &[Array]| -> Result<Vec<Array>> {
        Ok(ends_f
            .iter()
            .map(|&e| a[0].index((.., .., 0..e, ..)))
            .collect())
    });
    let ends_b = ends.to_vec();
    let backward: Backward = Box::new(move |_, cot: &[Array], _| -> Result<Vec<Array>> {
        let mut blocks = Vec::with_capacity(ends_b.len());
        let mut start = 0;
        for (j, &e) in ends_b.iter().enumerate() {
            let mut sum = cot[j].index((.., .., start..e, ..));
            for c in &cot[j + 1..] {
                sum = sum.add(c.index((.., .., start..e, ..)))?;
            }
            blocks.push(sum);
            start = e;
        }
        Ok(vec![concatenate(&blocks, 2)?])
    });
    custom_vjp(forward, backward, std::slice::from_ref(x))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rows_are_cut_into_at_most_eight_blocks_of_at_least_256() {
        let blocks: Vec<i32> = [100, 256, 2048, 2049, 4096, 8192]
            .into_iter()
            .map(default_block)
            .collect();
        assert_eq!(blocks, [256, 256, 256, 257, 512, 1024]);
    }

    #[test]
    fn a_block_size_that_is_not_a_count_is_an_error_naming_the_variable() {
        assert_eq!(parse_block("0").unwrap(), 0);
        assert_eq!(parse_block("512").unwrap(), 512);
        for bad in ["-1", "big", ""] {
            let e = parse_block(bad).unwrap_err().to_string();
            assert!(e.starts_with("MLXTUNE_PACKED_ATTENTION_BLOCK:"), "{e}");
        }
    }
}
