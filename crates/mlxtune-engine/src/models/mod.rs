//! Models: one file per architecture, named after `model_type`, each turning its
//! `config.json` into a [`ModelSpec`]; one shared forward pass; strict loading.

pub mod adapted;
pub mod cache;
pub mod chunked_sum;
pub mod config;
pub mod forward;
pub mod layer;
pub mod lfm2;
pub mod llama;
pub mod packed_attention;
pub mod qwen2;
pub mod qwen3;
pub mod random;
pub mod remat;
pub mod shared_input;
pub mod spec;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};

pub use cache::Cache;
pub use config::HfConfig;
pub use forward::{ForwardCtx, Params};
pub use spec::{LayerKind, ModelSpec, Role};

use crate::error::{EngineError, Result};
use crate::weights::{self, Weights};

type SpecFn = fn(&HfConfig) -> Result<ModelSpec>;

/// `model_type` → the function that reads its config.
const REGISTRY: &[(&str, SpecFn)] = &[
    ("lfm2", lfm2::spec),
    ("llama", llama::spec),
    ("qwen2", qwen2::spec),
    ("qwen3", qwen3::spec),
];

/// Other `model_type` names that are exactly one of the above.
const ALIASES: &[(&str, &str)] = &[("mistral", "llama")];

/// Names of the supported architectures.
pub fn supported_model_types() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Reads the architecture from a parsed config.
pub fn spec_from_config(cfg: &HfConfig) -> Result<ModelSpec> {
    let model_type = cfg.model_type()?;
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == model_type)
        .map(|(_, to)| *to)
        .unwrap_or(model_type.as_str());
    if model_type == "mistral" && cfg.has("sliding_window") {
        return Err(cfg.err(
            "sliding_window",
            "sliding-window attention is not supported",
        ));
    }
    let f = REGISTRY
        .iter()
        .find(|(name, _)| *name == canonical)
        .map(|(_, f)| f)
        .ok_or_else(|| EngineError::UnsupportedModel {
            file: cfg.file.clone(),
            model_type: model_type.clone(),
            supported: supported_model_types().join(", "),
        })?;
    f(cfg)
}

/// MLX affine quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub group_size: i32,
    pub bits: i32,
}

impl QuantSpec {
    /// Checks the values MLX's affine kernels support and this project tests.
    pub fn validate(&self, field: &str) -> Result<()> {
        if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
            return Err(EngineError::invalid(
                &format!("{field}.bits"),
                format!("{} is not one of 2, 3, 4, 5, 6, 8", self.bits),
            ));
        }
        if ![32, 64, 128].contains(&self.group_size) {
            return Err(EngineError::invalid(
                &format!("{field}.group_size"),
                format!("{} is not one of 32, 64, 128", self.group_size),
            ));
        }
        Ok(())
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compute dtype for float weights; `None` keeps the checkpoint's.
    pub dtype: Option<Dtype>,
    /// Quantize the float linear layers (and embedding) on load.
    pub quantize: Option<QuantSpec>,
}

/// A loaded model: its description and its weights.
pub struct Model {
    pub dir: PathBuf,
    pub config: HfConfig,
    pub spec: ModelSpec,
    pub weights: Weights,
    /// Dtype of the float weights.
    pub dtype: Dtype,
    /// Set when linear layers are quantized.
    pub quantization: Option<QuantSpec>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("dir", &self.dir)
            .field("model_type", &self.spec.model_type)
            .field("dtype", &self.dtype)
            .field("quantization", &self.quantization)
            .finish()
    }
}

fn quant_from_config(
    cfg: &HfConfig,
) -> Result<(Option<QuantSpec>, HashMap<String, Option<QuantSpec>>)> {
    let Some(q) = cfg
        .get("quantization")
        .or_else(|| cfg.get("quantization_config"))
    else {
        return Ok((None, HashMap::new()));
    };
    let obj = q
        .as_object()
        .ok_or_else(|| cfg.err("quantization", "expected an object"))?;
    if let Some(mode) = obj.get("mode").and_then(|m| m.as_str()) {
        if mode != "affine" {
            return Err(cfg.err(
                "quantization.mode",
                format!("`{mode}` is not supported (only affine)"),
            ));
        }
    }
    let int = |key: &str| -> Result<i32> {
        obj.get(key)
            .and_then(|v| v.as_i64())
            .map(|v| v as i32)
            .ok_or_else(|| cfg.err(&format!("quantization.{key}"), "required integer"))
    };
    let default = QuantSpec {
        group_size: int("group_size")?,
        bits: int("bits")?,
    };
    default
        .validate("quantization")
        .map_err(|e| cfg.err("quantization", e.to_string()))?;
    let mut per_module = HashMap::new();
    for (k, v) in obj {
        if let Some(o) = v.as_object() {
            let gs = o
                .get("group_size")
                .and_then(|v| v.as_i64())
                .unwrap_or(default.group_size as i64);
            let bits = o
                .get("bits")
                .and_then(|v| v.as_i64())
                .unwrap_or(default.bits as i64);
            per_module.insert(
                k.clone(),
                Some(QuantSpec {
                    group_size: gs as i32,
                    bits: bits as i32,
                }),
            );
        } else if v.as_bool() == Some(false) {
            per_module.insert(k.clone(), None);
        }
    }
    Ok((Some(default), per_module))
}

