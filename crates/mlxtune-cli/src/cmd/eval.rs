use std::path::PathBuf;

use mlxtune_engine::data::{load_examples, DataFormat, TokenizeOptions};
use mlxtune_engine::eval::evaluate;

use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A LoRA / DoRA adapter to run over the model (mlx-lm or PEFT layout, or a training
    /// job's output directory).
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// A JSONL file of records.
    #[arg(long)]
    data: PathBuf,
    /// The records' format; detected from the first record when absent.
    #[arg(long, value_enum)]
    format: Option<super::choices::FormatArg>,
    /// Records per forward pass.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Cut records to this many tokens (default: the model's context length).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Count prompts / user turns in the loss too.
    #[arg(long)]
    train_on_inputs: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let format: Option<DataFormat> = a.format.map(|f| f.name().parse()).transpose()?;
    let (model, tok) = super::source::load_with_adapter(&a.model, a.adapter.as_deref())?;
    let context = model.spec.max_position_embeddings as usize;
    if let Some(n) = a.max_seq_len.filter(|n| *n > context) {
        anyhow::bail!("--max-seq-len {n} exceeds the model's context length {context}");
    }
    let opts = TokenizeOptions {
        train_on_inputs: a.train_on_inputs,
        max_len: Some(a.max_seq_len.unwrap_or(context)),
        append_eos: true,
    };
    let (examples, stats) = load_examples(&a.data, &tok, format, &opts)?;
    let r = evaluate(&model.spec, &model.params(), &examples, a.batch_size)?;
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["records"] = stats.records.into();
        v["truncated"] = stats.truncated.into();
        println!("{v}");
    } else {
        println!(
            "loss {:.4}  perplexity {:.3}  token accuracy {:.4}  over {} tokens in {} records ({} truncated)",
            r.loss, r.perplexity, r.token_accuracy, r.tokens, stats.records, stats.truncated
        );
    }
    Ok(())
}
