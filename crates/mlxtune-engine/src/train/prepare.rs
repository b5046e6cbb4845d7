//! Everything a run needs before its first step, built once: the model, tokenizer and
//! data (checked against each other), the fresh trainable arrays, the batch sizing and the
//! batch plan. The service's pre-flight calls the same pieces without loading weights.

use std::path::{Path, PathBuf};

use mlx_rs::Dtype;

use super::lora;
use super::memory::{estimate_peak_memory, total_memory_limit, Batching};
use super::spec::{FineTuneType, TrainSpec};
use crate::data::batch::{Padding, Plan};
use crate::data::widths::ladder;
use crate::data::{self, DataStats, Example, TokenizeOptions};
use crate::error::{EngineError, Result};
use crate::models::{spec_from_config, HfConfig, LoadOptions, Model, ModelSpec};
use crate::runtime;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// Turns a path or `local://` URI into a path.
pub fn local_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("local://").unwrap_or(uri))
}

/// A tokenized data file.
#[derive(Debug)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub stats: DataStats,
}

/// Reads and tokenizes a data file per the spec (through the tokenized-data cache); the
/// first bad record fails with file:line.
pub fn load_data(spec: &TrainSpec, tok: &Tokenizer, uri: &str) -> Result<Dataset> {
    let opts = TokenizeOptions {
        train_on_inputs: spec.train_on_inputs,
        max_len: Some(spec.sequence_length),
        append_eos: true,
    };
    let cache = data::default_cache_dir();
    let (examples, stats) =
        data::load_cached(&local_path(uri), tok, &spec.data, &opts, cache.as_deref())?;
    Ok(Dataset { examples, stats })
}

/// The base model's architecture from its `config.json`, checked against the spec (target
/// modules exist, the sequence fits the context). No weights are read.
pub fn model_spec(spec: &TrainSpec) -> Result<ModelSpec> {
    let config = HfConfig::read(&local_path(&spec.base_model))?;
    let model_spec = spec_from_config(&config)?;
    check_against(spec, &model_spec)?;
    Ok(model_spec)
}

fn check_against(spec: &TrainSpec, model_spec: &ModelSpec) -> Result<()> {
    spec.check_against_model(model_spec)
        .map_err(|e| EngineError::invalid(&e.param, e.message))
}

/// The base model's tokenizer, with the model config's special tokens.
pub fn tokenizer(spec: &TrainSpec, model_spec: &ModelSpec) -> Result<Tokenizer> {
    Tokenizer::from_dir(&local_path(&spec.base_model), Some(&model_spec.tokens()))
}

/// A run, ready for its first step.
pub struct Prepared {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub train: Dataset,
    pub valid: Option<Dataset>,
    /// Fresh trainable arrays (adapters, or f32 copies of the weights being trained).
    pub trainable: Weights,
    /// The adapted module paths (empty for full fine-tuning).
    pub modules: Vec<String>,
    pub batching: Batching,
    pub plan: Plan,
    pub total_steps: u64,
    /// Things the user should know (slow settings, smaller micro-batches).
    pub warnings: Vec<String>,
}

/// Loads the model, tokenizer and data, and plans the batches.
pub fn prepare(spec: &TrainSpec) -> Result<Prepared> {
    let model = load_model(spec)?;
    let tokenizer = tokenizer(spec, &model.spec)?;
    let mut warnings = Vec::new();
    if spec.dtype() != Dtype::Float32 && runtime::current_device() == "cpu" {
        warnings.push(format!(
            "{} on the CPU is slow (no BLAS for half precision); fp32 is faster there",
            spec.precision
        ));
    }
    let train = load_data(spec, &tokenizer, &spec.train_data)?;
    let valid = match &spec.valid_data {
        Some(v) => Some(load_data(spec, &tokenizer, v)?),
        None => None,
    };
    let (trainable, modules) = initial_trainables(spec, &model)?;
    let batching = choose_batching(spec, &model, &trainable, &train.stats, &mut warnings);
    if batching.split > 1 {
        warnings.push(format!(
            "batch size {} would not fit the memory limit: micro-batches of {}, {} per batch",
            batching.effective, batching.micro, batching.split
        ));
    }
    let plan = plan(spec, &train.examples, batching.effective);
    let total_steps = total_steps(spec, plan.batches.len() as u64);
    Ok(Prepared {
        model,
        tokenizer,
        train,
        valid,
        trainable,
        modules,
        batching,
        plan,
        total_steps,
        warnings,
    })
}

