//! Batch sizing against a memory limit: a rough peak estimate per micro-batch and the
//! largest micro-batch that fits (`batchSize: "auto"`, or a requested size too large).
use super::spec::TrainSpec;
use crate::models::spec::LayerKind;
use crate::models::Model;
use crate::runtime;

/// Peak-memory estimate (bytes) of one micro-batch of `batch` rows of `seq` tokens: weights,
/// trainable copies with gradients and two optimizer moments, and activations kept for the
/// backward pass: ~18 hidden-sized, 3 ff-sized and 4 attention-width values per token and
/// layer, the logits in f32 twice, and each attention layer's scores (f32, twice: the
/// backward pass of attention materializes them). Calibrated on the test fixtures, where
/// the measured peak stays below it (tests/batch_sizing.rs).
pub fn estimate_peak_memory(
    model: &Model,
    spec: &TrainSpec,
    trainable_params: u64,
    batch: u64,
    seq: u64,
) -> u64 {
    let s = &model.spec;
    let bytes = super::memory_floor::compute_bytes(spec.dtype());
    let weights: u64 = model.weights.values().map(|a| a.nbytes() as u64).sum();
    let train_state = trainable_params * 4 * 4;
    let attn_width = (s.num_heads * s.head_dim) as u64;
    let per_token_layer =
        (18 * s.hidden_size as u64 + 3 * s.intermediate_size as u64 + 4 * attn_width) * bytes;
    // Layers past the recomputed ones hold their activations; with checkpointing, less
    // those recomputed: one ff-sized and two hidden-sized values (the element-wise ones), or
    // three and three where the MLP is recomputed. The layers being recomputed hold theirs
    // too (about two at a time).
    let recomputed = spec.recomputed_layers().min(s.num_layers());
    let kept = &s.layers[recomputed..];
    let mlps = (spec.recomputed_mlps().clamp(recomputed, s.num_layers()) - recomputed) as u64;
    let lean = match spec.gradient_checkpointing {
        true => kept.len() as u64 - mlps,
        false => 0,
    };
    let (ff, hidden) = (s.intermediate_size as u64, s.hidden_size as u64);
    let dropped = (lean * (ff + 2 * hidden) + mlps * 3 * (ff + hidden)) * bytes;
    let attention_of = |l: &[LayerKind]| l.iter().filter(|k| **k == LayerKind::Attention).count();
    let working = if spec.gradient_checkpointing { 2 } else { 0 };
    let layers = (kept.len() + working) as u64;
    let attention =
        (attention_of(kept) + attention_of(&s.layers[..recomputed]).min(working)) as u64;
    let scores = attention * s.num_heads as u64 * seq * seq * 4 * 2;
    let per_token = per_token_layer * layers - dropped;
    let acts = batch * (seq * (per_token + 2 * 4 * s.vocab_size as u64) + scores);
    weights + train_state + acts
}

/// The memory budget: the spec's limit, MLX's on a GPU, else 60% of the available RAM.
pub fn total_memory_limit(spec: &TrainSpec) -> u64 {
    if let Some(l) = spec.memory_limit_bytes {
        return l;
    }
    if runtime::current_device() == "gpu" {
        return runtime::memory_limit().unwrap_or(8 << 30);
    }
    let kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(8 << 20);
    kb * 1024 * 6 / 10
}

/// How each batch runs: batches keep the requested size (so the data grouping never depends
/// on memory), each as `split` micro-batches of at most `micro` rows whose gradients are
/// summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub micro: u32,
    pub effective: u32,
    pub split: u32,
}

/// The effective batch of `batchSize: "auto"`: auto picks how it runs (the micro-batch),
/// never what is trained.
pub const AUTO_EFFECTIVE_BATCH: u32 = 8;

impl Batching {
    /// Halves the micro-batch from the effective batch (`requested`, or
    /// [`AUTO_EFFECTIVE_BATCH`] for "auto") while `fits` says no; the effective batch stays.
    pub fn choose(requested: Option<u32>, fits: impl Fn(u32) -> bool) -> Batching {
        let effective = requested.unwrap_or(AUTO_EFFECTIVE_BATCH);
        let mut micro = effective;
        while micro > 1 && !fits(micro) {
            micro /= 2;
        }
        Batching {
            micro,
            effective,
            split: effective.div_ceil(micro),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_that_fits_runs_whole() {
        let b = Batching::choose(Some(8), |_| true);
        assert_eq!((b.micro, b.effective, b.split), (8, 8, 1));
    }

    #[test]
    fn a_batch_too_large_keeps_its_size_in_micro_batches() {
        let b = Batching::choose(Some(12), |m| m <= 4);
        assert_eq!((b.micro, b.effective, b.split), (3, 12, 4));
    }

    #[test]
    fn auto_keeps_the_documented_effective_batch_and_picks_only_the_micro_batch() {
        // Plenty of memory: no larger batch than the default (the training is the same).
        let b = Batching::choose(None, |m| m <= 64);
        assert_eq!((b.micro, b.effective, b.split), (8, 8, 1));
        let b = Batching::choose(None, |m| m <= 2);
        assert_eq!((b.micro, b.effective, b.split), (2, 8, 4));
        let one = Batching::choose(None, |_| false);
        assert_eq!((one.micro, one.effective, one.split), (1, 8, 8));
    }
}
