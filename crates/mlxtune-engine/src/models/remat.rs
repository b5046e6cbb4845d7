//! Gradient checkpointing: functions whose intermediate values are recomputed in the backward
//! pass instead of being kept.
//! - [`checkpoint`]: MLX's `checkpoint` transform (not wrapped by mlx-rs), used per decoder
//!   layer while training, so only layer inputs stay alive.
//! - [`sequential_sum`]: a sum of chunks (the chunked loss) whose backward pass recomputes the
//!   chunks strictly one after another. MLX's transform only orders a recomputation after its
//!   function's outputs, so independent chunks may all be recomputed at once: with MLX's
//!   default breadth-first scheduling (the CPU, Metal) that held every chunk's logits
//!   (docs/benchmarks.md, "Gradient checkpointing's recomputation order").

use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mlx_rs::Array;
use mlx_sys as sys;

use crate::closure::{answer, apply_once, arrays_of, failure, vector_of};
use crate::error::Result;
use crate::kernels::vjp::custom_vjp;

/// A function of arrays, kept alive by MLX for as long as the graph needs it.
pub type ArrayFn = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

const CONTEXT: &str = "gradient checkpointing";

unsafe extern "C" fn call(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const Rc<ArrayFn>) };
    match unsafe { arrays_of(input) } {
        Some(args) => answer(res, "a checkpointed function", || f(&args)),
        None => 1,
    }
}

unsafe extern "C" fn drop_payload(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Rc<ArrayFn>) });
}

/// `f(inputs)`, with `f`'s intermediates recomputed during the backward pass.
pub fn checkpoint(f: ArrayFn, inputs: &[Array]) -> Result<Vec<Array>> {
    crate::runtime::init()?;
    unsafe {
        let payload = Box::into_raw(Box::new(Rc::new(f))) as *mut c_void;
        let cls = sys::mlx_closure_new_func_payload(Some(call), payload, Some(drop_payload));
        let mut ck = sys::mlx_closure_new();
        let status = sys::mlx_checkpoint(&mut ck, cls);
        sys::mlx_closure_free(cls);
        if status != 0 {
            sys::mlx_closure_free(ck);
            return Err(failure(CONTEXT, "wrapping the function"));
        }
        apply_once(ck, inputs, CONTEXT)
    }
}

/// A chunk's scalar: `f(k, [rows of the first input, the other inputs...])`.
pub type ChunkFn = Box<dyn Fn(usize, &[Array]) -> Result<Array>>;

/// `Σ_k f(k, [x[rows_k], shared...])` over row ranges `rows` of `inputs[0]` (the other
/// inputs shared by every chunk), as one function whose backward pass recomputes the chunks
/// one after another: chunk `k + 1` only once chunk `k`'s gradients exist, so one chunk's
/// intermediates (e.g. its `[rows, vocab]` logits) are alive at a time. The forward pass
/// keeps nothing.
pub fn sequential_sum(f: ChunkFn, rows: Vec<(i32, i32)>, inputs: &[Array]) -> Result<Array> {
    use mlx_rs::ops::indexing::IndexOp;
    let (f, rows) = (Rc::new(f), Rc::new(rows));
    let chunk_inputs = |args: &[Array], (start, end): (i32, i32)| -> Vec<Array> {
        let mut v = vec![args[0].index(start..end)];
        v.extend(args[1..].iter().cloned());
        v
    };
    let forward = {
        let (f, rows) = (Rc::clone(&f), Rc::clone(&rows));
        Box::new(move |args: &[Array]| -> Result<Vec<Array>> {
            let mut total: Option<Array> = None;
            for (k, &r) in rows.iter().enumerate() {
                let part = f(k, &chunk_inputs(args, r))?;
                total = Some(match total {
                    Some(t) => t.add(&part)?,
                    None => part,
                });
            }
            Ok(vec![total.ok_or_else(|| failure(CONTEXT, "no chunks"))?])
        })
    };
    let backward = Box::new(move |primals: &[Array], cots: &[Array], outs: &[Array]| {
        let chunks = rows.iter().map(|&r| chunk_inputs(primals, r));
        recompute_in_order(&f, chunks, cots, outs)
    });
    let mut out = custom_vjp(forward, backward, inputs)?;
    out.pop().ok_or_else(|| failure(CONTEXT, "no sum"))
}

/// The backward pass of [`sequential_sum`]: each chunk's gradients, recomputed after the
/// previous chunk's; the rows' gradients concatenated, the shared inputs' summed.
fn recompute_in_order(
    f: &Rc<ChunkFn>,
    chunks: impl Iterator<Item = Vec<Array>>,
    cotangents: &[Array],
    outputs: &[Array],
) -> Result<Vec<Array>> {
    let mut after: Vec<Array> = outputs.iter().chain(cotangents).cloned().collect();
    let (mut rows_grad, mut shared_grad) = (Vec::new(), None::<Vec<Array>>);
    for (k, inputs) in chunks.enumerate() {
        let f = Rc::clone(f);
        let one: Rc<ArrayFn> = Rc::new(Box::new(move |a: &[Array]| Ok(vec![f(k, a)?])));
        let grads = vjp(&one, &depends(&inputs, &after)?, cotangents)?;
        rows_grad.push(grads[0].clone());
        shared_grad = Some(match shared_grad {
            None => grads[1..].to_vec(),
            Some(sum) => (sum.iter().zip(&grads[1..]))
                .map(|(a, b)| a.add(b))
                .collect::<std::result::Result<_, _>>()?,
        });
        after = grads;
    }
    let mut out = vec![mlx_rs::ops::concatenate(&rows_grad, 0)?];
    out.extend(shared_grad.unwrap_or_default());
    Ok(out)
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
    arrays.ok_or_else(|| failure(CONTEXT, "ordering the recomputation"))
}

/// The vector-Jacobian product of `f` at `primals`: one cotangent per primal.
fn vjp(f: &Rc<ArrayFn>, primals: &[Array], cotangents: &[Array]) -> Result<Vec<Array>> {
    let payload = Box::into_raw(Box::new(Rc::clone(f))) as *mut c_void;
    let (vp, vc) = (vector_of(primals), vector_of(cotangents));
    let (mut outs, mut vjps) =
        unsafe { (sys::mlx_vector_array_new(), sys::mlx_vector_array_new()) };
    let status = unsafe {
        let cls = sys::mlx_closure_new_func_payload(Some(call), payload, Some(drop_payload));
        let status = sys::mlx_vjp(&mut outs, &mut vjps, cls, vp, vc);
        sys::mlx_closure_free(cls);
        sys::mlx_vector_array_free(vp);
        sys::mlx_vector_array_free(vc);
        status
    };
    let arrays = (status == 0).then(|| unsafe { arrays_of(vjps) }).flatten();
    unsafe {
        sys::mlx_vector_array_free(outs);
        sys::mlx_vector_array_free(vjps);
    }
    arrays.ok_or_else(|| failure(CONTEXT, "recomputing for the backward pass"))
}
