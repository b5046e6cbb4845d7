// Shared by the build scripts of every crate whose targets link MLX (cargo ignores
// link args emitted by a dependency's build script, cargo#9554). Include with
// `include!("../mlx-sys/final_link.rs");` and call `link_mlx_final()` from main.

/// Sets the rpath to libmlx and, on the CPU backend, makes OpenBLAS (not the wheel's
/// reference BLAS, ~30x slower) provide BLAS; on CUDA lets the CUDA libraries that
/// libmlx needs be found only at run time.
fn link_mlx_final() {
    let lib = std::env::var("DEP_MLX_LIB_DIR").expect("mlx-sys publishes lib_dir");
    let backend = std::env::var("DEP_MLX_BACKEND").expect("mlx-sys publishes backend");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if os == "linux" && backend == "cpu" {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-l:libopenblas.so.0");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    if os == "linux" && backend == "cuda" {
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
