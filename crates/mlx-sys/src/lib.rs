//! Raw bindings to the MLX C API (mlx-c 0.7.0), built by mlxtune for Linux (CPU, CUDA)
//! and macOS (Metal). A drop-in replacement for the published `mlx-sys` 0.7.0.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

/// 16-bit float storage, laid out as bindgen emits it on aarch64 (mlx-rs reads `.0`).
#[repr(transparent)]
#[derive(Debug, Default, Copy, Clone, PartialEq, Eq, Hash)]
pub struct __BindgenFloat16(pub u16);
pub type float16_t = __BindgenFloat16;
pub type bfloat16_t = u16;

/// The MLX backend this crate was built against: "cpu", "cuda" or "metal".
pub const BACKEND: &str = env!("MLXTUNE_MLX_BACKEND");

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
