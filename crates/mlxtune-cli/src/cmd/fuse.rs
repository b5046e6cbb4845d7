//! `mlxtune fuse`: an adapter folded into its base model, written as a Hugging Face
//! directory.

use std::path::PathBuf;

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::fuse::fuse_and_save;

use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The adapter: mlx-lm or PEFT layout, or a training job's output directory.
    #[arg(long)]
    adapter: PathBuf,
    /// Where to write the fused model (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    output: PathBuf,
    /// Write dense float weights even when the base model is quantized.
    #[arg(long)]
    dequantize: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (mut model, _) = a.model.load()?;
    let adapter = Adapter::load(&a.adapter)?;
    fuse_and_save(&mut model, Some(&adapter), a.dequantize, &a.output)?;
    println!(
        "fused {} adapted layers{} into {}",
        adapter.modules().len(),
        if adapter.dora { " (DoRA)" } else { "" },
        a.output.display()
    );
    Ok(())
}
