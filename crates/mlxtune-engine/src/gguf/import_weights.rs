//! A GGUF file's tensors in checkpoint names and layouts: dequantized to float (F16 / BF16
//! kept as such), or — for Q8_0 / Q4_0 / Q4_1 matrices when asked — repacked as MLX
//! affine-quantized ones, with the `quantization` entry config.json then needs.

use std::collections::BTreeMap;

use candle_core::quantized::GgmlDType;
use mlx_rs::{Array, Dtype};
use serde_json::{json, Value as J};

use super::import::GgufFile;
use super::layout;
use super::names::{tensor_names, TensorName};
use super::to_mlx::{to_mlx, GROUP};
use crate::error::{EngineError, Result};
use crate::models::ModelSpec;
use crate::weights::Weights;

/// Module prefix → bits, for the matrices kept quantized.
pub type Quantized = BTreeMap<String, i32>;

/// Reports every tensor the architecture has no place for, in one error.
fn check_names(g: &GgufFile, spec: &ModelSpec, names: &[TensorName]) -> Result<()> {
    let mut unexpected: Vec<String> = g
        .content
        .tensor_infos
        .keys()
        .filter(|k| *k != "rope_freqs.weight" && !names.iter().any(|n| &n.gguf == *k))
        .cloned()
        .collect();
    if g.content.tensor_infos.contains_key("rope_freqs.weight") {
        unexpected
            .push("rope_freqs.weight (Llama 3 RoPE scaling is not supported on import)".into());
    }
    if unexpected.is_empty() {
        return Ok(());
    }
    unexpected.sort();
    Err(EngineError::invalid(
        &g.path.display().to_string(),
        format!(
            "tensors this `{}` model has no place for: {}",
            spec.model_type,
            unexpected.join(", ")
        ),
    ))
}

fn float_tensor(g: &mut GgufFile, spec: &ModelSpec, n: &TensorName) -> Result<Array> {
    let (values, shape, dtype) = g.tensor_f32(&n.gguf)?;
    let shape: Vec<i32> = shape.iter().map(|d| *d as i32).collect();
    let a = layout::from_gguf(spec, &n.gguf, &Array::from_slice(&values, &shape))?;
    Ok(match dtype {
        GgmlDType::F16 => a.as_dtype(Dtype::Float16)?,
        GgmlDType::BF16 => a.as_dtype(Dtype::Bfloat16)?,
        _ => a,
    })
}

/// Inserts the MLX form of a Q8_0 / Q4_0 / Q4_1 matrix; false if it has none.
fn try_quantized(
    g: &mut GgufFile,
    spec: &ModelSpec,
    n: &TensorName,
    w: &mut Weights,
) -> Result<Option<i32>> {
    let Some(prefix) = n.hf.strip_suffix(".weight") else {
        return Ok(None);
    };
    let info = &g.content.tensor_infos[&n.gguf];
    let dims = info.shape.dims().to_vec();
    if dims.len() != 2
        || !matches!(
            info.ggml_dtype,
            GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q4_1
        )
    {
        return Ok(None);
    }
    let (raw, shape, ty) = g.tensor_raw(&n.gguf)?;
    let Some(q) = to_mlx(ty, &raw, shape[0], shape[1]) else {
        return Ok(None);
    };
    for (suffix, a) in [
        ("weight", q.packed),
        ("scales", q.scales),
        ("biases", q.biases),
    ] {
        let a = layout::from_gguf(spec, &n.gguf, &a)?;
        a.eval()?;
        w.insert(format!("{prefix}.{suffix}"), a);
    }
    Ok(Some(q.bits))
}

/// Every tensor of the file under its checkpoint name; and the modules kept quantized.
pub fn read_weights(
    g: &mut GgufFile,
    spec: &ModelSpec,
    keep_quantized: bool,
) -> Result<(Weights, Quantized)> {
    let names = tensor_names(spec);
    check_names(g, spec, &names)?;
    let mut w = Weights::new();
    let mut quantized = Quantized::new();
    for n in &names {
        if !g.content.tensor_infos.contains_key(&n.gguf) {
            continue; // reported by the strict load, with every other missing tensor
        }
        if keep_quantized {
            if let Some(bits) = try_quantized(g, spec, n, &mut w)? {
                quantized.insert(n.hf.trim_end_matches(".weight").to_string(), bits);
                continue;
            }
        }
        let a = float_tensor(g, spec, n)?;
        a.eval()?;
        w.insert(n.hf.clone(), a);
    }
    Ok((w, quantized))
}

/// config.json's `quantization`: the most common bits as the default, other modules listed.
pub fn quantization_entry(q: &Quantized) -> Option<J> {
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for b in q.values() {
        *counts.entry(*b).or_default() += 1;
    }
    let (default, _) = counts.iter().max_by_key(|(_, n)| **n)?;
    let mut entry = json!({ "group_size": GROUP, "bits": default, "mode": "affine" });
    for (module, bits) in q.iter().filter(|(_, b)| *b != default) {
        entry[module] = json!({ "group_size": GROUP, "bits": bits });
    }
    Some(entry)
}
