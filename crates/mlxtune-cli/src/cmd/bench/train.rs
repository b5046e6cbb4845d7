//! `mlxtune bench train`: fine-tuning throughput on synthetic tokens, through the
//! trainer's own [`Stepper`] (the step the trainer runs, not a copy of it).

use std::rc::Rc;
use std::time::Instant;

use mlxtune_engine::data::batch::TrainBatch;
use mlxtune_engine::data::segments::Segments;
use mlxtune_engine::mlx_rs::ops::indexing::IndexOp;
use mlxtune_engine::mlx_rs::{self, Dtype};
use mlxtune_engine::models::random::random_model;
use mlxtune_engine::models::{quantize_weights, LayerKind, Model, QuantSpec};
use mlxtune_engine::train::config::{BatchSize, DatasetConfig, FineTuneConfig, Parameters};
use mlxtune_engine::train::distributed::Group;
use mlxtune_engine::train::memory_floor::{compute_bytes, memory_floor, MemoryFloor, Mode};
use mlxtune_engine::train::optim::Optimizer;
use mlxtune_engine::train::prepare::initial_trainables;
use mlxtune_engine::train::spec::FineTuneType;
use mlxtune_engine::train::step::{default_chunked_loss, loss_chunk_tokens, StepOptions};
use mlxtune_engine::train::step_functions::{attention_reach, StepFunctions};
use mlxtune_engine::train::stepper::{MicroBatch, StepOutcome, Stepper};
use mlxtune_engine::train::TrainSpec;
use mlxtune_engine::weights::{self, Weights};
use mlxtune_engine::{runtime, LoadOptions};

use super::train_report::{memory_profile, BenchResult, PhaseSeconds};
use crate::cmd::choices::{DtypeArg, FineTuneTypeArg, Shape};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A model directory (default: a named shape with random weights).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// The shape (when no --model is given).
    #[arg(long, value_enum, default_value_t = Shape::Lfm2_1_2b)]
    pub shape: Shape,
    /// The fine-tuning method.
    #[arg(long = "type", value_enum, default_value_t = FineTuneTypeArg::Lora)]
    pub fine_tune_type: FineTuneTypeArg,
    /// Rows per step.
    #[arg(long = "batch-size", alias = "batch", default_value_t = 8)]
    pub batch: i32,
    /// Tokens per row.
    #[arg(long = "seq-len", alias = "seq", default_value_t = 2048)]
    pub seq: i32,
    /// Compute dtype (default: bf16 on a GPU, f32 on the CPU).
    #[arg(long = "dtype", alias = "precision", value_enum)]
    pub precision: Option<DtypeArg>,
    /// Gradient checkpointing: recompute each decoder layer in the backward pass.
    #[arg(long)]
    pub grad_checkpoint: bool,
    /// With --grad-checkpoint: recompute only the first N decoder layers whole (default: all,
    /// or none with --checkpoint-mlps).
    #[arg(long)]
    pub checkpoint_layers: Option<usize>,
    /// With --grad-checkpoint: recompute the MLPs of the first N decoder layers (those not
    /// recomputed whole keep only their MLP's input).
    #[arg(long)]
    pub checkpoint_mlps: Option<usize>,
    /// Recompute every layer's values that cost no matrix product (norms' outputs, the
    /// convolution's, the MLP's activation) instead of keeping them.
    #[arg(long)]
    pub lean: Option<bool>,
    /// MLX's memory limit in GiB: evaluation waits for running work to finish rather than
    /// allocate past it (default: MLX's, 95% of the device's memory on CUDA).
    #[arg(long)]
    pub memory_limit_gib: Option<f64>,
    /// Output layer + loss in chunks (default: on a GPU, and with --grad-checkpoint).
    #[arg(long)]
    pub chunked_loss: Option<bool>,
    /// Compile the loss-and-gradient function.
    #[arg(long)]
    pub compile: bool,
    /// Also report the forward-only and loss-and-gradient peaks, weights and optimizer state.
    #[arg(long)]
    pub memory_profile: bool,
    /// Use the upcast reference cross-entropy instead of MLX's fused kernel (CUDA).
    #[arg(long)]
    pub no_fused_ce: bool,
    /// Run the optimizer update op by op instead of compiled.
    #[arg(long)]
    pub no_compiled_optimizer: bool,
    /// Packed rows of this many equal examples each (block-diagonal masks); 0: causal rows.
    #[arg(long, default_value_t = 0)]
    pub segments: u32,
    /// With --segments: each query block's keys start at least this many positions before
    /// its first query (rounded up to whole blocks), as a real job's longest example sets it.
    #[arg(long)]
    pub attention_reach: Option<u32>,
    /// LoRA / DoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: u32,
    /// Timed steps.
    #[arg(long, default_value_t = 6)]
    pub steps: u32,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Peak dense TFLOP/s of the device, for MFU (H100 SXM bf16: 989).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let fine_tune_type = match a.fine_tune_type {
        FineTuneTypeArg::Lora => FineTuneType::Lora,
        FineTuneTypeArg::Dora => FineTuneType::Dora,
        FineTuneTypeArg::Qlora => FineTuneType::Qlora,
        FineTuneTypeArg::Full => FineTuneType::Full,
    };
    let precision = match a.precision {
        Some(p) => p.dtype(),
        None if runtime::current_device() == "gpu" => Dtype::Bfloat16,
        None => Dtype::Float32,
    };
    anyhow::ensure!(
        a.batch > 0 && a.seq > 1,
        "--batch-size must be >= 1 and --seq-len >= 2"
    );
    anyhow::ensure!(
        (a.checkpoint_layers.is_none() && a.checkpoint_mlps.is_none()) || a.grad_checkpoint,
        "--checkpoint-layers and --checkpoint-mlps need --grad-checkpoint"
    );
    anyhow::ensure!(
        a.attention_reach.is_none() || a.segments > 0,
        "--attention-reach needs --segments"
    );
    let r = measure(&a, fine_tune_type, precision)?;
    if r.rank != 0 {
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", r.line());
    }
    Ok(())
}

