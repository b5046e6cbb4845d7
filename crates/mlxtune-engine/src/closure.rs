//! Rust functions as mlx-c closures, for the transforms mlx-rs does not wrap (gradient
//! checkpointing, custom VJPs, custom kernels): moving arrays in and out of mlx-c vectors,
//! answering a call with a function's result, keeping its error for the caller, and
//! applying a closure.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use mlx_rs::Array;
use mlx_sys as sys;

use crate::error::{EngineError, Result};

thread_local! {
    /// The error of the last failed call on this thread, for [`failure`].
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The arrays of an mlx-c vector (None when one cannot be read).
///
/// # Safety
/// `vec` must be a live mlx-c vector.
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

/// Runs `f` inside a closure call: assigns its result to `res`, or keeps its error (or
/// that `who` panicked) for [`failure`] and answers 1.
pub(crate) fn answer(
    res: *mut sys::mlx_vector_array,
    who: &str,
    f: impl FnOnce() -> Result<Vec<Array>>,
) -> c_int {
    let message = match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(outs)) => {
            let vec = vector_of(&outs);
            let status = unsafe { sys::mlx_vector_array_set(res, vec) };
            unsafe { sys::mlx_vector_array_free(vec) };
            return status;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("{who} panicked"),
    };
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(message));
    1
}

/// An MLX error about `context` (`what` failed), with the kept error of the call, if any.
pub(crate) fn failure(context: &str, what: &str) -> EngineError {
    let inner = LAST_ERROR.with(|l| l.borrow_mut().take());
    EngineError::from_mlx_message(match inner {
        Some(e) => format!("{context}: {what}: {e}"),
        None => format!("{context}: {what}"),
    })
}

/// A function of arrays, kept alive by MLX for as long as the graph needs it.
pub type ArrayFn = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

unsafe extern "C" fn call(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const Rc<ArrayFn>) };
    match unsafe { arrays_of(input) } {
        Some(args) => answer(res, "a function of arrays", || f(&args)),
        None => 1,
    }
}

unsafe extern "C" fn drop_payload(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut Rc<ArrayFn>) });
}

/// A new mlx-c closure calling `f`, which it keeps alive (the caller frees the closure).
pub(crate) fn closure_of(f: Rc<ArrayFn>) -> sys::mlx_closure {
    let payload = Box::into_raw(Box::new(f)) as *mut c_void;
    unsafe { sys::mlx_closure_new_func_payload(Some(call), payload, Some(drop_payload)) }
}

/// Applies `closure` (which this call frees) to `inputs`.
///
/// # Safety
/// `closure` must be a live mlx-c closure that no one else frees.
pub(crate) unsafe fn apply_once(
    closure: sys::mlx_closure,
    inputs: &[Array],
    context: &str,
) -> Result<Vec<Array>> {
    let vin = vector_of(inputs);
    let mut vout = unsafe { sys::mlx_vector_array_new() };
    let status = unsafe { sys::mlx_closure_apply(&mut vout, closure, vin) };
    unsafe {
        sys::mlx_vector_array_free(vin);
        sys::mlx_closure_free(closure);
    }
    if status != 0 {
        unsafe { sys::mlx_vector_array_free(vout) };
        return Err(failure(context, "applying the function"));
    }
    let out = unsafe { arrays_of(vout) };
    unsafe { sys::mlx_vector_array_free(vout) };
    out.ok_or_else(|| failure(context, "reading the outputs"))
}
