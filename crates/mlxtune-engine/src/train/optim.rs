//! Optimizers over named parameters (AdamW, Adam, SGD with momentum, Adafactor), and the
//! learning-rate schedules. State is a map of named arrays, saved with checkpoints.

use std::f64::consts::PI;

use mlx_rs::Array;

use super::spec::{OptimizerKind, ScheduleKind, TrainSpec};
use crate::error::Result;
use crate::weights::Weights;

mod tail;

pub use tail::{EndFigures, QueuedStep, StepEnd};

/// One Adam(W) update of one parameter as a function of arrays, compiled by MLX into fused
/// kernels (one pass over parameter, gradient and moments instead of ~14 separate ones):
/// `[p, g, m, v, b1, 1-b1, b2, 1-b2, eps, lr, c1, c2, decay] -> [p', m', v']`, where `decay`
/// multiplies `p` before the update (AdamW's decoupled weight decay; 1 for none). Every
/// number is an input, so one compiled function serves every step and learning rate.
type AdamFn = Box<dyn FnMut(&[Array]) -> std::result::Result<Vec<Array>, mlx_rs::error::Exception>>;

fn adam_update(a: &[Array]) -> std::result::Result<Vec<Array>, mlx_rs::error::Exception> {
    let [p, g, m, v, b1, nb1, b2, nb2, eps, lr, c1, c2, decay] = a else {
        return Err(mlx_rs::error::Exception::custom(
            "adam_update takes 13 arrays",
        ));
    };
    let m = m.multiply(b1)?.add(g.multiply(nb1)?)?;
    let v = v.multiply(b2)?.add(g.square()?.multiply(nb2)?)?;
    let update = m.divide(c1)?.divide(v.divide(c2)?.sqrt()?.add(eps)?)?;
    let p = p.multiply(decay)?.subtract(update.multiply(lr)?)?;
    Ok(vec![p, m, v])
}

/// The optimizer and its state.
pub struct Optimizer {
    pub kind: OptimizerKind,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    /// Per-parameter moments, named `<slot>.<param>` (`m.`, `v.`, `vr.`, `vc.`).
    pub state: Weights,
    /// Optimizer steps taken (bias correction).
    pub t: u64,
    /// The compiled Adam(W) update, made on first use.
    adam: Option<AdamFn>,
    /// The compiled norm, clipping and update of every array ([`Optimizer::clip_and_step`]).
    tail: Option<AdamFn>,
    /// Compile the Adam(W) update (default); off runs the same operations one by one.
    pub compile_update: bool,
}

fn scalar(x: f32) -> Array {
    Array::from_f32(x)
}

impl Optimizer {
    pub fn new(spec: &TrainSpec) -> Self {
        Optimizer {
            kind: spec.optimizer,
            beta1: spec.beta1 as f32,
            beta2: spec.beta2 as f32,
            eps: spec.eps as f32,
            weight_decay: spec.weight_decay as f32,
            momentum: spec.momentum as f32,
            state: Weights::new(),
            t: 0,
            adam: None,
            tail: None,
            compile_update: true,
        }
    }

