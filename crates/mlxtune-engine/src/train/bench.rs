//! Training throughput on synthetic tokens: a model from a directory or a named shape with
//! random weights, one micro-batch per step (value_and_grad + AdamW), timed after warm-up.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use mlx_rs::{Array, Dtype};
use serde::Serialize;
use serde_json::json;

use super::lora;
use super::optim::Optimizer;
use super::spec::{FineTuneType, TrainSpec};
use super::step::{compiled_loss_and_grad, loss_and_grad, StepOptions};
use crate::error::{EngineError, Result};
use crate::models::{spec_from_config, HfConfig, LoadOptions, Model, QuantSpec, Role};
use crate::weights::Weights;

/// Named shapes, as `config.json` text.
pub fn named_shape(name: &str) -> Option<serde_json::Value> {
    let lfm2 = |hidden: i64,
                layers: i64,
                heads: i64,
                kv: i64,
                ff: i64,
                vocab: i64,
                attn: Vec<i64>| {
        json!({
            "model_type": "lfm2", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "block_ff_dim": ff,
            "block_auto_adjust_ff_dim": true, "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256,
            "full_attn_idxs": attn, "rope_theta": 1000000.0, "norm_eps": 1e-5, "conv_L_cache": 3,
            "conv_bias": false, "vocab_size": vocab, "max_position_embeddings": 128000,
            "tie_embedding": true, "eos_token_id": 7
        })
    };
    Some(match name {
        // LFM2-1.2B as published (1,170,340,608 parameters).
        "lfm2-1.2b" => lfm2(2048, 16, 32, 8, 12288, 65536, vec![2, 5, 8, 10, 12, 14]),
        // A ~20M-parameter LFM2 for CPU runs.
        "lfm2-20m" => lfm2(256, 8, 4, 2, 1536, 32000, vec![2, 5, 7]),
        // A ~23M-parameter Llama for CPU runs.
        "llama-20m" => json!({
            "model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 8,
            "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32000,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
            "tie_word_embeddings": false
        }),
        _ => return None,
    })
}

/// A model of a named shape with random weights (N(0, 0.02), norms 1).
pub fn random_model(shape: &str, dtype: Dtype, seed: u64) -> Result<Model> {
    let cfg_json = named_shape(shape).ok_or_else(|| {
        EngineError::invalid(
            "shape",
            format!("`{shape}`: expected lfm2-1.2b, lfm2-20m or llama-20m"),
        )
    })?;
    let config = HfConfig::parse(Path::new(shape), &cfg_json.to_string())?;
    let spec = spec_from_config(&config)?;
    let mut weights = Weights::new();
    for (i, e) in spec.expected_tensors().into_iter().enumerate() {
        let key = mlx_rs::random::key(seed.wrapping_mul(7919).wrapping_add(i as u64))?;
        let a = if e.role == Role::Other && e.shape.len() == 1 && e.name.ends_with("norm.weight") {
            mlx_rs::ops::ones::<f32>(&e.shape)?
        } else {
            mlx_rs::random::normal::<f32>(e.shape.as_slice(), None, 0.02f32, &key)?
        };
        weights.insert(e.name, a.as_dtype(dtype)?);
    }
    mlx_rs::transforms::eval(weights.values())?;
    Ok(Model {
        dir: shape.into(),
        config,
        spec,
        weights,
        dtype,
        quantization: None,
    })
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model_dir: Option<std::path::PathBuf>,
    pub shape: String,
    pub fine_tune_type: FineTuneType,
    pub batch: i32,
    pub seq: i32,
    pub precision: Dtype,
    pub grad_checkpoint: bool,
    pub rank: u32,
    pub steps: u32,
    pub warmup: u32,
    /// Peak dense TFLOP/s of the device for MFU (None: not reported).
    pub peak_tflops: Option<f64>,
    /// Compute the loss in checkpointed chunks (default: with gradient checkpointing).
    pub chunked_loss: bool,
    /// Compile the loss-and-gradient function (MLX `compile`).
    pub compile: bool,
    /// After the timed steps, also measure the peak of the forward pass alone and of
    /// loss + gradients without the optimizer update.
    pub memory_profile: bool,
    /// MLX's fused cross-entropy where available (CUDA); off: the upcast reference.
    pub fused_cross_entropy: bool,
    /// Compile the optimizer update; off: its operations one by one.
    pub compile_optimizer: bool,
    /// Packed rows: each row holds this many equal examples (block-diagonal attention mask
    /// and convolution masks, as the trainer's packing makes); 0: plain causal rows.
    pub segments: u32,
}

