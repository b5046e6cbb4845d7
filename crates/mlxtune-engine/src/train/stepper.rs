//! One optimizer step, owned in one place and used by both the trainer and
//! `mlxtune bench train`: the step's arguments, loss and gradients summed over its
//! micro-batches, the gradient norm and clipping, and the optimizer update.

use std::rc::Rc;
use std::time::{Duration, Instant};

use mlx_rs::Array;

use super::distributed::Group;
use super::optim::{EndFigures, Optimizer, QueuedStep, StepEnd};
use super::step_functions::StepFunctions;
use crate::data::batch::TrainBatch;
use crate::error::{EngineError, Result};
use crate::weights::Weights;

/// A micro-batch and the seed of its dropout masks.
pub struct MicroBatch {
    pub batch: TrainBatch,
    pub dropout_seed: u64,
}

/// Loss and summed gradients over a step's micro-batches.
pub struct Gradients {
    /// Σ over micro-batches of the gradient of Σ mask · CE · loss scale.
    pub sums: Vec<Array>,
    /// Σ mask · CE (loss scale undone).
    pub loss_sum: f64,
    pub loss_tokens: u64,
    pub real_tokens: u64,
    pub total_tokens: u64,
}

/// Figures of a step that updated the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss over the step's loss tokens.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub loss_tokens: u64,
    pub real_tokens: u64,
    pub total_tokens: u64,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepOutcome {
    Updated(StepStats),
    /// No position of the step's micro-batches counts in the loss: nothing to learn from.
    Empty,
    /// The loss or the gradient norm is not finite; the weights are unchanged.
    NonFinite {
        loss: f64,
        grad_norm: f64,
    },
}

/// Host wall time of a step's phases, summed over the steps taken while it was set: what
/// the GPU waits on between steps shows up here (`mlxtune bench train` reports it).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PhaseTimes {
    /// Building the loss-and-gradient graph (the compiled function's call), nothing run yet;
    /// near zero for a step whose graph was built during the step before
    /// ([`Stepper::step_ahead`]).
    pub build: Duration,
    /// Running it: evaluating the loss and the gradients; with a step in one graph,
    /// everything after the build (the end's, done while the GPU runs, included).
    pub gradients: Duration,
    /// Norm, clipping and the optimizer update, built and evaluated after the gradients
    /// (zero with a step in one graph).
    pub update: Duration,
    /// With a step in one graph, the part of `gradients` the host spends queuing the loss
    /// and the gradients on the device (`async_eval` encodes every operation) ...
    pub queue: Duration,
    /// ... and building the step's end and the next step's graph after that: what is left
    /// of `gradients` is the host waiting for the device. Near zero, the host is what the
    /// step waits on.
    pub host_end: Duration,
    pub steps: u64,
}

/// The loss-and-gradient function of a model and a set of trainable arrays.
pub struct Stepper {
    names: Vec<String>,
    functions: StepFunctions,
    /// Keep the last step's (clipped) gradients, for whoever reports them.
    pub keep_gradients: bool,
    last_gradients: Option<Weights>,
    /// Data parallelism: each step's sums are summed over this group before normalizing.
    group: Option<Rc<Group>>,
    /// Read before each micro-batch: once it answers true the step stops with
    /// [`EngineError::Interrupted`] (nothing is updated).
    pub interrupt: Option<Interrupt>,
    /// Set to time each step's phases.
    pub phases: Option<PhaseTimes>,
    /// Run a step of one micro-batch as one graph when its end is fused (the default;
    /// `MLXTUNE_ONE_GRAPH_STEP=0` turns it off, for comparisons).
    pub one_graph: bool,
    /// Build the next step's graph while this step runs, when told its micro-batch
    /// (the default; `MLXTUNE_BUILD_AHEAD=0` turns it off, for comparisons).
    pub build_ahead: bool,
    ahead: Option<Ahead>,
}

/// The next step's loss and gradients, built (not run) while the step before ran on the
/// device, from the trainable arrays that step left (still lazy).
struct Ahead {
    dropout_seed: u64,
    loss_scale: f32,
    shape: Vec<i32>,
    vals: Vec<Array>,
    sums: Vec<Array>,
}