    /// Updates `params` in place with `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut Weights, grads: &Weights, lr: f32) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let mut names: Vec<&String> = grads.keys().collect();
        names.sort_by(|a, b| super::order::compare(a, b));
        for name in names {
            let g = &grads[name];
            let p = params
                .get(name)
                .cloned()
                .ok_or_else(|| crate::EngineError::MissingWeight {
                    name: name.to_string(),
                })?;
            let new_p = match self.kind {
                OptimizerKind::AdamW | OptimizerKind::Adam => {
                    let (b1, b2) = (self.beta1, self.beta2);
                    // Adam's weight decay is an L2 term in the gradient; AdamW's is decoupled.
                    let l2 = self.kind == OptimizerKind::Adam && self.weight_decay > 0.0;
                    let g = if l2 {
                        g.add(p.multiply(scalar(self.weight_decay))?)?
                    } else {
                        g.clone()
                    };
                    let zeros = || mlx_rs::ops::zeros_like(&p);
                    let m = match self.state.get(&format!("m.{name}")) {
                        Some(m) => m.clone(),
                        None => zeros()?,
                    };
                    let v = match self.state.get(&format!("v.{name}")) {
                        Some(v) => v.clone(),
                        None => zeros()?,
                    };
                    let decay = if self.kind == OptimizerKind::AdamW && self.weight_decay > 0.0 {
                        1.0 - lr * self.weight_decay
                    } else {
                        1.0
                    };
                    let f: &mut AdamFn = if self.compile_update {
                        self.adam.get_or_insert_with(|| {
                            Box::new(mlx_rs::transforms::compile::compile(adam_update, false))
                        })
                    } else {
                        self.adam.get_or_insert_with(|| Box::new(adam_update))
                    };
                    let mut out = f(&[
                        p,
                        g,
                        m,
                        v,
                        scalar(b1),
                        scalar(1.0 - b1),
                        scalar(b2),
                        scalar(1.0 - b2),
                        scalar(self.eps),
                        scalar(lr),
                        scalar(1.0 - b1.powi(t)),
                        scalar(1.0 - b2.powi(t)),
                        scalar(decay),
                    ])?;
                    let (v, m) = (out.pop(), out.pop());
                    let (Some(p), Some(m), Some(v)) = (out.pop(), m, v) else {
                        return Err(crate::EngineError::Mlx(
                            "adam update returned too little".into(),
                        ));
                    };
                    self.state.insert(format!("m.{name}"), m);
                    self.state.insert(format!("v.{name}"), v);
                    p
                }
                OptimizerKind::Sgd => {
                    let mut g = g.clone();
                    if self.weight_decay > 0.0 {
                        g = g.add(p.multiply(scalar(self.weight_decay))?)?;
                    }
                    if self.momentum > 0.0 {
                        let buf = match self.state.get(&format!("m.{name}")) {
                            Some(b) => b.multiply(scalar(self.momentum))?.add(&g)?,
                            None => g.clone(),
                        };
                        self.state.insert(format!("m.{name}"), buf.clone());
                        g = buf;
                    }
                    p.subtract(g.multiply(scalar(lr))?)?
                }
                OptimizerKind::Adafactor => self.adafactor(name, &p, g, lr)?,
            };
            params.insert(name.clone(), new_p);
        }
        let mut all: Vec<&Array> = params.values().collect();
        all.extend(self.state.values());
        mlx_rs::transforms::eval(all)?;
        Ok(())
    }

    /// Adafactor (Shazeer & Stern 2018) with the given learning rate: factored second
    /// moments for matrices, decay 1 - t^-0.8, update clipping at RMS 1.
    fn adafactor(&mut self, name: &str, p: &Array, g: &Array, lr: f32) -> Result<Array> {
        let decay = 1.0 - (self.t as f32).powf(-0.8);
        let eps1 = 1e-30f32;
        let g2 = g.square()?.add(scalar(eps1))?;
        let update = if p.ndim() == 2 {
            let row = g2.mean_axis(1, false)?;
            let col = g2.mean_axis(0, false)?;
            let vr = match self.state.get(&format!("vr.{name}")) {
                Some(v) => v
                    .multiply(scalar(decay))?
                    .add(row.multiply(scalar(1.0 - decay))?)?,
                None => row,
            };
            let vc = match self.state.get(&format!("vc.{name}")) {
                Some(v) => v
                    .multiply(scalar(decay))?
                    .add(col.multiply(scalar(1.0 - decay))?)?,
                None => col,
            };
            let r = vr.divide(vr.mean(None)?)?.rsqrt()?;
            let c = vc.rsqrt()?;
            let u = g.multiply(r.expand_dims(1)?)?.multiply(c.expand_dims(0)?)?;
            self.state.insert(format!("vr.{name}"), vr);
            self.state.insert(format!("vc.{name}"), vc);
            u
        } else {
            let v = match self.state.get(&format!("v.{name}")) {
                Some(v) => v
                    .multiply(scalar(decay))?
                    .add(g2.multiply(scalar(1.0 - decay))?)?,
                None => g2,
            };
            let u = g.multiply(v.rsqrt()?)?;
            self.state.insert(format!("v.{name}"), v);
            u
        };
        let rms = update.square()?.mean(None)?.sqrt()?;
        let denom = mlx_rs::ops::maximum(&rms, scalar(1.0))?;
        let update = update.divide(&denom)?;
        let mut p = p.clone();
        if self.weight_decay > 0.0 {
            p = p.multiply(scalar(1.0 - lr * self.weight_decay))?;
        }
        Ok(p.subtract(update.multiply(scalar(lr))?)?)
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`.
pub fn learning_rate(spec: &TrainSpec, step: u64, total: u64) -> f64 {
    let total = total.max(1);
    let warmup = spec
        .warmup_steps
        .unwrap_or_else(|| (spec.warmup_ratio * total as f64).round() as u64)
        .min(total);
    let base = spec.learning_rate;
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    let min = base * spec.min_lr_ratio;
    match spec.schedule {
        ScheduleKind::Constant => base,
        ScheduleKind::Linear => min + (base - min) * (1.0 - progress),
        ScheduleKind::Cosine => min + (base - min) * 0.5 * (1.0 + (PI * progress).cos()),
        ScheduleKind::CosineWithRestarts => {
            let cycles = spec.num_cycles as f64;
            let within = (progress * cycles).fract();
            let within = if progress >= 1.0 { 1.0 } else { within };
            min + (base - min) * 0.5 * (1.0 + (PI * within).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::from_value;

    fn spec(schedule: serde_json::Value) -> TrainSpec {
        let c = from_value(serde_json::json!({
            "baseModel": "m", "dataset": { "trainingData": "d" },
            "parameters": { "learningRate": 1.0, "batchSize": 1, "epochs": 1, "sequenceLength": 8 },
            "schedule": schedule
        }))
        .unwrap();
        TrainSpec::from_config(&c).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_rises_linearly_then_cosine_falls_to_the_floor() {
        let s = spec(serde_json::json!({ "warmupSteps": 4, "minLrRatio": 0.1 }));
        let lrs: Vec<f64> = (0..14).map(|t| learning_rate(&s, t, 14)).collect();
        assert!(close(lrs[0], 0.25) && close(lrs[3], 1.0), "{lrs:?}");
        assert!(close(lrs[4], 1.0), "{lrs:?}");
        assert!(close(lrs[9], 0.1 + 0.9 * 0.5 * (1.0 + (PI * 0.5).cos())));
        assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
        assert!(lrs[13] > 0.1 && close(learning_rate(&s, 14, 14), 0.1));
    }

    #[test]
    fn linear_and_constant_schedules() {
        let lin = spec(serde_json::json!({ "type": "linear" }));
        assert!(close(learning_rate(&lin, 0, 10), 1.0));
        assert!(close(learning_rate(&lin, 5, 10), 0.5));
        let constant = spec(serde_json::json!({ "type": "constant", "warmupRatio": 0.5 }));
        assert!(close(learning_rate(&constant, 0, 10), 0.2));
        assert!(close(learning_rate(&constant, 9, 10), 1.0));
    }

    #[test]
    fn restarts_return_to_the_peak_each_cycle() {
        let s = spec(serde_json::json!({ "type": "cosine_with_restarts", "numCycles": 2 }));
        assert!(close(learning_rate(&s, 0, 10), 1.0));
        assert!(close(learning_rate(&s, 5, 10), 1.0));
        assert!(learning_rate(&s, 4, 10) < 0.2);
    }
}
