//! Gradient checkpointing through MLX's `checkpoint` transform (not wrapped by mlx-rs):
//! a function whose intermediate values are recomputed in the backward pass instead of
//! being kept. Used per decoder layer while training, so only layer inputs stay alive.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::panic::AssertUnwindSafe;

use mlx_rs::Array;
use mlx_sys as sys;

use crate::error::{EngineError, Result};

/// A function of arrays, kept alive by MLX for as long as the graph needs it.
pub type ArrayFn = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

unsafe fn arrays_of(vec: sys::mlx_vector_array) -> Option<Vec<Array>> {
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

unsafe extern "C" fn call(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let f = unsafe { &*(payload as *const ArrayFn) };
    let Some(args) = (unsafe { arrays_of(input) }) else {
        return 1;
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(&args))) {
        Ok(Ok(outs)) => {
            // The result handle MLX passes may be empty; build a vector and assign it.
            let ptrs: Vec<sys::mlx_array> = outs.iter().map(|o| o.as_ptr()).collect();
            let vec = unsafe { sys::mlx_vector_array_new_data(ptrs.as_ptr(), ptrs.len()) };
            let status = unsafe { sys::mlx_vector_array_set(res, vec) };
            unsafe { sys::mlx_vector_array_free(vec) };
            status
        }
        Ok(Err(e)) => {
            LAST_ERROR.with(|l| *l.borrow_mut() = Some(e.to_string()));
            1
        }
        Err(_) => {
            LAST_ERROR.with(|l| *l.borrow_mut() = Some("a checkpointed function panicked".into()));
            1
        }
    }
}

unsafe extern "C" fn drop_payload(p: *mut c_void) {
    drop(unsafe { Box::from_raw(p as *mut ArrayFn) });
}

fn failure(what: &str) -> EngineError {
    let inner = LAST_ERROR.with(|l| l.borrow_mut().take());
    EngineError::from_mlx_message(match inner {
        Some(e) => format!("gradient checkpointing: {what}: {e}"),
        None => format!("gradient checkpointing: {what}"),
    })
}

/// `f(inputs)`, with `f`'s intermediates recomputed during the backward pass.
pub fn checkpoint(f: ArrayFn, inputs: &[Array]) -> Result<Vec<Array>> {
    crate::runtime::init()?;
    unsafe {
        let payload = Box::into_raw(Box::new(f)) as *mut c_void;
        let cls = sys::mlx_closure_new_func_payload(Some(call), payload, Some(drop_payload));
        let mut ck = sys::mlx_closure_new();
        let status = sys::mlx_checkpoint(&mut ck, cls);
        sys::mlx_closure_free(cls);
        if status != 0 {
            sys::mlx_closure_free(ck);
            return Err(failure("wrapping the function"));
        }
        let ptrs: Vec<sys::mlx_array> = inputs.iter().map(|a| a.as_ptr()).collect();
        let vin = sys::mlx_vector_array_new_data(ptrs.as_ptr(), ptrs.len());
        let mut vout = sys::mlx_vector_array_new();
        let status = sys::mlx_closure_apply(&mut vout, ck, vin);
        sys::mlx_vector_array_free(vin);
        sys::mlx_closure_free(ck);
        if status != 0 {
            sys::mlx_vector_array_free(vout);
            return Err(failure("applying the function"));
        }
        let out = arrays_of(vout);
        sys::mlx_vector_array_free(vout);
        out.ok_or_else(|| failure("reading the outputs"))
    }
}
