//! What `mlxtune bench train` reports: the figures, and where the memory goes.

use mlxtune_engine::mlx_rs::{self, Array};
use mlxtune_engine::models::forward::{forward, forward_hidden, ForwardCtx, Params};
use mlxtune_engine::runtime;
use mlxtune_engine::train::memory_floor::MemoryFloor;
use mlxtune_engine::train::spec::FineTuneType;
use mlxtune_engine::train::stepper::PhaseTimes;
use mlxtune_engine::weights::Weights;
use serde::Serialize;

use super::train::Setup;

/// Where the memory goes: peaks of the parts of a step, and the resident arrays.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryProfile {
    /// Frozen and trainable weights as held (base in the compute dtype, trainables f32).
    pub weights_bytes: u64,
    /// Optimizer moments.
    pub optimizer_state_bytes: u64,
    /// Peak of loss only (no gradient: nothing kept for a backward pass).
    pub forward_peak_bytes: u64,
    /// Peak of the decoder body alone (final hidden states, no output layer or loss).
    pub body_forward_peak_bytes: u64,
    /// Peak of loss + gradients, without the optimizer update.
    pub loss_and_grad_peak_bytes: u64,
}

/// Where a step's host time goes, per step (`Stepper::phases`): building the
/// loss-and-gradient graph (the GPU has nothing queued meanwhile), running it, and the
/// update. A step's `step_seconds` minus their sum is the time between steps. With a step
/// in one graph, `queue` and `host_end` are the host's part of `gradients` (queuing the
/// loss and gradients; building the end and the next graph); the rest is waiting.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhaseSeconds {
    pub build: f64,
    pub gradients: f64,
    pub update: f64,
    pub queue: f64,
    pub host_end: f64,
}

impl From<PhaseTimes> for PhaseSeconds {
    fn from(t: PhaseTimes) -> Self {
        let per_step = |d: std::time::Duration| d.as_secs_f64() / t.steps.max(1) as f64;
        PhaseSeconds {
            build: per_step(t.build),
            gradients: per_step(t.gradients),
            update: per_step(t.update),
            queue: per_step(t.queue),
            host_end: per_step(t.host_end),
        }
    }
}

/// Measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub fine_tune_type: FineTuneType,
    pub batch: i32,
    pub seq: i32,
    /// Data-parallel ranks (`mlxtune launch`); `batch` is per rank, tokens/s the group's.
    pub ranks: usize,
    #[serde(skip)]
    pub rank: usize,
    pub precision: String,
    pub grad_checkpoint: bool,
    /// Decoder layers recomputed in the backward pass, of `layers`.
    pub checkpoint_layers: usize,
    /// Decoder layers whose MLP is recomputed (those recomputed whole included).
    pub checkpoint_mlps: usize,
    /// Every layer's values that cost no matrix product were recomputed.
    pub lean: bool,
    pub layers: usize,
    /// MLX's memory limit during the run.
    pub memory_limit_bytes: Option<u64>,
    pub chunked_loss: bool,
    /// Tokens per chunk of the chunked loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_chunk_tokens: Option<i32>,
    pub compiled: bool,
    pub fused_cross_entropy: bool,
    pub compiled_optimizer: bool,
    pub segments: u32,
    /// Packed rows' attention: query positions per block (0: one call over the whole
    /// square; `models/packed_attention.rs`); absent for causal rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_block: Option<i32>,
    /// Packed rows' attention: how far before its first query each block's keys start
    /// (`models/packed_attention.rs`); absent when they start at 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_reach: Option<i32>,
    pub parameters: u64,
    pub trainable_parameters: u64,
    pub tokens_per_second: f64,
    pub step_seconds: f64,
    /// Host wall time of the timed steps' phases, per step.
    pub phase_seconds: Option<PhaseSeconds>,
    /// MLX allocator peak during the timed steps.
    pub peak_memory_bytes: u64,
    /// What the step's design must hold at its peak, however scheduled (the analytic
    /// minimum, `train/memory_floor.rs`).
    pub memory_floor: MemoryFloor,
    /// Process peak resident memory (Linux VmHWM), comparable to other frameworks' RSS.
    pub peak_rss_bytes: Option<u64>,
    pub flops_per_token: f64,
    pub tflops: f64,
    pub mfu: Option<f64>,
    pub loss: f32,
    pub backend: String,
    pub device: String,
    /// MLX scheduling variables in effect (see `runtime::Scheduling`).
    pub mlx_env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryProfile>,
}