fn load_model(spec: &TrainSpec) -> Result<Model> {
    let quantize = (spec.fine_tune_type == FineTuneType::Qlora).then_some(spec.quantization);
    let model = Model::load(
        &local_path(&spec.base_model),
        &LoadOptions {
            dtype: Some(spec.dtype()),
            quantize,
        },
    )?;
    if spec.fine_tune_type == FineTuneType::Full && model.quantization.is_some() {
        return Err(EngineError::invalid(
            "fineTuneType",
            "full fine-tuning needs a float model, not a quantized one",
        ));
    }
    check_against(spec, &model.spec)?;
    Ok(model)
}

/// The micro-batch for the memory limit; a limit even one row's estimate exceeds is
/// warned about (with the model's own size when the limit is below that too).
fn choose_batching(
    spec: &TrainSpec,
    model: &Model,
    trainable: &Weights,
    data: &DataStats,
    warnings: &mut Vec<String>,
) -> Batching {
    let params: u64 = trainable.values().map(|a| a.size() as u64).sum();
    let seq = row_length(spec, data);
    let limit = total_memory_limit(spec);
    let one_row = estimate_peak_memory(model, spec, params, 1, seq);
    if one_row > limit {
        let fixed = estimate_peak_memory(model, spec, params, 0, seq);
        let what = match spec.memory_limit_bytes {
            Some(_) => "memoryLimitBytes",
            None => "the memory available",
        };
        warnings.push(format!(
            "{what} ({limit} bytes) is below the estimated peak of a single row of {seq} tokens \
             ({one_row} bytes; the weights and trainable state alone {fixed}): training runs \
             one row at a time and will exceed it"
        ));
    }
    Batching::choose(spec.batch_size, |micro| {
        estimate_peak_memory(model, spec, params, micro as u64, seq) <= limit
    })
}

/// The longest row a batch can hold: the sequence length when packing, else the longest
/// example (rounded up as a compiled step pads it).
fn row_length(spec: &TrainSpec, data: &DataStats) -> u64 {
    let seq = spec.sequence_length as u64;
    if spec.packing {
        return seq;
    }
    let longest = match spec.compile {
        true => (data.max_len as u64).div_ceil(32) * 32,
        false => data.max_len as u64,
    };
    longest.clamp(1, seq)
}

fn plan(spec: &TrainSpec, examples: &[Example], batch_size: u32) -> Plan {
    let mut plan = Plan::new(
        examples,
        batch_size as usize,
        spec.packing,
        spec.sequence_length,
    );
    if spec.compile {
        // A compiled step is traced again for each new batch width (`data/widths.rs`).
        // Packed rows are nearly full anyway: they all take the widest row's width, one
        // shape per job. Bucketed batches take the ladder of widths that costs the run least.
        plan.padding = match spec.packing {
            true => Padding::Ladder(vec![plan.width(examples)]),
            false => {
                let batches = plan.batches.len() as u64;
                let steps = total_steps(spec, batches) * spec.grad_accum as u64;
                let epochs = steps as f64 / batches.max(1) as f64;
                Padding::Ladder(ladder(&plan.natural_widths(examples), epochs))
            }
        };
    }
    plan
}

/// Optimizer steps of the run: `maxSteps`, else epochs × steps per epoch (at least one).
pub fn total_steps(spec: &TrainSpec, batches_per_epoch: u64) -> u64 {
    let steps_per_epoch = batches_per_epoch.div_ceil(spec.grad_accum as u64).max(1);
    spec.max_steps
        .unwrap_or_else(|| ((spec.epochs * steps_per_epoch as f64).ceil() as u64).max(1))
}

/// Fresh trainable arrays (deterministic: adapters from the seed, or f32 copies of the
/// weights being fine-tuned) and the adapted module paths.
pub fn initial_trainables(spec: &TrainSpec, model: &Model) -> Result<(Weights, Vec<String>)> {
    match spec.fine_tune_type {
        FineTuneType::Full => {
            let first = spec
                .num_layers
                .map_or(0, |n| model.spec.num_layers() - n as usize);
            let mut t = Weights::new();
            for e in model.spec.expected_tensors() {
                let in_layers =
                    lora::layer_index(&e.name).map_or(spec.num_layers.is_none(), |i| i >= first);
                if in_layers {
                    t.insert(
                        e.name.clone(),
                        model.weights[&e.name].as_dtype(Dtype::Float32)?,
                    );
                }
            }
            Ok((t, vec![]))
        }
        _ => {
            let modules = lora::target_modules(&model.spec, &spec.targets, spec.num_layers);
            Ok((lora::init_adapters(model, &modules, spec)?, modules))
        }
    }
}

/// Writes the validated spec beside the run's outputs.
pub fn write_spec(spec: &TrainSpec, output: &Path) -> Result<()> {
    std::fs::create_dir_all(output).map_err(|e| EngineError::io(output, e))?;
    let text = serde_json::to_string_pretty(spec)
        .map_err(|e| EngineError::serialization("train_spec.json", e))?;
    crate::fsutil::write_atomic(&output.join("train_spec.json"), text.as_bytes())
}
