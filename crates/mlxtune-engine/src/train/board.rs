//! What a run writes for TensorBoard (`<output>/tensorboard/`): step and validation
//! scalars, and at checkpoints histograms of the trainable arrays and of their last
//! gradients. Gradients are kept only for steps that a scheduled checkpoint or validation
//! follows (keeping them costs a pass over them and a wait), so a checkpoint written for a
//! pause has the arrays' histograms without the gradients'. A failed write never stops
//! training: the board closes and says why once.

use std::path::Path;

use super::events::{EvalMetrics, StepMetrics};
use super::tensorboard::EventWriter;
use crate::error::Result;
use crate::weights::Weights;

/// Histograms are copied to the host: only for up to this many trainable parameters
/// (adapters; not the weights of a full fine-tune).
pub const HISTOGRAM_MAX_PARAMETERS: u64 = 50_000_000;

/// The run's TensorBoard output.
#[derive(Debug)]
pub struct Board {
    writer: Option<EventWriter>,
    /// Whether checkpoints get histograms.
    pub histograms: bool,
}

impl Board {
    /// Opens `<output>/tensorboard/`; `trainable_parameters` decides the histograms.
    pub fn open(output: &Path, trainable_parameters: u64) -> (Board, Option<String>) {
        match EventWriter::create(&output.join("tensorboard")) {
            Ok(w) => (
                Board {
                    writer: Some(w),
                    histograms: trainable_parameters <= HISTOGRAM_MAX_PARAMETERS,
                },
                None,
            ),
            Err(e) => (
                Board::closed(),
                Some(format!("TensorBoard output off: {e}")),
            ),
        }
    }

    /// A board that writes nothing (ranks other than 0 of a distributed run).
    pub fn closed() -> Board {
        Board {
            writer: None,
            histograms: false,
        }
    }

    /// Runs a write; on failure the board closes and the reason is returned.
    fn write(&mut self, f: impl FnOnce(&mut EventWriter) -> Result<()>) -> Option<String> {
        let w = self.writer.as_mut()?;
        let e = f(w).err()?;
        *self = Board::closed();
        Some(format!("TensorBoard output off: {e}"))
    }

    pub fn step(&mut self, m: &StepMetrics) -> Option<String> {
        self.write(|w| {
            w.scalars(
                m.step,
                &[
                    ("train/loss", m.loss),
                    ("train/learning_rate", m.learning_rate),
                    ("train/grad_norm", m.grad_norm),
                    ("train/tokens_per_second", m.tokens_per_second),
                    ("train/padding_waste", m.padding_waste),
                    ("memory/peak_bytes", m.peak_memory_bytes as f64),
                    ("memory/active_bytes", m.active_memory_bytes as f64),
                ],
            )
        })
    }

    pub fn eval(&mut self, m: &EvalMetrics) -> Option<String> {
        self.write(|w| {
            w.scalars(
                m.step,
                &[
                    ("validation/loss", m.val_loss),
                    ("validation/perplexity", m.val_perplexity),
                    ("validation/token_accuracy", m.val_token_accuracy),
                ],
            )
        })
    }

    /// Histograms of the trainable arrays (`weights/<name>`) and of the gradients of the
    /// last step (`gradients/<name>`).
    pub fn checkpoint(
        &mut self,
        step: u64,
        trainable: &Weights,
        gradients: Option<&Weights>,
    ) -> Option<String> {
        if !self.histograms {
            return None;
        }
        self.write(|w| {
            let mut values = host_values("weights", trainable)?;
            if let Some(g) = gradients {
                values.extend(host_values("gradients", g)?);
            }
            w.histograms(step, &values)
        })
    }
}

/// Every array of `w` as f32 values on the host, tagged `<prefix>/<name>`, in name order.
fn host_values(prefix: &str, w: &Weights) -> Result<Vec<(String, Vec<f32>)>> {
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            // Contiguous: gradients summed across ranks are views into one flat bucket.
            let a = w[n].as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?;
            a.eval()?;
            Ok((format!("{prefix}/{n}"), a.as_slice::<f32>().to_vec()))
        })
        .collect()
}
