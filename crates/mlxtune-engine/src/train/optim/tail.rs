//! The end of an Adam(W) step as one compiled MLX graph: the gradients' global norm, the
//! clipping factor and the update of every trainable array and its moments.
//!
//! Done one array at a time, the norm cost a division, a square, a sum and an add per array
//! plus a host sync, the clipping another pass and the update a third graph. Here the sums
//! of squares go a group of arrays at a time through one kernel ([`adamw_group::squares`],
//! many blocks per large array), small arrays are updated a group at a time
//! ([`adamw_group::update`]) and each larger one by one kernel ([`adamw::update`]); the
//! kernels read the clipping factor and the keep flag from the device: a non-finite norm (or loss) keeps every weight and moment as it was without the
//! host deciding, so nothing waits on the host before the update is queued, and the host
//! reads the norm and the loss once, at the end. [`Optimizer::queue_step`] builds the graph
//! (its sums and loss may still be running), [`Optimizer::run_step`] waits for it.

use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{concatenate, minimum, stack};
use mlx_rs::{Array, Dtype};

use super::{scalar, AdamFn, Optimizer};
use crate::error::{EngineError, Result};
use crate::kernels::{self, adamw, adamw_group};
use crate::train::spec::OptimizerKind;
use crate::weights::Weights;

/// Arrays after the 4·n: the step's fixed numbers (`h`'s first 11, kernels/adamw.rs),
/// `max_norm` and the step's loss.
const TRAILING: usize = 3;

/// `[sums × n, p × n, m × n, v × n, fixed, max_norm, loss] -> [p' × n, m' × n, v' × n,
/// norm]`: the norm of the gradients `sums / denom`, the clipping factor to `max_norm` (∞:
/// none), then each array's update; where the norm or the loss is not finite, `p`, `m` and
/// `v` come back unchanged. Small arrays go through [`adamw_group`]'s kernels a group at a
/// time on a GPU, the others through a reduction and [`adamw::update`] each.
fn tail(a: &[Array]) -> std::result::Result<Vec<Array>, Exception> {
    let n = a.len().saturating_sub(TRAILING) / 4;
    let [fixed, max_norm, loss] = &a[4 * n..] else {
        return Err(Exception::custom(
            "the step's tail takes 4·n arrays and 3 more",
        ));
    };
    let (sums, rest) = a[..4 * n].split_at(n);
    let (p, rest) = rest.split_at(n);
    let (m, v) = rest.split_at(n);
    let gpu = kernels::gpu();
    let (grouped, single): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| {
        [&m[i], &v[i]]
            .iter()
            .all(|x| x.shape() == p[i].shape() && adamw_group::takes(gpu, x))
            && adamw_group::takes(gpu, &p[i])
            && sums[i].shape() == p[i].shape()
            && adamw_group::sums(gpu, &sums[i])
    });
    let norm = pairwise_sum(squares(gpu, sums, fixed)?)?.sqrt()?;
    let clip = minimum(scalar(1.0), max_norm.divide(norm.add(scalar(1e-6))?)?)?;
    let keep = norm
        .is_finite()?
        .logical_and(loss.is_finite()?)?
        .logical_not()?;
    let h = concatenate(
        &[
            fixed.clone(),
            stack(&[clip, keep.as_dtype(Dtype::Float32)?], 0)?,
        ],
        0,
    )?;
    let mut new: Vec<Option<[Array; 3]>> = vec![None; n];
    for &i in &single {
        let out = adamw::update(&p[i], &sums[i], &m[i], &v[i], &h).map_err(exception)?;
        new[i] = Some(
            <[Array; 3]>::try_from(out)
                .map_err(|_| Exception::custom("the Adam(W) update returns 3 arrays"))?,
        );
    }
    if let (Some(gpu), false) = (gpu, grouped.is_empty()) {
        let out = adamw_group::update(
            Some(gpu),
            &pick(p, &grouped),
            &pick(sums, &grouped),
            &pick(m, &grouped),
            &pick(v, &grouped),
            &h,
        )
        .map_err(exception)?;
        for (&i, arrays) in grouped.iter().zip(out) {
            new[i] = Some(arrays);
        }
    }
    let new: Vec<[Array; 3]> = new
        .into_iter()
        .map(|x| x.ok_or_else(|| Exception::custom("an array without its update")))
        .collect::<std::result::Result<_, _>>()?;
    let mut out: Vec<Array> = (0..3)
        .flat_map(|k| new.iter().map(move |x| x[k].clone()))
        .collect();
    out.push(norm);
    Ok(out)
}

