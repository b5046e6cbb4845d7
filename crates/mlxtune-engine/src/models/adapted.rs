//! Linear layers with adapters, as arithmetic on a model's weights: which layer a module is
//! in, a dense copy of a (possibly quantized) weight, and folding LoRA / DoRA adapters into
//! the weights. Used by inference with adapters, fusing, export and training alike.

use mlx_rs::ops::{dequantize, quantize};
use mlx_rs::{Array, Dtype};

use super::forward::quant_geometry;
use super::Model;
use crate::error::{EngineError, Result};
use crate::weights::Weights;

/// The layer number of `model.layers.N....`.
pub fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A dense float copy of a (possibly quantized) linear weight.
pub fn dense_weight(w: &Weights, prefix: &str, in_dim: i32) -> Result<Array> {
    let weight = &w[&format!("{prefix}.weight")];
    match w.get(&format!("{prefix}.scales")) {
        Some(scales) => {
            let (gs, bits) = quant_geometry(weight, scales, in_dim);
            Ok(dequantize(
                weight,
                scales,
                w.get(&format!("{prefix}.biases")),
                gs,
                bits,
            )?)
        }
        None => Ok(weight.clone()),
    }
}

/// Folds adapters into the model's weights: `W + s·(A·B)ᵀ` (DoRA: rows rescaled to the
/// magnitudes); quantized layers are dequantized, updated and quantized again.
pub fn fuse(model: &mut Model, adapters: &Weights, scale: f32) -> Result<()> {
    let shapes = model.spec.expected_shapes();
    let mut modules: Vec<String> = adapters
        .keys()
        .filter_map(|k| k.strip_suffix(".lora_a").map(str::to_string))
        .collect();
    modules.sort();
    for m in modules {
        let shape = shapes.get(&format!("{m}.weight")).ok_or_else(|| {
            EngineError::invalid(
                "adapters",
                format!("`{m}` is not a linear layer of this model"),
            )
        })?;
        let in_dim = shape[1];
        let w = dense_weight(&model.weights, &m, in_dim)?;
        let dtype = w.dtype();
        let a = &adapters[&format!("{m}.lora_a")];
        let b = &adapters[&format!("{m}.lora_b")];
        let delta = mlx_rs::ops::matmul(a, b)?
            .t()
            .multiply(Array::from_f32(scale))?;
        let mut fused = w.as_dtype(Dtype::Float32)?.add(&delta)?;
        if let Some(mag) = adapters.get(&format!("{m}.magnitude")) {
            let norm = fused.square()?.sum_axis(1, false)?.sqrt()?;
            fused = fused.multiply(mag.divide(&norm)?.expand_dims(1)?)?;
        }
        let fused = fused.as_dtype(dtype)?;
        let scales_name = format!("{m}.scales");
        if let Some(scales) = model.weights.get(&scales_name) {
            let (gs, bits) = quant_geometry(&model.weights[&format!("{m}.weight")], scales, in_dim);
            let (q, s, bz) = quantize(&fused, gs, bits)?;
            model.weights.insert(format!("{m}.weight"), q);
            model.weights.insert(scales_name, s);
            model.weights.insert(format!("{m}.biases"), bz);
        } else {
            model.weights.insert(format!("{m}.weight"), fused);
        }
    }
    mlx_rs::transforms::eval(model.weights.values())?;
    Ok(())
}