/// Renames and drops that every checkpoint of `spec` may need, applied once before the
/// strict check.
fn sanitize(spec: &ModelSpec, w: &mut Weights) -> Result<()> {
    w.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if spec.tie_embeddings {
        for s in ["weight", "scales", "biases"] {
            w.remove(&format!("lm_head.{s}"));
        }
    }
    if spec.model_type == "lfm2" {
        // mlx-lm stores the depthwise kernel as [h, L, 1]; Hugging Face as [h, 1, L].
        let l = spec.conv_l_cache;
        for (name, a) in w.iter_mut() {
            if name.ends_with(".conv.conv.weight")
                && a.ndim() == 3
                && a.dim(1) == l
                && a.dim(2) == 1
                && l != 1
            {
                *a = a.transpose_axes(&[0, 2, 1])?;
            }
        }
    }
    Ok(())
}

/// Compares loaded tensors with what the architecture expects; returns one list of every
/// missing, unexpected, mis-shaped or mis-typed tensor.
fn check_weights(
    spec: &ModelSpec,
    w: &Weights,
    quant: Option<QuantSpec>,
    per_module: &HashMap<String, Option<QuantSpec>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    for e in spec.expected_tensors() {
        let prefix = e.name.trim_end_matches(".weight").to_string();
        let scales_name = format!("{prefix}.scales");
        if e.role != Role::Other && w.contains_key(&scales_name) {
            let q = match per_module.get(&prefix) {
                Some(Some(q)) => Some(*q),
                Some(None) => None,
                None => quant,
            };
            let Some(q) = q else {
                problems.push(format!(
                    "{scales_name}: quantized, but config.json has no quantization for it"
                ));
                consumed.insert(scales_name);
                continue;
            };
            let (out, inp) = (e.shape[0], e.shape[1]);
            let want = [
                (e.name.clone(), vec![out, inp * q.bits / 32]),
                (scales_name.clone(), vec![out, inp / q.group_size]),
                (format!("{prefix}.biases"), vec![out, inp / q.group_size]),
            ];
            for (name, shape) in want {
                match w.get(&name) {
                    None => problems.push(format!("missing {name} (shape {shape:?})")),
                    Some(a) if a.shape() != shape.as_slice() => problems.push(format!(
                        "{name}: shape {:?}, expected {shape:?} ({}-bit, group size {})",
                        a.shape(),
                        q.bits,
                        q.group_size
                    )),
                    Some(_) => {}
                }
                consumed.insert(name);
            }
            continue;
        }
        match w.get(&e.name) {
            None => problems.push(format!("missing {} (shape {:?})", e.name, e.shape)),
            Some(a) if a.shape() != e.shape.as_slice() => problems.push(format!(
                "{}: shape {:?}, expected {:?}",
                e.name,
                a.shape(),
                e.shape
            )),
            Some(a) if !weights::is_float(a.dtype()) => problems.push(format!(
                "{}: dtype {:?}, expected a float type",
                e.name,
                a.dtype()
            )),
            Some(_) => {}
        }
        consumed.insert(e.name);
    }
    let mut extra: Vec<&String> = w.keys().filter(|k| !consumed.contains(*k)).collect();
    extra.sort();
    for k in extra {
        problems.push(format!("unexpected {k}"));
    }
    problems
}

/// Quantizes every float linear layer (and the embedding) whose input width is a
/// multiple of the group size (the others stay float, with a warning naming them). Returns
/// how many matrices were quantized.
pub fn quantize_weights(spec: &ModelSpec, w: &mut Weights, q: QuantSpec) -> Result<usize> {
    q.validate("quantize")?;
    let mut n = 0;
    let mut narrow: Vec<String> = Vec::new();
    for e in spec.expected_tensors() {
        if e.role == Role::Other {
            continue;
        }
        if e.shape[1] % q.group_size != 0 {
            narrow.push(format!("{} (width {})", e.name, e.shape[1]));
            continue;
        }
        let prefix = e.name.trim_end_matches(".weight");
        if w.contains_key(&format!("{prefix}.scales")) {
            continue;
        }
        let Some(dense) = w.get(&e.name) else {
            continue;
        };
        let (packed, scales, biases) = mlx_rs::ops::quantize(dense, q.group_size, q.bits)?;
        mlx_rs::transforms::eval([&packed, &scales, &biases])?;
        w.insert(e.name.clone(), packed);
        w.insert(format!("{prefix}.scales"), scales);
        w.insert(format!("{prefix}.biases"), biases);
        n += 1;
    }
    if let Some(first) = narrow.first() {
        tracing::warn!(
            "{} matrices left unquantized: their width is not a multiple of group size {} \
             (e.g. {first}); a smaller --group-size (32) quantizes them",
            narrow.len(),
            q.group_size
        );
    }
    Ok(n)
}