/// Σ (s / denom)² as partial sums (`denom` at `fixed[h::DENOM]`): on a GPU, a group of
/// arrays per launch of [`adamw_group::squares`], whatever their size; the others (and all
/// of them without a GPU) one MLX reduction each.
fn squares(
    gpu: Option<kernels::Gpu>,
    sums: &[Array],
    fixed: &Array,
) -> std::result::Result<Vec<Array>, Exception> {
    let (kernel, mlx): (Vec<usize>, Vec<usize>) =
        (0..sums.len()).partition(|&i| adamw_group::sums(gpu, &sums[i]));
    let denom = fixed.index(adamw::h::DENOM);
    let mut parts: Vec<Array> = mlx
        .iter()
        .map(|&i| sums[i].divide(&denom)?.square()?.sum(None))
        .collect::<std::result::Result<_, _>>()?;
    if !kernel.is_empty() {
        for group in adamw_group::squares(gpu, &pick(sums, &kernel), fixed).map_err(exception)? {
            parts.push(group.sum(None)?);
        }
    }
    Ok(parts)
}

/// The arrays of `xs` at `at`.
fn pick<'a>(xs: &'a [Array], at: &[usize]) -> Vec<&'a Array> {
    at.iter().map(|&i| &xs[i]).collect()
}

fn exception(e: EngineError) -> Exception {
    Exception::custom(e.to_string())
}

/// Σ of scalars as a balanced tree: shallow enough for `compile` to fuse in a few kernels.
fn pairwise_sum(mut xs: Vec<Array>) -> std::result::Result<Array, Exception> {
    while xs.len() > 1 {
        xs = xs
            .chunks(2)
            .map(|c| match c {
                [a, b] => a.add(b),
                [a] => Ok(a.clone()),
                _ => unreachable!("chunks of two"),
            })
            .collect::<std::result::Result<_, _>>()?;
    }
    xs.pop().map_or_else(|| Ok(scalar(0.0)), Ok)
}

/// What a step's end works from: the gradient sums (in the trainable arrays' order), their
/// divisor, the step's loss, the clipping norm and the learning rate. The sums and the loss
/// may still be unevaluated: then the gradients, the norm and the update run as one graph.
pub struct StepEnd {
    pub sums: Vec<Array>,
    pub denom: f32,
    /// The step's loss (any scale): where it is not finite nothing is updated.
    pub loss: Array,
    pub max_grad_norm: Option<f64>,
    pub lr: f32,
}

/// A step's end built into the graph (the weights and moments hold its lazy outputs), not
/// yet run: [`Optimizer::run_step`] evaluates it.
pub struct QueuedStep {
    loss: Array,
    norm: Array,
}

/// What a step's end read back: the gradient norm before clipping and the loss it was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndFigures {
    pub grad_norm: f64,
    pub loss: f64,
}

impl QueuedStep {
    /// The gradients the queued update applies: `sums / denom` times the clipping factor
    /// the graph computes from its norm (`max_grad_norm` as given to the step), lazy. For
    /// whoever keeps them (the checkpoint's gradient histograms), without leaving the fused end.
    pub fn applied_gradients(
        &self,
        sums: &[Array],
        denom: f32,
        max_grad_norm: Option<f64>,
    ) -> Result<Vec<Array>> {
        let max = scalar(max_grad_norm.map_or(f32::INFINITY, |m| m as f32));
        let clip = minimum(scalar(1.0), max.divide(self.norm.add(scalar(1e-6))?)?)?;
        let factor = clip.divide(scalar(denom))?;
        Ok(sums
            .iter()
            .map(|s| s.multiply(&factor))
            .collect::<std::result::Result<_, _>>()?)
    }
}

impl EndFigures {
    /// Whether the weights were updated: the loss and the norm are finite.
    pub fn finite(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }
}

impl Optimizer {
    /// Whether [`Optimizer::clip_and_step`] takes this optimizer's steps: a compiled Adam or
    /// AdamW update.
    pub fn fuses_clipping(&self) -> bool {
        self.compile_update && matches!(self.kind, OptimizerKind::Adam | OptimizerKind::AdamW)
    }

