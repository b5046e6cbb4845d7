//! Fusing an adapter into a model and writing the result as a Hugging Face directory
//! (config.json, model.safetensors, tokenizer files, chat template, generation config).

use std::path::Path;

use crate::adapters::Adapter;
use crate::error::Result;
use crate::models::adapted::dense_weight;
use crate::models::spec::Role;
use crate::models::Model;

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

/// Folds `adapter` (if any) into `model`, optionally dequantizes, and saves the model to
/// `out` with its tokenizer files.
pub fn fuse_and_save(
    model: &mut Model,
    adapter: Option<&Adapter>,
    dequantize: bool,
    out: &Path,
) -> Result<()> {
    if let Some(a) = adapter {
        a.fuse_into(model)?;
    }
    if dequantize {
        dequantize_model(model)?;
    }
    model.save(out)?;
    crate::tokenizer::copy_tokenizer_files(&model.dir, out)
}
