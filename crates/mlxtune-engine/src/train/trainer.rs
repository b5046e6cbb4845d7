//! The training loop: built pieces in (see [`super::prepare`]), one [`Stepper`] step at a
//! time, with validation, early stopping, checkpoints, metrics and the final export.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mlx_rs::Dtype;

use super::board::Board;
use super::checkpoint::{self, Resume, TrainState};
use super::distributed::Group;
use super::events::{Control, EvalMetrics, Event, Outcome, Started, StepMetrics, TrainResult};
use super::lora;
use super::metrics_log::MetricsLog;
use super::optim::{learning_rate, Optimizer};
use super::prepare::{initial_trainables, prepare, write_spec, Dataset, Prepared};
use super::spec::{FineTuneType, TrainSpec};
use super::step::StepOptions;
use super::step_functions::StepFunctions;
use super::stepper::{Interrupt, MicroBatch, StepOutcome, StepStats, Stepper};
use crate::data::batch::{Padding, Plan};
use crate::data::prefetch::{Order, Prefetcher};
use crate::data::DataStats;
use crate::error::{EngineError, Result};
use crate::eval;
use crate::models::forward::Params;
use crate::models::packed_attention::{block_for, reach_for};
use crate::models::Model;
use crate::runtime;
use crate::weights::Weights;

/// Which checkpoint a resumed run starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The one `checkpoints/latest` points at.
    Latest,
    /// The newest of at most this many steps: the one a worker reconciled the job's records
    /// with, whatever a process that lost the job wrote since.
    AtMost(u64),
}

/// The caller's callback: sees every event, answers with a [`Control`].
pub type OnEvent<'a> = &'a mut dyn FnMut(&Event) -> Control;

/// Trains per `spec` into `output` (resuming from its latest checkpoint when `resume`).
pub fn train(
    spec: &TrainSpec,
    output: &Path,
    resume: bool,
    on_event: OnEvent,
) -> Result<TrainResult> {
    let from = resume.then_some(ResumeFrom::Latest);
    train_in_group(spec, output, from, None, on_event)
}

/// [`train`] as one rank of a data-parallel `group` (`super::distributed`): every rank
/// takes its share of each micro-batch and applies the same update; rank 0 alone writes
/// the run's files and reports events, and its answers ([`Control`]) hold for every rank.
pub fn train_in_group(
    spec: &TrainSpec,
    output: &Path,
    resume: Option<ResumeFrom>,
    group: Option<Rc<Group>>,
    on_event: OnEvent,
) -> Result<TrainResult> {
    train_with(spec, output, resume, (group, None), on_event)
}

/// [`train`] that also stops inside a long step: `interrupt` is asked before every
/// micro-batch; once it answers true the step is dropped (its data is taken again on
/// resume) and the callback's answer to an info event decides between pause and cancel.
pub fn train_interruptible(
    spec: &TrainSpec,
    output: &Path,
    resume: Option<ResumeFrom>,
    interrupt: Interrupt,
    on_event: OnEvent,
) -> Result<TrainResult> {
    train_with(spec, output, resume, (None, Some(interrupt)), on_event)
}

fn train_with(
    spec: &TrainSpec,
    output: &Path,
    resume: Option<ResumeFrom>,
    (group, interrupt): (Option<Rc<Group>>, Option<Interrupt>),
    on_event: OnEvent,
) -> Result<TrainResult> {
    runtime::init()?;
    let root = group.as_ref().is_none_or(|g| g.is_root());
    if root {
        write_spec(spec, output)?;
    }
    let prepared = prepare(spec)?;
    for w in prepared.warnings.iter().filter(|_| root) {
        on_event(&Event::warn(w.clone()));
    }
    let mut run = Run::start(spec, output, prepared, resume, group, on_event)?;
    run.stepper.interrupt = interrupt;
    let c = run.on_event(Event::Started(run.started()));
    if run.agree(c)? == Control::Cancel {
        return Ok(run.result(Outcome::Cancelled));
    }
    let outcome = run.run_steps()?;
    if matches!(outcome, Outcome::Completed | Outcome::EarlyStopped) {
        run.finish()?;
    }
    Ok(run.result(outcome))
}

