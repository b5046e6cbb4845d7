//! SwiGLU, `silu(g) · u`, as one kernel each way. Unfused, MLX keeps `sigmoid(g)` and
//! `silu(g)` for the backward pass and runs three forward kernels (sigmoid, two products);
//! fused, the forward pass reads `g` and `u` once and writes the product, and the backward
//! pass recomputes the sigmoid from the saved `g` (issue 14's profile).

use mlx_rs::ops::sigmoid;
use mlx_rs::Array;

use super::launch::{run, Gpu, KernelSource, Launch, TemplateArg};
use super::vjp::custom_vjp;
use crate::error::{EngineError, Result};

const FORWARD: KernelSource = KernelSource {
    name: "mlxtune_swiglu",
    inputs: &["g", "u"],
    outputs: &["out"],
    cuda: include_str!("swiglu.cu"),
    metal: include_str!("swiglu.metal"),
};

const BACKWARD: KernelSource = KernelSource {
    name: "mlxtune_swiglu_vjp",
    inputs: &["g", "u", "dout"],
    outputs: &["dg", "du"],
    cuda: include_str!("swiglu_vjp.cu"),
    metal: include_str!("swiglu_vjp.metal"),
};

/// Elements per thread: one 16-byte vector on CUDA (swiglu.cu), four on Metal.
fn per_thread(gpu: Gpu, like: &Array) -> u64 {
    match gpu {
        Gpu::Cuda => 16 / like.item_size().max(1) as u64,
        Gpu::Metal => 4,
    }
}

/// `silu(g) · u`: the fused kernels on a GPU backend, [`reference`] elsewhere.
pub fn swiglu(g: &Array, u: &Array) -> Result<Array> {
    match super::gpu() {
        Some(gpu) if g.shape() == u.shape() && g.dtype() == u.dtype() => fused(gpu, g, u),
        _ => reference(g, u),
    }
}

/// The unfused operations (differentiated by MLX).
pub fn reference(g: &Array, u: &Array) -> Result<Array> {
    Ok(g.multiply(sigmoid(g)?)?.multiply(u)?)
}

/// The backward formula in MLX operations: `(dg, du)` for cotangent `d`.
pub fn reference_vjp(g: &Array, u: &Array, d: &Array) -> Result<(Array, Array)> {
    let s = sigmoid(g)?;
    let du = d.multiply(g)?.multiply(&s)?;
    let one = Array::from_f32(1.0).as_dtype(g.dtype())?;
    let slope = one.add(g.multiply(one.subtract(&s)?)?)?;
    let dg = d.multiply(u)?.multiply(&s)?.multiply(&slope)?;
    Ok((dg, du))
}

/// [`reference`] wrapped in a custom VJP whose backward pass is [`reference_vjp`]: the
/// fused path's structure with MLX operations, so the CPU tests check the formula and the
/// custom-VJP plumbing the kernels use.
pub fn composed(g: &Array, u: &Array) -> Result<Array> {
    let forward = Box::new(|x: &[Array]| Ok(vec![reference(&x[0], &x[1])?]));
    let backward = Box::new(|x: &[Array], c: &[Array], _: &[Array]| {
        let (dg, du) = reference_vjp(&x[0], &x[1], &c[0])?;
        Ok(vec![dg, du])
    });
    first(custom_vjp(forward, backward, &[g.clone(), u.clone()])?)
}

fn launch(gpu: Gpu, like: &Array, outputs: usize) -> Launch {
    let threads = (like.size() as u64).div_ceil(per_thread(gpu, like)) as i32;
    Launch {
        grid: [threads.max(1), 1, 1],
        group: [256, 1, 1],
        outputs: vec![(like.shape().to_vec(), like.dtype()); outputs],
        template: vec![("T", TemplateArg::Dtype(like.dtype()))],
    }
}

fn first(mut v: Vec<Array>) -> Result<Array> {
    (!v.is_empty())
        .then(|| v.swap_remove(0))
        .ok_or_else(|| EngineError::Mlx("a fused kernel returned nothing".into()))
}

/// The kernels, differentiated by the backward kernel.
pub fn fused(gpu: Gpu, g: &Array, u: &Array) -> Result<Array> {
    let forward = Box::new(move |x: &[Array]| run(gpu, &FORWARD, &x[..2], &launch(gpu, &x[0], 1)));
    let backward = Box::new(move |x: &[Array], c: &[Array], _: &[Array]| {
        let d = c[0].as_dtype(x[0].dtype())?;
        run(
            gpu,
            &BACKWARD,
            &[x[0].clone(), x[1].clone(), d],
            &launch(gpu, &x[0], 2),
        )
    });
    first(custom_vjp(forward, backward, &[g.clone(), u.clone()])?)
}
