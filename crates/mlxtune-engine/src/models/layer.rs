//! One decoder layer of the shared forward pass ([`forward`](super::forward)): attention or
//! LFM2's gated short convolution, then the MLP, each after its norm and added to the residual
//! stream; and what of the layer the backward pass recomputes instead of keeping ([`Remat`]).

use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{concatenate, zeros_dtype};
use mlx_rs::Array;

use super::cache::{conv_tail, kv_update, LayerCache};
use super::forward::{linear, rms_norm, rope, Params};
use super::packed_attention::PackedMasks;
use super::remat::{recomputed, Remat};
use super::shared_input::linears;
use super::spec::{LayerKind, ModelSpec};
use crate::error::{EngineError, Result};

#[derive(Clone)]
pub(crate) struct Layer {
    pub(crate) spec: ModelSpec,
    pub(crate) freqs: Option<Array>,
    /// Packed rows' attention masks, one per query block.
    pub(crate) packed: Option<PackedMasks>,
    /// For each look-back distance `j` of the convolution, `[B, T, 1]`: position `t-j` is
    /// in the same example as `t`.
    pub(crate) conv_masks: Vec<Array>,
    /// Packed rows' example ids `[B, T]` (for the fused short convolution).
    pub(crate) segments: Option<Array>,
    /// LoRA layers on one input share their `x·A` product ([`linears`]).
    pub(crate) share_lora_input: bool,
}

/// The short convolution's masks of packed rows.
pub(crate) fn conv_masks(spec: &ModelSpec, seg: &Array) -> Result<Vec<Array>> {
    let t = seg.dim(1);
    let mut conv = Vec::new();
    for j in 0..spec.conv_l_cache.max(1) {
        let shifted = if j == 0 {
            seg.clone()
        } else {
            let fill = mlx_rs::ops::full::<i32>(&[seg.dim(0), j], Array::from_int(-1))?;
            concatenate(&[fill, seg.index((.., 0..(t - j)))], 1)?
        };
        conv.push(shifted.eq(seg)?.expand_dims(-1)?);
    }
    Ok(conv)
}

impl Layer {
    /// Attention on the q, k and v projections of the normed input.
    fn attention(
        &self,
        p: &Params,
        prefix: &str,
        qkv: Vec<Array>,
        cache: Option<&mut LayerCache>,
        offset: i32,
    ) -> Result<Array> {
        let s = &self.spec;
        let n = &s.names;
        let a = format!("{prefix}.{}", n.attn);
        let [yq, yk, yv]: [Array; 3] = qkv
            .try_into()
            .map_err(|_| EngineError::Mlx("q, k and v: not three outputs".into()))?;
        let (b, t) = (yq.dim(0), yq.dim(1));
        let heads = |y: Array, h: i32, norm: Option<&str>| -> Result<Array> {
            let y = y.reshape(&[b, t, h, s.head_dim])?;
            let y = match norm {
                Some(norm) => rms_norm(p, &format!("{a}.{norm}.weight"), &y, s.norm_eps)?,
                None => y,
            };
            Ok(y.transpose_axes(&[0, 2, 1, 3])?)
        };
        let (qn, kn) = if s.qk_norm {
            (Some(n.q_norm), Some(n.k_norm))
        } else {
            (None, None)
        };
        let q = rope(s, self.freqs.as_ref(), &heads(yq, s.num_heads, qn)?, offset)?;
        let k = rope(
            s,
            self.freqs.as_ref(),
            &heads(yk, s.num_kv_heads, kn)?,
            offset,
        )?;
        let v = heads(yv, s.num_kv_heads, None)?;
        let (k, v) = match cache {
            Some(LayerCache::Kv { keys, values }) => kv_update(keys, values, k, v)?,
            _ => (k, v),
        };
        let scale = (s.head_dim as f32).powf(-0.5);
        let o = match &self.packed {
            Some(packed) => packed.attend(&q, &k, &v, scale)?,
            None => {
                let causal = (t > 1).then_some(ScaledDotProductAttentionMask::Causal);
                fast::scaled_dot_product_attention(&q, &k, &v, scale, causal, None)?
                    .transpose_axes(&[0, 2, 1, 3])?
            }
        };
        let o = o.reshape(&[b, t, s.num_heads * s.head_dim])?;
        linear(p, &format!("{a}.{}", n.o_proj), &o)
    }

