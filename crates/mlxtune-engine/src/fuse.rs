//! Fusing an adapter into a model and writing the result as a Hugging Face directory
//! (config.json, weights — sharded with an index over a size —, tokenizer files, chat
//! template, generation config), assembled under a temporary name and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::adapters::Adapter;
use crate::error::{EngineError, Result};
use crate::models::adapted::dense_weight;
use crate::models::spec::Role;
use crate::models::Model;
use crate::weights::{self, Weights};

/// The default largest shard: Hugging Face's `save_pretrained` default.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Replaces every MLX-quantized matrix by its dense float weights (in the model's dtype);
/// returns how many were dequantized.
pub fn dequantize_model(model: &mut Model) -> Result<usize> {
    let mut n = 0;
    for e in model.spec.expected_tensors() {
        if e.role == Role::Other {
            continue;
        }
        let prefix = e.name.trim_end_matches(".weight").to_string();
        if !model.weights.contains_key(&format!("{prefix}.scales")) {
            continue;
        }
        let dense = dense_weight(&model.weights, &prefix, e.shape[1])?.as_dtype(model.dtype)?;
        dense.eval()?;
        model.weights.insert(e.name.clone(), dense);
        model.weights.remove(&format!("{prefix}.scales"));
        model.weights.remove(&format!("{prefix}.biases"));
        n += 1;
    }
    model.quantization = None;
    Ok(n)
}

/// Tensor names in shards of at most `max_bytes` each (a larger tensor gets its own).
fn plan_shards(w: &Weights, max_bytes: u64) -> Vec<Vec<String>> {
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    let mut shards: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = 0u64;
    for n in names {
        let bytes = w[n].nbytes() as u64;
        if size + bytes > max_bytes && !shards.last().is_some_and(Vec::is_empty) {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(s) = shards.last_mut() {
            s.push(n.clone());
        }
    }
    shards
}

fn shard_name(i: usize, n: usize) -> String {
    format!("model-{:05}-of-{n:05}.safetensors", i + 1)
}

/// Writes `model` into `dir`: config.json and one weights file, or shards with
/// `model.safetensors.index.json` when the weights exceed `max_shard_bytes`.
fn write_model(model: &Model, dir: &Path, max_shard_bytes: u64) -> Result<()> {
    let shards = plan_shards(&model.weights, max_shard_bytes);
    let pick = |names: &[String]| -> Weights {
        names
            .iter()
            .map(|n| (n.clone(), model.weights[n].clone()))
            .collect()
    };
    // Model::save writes config.json and model.safetensors; with one shard that is all.
    let first = Model {
        dir: model.dir.clone(),
        config: model.config.clone(),
        spec: model.spec.clone(),
        weights: pick(&shards[0]),
        dtype: model.dtype,
        quantization: model.quantization,
    };
    first.save(dir)?;
    if shards.len() == 1 {
        return Ok(());
    }
    let n = shards.len();
    let single = dir.join("model.safetensors");
    let first_shard = dir.join(shard_name(0, n));
    std::fs::rename(&single, &first_shard).map_err(|e| EngineError::io(&first_shard, e))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut map = BTreeMap::new();
    let mut total = 0u64;
    for (i, names) in shards.iter().enumerate() {
        let file = shard_name(i, n);
        if i > 0 {
            weights::save_atomic(&dir.join(&file), &pick(names), &meta)?;
        }
        for name in names {
            total += model.weights[name].nbytes() as u64;
            map.insert(name.clone(), file.clone());
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": map });
    let text = serde_json::to_string_pretty(&index)
        .map_err(|e| EngineError::invalid("model.safetensors.index.json", e.to_string()))?;
    crate::fsutil::write_atomic(&dir.join("model.safetensors.index.json"), text.as_bytes())
}

/// A temporary directory beside `out`, removed unless renamed.
fn temp_dir_beside(out: &Path) -> Result<PathBuf> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parent.join(format!(".{name}.{}.tmp", crate::fsutil::unique_suffix())))
}

/// Saves `model` (with its tokenizer files) as a new directory `out`, which must not
/// exist yet: written under a temporary name and renamed, so `out` is complete or absent.
pub fn save_model_dir(model: &Model, out: &Path, max_shard_bytes: u64) -> Result<()> {
    if out.exists() {
        return Err(EngineError::invalid(
            "output",
            format!("{} already exists; choose a new directory", out.display()),
        ));
    }
    let tmp = temp_dir_beside(out)?;
    let result = (|| {
        write_model(model, &tmp, max_shard_bytes)?;
        crate::tokenizer::copy_tokenizer_files(&model.dir, &tmp)?;
        std::fs::rename(&tmp, out).map_err(|e| EngineError::io(out, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Optionally dequantizes `model`, folds `adapter` (if any) into it, and saves the model as
/// the new directory `out` with its tokenizer files.
pub fn fuse_and_save(
    model: &mut Model,
    adapter: Option<&Adapter>,
    dequantize: bool,
    out: &Path,
    max_shard_bytes: u64,
) -> Result<()> {
    fuse_and_save_with_progress(
        model,
        adapter,
        dequantize,
        out,
        max_shard_bytes,
        &mut |_, _| {},
    )
}

/// Optionally dequantizes `model`, folds `adapter` (if any) into it, and saves the model as
/// the new directory `out` with its tokenizer files; `progress` gets `(modules fused,
/// modules)`.
pub fn fuse_and_save_with_progress(
    model: &mut Model,
    adapter: Option<&Adapter>,
    dequantize: bool,
    out: &Path,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    // Dequantizing first makes the fused float model exactly what was trained (the
    // quantized base plus the adapter), with no second rounding.
    if dequantize {
        dequantize_model(model)?;
    }
    if let Some(a) = adapter {
        a.fuse_with_progress(model, progress)?;
    }
    save_model_dir(model, out, max_shard_bytes)
}
