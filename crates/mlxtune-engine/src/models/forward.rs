//! The decoder's forward pass, shared by every architecture: each family differs only in
//! its [`ModelSpec`] (names, biases, norms, layer kinds). Each layer is a [`Layer`].
//!
//! Parameters are looked up by checkpoint name through [`Params`], which layers trainable
//! arrays (adapters, or weights being fine-tuned) over the frozen base weights. A linear
//! layer is dense (`.weight`), MLX-affine-quantized (`.weight` packed + `.scales` +
//! `.biases`), and may carry a LoRA adapter (`.lora_a`, `.lora_b`).

use mlx_rs::fast;
use mlx_rs::ops::{self, dequantize, quantized_matmul};
use mlx_rs::{Array, Dtype};

use super::cache::Cache;
use super::layer::{checkpointed_block, conv_masks, Layer};
use super::packed_attention::{block_for, PackedMasks};
use super::remat::Remat;
use super::spec::{ModelSpec, RopeScaling};
use crate::error::{EngineError, Result};
use crate::weights::Weights;

/// Parameters as the forward pass sees them.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    /// The model's weights (frozen during adapter training).
    pub base: &'a Weights,
    /// Arrays that take precedence over `base` (trainable ones), if any.
    pub over: Option<&'a Weights>,
    /// LoRA scale (alpha / rank), used where `.lora_a` / `.lora_b` exist.
    pub lora_scale: f32,
    /// Dtype the `over` arrays (f32 masters while training) are cast to for computing.
    pub compute_dtype: Option<Dtype>,
    /// LoRA dropout: the probability and this step's seed (masks differ per layer).
    pub dropout: Option<(f32, u64)>,
}