    /// The gated short convolution and its output projection, on the input projection's
    /// `B`, `C` and `x` side by side (`bcx`).
    fn short_conv(
        &self,
        p: &Params,
        prefix: &str,
        bcx: &Array,
        cache: Option<&mut LayerCache>,
    ) -> Result<Array> {
        let s = &self.spec;
        let c = format!("{prefix}.{}", s.names.conv);
        let (b, t, h) = (bcx.dim(0), bcx.dim(1), s.hidden_size);
        let l = s.conv_l_cache;
        if cache.is_none() && !p.has(&format!("{c}.conv.bias")) {
            // Training and whole-sequence passes: one fused op (kernels/short_conv.rs).
            let w = p.req(&format!("{c}.conv.weight"))?;
            let y = crate::kernels::short_conv::gated_short_conv(bcx, &w, self.segments.as_ref())?;
            return linear(p, &format!("{c}.out_proj"), &y);
        }
        let parts = bcx.split_equal(3, -1)?;
        let bx = parts[0].multiply(&parts[2])?;
        let state = match &cache {
            Some(LayerCache::Conv { state: Some(st) }) => st.clone(),
            _ => zeros_dtype(&[b, l - 1, h], bx.dtype())?,
        };
        let xp = concatenate(&[state, bx], 1)?;
        if let Some(LayerCache::Conv { state }) = cache {
            *state = Some(conv_tail(&xp, l - 1));
        }
        let w = p.req(&format!("{c}.conv.weight"))?;
        let mut out: Option<Array> = None;
        for k in 0..l {
            let mut term = xp.index((.., k..k + t, ..)).multiply(w.index((.., 0, k)))?;
            if let Some(mask) = self.conv_masks.get((l - 1 - k) as usize) {
                term = term.multiply(mask.as_dtype(term.dtype())?)?;
            }
            out = Some(match out {
                Some(o) => o.add(term)?,
                None => term,
            });
        }
        let mut out = out.ok_or_else(|| EngineError::Mlx("conv_L_cache must be >= 1".into()))?;
        if let Some(bias) = p.get(&format!("{c}.conv.bias"))? {
            out = out.add(&bias)?;
        }
        let y = parts[1].multiply(&out)?;
        linear(p, &format!("{c}.out_proj"), &y)
    }

