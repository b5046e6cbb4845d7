//! Where imported GGUF files live: each file is converted once into a model directory under
//! a cache folder, keyed by its path, size and modification time, so that every later use
//! (`--model x.gguf`, a job's `baseModel`) loads that directory.

use std::path::{Path, PathBuf};

use super::import::import_gguf;
use super::is_gguf;
use crate::error::{EngineError, Result};

/// `$MLXTUNE_CACHE_DIR/gguf`, else `$XDG_CACHE_HOME/mlxtune/gguf`, else
/// `~/.cache/mlxtune/gguf`, else the system's temporary folder.
pub fn default_cache_root() -> PathBuf {
    let base = std::env::var_os("MLXTUNE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("mlxtune")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mlxtune")))
        .unwrap_or_else(|| std::env::temp_dir().join("mlxtune"));
    base.join("gguf")
}

/// The model directory a model path stands for: itself, or for a `.gguf` file its
/// imported directory under [`default_cache_root`] (imported now if it is not there yet).
pub fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    if is_gguf(path) {
        return cached_import(path, &default_cache_root());
    }
    Ok(path.to_path_buf())
}

/// Imports `file` once into `cache_root` (keyed by its path, size and modification time)
/// and returns the model directory.
pub fn cached_import(file: &Path, cache_root: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let meta = std::fs::metadata(file).map_err(|e| EngineError::io(file, e))?;
    let abs = std::fs::canonicalize(file).map_err(|e| EngineError::io(file, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(format!("{}|{}|{mtime}", abs.display(), meta.len()).as_bytes());
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_root.join(key);
    if !dir.join("model.safetensors").is_file() {
        import_gguf(file, &dir, true)?;
    }
    Ok(dir)
}
