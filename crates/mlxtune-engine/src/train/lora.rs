//! Adapters: which linear layers get them, their initialisation (A ~ U(±1/√in), B = 0,
//! DoRA magnitudes = row norms of W), saving in mlx-lm's and PEFT's layouts, loading,
//! and fusing them into the base weights.

use std::path::Path;

use mlx_rs::Dtype;
use serde_json::json;

use super::spec::{module_matches, FineTuneType, Targets, TrainSpec};
use crate::error::{EngineError, Result};
pub use crate::models::adapted::{dense_weight, fuse, layer_index};
use crate::models::{Model, ModelSpec};
use crate::weights::{self, Weights};

/// Module paths (without `.weight`) that get adapters: linear layers of the chosen
/// layers, never the output head.
pub fn target_modules(spec: &ModelSpec, targets: &Targets, num_layers: Option<u32>) -> Vec<String> {
    let first = num_layers.map_or(0, |n| spec.num_layers().saturating_sub(n as usize));
    spec.linear_modules()
        .into_iter()
        .filter(|m| m != "lm_head")
        .filter(|m| layer_index(m).is_some_and(|i| i >= first))
        .filter(|m| match targets {
            Targets::AllLinear => true,
            Targets::Names(names) => names.iter().any(|n| module_matches(m, n)),
        })
        .collect()
}

/// Fresh adapters (float32) for `modules`.
pub fn init_adapters(model: &Model, modules: &[String], spec: &TrainSpec) -> Result<Weights> {
    let shapes = model.spec.expected_shapes();
    let mut out = Weights::new();
    let r = spec.lora_rank as i32;
    for (i, m) in modules.iter().enumerate() {
        let shape = &shapes[&format!("{m}.weight")];
        let (out_dim, in_dim) = (shape[0], shape[1]);
        let bound = 1.0 / (in_dim as f32).sqrt();
        let k = mlx_rs::random::key(spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64))?;
        let a = mlx_rs::random::uniform::<_, f32>(-bound, bound, &[in_dim, r][..], &k)?;
        out.insert(format!("{m}.lora_a"), a);
        out.insert(
            format!("{m}.lora_b"),
            mlx_rs::ops::zeros::<f32>(&[r, out_dim])?,
        );
        if spec.fine_tune_type == FineTuneType::Dora {
            let w = dense_weight(&model.weights, m, in_dim)?.as_dtype(Dtype::Float32)?;
            out.insert(
                format!("{m}.magnitude"),
                w.square()?.sum_axis(1, false)?.sqrt()?,
            );
        }
    }
    mlx_rs::transforms::eval(out.values())?;
    Ok(out)
}

/// mlx-lm's `adapter_config.json` for these adapters.
pub fn mlx_lm_config(
    spec: &TrainSpec,
    modules: &[String],
    model_spec: &ModelSpec,
) -> serde_json::Value {
    let mut keys: Vec<String> = modules
        .iter()
        .map(|m| m.splitn(4, '.').nth(3).unwrap_or(m).to_string())
        .collect();
    keys.sort();
    keys.dedup();
    json!({
        "fine_tune_type": if spec.fine_tune_type == FineTuneType::Dora { "dora" } else { "lora" },
        "num_layers": spec.num_layers.unwrap_or(model_spec.num_layers() as u32),
        "lora_parameters": {
            "rank": spec.lora_rank,
            "scale": spec.lora_scale(),
            "dropout": spec.lora_dropout,
            "keys": keys,
        },
        "base_model": spec.base_model,
    })
}

/// Writes `adapters.safetensors` + `adapter_config.json` (mlx-lm) into `dir`, and
/// `peft/adapter_model.safetensors` + `peft/adapter_config.json` (Hugging Face PEFT).
pub fn save_adapters(
    dir: &Path,
    adapters: &Weights,
    spec: &TrainSpec,
    modules: &[String],
    model_spec: &ModelSpec,
) -> Result<()> {
    let meta = std::collections::HashMap::from([("format".to_string(), "mlx".to_string())]);
    weights::save_atomic(
        &dir.join("adapters.safetensors"),
        &to_mlx_lm_names(adapters),
        &meta,
    )?;
    let cfg = serde_json::to_string_pretty(&mlx_lm_config(spec, modules, model_spec))
        .map_err(|e| EngineError::serialization("adapter_config.json", e))?;
    crate::fsutil::write_atomic(&dir.join("adapter_config.json"), cfg.as_bytes())?;

    let mut peft = Weights::new();
    for m in modules {
        let base = format!("base_model.model.{m}");
        peft.insert(
            format!("{base}.lora_A.weight"),
            adapters[&format!("{m}.lora_a")].t(),
        );
        peft.insert(
            format!("{base}.lora_B.weight"),
            adapters[&format!("{m}.lora_b")].t(),
        );
        if let Some(mag) = adapters.get(&format!("{m}.magnitude")) {
            peft.insert(format!("{base}.lora_magnitude_vector"), mag.clone());
        }
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let peft_dir = dir.join("peft");
    weights::save_atomic(&peft_dir.join("adapter_model.safetensors"), &peft, &meta)?;
    let mut targets: Vec<String> = modules
        .iter()
        .map(|m| m.rsplit('.').next().unwrap_or(m).to_string())
        .collect();
    targets.sort();
    targets.dedup();
    let layers: Vec<usize> = {
        let mut l: Vec<usize> = modules.iter().filter_map(|m| layer_index(m)).collect();
        l.sort();
        l.dedup();
        l
    };
    let peft_cfg = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": spec.base_model,
        "r": spec.lora_rank,
        "lora_alpha": spec.lora_alpha,
        "lora_dropout": spec.lora_dropout,
        "target_modules": targets,
        "layers_to_transform": layers,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_dora": spec.fine_tune_type == FineTuneType::Dora,
        "inference_mode": true,
    });
    let text = serde_json::to_string_pretty(&peft_cfg)
        .map_err(|e| EngineError::serialization("adapter_config.json (PEFT)", e))?;
    crate::fsutil::write_atomic(&peft_dir.join("adapter_config.json"), text.as_bytes())
}

/// Reads adapters saved by [`save_adapters`] (or by mlx-lm) and their scale.
pub fn load_adapters(dir: &Path) -> Result<(Weights, f32)> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| EngineError::io(&cfg_path, e))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::config(&cfg_path, "(file)", format!("not valid JSON: {e}")))?;
    let scale = cfg["lora_parameters"]["scale"]
        .as_f64()
        .ok_or_else(|| EngineError::config(&cfg_path, "lora_parameters.scale", "required number"))?
        as f32;
    let w = weights::load_file(&dir.join("adapters.safetensors"))?;
    Ok((from_mlx_lm_names(w), scale))
}

/// mlx-lm's names: its DoRA layer calls the magnitude `m` (ours `magnitude`); LoRA's
/// `lora_a` / `lora_b` are the same.
pub fn to_mlx_lm_names(adapters: &Weights) -> Weights {
    adapters
        .iter()
        .map(|(k, v)| match k.strip_suffix(".magnitude") {
            Some(m) => (format!("{m}.m"), v.clone()),
            None => (k.clone(), v.clone()),
        })
        .collect()
}

/// Our names for arrays in mlx-lm's layout (`.m` → `.magnitude`).
pub fn from_mlx_lm_names(w: Weights) -> Weights {
    w.into_iter()
        .map(|(k, v)| match k.strip_suffix(".m") {
            Some(m) => (format!("{m}.magnitude"), v),
            None => (k, v),
        })
        .collect()
}
