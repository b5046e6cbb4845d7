//! The training loop: micro-batches through `value_and_grad`, gradient accumulation,
//! clipping, the optimizer and schedule, validation, early stopping, checkpoints, metrics.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use mlx_rs::{Array, Dtype};
use serde::Serialize;

use super::batch::{Plan, TrainBatch};
use super::checkpoint::{self, TrainState};
use super::lora;
use super::optim::{learning_rate, Optimizer};
use super::spec::{DataSpec, FineTuneType, TrainSpec};
use super::step::{compiled_loss_and_grad, loss_and_grad, StepOptions};
use crate::data::{self, DataStats, Example, TokenizeOptions};
use crate::error::{EngineError, Result};
use crate::eval::{self, EvalResult};
use crate::models::forward::Params;
use crate::models::{LoadOptions, Model};
use crate::runtime;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// Figures of one optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub total_epochs: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    /// Loss tokens per second.
    pub tokens_per_second: f64,
    /// All non-padding tokens per second.
    pub all_tokens_per_second: f64,
    pub padding_waste: f64,
    pub trained_tokens: u64,
    pub peak_memory_bytes: u64,
    pub active_memory_bytes: u64,
    pub elapsed_seconds: f64,
    pub eta_seconds: f64,
    pub completion_percentage: f64,
}

/// A validation pass.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub val_loss: f64,
    pub val_perplexity: f64,
    pub val_token_accuracy: f64,
    pub val_tokens: u64,
    pub is_best: bool,
}

/// What the trainer reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Pre-flight: data and plan, before the first step.
    Started {
        total_steps: u64,
        start_step: u64,
        trainable_parameters: u64,
        micro_batch_size: u32,
        micro_batches_per_step: u32,
        train: DataStats,
        validation: Option<DataStats>,
        batches_per_epoch: usize,
    },
    Step(StepMetrics),
    Eval(EvalMetrics),
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    Message {
        level: String,
        text: String,
    },
}

/// The callback's answer after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Checkpoint now and return (`Outcome::Paused`).
    Pause,
    /// Return without a checkpoint (`Outcome::Cancelled`).
    Cancel,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    EarlyStopped,
    Paused,
    Cancelled,
}

/// Result of [`train`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainResult {
    pub outcome: Outcome,
    pub step: u64,
    pub total_steps: u64,
    pub final_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub trained_tokens: u64,
}

/// Turns a path or `local://` URI into a path.
pub fn local_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("local://").unwrap_or(uri))
}