/// Asks whether a step should stop between micro-batches (a pause or cancel arrived).
pub type Interrupt = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl Stepper {
    /// A stepper over a model's step `functions` (their trainable arrays in argument order).
    pub fn new(functions: StepFunctions) -> Stepper {
        let names = functions.names().to_vec();
        Stepper {
            names,
            functions,
            keep_gradients: false,
            last_gradients: None,
            group: None,
            interrupt: None,
            phases: None,
            one_graph: std::env::var("MLXTUNE_ONE_GRAPH_STEP").map_or(true, |v| v != "0"),
            build_ahead: std::env::var("MLXTUNE_BUILD_AHEAD").map_or(true, |v| v != "0"),
            ahead: None,
        }
    }

    /// Drops a graph built ahead: for a caller that changes the trainable arrays between
    /// steps (a restored checkpoint).
    pub fn discard_ahead(&mut self) {
        self.ahead = None;
    }

    /// Sums each step's loss, token counts and gradients over `group` (data parallelism):
    /// the micro-batches given to [`Stepper::step`] are then this rank's share.
    pub fn set_group(&mut self, group: Rc<Group>) {
        self.group = Some(group);
    }

    /// The gradients the last updating step applied (with [`Stepper::keep_gradients`]).
    pub fn last_gradients(&self) -> Option<&Weights> {
        self.last_gradients.as_ref()
    }

    /// The trainable arrays' names, in argument order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Packed rows: the least attention reach a batch is given
    /// ([`StepFunctions::reach_floor`]).
    pub fn set_reach_floor(&mut self, floor: usize) {
        self.functions.reach_floor = floor;
    }

    /// Loss and gradient sums over `micro` (None when no position counts in the loss).
    /// Each micro-batch's loss and gradients are evaluated together (one host sync), apart
    /// from the optimizer update: one graph for both raises the peak under checkpointing.
    pub fn gradients(
        &mut self,
        trainable: &Weights,
        micro: &[MicroBatch],
        loss_scale: f32,
    ) -> Result<Option<Gradients>> {
        let mut acc: Option<Gradients> = None;
        for m in micro.iter().filter(|m| m.batch.loss_tokens > 0) {
            if self.interrupt.as_ref().is_some_and(|stop| stop()) {
                return Err(EngineError::Interrupted);
            }
            self.functions.dropout_seed.set(m.dropout_seed);
            let args = self.arguments(trainable, &m.batch, loss_scale);
            let start = Instant::now();
            let (vals, g) = (self.functions.for_batch(&m.batch)?)(&args)?;
            // Sums over micro-batches and ranks are taken in the trainable arrays' f32.
            let g = in_dtypes_of(&g, &args)?;
            let built = Instant::now();
            mlx_rs::transforms::eval(vals.iter().chain(g.iter()))?;
            if let Some(t) = &mut self.phases {
                t.build += built - start;
                t.gradients += built.elapsed();
            }
            let loss = vals[0].item_cast::<f32>() as f64 / loss_scale as f64;
            let b = &m.batch;
            acc = Some(match acc.take() {
                None => Gradients {
                    sums: g,
                    loss_sum: loss,
                    loss_tokens: b.loss_tokens,
                    real_tokens: b.real_tokens,
                    total_tokens: b.total_tokens,
                },
                Some(a) => Gradients {
                    sums: add_all(&a.sums, &g)?,
                    loss_sum: a.loss_sum + loss,
                    loss_tokens: a.loss_tokens + b.loss_tokens,
                    real_tokens: a.real_tokens + b.real_tokens,
                    total_tokens: a.total_tokens + b.total_tokens,
                },
            });
            if let Some(a) = &acc {
                mlx_rs::transforms::eval(&a.sums)?;
            }
        }
        Ok(acc)
    }

    /// The function's arguments: trainable arrays in `names` order, then inputs, targets,
    /// mask, the loss scale and, for packed rows, the segment ids.
    fn arguments(&self, trainable: &Weights, b: &TrainBatch, loss_scale: f32) -> Vec<Array> {
        let mut args: Vec<Array> = self.names.iter().map(|n| trainable[n].clone()).collect();
        args.extend([
            b.inputs.clone(),
            b.targets.clone(),
            b.mask.clone(),
            Array::from_f32(loss_scale),
        ]);
        args.extend(b.segments.as_ref().map(|s| s.ids.clone()));
        args
    }

    /// One optimizer step over `micro`: mean gradients over the loss tokens (loss scale
    /// undone), global-norm clipping to `max_grad_norm`, then the update at `lr`.
    pub fn step(
        &mut self,
        trainable: &mut Weights,
        optimizer: &mut Optimizer,
        micro: &[MicroBatch],
        loss_scale: f32,
        lr: f32,
        max_grad_norm: Option<f64>,
    ) -> Result<StepOutcome> {
        let end = (loss_scale, lr, max_grad_norm);
        self.step_ahead(trainable, optimizer, micro, end, None)
    }

    /// [`Stepper::step`], told the next step's micro-batch (`next`, taken at the same loss
    /// scale): a step in one graph builds the next one's graph while the device runs, so
    /// the device does not wait on the host between them. The next call must be that step,
    /// on the trainable arrays this one leaves, or [`Stepper::discard_ahead`] come first.
    pub fn step_ahead(
        &mut self,
        trainable: &mut Weights,
        optimizer: &mut Optimizer,
        micro: &[MicroBatch],
        (loss_scale, lr, max_grad_norm): (f32, f32, Option<f64>),
        next: Option<&MicroBatch>,
    ) -> Result<StepOutcome> {
        // A step that does not keep its gradients leaves none from an earlier step.
        self.last_gradients = None;
        let mut counted = micro.iter().filter(|m| m.batch.loss_tokens > 0);
        if let (Some(only), None) = (counted.next(), counted.next()) {
            if self.one_graph && self.group.is_none() && self.fused_end(optimizer) {
                let end = (loss_scale, lr, max_grad_norm);
                let next = next.filter(|n| self.build_ahead && n.batch.loss_tokens > 0);
                return self.step_in_one_graph(trainable, optimizer, (only, next), end);
            }
        }
        self.ahead = None;
        let mut g = self.gradients(trainable, micro, loss_scale)?;
        let update_start = Instant::now();
        if let Some(group) = &self.group {
            g = group.reduce_gradients(g, &self.names, trainable)?;
        }
        let Some(g) = g else {
            return Ok(StepOutcome::Empty);
        };
        let tokens = Tokens::of(&g);
        let end = StepEnd {
            sums: g.sums,
            denom: tokens.loss.max(1) as f32 * loss_scale,
            loss: Array::from_f32(g.loss_sum as f32),
            max_grad_norm,
            lr,
        };
        let grad_norm = if self.fused_end(optimizer) {
            let queued = self.queue_end(trainable, optimizer, end)?;
            let figures = optimizer.run_step(trainable, queued.step)?;
            self.keep(queued.kept, figures)?;
            figures.grad_norm
        } else {
            self.clip_then_step(trainable, optimizer, end)?
        };
        if let Some(t) = &mut self.phases {
            t.update += update_start.elapsed();
            t.steps += 1;
        }
        let figures = EndFigures {
            grad_norm,
            loss: g.loss_sum / tokens.loss.max(1) as f64,
        };
        Ok(tokens.outcome(figures))
    }

    /// Whether the step's end is [`Optimizer::clip_and_step`]'s graph (else one array at a
    /// time).
    fn fused_end(&self, optimizer: &Optimizer) -> bool {
        optimizer.fuses_clipping()
    }

    /// Queues the fused end ([`Optimizer::queue_step`]) and, with
    /// [`Stepper::keep_gradients`], the gradients it applies.
    fn queue_end(
        &self,
        trainable: &mut Weights,
        optimizer: &mut Optimizer,
        end: StepEnd,
    ) -> Result<QueuedEnd> {
        let kept = self
            .keep_gradients
            .then(|| (end.sums.clone(), end.denom, end.max_grad_norm));
        let step = optimizer.queue_step(trainable, &self.names, end)?;
        let kept = match kept {
            Some((sums, denom, max)) => Some(step.applied_gradients(&sums, denom, max)?),
            None => None,
        };
        Ok(QueuedEnd { step, kept })
    }

    /// Evaluates and keeps the gradients a fused end applied, when it updated.
    fn keep(&mut self, kept: Option<Vec<Array>>, figures: EndFigures) -> Result<()> {
        let Some(grads) = kept.filter(|_| figures.finite()) else {
            return Ok(());
        };
        mlx_rs::transforms::eval(&grads)?;
        self.last_gradients = Some(self.names.iter().cloned().zip(grads).collect());
        Ok(())
    }

    /// A step of one micro-batch as one graph: its loss and gradients are queued on the
    /// GPU, the host builds the norm, clipping and update behind them while the GPU runs
    /// the backward pass, and one wait ends the step: nothing waits on the host in between.
    fn step_in_one_graph(
        &mut self,
        trainable: &mut Weights,
        optimizer: &mut Optimizer,
        (m, next): (&MicroBatch, Option<&MicroBatch>),
        (loss_scale, lr, max_grad_norm): (f32, f32, Option<f64>),
    ) -> Result<StepOutcome> {
        if self.interrupt.as_ref().is_some_and(|stop| stop()) {
            self.ahead = None;
            return Err(EngineError::Interrupted);
        }
        let start = Instant::now();
        let (mut vals, sums) = match self.ahead.take() {
            Some(a) if a.fits(m, loss_scale) => (a.vals, a.sums),
            _ => self.build(trainable, m, loss_scale)?,
        };
        let built = Instant::now();
        // The GPU starts on the loss and the gradients (in the order they are evaluated
        // apart, which sets the peak) while the host builds the step's end.
        mlx_rs::transforms::async_eval(vals.iter().chain(&sums))?;
        let queued_at = Instant::now();
        let tokens = Tokens::of_batch(&m.batch);
        let end = StepEnd {
            sums,
            denom: tokens.loss.max(1) as f32 * loss_scale,
            loss: vals.swap_remove(0),
            max_grad_norm,
            lr,
        };
        // The arrays before the step, put back if it fails (an out-of-memory error is
        // retried with smaller micro-batches from the same weights).
        let held = (trainable.clone(), optimizer.state.clone());
        let queued = self.queue_end(trainable, optimizer, end)?;
        // The next step's graph, from the arrays this one's end will leave; one that cannot
        // be built now is built (and fails) in its own step.
        if let Some(n) = next {
            self.ahead = self
                .build(trainable, n, loss_scale)
                .ok()
                .map(|(vals, sums)| Ahead {
                    dropout_seed: n.dropout_seed,
                    loss_scale,
                    shape: n.batch.inputs.shape().to_vec(),
                    vals,
                    sums,
                });
        }
        let host_done = Instant::now();
        let mut figures = match optimizer.run_step(trainable, queued.step) {
            Ok(f) => f,
            Err(e) => {
                self.ahead = None;
                (*trainable, optimizer.state) = held;
                return Err(e);
            }
        };
        drop(held);
        self.keep(queued.kept, figures)?;
        if let Some(t) = &mut self.phases {
            t.build += built - start;
            t.gradients += built.elapsed();
            t.queue += queued_at - built;
            t.host_end += host_done - queued_at;
            t.steps += 1;
        }
        figures.loss /= loss_scale as f64 * tokens.loss.max(1) as f64;
        Ok(tokens.outcome(figures))
    }

    /// The loss-and-gradient graph of `m` on `trainable` (built, not run).
    fn build(
        &mut self,
        trainable: &Weights,
        m: &MicroBatch,
        loss_scale: f32,
    ) -> Result<(Vec<Array>, Vec<Array>)> {
        self.functions.dropout_seed.set(m.dropout_seed);
        let args = self.arguments(trainable, &m.batch, loss_scale);
        Ok((self.functions.for_batch(&m.batch)?)(&args)?)
    }

    /// The step's end one array at a time (optimizers other than a compiled Adam(W)): the
    /// norm of `sums / denom`, evaluated, then unless it or the loss is not finite, clipping
    /// and the update. Returns the norm.
    fn clip_then_step(
        &mut self,
        trainable: &mut Weights,
        optimizer: &mut Optimizer,
        end: StepEnd,
    ) -> Result<f64> {
        let loss_finite = end.loss.item_cast::<f32>().is_finite();
        let denom = Array::from_f32(end.denom);
        let grads: Vec<Array> = end
            .sums
            .iter()
            .map(|x| x.divide(&denom))
            .collect::<std::result::Result<_, _>>()?;
        let grad_norm = global_norm(&grads)?;
        if !loss_finite || !grad_norm.is_finite() {
            return Ok(grad_norm);
        }
        let clip = end
            .max_grad_norm
            .map_or(1.0, |m| (m / (grad_norm + 1e-6)).min(1.0));
        let grad_map: Weights = self
            .names
            .iter()
            .cloned()
            .zip(grads)
            .map(|(n, g)| {
                let g = if clip < 1.0 {
                    g.multiply(Array::from_f32(clip as f32))?
                } else {
                    g
                };
                Ok((n, g))
            })
            .collect::<Result<_>>()?;
        optimizer.step(trainable, &grad_map, end.lr)?;
        if self.keep_gradients {
            self.last_gradients = Some(grad_map);
        }
        Ok(grad_norm)
    }
}

