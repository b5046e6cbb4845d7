//! The validated training job: [`TrainSpec::from_config`] checks every field of a
//! [`FineTuneConfig`] and resolves defaults in one place, so that nothing invalid reaches
//! the trainer.

use mlx_rs::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{BatchSize, ConfigError, CustomTemplate, FineTuneConfig};
use crate::data::DataFormat;
use crate::models::{ModelSpec, QuantSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneType {
    Lora,
    Dora,
    Qlora,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    AdamW,
    Adam,
    Sgd,
    Adafactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
    CosineWithRestarts,
}

/// Which linear layers get adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    AllLinear,
    Names(Vec<String>),
}

/// The `custom` data format, or one of the built-in ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DataSpec {
    Builtin(Option<DataFormat>),
    Custom(CustomTemplate),
}

/// A validated training job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSpec {
    pub base_model: String,
    pub train_data: String,
    pub valid_data: Option<String>,
    pub data: DataSpec,
    pub fine_tune_type: FineTuneType,
    pub lora_rank: u32,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub targets: Targets,
    /// Adapt (or fully train) only the last N layers.
    pub num_layers: Option<u32>,
    pub quantization: QuantSpec,
    pub learning_rate: f64,
    /// None: "auto".
    pub batch_size: Option<u32>,
    pub epochs: f64,
    pub max_steps: Option<u64>,
    pub sequence_length: usize,
    pub grad_accum: u32,
    pub max_grad_norm: Option<f64>,
    pub gradient_checkpointing: bool,
    /// Compile the loss-and-gradient function (MLX `compile`; not with LoRA dropout).
    pub compile: bool,
    /// Compute precision: f32, bf16 or f16.
    pub precision: String,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub momentum: f64,
    pub schedule: ScheduleKind,
    pub warmup_steps: Option<u64>,
    pub warmup_ratio: f64,
    pub min_lr_ratio: f64,
    pub num_cycles: u32,
    pub seed: u64,
    pub eval_every: Option<u64>,
    pub eval_batch_size: u32,
    pub patience: Option<u32>,
    pub min_delta: f64,
    pub save_every: Option<u64>,
    pub keep_last: u32,
    pub packing: bool,
    pub train_on_inputs: bool,
    pub memory_limit_bytes: Option<u64>,
}

fn positive(v: f64, param: &str) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(ConfigError {
            param: param.into(),
            message: "must be > 0".into(),
        })
    }
}

fn within(v: f64, lo: f64, hi: f64, param: &str) -> Result<f64, ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(ConfigError {
            param: param.into(),
            message: format!("must be between {lo} and {hi}"),
        })
    }
}

fn bad(param: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        param: param.into(),
        message: message.into(),
    }
}

