//! LFM2's gated short convolution, `y = C · conv_causal(B · x, w)` over the in_proj output
//! `bcx = (B | C | x)`, as one forward kernel and two backward kernels (inputs, weights).
//! Unfused it is a product, a concatenation with the zero state, L strided tap products
//! and sums, and a gate product, and its backward pass adds slice updates and copies
//! (issue 14's profile). Packed rows pass their segment ids: taps never cross examples.

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{concatenate, zeros, zeros_dtype};
use mlx_rs::{Array, Dtype};

use super::launch::{run, Gpu, KernelSource, Launch, TemplateArg};
use super::vjp::custom_vjp;
use crate::error::{EngineError, Result};

const FORWARD: KernelSource = KernelSource {
    name: "mlxtune_short_conv",
    inputs: &["bcx", "w", "seg"],
    outputs: &["y"],
    cuda: include_str!("short_conv.cu"),
    metal: include_str!("short_conv.metal"),
};

const BACKWARD: KernelSource = KernelSource {
    name: "mlxtune_short_conv_vjp",
    inputs: &["bcx", "w", "seg", "dy"],
    outputs: &["dbcx"],
    cuda: include_str!("short_conv_vjp.cu"),
    metal: include_str!("short_conv_vjp.metal"),
};

const WEIGHT_GRAD: KernelSource = KernelSource {
    name: "mlxtune_short_conv_dw",
    inputs: &["bcx", "seg", "dy"],
    outputs: &["dw"],
    cuda: include_str!("short_conv_dw.cu"),
    metal: include_str!("short_conv_dw.metal"),
};

/// Rows summed by one thread of the weight-gradient kernel.
const ROWS: i32 = 64;

/// `bcx` `[B, T, 3H]`, `w` `[H, 1, L]`, `seg` `[B, T]` example ids of packed rows → `[B, T, H]`:
/// the kernels on a GPU backend, [`reference`] elsewhere.
pub fn gated_short_conv(bcx: &Array, w: &Array, seg: Option<&Array>) -> Result<Array> {
    // The kernels index in 32 bits.
    let fits = (bcx.size() as u64) < (1 << 31);
    match super::gpu() {
        Some(gpu) if fits => fused(gpu, bcx, w, seg),
        _ => reference(bcx, w, seg),
    }
}

/// `[B, T, 1]`: position `t - j` exists and is in the example of `t`.
fn same_example(seg: &Array, j: i32) -> Result<Array> {
    if j == 0 {
        return Ok(mlx_rs::ops::ones::<bool>(&[seg.dim(0), seg.dim(1), 1])?);
    }
    let t = seg.dim(1);
    let fill = mlx_rs::ops::full::<i32>(&[seg.dim(0), j.min(t)], Array::from_int(-1))?;
    let shifted = concatenate(&[fill, seg.index((.., 0..(t - j).max(0)))], 1)?;
    Ok(shifted.eq(seg)?.expand_dims(-1)?)
}

/// The unfused operations (differentiated by MLX).
pub fn reference(bcx: &Array, w: &Array, seg: Option<&Array>) -> Result<Array> {
    let (b, t, l) = (bcx.dim(0), bcx.dim(1), w.dim(-1));
    let parts = bcx.split_equal(3, -1)?;
    let h = parts[0].dim(-1);
    let bx = parts[0].multiply(&parts[2])?;
    let xp = concatenate(&[zeros_dtype(&[b, l - 1, h], bx.dtype())?, bx], 1)?;
    let mut out = zeros_dtype(&[b, t, h], bcx.dtype())?;
    for k in 0..l {
        let mut term = xp.index((.., k..k + t, ..)).multiply(w.index((.., 0, k)))?;
        if let Some(seg) = seg {
            term = term.multiply(same_example(seg, l - 1 - k)?.as_dtype(term.dtype())?)?;
        }
        out = out.add(term)?;
    }
    Ok(parts[1].multiply(&out)?)
}

fn launch(threads: i64, outputs: Vec<(Vec<i32>, Dtype)>, dtype: Dtype, l: i32) -> Launch {
    Launch {
        grid: [threads.max(1) as i32, 1, 1],
        group: [256, 1, 1],
        outputs,
        template: vec![
            ("T", TemplateArg::Dtype(dtype)),
            ("L", TemplateArg::Int(l)),
            ("ROWS", TemplateArg::Int(ROWS)),
        ],
    }
}

fn one(mut v: Vec<Array>) -> Result<Array> {
    (v.len() == 1)
        .then(|| v.swap_remove(0))
        .ok_or_else(|| EngineError::Mlx("a fused kernel returned the wrong outputs".into()))
}

/// `(dbcx, dw)` for cotangent `dy`.
fn backward(gpu: Gpu, bcx: &Array, w: &Array, seg: &Array, dy: &Array) -> Result<Vec<Array>> {
    let (b, t, h3, l) = (bcx.dim(0), bcx.dim(1), bcx.dim(2), w.dim(-1));
    let (h, dt) = (h3 / 3, bcx.dtype());
    let dy = dy.as_dtype(dt)?;
    let elems = b as i64 * t as i64 * h as i64;
    let args = [bcx.clone(), w.clone(), seg.clone(), dy.clone()];
    let dbcx = one(run(
        gpu,
        &BACKWARD,
        &args,
        &launch(elems, vec![(bcx.shape().to_vec(), dt)], dt, l),
    )?)?;
    let chunks = (b as i64 * t as i64 + ROWS as i64 - 1) / ROWS as i64;
    let out = vec![(vec![chunks as i32, h, l], Dtype::Float32)];
    let args = [bcx.clone(), seg.clone(), dy];
    let partial = one(run(
        gpu,
        &WEIGHT_GRAD,
        &args,
        &launch(chunks * h as i64, out, dt, l),
    )?)?;
    let dw = partial
        .sum_axis(0, false)?
        .reshape(w.shape())?
        .as_dtype(w.dtype())?;
    Ok(vec![dbcx, dw, zeros::<i32>(seg.shape())?])
}

/// The kernels, differentiated by the backward kernels.
pub fn fused(gpu: Gpu, bcx: &Array, w: &Array, seg: Option<&Array>) -> Result<Array> {
    let seg = match seg {
        Some(s) => s.as_dtype(Dtype::Int32)?,
        None => zeros::<i32>(&[bcx.dim(0), bcx.dim(1)])?,
    };
    let forward = Box::new(move |x: &[Array]| {
        let (bcx, l) = (&x[0], x[1].dim(-1));
        let shape = vec![bcx.dim(0), bcx.dim(1), bcx.dim(2) / 3];
        let elems = shape.iter().map(|&d| d as i64).product();
        run(
            gpu,
            &FORWARD,
            x,
            &launch(elems, vec![(shape, bcx.dtype())], bcx.dtype(), l),
        )
    });
    let backward = Box::new(move |x: &[Array], c: &[Array], _: &[Array]| {
        backward(gpu, &x[0], &x[1], &x[2], &c[0])
    });
    one(custom_vjp(
        forward,
        backward,
        &[bcx.clone(), w.clone(), seg],
    )?)
}