/// The pieces of a benchmarked step.
pub struct Setup {
    pub model: Model,
    pub spec: TrainSpec,
    pub stepper: Stepper,
    pub optimizer: Optimizer,
    pub trainable: Weights,
    /// Frozen weights as the step sees them.
    pub base: Weights,
    pub batch: MicroBatch,
    pub opts: StepOptions,
    /// Under `mlxtune launch`: data parallelism, each rank stepping its own batch.
    pub group: Option<Rc<Group>>,
}

/// The spec a job of this shape would have (the trainer's defaults for everything else).
fn bench_spec(a: &TrainArgs, fine_tune_type: FineTuneType) -> anyhow::Result<TrainSpec> {
    let config = FineTuneConfig {
        base_model: "bench".into(),
        dataset: DatasetConfig {
            training_data: "bench".into(),
            ..Default::default()
        },
        parameters: Parameters {
            learning_rate: 1e-4,
            batch_size: BatchSize::Fixed(a.batch as u32),
            epochs: 1.0,
            sequence_length: a.seq as u32,
            lora_rank: Some(a.rank),
            lora_alpha: Some(2.0 * a.rank as f64),
        },
        fine_tune_type: Some(fine_tune_type.as_str().into()),
        ..Default::default()
    };
    TrainSpec::from_config(&config).map_err(|e| anyhow::anyhow!("{e}"))
}

fn load_model(a: &TrainArgs, fine_tune_type: FineTuneType, dtype: Dtype) -> anyhow::Result<Model> {
    let mut model = match &a.model {
        Some(d) => Model::load(
            d,
            &LoadOptions {
                dtype: Some(dtype),
                quantize: None,
            },
        )?,
        None => random_model(&a.shape.name(), dtype, 0)?,
    };
    if fine_tune_type == FineTuneType::Qlora {
        let q = QuantSpec {
            group_size: 64,
            bits: 4,
        };
        quantize_weights(&model.spec, &mut model.weights, q)?;
    }
    Ok(model)
}

