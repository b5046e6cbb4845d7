//! Text generation: prefill, then one token at a time through the KV / conv cache.
//!
//! Sampling runs on the host over the last position's logits (one vocabulary row per
//! token), so a seed gives the same tokens on every backend for the same logits.

use std::time::Instant;

use mlx_rs::Dtype;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::eval::last_position;
use crate::models::Model;
use crate::tokenizer::Tokenizer;

/// How the next token is chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingOptions {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose probabilities sum to this.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recently generated tokens.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_context: usize,
    /// Seed of the sampler; None draws one from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context: 64,
            seed: None,
        }
    }
}

impl SamplingOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(EngineError::invalid("temperature", "must be >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::invalid("top_p", "must be in (0, 1]"));
        }
        if !(0.0..1.0).contains(&self.min_p) {
            return Err(EngineError::invalid("min_p", "must be in [0, 1)"));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(EngineError::invalid("repetition_penalty", "must be > 0"));
        }
        Ok(())
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    /// Generation stops when the text contains one of these (not included in the text).
    pub stop: Vec<String>,
    /// Stop at the model's EOS tokens.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingOptions::default(),
            stop: vec![],
            stop_at_eos: true,
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    /// Generated ids (the EOS that ended generation is not included).
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// `stop` (EOS or a stop string; OpenAI's word for both) or `length`.
    pub finish_reason: String,
    /// The stop string that ended generation (`None` for EOS or the length limit).
    pub stop_sequence: Option<String>,
    pub prompt_tokens_per_second: f64,
    pub generation_tokens_per_second: f64,
    pub peak_memory_bytes: u64,
}

/// Picks the next token from one row of logits.
pub fn sample(logits: &[f32], history: &[u32], opts: &SamplingOptions, rng: &mut StdRng) -> u32 {
    let mut logits: Vec<f64> = logits.iter().map(|x| *x as f64).collect();
    if opts.repetition_penalty != 1.0 {
        let start = history.len().saturating_sub(opts.repetition_context);
        let mut seen: Vec<u32> = history[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        let p = opts.repetition_penalty as f64;
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
    }
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |best, (i, x)| {
                if *x > best.1 {
                    (i, *x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if opts.temperature == 0.0 {
        return argmax(&logits);
    }
    let t = opts.temperature as f64;
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .map(|l| ((l - max) / t).exp())
        .enumerate()
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let p_max = probs[0].1;
    let mut keep = probs.len();
    if opts.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= opts.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if opts.min_p > 0.0 {
        let floor = opts.min_p as f64 * p_max;
        keep = keep.min(probs.iter().take_while(|p| p.1 >= floor).count().max(1));
    }
    let kept = &probs[..keep];
    let mass: f64 = kept.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * mass;
    for (id, p) in kept {
        if u < *p {
            return *id as u32;
        }
        u -= p;
    }
    kept[kept.len() - 1].0 as u32
}

fn logits_row(logits: &mlx_rs::Array) -> Result<Vec<f32>> {
    let row = last_position(logits).as_dtype(Dtype::Float32)?;
    row.eval()?;
    Ok(row.as_slice::<f32>().to_vec())
}

/// Generates from `prompt_ids`, calling `on_text` with each new piece of text; it returns
/// false to stop early.
pub fn generate(
    model: &Model,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    opts.sampling.validate()?;
    if prompt_ids.is_empty() {
        return Err(EngineError::invalid(
            "prompt",
            "is empty after tokenization",
        ));
    }
    // Positions never go past the model's context: the prompt must leave room for one token,
    // and generation stops there (`length`).
    let context = model.spec.max_position_embeddings.max(0) as usize;
    if prompt_ids.len() >= context {
        return Err(EngineError::invalid(
            "prompt",
            format!(
                "{} tokens leave no room in the model's context length {context}",
                prompt_ids.len()
            ),
        ));
    }
    let max_tokens = opts.max_tokens.min(context - prompt_ids.len());
    let seed = opts.sampling.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    crate::runtime::reset_peak_memory();
    let mut cache = model.new_cache();
    let started = Instant::now();
    let prompt: Vec<i32> = prompt_ids.iter().map(|i| *i as i32).collect();
    let input = mlx_rs::Array::from_slice(&prompt, &[1, prompt.len() as i32]);
    let mut row = logits_row(&model.forward(&input, Some(&mut cache))?)?;
    let prefill_s = started.elapsed().as_secs_f64();
    let gen_start = Instant::now();

    let mut history: Vec<u32> = prompt_ids.to_vec();
    let mut generated: Vec<u32> = Vec::new();
    let mut text = String::new();
    let mut finish = "length";
    let mut stop_sequence = None;
    while generated.len() < max_tokens {
        let next = sample(&row, &history, &opts.sampling, &mut rng);
        if opts.stop_at_eos && tok.eos_ids.contains(&next) {
            finish = "stop";
            break;
        }
        generated.push(next);
        history.push(next);
        let full = tok.decode(&generated, true)?;
        if !full.ends_with('\u{FFFD}') && full.len() > text.len() && full.starts_with(&text) {
            let mut piece = full[text.len()..].to_string();
            let mut stopped = false;
            let candidate = format!("{text}{piece}");
            if let Some((cut, which)) = opts
                .stop
                .iter()
                .filter_map(|s| candidate.find(s.as_str()).map(|at| (at, s)))
                .min_by_key(|(at, _)| *at)
            {
                stop_sequence = Some(which.clone());
                piece = candidate[text.len().min(cut)..cut].to_string();
                stopped = true;
            }
            text.push_str(&piece);
            if !piece.is_empty() && !on_text(&piece) {
                break;
            }
            if stopped {
                finish = "stop";
                break;
            }
        } else if full.len() > text.len() && !full.starts_with(&text) {
            text = full;
        }
        if generated.len() >= max_tokens {
            break;
        }
        let input = mlx_rs::Array::from_slice(&[next as i32], &[1, 1]);
        row = logits_row(&model.forward(&input, Some(&mut cache))?)?;
    }
    let gen_s = gen_start.elapsed().as_secs_f64().max(1e-9);
    Ok(Generation {
        text,
        token_ids: generated.clone(),
        prompt_tokens: prompt_ids.len(),
        finish_reason: finish.to_string(),
        stop_sequence,
        prompt_tokens_per_second: prompt_ids.len() as f64 / prefill_s.max(1e-9),
        generation_tokens_per_second: generated.len() as f64 / gen_s,
        peak_memory_bytes: crate::runtime::memory_stats().peak,
    })
}