    /// One decoder layer: `h = x + op(norm(x)); out = h + mlp(norm(h))`, with `remat`'s
    /// values recomputed in the backward pass.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block(
        &self,
        p: &Params,
        i: usize,
        kind: LayerKind,
        x: &Array,
        lc: Option<&mut LayerCache>,
        offset: i32,
        remat: Remat,
    ) -> Result<Array> {
        let prefix = format!("model.layers.{i}");
        let lean = remat != Remat::Keep;
        let h = self.mixer(p, &prefix, kind, x, (lc, offset), lean)?;
        let x = x.add(h)?;
        let m = match remat {
            Remat::Mlp => {
                let n = &self.spec.names;
                let under = [n.mlp_norm, n.mlp].map(|m| format!("{prefix}.{m}."));
                let layer = self.clone();
                let mlp = move |p: &Params, x: &[Array]| {
                    Ok(vec![layer.normed_mlp(p, &prefix, &x[0], false)?])
                };
                one(recomputed(
                    p,
                    &under.each_ref().map(String::as_str),
                    std::slice::from_ref(&x),
                    mlp,
                )?)?
            }
            _ => self.normed_mlp(p, &prefix, &x, lean)?,
        };
        Ok(x.add(m)?)
    }

    /// `op(norm(x))`: attention or the short convolution; with `lean`, the norm's and the
    /// convolution's outputs are recomputed in the backward pass.
    fn mixer(
        &self,
        p: &Params,
        prefix: &str,
        kind: LayerKind,
        x: &Array,
        (lc, offset): (Option<&mut LayerCache>, i32),
        lean: bool,
    ) -> Result<Array> {
        let n = &self.spec.names;
        let norm = format!("{prefix}.{}", n.attn_norm);
        match kind {
            LayerKind::Attention => {
                let a = format!("{prefix}.{}", n.attn);
                let projs = [n.q_proj, n.k_proj, n.v_proj].map(|q| format!("{a}.{q}"));
                let qkv = self.normed_linears(p, &norm, &projs, x, lean)?;
                self.attention(p, prefix, qkv, lc, offset)
            }
            LayerKind::Conv => {
                let c = format!("{prefix}.{}", n.conv);
                let bcx =
                    one(self.normed_linears(p, &norm, &[format!("{c}.in_proj")], x, lean)?)?;
                if !lean {
                    return self.short_conv(p, prefix, &bcx, lc);
                }
                let (layer, prefix) = (self.clone(), prefix.to_string());
                let conv = move |p: &Params, x: &[Array]| {
                    Ok(vec![layer.short_conv(p, &prefix, &x[0], None)?])
                };
                let under = [format!("{c}.conv."), format!("{c}.out_proj.")];
                one(recomputed(
                    p,
                    &under.each_ref().map(String::as_str),
                    &[bcx],
                    conv,
                )?)
            }
        }
    }

    /// The linear layers at `projs` on `norm(x)` (the RMS norm module at `norm`); with
    /// `lean`, the norm's output is recomputed in the backward pass instead of kept.
    fn normed_linears(
        &self,
        p: &Params,
        norm: &str,
        projs: &[String],
        x: &Array,
        lean: bool,
    ) -> Result<Vec<Array>> {
        let eps = self.spec.norm_eps;
        let share = self.share_lora_input;
        let f = move |p: &Params, norm: &str, projs: &[String], x: &Array| {
            linears(
                p,
                projs,
                &rms_norm(p, &format!("{norm}.weight"), x, eps)?,
                share,
            )
        };
        if !lean {
            return f(p, norm, projs, x);
        }
        let mut under: Vec<String> = projs.iter().map(|q| format!("{q}.")).collect();
        under.push(format!("{norm}."));
        let (norm, projs) = (norm.to_string(), projs.to_vec());
        let g = move |p: &Params, x: &[Array]| f(p, &norm, &projs, &x[0]);
        let under: Vec<&str> = under.iter().map(String::as_str).collect();
        recomputed(p, &under, std::slice::from_ref(x), g)
    }

    /// `mlp(norm(x))` of the layer at `prefix`; with `lean`, the norm's output and the
    /// activation `silu(gate)·up` are recomputed in the backward pass instead of kept.
    fn normed_mlp(&self, p: &Params, prefix: &str, x: &Array, lean: bool) -> Result<Array> {
        let n = &self.spec.names;
        let m = format!("{prefix}.{}", n.mlp);
        let norm = format!("{prefix}.{}", n.mlp_norm);
        let projs = [n.gate, n.up].map(|l| format!("{m}.{l}"));
        let gate_up = self.normed_linears(p, &norm, &projs, x, lean)?;
        let down = format!("{m}.{}", n.down);
        let mlp = move |p: &Params, gu: &[Array]| -> Result<Vec<Array>> {
            let act = crate::kernels::swiglu::swiglu(&gu[0], &gu[1])?;
            Ok(vec![linear(p, &down, &act)?])
        };
        match lean {
            true => {
                let under = format!("{m}.{}.", n.down);
                one(recomputed(p, &[&under], &gate_up, mlp)?)
            }
            false => one(mlp(p, &gate_up)?),
        }
    }
}

/// Layer `i` under gradient checkpointing, recomputed whole in the backward pass.
pub(crate) fn checkpointed_block(
    layer: &Layer,
    p: &Params,
    i: usize,
    kind: LayerKind,
    x: &Array,
) -> Result<Array> {
    let layer = layer.clone();
    let block = move |p: &Params, x: &[Array]| {
        Ok(vec![layer.block(
            p,
            i,
            kind,
            &x[0],
            None,
            0,
            Remat::Keep,
        )?])
    };
    one(recomputed(
        p,
        &[&format!("model.layers.{i}.")],
        std::slice::from_ref(x),
        block,
    )?)
}

fn one(mut v: Vec<Array>) -> Result<Array> {
    v.pop()
        .ok_or_else(|| EngineError::Mlx("gradient checkpointing returned nothing".into()))
}