fn custom_record(
    t: &super::config::CustomTemplate,
    rec: &serde_json::Value,
) -> std::result::Result<serde_json::Value, String> {
    let fill = |tpl: &str| -> std::result::Result<String, String> {
        let mut out = String::new();
        let mut rest = tpl;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .ok_or("template has an unclosed `{`")?
                + open;
            let key = &rest[open + 1..close];
            match rec.get(key) {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(v) if !v.is_null() => out.push_str(&v.to_string()),
                _ => return Err(format!("missing `{key}` (named by dataset.template)")),
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    };
    Ok(serde_json::json!({ "prompt": fill(&t.prompt)?, "completion": fill(&t.completion)? }))
}

/// Reads and tokenizes a data file per the spec; the first bad record fails with file:line.
pub fn load_data(
    spec: &TrainSpec,
    tok: &Tokenizer,
    uri: &str,
) -> Result<(Vec<Example>, DataStats)> {
    let path = local_path(uri);
    let opts = TokenizeOptions {
        train_on_inputs: spec.train_on_inputs,
        max_len: Some(spec.sequence_length),
        append_eos: true,
    };
    match &spec.data {
        DataSpec::Builtin(fmt) => data::load_examples_cached(
            &path,
            tok,
            *fmt,
            &opts,
            data::default_cache_dir().as_deref(),
        ),
        DataSpec::Custom(t) => data::load_records(&path, |rec| {
            let r = custom_record(t, rec)?;
            data::tokenize_record(tok, data::DataFormat::Completion, &r, &opts)
        }),
    }
}

/// Rough peak-memory estimate (bytes) of one micro-batch of `batch` rows of `seq` tokens:
/// weights, trainable copies with gradients and two optimizer moments, and activations
/// kept for the backward pass (~18 hidden-sized and 3 ff-sized values per token and layer,
/// plus the logits in f32 twice).
pub fn estimate_peak_memory(
    model: &Model,
    spec: &TrainSpec,
    trainable_params: u64,
    batch: u64,
    seq: u64,
) -> u64 {
    let s = &model.spec;
    let bytes = match spec.dtype() {
        Dtype::Float32 => 4,
        _ => 2,
    };
    let weights: u64 = model.weights.values().map(|a| a.nbytes() as u64).sum();
    let train_state = trainable_params * 4 * 4;
    let per_token_layer = (18 * s.hidden_size as u64 + 3 * s.intermediate_size as u64) * bytes;
    let layers = if spec.gradient_checkpointing {
        2
    } else {
        s.num_layers() as u64
    };
    let acts = batch * seq * (per_token_layer * layers + 2 * 4 * s.vocab_size as u64);
    weights + train_state + acts
}

fn total_memory_limit(spec: &TrainSpec) -> u64 {
    if let Some(l) = spec.memory_limit_bytes {
        return l;
    }
    if runtime::current_device() == "gpu" {
        return mlx_rs::memory::memory_limit()
            .map(|l| l as u64)
            .unwrap_or(8 << 30);
    }
    let kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(8 << 20);
    kb * 1024 * 6 / 10
}

fn emit(on_event: &mut dyn FnMut(&Event) -> Control, e: Event) -> Control {
    on_event(&e)
}

/// Trains per `spec` into `output` (resuming from its latest checkpoint when `resume`).
pub fn train(
    spec: &TrainSpec,
    output: &Path,
    resume: bool,
    on_event: &mut dyn FnMut(&Event) -> Control,
) -> Result<TrainResult> {
    runtime::init()?;
    std::fs::create_dir_all(output).map_err(|e| EngineError::io(output, e))?;
    let spec_text =
        serde_json::to_string_pretty(spec).map_err(|e| EngineError::Mlx(e.to_string()))?;
    crate::fsutil::write_atomic(&output.join("train_spec.json"), spec_text.as_bytes())?;

    // Model.
    let model_dir = local_path(&spec.base_model);
    let quantize = (spec.fine_tune_type == FineTuneType::Qlora).then_some(spec.quantization);
    let model = Model::load(
        &model_dir,
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
    spec.check_against_model(&model.spec)
        .map_err(|e| EngineError::invalid(&e.param, e.message))?;
    let tok = Tokenizer::from_dir(&model_dir, Some(&model.spec))?;
    if spec.dtype() != Dtype::Float32 && runtime::current_device() == "cpu" {
        emit(
            on_event,
            Event::Message {
                level: "warn".into(),
                text: format!(
                    "{} on the CPU is slow (no BLAS for half precision); fp32 is faster there",
                    spec.precision
                ),
            },
        );
    }

    // Data pre-flight.
    let (train_ex, train_stats) = load_data(spec, &tok, &spec.train_data)?;
    let valid = match &spec.valid_data {
        Some(v) => Some(load_data(spec, &tok, v)?),
        None => None,
    };

    // Trainable parameters.
    let (mut trainable, modules) = initial_trainables(spec, &model)?;
    let trainable_params: u64 = trainable.values().map(|a| a.size() as u64).sum();
    let mut names: Vec<String> = trainable.keys().cloned().collect();
    names.sort();

    // Batch size (dynamic when "auto" or when the requested one would not fit).
    let seq = spec.sequence_length as u64;
    let limit = total_memory_limit(spec);
    let requested = spec.batch_size;
    let mut micro = requested.unwrap_or(64);
    while micro > 1
        && estimate_peak_memory(&model, spec, trainable_params, micro as u64, seq) > limit
    {
        micro /= 2;
    }
    // Batches keep the requested size (so the data grouping never depends on memory); each
    // runs as `split` micro-batches whose gradients are summed.
    let effective = requested.unwrap_or(micro).max(micro);
    let split = effective.div_ceil(micro);
    let grad_accum = spec.grad_accum;
    if split > 1 {
        emit(
            on_event,
            Event::Message {
                level: "warn".into(),
                text: format!(
                    "batch size {effective} would not fit the memory limit: micro-batches of {micro}, {split} per batch"
                ),
            },
        );
    }
    let mut plan = Plan::new(
        &train_ex,
        effective as usize,
        spec.packing,
        spec.sequence_length,
    );
    if spec.compile {
        plan.pad_to = 32;
    }
    let nb = plan.batches.len() as u64;
    let steps_per_epoch = nb.div_ceil(grad_accum as u64).max(1);
    let total_steps = spec
        .max_steps
        .unwrap_or_else(|| ((spec.epochs * steps_per_epoch as f64).ceil() as u64).max(1));

    // Optimizer and state, fresh or from the latest checkpoint.
    let mut opt = Optimizer::new(spec);
    let mut state = TrainState {
        step: 0,
        micro: 0,
        total_steps,
        optimizer_t: 0,
        loss_scale: if spec.dtype() == Dtype::Float16 {
            32768.0
        } else {
            1.0
        },
        good_steps: 0,
        best_val_loss: None,
        best_step: None,
        evals_without_improvement: 0,
        trained_tokens: 0,
        last_loss: None,
        split,
    };
    let metrics_path = output.join("metrics.jsonl");
    if resume {
        let (s, t, o, dir) = checkpoint::load_latest(output)?.ok_or_else(|| {
            EngineError::invalid(
                "resume",
                format!("{} has no checkpoint to resume from", output.display()),
            )
        })?;
        if s.total_steps != total_steps {
            return Err(EngineError::invalid(
                "resume",
                format!(
                    "the checkpoint plans {} steps, this configuration {total_steps}",
                    s.total_steps
                ),
            ));
        }
        for n in &names {
            if !t.contains_key(n) {
                return Err(EngineError::invalid(
                    "resume",
                    format!("{} lacks `{n}`", dir.display()),
                ));
            }
        }
        trainable = t;
        opt.state = o;
        opt.t = s.optimizer_t;
        state = s;
        // Drop metric lines past the checkpoint (they will be recomputed).
        truncate_metrics(&metrics_path, state.step)?;
        emit(
            on_event,
            Event::Message {
                level: "info".into(),
                text: format!("resumed from {} (step {})", dir.display(), state.step),
            },
        );
    } else {
        let _ = std::fs::remove_file(&metrics_path);
        let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(output));
    }
    let mut metrics_file = open_metrics(&metrics_path)?;

    let c = emit(
        on_event,
        Event::Started {
            total_steps,
            start_step: state.step,
            trainable_parameters: trainable_params,
            micro_batch_size: micro,
            micro_batches_per_step: grad_accum * state.split,
            train: train_stats,
            validation: valid.as_ref().map(|v| v.1.clone()),
            batches_per_epoch: nb as usize,
        },
    );
    if c == Control::Cancel {
        return Ok(result(Outcome::Cancelled, &state, output));
    }

    // The loss and its gradient with respect to the trainable arrays.
    let dropout_seed = Rc::new(Cell::new(0u64));
    let step_opts = StepOptions {
        lora_scale: spec.lora_scale(),
        dropout: spec.lora_dropout as f32,
        compute: spec.dtype(),
        checkpoint: spec.gradient_checkpointing,
        chunked_loss: spec.gradient_checkpointing,
    };
    let argnums: Vec<i32> = (0..names.len() as i32).collect();
    let mut eager;
    let mut compiled;
    let value_and_grad: &mut dyn FnMut(
        &[Array],
    ) -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)> = if spec.compile {
        compiled =
            compiled_loss_and_grad(&model.spec, model.weights.clone(), names.clone(), step_opts)?;
        &mut compiled
    } else {
        eager = loss_and_grad(
            &model.spec,
            model.weights.clone(),
            names.clone(),
            step_opts,
            dropout_seed.clone(),
            &argnums,
        );
        &mut eager
    };

    let started = Instant::now();
    let start_step = state.step;
    let mut outcome = Outcome::Completed;
    while state.step < total_steps {
        let step_start = Instant::now();
        // `peak_memory_bytes` of a step is the peak during that step.
        crate::runtime::reset_peak_memory();
        let micro_steps = grad_accum * state.split.max(1);
        let acc = match accumulate(
            &plan,
            &train_ex,
            &mut state,
            micro_steps,
            spec.seed,
            &names,
            &trainable,
            &mut *value_and_grad,
            &dropout_seed,
        ) {
            Ok(a) => a,
            Err(e) if is_out_of_memory(&e) && plan.max_rows() > state.split.max(1) as usize => {
                // Halve the micro-batch (split each batch in two more parts, accumulate
                // twice as many) and continue from the last checkpoint.
                let new_split = state.split.max(1) * 2;
                let (s, t, o) = match checkpoint::load_latest(output)? {
                    Some((s, t, o, _)) => (s, t, o),
                    None => {
                        let (t, _) = initial_trainables(spec, &model)?;
                        let mut s = state.clone();
                        (
                            s.step,
                            s.micro,
                            s.optimizer_t,
                            s.trained_tokens,
                            s.last_loss,
                        ) = (0, 0, 0, 0, None);
                        (s.best_val_loss, s.best_step, s.evals_without_improvement) =
                            (None, None, 0);
                        s.split = state.split.max(1);
                        (s, t, Weights::new())
                    }
                };
                let old_split = s.split.max(1);
                state = s;
                state.micro *= (new_split / old_split) as u64;
                state.split = new_split;
                trainable = t;
                opt.state = o;
                opt.t = state.optimizer_t;
                truncate_metrics(&metrics_path, state.step)?;
                metrics_file = open_metrics(&metrics_path)?;
                mlx_rs::memory::clear_cache()?;
                emit(
                    on_event,
                    Event::Message {
                        level: "warn".into(),
                        text: format!(
                            "out of memory ({e}); micro-batch split in {new_split}, continuing from step {}",
                            state.step
                        ),
                    },
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        let Accum {
            grads,
            loss_sum,
            tokens,
            real,
            total,
        } = acc;
        let Some(grads) = grads else {
            state.step += 1;
            continue;
        };
        let loss = loss_sum / tokens.max(1) as f64;
        // Mean over the effective batch's loss tokens, loss scale undone.
        let denom = Array::from_f32(tokens.max(1) as f32 * state.loss_scale);
        let grads: Vec<Array> = grads
            .iter()
            .map(|g| g.divide(&denom))
            .collect::<std::result::Result<_, _>>()?;
        let sq: Vec<Array> = grads
            .iter()
            .map(|g| g.square().and_then(|s| s.sum(None)))
            .collect::<std::result::Result<_, _>>()?;
        let norm_arr = sq
            .iter()
            .try_fold(Array::from_f32(0.0), |acc, s| acc.add(s))?
            .sqrt()?;
        norm_arr.eval()?;
        let grad_norm = norm_arr.item_cast::<f32>() as f64;
        if !loss.is_finite() || !grad_norm.is_finite() {
            if spec.dtype() == Dtype::Float16 && state.loss_scale > 1.0 {
                state.loss_scale /= 2.0;
                state.good_steps = 0;
                emit(
                    on_event,
                    Event::Message {
                        level: "warn".into(),
                        text: format!("fp16 overflow: loss scale now {}", state.loss_scale),
                    },
                );
                continue;
            }
            return Err(EngineError::Mlx(format!(
                "loss became {} at step {}; stopping. The last good checkpoint is kept in {}",
                if loss.is_finite() {
                    format!("finite but the gradient norm is {grad_norm}")
                } else {
                    loss.to_string()
                },
                state.step + 1,
                checkpoint::checkpoints_dir(output).display()
            )));
        }
        let clip = spec
            .max_grad_norm
            .map_or(1.0, |m| (m / (grad_norm + 1e-6)).min(1.0));
        let grad_map: Weights = names
            .iter()
            .cloned()
            .zip(grads)
            .map(|(n, g)| {
                Ok((
                    n,
                    if clip < 1.0 {
                        g.multiply(Array::from_f32(clip as f32))?
                    } else {
                        g
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let lr = learning_rate(spec, state.step, total_steps);
        opt.step(&mut trainable, &grad_map, lr as f32)?;
        state.step += 1;
        state.optimizer_t = opt.t;
        state.trained_tokens += tokens;
        state.last_loss = Some(loss);
        if spec.dtype() == Dtype::Float16 {
            state.good_steps += 1;
            if state.good_steps.is_multiple_of(1000) {
                state.loss_scale *= 2.0;
            }
        }

        let step_s = step_start.elapsed().as_secs_f64().max(1e-9);
        let done = (state.step - start_step) as f64;
        let elapsed = started.elapsed().as_secs_f64();
        let mem = runtime::memory_stats();
        let m = StepMetrics {
            step: state.step,
            total_steps,
            epoch: state.micro as f64 / (nb * state.split.max(1) as u64) as f64,
            total_epochs: total_steps as f64 * grad_accum as f64 / nb as f64,
            loss,
            learning_rate: lr,
            grad_norm,
            tokens_per_second: tokens as f64 / step_s,
            all_tokens_per_second: real as f64 / step_s,
            padding_waste: if total > 0 {
                1.0 - real as f64 / total as f64
            } else {
                0.0
            },
            trained_tokens: state.trained_tokens,
            peak_memory_bytes: mem.peak,
            active_memory_bytes: mem.active,
            elapsed_seconds: elapsed,
            eta_seconds: elapsed / done * (total_steps - state.step) as f64,
            completion_percentage: 100.0 * state.step as f64 / total_steps as f64,
        };
        let line = serde_json::to_string(&m).map_err(|e| EngineError::Mlx(e.to_string()))?;
        writeln!(metrics_file, "{line}").map_err(|e| EngineError::io(&metrics_path, e))?;
        let mut control = emit(on_event, Event::Step(m));

        // Validation, best checkpoint, early stopping.
        let last = state.step == total_steps;
        let mut save_now = spec
            .save_every
            .is_some_and(|n| state.step.is_multiple_of(n))
            || last;
        let mut stop_early = false;
        if let Some((vex, _)) = &valid {
            if spec
                .eval_every
                .is_some_and(|n| state.step.is_multiple_of(n))
                || last
            {
                let p = Params {
                    base: &model.weights,
                    over: Some(&trainable),
                    lora_scale: step_opts.lora_scale,
                    compute_dtype: Some(step_opts.compute),
                    dropout: None,
                };
                let r: EvalResult =
                    eval::evaluate(&model.spec, &p, vex, spec.eval_batch_size as usize)?;
                let improved = state
                    .best_val_loss
                    .is_none_or(|b| r.loss < b - spec.min_delta);
                if improved {
                    state.best_val_loss = Some(r.loss);
                    state.best_step = Some(state.step);
                    state.evals_without_improvement = 0;
                    save_now = true;
                } else {
                    state.evals_without_improvement += 1;
                    if spec
                        .patience
                        .is_some_and(|p| state.evals_without_improvement >= p)
                    {
                        stop_early = true;
                        save_now = true;
                    }
                }
                let c = emit(
                    on_event,
                    Event::Eval(EvalMetrics {
                        step: state.step,
                        val_loss: r.loss,
                        val_perplexity: r.perplexity,
                        val_token_accuracy: r.token_accuracy,
                        val_tokens: r.tokens,
                        is_best: improved,
                    }),
                );
                if c != Control::Continue {
                    control = c;
                }
            }
        }
        if control == Control::Pause {
            save_now = true;
        }
        if save_now {
            let dir = checkpoint::save(output, &state, &trainable, &opt.state)?;
            if state.best_step == Some(state.step) {
                checkpoint::mark_best(output, state.step)?;
            }
            checkpoint::prune(output, spec.keep_last)?;
            if emit(
                on_event,
                Event::Checkpoint {
                    step: state.step,
                    path: dir,
                },
            ) == Control::Cancel
            {
                control = Control::Cancel;
            }
        }
        match control {
            Control::Pause => {
                outcome = Outcome::Paused;
                break;
            }
            Control::Cancel => {
                outcome = Outcome::Cancelled;
                break;
            }
            Control::Continue => {}
        }
        if stop_early {
            outcome = Outcome::EarlyStopped;
            emit(
                on_event,
                Event::Message {
                    level: "info".into(),
                    text: format!(
                        "early stopping at step {}: no improvement in {} evaluations",
                        state.step, state.evals_without_improvement
                    ),
                },
            );
            break;
        }
    }

    if matches!(outcome, Outcome::Completed | Outcome::EarlyStopped) {
        // Final artefacts from the best checkpoint when validation chose one, else the last.
        let final_weights = match (state.best_step, outcome) {
            (Some(best), _) if best != state.step => {
                let dir = checkpoint::checkpoints_dir(output).join(checkpoint::step_dir_name(best));
                crate::weights::load_file(&dir.join("trainable.safetensors"))?
            }
            _ => trainable.clone(),
        };
        match spec.fine_tune_type {
            FineTuneType::Full => {
                let mut m = model;
                for (k, v) in &final_weights {
                    m.weights.insert(k.clone(), v.as_dtype(m.dtype)?);
                }
                m.save(&output.join("model"))?;
            }
            _ => lora::save_adapters(output, &final_weights, spec, &modules, &model.spec)?,
        }
    }
    Ok(result(outcome, &state, output))
}

/// Fresh trainable arrays (deterministic: adapters from the seed, or f32 copies of the
/// weights being fine-tuned) and the adapted module paths.
fn initial_trainables(spec: &TrainSpec, model: &Model) -> Result<(Weights, Vec<String>)> {
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

/// Keeps the metric lines of steps up to `step`.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::fsutil::write_atomic(path, body.as_bytes())
}

fn open_metrics(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| EngineError::io(path, e))
}

/// Whether an error is MLX running out of memory.
pub fn is_out_of_memory(e: &EngineError) -> bool {
    let EngineError::Mlx(msg) = e else {
        return false;
    };
    let m = msg.to_lowercase();
    [
        "out of memory",
        "bad_alloc",
        "resource limit",
        "unable to allocate",
        "failed to allocate",
        "cudaerrormemoryallocation",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Gradients and sums over one optimizer step's micro-batches.
struct Accum {
    grads: Option<Vec<Array>>,
    loss_sum: f64,
    tokens: u64,
    real: u64,
    total: u64,
}

#[allow(clippy::too_many_arguments)]
fn accumulate(
    plan: &Plan,
    examples: &[Example],
    state: &mut TrainState,
    micro_steps: u32,
    seed: u64,
    names: &[String],
    trainable: &Weights,
    value_and_grad: &mut dyn FnMut(&[Array]) -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)>,
    dropout_seed: &Cell<u64>,
) -> Result<Accum> {
    let nb = plan.batches.len() as u64;
    let split = state.split.max(1) as u64;
    let per_epoch = nb * split;
    let mut acc = Accum {
        grads: None,
        loss_sum: 0.0,
        tokens: 0,
        real: 0,
        total: 0,
    };
    for _ in 0..micro_steps {
        let epoch = state.micro / per_epoch;
        let within = state.micro % per_epoch;
        let order = plan.epoch_order(seed, epoch);
        let b = order[(within / split) as usize];
        let batch: TrainBatch =
            plan.make_part(examples, b, (within % split) as usize, split as usize);
        state.micro += 1;
        if batch.loss_tokens == 0 {
            continue;
        }
        dropout_seed.set(seed.wrapping_add(state.micro.wrapping_mul(0x2545_F491_4F6C_DD1D)));
        let mut args: Vec<Array> = names.iter().map(|n| trainable[n].clone()).collect();
        args.push(batch.inputs.clone());
        args.push(batch.targets.clone());
        args.push(batch.mask.clone());
        args.push(Array::from_f32(state.loss_scale));
        if let Some(s) = &batch.segments {
            args.push(s.clone());
        }
        let (vals, g) = value_and_grad(&args)?;
        let v = &vals[0];
        // Loss and gradients in one evaluation (one host sync), apart from the optimizer
        // update (evaluating both in one graph raises the peak under checkpointing).
        mlx_rs::transforms::eval(std::iter::once(v).chain(g.iter()))?;
        acc.loss_sum += v.item_cast::<f32>() as f64 / state.loss_scale as f64;
        acc.tokens += batch.loss_tokens;
        acc.real += batch.real_tokens;
        acc.total += batch.total_tokens;
        acc.grads = Some(match acc.grads.take() {
            None => g,
            Some(sum) => sum
                .iter()
                .zip(g.iter())
                .map(|(a, b)| a.add(b))
                .collect::<std::result::Result<_, _>>()?,
        });
        mlx_rs::transforms::eval(acc.grads.iter().flatten())?;
    }
    Ok(acc)
}

fn result(outcome: Outcome, state: &TrainState, output: &Path) -> TrainResult {
    TrainResult {
        outcome,
        step: state.step,
        total_steps: state.total_steps,
        final_loss: state.last_loss,
        best_val_loss: state.best_val_loss,
        best_checkpoint: state
            .best_step
            .map(|s| checkpoint::checkpoints_dir(output).join(checkpoint::step_dir_name(s))),
        output_dir: output.to_path_buf(),
        trained_tokens: state.trained_tokens,
    }
}
