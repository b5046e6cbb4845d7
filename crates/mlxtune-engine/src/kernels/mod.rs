//! Fused GPU kernels through MLX's custom-kernel API, each a CUDA body and its Metal twin
//! (`*.cu` / `*.metal` beside its Rust file) with a custom VJP whose backward pass is a
//! kernel too. On the CPU (and with `MLXTUNE_FUSED_KERNELS=0`) every op is its unfused
//! reference in MLX operations, which the tests compare the kernels against.
//! Where they pay comes from the step profile in docs/benchmarks.md (issue 14).

pub mod adamw;
pub mod adamw_group;
pub mod launch;
pub mod short_conv;
pub mod swiglu;
pub mod vjp;

pub use launch::Gpu;

/// The GPU the fused kernels run on: the build's GPU backend when MLX's default device is
/// the GPU, unless `MLXTUNE_FUSED_KERNELS=0`.
pub fn gpu() -> Option<Gpu> {
    if std::env::var("MLXTUNE_FUSED_KERNELS").is_ok_and(|v| v == "0") {
        return None;
    }
    if crate::runtime::current_device() != "gpu" {
        return None;
    }
    match crate::runtime::backend() {
        "cuda" => Some(Gpu::Cuda),
        "metal" => Some(Gpu::Metal),
        _ => None,
    }
}
