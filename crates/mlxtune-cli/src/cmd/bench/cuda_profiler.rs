//! Brackets the timed steps for a profiler started with capture off
//! (`ncu --profile-from-start off`): the CUDA driver's `cuProfilerStart` / `cuProfilerStop`,
//! looked up in `libcuda.so.1` at run time so the CPU build needs no CUDA library.
//! Only when `MLXTUNE_PROFILE_STEPS=1` is set; otherwise nothing happens.

use std::ffi::{c_int, CStr};

type CuFn = unsafe extern "C" fn() -> c_int;

fn driver_fn(name: &CStr) -> Option<CuFn> {
    if std::env::var("MLXTUNE_PROFILE_STEPS").ok().as_deref() != Some("1") {
        return None;
    }
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbol's C signature is
    // `CUresult f(void)` (CUresult is a C enum, an int).
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if lib.is_null() {
            return None;
        }
        let f = libc::dlsym(lib, name.as_ptr());
        (!f.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, CuFn>(f))
    }
}

fn call(name: &CStr) {
    if let Some(f) = driver_fn(name) {
        // SAFETY: a CUDA driver entry point without arguments.
        let status = unsafe { f() };
        if status != 0 {
            eprintln!("{} returned CUDA error {status}", name.to_string_lossy());
        }
    }
}

/// Starts capture (when asked for through the environment).
pub fn start() {
    call(c"cuProfilerStart");
}

/// Stops capture (when asked for through the environment).
pub fn stop() {
    call(c"cuProfilerStop");
}
