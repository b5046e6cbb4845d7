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
    /// Bits per weight (also accepted as --quantize-bits; default 4).
    #[arg(long, value_enum)]
    bits: Option<super::choices::Bits>,
    /// Print one JSON object (`output`, `bits`, `group_size`).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let bits = match (a.bits, a.model.quantize_bits) {
        (Some(b), Some(q)) if b != q => {
            anyhow::bail!(
                "--bits {} and --quantize-bits {} disagree; give one",
                b.get(),
                q.get()
            )
        }
        (b, q) => b.or(q).map_or(4, |b| b.get()),
    };
    let mut opts = a.model.load_options()?;
    opts.quantize = Some(QuantSpec {
        group_size: a.model.group_size,
        bits,
    });
    let model = Model::load(&a.model.model, &opts)?;
    model.save(&a.output)?;
    mlxtune_engine::tokenizer::copy_tokenizer_files(&a.model.model, &a.output)?;
    super::report(
        a.json,
        serde_json::json!({"output": a.output, "bits": bits, "group_size": a.model.group_size}),
        format!("wrote {} ({bits}-bit)", a.output.display()),
    );
    Ok(())
}
