//! The validated training job: [`TrainSpec::from_config`] checks every field of a
//! [`FineTuneConfig`] and resolves defaults in one place, so that nothing invalid reaches
//! the trainer.

use mlx_rs::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{BatchSize, ConfigError, FineTuneConfig, Optimization};
use crate::models::{ModelSpec, QuantSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneType {
    Lora,
    Dora,
    Qlora,
    Full,
}

impl FineTuneType {
    /// The name used in configs (`fineTuneType`).
    pub fn as_str(self) -> &'static str {
        match self {
            FineTuneType::Lora => "lora",
            FineTuneType::Dora => "dora",
            FineTuneType::Qlora => "qlora",
            FineTuneType::Full => "full",
        }
    }
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

pub use crate::data::DataSpec;

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
    /// With checkpointing, only the first this many decoder layers are recomputed whole
    /// (None: all, or none when `checkpoint_mlps` is given); the others recompute their
    /// element-wise values ([`Remat::Lean`](crate::models::remat::Remat::Lean)).
    pub checkpoint_layers: Option<u32>,
    /// With checkpointing, the MLPs of the first this many decoder layers are recomputed.
    pub checkpoint_mlps: Option<u32>,
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

/// One of `options` by name (`default` when absent), or an error listing them.
fn choice<T: Copy>(
    value: Option<&str>,
    default: &str,
    options: &[(&str, T)],
    param: &str,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    options
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            bad(param, format!("`{v}` is not one of {}", names.join(", ")))
        })
}

fn data_spec(c: &FineTuneConfig) -> Result<DataSpec, ConfigError> {
    Ok(match c.dataset.format.as_deref() {
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
    })
}

fn batch_size(c: &FineTuneConfig) -> Result<Option<u32>, ConfigError> {
    match c.parameters.batch_size {
        BatchSize::Fixed(0) => Err(bad("parameters.batchSize", "must be >= 1 or \"auto\"")),
        BatchSize::Fixed(n) => Ok(Some(n)),
        BatchSize::Auto(_) => Ok(None),
    }
}

fn lora_targets(c: &FineTuneConfig) -> Result<Targets, ConfigError> {
    Ok(match &c.lora.target_modules {
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
    })
}

fn num_layers(c: &FineTuneConfig) -> Result<Option<u32>, ConfigError> {
    match (c.lora.num_layers, c.num_layers) {
        (Some(0), _) => Err(bad("lora.numLayers", "must be >= 1")),
        (_, Some(0)) => Err(bad("numLayers", "must be >= 1")),
        (a, b) => Ok(a.or(b)),
    }
}

fn checkpoint_layers(o: &Optimization) -> Result<Option<u32>, ConfigError> {
    const FIELD: &str = "optimization.gradientCheckpointingLayers";
    match o.gradient_checkpointing_layers {
        Some(_) if !o.gradient_checkpointing => {
            Err(bad(FIELD, "needs optimization.gradientCheckpointing: true"))
        }
        n => Ok(n),
    }
}

fn checkpoint_mlps(o: &Optimization) -> Result<Option<u32>, ConfigError> {
    const FIELD: &str = "optimization.gradientCheckpointingMlps";
    match o.gradient_checkpointing_mlps {
        Some(0) => Err(bad(FIELD, "must be >= 1")),
        Some(_) if !o.gradient_checkpointing => {
            Err(bad(FIELD, "needs optimization.gradientCheckpointing: true"))
        }
        n => Ok(n),
    }
}

