//! A function with its own backward pass, through mlx-c's `mlx_custom_vjp` (not wrapped by
//! mlx-rs): MLX calls `forward` for the value and `backward` for the vector-Jacobian product
//! instead of differentiating `forward`'s operations. Fused kernels use it so the backward
//! pass is a kernel too and only the inputs are saved.

use std::ffi::{c_int, c_void};

use mlx_rs::Array;
use mlx_sys as sys;

use crate::closure::{answer, apply_once, arrays_of, failure};
use crate::error::Result;

/// `outputs = forward(inputs)`.
pub type Forward = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;
/// `input cotangents = backward(inputs, output cotangents, outputs)`, one per input.
pub type Backward = Box<dyn Fn(&[Array], &[Array], &[Array]) -> Result<Vec<Array>>>;

const CONTEXT: &str = "custom VJP";
const WHO: &str = "a function with its own backward pass";

unsafe extern "C" fn call_forward(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const Forward) };
    match unsafe { arrays_of(input) } {
        Some(args) => answer(res, WHO, || f(&args)),
        None => 1,
    }
}

unsafe extern "C" fn call_backward(
    res: *mut sys::mlx_vector_array,
    primals: sys::mlx_vector_array,
    cotangents: sys::mlx_vector_array,
    outputs: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const Backward) };
    let args = unsafe {
        (
            arrays_of(primals),
            arrays_of(cotangents),
            arrays_of(outputs),
        )
    };
    match args {
        (Some(p), Some(c), Some(o)) => answer(res, WHO, || f(&p, &c, &o)),
        _ => 1,
    }
}

unsafe extern "C" fn drop_forward(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Forward) });
}

unsafe extern "C" fn drop_backward(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Backward) });
}

/// `forward(inputs)`, differentiated by `backward`.
pub fn custom_vjp(forward: Forward, backward: Backward, inputs: &[Array]) -> Result<Vec<Array>> {
    crate::runtime::init()?;
    unsafe {
        let fp = Box::into_raw(Box::new(forward)) as *mut c_void;
        let fwd = sys::mlx_closure_new_func_payload(Some(call_forward), fp, Some(drop_forward));
        let bp = Box::into_raw(Box::new(backward)) as *mut c_void;
        let bwd =
            sys::mlx_closure_custom_new_func_payload(Some(call_backward), bp, Some(drop_backward));
        let mut wrapped = sys::mlx_closure_new();
        let status = sys::mlx_custom_vjp(&mut wrapped, fwd, bwd);
        sys::mlx_closure_free(fwd);
        sys::mlx_closure_custom_free(bwd);
        if status != 0 {
            sys::mlx_closure_free(wrapped);
            return Err(failure(CONTEXT, "wrapping the function"));
        }
        apply_once(wrapped, inputs, CONTEXT)
    }
}
