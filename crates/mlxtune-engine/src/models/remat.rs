//! Gradient checkpointing: MLX's `checkpoint` transform (not wrapped by mlx-rs), used while
//! training per decoder layer (only its input stays alive, and the layer's intermediate
//! values are recomputed in the backward pass) or per part of one ([`Remat`]).

use std::rc::Rc;

use mlx_rs::Array;
use mlx_sys as sys;

use super::forward::{named, Params, PrefixParams};
pub use crate::closure::ArrayFn;
use crate::closure::{apply_once, closure_of, failure};
use crate::error::Result;

const CONTEXT: &str = "gradient checkpointing";

/// `f(inputs)`, with `f`'s intermediates recomputed during the backward pass.
pub fn checkpoint(f: ArrayFn, inputs: &[Array]) -> Result<Vec<Array>> {
    crate::runtime::init()?;
    unsafe {
        let cls = closure_of(Rc::new(f));
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

/// How much of a decoder layer the backward pass recomputes instead of keeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remat {
    /// Nothing: every intermediate value is kept.
    Keep,
    /// The values that cost no matrix product: the norms' outputs, the short convolution's
    /// output and the MLP's activation `silu(gate)·up`. Kept: the layer's input, the
    /// projections' outputs (`q`, `k`, `v`; the convolution's `B`, `C`, `x`; `gate`, `up`).
    Lean,
    /// [`Lean`](Remat::Lean), and the MLP from its input: `gate` and `up` are recomputed.
    Mlp,
}

/// `f(p, xs)` under gradient checkpointing: only `xs` and the parameters are kept, and `f`'s
/// intermediate values are recomputed in the backward pass (a last matrix product whose
/// output nothing else needs is not: MLX computes only what the gradients read). The
/// trainable arrays under `prefixes` are inputs of the checkpointed function (so they
/// receive gradients); frozen ones are captured.
pub(crate) fn recomputed(
    p: &Params,
    prefixes: &[&str],
    xs: &[Array],
    f: impl Fn(&Params, &[Array]) -> Result<Vec<Array>> + 'static,
) -> Result<Vec<Array>> {
    let PrefixParams {
        base,
        names,
        trainable,
    } = p.split_prefixes(prefixes);
    let n = xs.len();
    let mut inputs = xs.to_vec();
    inputs.extend(trainable);
    let (lora_scale, compute_dtype, dropout) = (p.lora_scale, p.compute_dtype, p.dropout);
    let g = move |args: &[Array]| -> Result<Vec<Array>> {
        let over = named(&names, &args[n..]);
        let p = Params {
            base: &base,
            over: Some(&over),
            lora_scale,
            compute_dtype,
            dropout,
        };
        f(&p, &args[..n])
    };
    checkpoint(Box::new(g), &inputs)
}
