use std::time::Instant;

use mlxtune_engine::mlx_rs::random;
use mlxtune_engine::{runtime, weights};

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Square matrix product throughput.
    Matmul(MatmulArgs),
    /// Fine-tuning throughput (tokens/s, step time, peak memory, MFU) on synthetic tokens.
    Train(TrainArgs),
    /// Writes a model directory of a named shape with random weights (config.json,
    /// model.safetensors, tokenizer files copied from another model), to run real jobs
    /// (`mlxtune train`, `mlxtune serve`) at a benchmark's size.
    InitModel(InitModelArgs),
}

#[derive(clap::Args)]
pub struct InitModelArgs {
    /// lfm2-1.2b, lfm2-20m or llama-20m.
    #[arg(long, default_value = "lfm2-1.2b")]
    shape: String,
    /// Where to write the model.
    #[arg(long)]
    out: std::path::PathBuf,
    /// A model directory whose tokenizer files are copied.
    #[arg(long)]
    tokenizer_from: std::path::PathBuf,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "bf16")]
    precision: String,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A model directory (default: a named shape with random weights).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// lfm2-1.2b, lfm2-20m or llama-20m.
    #[arg(long, default_value = "lfm2-1.2b")]
    shape: String,
    /// lora, dora, qlora or full.
    #[arg(long = "type", default_value = "lora")]
    fine_tune_type: String,
    #[arg(long, default_value_t = 8)]
    batch: i32,
    #[arg(long, default_value_t = 2048)]
    seq: i32,
    /// f32, bf16 or f16 (default: bf16 on a GPU, f32 on the CPU).
    #[arg(long)]
    precision: Option<String>,
    #[arg(long)]
    grad_checkpoint: bool,
    /// Output layer + loss in checkpointed chunks (default: with --grad-checkpoint).
    #[arg(long)]
    chunked_loss: Option<bool>,
    /// Compile the loss-and-gradient function.
    #[arg(long)]
    compile: bool,
    /// Also report the forward-only and loss-and-gradient peaks, weights and optimizer state.
    #[arg(long)]
    memory_profile: bool,
    /// Use the upcast reference cross-entropy instead of MLX's fused kernel (CUDA).
    #[arg(long)]
    no_fused_ce: bool,
    /// Run the optimizer update op by op instead of compiled.
    #[arg(long)]
    no_compiled_optimizer: bool,
    /// Packed rows of this many equal examples each (block-diagonal masks); 0: causal rows.
    #[arg(long, default_value_t = 0)]
    segments: u32,
    #[arg(long, default_value_t = 16)]
    rank: u32,
    #[arg(long, default_value_t = 6)]
    steps: u32,
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Peak dense TFLOP/s of the device, for MFU (H100 SXM bf16: 989).
    #[arg(long)]
    peak_tflops: Option<f64>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct MatmulArgs {
    #[arg(long, default_value_t = 1024)]
    size: i32,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Timed repetitions (after 3 warm-up products).
    #[arg(long, default_value_t = 20)]
    iters: u32,
    #[arg(long)]
    json: bool,
}

pub fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Matmul(a) => matmul(a),
        Bench::Train(a) => train(a),
        Bench::InitModel(a) => init_model(a),
    }
}

fn init_model(a: InitModelArgs) -> anyhow::Result<()> {
    let dtype = weights::parse_dtype(&a.precision)?;
    let mut model = mlxtune_engine::train::bench::random_model(&a.shape, dtype, 0)?;
    model.dir = a.tokenizer_from.clone();
    model.save(&a.out)?;
    println!(
        "{}: {} with {} random parameters ({})",
        a.out.display(),
        a.shape,
        model.spec.num_parameters(),
        weights::dtype_name(dtype)
    );
    Ok(())
}

fn matmul(a: MatmulArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.size > 0 && a.iters > 0,
        "--size and --iters must be positive"
    );
    let dtype = weights::parse_dtype(&a.dtype)?;
    let n = a.size;
    let x = random::normal::<f32>(&[n, n][..], None, None, None)?.as_dtype(dtype)?;
    let y = random::normal::<f32>(&[n, n][..], None, None, None)?.as_dtype(dtype)?;
    mlxtune_engine::mlx_rs::transforms::eval([&x, &y])?;
    for _ in 0..3 {
        x.matmul(&y)?.eval()?;
    }
    let start = Instant::now();
    for _ in 0..a.iters {
        x.matmul(&y)?.eval()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let gflops = 2.0 * (n as f64).powi(3) * a.iters as f64 / secs / 1e9;
    let out = serde_json::json!({
        "bench": "matmul",
        "size": n,
        "dtype": weights::dtype_name(dtype),
        "iters": a.iters,
        "seconds": secs,
        "gflops": gflops,
        "backend": runtime::backend(),
        "device": runtime::current_device(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{n}x{n} {} matmul on {}: {gflops:.1} GFLOP/s",
            weights::dtype_name(dtype),
            runtime::current_device()
        );
    }
    Ok(())
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    use mlxtune_engine::train::bench::{run, BenchOptions};
    use mlxtune_engine::train::spec::FineTuneType;
    let fine_tune_type = match a.fine_tune_type.as_str() {
        "lora" => FineTuneType::Lora,
        "dora" => FineTuneType::Dora,
        "qlora" => FineTuneType::Qlora,
        "full" => FineTuneType::Full,
        other => anyhow::bail!("--type {other}: expected lora, dora, qlora or full"),
    };
    let precision = match &a.precision {
        Some(p) => weights::parse_dtype(p)?,
        None if runtime::current_device() == "gpu" => weights::Dtype::Bfloat16,
        None => weights::Dtype::Float32,
    };
    anyhow::ensure!(
        a.batch > 0 && a.seq > 1,
        "--batch must be >= 1 and --seq >= 2"
    );
    let r = run(&BenchOptions {
        model_dir: a.model.clone(),
        shape: a.shape.clone(),
        fine_tune_type,
        batch: a.batch,
        seq: a.seq,
        precision,
        grad_checkpoint: a.grad_checkpoint,
        rank: a.rank,
        steps: a.steps,
        warmup: a.warmup,
        peak_tflops: a.peak_tflops,
        chunked_loss: a.chunked_loss.unwrap_or(a.grad_checkpoint),
        compile: a.compile,
        memory_profile: a.memory_profile,
        fused_cross_entropy: !a.no_fused_ce,
        compile_optimizer: !a.no_compiled_optimizer,
        segments: a.segments,
    })?;
    let flags = format!(
        "{}{}{}",
        if r.grad_checkpoint { " +ckpt" } else { "" },
        if r.chunked_loss { " +chunked-loss" } else { "" },
        if r.compiled { " +compiled" } else { "" }
    );
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {:?} batch {} x {} {}{}: {:.0} tok/s, {:.3} s/step, peak {:.2} GiB, {:.1} TFLOP/s{}",
            r.model,
            r.fine_tune_type,
            r.batch,
            r.seq,
            r.precision,
            flags,
            r.tokens_per_second,
            r.step_seconds,
            r.peak_memory_bytes as f64 / (1u64 << 30) as f64,
            r.tflops,
            r.mfu.map_or(String::new(), |m| format!(", MFU {:.1}%", 100.0 * m))
        );
    }
    Ok(())
}
