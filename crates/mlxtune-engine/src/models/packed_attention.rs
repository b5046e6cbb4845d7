//! Attention for packed rows (several examples per row) without a full-square mask.
//!
//! MLX's fused attention takes a causal flag or an array mask, not both, and hands the
//! mask to cuDNN as a bias over every query-key pair: a packed row then pays the whole
//! `T × T` square where causal rows pay half (issue 14: −6% per step at 8 × 2048). Here
//! the queries are cut into blocks of `block` positions; block `i` attends only to the
//! keys that can be in its queries' examples: up to its own end, and from `reach`
//! positions before its first query (the batch's longest way back to an example's start,
//! [`Segments::reach`](crate::data::segments::Segments::reach)), or from 0 without a
//! reach. With examples of `L` positions that is about `T · (block + L)` pairs instead of
//! `T²`; each query still sees exactly its example's earlier positions, so values and
//! gradients equal the full-square call's (`tests/kernels.rs`, against each example
//! attended alone).

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

/// One query block: its positions `start..end`, and its additive mask `[B, 1, len,
/// end - keys]` over the keys `keys..end` (0 where the key is in the query's example and
/// not after it, else -inf).
#[derive(Clone)]
struct Block {
    start: i32,
    end: i32,
    keys: i32,
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
    /// `block` query positions per block (0 or ≥ T: a single block) whose keys start
    /// `reach` positions before the block (a multiple of `block`; None: at 0).
    pub fn new(segments: &Array, block: i32, reach: Option<i32>, dtype: Dtype) -> Result<Self> {
        let t = segments.dim(1);
        let step = if block <= 0 { t } else { block.min(t) };
        if let Some(r) = reach.filter(|r| *r < 0 || r % step != 0) {
            return Err(EngineError::invalid(
                "attention reach",
                format!("{r} is not a multiple of the query block ({step})"),
            ));
        }
        let zero = Array::from_f32(0.0).as_dtype(dtype)?;
        let neg = Array::from_f32(f32::NEG_INFINITY).as_dtype(dtype)?;
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < t {
            let end = (start + step).min(t);
            let keys = reach.map_or(0, |r| (start - r).max(0));
            let same = segments
                .index((.., start..end))
                .expand_dims(2)?
                .eq(segments.index((.., keys..end)).expand_dims(1)?)?;
            let q_pos = arange::<_, i32>(start, end, None)?;
            let k_pos = arange::<_, i32>(keys, end, None)?;
            let causal = q_pos.expand_dims(1)?.ge(k_pos.expand_dims(0)?)?;
            let keep = same.logical_and(&causal)?.expand_dims(1)?;
            let mask = select(&keep, &zero, &neg)?;
            blocks.push(Block {
                start,
                end,
                keys,
                mask,
            });
            start = end;
        }
        Ok(PackedMasks { blocks })
    }

    /// Attention of `q` `[B, H, T, D]` over `k`, `v` `[B, Hkv, T, D]`, returned as
    /// `[B, T, H, D]` (the caller flattens the heads).
    ///
    /// The queries are split into the blocks (MLX's `Split`, whose gradient is one
    /// concatenation); each block's keys and values are a window of `k` and `v`
    /// ([`windows`]), views whose gradients are summed once per key block. A plain slice
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
        let ranges: Vec<(i32, i32)> = self.blocks.iter().map(|b| (b.keys, b.end)).collect();
        let qs = q.split_at_indices(&cuts, 2)?;
        let (ks, vs) = (windows(k, &ranges)?, windows(v, &ranges)?);
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

/// `x[.., .., s..e, ..]` for each of the `ranges` (the ends increasing, the last one `x`'s
/// length along axis 2; each start 0 or an earlier range's end), as views. Backward pass:
/// the gradient of each block of positions between consecutive ends is the sum of that
/// block in every window holding it, then the blocks are concatenated: each cotangent is
/// read once and `x`'s gradient written once.
fn windows(x: &Array, ranges: &[(i32, i32)]) -> Result<Vec<Array>> {
    let fwd = ranges.to_vec();
    let forward: Forward = Box::new(move |a: &[Array]| -> Result<Vec<Array>> {
        Ok(fwd
            .iter()
            .map(|&(s, e)| a[0].index((.., .., s..e, ..)))
            .collect())
    });
    let bwd = ranges.to_vec();
    let backward: Backward = Box::new(move |_, cot: &[Array], _| -> Result<Vec<Array>> {
        let mut blocks = Vec::with_capacity(bwd.len());
        let mut from = 0;
        for &(_, to) in &bwd {
            let mut sum: Option<Array> = None;
            for (c, &(s, e)) in cot.iter().zip(&bwd) {
                if s <= from && to <= e {
                    let part = c.index((.., .., from - s..to - s, ..));
                    sum = Some(match sum {
                        None => part,
                        Some(acc) => acc.add(part)?,
                    });
                }
            }
            blocks.push(sum.ok_or_else(|| {
                EngineError::Mlx(format!("no attention window holds keys {from}..{to}"))
            })?);
            from = to;
        }
        Ok(vec![concatenate(&blocks, 2)?])
    });
    custom_vjp(forward, backward, std::slice::from_ref(x))
}

/// The reach a [`PackedMasks`] of `t` positions in blocks of `block` is built with, for a
/// batch that needs `needed` ([`Segments::reach`](crate::data::segments::Segments::reach)):
/// None where every block's keys would start at 0 anyway (one full square, or a reach past
/// the last block's start), so that equal attentions get one compiled step.
pub fn reach_for(t: i32, block: i32, needed: i32) -> Option<i32> {
    let last_start = match block {
        b if b <= 0 || b >= t => return None,
        b => (t - 1) / b * b,
    };
    (needed < last_start).then_some(needed)
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
    fn a_reach_that_starts_every_block_at_zero_is_none() {
        assert_eq!(reach_for(2048, 256, 256), Some(256));
        assert_eq!(reach_for(2048, 256, 1536), Some(1536));
        assert_eq!(reach_for(2048, 256, 1792), None);
        assert_eq!(reach_for(2048, 0, 256), None);
        assert_eq!(reach_for(2048, 2048, 0), None);
        assert_eq!(reach_for(2049, 256, 1792), Some(1792));
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