impl Ahead {
    /// Whether this graph is `m`'s at `loss_scale` (else it is dropped and `m`'s built).
    fn fits(&self, m: &MicroBatch, loss_scale: f32) -> bool {
        self.dropout_seed == m.dropout_seed
            && self.loss_scale == loss_scale
            && self.shape == m.batch.inputs.shape()
    }
}

/// A fused end queued, and the gradients it applies when they are kept.
struct QueuedEnd {
    step: QueuedStep,
    kept: Option<Vec<Array>>,
}

/// A step's token counts, and its outcome from them and its end's figures.
struct Tokens {
    loss: u64,
    real: u64,
    total: u64,
}

impl Tokens {
    fn of(g: &Gradients) -> Tokens {
        Tokens {
            loss: g.loss_tokens,
            real: g.real_tokens,
            total: g.total_tokens,
        }
    }

    fn of_batch(b: &TrainBatch) -> Tokens {
        Tokens {
            loss: b.loss_tokens,
            real: b.real_tokens,
            total: b.total_tokens,
        }
    }

    /// `figures.loss` is the mean loss over the loss tokens.
    fn outcome(&self, figures: EndFigures) -> StepOutcome {
        let EndFigures { grad_norm, loss } = figures;
        if !figures.finite() {
            return StepOutcome::NonFinite { loss, grad_norm };
        }
        StepOutcome::Updated(StepStats {
            loss,
            grad_norm,
            loss_tokens: self.loss,
            real_tokens: self.real,
            total_tokens: self.total,
        })
    }
}

/// Each of `g` in the dtype of the argument at its position (its trainable array), where
/// the step returned it in the compute dtype
/// ([`StepOptions::layer_grads_in_compute`](super::step::StepOptions::layer_grads_in_compute)).
fn in_dtypes_of(g: &[Array], args: &[Array]) -> Result<Vec<Array>> {
    Ok(g.iter()
        .zip(args)
        .map(|(g, a)| match g.dtype() == a.dtype() {
            true => Ok(g.clone()),
            false => g.as_dtype(a.dtype()),
        })
        .collect::<std::result::Result<_, _>>()?)
}

fn add_all(a: &[Array], b: &[Array]) -> Result<Vec<Array>> {
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| x.add(y))
        .collect::<std::result::Result<_, _>>()?)
}

/// √Σ‖g‖² over all gradients, evaluated.
fn global_norm(grads: &[Array]) -> Result<f64> {
    let norm = grads
        .iter()
        .map(|g| g.square().and_then(|s| s.sum(None)))
        .try_fold(Array::from_f32(0.0), |acc, s| acc.add(&s?))?
        .sqrt()?;
    norm.eval()?;
    Ok(norm.item_cast::<f32>() as f64)
}
