//! A sum of chunks (the chunked loss) whose gradients are computed in the forward pass, one
//! chunk after another, and only scaled in the backward pass.
//!
//! A scalar loss's cotangent is a single number, so each chunk's vector-Jacobian product can
//! be taken at cotangent 1 while the chunk's intermediates (its `[rows, vocab]` logits) are
//! still alive, and multiplied by the real cotangent later. Nothing is recomputed: the output
//! layer runs twice per token (logits, then their gradient) instead of three times under
//! recomputation, and what is kept is the gradients themselves (`[tokens, hidden]` for the
//! hidden states). Chunk `k + 1` is computed only after chunk `k`'s value and gradients exist
//! (`mlx_depends`): MLX's default breadth-first scheduling (the CPU, Metal) would otherwise
//! compute several chunks' logits at once.

use std::rc::Rc;

use mlx_rs::{Array, Dtype};
use mlx_sys as sys;

use crate::closure::{arrays_of, closure_of, failure, vector_of, ArrayFn};
use crate::error::Result;
use crate::kernels::vjp::custom_vjp;

const CONTEXT: &str = "the chunked loss";

/// A chunk's scalar: `f(k, [rows of the first input, the other inputs...])`.
pub type ChunkFn = Box<dyn Fn(usize, &[Array]) -> Result<Array>>;

/// `Σ_k f(k, [x[rows_k], shared...])` over row ranges `rows` of `inputs[0]` (the other
/// inputs shared by every chunk), differentiable with respect to every input. Its forward
/// pass also computes and keeps the gradients (see the module's note).
pub fn chunked_sum(f: ChunkFn, rows: Vec<(i32, i32)>, inputs: &[Array]) -> Result<Array> {
    let f = Rc::new(f);
    let forward = Box::new(move |args: &[Array]| -> Result<Vec<Array>> {
        let (total, grads) = values_and_grads_in_order(&f, &rows, args)?;
        let mut out = vec![total];
        out.extend(grads);
        Ok(out)
    });
    // outputs = [sum, its gradient with respect to each input at cotangent 1]
    let backward = Box::new(|_: &[Array], cots: &[Array], outs: &[Array]| {
        let scale = &cots[0];
        outs[1..].iter().map(|g| scaled(g, scale)).collect()
    });
    let mut out = custom_vjp(forward, backward, inputs)?;
    out.truncate(1);
    out.pop().ok_or_else(|| failure(CONTEXT, "no sum"))
}

/// `g · s`, computed in f32 and rounded once to `g`'s dtype.
fn scaled(g: &Array, s: &Array) -> Result<Array> {
    Ok(g.as_dtype(Dtype::Float32)?
        .multiply(s.as_dtype(Dtype::Float32)?)?
        .as_dtype(g.dtype())?)
}

/// The sum of the chunks' values and, per input, the sum of their gradients (the rows'
/// gradients concatenated), each chunk computed after the previous chunk's gradients.
fn values_and_grads_in_order(
    f: &Rc<ChunkFn>,
    rows: &[(i32, i32)],
    args: &[Array],
) -> Result<(Array, Vec<Array>)> {
    use mlx_rs::ops::indexing::IndexOp;
    let mut after: Vec<Array> = Vec::new();
    let (mut total, mut rows_grad, mut shared_grad) =
        (None::<Array>, Vec::new(), None::<Vec<Array>>);
    for (k, &(start, end)) in rows.iter().enumerate() {
        let mut inputs = vec![args[0].index(start..end)];
        inputs.extend(args[1..].iter().cloned());
        if !after.is_empty() {
            inputs = depends(&inputs, &after)?;
        }
        let f = Rc::clone(f);
        let one: Rc<ArrayFn> = Rc::new(Box::new(move |a: &[Array]| Ok(vec![f(k, a)?])));
        let (value, grads) = value_and_vjp(&one, &inputs)?;
        // The next chunk waits for this one's value too: a value computed late would keep
        // its chunk's logits alive.
        after = grads.clone();
        after.push(value.clone());
        total = Some(match total {
            Some(t) => t.add(&value)?,
            None => value,
        });
        rows_grad.push(grads[0].clone());
        shared_grad = Some(match shared_grad {
            None => grads[1..].to_vec(),
            Some(sum) => add_all(&sum, &grads[1..])?,
        });
    }
    let total = total.ok_or_else(|| failure(CONTEXT, "no chunks"))?;
    let mut grads = vec![mlx_rs::ops::concatenate(&rows_grad, 0)?];
    grads.extend(shared_grad.unwrap_or_default());
    Ok((total, grads))
}

fn add_all(a: &[Array], b: &[Array]) -> Result<Vec<Array>> {
    Ok(a.iter()
        .zip(b)
        .map(|(a, b)| a.add(b))
        .collect::<std::result::Result<_, _>>()?)
}

/// `inputs`, unchanged in value, but computed only after `after` is.
fn depends(inputs: &[Array], after: &[Array]) -> Result<Vec<Array>> {
    let (vin, vdep) = (vector_of(inputs), vector_of(after));
    let mut out = unsafe { sys::mlx_vector_array_new() };
    let status = unsafe { sys::mlx_depends(&mut out, vin, vdep) };
    unsafe {
        sys::mlx_vector_array_free(vin);
        sys::mlx_vector_array_free(vdep);
    }
    let arrays = (status == 0).then(|| unsafe { arrays_of(out) }).flatten();
    unsafe { sys::mlx_vector_array_free(out) };
    arrays.ok_or_else(|| failure(CONTEXT, "ordering the chunks"))
}

/// `f(primals)` (one scalar) and its gradient with respect to each primal (cotangent 1).
fn value_and_vjp(f: &Rc<ArrayFn>, primals: &[Array]) -> Result<(Array, Vec<Array>)> {
    let one = Array::from_f32(1.0);
    let (vp, vc) = (vector_of(primals), vector_of(std::slice::from_ref(&one)));
    let (mut outs, mut vjps) =
        unsafe { (sys::mlx_vector_array_new(), sys::mlx_vector_array_new()) };
    let status = unsafe {
        let cls = closure_of(Rc::clone(f));
        let status = sys::mlx_vjp(&mut outs, &mut vjps, cls, vp, vc);
        sys::mlx_closure_free(cls);
        sys::mlx_vector_array_free(vp);
        sys::mlx_vector_array_free(vc);
        status
    };
    let got = (status == 0)
        .then(|| unsafe { (arrays_of(outs), arrays_of(vjps)) })
        .and_then(|(o, g)| Some((o?.pop()?, g?)));
    unsafe {
        sys::mlx_vector_array_free(outs);
        sys::mlx_vector_array_free(vjps);
    }
    got.ok_or_else(|| failure(CONTEXT, "computing a chunk's gradients"))
}