impl BenchResult {
    /// The one-line human summary.
    pub fn line(&self) -> String {
        let flags = format!(
            "{}{}{}",
            if self.grad_checkpoint { " +ckpt" } else { "" },
            if self.chunked_loss {
                " +chunked-loss"
            } else {
                ""
            },
            if self.compiled { " +compiled" } else { "" }
        );
        format!(
            "{} {} batch {} x {}{} {}{}: {:.0} tok/s, {:.3} s/step, peak {:.2} GiB (floor {:.2}), {:.1} TFLOP/s{}",
            self.model,
            self.fine_tune_type.as_str(),
            self.batch,
            self.seq,
            match self.ranks {
                1 => String::new(),
                n => format!(" per rank x {n} ranks"),
            },
            self.precision,
            flags,
            self.tokens_per_second,
            self.step_seconds,
            self.peak_memory_bytes as f64 / (1u64 << 30) as f64,
            self.memory_floor.total as f64 / (1u64 << 30) as f64,
            self.tflops,
            self.mfu
                .map_or(String::new(), |m| format!(", MFU {:.1}%", 100.0 * m))
        )
    }
}

/// Peaks of the parts of a step (forward only, decoder body only, loss + gradients) and
/// the resident arrays, measured after the timed steps.
pub fn memory_profile(s: &mut Setup) -> anyhow::Result<MemoryProfile> {
    let bytes = |w: &Weights| w.values().map(|a| a.nbytes() as u64).sum::<u64>();
    let weights_bytes = bytes(&s.base) + bytes(&s.trainable);
    let optimizer_state_bytes = bytes(&s.optimizer.state);
    mlx_rs::transforms::eval(s.trainable.values())?;
    let p = Params {
        base: &s.base,
        over: Some(&s.trainable),
        lora_scale: s.opts.lora_scale,
        compute_dtype: Some(s.opts.compute),
        dropout: None,
    };
    let b = &s.batch.batch;
    let spec = &s.model.spec;
    let forward_peak_bytes = peak_of(|| {
        let logits = forward(spec, &p, &b.inputs, ForwardCtx::default())?;
        let ce = mlxtune_engine::eval::cross_entropy(&logits, &b.targets)?;
        Ok(vec![ce.sum(None)?])
    })?;
    let body_forward_peak_bytes = peak_of(|| {
        let h = forward_hidden(spec, &p, &b.inputs, ForwardCtx::default())?;
        Ok(vec![h.sum(None)?])
    })?;
    runtime::reset_peak_memory();
    s.stepper
        .gradients(&s.trainable, std::slice::from_ref(&s.batch), 1.0)?;
    let loss_and_grad_peak_bytes = runtime::memory_stats().peak;
    Ok(MemoryProfile {
        weights_bytes,
        optimizer_state_bytes,
        forward_peak_bytes,
        body_forward_peak_bytes,
        loss_and_grad_peak_bytes,
    })
}

/// MLX's peak memory while `f`'s arrays are computed.
fn peak_of(f: impl FnOnce() -> anyhow::Result<Vec<Array>>) -> anyhow::Result<u64> {
    runtime::reset_peak_memory();
    let out = f()?;
    mlx_rs::transforms::eval(&out)?;
    Ok(runtime::memory_stats().peak)
}
