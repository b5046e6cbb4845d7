//! The MLX runtime: which backend this build links, device choice, memory figures.
//!
//! MLX's C API calls `exit()` on an error until mlx-rs installs its own handler, which it
//! does lazily on the first fallible call: [`init`] makes that call once, up front.

use std::sync::OnceLock;

use mlx_rs::{Array, Device, DeviceType};
use serde::Serialize;

use crate::error::{EngineError, Result};

/// The MLX backend compiled into this binary: `cpu`, `cuda` or `metal`.
pub fn backend() -> &'static str {
    mlx_sys::BACKEND
}

/// Whether this build has a GPU backend (CUDA or Metal).
pub fn has_gpu_backend() -> bool {
    backend() != "cpu"
}

/// Where computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The GPU when the backend has one, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The GPU; an error on a CPU-only build.
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" | "cuda" | "metal" => Ok(Self::Gpu),
            other => Err(EngineError::invalid(
                "device",
                format!("`{other}`: expected auto, cpu or gpu"),
            )),
        }
    }
}

static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Installs MLX's error handler by making one small computation. Idempotent.
pub fn init() -> Result<()> {
    INIT.get_or_init(|| {
        let a = Array::from_slice(&[1.0f32, 2.0], &[2]);
        a.sum(None)
            .and_then(|s| s.eval())
            .map_err(|e| e.what().to_string())
    })
    .clone()
    .map_err(EngineError::Mlx)
}

/// What MLX's scheduling on the CUDA backend favours, chosen per process before MLX runs.
/// MLX frees an intermediate buffer only when the CUDA graph that used it has completed, so
/// small graphs keep fewer dead buffers alive, and large ones launch less often.
/// Depth-first evaluation order (`MLX_BFS_MAX_WIDTH=1`, MLX's default is 20) is set for
/// both: it holds less at no cost in speed. On an H200 (LFM2-1.2B, LoRA; docs/benchmarks.md,
/// fifth round):
///
/// | | 8 × 2048 | 8 × 2048, checkpointed | 4 × 1024 |
/// |---|---|---|---|
/// | `Speed` (20 operations per graph, MLX's default) | 85,742 tok/s, 30.9 GiB | 64,048, 15.6 GiB | 74,229, 10.5 GiB |
/// | `Memory` (2 operations per graph) | 80,820 tok/s, 25.2 GiB | 62,804, 6.5 GiB | 61,762, 8.7 GiB |
///
/// Both turn off MLX's cache-thrashing check (`MLX_ENABLE_CACHE_THRASHING_CHECK=0`). It counts
/// a process's CUDA-graph cache misses over its whole life and, past twice the cache's size,
/// fails every later evaluation: a compiled job whose batches took a few dozen widths died
/// of it on an H200 (docs/benchmarks.md, tenth round), and a server running many jobs would
/// too. Without it a miss costs a graph's instantiation, nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    Speed,
    Memory,
}

impl Scheduling {
    /// Memory for a step that recomputes layers to save memory, speed otherwise.
    pub fn for_checkpointing(checkpointing: bool) -> Self {
        match checkpointing {
            true => Scheduling::Memory,
            false => Scheduling::Speed,
        }
    }

    /// The MLX variables of this choice.
    pub fn variables(self) -> [(&'static str, &'static str); 3] {
        let ops = match self {
            Scheduling::Speed => "20",
            Scheduling::Memory => "2",
        };
        [
            ("MLX_MAX_OPS_PER_BUFFER", ops),
            ("MLX_BFS_MAX_WIDTH", "1"),
            ("MLX_ENABLE_CACHE_THRASHING_CHECK", "0"),
        ]
    }
}

/// Applies `choice`'s variables on the CUDA backend for those the environment leaves unset
/// (what a user sets wins). MLX reads them once, at first use: call this in `main`, before
/// any other thread exists and before MLX runs anything.
pub fn apply_scheduling_defaults(choice: Scheduling) {
    if backend() != "cuda" {
        return;
    }
    for (k, v) in choice.variables() {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}

/// The MLX scheduling variables in effect (`name=value`; unset ones omitted).
pub fn scheduling_settings() -> Vec<String> {
    Scheduling::Memory
        .variables()
        .iter()
        .filter_map(|(k, _)| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect()
}

/// Makes `choice` the default device of this thread's computations. Never asks MLX for a
/// GPU stream on a CPU build (MLX would kill the process).
pub fn select_device(choice: DeviceChoice) -> Result<&'static str> {
    init()?;
    match choice {
        DeviceChoice::Gpu if !has_gpu_backend() => Err(EngineError::Device(format!(
            "a GPU was requested, but this mlxtune build uses MLX's `{}` backend; rebuild with \
             MLXTUNE_BACKEND=cuda (Linux + NVIDIA) or on macOS (Metal)",
            backend()
        ))),
        DeviceChoice::Gpu => {
            Device::set_default(&Device::gpu());
            Ok("gpu")
        }
        DeviceChoice::Auto if has_gpu_backend() => {
            Device::set_default(&Device::gpu());
            Ok("gpu")
        }
        DeviceChoice::Cpu | DeviceChoice::Auto => {
            Device::set_default(&Device::cpu());
            Ok("cpu")
        }
    }
}

/// The device computations currently default to.
pub fn current_device() -> &'static str {
    match Device::try_default().and_then(|d| d.get_type()) {
        Ok(DeviceType::Gpu) => "gpu",
        _ => "cpu",
    }
}

/// Memory figures from MLX's allocator, in bytes.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct MemoryStats {
    pub active: u64,
    pub peak: u64,
    pub cache: u64,
}

/// Reads MLX's allocator counters.
pub fn memory_stats() -> MemoryStats {
    MemoryStats {
        active: mlx_rs::memory::active_memory().unwrap_or(0) as u64,
        peak: mlx_rs::memory::peak_memory().unwrap_or(0) as u64,
        cache: mlx_rs::memory::cache_memory().unwrap_or(0) as u64,
    }
}

/// Resets the peak-memory counter.
pub fn reset_peak_memory() {
    let _ = mlx_rs::memory::reset_peak_memory();
}

/// MLX's memory limit in bytes (the allocator's budget), when it reports one.
pub fn memory_limit() -> Option<u64> {
    mlx_rs::memory::memory_limit().ok().map(|l| l as u64)
}

/// Sets MLX's memory limit (bytes); returns the previous one. Beyond allocating, MLX's
/// evaluation waits for scheduled work to complete while the memory in use is over it, so
/// the host cannot run ahead of the device holding buffers that finished work would free.
pub fn set_memory_limit(bytes: u64) -> Result<u64> {
    Ok(mlx_rs::memory::set_memory_limit(bytes as usize)? as u64)
}

/// [`set_memory_limit`] in GiB, as the command line gives it (`flag` names it in the error).
pub fn set_memory_limit_gib(gib: f64, flag: &str) -> Result<u64> {
    if !(gib > 0.0 && gib.is_finite()) {
        return Err(EngineError::invalid(
            flag,
            "must be a positive number of GiB",
        ));
    }
    init()?;
    set_memory_limit((gib * (1u64 << 30) as f64) as u64)
}

/// Returns MLX's cached buffers to the system.
pub fn clear_cache() -> Result<()> {
    mlx_rs::memory::clear_cache()?;
    Ok(())
}

/// The process's peak resident set size, from /proc/self/status (Linux).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
