//! Builds the MLX C API (mlx-c 0.7.0) against a prebuilt MLX 0.32.2 from PyPI.
//!
//! Inputs (all prepared by `scripts/setup.sh`, nothing is downloaded here):
//! - `MLXTUNE_BACKEND`: `cpu` (default on Linux), `cuda` or `metal` (default on macOS).
//! - `MLX_PREFIX`: the unpacked wheel (holds `mlx/include` and `mlx/lib`);
//!   default `<workspace>/.native/mlx-<backend>`.
//! - `MLX_C_DIR`: mlx-c sources (holds `mlx/c/*.cpp`); default `<workspace>/.native/mlx-c`.

use std::env;
use std::path::PathBuf;

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("mlx-sys: {msg}");
}

fn main() {
    for var in ["MLXTUNE_BACKEND", "MLX_PREFIX", "MLX_C_DIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=native");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let backend = env::var("MLXTUNE_BACKEND").unwrap_or_else(|_| {
        if target_os == "macos" {
            "metal".into()
        } else {
            "cpu".into()
        }
    });
    if !matches!(backend.as_str(), "cpu" | "cuda" | "metal") {
        fail(&format!(
            "MLXTUNE_BACKEND={backend}: expected cpu, cuda or metal"
        ));
    }
    if backend == "metal" && target_os != "macos" {
        fail("MLXTUNE_BACKEND=metal needs macOS");
    }
    if backend == "cuda" && target_os != "linux" {
        fail("MLXTUNE_BACKEND=cuda needs Linux");
    }

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest.join("../..");
    let prefix = env::var_os("MLX_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".native").join(format!("mlx-{backend}")));
    let mlx_c = env::var_os("MLX_C_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".native/mlx-c"));
    let include = prefix.join("mlx/include");
    let lib = prefix.join("mlx/lib");
    if !include.join("mlx/mlx.h").exists() {
        fail(&format!(
            "no MLX headers at {} (backend {backend}); run scripts/setup.sh first",
            include.display()
        ));
    }
    if !mlx_c.join("mlx/c/mlx.h").exists() {
        fail(&format!(
            "no mlx-c sources at {}; run scripts/setup.sh first",
            mlx_c.display()
        ));
    }
    let compat = manifest.join("native/mlxtune_compat.h");

    // 1. mlx-c, compiled directly (CMake would need the CUDA toolkit for the CUDA wheel).
    let mut sources: Vec<PathBuf> = std::fs::read_dir(mlx_c.join("mlx/c"))
        .expect("read mlx-c sources")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    sources.sort();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .include(&include)
        .include(&mlx_c)
        .flag("-include")
        .flag(compat.to_str().expect("utf-8 path"))
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .files(&sources);
    if target_os == "linux" {
        build.flag("-fPIC");
    }
    build.compile("mlxc");

    if target_os != "macos" {
        cc::Build::new()
            .file(manifest.join("native/mach_time.c"))
            .opt_level(2)
            .compile("mlxtune_mach_time");
    }

    // 2. Link the prebuilt MLX.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    if target_os == "macos" {
        println!("cargo:rustc-link-lib=c++");
        for fw in ["Foundation", "Metal", "QuartzCore", "Accelerate"] {
            println!("cargo:rustc-link-lib=framework={fw}");
        }
    } else {
        println!("cargo:rustc-link-lib=stdc++");
    }
    // Final binaries read these (DEP_MLX_LIB_DIR, DEP_MLX_BACKEND) to set their rpath,
    // because cargo ignores link args from a dependency's build script.
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:backend={backend}");
    println!("cargo:rustc-env=MLXTUNE_MLX_BACKEND={backend}");

    // 3. Bindings over every mlx-c header.
    let mut headers: Vec<PathBuf> = std::fs::read_dir(mlx_c.join("mlx/c"))
        .expect("read mlx-c headers")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    let mut builder = bindgen::Builder::default()
        .clang_arg(format!("-I{}", mlx_c.display()))
        .clang_arg("-include")
        .clang_arg(compat.to_str().expect("utf-8 path"))
        .blocklist_function("malloc")
        .blocklist_function("realloc")
        .blocklist_type("float16_t")
        .blocklist_type("bfloat16_t");
    for h in &headers {
        builder = builder.header(h.to_string_lossy());
    }
    let bindings = builder
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen: {e}")));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");
}
