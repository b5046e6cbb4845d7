//! `mlxtune bench init-model`: a model directory of a named shape with random weights.

use mlxtune_engine::models::random::random_model;
use mlxtune_engine::tokenizer::copy_tokenizer_files;
use mlxtune_engine::weights;

use crate::cmd::choices::{DtypeArg, Shape};

#[derive(clap::Args)]
pub struct InitModelArgs {
    /// The shape.
    #[arg(long, value_enum, default_value_t = Shape::Lfm2_1_2b)]
    shape: Shape,
    /// Where to write the model.
    #[arg(long, alias = "out")]
    output: std::path::PathBuf,
    /// A model directory whose tokenizer files are copied.
    #[arg(long)]
    tokenizer_from: std::path::PathBuf,
    /// Weight dtype.
    #[arg(long, alias = "precision", value_enum, default_value_t = DtypeArg::Bf16)]
    dtype: DtypeArg,
}

pub fn run(a: InitModelArgs) -> anyhow::Result<()> {
    let dtype = a.dtype.dtype();
    let model = random_model(&a.shape.name(), dtype, 0)?;
    model.save(&a.output)?;
    copy_tokenizer_files(&a.tokenizer_from, &a.output)?;
    println!(
        "{}: {} with {} random parameters ({})",
        a.output.display(),
        a.shape.name(),
        model.spec.num_parameters(),
        weights::dtype_name(dtype)
    );
    Ok(())
}
