//! Writing a model as one GGUF file: llama.cpp's tensor names and layouts, architecture
//! and tokenizer metadata, tensors quantized block by block by candle's GGML kernels, the
//! file written under a temporary name and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use mlx_rs::{Array, Dtype};

use super::arch::{arch_metadata, rope_factors};
use super::layout;
use super::names::{tensor_names, TensorName};
use super::quant::{tensor_type, type_name, GgufQuant, TensorRole};
use super::vocab::tokenizer_metadata;
use crate::error::{EngineError, Result};
use crate::models::adapted::dense_weight;
use crate::models::{LayerKind, Model, ModelSpec};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub tensors: usize,
    pub metadata_keys: usize,
    pub bytes: u64,
    /// How many tensors got each GGML type (llama.cpp's names), sorted by name.
    pub types: Vec<(String, usize)>,
}

/// Progress of an export: `done` of `total` tensors, the one just finished.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// candle's message without the backtrace it appends when `RUST_BACKTRACE` is set.
pub(crate) fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

pub(crate) fn candle_err(what: &str, e: candle_core::Error) -> EngineError {
    EngineError::invalid(what, first_line(&e))
}

/// The float32 values of a checkpoint tensor in llama.cpp's layout (dequantized if the
/// model is MLX-quantized; q/k rows permuted for llama; conv kernels `[h, L]`).
fn gguf_layout_array(model: &Model, t: &TensorName) -> Result<Array> {
    let spec = &model.spec;
    let shapes = spec.expected_shapes();
    let shape = &shapes[&t.hf];
    let a = match t.hf.strip_suffix(".weight") {
        Some(prefix) if shape.len() == 2 => dense_weight(&model.weights, prefix, shape[1])?,
        _ => model
            .weights
            .get(&t.hf)
            .cloned()
            .ok_or_else(|| EngineError::invalid(&t.hf, "the model has no such tensor"))?,
    };
    layout::to_gguf(spec, &t.gguf, &a.as_dtype(Dtype::Float32)?)
}

/// `(index among attention layers, attention layer count)` for `attn_v`, `(layer, layer
/// count)` for `ffn_down`: what Q4_K_M's choice of more bits looks at.
fn position(spec: &ModelSpec, gguf: &str) -> Option<(usize, usize)> {
    let i: usize = gguf.strip_prefix("blk.")?.split('.').next()?.parse().ok()?;
    if gguf.contains("attn_v") {
        let attn: Vec<usize> = (0..spec.num_layers())
            .filter(|j| spec.layers[*j] == LayerKind::Attention)
            .collect();
        return Some((attn.iter().position(|j| *j == i)?, attn.len()));
    }
    Some((i, spec.num_layers()))
}

fn quantize(name: &str, values: Vec<f32>, shape: &[usize], ty: GgmlDType) -> Result<QTensor> {
    let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| candle_err(name, e))?;
    QTensor::quantize(&t, ty).map_err(|e| candle_err(&format!("tensor `{name}`"), e))
}

/// Every tensor of the model, converted and quantized, in checkpoint order.
fn tensors(
    model: &Model,
    quant: GgufQuant,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QTensor)>> {
    let spec = &model.spec;
    let names = tensor_names(spec);
    let has_output = names.iter().any(|n| n.gguf == "output.weight");
    let factors = rope_factors(spec);
    let total = names.len() + usize::from(factors.is_some());
    let mut out = Vec::with_capacity(total);
    for t in &names {
        let a = gguf_layout_array(model, t)?;
        a.eval()?;
        let shape: Vec<usize> = a.shape().iter().map(|d| *d as usize).collect();
        let role = TensorRole {
            name: &t.gguf,
            shape: &shape,
            has_output,
            position: position(spec, &t.gguf),
        };
        let ty = tensor_type(quant, &role);
        let q = quantize(&t.gguf, a.as_slice::<f32>().to_vec(), &shape, ty)?;
        out.push((t.gguf.clone(), q));
        progress(Progress {
            done: out.len(),
            total,
            tensor: &t.gguf,
        });
    }
    if let Some(f) = factors {
        let n = f.len();
        out.push((
            "rope_freqs.weight".into(),
            quantize("rope_freqs.weight", f, &[n], GgmlDType::F32)?,
        ));
        progress(Progress {
            done: total,
            total,
            tensor: "rope_freqs.weight",
        });
    }
    Ok(out)
}

/// All metadata of the file: architecture, file type, tokenizer.
fn metadata(model: &Model, quant: GgufQuant, name: &str) -> Result<Vec<(String, Value)>> {
    let mut m = arch_metadata(&model.spec, name);
    m.push(("general.file_type".into(), Value::U32(quant.file_type())));
    if quant.is_quantized() {
        m.push(("general.quantization_version".into(), Value::U32(2)));
    }
    m.extend(tokenizer_metadata(&model.dir, &model.spec)?);
    Ok(m)
}

/// Writes `model` to `out` as GGUF with file type `quant`. Adapters must already be
/// fused; an MLX-quantized model is dequantized first. The file appears under its name
/// only once complete.
pub fn export_gguf(
    model: &Model,
    out: &Path,
    quant: GgufQuant,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportSummary> {
    if let Some(k) = model.weights.keys().find(|k| k.ends_with(".lora_a")) {
        return Err(EngineError::invalid(
            "model",
            format!("adapter array `{k}` is attached; fuse the adapter before exporting"),
        ));
    }
    let name = model
        .dir
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let meta = metadata(model, quant, &name)?;
    let tensors = tensors(model, quant, progress)?;
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, t) in &tensors {
        *types.entry(type_name(t.dtype()).to_string()).or_default() += 1;
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let bytes = write_atomic(out, |w| {
        gguf_file::write(w, &meta_refs, &tensor_refs).map_err(|e| candle_err("gguf", e))
    })?;
    Ok(ExportSummary {
        tensors: tensors.len(),
        metadata_keys: meta.len(),
        bytes,
        types: types.into_iter().collect(),
    })
}

/// Runs `write` on a temporary file beside `out`, syncs it and renames it to `out`; on
/// failure the temporary file is removed and `out` is untouched.
fn write_atomic(out: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<u64> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.tmp",
        crate::fsutil::unique_suffix()
    ));
    let result = (|| -> Result<u64> {
        let f = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        let mut w = BufWriter::new(f);
        write(&mut w)?;
        w.flush().map_err(|e| EngineError::io(&tmp, e))?;
        let f = w
            .into_inner()
            .map_err(|e| EngineError::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| EngineError::io(&tmp, e))?;
        let len = f.metadata().map_err(|e| EngineError::io(&tmp, e))?.len();
        std::fs::rename(&tmp, out).map_err(|e| EngineError::io(out, e))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
