use std::io::Write;

use mlxtune_engine::generate::{generate, GenerateOptions, SamplingOptions};

use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A LoRA / DoRA adapter to run over the model (mlx-lm or PEFT layout, or a training
    /// job's output directory).
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (needs --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Generate at most this many tokens (fewer when the model's context ends first).
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalize tokens already in the text (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed of sampling (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past EOS tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (model, tok) = super::source::load_with_adapter(&a.model, a.adapter.as_deref())?;
    let prompt_ids = if a.chat {
        let mut messages = Vec::new();
        if let Some(s) = &a.system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": a.prompt}));
        let text = tok.apply_chat_template(&messages, None, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&a.prompt, true)?
    };
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SamplingOptions {
            temperature: a.temperature,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
            ..SamplingOptions::default()
        },
        stop: a.stop.clone(),
        stop_at_eos: !a.ignore_eos,
    };
    let stream = !a.json;
    let mut out = std::io::stdout();
    let result = generate(&model, &tok, &prompt_ids, &opts, &mut |piece| {
        if stream {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {} generated, {:.1} tok/s, peak memory {:.1} MB, finish: {}{}]",
            result.prompt_tokens,
            result.token_ids.len(),
            result.generation_tokens_per_second,
            result.peak_memory_bytes as f64 / 1e6,
            result.finish_reason,
            result
                .stop_sequence
                .as_ref()
                .map_or(String::new(), |s| format!(" (stop string {s:?})"))
        );
    }
    Ok(())
}