/// Where the memory goes: peaks of the parts of a step, and the resident arrays.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryProfile {
    /// Frozen and trainable weights as held (base in the compute dtype, trainables f32).
    pub weights_bytes: u64,
    /// Optimizer moments.
    pub optimizer_state_bytes: u64,
    /// Peak of loss only (no gradient: nothing kept for a backward pass).
    pub forward_peak_bytes: u64,
    /// Peak of the decoder body alone (final hidden states, no output layer or loss).
    pub body_forward_peak_bytes: u64,
    /// Peak of loss + gradients, without the optimizer update.
    pub loss_and_grad_peak_bytes: u64,
}

/// Measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub fine_tune_type: FineTuneType,
    pub batch: i32,
    pub seq: i32,
    pub precision: String,
    pub grad_checkpoint: bool,
    pub chunked_loss: bool,
    pub compiled: bool,
    pub fused_cross_entropy: bool,
    pub compiled_optimizer: bool,
    pub segments: u32,
    pub parameters: u64,
    pub trainable_parameters: u64,
    pub tokens_per_second: f64,
    pub step_seconds: f64,
    /// MLX allocator peak during the timed steps.
    pub peak_memory_bytes: u64,
    /// Process peak resident memory (Linux VmHWM), comparable to other frameworks' RSS.
    pub peak_rss_bytes: Option<u64>,
    pub flops_per_token: f64,
    pub tflops: f64,
    pub mfu: Option<f64>,
    pub loss: f32,
    pub backend: String,
    pub device: String,
    /// MLX scheduling variables in effect (see `runtime::CUDA_SCHEDULING`).
    pub mlx_env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryProfile>,
}

