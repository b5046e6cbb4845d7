//! Custom GPU kernels through MLX (`mlx_fast_cuda_kernel_*` / `mlx_fast_metal_kernel_*`):
//! a kernel is a function body in CUDA or Metal whose signature MLX generates from the
//! input and output names; MLX compiles it at run time (NVRTC / the Metal compiler), once
//! per template arguments, and runs it on the GPU stream like any other operation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CString};

use mlx_rs::{Array, Dtype};
use mlx_sys as sys;

use crate::closure::{arrays_of, vector_of};
use crate::error::{EngineError, Result};

/// The GPU a kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpu {
    Cuda,
    Metal,
}

/// One kernel, in both languages.
pub struct KernelSource {
    /// Unique among the kernels; MLX names the kernel `custom_kernel_<name>…`.
    pub name: &'static str,
    pub inputs: &'static [&'static str],
    pub outputs: &'static [&'static str],
    /// CUDA function body (`cg` is `cooperative_groups`).
    pub cuda: &'static str,
    /// Metal function body.
    pub metal: &'static str,
}

/// A compile-time constant of the kernel body.
pub enum TemplateArg {
    Dtype(Dtype),
    Int(i32),
}

/// How one call runs: the grid and thread group in threads (MLX rounds the grid up to
/// whole groups: bodies check their bounds), the outputs, the template arguments.
pub struct Launch {
    pub grid: [i32; 3],
    pub group: [i32; 3],
    pub outputs: Vec<(Vec<i32>, Dtype)>,
    pub template: Vec<(&'static str, TemplateArg)>,
}

fn c_names(names: &[&str]) -> Result<sys::mlx_vector_string> {
    let owned: Vec<CString> = names
        .iter()
        .map(|n| CString::new(*n))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| EngineError::Mlx(format!("kernel argument name: {e}")))?;
    let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    Ok(unsafe { sys::mlx_vector_string_new_data(ptrs.as_ptr() as *mut _, ptrs.len()) })
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|e| EngineError::Mlx(format!("kernel source: {e}")))
}

/// Builds the config/kernel/apply calls of one backend (the two mlx-c families have the
/// same shape, differing only in their names and the kernel constructor's last argument).
macro_rules! backend {
    ($module:ident, $kernel:ident, $new:ident, $free:ident, $apply:ident, $cfg_ty:ident,
     $cfg_new:ident, $cfg_free:ident, $out:ident, $grid:ident, $group:ident, $tdtype:ident, $tint:ident,
     $body:ident, $last:expr) => {
        pub(super) mod $module {
            use super::*;

            pub struct Handle(sys::$kernel);
            impl Drop for Handle {
                fn drop(&mut self) {
                    unsafe { sys::$free(self.0) }
                }
            }

            thread_local! {
                static KERNELS: RefCell<HashMap<&'static str, Handle>> = RefCell::new(HashMap::new());
            }

            fn build(src: &KernelSource) -> Result<Handle> {
                let (inputs, outputs) = (c_names(src.inputs)?, c_names(src.outputs)?);
                let (name, body, header) = (cstr(src.name)?, cstr(src.$body)?, cstr("")?);
                let k = unsafe {
                    sys::$new(name.as_ptr(), inputs, outputs, body.as_ptr(), header.as_ptr(), true, $last)
                };
                unsafe {
                    sys::mlx_vector_string_free(inputs);
                    sys::mlx_vector_string_free(outputs);
                }
                Ok(Handle(k))
            }

            fn configure(cfg: sys::$cfg_ty, l: &Launch) -> Result<i32> {
                let mut status = 0;
                for (shape, dtype) in &l.outputs {
                    status |= unsafe { sys::$out(cfg, shape.as_ptr(), shape.len(), *dtype as u32) };
                }
                status |= unsafe { sys::$grid(cfg, l.grid[0], l.grid[1], l.grid[2]) };
                status |= unsafe { sys::$group(cfg, l.group[0], l.group[1], l.group[2]) };
                for (name, arg) in &l.template {
                    let n = cstr(name)?;
                    status |= match arg {
                        TemplateArg::Dtype(d) => unsafe { sys::$tdtype(cfg, n.as_ptr(), *d as u32) },
                        TemplateArg::Int(v) => unsafe { sys::$tint(cfg, n.as_ptr(), *v) },
                    };
                }
                Ok(status)
            }

            pub fn apply(src: &KernelSource, inputs: &[Array], l: &Launch) -> Result<Vec<Array>> {
                KERNELS.with(|cell| {
                    let mut map = cell.borrow_mut();
                    if !map.contains_key(src.name) {
                        map.insert(src.name, build(src)?);
                    }
                    let kernel = &map[src.name];
                    let cfg = unsafe { sys::$cfg_new() };
                    let status = configure(cfg, l);
                    let stream = mlx_rs::Stream::new();
                    let vin = vector_of(inputs);
                    let mut vout = unsafe { sys::mlx_vector_array_new() };
                    let applied = match status {
                        Ok(0) => unsafe { sys::$apply(&mut vout, kernel.0, vin, cfg, stream.as_ptr()) },
                        _ => 1,
                    };
                    let out = (applied == 0).then(|| unsafe { arrays_of(vout) }).flatten();
                    unsafe {
                        sys::mlx_vector_array_free(vin);
                        sys::mlx_vector_array_free(vout);
                        sys::$cfg_free(cfg);
                    }
                    out.ok_or_else(|| {
                        EngineError::Mlx(format!("the {} kernel failed (see the MLX error above)", src.name))
                    })
                })
            }
        }
    };
}

backend!(
    cuda,
    mlx_fast_cuda_kernel,
    mlx_fast_cuda_kernel_new,
    mlx_fast_cuda_kernel_free,
    mlx_fast_cuda_kernel_apply,
    mlx_fast_cuda_kernel_config,
    mlx_fast_cuda_kernel_config_new,
    mlx_fast_cuda_kernel_config_free,
    mlx_fast_cuda_kernel_config_add_output_arg,
    mlx_fast_cuda_kernel_config_set_grid,
    mlx_fast_cuda_kernel_config_set_thread_group,
    mlx_fast_cuda_kernel_config_add_template_arg_dtype,
    mlx_fast_cuda_kernel_config_add_template_arg_int,
    cuda,
    0
);
backend!(
    metal,
    mlx_fast_metal_kernel,
    mlx_fast_metal_kernel_new,
    mlx_fast_metal_kernel_free,
    mlx_fast_metal_kernel_apply,
    mlx_fast_metal_kernel_config,
    mlx_fast_metal_kernel_config_new,
    mlx_fast_metal_kernel_config_free,
    mlx_fast_metal_kernel_config_add_output_arg,
    mlx_fast_metal_kernel_config_set_grid,
    mlx_fast_metal_kernel_config_set_thread_group,
    mlx_fast_metal_kernel_config_add_template_arg_dtype,
    mlx_fast_metal_kernel_config_add_template_arg_int,
    metal,
    false
);

/// Runs `src` on `gpu` (MLX's default GPU stream).
pub fn run(gpu: Gpu, src: &KernelSource, inputs: &[Array], launch: &Launch) -> Result<Vec<Array>> {
    crate::runtime::init()?;
    match gpu {
        Gpu::Cuda => cuda::apply(src, inputs, launch),
        Gpu::Metal => metal::apply(src, inputs, launch),
    }
}
