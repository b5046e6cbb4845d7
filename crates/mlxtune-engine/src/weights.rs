//! Reading and writing weights in safetensors: one file or shards with an index.
//!
//! Every header is checked before MLX sees the file (MLX loads lazily, so a truncated file
//! would otherwise fail late, mid-computation): known dtype, shape matching the byte
//! range, ranges inside the file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use mlx_rs::Array;
pub use mlx_rs::Dtype;

use crate::error::{EngineError, Result};

/// Named tensors, keyed by their checkpoint names.
pub type Weights = HashMap<String, Array>;

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<i64>,
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Parses and checks a safetensors header against the file's size.
pub fn read_header(file: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let bad = |message: String| EngineError::Safetensors {
        file: file.to_path_buf(),
        message,
    };
    let mut f = File::open(file).map_err(|e| EngineError::io(file, e))?;
    let file_len = f.metadata().map_err(|e| EngineError::io(file, e))?.len();
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes).map_err(|_| {
        bad(format!(
            "truncated: {file_len} bytes, too short for a safetensors header"
        ))
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!(
            "truncated or not safetensors: header of {header_len} bytes declared, file has {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("reading header: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let mut out = BTreeMap::new();
    let mut max_end = 0u64;
    for (name, entry) in json {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry["dtype"]
            .as_str()
            .ok_or_else(|| bad(format!("tensor `{name}`: no dtype")))?
            .to_string();
        let size = dtype_size(&dtype)
            .ok_or_else(|| bad(format!("tensor `{name}`: unknown dtype {dtype}")))?;
        let shape: Vec<i64> = entry["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("tensor `{name}`: no shape")))?
            .iter()
            .map(|d| d.as_i64().filter(|d| *d >= 0))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("tensor `{name}`: malformed shape")))?;
        let offsets = entry["data_offsets"]
            .as_array()
            .filter(|o| o.len() == 2)
            .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
            .ok_or_else(|| bad(format!("tensor `{name}`: malformed data_offsets")))?;
        let numel: u64 = shape.iter().map(|d| *d as u64).product();
        if offsets.1 < offsets.0 || offsets.1 - offsets.0 != numel * size {
            return Err(bad(format!(
                "tensor `{name}`: shape {shape:?} of {dtype} needs {} bytes, data_offsets give {}",
                numel * size,
                offsets.1.saturating_sub(offsets.0)
            )));
        }
        max_end = max_end.max(offsets.1);
        out.insert(name, TensorInfo { dtype, shape });
    }
    if max_end > data_len {
        return Err(bad(format!(
            "truncated: tensors need {max_end} bytes of data, the file holds {data_len}"
        )));
    }
    Ok(out)
}

/// Loads one checked safetensors file.
pub fn load_file(file: &Path) -> Result<Weights> {
    read_header(file)?;
    let arrays = Array::load_safetensors(file).map_err(|e| EngineError::Safetensors {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(arrays)
}

/// The safetensors files of a model directory: `model.safetensors`, the shards named by
/// `model.safetensors.index.json`, or (as mlx-lm writes them) every `*.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::config(&index, "(file)", format!("not valid JSON: {e}")))?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| EngineError::config(&index, "weight_map", "missing or not an object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in map.values() {
            let shard = shard.as_str().ok_or_else(|| {
                EngineError::config(&index, "weight_map", "values must be file names")
            })?;
            if shard.contains('/') || shard.contains("..") {
                return Err(EngineError::config(
                    &index,
                    "weight_map",
                    format!("shard `{shard}` must be a file name in the model directory"),
                ));
            }
            let path = dir.join(shard);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        for f in &files {
            if !f.exists() {
                return Err(EngineError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    why: "named by model.safetensors.index.json".into(),
                });
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "safetensors")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("model"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::MissingFile {
            dir: dir.to_path_buf(),
            file: "model.safetensors".into(),
            why: "no weights: expected model.safetensors or model.safetensors.index.json with its shards".into(),
        });
    }
    Ok(files)
}

/// Loads every weight of a model directory.
pub fn load_dir(dir: &Path) -> Result<Weights> {
    let mut all = Weights::new();
    for file in weight_files(dir)? {
        for (name, array) in load_file(&file)? {
            if all.insert(name.clone(), array).is_some() {
                return Err(EngineError::Safetensors {
                    file,
                    message: format!("tensor `{name}` also appears in another shard"),
                });
            }
        }
    }
    Ok(all)
}

/// Writes tensors to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over the target, so a crash leaves either the old file or the new one.
pub fn save_atomic(
    path: &Path,
    weights: &Weights,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{stem}.{}.tmp.safetensors",
        crate::fsutil::unique_suffix()
    ));
    let mut sorted: Vec<(&String, &Array)> = weights.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    // A failed write (a full disk) leaves no temporary file behind.
    Array::save_safetensors(sorted, metadata, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EngineError::Safetensors {
            file: path.to_path_buf(),
            message: format!("writing: {e}"),
        }
    })?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Parses a user-facing dtype name.
pub fn parse_dtype(name: &str) -> Result<Dtype> {
    match name {
        "f32" | "float32" | "fp32" => Ok(Dtype::Float32),
        "bf16" | "bfloat16" => Ok(Dtype::Bfloat16),
        "f16" | "float16" | "fp16" => Ok(Dtype::Float16),
        other => Err(EngineError::invalid(
            "dtype",
            format!("`{other}`: expected f32, bf16 or f16"),
        )),
    }
}

/// The short name of a float dtype.
pub fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Float32 => "f32",
        Dtype::Bfloat16 => "bf16",
        Dtype::Float16 => "f16",
        Dtype::Uint32 => "u32",
        Dtype::Int32 => "i32",
        _ => "other",
    }
}

/// Whether a dtype is a float type that a model may compute in.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::Float32 | Dtype::Bfloat16 | Dtype::Float16 | Dtype::Float64
    )
}