/// A run in progress: its pieces, its position and where it reports.
struct Run<'a> {
    spec: &'a TrainSpec,
    output: &'a Path,
    model: Model,
    train_stats: DataStats,
    valid: Option<Dataset>,
    modules: Vec<String>,
    plan: Arc<Plan>,
    /// The training micro-batches, built ahead of the step that takes them.
    batches: Prefetcher,
    /// The next step's micro-batches and the run position they start at, taken before
    /// this step runs so that its graph is built while this one's runs.
    upcoming: Option<(u64, Vec<MicroBatch>)>,
    micro_batch_size: u32,
    total_steps: u64,
    stepper: Stepper,
    optimizer: Optimizer,
    trainable: Weights,
    state: TrainState,
    /// Rank 0's (or the single process's) metrics file; other ranks write none.
    metrics: Option<MetricsLog>,
    board: Board,
    group: Option<Rc<Group>>,
    started: Instant,
    start_step: u64,
    on_event: OnEvent<'a>,
}

/// What the loop does after a step.
enum Next {
    Continue,
    Stop(Outcome),
}

impl<'a> Run<'a> {
    fn start(
        spec: &'a TrainSpec,
        output: &'a Path,
        p: Prepared,
        resume: Option<ResumeFrom>,
        group: Option<Rc<Group>>,
        on_event: OnEvent<'a>,
    ) -> Result<Run<'a>> {
        let root = group.as_ref().is_none_or(|g| g.is_root());
        let names = super::order::layer_order(&p.trainable);
        let parameters = p.trainable.values().map(|a| a.size() as u64).sum();
        let (board, board_warning) = match root {
            true => Board::open(output, parameters),
            false => (Board::closed(), None),
        };
        let mut functions = StepFunctions::new(
            &p.model.spec,
            p.model.weights.clone(),
            names,
            step_options(spec),
            spec.compile,
        )?;
        let mut plan_note = ladder_note(&p.plan.padding).filter(|_| !p.plan.packed);
        if p.plan.packed {
            let width = p.plan.width(&p.train.examples) as i32;
            let block = block_for(width)?;
            functions.reach_floor = p
                .plan
                .packed_reach(&p.train.examples, block.max(1) as usize);
            plan_note = Some(packed_attention_note(width, block, functions.reach_floor));
        }
        let mut stepper = Stepper::new(functions);
        if let Some(g) = &group {
            stepper.set_group(g.clone());
        }
        let state = fresh_state(spec, p.total_steps, p.batching.split);
        let from = match resume {
            Some(at) => Some(matching(output, at, p.total_steps, stepper.names())?),
            None => {
                if root {
                    let _ = std::fs::remove_dir_all(checkpoint::checkpoints_dir(output));
                }
                None
            }
        };
        let metrics = match (&from, root) {
            (_, false) => None,
            (Some(r), true) => Some(MetricsLog::resume(output, r.state.step)?),
            (None, true) => Some(MetricsLog::create(output)?),
        };
        let plan = Arc::new(p.plan);
        let depth = prefetch_depth(spec.grad_accum as usize * p.batching.split.max(1) as usize);
        let batches = Prefetcher::new(Arc::new(p.train.examples), plan.clone(), depth);
        let mut run = Run {
            spec,
            output,
            model: p.model,
            train_stats: p.train.stats,
            valid: p.valid,
            modules: p.modules,
            plan,
            batches,
            upcoming: None,
            micro_batch_size: p.batching.micro,
            total_steps: p.total_steps,
            stepper,
            optimizer: Optimizer::new(spec),
            trainable: p.trainable,
            state,
            metrics,
            board,
            group,
            started: Instant::now(),
            start_step: 0,
            on_event,
        };
        if let Some(w) = board_warning {
            run.on_event(Event::warn(w));
        }
        if let Some(text) = plan_note.filter(|_| root) {
            run.on_event(Event::info(text));
        }
        if let Some(r) = from {
            let dir = r.dir.clone();
            run.restore(r)?;
            let text = format!("resumed from {} (step {})", dir.display(), run.state.step);
            run.on_event(Event::info(text));
        }
        if let Some(g) = &run.group {
            g.check_same(run.state.step, "the step to start from")?;
        }
        run.start_step = run.state.step;
        Ok(run)
    }

    /// Whether this process writes the run's files and reports (rank 0, or no group).
    fn is_root(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.is_root())
    }

    /// Reports `e` (rank 0 only; other ranks answer `Continue`, then [`Run::agree`]).
    fn on_event(&mut self, e: Event) -> Control {
        match self.is_root() {
            true => (self.on_event)(&e),
            false => Control::Continue,
        }
    }

    /// Rank 0's answer, on every rank (the answer itself without a group).
    fn agree(&self, c: Control) -> Result<Control> {
        let Some(g) = &self.group else {
            return Ok(c);
        };
        let code = match c {
            Control::Continue => 0,
            Control::Pause => 1,
            Control::Cancel => 2,
        };
        Ok(match g.from_root(code)? {
            1 => Control::Pause,
            2 => Control::Cancel,
            _ => Control::Continue,
        })
    }

    fn started(&self) -> Started {
        Started {
            total_steps: self.total_steps,
            start_step: self.state.step,
            trainable_parameters: self.trainable.values().map(|a| a.size() as u64).sum(),
            micro_batch_size: self.micro_batch_size,
            micro_batches_per_step: self.spec.grad_accum * self.state.split,
            train: self.train_stats.clone(),
            validation: self.valid.as_ref().map(|v| v.stats.clone()),
            batches_per_epoch: self.plan.batches.len(),
        }
    }

    /// Takes over a checkpoint's arrays and position; metric lines past it are dropped.
    fn restore(&mut self, r: Resume) -> Result<()> {
        self.stepper.discard_ahead();
        self.upcoming = None;
        self.trainable = r.trainable;
        self.optimizer.state = r.optimizer;
        self.optimizer.t = r.state.optimizer_t;
        self.state = r.state;
        if self.is_root() {
            self.metrics = Some(MetricsLog::resume(self.output, self.state.step)?);
        }
        Ok(())
    }

    fn run_steps(&mut self) -> Result<Outcome> {
        while self.state.step < self.total_steps {
            if let Next::Stop(outcome) = self.one_step()? {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Completed)
    }

    /// One optimizer step, its metrics, then validation and checkpoints when due.
    fn one_step(&mut self) -> Result<Next> {
        let step_start = Instant::now();
        // `peak_memory_bytes` of a step is the peak during that step.
        runtime::reset_peak_memory();
        let micro_before = self.state.micro;
        let micro = self.next_micro_batches();
        if self.state.step + 1 < self.total_steps {
            self.upcoming = Some((self.state.micro, self.micro_batches_at(self.state.micro)));
        }
        let next = match self.upcoming.as_ref().map(|(_, m)| &m[..]) {
            Some([one]) => Some(one),
            _ => None,
        };
        let lr = learning_rate(self.spec, self.state.step, self.total_steps);
        // Gradients are kept (for the checkpoint's histograms) only for a step that a
        // checkpoint may follow: keeping them costs a pass over them and a wait.
        let (save, eval) = self.due(self.state.step + 1);
        self.stepper.keep_gradients = self.board.histograms && (save || eval);
        let outcome = self.stepper.step_ahead(
            &mut self.trainable,
            &mut self.optimizer,
            &micro,
            (self.state.loss_scale, lr as f32, self.spec.max_grad_norm),
            next,
        );
        let stats = match outcome {
            Ok(StepOutcome::Updated(s)) => s,
            Ok(StepOutcome::Empty) => {
                self.state.step += 1;
                return Ok(Next::Continue);
            }
            Ok(StepOutcome::NonFinite { loss, grad_norm }) => {
                self.back_off_loss_scale(loss, grad_norm)?;
                // The same micro-batches again at the lower scale: no data is dropped.
                self.state.micro = micro_before;
                return Ok(Next::Continue);
            }
            // With a group, one rank alone cannot change the split: the run fails.
            Err(EngineError::Interrupted) => {
                self.state.micro = micro_before;
                return self.stop_inside_step();
            }
            Err(e) if e.is_out_of_memory() && self.can_split_further() && self.group.is_none() => {
                self.recover_from_out_of_memory(&e)?;
                return Ok(Next::Continue);
            }
            Err(e) => return Err(e),
        };
        self.advance(&stats);
        let control = self.report_step(&stats, lr, step_start)?;
        self.evaluate_and_checkpoint(control)
    }

    /// The step's metrics line, TensorBoard scalars and event (rank 0), and the answer.
    fn report_step(&mut self, stats: &StepStats, lr: f64, step_start: Instant) -> Result<Control> {
        let mut control = Control::Continue;
        if self.is_root() {
            let m = self.step_metrics(stats, lr, step_start);
            if let Some(log) = &mut self.metrics {
                log.append(&m)?;
            }
            if let Some(w) = self.board.step(&m) {
                self.on_event(Event::warn(w));
            }
            control = self.on_event(Event::Step(m));
        }
        self.agree(control)
    }

    /// The micro-batches of the next optimizer step (taken ahead by the step before, or
    /// now), and the run's position past them.
    fn next_micro_batches(&mut self) -> Vec<MicroBatch> {
        let start = self.state.micro;
        let micro = match self.upcoming.take() {
            Some((at, m)) if at == start => m,
            _ => self.micro_batches_at(start),
        };
        self.state.micro += micro.len() as u64;
        micro
    }

    /// The micro-batches of the optimizer step that starts at run position `start`, in the
    /// run's data order; with a group, this rank's share of each (its part when every
    /// micro-batch is cut in group-size parts).
    fn micro_batches_at(&mut self, start: u64) -> Vec<MicroBatch> {
        let (rank, ranks) = self.group.as_ref().map_or((0, 1), |g| (g.rank(), g.size()));
        let seed = self.spec.seed;
        let order = Order {
            seed,
            split: self.state.split.max(1),
            rank,
            ranks,
        };
        let count = self.spec.grad_accum as u64 * order.split as u64;
        (start..start + count)
            .map(|at| MicroBatch {
                batch: self.batches.get(order, at).into_batch(),
                dropout_seed: seed.wrapping_add((at + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            })
            .collect()
    }

    /// After a non-finite step: fp16 halves its loss scale and tries again; anything else
    /// has diverged.
    fn back_off_loss_scale(&mut self, loss: f64, grad_norm: f64) -> Result<()> {
        if self.spec.dtype() == Dtype::Float16 && self.state.loss_scale > 1.0 {
            self.state.loss_scale /= 2.0;
            self.state.good_steps = 0;
            self.state.skipped_steps += 1;
            let text = format!(
                "fp16 overflow at step {} (loss {loss}, gradient norm {grad_norm}): update \
                 skipped ({} so far), retried with loss scale {}",
                self.state.step + 1,
                self.state.skipped_steps,
                self.state.loss_scale
            );
            self.on_event(Event::warn(text));
            return Ok(());
        }
        Err(EngineError::Diverged {
            step: self.state.step + 1,
            why: if loss.is_finite() {
                format!("loss is finite but the gradient norm is {grad_norm}")
            } else {
                format!("loss became {loss}")
            },
            checkpoints: checkpoint::checkpoints_dir(self.output),
        })
    }

    fn can_split_further(&self) -> bool {
        self.plan.max_rows() > self.state.split.max(1) as usize
    }

    /// Halves the micro-batch (each batch split in two more parts, twice as many
    /// accumulated) and continues from the last checkpoint, or from the start.
    fn recover_from_out_of_memory(&mut self, e: &EngineError) -> Result<()> {
        let new_split = self.state.split.max(1) * 2;
        let from = match checkpoint::load_latest(self.output)? {
            Some(r) => r,
            None => self.fresh_resume()?,
        };
        let old_split = from.state.split.max(1);
        self.restore(from)?;
        self.state.micro *= (new_split / old_split) as u64;
        self.state.split = new_split;
        runtime::clear_cache()?;
        self.on_event(Event::warn(format!(
            "{e}; micro-batch split in {new_split}, continuing from step {}",
            self.state.step
        )));
        Ok(())
    }

    /// The start of the run as a checkpoint would hold it.
    fn fresh_resume(&self) -> Result<Resume> {
        let (trainable, _) = initial_trainables(self.spec, &self.model)?;
        let mut state = fresh_state(self.spec, self.total_steps, self.state.split.max(1));
        state.loss_scale = self.state.loss_scale;
        state.good_steps = self.state.good_steps;
        Ok(Resume {
            state,
            trainable,
            optimizer: Weights::new(),
            dir: checkpoint::checkpoints_dir(self.output),
        })
    }

    fn advance(&mut self, s: &StepStats) {
        self.state.step += 1;
        self.state.optimizer_t = self.optimizer.t;
        self.state.trained_tokens += s.loss_tokens;
        self.state.last_loss = Some(s.loss);
        if self.spec.dtype() == Dtype::Float16 {
            self.state.good_steps += 1;
            if self.state.good_steps.is_multiple_of(1000) {
                self.state.loss_scale *= 2.0;
            }
        }
    }

    fn step_metrics(&self, s: &StepStats, lr: f64, step_start: Instant) -> StepMetrics {
        let state = &self.state;
        let nb = self.plan.batches.len() as u64;
        let step_s = step_start.elapsed().as_secs_f64().max(1e-9);
        let done = (state.step - self.start_step) as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let mem = runtime::memory_stats();
        StepMetrics {
            step: state.step,
            total_steps: self.total_steps,
            epoch: state.micro as f64 / (nb * state.split.max(1) as u64) as f64,
            total_epochs: self.total_steps as f64 * self.spec.grad_accum as f64 / nb as f64,
            loss: s.loss,
            learning_rate: lr,
            grad_norm: s.grad_norm,
            tokens_per_second: s.loss_tokens as f64 / step_s,
            all_tokens_per_second: s.real_tokens as f64 / step_s,
            padding_waste: if s.total_tokens > 0 {
                1.0 - s.real_tokens as f64 / s.total_tokens as f64
            } else {
                0.0
            },
            trained_tokens: state.trained_tokens,
            peak_memory_bytes: mem.peak,
            active_memory_bytes: mem.active,
            elapsed_seconds: elapsed,
            eta_seconds: elapsed / done * (self.total_steps - state.step) as f64,
            completion_percentage: 100.0 * state.step as f64 / self.total_steps as f64,
            skipped_steps: state.skipped_steps,
        }
    }

    /// Validation when due (best checkpoint, early stopping), a checkpoint when due or
    /// asked for, then the caller's pause or cancel.
    fn evaluate_and_checkpoint(&mut self, mut control: Control) -> Result<Next> {
        let step = self.state.step;
        let (mut save, eval_due) = self.due(step);
        let mut stop_early = false;
        if eval_due && self.valid.is_some() {
            let (m, c) = self.validate()?;
            stop_early = self
                .spec
                .patience
                .is_some_and(|p| !m.is_best && self.state.evals_without_improvement >= p);
            save |= m.is_best || stop_early;
            let c = self.agree(c)?;
            if c != Control::Continue {
                control = c;
            }
        }
        if save || control == Control::Pause {
            // Rank 0 writes the checkpoint; its caller's answer holds for every rank.
            let c = match self.is_root() {
                true => self.save_checkpoint()?,
                false => Control::Continue,
            };
            if self.agree(c)? == Control::Cancel {
                control = Control::Cancel;
            }
        }
        Ok(match control {
            Control::Pause => Next::Stop(Outcome::Paused),
            Control::Cancel => Next::Stop(Outcome::Cancelled),
            Control::Continue if stop_early => {
                self.on_event(Event::info(format!(
                    "early stopping at step {step}: no improvement in {} evaluations",
                    self.state.evals_without_improvement
                )));
                Next::Stop(Outcome::EarlyStopped)
            }
            Control::Continue => Next::Continue,
        })
    }

    /// Whether a checkpoint and a validation pass are due after `step`.
    fn due(&self, step: u64) -> (bool, bool) {
        let last = step == self.total_steps;
        let every = |n: Option<u64>| n.is_some_and(|n| step.is_multiple_of(n)) || last;
        (every(self.spec.save_every), every(self.spec.eval_every))
    }

    /// A pause or cancel that arrived between micro-batches: the unfinished step is
    /// dropped; a pause checkpoints the last finished step unless `latest` already is it.
    fn stop_inside_step(&mut self) -> Result<Next> {
        let step = self.state.step;
        let text = format!("step {} stopped between micro-batches", step + 1);
        Ok(match self.on_event(Event::info(text)) {
            Control::Continue => Next::Continue,
            Control::Cancel => Next::Stop(Outcome::Cancelled),
            Control::Pause => {
                let saved = checkpoint::list(self.output).first().map(|c| c.step);
                if step > 0 && saved != Some(step) {
                    self.save_checkpoint()?;
                }
                Next::Stop(Outcome::Paused)
            }
        })
    }

    /// Writes a checkpoint of the current step (best mark, pruning, histograms) and
    /// reports it.
    fn save_checkpoint(&mut self) -> Result<Control> {
        let step = self.state.step;
        let dir = checkpoint::save(
            self.output,
            &self.state,
            &self.trainable,
            &self.optimizer.state,
        )?;
        if self.state.best_step == Some(step) {
            checkpoint::mark_best(self.output, step)?;
        }
        checkpoint::prune(self.output, self.spec.keep_last)?;
        let grads = self.stepper.last_gradients();
        if let Some(w) = self.board.checkpoint(step, &self.trainable, grads) {
            self.on_event(Event::warn(w));
        }
        Ok(self.on_event(Event::Checkpoint { step, path: dir }))
    }

    /// A validation pass; updates the best loss and the early-stopping count.
    fn validate(&mut self) -> Result<(EvalMetrics, Control)> {
        let Some(valid) = &self.valid else {
            return Err(EngineError::invalid("validationData", "none given"));
        };
        let opts = step_options(self.spec);
        let p = Params {
            base: &self.model.weights,
            over: Some(&self.trainable),
            lora_scale: opts.lora_scale,
            compute_dtype: Some(opts.compute),
            dropout: None,
        };
        let r = eval::evaluate(
            &self.model.spec,
            &p,
            &valid.examples,
            self.spec.eval_batch_size as usize,
        )?;
        let state = &mut self.state;
        let improved = state
            .best_val_loss
            .is_none_or(|b| r.loss < b - self.spec.min_delta);
        if improved {
            state.best_val_loss = Some(r.loss);
            state.best_step = Some(state.step);
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement += 1;
        }
        let m = EvalMetrics {
            step: state.step,
            val_loss: r.loss,
            val_perplexity: r.perplexity,
            val_token_accuracy: r.token_accuracy,
            val_tokens: r.tokens,
            is_best: improved,
        };
        if let Some(w) = self.board.eval(&m) {
            self.on_event(Event::warn(w));
        }
        if let Some(log) = &mut self.metrics {
            log.append_eval(&m)?;
        }
        let c = self.on_event(Event::Eval(m.clone()));
        Ok((m, c))
    }

    /// Final artefacts, from the best checkpoint when validation chose one, else the last
    /// step: the model directory (full fine-tuning) or the adapters.
    fn finish(&mut self) -> Result<()> {
        if !self.is_root() {
            return Ok(());
        }
        let final_weights = match self.state.best_step {
            Some(best) if best != self.state.step => {
                let dir =
                    checkpoint::checkpoints_dir(self.output).join(checkpoint::step_dir_name(best));
                crate::weights::load_file(&dir.join("trainable.safetensors"))?
            }
            _ => self.trainable.clone(),
        };
        match self.spec.fine_tune_type {
            FineTuneType::Full => {
                let m = &mut self.model;
                // Saved in the base checkpoint's own dtype, whatever the compute dtype was.
                let saved = crate::models::checkpoint_dtype(&m.config.json).unwrap_or(m.dtype);
                for (k, v) in &final_weights {
                    m.weights.insert(k.clone(), v.as_dtype(saved)?);
                }
                if saved != m.dtype {
                    for v in m.weights.values_mut() {
                        if crate::models::is_float(v.dtype()) {
                            *v = v.as_dtype(saved)?;
                        }
                    }
                    m.dtype = saved;
                }
                let out = self.output.join("model");
                m.save(&out)?;
                crate::tokenizer::copy_tokenizer_files(&m.dir, &out)
            }
            _ => lora::save_adapters(
                self.output,
                &final_weights,
                self.spec,
                &self.modules,
                &self.model.spec,
            ),
        }
    }

    fn result(&self, outcome: Outcome) -> TrainResult {
        let state = &self.state;
        TrainResult {
            outcome,
            step: state.step,
            total_steps: state.total_steps,
            final_loss: state.last_loss,
            best_val_loss: state.best_val_loss,
            best_checkpoint: state.best_step.map(|s| {
                checkpoint::checkpoints_dir(self.output).join(checkpoint::step_dir_name(s))
            }),
            output_dir: PathBuf::from(self.output),
            trained_tokens: state.trained_tokens,
            skipped_steps: state.skipped_steps,
        }
    }
}

/// How many micro-batches are built ahead: a step's worth and one more, unless
/// `MLXTUNE_PREFETCH=0` (each built when its step asks for it).
/// What a packed job's attention does, said once at its start: its cost follows the reach,
/// which the longest example sets.
fn packed_attention_note(width: i32, block: i32, reach_floor: usize) -> String {
    match reach_for(width, block, reach_floor as i32) {
        Some(reach) => format!(
            "packed rows of {width} positions: attention in query blocks of {block}, each \
             block's keys from {reach} positions before its first query (the plan's longest \
             reach into an example)"
        ),
        None if block <= 0 || block >= width => format!(
            "packed rows of {width} positions: one attention over each whole row, masked to \
             each example"
        ),
        None => format!(
            "packed rows of {width} positions: every query's keys from its row's start, \
             masked to its example (the longest examples reach past the last block's start)"
        ),
    }
}

/// A compiled job's batch widths, said once at its start (`data/widths.rs`).
fn ladder_note(padding: &Padding) -> Option<String> {
    let Padding::Ladder(widths) = padding else {
        return None;
    };
    let list: Vec<String> = widths.iter().map(usize::to_string).collect();
    Some(format!(
        "compiled step: batches padded to {} width(s), {} positions (each traced once; more \
         widths pad less, so a longer run gets more)",
        widths.len(),
        list.join(", ")
    ))
}

fn prefetch_depth(per_step: usize) -> usize {
    match std::env::var("MLXTUNE_PREFETCH").as_deref() {
        Ok("0") => 0,
        _ => per_step.clamp(1, 64) + 1,
    }
}

/// The latest checkpoint of `output`, which must plan the same run.
fn matching(output: &Path, at: ResumeFrom, total_steps: u64, names: &[String]) -> Result<Resume> {
    let found = match at {
        ResumeFrom::Latest => checkpoint::load_latest(output)?,
        ResumeFrom::AtMost(step) => checkpoint::load_at_most(output, step)?,
    };
    let r = found.ok_or_else(|| {
        EngineError::invalid(
            "resume",
            format!("{} has no checkpoint to resume from", output.display()),
        )
    })?;
    if r.state.total_steps != total_steps {
        return Err(EngineError::invalid(
            "resume",
            format!(
                "the checkpoint plans {} steps, this configuration {total_steps}",
                r.state.total_steps
            ),
        ));
    }
    if let Some(n) = names.iter().find(|n| !r.trainable.contains_key(*n)) {
        return Err(EngineError::invalid(
            "resume",
            format!("{} lacks `{n}`", r.dir.display()),
        ));
    }
    Ok(r)
}

/// How the spec's step computes.
pub fn step_options(spec: &TrainSpec) -> StepOptions {
    StepOptions {
        lora_scale: spec.lora_scale(),
        dropout: spec.lora_dropout as f32,
        compute: spec.dtype(),
        checkpoint_layers: spec.recomputed_layers(),
        checkpoint_mlps: spec.recomputed_mlps(),
        lean: spec.gradient_checkpointing,
        chunked_loss: super::step::default_chunked_loss(spec.gradient_checkpointing),
        attention_reach: None,
        layer_grads_in_compute: true,
    }
}

/// The position of a run that has not taken a step.
fn fresh_state(spec: &TrainSpec, total_steps: u64, split: u32) -> TrainState {
    TrainState {
        step: 0,
        micro: 0,
        total_steps,
        optimizer_t: 0,
        loss_scale: if spec.dtype() == Dtype::Float16 {
            32768.0
        } else {
            1.0
        },
        good_steps: 0,
        best_val_loss: None,
        best_step: None,
        evals_without_improvement: 0,
        trained_tokens: 0,
        last_loss: None,
        split,
        skipped_steps: 0,
    }
}
