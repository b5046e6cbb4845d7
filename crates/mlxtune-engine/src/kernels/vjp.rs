//! A function with its own backward pass, through mlx-c's `mlx_custom_vjp` (not wrapped by
//! mlx-rs): MLX calls `forward` for the value and `backward` for the vector-Jacobian product
//! instead of differentiating `forward`'s operations. Fused kernels use it so the backward
//! pass is a kernel too and only the inputs are saved.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::panic::AssertUnwindSafe;

use mlx_rs::Array;
use mlx_sys as sys;

use crate::error::{EngineError, Result};

/// `outputs = forward(inputs)`.
pub type Forward = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;
/// `input cotangents = backward(inputs, output cotangents, outputs)`, one per input.
pub type Backward = Box<dyn Fn(&[Array], &[Array], &[Array]) -> Result<Vec<Array>>>;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) unsafe fn arrays_of(vec: sys::mlx_vector_array) -> Option<Vec<Array>> {
    let n = unsafe { sys::mlx_vector_array_size(vec) };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = unsafe { sys::mlx_array_new() };
        if unsafe { sys::mlx_vector_array_get(&mut a, vec, i) } != 0 {
            unsafe { sys::mlx_array_free(a) };
            return None;
        }
        out.push(unsafe { Array::from_ptr(a) });
    }
    Some(out)
}

/// A new mlx-c vector holding `arrays` (the caller frees it).
pub(crate) fn vector_of(arrays: &[Array]) -> sys::mlx_vector_array {
    let ptrs: Vec<sys::mlx_array> = arrays.iter().map(|a| a.as_ptr()).collect();
    unsafe { sys::mlx_vector_array_new_data(ptrs.as_ptr(), ptrs.len()) }
}

/// Runs `f`, stores its error or panic for [`failure`], and assigns its result to `res`.
fn answer(res: *mut sys::mlx_vector_array, f: impl FnOnce() -> Result<Vec<Array>>) -> c_int {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(outs)) => {
            let vec = vector_of(&outs);
            let status = unsafe { sys::mlx_vector_array_set(res, vec) };
            unsafe { sys::mlx_vector_array_free(vec) };
            status
        }
        Ok(Err(e)) => {
            LAST_ERROR.with(|l| *l.borrow_mut() = Some(e.to_string()));
            1
        }
        Err(_) => {
            LAST_ERROR
                .with(|l| *l.borrow_mut() = Some("a fused kernel's function panicked".into()));
            1
        }
    }
}

unsafe extern "C" fn call_forward(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const Forward) };
    match unsafe { arrays_of(input) } {
        Some(args) => answer(res, || f(&args)),
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
        (Some(p), Some(c), Some(o)) => answer(res, || f(&p, &c, &o)),
        _ => 1,
    }
}

unsafe extern "C" fn drop_forward(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Forward) });
}

unsafe extern "C" fn drop_backward(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Backward) });
}

fn failure(what: &str) -> EngineError {
    let inner = LAST_ERROR.with(|l| l.borrow_mut().take());
    EngineError::from_mlx_message(match inner {
        Some(e) => format!("custom VJP: {what}: {e}"),
        None => format!("custom VJP: {what}"),
    })
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
            return Err(failure("wrapping the function"));
        }
        let vin = vector_of(inputs);
        let mut vout = sys::mlx_vector_array_new();
        let status = sys::mlx_closure_apply(&mut vout, wrapped, vin);
        sys::mlx_vector_array_free(vin);
        sys::mlx_closure_free(wrapped);
        if status != 0 {
            sys::mlx_vector_array_free(vout);
            return Err(failure("applying the function"));
        }
        let out = arrays_of(vout);
        sys::mlx_vector_array_free(vout);
        out.ok_or_else(|| failure("reading the outputs"))
    }
}