/// Random tokens: `batch` rows of `seq`, every position in the loss; with `segments`,
/// each row packs that many equal examples (block-diagonal masks, as packing makes).
fn synthetic_batch(a: &TrainArgs, vocab: i32, seed: u64) -> anyhow::Result<MicroBatch> {
    let key = mlx_rs::random::key(seed)?;
    let tokens = mlx_rs::random::randint::<_, i32>(0, vocab, &[a.batch, a.seq + 1][..], &key)?;
    let inputs = tokens.index((.., 0..a.seq));
    let targets = tokens.index((.., 1..a.seq + 1));
    let mask = mlx_rs::ops::ones::<f32>(&[a.batch, a.seq])?;
    mlx_rs::transforms::eval([&inputs, &targets, &mask])?;
    let segments = (a.segments > 0).then(|| {
        let per = (a.seq as usize).div_ceil(a.segments as usize);
        let ids: Vec<i32> = (0..a.batch as usize * a.seq as usize)
            .map(|i| ((i % a.seq as usize) / per) as i32 + 1)
            .collect();
        Segments::new(&ids, a.seq as usize)
    });
    let n = (a.batch * a.seq) as u64;
    Ok(MicroBatch {
        batch: TrainBatch {
            inputs,
            targets,
            mask,
            segments,
            loss_tokens: n,
            real_tokens: n,
            total_tokens: n,
        },
        dropout_seed: 0,
    })
}

fn setup(a: &TrainArgs, fine_tune_type: FineTuneType, dtype: Dtype) -> anyhow::Result<Setup> {
    let model = load_model(a, fine_tune_type, dtype)?;
    let spec = bench_spec(a, fine_tune_type)?;
    let (trainable, _) = initial_trainables(&spec, &model)?;
    let names = mlxtune_engine::train::order::layer_order(&trainable);
    // Full fine-tuning trains every weight: nothing frozen beside the trainable copies.
    let base = if fine_tune_type == FineTuneType::Full {
        Weights::new()
    } else {
        model.weights.clone()
    };
    let opts = StepOptions {
        lora_scale: spec.lora_scale(),
        dropout: 0.0,
        compute: dtype,
        checkpoint_layers: match a.grad_checkpoint {
            true => a.checkpoint_layers.unwrap_or(match a.checkpoint_mlps {
                Some(_) => 0,
                None => usize::MAX,
            }),
            false => 0,
        },
        checkpoint_mlps: a.checkpoint_mlps.unwrap_or(0),
        lean: a.lean.unwrap_or(a.grad_checkpoint),
        chunked_loss: a
            .chunked_loss
            .unwrap_or(default_chunked_loss(a.grad_checkpoint)),
        attention_reach: None,
        layer_grads_in_compute: true,
    };
    let mut stepper = Stepper::new(StepFunctions::new(
        &model.spec,
        base.clone(),
        names,
        opts,
        a.compile,
    )?);
    stepper.set_reach_floor(a.attention_reach.unwrap_or(0) as usize);
    let group = Group::from_env()?.map(Rc::new);
    if let Some(g) = &group {
        stepper.set_group(g.clone());
    }
    let mut optimizer = Optimizer::new(&spec);
    optimizer.compile_update = !a.no_compiled_optimizer;
    mlxtune_engine::eval::set_fused_cross_entropy(!a.no_fused_ce);
    let rank = group.as_ref().map_or(0, |g| g.rank());
    let batch = synthetic_batch(a, model.spec.vocab_size, 1 + rank as u64)?;
    Ok(Setup {
        model,
        spec,
        stepper,
        optimizer,
        trainable,
        base,
        batch,
        opts,
        group,
    })
}

/// One step of the trainer's own kind (building the next one's graph as it runs, when
/// `more` follow); the step's mean loss.
fn step(s: &mut Setup, more: bool) -> anyhow::Result<f64> {
    let lr = s.spec.learning_rate as f32;
    let out = s.stepper.step_ahead(
        &mut s.trainable,
        &mut s.optimizer,
        std::slice::from_ref(&s.batch),
        (1.0, lr, s.spec.max_grad_norm),
        more.then_some(&s.batch),
    )?;
    match out {
        StepOutcome::Updated(st) => Ok(st.loss),
        other => anyhow::bail!("the benchmark step did not update: {other:?}"),
    }
}

