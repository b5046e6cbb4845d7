//! `mlxtune bench init-model`: a model directory of a named shape with random weights.

use mlxtune_engine::models::random::random_model;
use mlxtune_engine::tokenizer::copy_tokenizer_files;
use mlxtune_engine::weights;

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

pub fn run(a: InitModelArgs) -> anyhow::Result<()> {
    let dtype = weights::parse_dtype(&a.precision)?;
    let model = random_model(&a.shape, dtype, 0)?;
    model.save(&a.out)?;
    copy_tokenizer_files(&a.tokenizer_from, &a.out)?;
    println!(
        "{}: {} with {} random parameters ({})",
        a.out.display(),
        a.shape,
        model.spec.num_parameters(),
        weights::dtype_name(dtype)
    );
    Ok(())
}