impl TrainSpec {
    /// Validates every field; the first problem is returned with its path.
    pub fn from_config(c: &FineTuneConfig) -> Result<TrainSpec, ConfigError> {
        if c.base_model.trim().is_empty() {
            return Err(bad("baseModel", "must not be empty"));
        }
        if c.dataset.training_data.trim().is_empty() {
            return Err(bad("dataset.trainingData", "must not be empty"));
        }
        let data = match c.dataset.format.as_deref() {
            None => DataSpec::Builtin(None),
            Some("custom") => DataSpec::Custom(c.dataset.template.clone().ok_or_else(|| {
                bad(
                    "dataset.template",
                    "is required when dataset.format is custom",
                )
            })?),
            Some(f) => DataSpec::Builtin(Some(f.parse().map_err(|_| {
                bad(
                    "dataset.format",
                    format!("`{f}` is not one of chat, completion, text, custom"),
                )
            })?)),
        };
        let p = &c.parameters;
        let learning_rate = positive(p.learning_rate, "parameters.learningRate")?;
        let batch_size = match p.batch_size {
            BatchSize::Fixed(0) => {
                return Err(bad("parameters.batchSize", "must be >= 1 or \"auto\""))
            }
            BatchSize::Fixed(n) => Some(n),
            BatchSize::Auto(_) => None,
        };
        let epochs = positive(p.epochs, "parameters.epochs")?;
        if p.sequence_length < 2 {
            return Err(bad("parameters.sequenceLength", "must be >= 2"));
        }
        let fine_tune_type = match c.fine_tune_type.as_deref().unwrap_or("lora") {
            "lora" => FineTuneType::Lora,
            "dora" => FineTuneType::Dora,
            "qlora" => FineTuneType::Qlora,
            "full" => FineTuneType::Full,
            other => {
                return Err(bad(
                    "fineTuneType",
                    format!("`{other}` is not one of lora, dora, qlora, full"),
                ))
            }
        };
        let lora_rank = p.lora_rank.unwrap_or(8);
        if lora_rank == 0 || lora_rank > 1024 {
            return Err(bad("parameters.loraRank", "must be between 1 and 1024"));
        }
        let lora_alpha = positive(
            p.lora_alpha.unwrap_or(2.0 * lora_rank as f64),
            "parameters.loraAlpha",
        )?;
        let lora_dropout = within(c.lora.dropout.unwrap_or(0.0), 0.0, 0.9, "lora.dropout")?;
        let targets = match &c.lora.target_modules {
            None => Targets::AllLinear,
            Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
            Some(Value::Array(items)) if !items.is_empty() => Targets::Names(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .ok_or_else(|| {
                                bad(&format!("lora.targetModules[{i}]"), "must be a module name")
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => {
                return Err(bad(
                    "lora.targetModules",
                    "must be \"all-linear\" or a non-empty list of names",
                ))
            }
        };
        let num_layers = match (c.lora.num_layers, c.num_layers) {
            (Some(0), _) => return Err(bad("lora.numLayers", "must be >= 1")),
            (_, Some(0)) => return Err(bad("numLayers", "must be >= 1")),
            (a, b) => a.or(b),
        };
        let quantization = QuantSpec {
            bits: c.quantization.bits.unwrap_or(4),
            group_size: c.quantization.group_size.unwrap_or(64),
        };
        if ![4, 8].contains(&quantization.bits) {
            return Err(bad("quantization.bits", "must be 4 or 8"));
        }
        if ![32, 64, 128].contains(&quantization.group_size) {
            return Err(bad("quantization.groupSize", "must be 32, 64 or 128"));
        }
        let precision = match c.optimization.mixed_precision.as_deref().unwrap_or("fp32") {
            "fp32" | "f32" => "f32",
            "bf16" => "bf16",
            "fp16" | "f16" => "f16",
            other => {
                return Err(bad(
                    "optimization.mixedPrecision",
                    format!("`{other}` is not one of bf16, fp16, fp32"),
                ))
            }
        }
        .to_string();
        let o = &c.optimizer;
        let optimizer = match o.name.as_deref().unwrap_or("adamw") {
            "adamw" => OptimizerKind::AdamW,
            "adam" => OptimizerKind::Adam,
            "sgd" => OptimizerKind::Sgd,
            "adafactor" => OptimizerKind::Adafactor,
            other => {
                return Err(bad(
                    "optimizer.name",
                    format!("`{other}` is not one of adamw, adam, sgd, adafactor"),
                ))
            }
        };
        let default_wd = if optimizer == OptimizerKind::AdamW {
            0.01
        } else {
            0.0
        };
        let s = &c.schedule;
        let schedule = match s.kind.as_deref().unwrap_or("cosine") {
            "constant" => ScheduleKind::Constant,
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            "cosine_with_restarts" => ScheduleKind::CosineWithRestarts,
            other => {
                return Err(bad(
                    "schedule.type",
                    format!(
                        "`{other}` is not one of constant, linear, cosine, cosine_with_restarts"
                    ),
                ))
            }
        };
        if s.warmup_steps.is_some() && s.warmup_ratio.is_some() {
            return Err(bad(
                "schedule.warmupRatio",
                "give warmupSteps or warmupRatio, not both",
            ));
        }
        let max_grad_norm = c
            .max_grad_norm
            .map(|v| positive(v, "maxGradNorm"))
            .transpose()?;
        let grad_accum = c.gradient_accumulation_steps.unwrap_or(1);
        if grad_accum == 0 {
            return Err(bad("gradientAccumulationSteps", "must be >= 1"));
        }
        if c.max_steps == Some(0) {
            return Err(bad("maxSteps", "must be >= 1"));
        }
        if c.eval.every_steps == Some(0) {
            return Err(bad("eval.everySteps", "must be >= 1"));
        }
        if c.checkpoint.every_steps == Some(0) {
            return Err(bad("checkpoint.everySteps", "must be >= 1"));
        }
        if c.eval.batch_size == Some(0) {
            return Err(bad("eval.batchSize", "must be >= 1"));
        }
        if c.optimization.compile && c.lora.dropout.unwrap_or(0.0) > 0.0 {
            return Err(bad(
                "optimization.compile",
                "cannot be combined with lora.dropout > 0",
            ));
        }
        if c.early_stopping.patience.is_some() && c.dataset.validation_data.is_none() {
            return Err(bad(
                "earlyStopping.patience",
                "needs dataset.validationData",
            ));
        }
        Ok(TrainSpec {
            base_model: c.base_model.clone(),
            train_data: c.dataset.training_data.clone(),
            valid_data: c.dataset.validation_data.clone(),
            data,
            fine_tune_type,
            lora_rank,
            lora_alpha,
            lora_dropout,
            targets,
            num_layers,
            quantization,
            learning_rate,
            batch_size,
            epochs,
            max_steps: c.max_steps,
            sequence_length: p.sequence_length as usize,
            grad_accum,
            max_grad_norm,
            gradient_checkpointing: c.optimization.gradient_checkpointing,
            compile: c.optimization.compile,
            precision,
            optimizer,
            weight_decay: within(
                o.weight_decay.unwrap_or(default_wd),
                0.0,
                1.0,
                "optimizer.weightDecay",
            )?,
            beta1: within(o.beta1.unwrap_or(0.9), 0.0, 0.999_999, "optimizer.beta1")?,
            beta2: within(
                o.beta2.unwrap_or(0.999),
                0.0,
                0.999_999_9,
                "optimizer.beta2",
            )?,
            eps: positive(o.eps.unwrap_or(1e-8), "optimizer.eps")?,
            momentum: within(o.momentum.unwrap_or(0.0), 0.0, 0.999, "optimizer.momentum")?,
            schedule,
            warmup_steps: s.warmup_steps,
            warmup_ratio: within(
                s.warmup_ratio.unwrap_or(0.0),
                0.0,
                1.0,
                "schedule.warmupRatio",
            )?,
            min_lr_ratio: within(
                s.min_lr_ratio.unwrap_or(0.0),
                0.0,
                1.0,
                "schedule.minLrRatio",
            )?,
            num_cycles: s.num_cycles.unwrap_or(1).max(1),
            seed: c.seed.unwrap_or(0),
            eval_every: c.eval.every_steps,
            eval_batch_size: c.eval.batch_size.unwrap_or(batch_size.unwrap_or(4)),
            patience: c.early_stopping.patience,
            min_delta: within(
                c.early_stopping.min_delta.unwrap_or(0.0),
                0.0,
                1e9,
                "earlyStopping.minDelta",
            )?,
            save_every: c.checkpoint.every_steps,
            keep_last: c.checkpoint.keep_last.unwrap_or(3).max(1),
            packing: c.packing,
            train_on_inputs: c.train_on_inputs,
            memory_limit_bytes: c.memory_limit_bytes,
        })
    }

    /// Checks the parts that depend on the model.
    pub fn check_against_model(&self, m: &ModelSpec) -> Result<(), ConfigError> {
        if self.sequence_length > m.max_position_embeddings as usize {
            return Err(bad(
                "parameters.sequenceLength",
                format!(
                    "{} exceeds the model's context length {}",
                    self.sequence_length, m.max_position_embeddings
                ),
            ));
        }
        if let Some(n) = self.num_layers {
            if n as usize > m.num_layers() {
                return Err(bad(
                    "lora.numLayers",
                    format!("{n} exceeds the model's {} layers", m.num_layers()),
                ));
            }
        }
        if self.fine_tune_type != FineTuneType::Full {
            let modules = m.linear_modules();
            if let Targets::Names(names) = &self.targets {
                for (i, n) in names.iter().enumerate() {
                    if !modules.iter().any(|mm| module_matches(mm, n)) {
                        return Err(bad(
                            &format!("lora.targetModules[{i}]"),
                            format!(
                                "`{n}` matches no linear layer of this {} model",
                                m.model_type
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The compute dtype.
    pub fn dtype(&self) -> Dtype {
        match self.precision.as_str() {
            "bf16" => Dtype::Bfloat16,
            "f16" => Dtype::Float16,
            _ => Dtype::Float32,
        }
    }

    /// LoRA scale alpha / rank.
    pub fn lora_scale(&self) -> f32 {
        (self.lora_alpha / self.lora_rank as f64) as f32
    }
}

/// Whether module path `module` (e.g. `model.layers.3.self_attn.q_proj`) is named by
/// `name` (`q_proj`, `self_attn.q_proj`, or the full path).
pub fn module_matches(module: &str, name: &str) -> bool {
    module == name || module.ends_with(&format!(".{name}"))
}
