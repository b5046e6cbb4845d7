//! Decoding state: keys and values of attention layers, the last `L-1` inputs of LFM2's
//! short convolutions, and the number of positions seen.

use mlx_rs::ops::concatenate;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;

use super::spec::{LayerKind, ModelSpec};
use crate::error::Result;

/// One layer's state.
#[derive(Debug, Clone)]
pub enum LayerCache {
    /// Keys and values `[B, kv_heads, T, head_dim]` of an attention layer.
    Kv {
        keys: Option<Array>,
        values: Option<Array>,
    },
    /// The last `L-1` gated inputs `[B, L-1, hidden]` of a convolution layer.
    Conv { state: Option<Array> },
}

/// The whole model's decoding state.
#[derive(Debug, Clone)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
    /// Positions already processed (the RoPE offset of the next token).
    pub offset: i32,
}

impl Cache {
    /// An empty cache shaped for `spec`.
    pub fn new(spec: &ModelSpec) -> Self {
        Cache {
            layers: spec
                .layers
                .iter()
                .map(|k| match k {
                    LayerKind::Attention => LayerCache::Kv {
                        keys: None,
                        values: None,
                    },
                    LayerKind::Conv => LayerCache::Conv { state: None },
                })
                .collect(),
            offset: 0,
        }
    }

    /// Every array held, for evaluation.
    pub fn arrays(&self) -> Vec<&Array> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                LayerCache::Kv { keys, values } => {
                    out.extend(keys.iter());
                    out.extend(values.iter());
                }
                LayerCache::Conv { state } => out.extend(state.iter()),
            }
        }
        out
    }
}

/// Appends new keys and values along the time axis and returns the full ones.
pub(crate) fn kv_update(
    keys: &mut Option<Array>,
    values: &mut Option<Array>,
    k: Array,
    v: Array,
) -> Result<(Array, Array)> {
    let (k, v) = match (keys.take(), values.take()) {
        (Some(pk), Some(pv)) => (concatenate(&[pk, k], 2)?, concatenate(&[pv, v], 2)?),
        _ => (k, v),
    };
    *keys = Some(k.clone());
    *values = Some(v.clone());
    Ok((k, v))
}

/// Keeps the last `n` positions (axis 1) of a convolution input as the next state.
pub(crate) fn conv_tail(xp: &Array, n: i32) -> Array {
    let t = xp.dim(1);
    xp.index((.., (t - n)..t, ..))
}
