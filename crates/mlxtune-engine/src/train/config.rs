//! The fine-tuning configuration: the product document's camelCase `MLXFineTuneConfig`,
//! accepted unchanged, with our extensions beside it. Read from JSON or TOML; every error
//! names the field path (`parameters.learningRate`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A configuration error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{param} {message}")]
pub struct ConfigError {
    pub param: String,
    pub message: String,
}

fn err(param: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// `batchSize`: a number, or "auto" (the largest micro-batch that fits the memory limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum BatchSize {
    Fixed(u32),
    Auto(AutoWord),
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize::Auto(AutoWord::Auto)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    Auto,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetConfig {
    /// Path, `local://` URI (and, through the service, `s3://` / `http(s)://`).
    pub training_data: String,
    #[serde(default)]
    pub validation_data: Option<String>,
    /// chat | completion | text | custom; detected from the first record when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// For `custom`: templates whose `{field}` placeholders are filled from each record.
    #[serde(default)]
    pub template: Option<CustomTemplate>,
}

pub use crate::data::CustomTemplate;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameters {
    pub learning_rate: f64,
    pub batch_size: BatchSize,
    pub epochs: f64,
    pub sequence_length: u32,
    #[serde(default)]
    pub lora_rank: Option<u32>,
    #[serde(default)]
    pub lora_alpha: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Optimization {
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// With `gradientCheckpointing`: recompute only the first this many decoder layers whole
    /// (default: all; 0: none). The rest keep their activations except the values that cost
    /// no matrix product (norms', the convolution's and the MLP's activation): faster, more
    /// memory (docs/training.md).
    #[serde(default)]
    pub gradient_checkpointing_layers: Option<u32>,
    /// With `gradientCheckpointing`: recompute the MLPs of the first this many decoder layers
    /// (with it, `gradientCheckpointingLayers` defaults to 0). Only the MLP's input is kept,
    /// not its `[tokens, ff]` values (docs/training.md).
    #[serde(default)]
    pub gradient_checkpointing_mlps: Option<u32>,
    #[serde(default)]
    pub mixed_precision: Option<String>,
    /// Accepted for compatibility (also under the product document's spelling
    /// `appleSliliconOptimized`); MLX picks its backend at build time.
    #[serde(default, alias = "appleSliliconOptimized")]
    pub apple_silicon_optimized: Option<bool>,
    /// Compile the training step (extension; faster, one compilation per batch shape).
    #[serde(default)]
    pub compile: bool,
}

/// LoRA / DoRA settings beyond `parameters.loraRank` / `loraAlpha`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoraConfig {
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Module names (`q_proj`, `self_attn.v_proj`) or "all-linear" (the default).
    #[serde(default)]
    pub target_modules: Option<Value>,
    /// Adapt only the last N layers.
    #[serde(default)]
    pub num_layers: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuantizationConfig {
    #[serde(default)]
    pub bits: Option<i32>,
    #[serde(default)]
    pub group_size: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptimizerConfig {
    /// adamw (default) | adam | sgd | adafactor
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub weight_decay: Option<f64>,
    #[serde(default)]
    pub beta1: Option<f64>,
    #[serde(default)]
    pub beta2: Option<f64>,
    #[serde(default)]
    pub eps: Option<f64>,
    #[serde(default)]
    pub momentum: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleConfig {
    /// constant | linear | cosine (default) | cosine_with_restarts
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    #[serde(default)]
    pub warmup_ratio: Option<f64>,
    #[serde(default)]
    pub min_lr_ratio: Option<f64>,
    #[serde(default)]
    pub num_cycles: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default)]
    pub every_steps: Option<u64>,
    #[serde(default)]
    pub batch_size: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    #[serde(default)]
    pub patience: Option<u32>,
    #[serde(default)]
    pub min_delta: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointConfig {
    #[serde(default)]
    pub every_steps: Option<u64>,
    #[serde(default)]
    pub keep_last: Option<u32>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FineTuneConfig {
    pub base_model: String,
    pub dataset: DatasetConfig,
    pub parameters: Parameters,
    #[serde(default)]
    pub optimization: Optimization,
    // ---- extensions ----
    /// lora (default) | dora | qlora | full
    #[serde(default)]
    pub fine_tune_type: Option<String>,
    #[serde(default)]
    pub lora: LoraConfig,
    /// QLoRA base quantization (default 4 bits, group size 64).
    #[serde(default)]
    pub quantization: QuantizationConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    #[serde(default)]
    pub gradient_accumulation_steps: Option<u32>,
    /// Stop after this many optimizer steps (instead of `parameters.epochs`).
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub early_stopping: EarlyStoppingConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Pack several examples per row (attention kept within each example).
    #[serde(default)]
    pub packing: bool,
    /// Count prompts and user turns in the loss too.
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Full fine-tuning of the last N layers only.
    #[serde(default)]
    pub num_layers: Option<u32>,
    /// Memory limit in bytes for `batchSize: "auto"` (default: MLX's limit).
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    /// Data-parallel training over several processes (the service launches them with
    /// `mlxtune launch`; on the command line, run `mlxtune launch … -- train` instead).
    #[serde(default)]
    pub distributed: Option<DistributedConfig>,
}

/// `distributed`: how many processes train the job together, over which MLX backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistributedConfig {
    /// 2 or more.
    pub processes: u32,
    /// ring (CPUs, Macs) | nccl (NVIDIA GPUs) | mpi; default ring.
    #[serde(default)]
    pub backend: Option<String>,
}

/// Parses a JSON or TOML config (by extension; JSON when unknown), naming the field of a
/// type error.
pub fn parse_config(text: &str, toml_syntax: bool) -> Result<FineTuneConfig, ConfigError> {
    from_value(parse_document(text, toml_syntax)?)
}

/// A config file as a JSON document (TOML converted), before any field is checked.
pub fn parse_document(text: &str, toml_syntax: bool) -> Result<Value, ConfigError> {
    let value: Value = if toml_syntax {
        let t: toml::Value =
            toml::from_str(text).map_err(|e| err("(file)", format!("is not valid TOML: {e}")))?;
        serde_json::to_value(t).map_err(|e| err("(file)", e.to_string()))?
    } else {
        serde_json::from_str(text).map_err(|e| err("(file)", format!("is not valid JSON: {e}")))?
    };
    Ok(value)
}

/// Deserializes a config from JSON, naming the field path of the first problem.
pub fn from_value(value: Value) -> Result<FineTuneConfig, ConfigError> {
    super::bounds::check_shape(&value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent: name the field itself.
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or("");
            let full = if path == "." || path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return err(&full, "is required");
        }
        if let Some((param, message)) = super::strict::unknown_field(&path, &inner) {
            return err(&param, message);
        }
        if inner.contains("untagged enum BatchSize") {
            return err(&path, "must be a whole number >= 1 or \"auto\"");
        }
        let message = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        err(if path == "." { "(root)" } else { &path }, message)
    })
}

/// Reads a config file (`.toml` as TOML, anything else as JSON).
pub fn read_config(path: &Path) -> Result<FineTuneConfig, ConfigError> {
    read_config_with(path, &[])
}

/// Reads a config file and applies `--set PATH=VALUE` overrides (in order) before checking
/// it, so an override is validated exactly like the file (a misspelled path is refused).
pub fn read_config_with(path: &Path, overrides: &[String]) -> Result<FineTuneConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err("(file)", e.to_string()))?;
    let mut value = parse_document(&text, path.extension().is_some_and(|x| x == "toml"))?;
    for o in overrides {
        super::strict::set_path(&mut value, o).map_err(|m| err("--set", m))?;
    }
    from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "baseModel": "m",
            "dataset": {"trainingData": "t.jsonl"},
            "parameters": {"learningRate": 1e-4, "batchSize": 2, "epochs": 1, "sequenceLength": 64},
            "optimization": {"appleSliliconOptimized": true}
        })
    }

    fn with(path: &str) -> ConfigError {
        let mut v = minimal();
        super::super::strict::set_path(&mut v, path).unwrap();
        from_value(v).unwrap_err()
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_path_and_the_closest_name() {
        let e = with("lora.dropuot=0.1");
        assert_eq!(e.param, "lora.dropuot");
        assert_eq!(
            e.to_string(),
            "lora.dropuot is an unknown field; did you mean lora.dropout?"
        );
        assert_eq!(with("lora.numLayerz=2").param, "lora.numLayerz");
        assert!(with("lora.numLayerz=2").message.contains("lora.numLayers"));
        let e = with("learningRate=0.1");
        assert_eq!(e.param, "learningRate");
        let e = with("parameters.learning_rate=0.1");
        assert!(e.message.ends_with("parameters.learningRate?"), "{e}");
        let e = with("dataset.template={\"prompt\": \"a\", \"completion\": \"b\", \"x\": 1}");
        assert_eq!(e.param, "dataset.template.x");
    }

    #[test]
    fn the_product_documents_spelling_and_the_extensions_are_accepted() {
        let c = from_value(minimal()).unwrap();
        assert_eq!(c.optimization.apple_silicon_optimized, Some(true));
    }
}
