//! Adapters used after training: a LoRA or DoRA adapter directory (mlx-lm's layout, PEFT's
//! layout, or a training job's output directory) read into the engine's names, checked
//! against a model, then attached for inference or fused into the weights.
//!
//! Each module's scale is folded into its `lora_b` on load, so PEFT's per-module
//! `rank_pattern` / `alpha_pattern` need nothing special and the forward pass runs the
//! adapter at scale 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mlx_rs::{Array, Dtype};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::models::adapted;
use crate::models::{Model, ModelSpec};
use crate::weights::{self, Weights};

/// Which file layout an adapter was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterLayout {
    /// `adapter_config.json` (`lora_parameters`) + `adapters.safetensors`.
    MlxLm,
    /// `adapter_config.json` (`peft_type`) + `adapter_model.safetensors`.
    Peft,
}

/// An adapter in the engine's names: `{module}.lora_a` `[in, r]`, `{module}.lora_b`
/// `[r, out]` already multiplied by its scale, `{module}.magnitude` `[out]` for DoRA.
#[derive(Debug)]
pub struct Adapter {
    /// The directory holding the adapter files.
    pub dir: PathBuf,
    pub layout: AdapterLayout,
    pub dora: bool,
    /// The base model the adapter was trained on, as its config names it.
    pub base_model: Option<String>,
    /// Scaled arrays (float32), by engine name.
    pub weights: Weights,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| EngineError::config(path, "(file)", format!("not valid JSON: {e}")))
}

/// Finds the adapter files in `dir`: mlx-lm's layout first (a job's output directory
/// has it at its top), then PEFT's, then a job's `peft/` folder.
fn locate(dir: &Path) -> Result<(PathBuf, AdapterLayout)> {
    if dir.join("adapters.safetensors").is_file() && dir.join("adapter_config.json").is_file() {
        return Ok((dir.to_path_buf(), AdapterLayout::MlxLm));
    }
    for d in [dir.to_path_buf(), dir.join("peft")] {
        if d.join("adapter_model.safetensors").is_file() && d.join("adapter_config.json").is_file()
        {
            return Ok((d, AdapterLayout::Peft));
        }
    }
    let why = if dir.join("model").join("config.json").is_file() {
        "this is a full fine-tune's output: load its `model` folder with --model instead"
    } else {
        "expected adapter_config.json with adapters.safetensors (mlx-lm) or \
         adapter_model.safetensors (PEFT), or a training job's output directory"
    };
    Err(EngineError::MissingFile {
        dir: dir.to_path_buf(),
        file: "adapter files".into(),
        why: why.into(),
    })
}

impl Adapter {
    /// Reads the adapter in `dir` (mlx-lm or PEFT layout, or a job's output directory).
    pub fn load(dir: &Path) -> Result<Adapter> {
        let (dir, layout) = locate(dir)?;
        let cfg_path = dir.join("adapter_config.json");
        let cfg = read_json(&cfg_path)?;
        let (weights, base_model) = match layout {
            AdapterLayout::MlxLm => (read_mlx_lm(&dir, &cfg_path, &cfg)?, None),
            AdapterLayout::Peft => (
                read_peft(&dir, &cfg_path, &cfg)?,
                cfg["base_model_name_or_path"].as_str().map(str::to_string),
            ),
        };
        let base_model = base_model.or_else(|| cfg["base_model"].as_str().map(str::to_string));
        let dora = weights.keys().any(|k| k.ends_with(".magnitude"));
        mlx_rs::transforms::eval(weights.values())?;
        Ok(Adapter {
            dir,
            layout,
            dora,
            base_model,
            weights,
        })
    }