impl<'a> Params<'a> {
    pub fn new(base: &'a Weights) -> Self {
        Params {
            base,
            over: None,
            lora_scale: 1.0,
            compute_dtype: None,
            dropout: None,
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<Array>> {
        if let Some(a) = self.over.and_then(|o| o.get(name)) {
            return Ok(Some(match self.compute_dtype {
                Some(dt) => in_compute_dtype(a, dt)?,
                None => a.clone(),
            }));
        }
        Ok(self.base.get(name).cloned())
    }

    pub fn has(&self, name: &str) -> bool {
        self.over.is_some_and(|o| o.contains_key(name)) || self.base.contains_key(name)
    }

    pub fn req(&self, name: &str) -> Result<Array> {
        self.get(name)?.ok_or_else(|| EngineError::MissingWeight {
            name: name.to_string(),
        })
    }
}

/// A trainable array as the forward pass computes with it: floating-point arrays in `dt`.
pub(crate) fn in_compute_dtype(a: &Array, dt: Dtype) -> Result<Array> {
    Ok(
        match a.dtype() != dt && crate::weights::is_float(a.dtype()) {
            true => a.as_dtype(dt)?,
            false => a.clone(),
        },
    )
}

/// The parameters under a name prefix, split for a checkpointed function: frozen arrays
/// (captured) and trainable ones (its inputs, so that they receive gradients), by name.
pub(crate) struct PrefixParams {
    pub base: Weights,
    pub names: Vec<String>,
    pub trainable: Vec<Array>,
}

impl Params<'_> {
    pub(crate) fn split_prefix(&self, prefix: &str) -> PrefixParams {
        self.split_prefixes(&[prefix])
    }

    /// [`split_prefix`](Self::split_prefix) for names under any of `prefixes`.
    pub(crate) fn split_prefixes(&self, prefixes: &[&str]) -> PrefixParams {
        let pick = |w: &Weights| -> Vec<(String, Array)> {
            let mut v: Vec<(String, Array)> = w
                .iter()
                .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let base = pick(self.base).into_iter().collect();
        let (names, trainable) = self.over.map(pick).unwrap_or_default().into_iter().unzip();
        PrefixParams {
            base,
            names,
            trainable,
        }
    }
}

/// A weights map of `names[i] -> arrays[i]`.
pub(crate) fn named(names: &[String], arrays: &[Array]) -> Weights {
    names.iter().cloned().zip(arrays.iter().cloned()).collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Group size and bits of a quantized matrix whose unpacked input width is `in_dim`.
pub(crate) fn quant_geometry(w: &Array, scales: &Array, in_dim: i32) -> (i32, i32) {
    let packed = w.dim(-1);
    let bits = packed * 32 / in_dim;
    let group_size = in_dim / scales.dim(-1);
    (group_size, bits)
}

/// `y = x·Wᵀ (+ b) (+ s·(x·A)·B)` for the linear layer at `prefix`; with DoRA
/// (`.magnitude`), the adapted weight's rows are rescaled to the learned magnitudes.
pub fn linear(p: &Params, prefix: &str, x: &Array) -> Result<Array> {
    let mut y = base_product(p, prefix, x)?;
    if let Some(a) = p.get(&format!("{prefix}.lora_a"))? {
        let b = p.req(&format!("{prefix}.lora_b"))?;
        let xin = match p.dropout {
            Some((rate, seed)) if rate > 0.0 => {
                let key = mlx_rs::random::key(seed ^ fnv(prefix))?;
                let keep_p = Array::from_f32(1.0 - rate);
                let keep = mlx_rs::random::bernoulli(&keep_p, x.shape(), &key)?;
                x.multiply(keep.as_dtype(x.dtype())?)?
                    .multiply(Array::from_f32(1.0 / (1.0 - rate)).as_dtype(x.dtype())?)?
            }
            _ => x.clone(),
        };
        let scale = Array::from_f32(p.lora_scale).as_dtype(y.dtype())?;
        let rows: i32 = x.shape()[..x.ndim() - 1].iter().product();
        let xa = ops::matmul(xin.reshape(&[rows, x.dim(-1)])?, &a)?;
        y = lora_add(&y, &xa, &b.multiply(&scale)?)?;
        if let Some(m) = p.get(&format!("{prefix}.magnitude"))? {
            // DoRA: ||W + s·(A·B)ᵀ|| per output row, without gradient through the norm
            // (as in the DoRA paper's memory-saving variant).
            let dense = match &scale_of(p, prefix)? {
                Some(sc) => {
                    let biases = p.get(&format!("{prefix}.biases"))?;
                    let w = p.req(&format!("{prefix}.weight"))?;
                    let (gs, bits) = quant_geometry(&w, sc, x.dim(-1));
                    dequantize(&w, sc, biases.as_ref(), gs, bits)?
                }
                None => p.req(&format!("{prefix}.weight"))?,
            };
            let adapted = dense.add(ops::matmul(&a, &b)?.t().multiply(&scale)?)?;
            let norm = mlx_rs::stop_gradient(adapted.square()?.sum_axis(1, false)?.sqrt()?)?;
            y = y.multiply(m.divide(&norm)?)?;
        }
    }
    with_bias(p, prefix, y)
}

fn scale_of(p: &Params, prefix: &str) -> Result<Option<Array>> {
    p.get(&format!("{prefix}.scales"))
}

/// `x·Wᵀ` for the frozen (dense or quantized) weight at `prefix`.
pub(crate) fn base_product(p: &Params, prefix: &str, x: &Array) -> Result<Array> {
    let w = p.req(&format!("{prefix}.weight"))?;
    Ok(match &scale_of(p, prefix)? {
        Some(scales) => {
            let biases = p.get(&format!("{prefix}.biases"))?;
            let (gs, bits) = quant_geometry(&w, scales, x.dim(-1));
            quantized_matmul(x, &w, scales, biases.as_ref(), true, gs, bits)?
        }
        None => ops::matmul(x, w.t())?,
    })
}

/// `y + b` where the layer at `prefix` has a bias.
pub(crate) fn with_bias(p: &Params, prefix: &str, y: Array) -> Result<Array> {
    Ok(match p.get(&format!("{prefix}.bias"))? {
        Some(b) => y.add(&b)?,
        None => y,
    })
}

/// `y + xa·B` (`xa = x·A`, rows flattened to 2-D) as one matrix product whose epilogue
/// adds `y` (MLX's `addmm`; cuBLASLt's C input on CUDA). The LoRA scale is folded into the
/// `[r, out]` matrix `B` by the caller, so neither pass touches the `[rows, out]` output
/// with an extra element-wise scale-and-add (issue 14: 17.7 ms of a 246 ms step).
pub(crate) fn lora_add(y: &Array, xa: &Array, b: &Array) -> Result<Array> {
    let shape = y.shape().to_vec();
    let out = ops::addmm(y.reshape(&[xa.dim(0), y.dim(-1)])?, xa, b, 1.0, 1.0)?;
    Ok(out.reshape(&shape)?)
}

/// Token embedding lookup (dense or quantized table).
pub fn embed(p: &Params, spec: &ModelSpec, tokens: &Array) -> Result<Array> {
    let w = p.req("model.embed_tokens.weight")?;
    match p.get("model.embed_tokens.scales")? {
        Some(scales) => {
            let biases = p.req("model.embed_tokens.biases")?;
            let (gs, bits) = quant_geometry(&w, &scales, spec.hidden_size);
            let rows = w.take_axis(tokens, 0)?;
            let s = scales.take_axis(tokens, 0)?;
            let b = biases.take_axis(tokens, 0)?;
            Ok(dequantize(&rows, &s, &b, gs, bits)?)
        }
        None => Ok(w.take_axis(tokens, 0)?),
    }
}

pub(crate) fn rms_norm(p: &Params, name: &str, x: &Array, eps: f32) -> Result<Array> {
    Ok(fast::rms_norm(x, Some(&p.req(name)?), eps)?)
}

/// RoPE frequencies for Llama 3 scaling (None for the other schemes).
pub(crate) fn rope_freqs(spec: &ModelSpec) -> Option<Array> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = spec.rope_scaling
    else {
        return None;
    };
    let dims = spec.head_dim;
    let low_wavelen = original_max_position_embeddings / low_freq_factor;
    let high_wavelen = original_max_position_embeddings / high_freq_factor;
    let freqs: Vec<f32> = (0..dims / 2)
        .map(|i| {
            let f = spec.rope_theta.powf(2.0 * i as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI * f;
            if wavelen > low_wavelen {
                f * factor
            } else if wavelen > high_wavelen {
                let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                f / ((1.0 - smooth) / factor + smooth)
            } else {
                f
            }
        })
        .collect();
    Some(Array::from_slice(&freqs, &[dims / 2]))
}

pub(crate) fn rope(
    spec: &ModelSpec,
    freqs: Option<&Array>,
    x: &Array,
    offset: i32,
) -> Result<Array> {
    let (base, scale) = match spec.rope_scaling {
        RopeScaling::None => (Some(spec.rope_theta), 1.0),
        RopeScaling::Linear { factor } => (Some(spec.rope_theta), 1.0 / factor),
        RopeScaling::Llama3 { .. } => (None, 1.0),
    };
    Ok(fast::rope(
        x,
        spec.head_dim,
        false,
        base,
        scale,
        offset,
        freqs,
    )?)
}

/// Per-call options of a forward pass.
#[derive(Default)]
pub struct ForwardCtx<'a> {
    /// Decoding state, updated in place.
    pub cache: Option<&'a mut Cache>,
    /// Packed rows: the example each position belongs to `[B, T]` (int32). Attention and
    /// LFM2's convolution then stay within an example. Positions keep counting across
    /// examples, which RoPE (relative) does not see.
    pub segments: Option<&'a Array>,
    /// Packed rows: how far before its first query a block of queries starts its keys
    /// ([`packed_attention`](super::packed_attention)); None: at 0.
    pub attention_reach: Option<i32>,
    /// Recompute the first this many layers in the backward pass instead of keeping their
    /// activations (0: none; the number of layers or more: all).
    pub checkpoint_layers: usize,
    /// Of the layers not recomputed whole, recompute the MLP (with its norm) of those before
    /// this index: only the MLP's input is kept, not its `[tokens, ff]` values (0: none).
    pub checkpoint_mlps: usize,
    /// Recompute every layer's values that cost no matrix product ([`Remat::Lean`]).
    pub lean: bool,
}

/// Final hidden states `[B, T, hidden]` (after the last norm) for `tokens` `[B, T]`.
pub fn forward_hidden(
    spec: &ModelSpec,
    p: &Params,
    tokens: &Array,
    ctx: ForwardCtx,
) -> Result<Array> {
    let freqs = rope_freqs(spec);
    let mut x = embed(p, spec, tokens)?;
    let (packed, conv_masks) = match ctx.segments {
        // Additive masks in the compute dtype, made once per forward pass: MLX passes them
        // to the fused attention as a bias as they are (a boolean mask would be converted
        // in every attention call).
        Some(seg) => (
            Some(PackedMasks::new(
                seg,
                block_for(seg.dim(1))?,
                ctx.attention_reach,
                x.dtype(),
            )?),
            conv_masks(spec, seg)?,
        ),
        None => (None, vec![]),
    };
    let layer = Layer {
        spec: spec.clone(),
        freqs,
        packed,
        conv_masks,
        segments: ctx.segments.cloned(),
        // Not under checkpointing: there the shared products raised the LFM2-1.2B step's
        // peak by 0.38 GiB on the H200, whichever layers shared (docs/benchmarks.md, ninth
        // round), where without checkpointing they lower it by as much.
        share_lora_input: ctx.checkpoint_layers == 0,
    };
    let n = &spec.names;
    let mut cache = ctx.cache;
    let offset = cache.as_ref().map_or(0, |c| c.offset);
    for (i, kind) in spec.layers.iter().enumerate() {
        if i < ctx.checkpoint_layers && cache.is_none() {
            x = checkpointed_block(&layer, p, i, *kind, &x)?;
        } else {
            let remat = match cache {
                Some(_) => Remat::Keep,
                None if i < ctx.checkpoint_mlps => Remat::Mlp,
                None if ctx.lean => Remat::Lean,
                None => Remat::Keep,
            };
            let lc = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.block(p, i, *kind, &x, lc, offset, remat)?;
        }
    }
    if let Some(c) = cache {
        c.offset += tokens.dim(1);
    }
    rms_norm(p, &format!("{}.weight", n.final_norm), &x, spec.norm_eps)
}

/// Output projection of hidden states to vocabulary logits.
pub fn lm_head(spec: &ModelSpec, p: &Params, hidden: &Array) -> Result<Array> {
    if spec.tie_embeddings {
        linear(p, "model.embed_tokens", hidden)
    } else {
        linear(p, "lm_head", hidden)
    }
}

/// Logits `[B, T, vocab]` for `tokens` `[B, T]`.
pub fn forward(spec: &ModelSpec, p: &Params, tokens: &Array, ctx: ForwardCtx) -> Result<Array> {
    let h = forward_hidden(spec, p, tokens, ctx)?;
    lm_head(spec, p, &h)
}