fn measure(
    a: &TrainArgs,
    fine_tune_type: FineTuneType,
    dtype: Dtype,
) -> anyhow::Result<BenchResult> {
    runtime::init()?;
    // Checked before any step, so a bad size is reported as itself.
    let attention_block = match a.segments {
        0 => None,
        _ => Some(mlxtune_engine::models::packed_attention::block_for(a.seq)?),
    };
    if let Some(gib) = a.memory_limit_gib {
        runtime::set_memory_limit_gib(gib, "--memory-limit-gib")?;
    }
    let mut s = setup(a, fine_tune_type, dtype)?;
    for _ in 0..a.warmup {
        step(&mut s, true)?;
    }
    runtime::reset_peak_memory();
    s.stepper.phases = Some(Default::default());
    super::cuda_profiler::start();
    let t = Instant::now();
    let mut loss = 0.0;
    for i in 1..=a.steps.max(1) {
        loss = step(&mut s, i < a.steps)?;
    }
    let dt = t.elapsed().as_secs_f64() / a.steps.max(1) as f64;
    super::cuda_profiler::stop();
    let peak_memory_bytes = runtime::memory_stats().peak;
    let memory = if a.memory_profile {
        Some(memory_profile(&mut s)?)
    } else {
        None
    };
    let ranks = s.group.as_ref().map_or(1, |g| g.size());
    // The whole group's tokens: every rank steps `batch` rows.
    let tok_s = (a.batch * a.seq) as f64 * ranks as f64 / dt;
    let fpt = flops_per_token(&s.model, fine_tune_type, a.seq);
    let tflops = fpt * tok_s / 1e12;
    Ok(BenchResult {
        model: a
            .model
            .as_ref()
            .map_or(a.shape.name(), |d| d.display().to_string()),
        fine_tune_type,
        batch: a.batch,
        seq: a.seq,
        ranks,
        rank: s.group.as_ref().map_or(0, |g| g.rank()),
        precision: weights::dtype_name(dtype).into(),
        grad_checkpoint: a.grad_checkpoint,
        checkpoint_layers: s.opts.checkpoint_layers.min(s.model.spec.num_layers()),
        checkpoint_mlps: s.opts.checkpoint_mlps.min(s.model.spec.num_layers()),
        lean: s.opts.lean,
        layers: s.model.spec.num_layers(),
        memory_limit_bytes: runtime::memory_limit(),
        chunked_loss: s.opts.chunked_loss,
        loss_chunk_tokens: s
            .opts
            .chunked_loss
            .then(|| loss_chunk_tokens(&s.opts, s.model.spec.num_layers())),
        compiled: a.compile,
        fused_cross_entropy: mlxtune_engine::eval::fused_cross_entropy_available(),
        compiled_optimizer: !a.no_compiled_optimizer,
        segments: a.segments,
        attention_block,
        attention_reach: attention_reach(&s.batch.batch, a.attention_reach.unwrap_or(0) as usize)?,
        parameters: s.model.spec.num_parameters(),
        trainable_parameters: s.trainable.values().map(|x| x.size() as u64).sum(),
        tokens_per_second: tok_s,
        step_seconds: dt,
        phase_seconds: s.stepper.phases.map(PhaseSeconds::from),
        peak_memory_bytes,
        memory_floor: floor_of(&s, a),
        peak_rss_bytes: runtime::peak_rss(),
        flops_per_token: fpt,
        tflops,
        mfu: a.peak_tflops.map(|p| tflops / p),
        loss: loss as f32,
        backend: runtime::backend().into(),
        device: runtime::current_device().into(),
        mlx_env: runtime::scheduling_settings(),
        memory,
    })
}

/// The analytic floor of the step's peak ([`memory_floor`]): the frozen weights, the
/// trainable arrays, the values the step's checkpointing keeps over one batch.
fn floor_of(s: &Setup, a: &TrainArgs) -> MemoryFloor {
    let spec = &s.model.spec;
    memory_floor(
        spec,
        s.base.values().map(|x| x.nbytes() as u64).sum(),
        s.trainable.values().map(|x| x.size() as u64).sum(),
        compute_bytes(s.opts.compute),
        (a.batch * a.seq) as u64,
        Mode::of(&s.opts, spec.num_layers()),
    )
}

/// Model FLOPs per token: 6N for full fine-tuning, 4N with frozen weights (no weight
/// gradients), plus attention's 12·layers·hidden·seq.
fn flops_per_token(model: &Model, fine_tune_type: FineTuneType, seq: i32) -> f64 {
    let n = model.spec.num_parameters() as f64;
    let n_attn = model
        .spec
        .layers
        .iter()
        .filter(|k| **k == LayerKind::Attention)
        .count() as f64;
    let per_param = if fine_tune_type == FineTuneType::Full {
        6.0
    } else {
        4.0
    };
    per_param * n + 12.0 * n_attn * model.spec.hidden_size as f64 * seq as f64
}