    /// Module paths that carry an adapter, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .weights
            .keys()
            .filter_map(|k| k.strip_suffix(".lora_a").map(str::to_string))
            .collect();
        m.sort();
        m
    }

    /// Checks every adapted module against the model: one error lists every module that
    /// is not a linear layer of it and every array whose shape does not fit.
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        let problems = self.problems(spec);
        if problems.is_empty() {
            return Ok(());
        }
        Err(EngineError::invalid(
            "adapter",
            format!(
                "{} does not fit this `{}` model:\n  {}",
                self.dir.display(),
                spec.model_type,
                problems.join("\n  ")
            ),
        ))
    }

    fn problems(&self, spec: &ModelSpec) -> Vec<String> {
        let shapes = spec.expected_shapes();
        let mut problems = Vec::new();
        if self.weights.is_empty() {
            problems.push("the adapter holds no LoRA arrays".to_string());
        }
        for m in self.modules() {
            let Some(w) = shapes
                .get(&format!("{m}.weight"))
                .filter(|_| m != "lm_head")
            else {
                problems.push(format!(
                    "`{m}` is not an adaptable linear layer of this model"
                ));
                continue;
            };
            let (out, inp) = (w[0], w[1]);
            let a = &self.weights[&format!("{m}.lora_a")];
            let r = a.dim(-1);
            let want = [
                (format!("{m}.lora_a"), vec![inp, r]),
                (format!("{m}.lora_b"), vec![r, out]),
            ];
            for (name, shape) in want {
                match self.weights.get(&name) {
                    None => problems.push(format!("missing {name}")),
                    Some(x) if x.shape() != shape.as_slice() => problems.push(format!(
                        "{name}: shape {:?}, the model needs {shape:?}",
                        x.shape()
                    )),
                    Some(_) => {}
                }
            }
            if let Some(x) = self.weights.get(&format!("{m}.magnitude")) {
                if x.shape() != [out] {
                    problems.push(format!(
                        "{m}.magnitude: shape {:?}, the model needs [{out}]",
                        x.shape()
                    ));
                }
            }
        }
        problems
    }

    /// Layers the adapter over the model's weights (cast to the model's dtype), so that
    /// every forward pass of `model` runs base + adapter.
    pub fn attach(&self, model: &mut Model) -> Result<()> {
        self.check(&model.spec)?;
        for (name, a) in &self.weights {
            model.weights.insert(name.clone(), a.as_dtype(model.dtype)?);
        }
        mlx_rs::transforms::eval(model.weights.values())?;
        Ok(())
    }

    /// Folds the adapter into the model's weights (quantized layers are dequantized,
    /// updated and quantized again with their own geometry).
    pub fn fuse_into(&self, model: &mut Model) -> Result<()> {
        self.fuse_with_progress(model, &mut |_, _| {})
    }

    /// [`Adapter::fuse_into`], reporting `(modules done, modules)` after each module.
    pub fn fuse_with_progress(
        &self,
        model: &mut Model,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        self.check(&model.spec)?;
        let modules = self.modules();
        for (i, m) in modules.iter().enumerate() {
            let one: Weights = self
                .weights
                .iter()
                .filter(|(k, _)| k.rsplit_once('.').is_some_and(|(p, _)| p == m))
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect();
            adapted::fuse(model, &one, 1.0)?;
            progress(i + 1, modules.len());
        }
        Ok(())
    }
}

fn scaled(b: &Array, scale: f32) -> Result<Array> {
    Ok(b.as_dtype(Dtype::Float32)?
        .multiply(Array::from_f32(scale))?)
}

/// mlx-lm: names as ours (`.m` for DoRA's magnitude), one `lora_parameters.scale`.
fn read_mlx_lm(dir: &Path, cfg_path: &Path, cfg: &Value) -> Result<Weights> {
    let scale = cfg["lora_parameters"]["scale"]
        .as_f64()
        .ok_or_else(|| EngineError::config(cfg_path, "lora_parameters.scale", "required number"))?
        as f32;
    let file = dir.join("adapters.safetensors");
    let mut out = Weights::new();
    for (name, a) in weights::load_file(&file)? {
        let a = a.as_dtype(Dtype::Float32)?;
        if let Some(m) = name.strip_suffix(".lora_b") {
            out.insert(format!("{m}.lora_b"), scaled(&a, scale)?);
        } else if let Some(m) = name.strip_suffix(".m") {
            out.insert(format!("{m}.magnitude"), a);
        } else if name.ends_with(".lora_a") || name.ends_with(".magnitude") {
            out.insert(name, a);
        } else {
            return Err(EngineError::Safetensors {
                file,
                message: format!("tensor `{name}` is not a LoRA or DoRA array"),
            });
        }
    }
    Ok(out)
}

/// PEFT's per-module scale: `alpha / r` (or `alpha / √r` with rsLoRA), with the
/// `rank_pattern` / `alpha_pattern` entries that match the module.
fn peft_scale(cfg: &Value, cfg_path: &Path, module: &str) -> Result<f32> {
    let num = |field: &str| -> Result<f64> {
        cfg[field]
            .as_f64()
            .ok_or_else(|| EngineError::config(cfg_path, field, "required number"))
    };
    let pattern = |field: &str| -> Option<f64> {
        let obj = cfg.get(field)?.as_object()?;
        obj.iter()
            .filter(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .find_map(|(_, v)| v.as_f64())
    };
    let r = pattern("rank_pattern").map_or_else(|| num("r"), Ok)?;
    let alpha = pattern("alpha_pattern").map_or_else(|| num("lora_alpha"), Ok)?;
    let denom = if cfg["use_rslora"].as_bool() == Some(true) {
        r.sqrt()
    } else {
        r
    };
    Ok((alpha / denom) as f32)
}

fn check_peft_config(cfg: &Value, cfg_path: &Path) -> Result<()> {
    if let Some(t) = cfg["peft_type"].as_str() {
        if t != "LORA" {
            return Err(EngineError::config(
                cfg_path,
                "peft_type",
                format!("`{t}` is not supported (only LORA, with or without DoRA)"),
            ));
        }
    }
    if cfg["fan_in_fan_out"].as_bool() == Some(true) {
        return Err(EngineError::config(
            cfg_path,
            "fan_in_fan_out",
            "true is not supported",
        ));
    }
    if cfg["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(EngineError::config(
            cfg_path,
            "bias",
            "trained biases are not supported (only \"none\")",
        ));
    }
    if cfg["modules_to_save"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(EngineError::config(
            cfg_path,
            "modules_to_save",
            "fully trained extra modules are not supported",
        ));
    }
    Ok(())
}

