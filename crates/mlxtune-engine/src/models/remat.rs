//! Gradient checkpointing: MLX's `checkpoint` transform (not wrapped by mlx-rs), used per
//! decoder layer while training, so only layer inputs stay alive and the layer's intermediate
//! values are recomputed in the backward pass.

use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mlx_rs::Array;
use mlx_sys as sys;

use crate::closure::{answer, apply_once, arrays_of, failure};
use crate::error::Result;

/// A function of arrays, kept alive by MLX for as long as the graph needs it.
pub type ArrayFn = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

const CONTEXT: &str = "gradient checkpointing";

pub(super) unsafe extern "C" fn call(
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

pub(super) unsafe extern "C" fn drop_payload(p: *mut c_void) {
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