/// Runs the benchmark.
pub fn run(o: &BenchOptions) -> Result<BenchResult> {
    crate::runtime::init()?;
    let model = match &o.model_dir {
        Some(d) => Model::load(
            d,
            &LoadOptions {
                dtype: Some(o.precision),
                quantize: None,
            },
        )?,
        None => random_model(&o.shape, o.precision, 0)?,
    };
    let mut model = model;
    if o.fine_tune_type == FineTuneType::Qlora {
        crate::models::quantize_weights(
            &model.spec,
            &mut model.weights,
            QuantSpec {
                group_size: 64,
                bits: 4,
            },
        )?;
    }
    let cfg = json!({
        "baseModel": "bench", "dataset": { "trainingData": "bench" },
        "parameters": { "learningRate": 1e-4, "batchSize": o.batch, "epochs": 1, "sequenceLength": o.seq,
                        "loraRank": o.rank, "loraAlpha": 2 * o.rank },
        "fineTuneType": match o.fine_tune_type { FineTuneType::Lora => "lora", FineTuneType::Dora => "dora", FineTuneType::Qlora => "qlora", FineTuneType::Full => "full" },
    });
    let spec = TrainSpec::from_config(
        &super::config::from_value(cfg).map_err(|e| EngineError::invalid(&e.param, e.message))?,
    )
    .map_err(|e| EngineError::invalid(&e.param, e.message))?;
    let mut trainable = match o.fine_tune_type {
        FineTuneType::Full => model
            .spec
            .expected_tensors()
            .into_iter()
            .map(|e| {
                Ok((
                    e.name.clone(),
                    model.weights[&e.name].as_dtype(Dtype::Float32)?,
                ))
            })
            .collect::<Result<Weights>>()?,
        _ => {
            let modules = lora::target_modules(&model.spec, &spec.targets, None);
            lora::init_adapters(&model, &modules, &spec)?
        }
    };
    let mut names: Vec<String> = trainable.keys().cloned().collect();
    names.sort();
    let trainable_params: u64 = trainable.values().map(|a| a.size() as u64).sum();
    let base = if o.fine_tune_type == FineTuneType::Full {
        Weights::new()
    } else {
        model.weights.clone()
    };
    let opts = StepOptions {
        lora_scale: spec.lora_scale(),
        dropout: 0.0,
        compute: o.precision,
        checkpoint: o.grad_checkpoint,
        chunked_loss: o.chunked_loss,
    };
    let base_for_profile = base.clone();
    let argnums: Vec<i32> = (0..names.len() as i32).collect();
    let mut eager = loss_and_grad(
        &model.spec,
        base.clone(),
        names.clone(),
        opts,
        Rc::new(Cell::new(0)),
        &argnums,
    );
    let mut vg = compiled_loss_and_grad(&model.spec, base, names.clone(), opts)?;
    let use_compile = o.compile;
    let mut opt = Optimizer::new(&spec);
    opt.compile_update = o.compile_optimizer;
    crate::eval::set_fused_cross_entropy(o.fused_cross_entropy);
    let key = mlx_rs::random::key(1)?;
    let tokens = mlx_rs::random::randint::<_, i32>(
        0,
        model.spec.vocab_size,
        &[o.batch, o.seq + 1][..],
        &key,
    )?;
    use mlx_rs::ops::indexing::IndexOp;
    let inputs = tokens.index((.., 0..o.seq));
    let targets = tokens.index((.., 1..o.seq + 1));
    let mask = mlx_rs::ops::ones::<f32>(&[o.batch, o.seq])?;
    mlx_rs::transforms::eval([&inputs, &targets, &mask])?;
    let segments = (o.segments > 0).then(|| {
        let per = (o.seq as usize).div_ceil(o.segments as usize);
        let ids: Vec<i32> = (0..o.batch as usize * o.seq as usize)
            .map(|i| ((i % o.seq as usize) / per) as i32 + 1)
            .collect();
        Array::from_slice(&ids, &[o.batch, o.seq])
    });
    let n_tok = (o.batch * o.seq) as f32;
    let mut step = |trainable: &mut Weights| -> Result<f32> {
        let mut args = step_args(&names, trainable, &inputs, &targets, &mask, n_tok);
        args.extend(segments.clone());
        let (v, g) = if use_compile {
            vg(&args)?
        } else {
            eager(&args)?
        };
        // The trainer's order of evaluation: loss and gradients together, then the gradient
        // norm (clipping), then the optimizer update. Evaluating the update in the same
        // graph as the backward pass raises the peak under gradient checkpointing.
        mlx_rs::transforms::eval(v.iter().chain(g.iter()))?;
        let norm = g
            .iter()
            .map(|x| x.square().and_then(|s| s.sum(None)))
            .try_fold(Array::from_f32(0.0), |acc, s| acc.add(&s?))?
            .sqrt()?;
        norm.eval()?;
        let _ = norm.item_cast::<f32>();
        let grads: Weights = names.iter().cloned().zip(g).collect();
        opt.step(trainable, &grads, 1e-4)?;
        Ok(v[0].item_cast::<f32>())
    };
    for _ in 0..o.warmup {
        step(&mut trainable)?;
    }
    crate::runtime::reset_peak_memory();
    let t = Instant::now();
    let mut loss = 0.0;
    for _ in 0..o.steps.max(1) {
        loss = step(&mut trainable)?;
    }
    let dt = t.elapsed().as_secs_f64() / o.steps.max(1) as f64;
    let peak_memory_bytes = crate::runtime::memory_stats().peak;
    let memory = if o.memory_profile {
        let bytes = |w: &Weights| w.values().map(|a| a.nbytes() as u64).sum::<u64>();
        let weights_bytes = bytes(&base_for_profile) + bytes(&trainable);
        let optimizer_state_bytes = bytes(&opt.state);
        mlx_rs::transforms::eval(trainable.values())?;
        let p = crate::models::forward::Params {
            base: &base_for_profile,
            over: Some(&trainable),
            lora_scale: spec.lora_scale(),
            compute_dtype: Some(o.precision),
            dropout: None,
        };
        let ctx = crate::models::forward::ForwardCtx::default;
        use crate::models::forward::{forward, forward_hidden};
        let forward_peak_bytes = peak_of(|| {
            let logits = forward(&model.spec, &p, &inputs, ctx())?;
            Ok(vec![
                crate::eval::cross_entropy(&logits, &targets)?.sum(None)?
            ])
        })?;
        let body_forward_peak_bytes = peak_of(|| {
            Ok(vec![
                forward_hidden(&model.spec, &p, &inputs, ctx())?.sum(None)?
            ])
        })?;
        let loss_and_grad_peak_bytes = peak_of(|| {
            let mut args = step_args(&names, &trainable, &inputs, &targets, &mask, n_tok);
            args.extend(segments.clone());
            let (mut v, g) = if use_compile {
                vg(&args)?
            } else {
                eager(&args)?
            };
            v.extend(g);
            Ok(v)
        })?;
        Some(MemoryProfile {
            weights_bytes,
            optimizer_state_bytes,
            forward_peak_bytes,
            body_forward_peak_bytes,
            loss_and_grad_peak_bytes,
        })
    } else {
        None
    };
    let tok_s = (o.batch * o.seq) as f64 / dt;
    let n = model.spec.num_parameters() as f64;
    let n_attn = model
        .spec
        .layers
        .iter()
        .filter(|k| **k == crate::models::LayerKind::Attention)
        .count() as f64;
    let fpt = if o.fine_tune_type == FineTuneType::Full {
        6.0
    } else {
        4.0
    } * n
        + 12.0 * n_attn * model.spec.hidden_size as f64 * o.seq as f64;
    let tflops = fpt * tok_s / 1e12;
    Ok(BenchResult {
        model: o
            .model_dir
            .as_ref()
            .map_or(o.shape.clone(), |d| d.display().to_string()),
        fine_tune_type: o.fine_tune_type,
        batch: o.batch,
        seq: o.seq,
        precision: crate::weights::dtype_name(o.precision).into(),
        grad_checkpoint: o.grad_checkpoint,
        chunked_loss: o.chunked_loss,
        compiled: o.compile,
        fused_cross_entropy: crate::eval::fused_cross_entropy_available(),
        compiled_optimizer: o.compile_optimizer,
        segments: o.segments,
        parameters: model.spec.num_parameters(),
        trainable_parameters: trainable_params,
        tokens_per_second: tok_s,
        step_seconds: dt,
        peak_memory_bytes,
        peak_rss_bytes: peak_rss(),
        flops_per_token: fpt,
        tflops,
        mfu: o.peak_tflops.map(|p| tflops / p),
        loss,
        backend: crate::runtime::backend().into(),
        device: crate::runtime::current_device().into(),
        mlx_env: crate::runtime::scheduling_settings(),
        memory,
    })
}

/// The step's arguments: trainable arrays in `names` order, then inputs, targets, mask and
/// the loss scale (1 / tokens, so the loss is a mean).
fn step_args(
    names: &[String],
    trainable: &Weights,
    inputs: &Array,
    targets: &Array,
    mask: &Array,
    n_tok: f32,
) -> Vec<Array> {
    let mut args: Vec<Array> = names.iter().map(|n| trainable[n].clone()).collect();
    args.extend([
        inputs.clone(),
        targets.clone(),
        mask.clone(),
        Array::from_f32(1.0 / n_tok),
    ]);
    args
}

/// MLX's peak memory while `f`'s arrays are computed.
fn peak_of(f: impl FnOnce() -> Result<Vec<Array>>) -> Result<u64> {
    crate::runtime::reset_peak_memory();
    let out = f()?;
    mlx_rs::transforms::eval(&out)?;
    Ok(crate::runtime::memory_stats().peak)
}

/// The process's peak resident set size, from /proc/self/status.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
