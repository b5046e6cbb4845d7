//! `mlxtune fuse`: an adapter folded into its base model, written as a Hugging Face
//! directory.

use std::path::PathBuf;

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::fuse::fuse_and_save_with_progress;

use super::{progress, ModelArgs};

/// Largest weights file written, in megabytes (5000, as transformers' `save_pretrained`).
const DEFAULT_SHARD_MB: u64 = 5000;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The adapter: mlx-lm or PEFT layout, or a training job's output directory.
    #[arg(long)]
    adapter: PathBuf,
    /// Largest weights file, in megabytes; larger models are written as shards with an
    /// index (model.safetensors.index.json).
    #[arg(long, default_value_t = DEFAULT_SHARD_MB)]
    max_shard_mb: u64,
    /// Where to write the fused model (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    output: PathBuf,
    /// Write dense float weights even when the base model is quantized.
    #[arg(long)]
    dequantize: bool,
    /// Print one JSON object (`output`, `adapted_layers`, `dora`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (mut model, _) = a.model.load()?;
    let adapter = Adapter::load(&a.adapter)?;
    let bar = progress::bar("layers fused");
    fuse_and_save_with_progress(
        &mut model,
        Some(&adapter),
        a.dequantize,
        &a.output,
        a.max_shard_mb.saturating_mul(1_000_000),
        &mut progress::reporter(&bar),
    )?;
    bar.finish_and_clear();
    super::report(
        a.json,
        serde_json::json!({"output": a.output, "adapted_layers": adapter.modules().len(), "dora": adapter.dora}),
        format!(
            "fused {} adapted layers{} into {}",
            adapter.modules().len(),
            if adapter.dora { " (DoRA)" } else { "" },
            a.output.display()
        ),
    );
    Ok(())
}
