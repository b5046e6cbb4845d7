//! The end of an Adam(W) step as one compiled MLX graph: the gradients' global norm, the
//! clipping factor and the update of every trainable array and its moments.
//!
//! Done one array at a time, the norm cost a division, a square, a sum and an add per array
//! plus a host sync, the clipping another pass and the update a third graph. Here each
//! array's norm term is one fused kernel and a reduction, and its update is one kernel
//! ([`adamw::update`], which reads the clipping factor and the keep flag from the device):
//! a non-finite norm (or loss) keeps every weight and moment as it was without the host
//! deciding, so nothing waits on the host before the update is queued, and the host reads
//! the norm once, at the end.

use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{concatenate, minimum, stack};
use mlx_rs::{Array, Dtype};

use super::{scalar, AdamFn, Optimizer};
use crate::error::{EngineError, Result};
use crate::kernels::adamw;
use crate::train::spec::OptimizerKind;
use crate::weights::Weights;

/// Arrays after the 4·n: the step's fixed numbers (`h`'s first 11, kernels/adamw.rs),
/// `max_norm` and `allow`.
const TRAILING: usize = 3;

/// `[sums × n, p × n, m × n, v × n, fixed, max_norm, allow] -> [p' × n, m' × n, v' × n,
/// norm]`: the norm of the gradients `sums / denom`, the clipping factor to `max_norm` (∞:
/// none), then each array's update ([`adamw::update`]); where the norm is not finite or
/// `allow` is 0, `p`, `m` and `v` come back unchanged.
fn tail(a: &[Array]) -> std::result::Result<Vec<Array>, Exception> {
    let n = a.len().saturating_sub(TRAILING) / 4;
    let [fixed, max_norm, allow] = &a[4 * n..] else {
        return Err(Exception::custom(
            "the step's tail takes 4·n arrays and 3 more",
        ));
    };
    let (sums, rest) = a[..4 * n].split_at(n);
    let (p, rest) = rest.split_at(n);
    let (m, v) = rest.split_at(n);
    let denom = fixed.index(adamw::h::DENOM);
    let squares: Vec<Array> = sums
        .iter()
        .map(|s| s.divide(&denom)?.square()?.sum(None))
        .collect::<std::result::Result<_, _>>()?;
    let norm = pairwise_sum(squares)?.sqrt()?;
    let clip = minimum(scalar(1.0), max_norm.divide(norm.add(scalar(1e-6))?)?)?;
    let keep = norm
        .is_finite()?
        .logical_not()?
        .logical_or(allow.le(scalar(0.0))?)?;
    let h = concatenate(
        &[
            fixed.clone(),
            stack(&[clip, keep.as_dtype(Dtype::Float32)?], 0)?,
        ],
        0,
    )?;
    let mut out: Vec<Array> = Vec::with_capacity(3 * n + 1);
    let (mut moments1, mut moments2) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let new = adamw::update(&p[i], &sums[i], &m[i], &v[i], &h)
            .map_err(|e| Exception::custom(e.to_string()))?;
        let [p2, m2, v2] = <[Array; 3]>::try_from(new)
            .map_err(|_| Exception::custom("the Adam(W) update returns 3 arrays"))?;
        out.push(p2);
        moments1.push(m2);
        moments2.push(v2);
    }
    out.extend(moments1);
    out.extend(moments2);
    out.push(norm);
    Ok(out)
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
/// divisor, whether the loss was finite, the clipping norm and the learning rate.
pub struct StepEnd {
    pub sums: Vec<Array>,
    pub denom: f32,
    pub loss_finite: bool,
    pub max_grad_norm: Option<f64>,
    pub lr: f32,
}

impl Optimizer {
    /// Whether [`Optimizer::clip_and_step`] takes this optimizer's steps: a compiled Adam or
    /// AdamW update.
    pub fn fuses_clipping(&self) -> bool {
        self.compile_update && matches!(self.kind, OptimizerKind::Adam | OptimizerKind::AdamW)
    }

    /// One Adam(W) step from gradient sums in one compiled graph: the gradients are
    /// `sums / denom` (in `names` order), clipped to a global norm of `max_grad_norm`.
    /// Returns that norm before clipping. When it is not finite, or `loss_finite` is false,
    /// the weights, the moments and the step count stay as they were.
    pub fn clip_and_step(
        &mut self,
        params: &mut Weights,
        names: &[String],
        end: StepEnd,
    ) -> Result<f64> {
        let StepEnd {
            sums,
            denom,
            loss_finite,
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
        inputs.extend(self.trailing(denom, loss_finite, max_grad_norm, lr));
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
        let mut all: Vec<&Array> = params.values().chain(self.state.values()).collect();
        all.push(&norm);
        mlx_rs::transforms::eval(all)?;
        let norm = norm.item_cast::<f32>() as f64;
        if loss_finite && norm.is_finite() {
            self.t += 1;
        }
        Ok(norm)
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

    /// The tail's trailing arrays for the next step ([`TRAILING`]).
    fn trailing(&self, denom: f32, loss_finite: bool, max: Option<f64>, lr: f32) -> Vec<Array> {
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
            scalar(if loss_finite { 1.0 } else { 0.0 }),
        ]
    }
}