fn quantization(c: &FineTuneConfig, kind: FineTuneType) -> Result<QuantSpec, ConfigError> {
    let given = c.quantization.bits.is_some() || c.quantization.group_size.is_some();
    if given && kind != FineTuneType::Qlora {
        return Err(bad(
            "quantization",
            format!(
                "quantizes the frozen base of QLoRA only; with fineTuneType {} remove it, or set fineTuneType to qlora",
                kind.as_str()
            ),
        ));
    }
    let q = QuantSpec {
        bits: c.quantization.bits.unwrap_or(4),
        group_size: c.quantization.group_size.unwrap_or(64),
    };
    if ![4, 8].contains(&q.bits) {
        return Err(bad("quantization.bits", "must be 4 or 8"));
    }
    if ![32, 64, 128].contains(&q.group_size) {
        return Err(bad("quantization.groupSize", "must be 32, 64 or 128"));
    }
    Ok(q)
}

fn precision(c: &FineTuneConfig) -> Result<String, ConfigError> {
    Ok(
        match c.optimization.mixed_precision.as_deref().unwrap_or("fp32") {
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
        .to_string(),
    )
}

/// Checks of fields that are used as they are (no default to resolve).
fn check_plain_fields(c: &FineTuneConfig) -> Result<(), ConfigError> {
    if c.base_model.trim().is_empty() {
        return Err(bad("baseModel", "must not be empty"));
    }
    if let Some(d) = &c.distributed {
        if !(2..=64).contains(&d.processes) {
            return Err(bad("distributed.processes", "must be between 2 and 64"));
        }
        if let Some(b) = d
            .backend
            .as_deref()
            .filter(|b| !["ring", "nccl", "mpi"].contains(b))
        {
            return Err(bad(
                "distributed.backend",
                format!("`{b}` is not one of ring, nccl, mpi"),
            ));
        }
    }
    if c.dataset.training_data.trim().is_empty() {
        return Err(bad("dataset.trainingData", "must not be empty"));
    }
    if c.parameters.sequence_length < 2 {
        return Err(bad("parameters.sequenceLength", "must be >= 2"));
    }
    let s = &c.schedule;
    if s.warmup_steps.is_some() && s.warmup_ratio.is_some() {
        return Err(bad(
            "schedule.warmupRatio",
            "give warmupSteps or warmupRatio, not both",
        ));
    }
    for (value, param) in [
        (
            c.gradient_accumulation_steps.map(u64::from),
            "gradientAccumulationSteps",
        ),
        (c.max_steps, "maxSteps"),
        (c.eval.every_steps, "eval.everySteps"),
        (c.checkpoint.every_steps, "checkpoint.everySteps"),
        (c.eval.batch_size.map(u64::from), "eval.batchSize"),
    ] {
        if value == Some(0) {
            return Err(bad(param, "must be >= 1"));
        }
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
    Ok(())
}

const FINE_TUNE_TYPES: &[(&str, FineTuneType)] = &[
    ("lora", FineTuneType::Lora),
    ("dora", FineTuneType::Dora),
    ("qlora", FineTuneType::Qlora),
    ("full", FineTuneType::Full),
];

const OPTIMIZERS: &[(&str, OptimizerKind)] = &[
    ("adamw", OptimizerKind::AdamW),
    ("adam", OptimizerKind::Adam),
    ("sgd", OptimizerKind::Sgd),
    ("adafactor", OptimizerKind::Adafactor),
];

const SCHEDULES: &[(&str, ScheduleKind)] = &[
    ("constant", ScheduleKind::Constant),
    ("linear", ScheduleKind::Linear),
    ("cosine", ScheduleKind::Cosine),
    ("cosine_with_restarts", ScheduleKind::CosineWithRestarts),
];

impl TrainSpec {
    /// Validates every field; the first problem is returned with its path.
    pub fn from_config(c: &FineTuneConfig) -> Result<TrainSpec, ConfigError> {
        super::bounds::check(c)?;
        check_plain_fields(c)?;
        let data = data_spec(c)?;
        let p = &c.parameters;
        let learning_rate = positive(p.learning_rate, "parameters.learningRate")?;
        let batch_size = batch_size(c)?;
        let epochs = positive(p.epochs, "parameters.epochs")?;
        let fine_tune_type = choice(
            c.fine_tune_type.as_deref(),
            "lora",
            FINE_TUNE_TYPES,
            "fineTuneType",
        )?;
        let lora_rank = p.lora_rank.unwrap_or(8);
        if lora_rank == 0 || lora_rank > 1024 {
            return Err(bad("parameters.loraRank", "must be between 1 and 1024"));
        }
        let lora_alpha = positive(
            p.lora_alpha.unwrap_or(2.0 * lora_rank as f64),
            "parameters.loraAlpha",
        )?;
        let lora_dropout = within(c.lora.dropout.unwrap_or(0.0), 0.0, 0.9, "lora.dropout")?;
        let o = &c.optimizer;
        let optimizer = choice(o.name.as_deref(), "adamw", OPTIMIZERS, "optimizer.name")?;
        let default_wd = if optimizer == OptimizerKind::AdamW {
            0.01
        } else {
            0.0
        };
        let s = &c.schedule;
        let schedule = choice(s.kind.as_deref(), "cosine", SCHEDULES, "schedule.type")?;
        let max_grad_norm = c
            .max_grad_norm
            .map(|v| positive(v, "maxGradNorm"))
            .transpose()?;
        Ok(TrainSpec {
            base_model: c.base_model.clone(),
            train_data: c.dataset.training_data.clone(),
            valid_data: c.dataset.validation_data.clone(),
            data,
            fine_tune_type,
            lora_rank,
            lora_alpha,
            lora_dropout,
            targets: lora_targets(c)?,
            num_layers: num_layers(c)?,
            quantization: quantization(c, fine_tune_type)?,
            learning_rate,
            batch_size,
            epochs,
            max_steps: c.max_steps,
            sequence_length: p.sequence_length as usize,
            grad_accum: c.gradient_accumulation_steps.unwrap_or(1),
            max_grad_norm,
            gradient_checkpointing: c.optimization.gradient_checkpointing,
            checkpoint_layers: checkpoint_layers(&c.optimization)?,
            checkpoint_mlps: checkpoint_mlps(&c.optimization)?,
            compile: c.optimization.compile,
            precision: precision(c)?,
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
        for (n, field) in [
            (
                self.checkpoint_layers,
                "optimization.gradientCheckpointingLayers",
            ),
            (
                self.checkpoint_mlps,
                "optimization.gradientCheckpointingMlps",
            ),
        ] {
            if let Some(n) = n.filter(|n| *n as usize > m.num_layers()) {
                return Err(bad(
                    field,
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

    /// How many of the first decoder layers the step recomputes whole (0: none; `usize::MAX`:
    /// all, checkpointing's default unless only MLPs are asked for).
    pub fn recomputed_layers(&self) -> usize {
        match (self.gradient_checkpointing, self.checkpoint_layers) {
            (false, _) => 0,
            (true, Some(n)) => n as usize,
            (true, None) if self.checkpoint_mlps.is_some() => 0,
            (true, None) => usize::MAX,
        }
    }

    /// How many of the first decoder layers the step recomputes the MLP of (0: none).
    pub fn recomputed_mlps(&self) -> usize {
        match self.gradient_checkpointing {
            true => self.checkpoint_mlps.unwrap_or(0) as usize,
            false => 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::from_value;
    use serde_json::json;

    fn spec_of(extra: Value) -> Result<TrainSpec, ConfigError> {
        let mut v = json!({
            "baseModel": "m",
            "dataset": { "trainingData": "d.jsonl" },
            "parameters": { "learningRate": 1e-4, "batchSize": 4, "epochs": 2, "sequenceLength": 512 }
        });
        if let (Some(base), Value::Object(more)) = (v.as_object_mut(), extra) {
            base.extend(more);
        }
        TrainSpec::from_config(&from_value(v)?)
    }

    #[test]
    fn the_product_config_gets_the_documented_defaults() {
        let s = spec_of(json!({})).unwrap();
        assert_eq!(s.fine_tune_type, FineTuneType::Lora);
        assert_eq!((s.lora_rank, s.lora_alpha), (8, 16.0));
        assert_eq!(s.targets, Targets::AllLinear);
        assert_eq!(s.optimizer, OptimizerKind::AdamW);
        assert_eq!(s.weight_decay, 0.01);
        assert_eq!(s.schedule, ScheduleKind::Cosine);
        assert_eq!((s.batch_size, s.grad_accum, s.keep_last), (Some(4), 1, 3));
        assert_eq!(s.eval_batch_size, 4);
        assert_eq!(s.precision, "f32");
        assert_eq!(s.dtype(), Dtype::Float32);
        assert_eq!(s.lora_scale(), 2.0);
        assert!(matches!(s.data, DataSpec::Builtin(None)));
    }

    #[test]
    fn names_map_to_their_kinds() {
        let s = spec_of(json!({
            "fineTuneType": "qlora", "optimizer": { "name": "sgd" },
            "schedule": { "type": "cosine_with_restarts" },
            "optimization": { "mixedPrecision": "bf16" },
            "lora": { "targetModules": ["q_proj", "v_proj"] },
            "parameters": { "learningRate": 1e-4, "batchSize": "auto", "epochs": 1, "sequenceLength": 64 }
        }))
        .unwrap();
        assert_eq!(s.fine_tune_type, FineTuneType::Qlora);
        assert_eq!(s.optimizer, OptimizerKind::Sgd);
        assert_eq!(s.weight_decay, 0.0);
        assert_eq!(s.schedule, ScheduleKind::CosineWithRestarts);
        assert_eq!(s.dtype(), Dtype::Bfloat16);
        assert_eq!(s.batch_size, None);
        assert_eq!(
            s.targets,
            Targets::Names(vec!["q_proj".into(), "v_proj".into()])
        );
    }

    #[test]
    fn each_bad_field_is_named_with_what_is_wrong() {
        let cases = [
            (
                json!({"fineTuneType": "lorax"}),
                "fineTuneType",
                "is not one of lora, dora, qlora, full",
            ),
            (
                json!({"optimizer": {"name": "lion"}}),
                "optimizer.name",
                "is not one of adamw",
            ),
            (
                json!({"schedule": {"type": "step"}}),
                "schedule.type",
                "is not one of constant",
            ),
            (
                json!({"optimization": {"mixedPrecision": "fp8"}}),
                "optimization.mixedPrecision",
                "bf16, fp16, fp32",
            ),
            (
                json!({"gradientAccumulationSteps": 0}),
                "gradientAccumulationSteps",
                "must be >= 1",
            ),
            (
                json!({"fineTuneType": "qlora", "quantization": {"bits": 3}}),
                "quantization.bits",
                "must be 4 or 8",
            ),
            (
                json!({"fineTuneType": "lora", "quantization": {"bits": 8}}),
                "quantization",
                "QLoRA only",
            ),
            (
                json!({"lora": {"targetModules": [""]}}),
                "lora.targetModules[0]",
                "module name",
            ),
            (
                json!({"lora": {"dropout": 0.95}}),
                "lora.dropout",
                "between 0 and 0.9",
            ),
            (
                json!({"dataset": {"trainingData": "d", "format": "custom"}}),
                "dataset.template",
                "is required",
            ),
            (
                json!({"earlyStopping": {"patience": 2}}),
                "earlyStopping.patience",
                "validationData",
            ),
            (
                json!({"schedule": {"warmupSteps": 3, "warmupRatio": 0.1}}),
                "schedule.warmupRatio",
                "not both",
            ),
        ];
        for (extra, param, words) in cases {
            let e = spec_of(extra.clone()).unwrap_err();
            assert_eq!(e.param, param, "{extra}");
            assert!(e.message.contains(words), "{extra}: {}", e.message);
        }
    }
}