    /// One Adam(W) step from gradient sums in one compiled graph: the gradients are
    /// `sums / denom` (in `names` order), clipped to a global norm of `max_grad_norm`.
    /// When the norm or the loss is not finite, the weights, the moments and the step
    /// count stay as they were.
    pub fn clip_and_step(
        &mut self,
        params: &mut Weights,
        names: &[String],
        end: StepEnd,
    ) -> Result<EndFigures> {
        let queued = self.queue_step(params, names, end)?;
        self.run_step(params, queued)
    }

    /// Builds [`Optimizer::clip_and_step`]'s graph: `params` and the moments take its lazy
    /// outputs. Nothing runs until [`Optimizer::run_step`].
    pub fn queue_step(
        &mut self,
        params: &mut Weights,
        names: &[String],
        end: StepEnd,
    ) -> Result<QueuedStep> {
        let StepEnd {
            sums,
            denom,
            loss,
            max_grad_norm,
            lr,
        } = end;
        if !self.fuses_clipping() || sums.len() != names.len() {
            return Err(EngineError::Mlx(
                "clip_and_step: a compiled Adam(W) and one sum per name".into(),
            ));
        }
        let mut inputs = sums;
        for slot in ["", "m.", "v."] {
            for name in names {
                inputs.push(self.current(params, slot, name)?);
            }
        }
        inputs.extend(self.trailing(denom, max_grad_norm, lr));
        inputs.push(loss.clone());
        let f: &mut AdamFn = self
            .tail
            .get_or_insert_with(|| Box::new(mlx_rs::transforms::compile::compile(tail, false)));
        let mut out = f(&inputs)?;
        // The old arrays live on only in the graph, so MLX can update them in place.
        drop(inputs);
        let norm = out
            .pop()
            .ok_or_else(|| EngineError::Mlx("no norm".into()))?;
        let n = names.len();
        let (v, m) = (out.split_off(2 * n), out.split_off(n));
        for (name, ((p, m), v)) in names.iter().zip(out.into_iter().zip(m).zip(v)) {
            params.insert(name.clone(), p);
            self.state.insert(format!("m.{name}"), m);
            self.state.insert(format!("v.{name}"), v);
        }
        Ok(QueuedStep { loss, norm })
    }

    /// Runs a queued step (with whatever its loss and sums still need) and counts it when
    /// it updated. The loss and the norm go first: the gradients are then computed in the
    /// order of the trainable arrays, as when they are evaluated on their own.
    pub fn run_step(&mut self, params: &Weights, q: QueuedStep) -> Result<EndFigures> {
        let mut all: Vec<&Array> = vec![&q.loss, &q.norm];
        all.extend(params.values().chain(self.state.values()));
        mlx_rs::transforms::eval(all)?;
        let figures = EndFigures {
            grad_norm: q.norm.item_cast::<f32>() as f64,
            loss: q.loss.item_cast::<f32>() as f64,
        };
        if figures.finite() {
            self.t += 1;
        }
        Ok(figures)
    }

    /// `params[name]` (`slot` ""), or its moment `slot + name`, zeros before the first step.
    fn current(&self, params: &Weights, slot: &str, name: &str) -> Result<Array> {
        let p = params.get(name).ok_or_else(|| EngineError::MissingWeight {
            name: name.to_string(),
        })?;
        if slot.is_empty() {
            return Ok(p.clone());
        }
        match self.state.get(&format!("{slot}{name}")) {
            Some(a) => Ok(a.clone()),
            None => Ok(mlx_rs::ops::zeros_like(p)?),
        }
    }

    /// The tail's trailing arrays for the next step ([`TRAILING`]) but the loss.
    fn trailing(&self, denom: f32, max: Option<f64>, lr: f32) -> Vec<Array> {
        let t = (self.t + 1) as i32;
        let (b1, b2, wd) = (self.beta1, self.beta2, self.weight_decay);
        let adamw = self.kind == OptimizerKind::AdamW;
        let decay = if adamw { 1.0 - lr * wd } else { 1.0 };
        let l2 = if adamw { 0.0 } else { wd };
        let fixed = [
            b1,
            1.0 - b1,
            b2,
            1.0 - b2,
            self.eps,
            lr,
            1.0 - b1.powi(t),
            1.0 - b2.powi(t),
            decay,
            l2,
            denom,
        ];
        let max = max.map_or(f32::INFINITY, |m| m as f32);
        vec![
            Array::from_slice(&fixed, &[fixed.len() as i32]),
            scalar(max),
        ]
    }
}
