//! The Adam(W) update of one f32 array as one kernel: reads the parameter, the step's
//! gradient sum and both moments once and writes the three new arrays. MLX's compiled
//! element-wise kernel for the same formula ran at ~1 TB/s on an H200: 32 ms of a full
//! fine-tuning step of LFM2-1.2B (1.17 billion f32 parameters; docs/benchmarks.md, issue 14).
//!
//! `h` holds the step's numbers on the device, so that a clipping factor or a non-finite
//! norm computed there needs no host sync: `[b1, 1-b1, b2, 1-b2, eps, lr, c1, c2, decay, l2,
//! denom, clip, keep]` (formula in adamw.cu). No VJP: an optimizer is not differentiated.

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::select;
use mlx_rs::{Array, Dtype};

use super::launch::{run, Gpu, KernelSource, Launch, TemplateArg};
use crate::error::{EngineError, Result};

/// Positions in `h`.
pub mod h {
    pub const B1: i32 = 0;
    pub const NB1: i32 = 1;
    pub const B2: i32 = 2;
    pub const NB2: i32 = 3;
    pub const EPS: i32 = 4;
    pub const LR: i32 = 5;
    pub const C1: i32 = 6;
    pub const C2: i32 = 7;
    pub const DECAY: i32 = 8;
    pub const L2: i32 = 9;
    pub const DENOM: i32 = 10;
    pub const CLIP: i32 = 11;
    pub const KEEP: i32 = 12;
    pub const LEN: usize = 13;
}

const UPDATE: KernelSource = KernelSource {
    name: "mlxtune_adamw",
    inputs: &["p", "s", "m", "v", "h"],
    outputs: &["p_new", "m_new", "v_new"],
    cuda: concat!(include_str!("adamw.cu"), include_str!("adamw_step.cu")),
    metal: concat!(
        include_str!("adamw.metal"),
        include_str!("adamw_step.metal")
    ),
};

/// Whether the kernels read gradients of this dtype: f32, or a 16-bit compute dtype (a
/// step returns a decoder layer's gradient in it: `StepOptions::layer_grads_in_compute`).
pub fn gradient_dtype(d: Dtype) -> bool {
    matches!(d, Dtype::Float32 | Dtype::Bfloat16 | Dtype::Float16)
}

/// `[p', m', v']` from the parameter `p`, gradient sum `s`, moments `m`, `v` and `h`: the
/// kernel on a GPU backend for f32 arrays of one shape (the sum also in a 16-bit
/// [`gradient_dtype`]), [`reference`] elsewhere.
pub fn update(p: &Array, s: &Array, m: &Array, v: &Array, h: &Array) -> Result<Vec<Array>> {
    let same = [m, v]
        .iter()
        .all(|x| x.shape() == p.shape() && x.dtype() == Dtype::Float32)
        && s.shape() == p.shape()
        && gradient_dtype(s.dtype());
    match super::gpu() {
        Some(gpu) if same && p.dtype() == Dtype::Float32 => fused(gpu, p, s, m, v, h),
        _ => reference(p, s, m, v, h),
    }
}

/// The same formula in MLX operations.
pub fn reference(p: &Array, s: &Array, m: &Array, v: &Array, h: &Array) -> Result<Vec<Array>> {
    let at = |k: i32| h.index(k);
    let g = s
        .divide(at(h::DENOM))?
        .multiply(at(h::CLIP))?
        .add(p.multiply(at(h::L2))?)?;
    let m2 = m.multiply(at(h::B1))?.add(g.multiply(at(h::NB1))?)?;
    let v2 = v
        .multiply(at(h::B2))?
        .add(g.square()?.multiply(at(h::NB2))?)?;
    let update = m2
        .divide(at(h::C1))?
        .divide(v2.divide(at(h::C2))?.sqrt()?.add(at(h::EPS))?)?;
    let p2 = p
        .multiply(at(h::DECAY))?
        .subtract(update.multiply(at(h::LR))?)?;
    let keep = at(h::KEEP).ne(Array::from_f32(0.0))?;
    Ok(vec![
        select(&keep, p, &p2)?,
        select(&keep, m, &m2)?,
        select(&keep, v, &v2)?,
    ])
}

/// The kernel.
pub fn fused(
    gpu: Gpu,
    p: &Array,
    s: &Array,
    m: &Array,
    v: &Array,
    h: &Array,
) -> Result<Vec<Array>> {
    if h.size() != h::LEN || h.dtype() != Dtype::Float32 {
        return Err(EngineError::Mlx(format!(
            "the Adam(W) kernel takes {} f32 numbers",
            h::LEN
        )));
    }
    let threads = (p.size() as u64).div_ceil(4).max(1);
    let threads = i32::try_from(threads).map_err(|_| {
        EngineError::Mlx(format!("{} elements are too many for one launch", p.size()))
    })?;
    let launch = Launch {
        grid: [threads, 1, 1],
        group: [256, 1, 1],
        outputs: vec![(p.shape().to_vec(), Dtype::Float32); 3],
        template: vec![("G", TemplateArg::Dtype(s.dtype()))],
    };
    let inputs = [p.clone(), s.clone(), m.clone(), v.clone(), h.clone()];
    run(gpu, &UPDATE, &inputs, &launch)
}