/// One PEFT tensor name, split into (module, kind).
fn peft_name(name: &str) -> Option<(&str, &'static str)> {
    let rest = name.strip_prefix("base_model.model.")?;
    for (suffix, kind) in [
        (".lora_A.weight", "a"),
        (".lora_A.default.weight", "a"),
        (".lora_B.weight", "b"),
        (".lora_B.default.weight", "b"),
        (".lora_magnitude_vector", "m"),
        (".lora_magnitude_vector.weight", "m"),
        (".lora_magnitude_vector.default.weight", "m"),
        (".lora_magnitude_vector.default", "m"),
    ] {
        if let Some(m) = rest.strip_suffix(suffix) {
            return Some((m, kind));
        }
    }
    None
}

/// PEFT: `lora_A` `[r, in]`, `lora_B` `[out, r]`, `lora_magnitude_vector` `[out]`.
fn read_peft(dir: &Path, cfg_path: &Path, cfg: &Value) -> Result<Weights> {
    check_peft_config(cfg, cfg_path)?;
    let file = dir.join("adapter_model.safetensors");
    let mut out = Weights::new();
    let mut scales: BTreeMap<String, f32> = BTreeMap::new();
    for (name, a) in weights::load_file(&file)? {
        let Some((m, kind)) = peft_name(&name) else {
            return Err(EngineError::Safetensors {
                file,
                message: format!("tensor `{name}` is not a PEFT LoRA or DoRA array"),
            });
        };
        let a = a.as_dtype(Dtype::Float32)?;
        match kind {
            "a" => {
                out.insert(format!("{m}.lora_a"), a.t());
            }
            "b" => {
                let s = match scales.get(m) {
                    Some(s) => *s,
                    None => peft_scale(cfg, cfg_path, m)?,
                };
                scales.insert(m.to_string(), s);
                out.insert(format!("{m}.lora_b"), scaled(&a.t(), s)?);
            }
            _ => {
                out.insert(format!("{m}.magnitude"), a);
            }
        }
    }
    Ok(out)
}

impl Adapter {
    /// Writes the adapter in PEFT's layout into `out` (`adapter_model.safetensors` +
    /// `adapter_config.json` naming `base_model`). The scales are already folded into
    /// `lora_B`, so the config says `lora_alpha = r` (scale 1).
    pub fn save_peft(&self, out: &Path, base_model: &str) -> Result<()> {
        let modules = self.modules();
        let mut w = Weights::new();
        let mut rank = 0;
        for m in &modules {
            let a = &self.weights[&format!("{m}.lora_a")];
            rank = rank.max(a.dim(-1));
            let base = format!("base_model.model.{m}");
            w.insert(format!("{base}.lora_A.weight"), a.t());
            w.insert(
                format!("{base}.lora_B.weight"),
                self.weights[&format!("{m}.lora_b")].t(),
            );
            if let Some(mag) = self.weights.get(&format!("{m}.magnitude")) {
                w.insert(format!("{base}.lora_magnitude_vector"), mag.clone());
            }
        }
        let ranks: BTreeMap<&str, i32> = modules
            .iter()
            .map(|m| (m.as_str(), self.weights[&format!("{m}.lora_a")].dim(-1)))
            .filter(|(_, r)| *r != rank)
            .collect();
        let mut targets: Vec<&str> = modules
            .iter()
            .map(|m| m.rsplit('.').next().unwrap_or(m))
            .collect();
        targets.sort();
        targets.dedup();
        let mut layers: Vec<usize> = modules
            .iter()
            .filter_map(|m| adapted::layer_index(m))
            .collect();
        layers.sort();
        layers.dedup();
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": rank,
            "lora_alpha": rank,
            "rank_pattern": ranks,
            "alpha_pattern": ranks,
            "lora_dropout": 0.0,
            "target_modules": targets,
            "layers_to_transform": layers,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_dora": self.dora,
            "use_rslora": false,
            "inference_mode": true,
        });
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        weights::save_atomic(&out.join("adapter_model.safetensors"), &w, &meta)?;
        let text = serde_json::to_string_pretty(&cfg)
            .map_err(|e| EngineError::invalid("adapter_config.json", e.to_string()))?;
        crate::fsutil::write_atomic(&out.join("adapter_config.json"), text.as_bytes())
    }
}
