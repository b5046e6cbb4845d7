//! `mlxtune export`: a model (with an adapter fused, if given) as a GGUF file, a Hugging
//! Face directory, or the adapter alone in PEFT's layout.

use std::path::PathBuf;

use anyhow::Context;
use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::fuse::{
    dequantize_model, fuse_and_save_with_progress, DEFAULT_MAX_SHARD_BYTES,
};
use mlxtune_engine::gguf::{export_gguf, GgufQuant};

use super::choices::{ExportFormat, GgufQuantArg};
use super::{progress, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// An adapter to fuse first (mlx-lm or PEFT layout, or a training job's output).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// What to write.
    #[arg(long, value_enum, default_value_t = ExportFormat::Gguf)]
    format: ExportFormat,
    /// GGUF tensor type.
    #[arg(long, value_enum, default_value_t = GgufQuantArg::F16)]
    quant: GgufQuantArg,
    /// The file (gguf) or directory (hf, peft) to write.
    #[arg(long)]
    output: PathBuf,
    /// Print one JSON object (`output`, and for gguf `bytes`, `tensors`).
    #[arg(long)]
    json: bool,
}

fn gguf(a: &Args) -> anyhow::Result<()> {
    let quant: GgufQuant = a.quant.name().parse()?;
    let (mut model, _) = a.model.load()?;
    if let Some(dir) = &a.adapter {
        // GGUF holds float or its own blocks: add the adapter to the dense base (exactly
        // base + adapter, as trained) rather than re-quantizing in MLX's format first.
        dequantize_model(&mut model)?;
        let bar = progress::bar("layers fused");
        Adapter::load(dir)?.fuse_with_progress(&mut model, &mut progress::reporter(&bar))?;
        bar.finish_and_clear();
    }
    let bar = progress::bar("tensors");
    let summary = export_gguf(&model, &a.output, quant, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.tensor.to_string());
    })?;
    bar.finish_and_clear();
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    super::report(
        a.json,
        serde_json::json!({"output": a.output, "bytes": summary.bytes, "tensors": summary.tensors}),
        format!(
            "wrote {} ({} bytes; {} tensors: {}; {} metadata keys)",
            a.output.display(),
            summary.bytes,
            summary.tensors,
            types.join(", "),
            summary.metadata_keys
        ),
    );
    Ok(())
}

fn peft(a: &Args) -> anyhow::Result<()> {
    let dir = a
        .adapter
        .as_ref()
        .context("--format peft needs --adapter")?;
    let adapter = Adapter::load(dir)?;
    let (model, _) = a.model.load()?;
    adapter.check(&model.spec)?;
    let base = std::fs::canonicalize(&a.model.model).unwrap_or_else(|_| a.model.model.clone());
    adapter.save_peft(&a.output, &base.to_string_lossy())?;
    super::report(
        a.json,
        serde_json::json!({"output": a.output, "base": base}),
        format!(
            "wrote {} (PEFT adapter over {})",
            a.output.display(),
            base.display()
        ),
    );
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.format {
        ExportFormat::Gguf => gguf(&a),
        ExportFormat::Hf => {
            let (mut model, _) = a.model.load()?;
            let adapter = a.adapter.as_deref().map(Adapter::load).transpose()?;
            let bar = progress::bar("layers fused");
            fuse_and_save_with_progress(
                &mut model,
                adapter.as_ref(),
                false,
                &a.output,
                DEFAULT_MAX_SHARD_BYTES,
                &mut progress::reporter(&bar),
            )?;
            bar.finish_and_clear();
            super::report(
                a.json,
                serde_json::json!({"output": a.output}),
                format!("wrote {}", a.output.display()),
            );
            Ok(())
        }
        ExportFormat::Peft => peft(&a),
    }
}