/// The dtype a checkpoint's `config.json` declares (`dtype`, or `torch_dtype`).
pub fn checkpoint_dtype(cfg: &serde_json::Map<String, serde_json::Value>) -> Option<Dtype> {
    let name = cfg
        .get("dtype")
        .or_else(|| cfg.get("torch_dtype"))?
        .as_str()?;
    match name {
        "float32" => Some(Dtype::Float32),
        "bfloat16" => Some(Dtype::Bfloat16),
        "float16" => Some(Dtype::Float16),
        _ => None,
    }
}

/// A floating-point dtype (the ones weights are cast between).
pub fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::Float32 | Dtype::Bfloat16 | Dtype::Float16)
}

impl Model {
    /// Loads a Hugging Face (or mlx-lm) model directory strictly.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model> {
        crate::runtime::init()?;
        if !dir.is_dir() {
            return Err(EngineError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        let config = HfConfig::read(dir)?;
        let spec = spec_from_config(&config)?;
        let (quant, per_module) = quant_from_config(&config)?;
        let mut w = weights::load_dir(dir)?;
        sanitize(&spec, &mut w)?;
        let problems = check_weights(&spec, &w, quant, &per_module);
        if !problems.is_empty() {
            return Err(EngineError::WeightMismatch {
                dir: dir.to_path_buf(),
                model_type: spec.model_type.clone(),
                problems,
            });
        }
        let stored = w
            .get(&format!("{}.weight", spec.names.final_norm))
            .map(|a| a.dtype())
            .unwrap_or(Dtype::Float32);
        let dtype = opts.dtype.unwrap_or(stored);
        for a in w.values_mut() {
            if weights::is_float(a.dtype()) && a.dtype() != dtype {
                *a = a.as_dtype(dtype)?;
            }
        }
        let mut quantization = quant;
        if let Some(q) = opts.quantize {
            if quant.is_some() {
                return Err(EngineError::invalid(
                    "quantize",
                    format!("{} is already quantized", dir.display()),
                ));
            }
            quantize_weights(&spec, &mut w, q)?;
            quantization = Some(q);
        }
        let arrays: Vec<&Array> = w.values().collect();
        mlx_rs::transforms::eval(arrays)?;
        tracing::info!(
            model_type = %spec.model_type,
            params = spec.num_parameters(),
            dtype = weights::dtype_name(dtype),
            quantized = quantization.is_some(),
            "model loaded from {}",
            dir.display()
        );
        Ok(Model {
            dir: dir.to_path_buf(),
            config,
            spec,
            weights: w,
            dtype,
            quantization,
        })
    }

    /// The model's own parameters, nothing layered over them.
    pub fn params(&self) -> Params<'_> {
        Params::new(&self.weights)
    }

    /// Logits `[B, T, vocab]` for `tokens` `[B, T]` (int32), optionally with a cache.
    pub fn forward(&self, tokens: &Array, cache: Option<&mut Cache>) -> Result<Array> {
        forward::forward(
            &self.spec,
            &self.params(),
            tokens,
            ForwardCtx {
                cache,
                segments: None,
                attention_reach: None,
                checkpoint_layers: 0,
                checkpoint_mlps: 0,
                lean: false,
            },
        )
    }

    /// A fresh decoding cache.
    pub fn new_cache(&self) -> Cache {
        Cache::new(&self.spec)
    }

    /// Writes config.json (with the quantization entry when quantized) and
    /// model.safetensors to `out`. The tokenizer files are the caller's to copy
    /// ([`crate::tokenizer::copy_tokenizer_files`]): the model knows nothing of them.
    pub fn save(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
        let mut cfg = self.config.json.clone();
        cfg.remove("quantization_config");
        match self.quantization {
            Some(q) => {
                cfg.insert(
                    "quantization".into(),
                    serde_json::to_value(q)
                        .map_err(|e| EngineError::serialization("quantization", e))?,
                );
            }
            None => {
                cfg.remove("quantization");
            }
        }
        let dtype_key = if cfg.contains_key("dtype") {
            "dtype"
        } else {
            "torch_dtype"
        };
        cfg.insert(
            dtype_key.into(),
            serde_json::Value::String(
                match self.dtype {
                    Dtype::Bfloat16 => "bfloat16",
                    Dtype::Float16 => "float16",
                    _ => "float32",
                }
                .into(),
            ),
        );
        let text = serde_json::to_string_pretty(&cfg)
            .map_err(|e| EngineError::serialization("config.json", e))?;
        crate::fsutil::write_atomic(&out.join("config.json"), text.as_bytes())?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "mlx".to_string());
        weights::save_atomic(&out.join("model.safetensors"), &self.weights, &meta)?;
        Ok(())
    }
}
