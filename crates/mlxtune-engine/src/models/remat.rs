//! Gradient checkpointing: MLX's `checkpoint` transform (not wrapped by mlx-rs), used per
//! decoder layer while training, so only layer inputs stay alive and the layer's intermediate
//! values are recomputed in the backward pass.

use std::rc::Rc;

use mlx_rs::Array;
use mlx_sys as sys;

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
