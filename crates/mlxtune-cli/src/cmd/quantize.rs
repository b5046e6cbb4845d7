use std::path::PathBuf;

use mlxtune_engine::{Model, QuantSpec};

use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Output directory (config.json with a `quantization` entry, model.safetensors,
    /// tokenizer files): the layout mlx-lm reads.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 4)]
    bits: i32,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut opts = a.model.load_options()?;
    opts.quantize = Some(QuantSpec {
        group_size: a.model.group_size,
        bits: a.bits,
    });
    let model = Model::load(&a.model.model, &opts)?;
    model.save(&a.output)?;
    mlxtune_engine::tokenizer::copy_tokenizer_files(&a.model.model, &a.output)?;
    println!("wrote {}", a.output.display());
    Ok(())
}
