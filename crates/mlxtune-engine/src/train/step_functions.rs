//! The step's loss-and-gradient functions: one per attention reach of packed rows.
//!
//! A packed batch's attention shapes depend on its data (how far back each block of
//! queries must look to see its examples: `models/packed_attention.rs`), and a compiled
//! function is traced once per input shape, so each reach gets its own function, made the
//! first time a batch needs it. Rows of a length split into `b` blocks have at most `b`
//! reaches; batches that are not packed all use one function.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use mlx_rs::Array;

use super::step::{compiled_loss_and_grad, loss_and_grad, StepOptions};
use crate::data::batch::TrainBatch;
use crate::error::Result;
use crate::models::packed_attention::{block_for, reach_for};
use crate::models::ModelSpec;
use crate::weights::Weights;

/// `f(args) -> ([loss_sum · scale], gradients)`.
pub type LossAndGrad = Box<dyn FnMut(&[Array]) -> mlx_rs::error::Result<(Vec<Array>, Vec<Array>)>>;

/// What a step's functions are made from, and those made so far.
pub struct StepFunctions {
    model: ModelSpec,
    base: Weights,
    names: Vec<String>,
    opts: StepOptions,
    compile: bool,
    /// Read by each call of a function made without compile (dropout masks).
    pub dropout_seed: Rc<Cell<u64>>,
    /// Packed rows: the least reach a batch's attention is given. The trainer sets it to
    /// its plan's reach, which covers every batch: one compiled step per job (on the H200
    /// about 8 s for LFM2-1.2B) instead of one per reach the batches happen to need.
    pub reach_floor: usize,
    made: HashMap<Option<i32>, LossAndGrad>,
}

impl StepFunctions {
    /// The functions of a model; the one for batches that are not packed is made now (so a
    /// setting that cannot be compiled is reported before any step).
    pub fn new(
        model: &ModelSpec,
        base: Weights,
        names: Vec<String>,
        opts: StepOptions,
        compile: bool,
    ) -> Result<StepFunctions> {
        let mut f = StepFunctions {
            model: model.clone(),
            base,
            names,
            opts,
            compile,
            dropout_seed: Rc::new(Cell::new(0)),
            reach_floor: 0,
            made: HashMap::new(),
        };
        let first = f.make(None)?;
        f.made.insert(None, first);
        Ok(f)
    }

    /// The trainable arrays' names, in argument order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The function for `b`'s attention reach.
    pub fn for_batch(&mut self, b: &TrainBatch) -> Result<&mut LossAndGrad> {
        let reach = attention_reach(b, self.reach_floor)?;
        if !self.made.contains_key(&reach) {
            let f = self.make(reach)?;
            self.made.insert(reach, f);
        }
        Ok(self.made.get_mut(&reach).expect("made above"))
    }

    fn make(&self, reach: Option<i32>) -> Result<LossAndGrad> {
        let opts = StepOptions {
            attention_reach: reach,
            ..self.opts
        };
        let (model, base, names) = (&self.model, self.base.clone(), self.names.clone());
        Ok(if self.compile {
            Box::new(compiled_loss_and_grad(model, base, names, opts)?)
        } else {
            // Leaked once per function: the gradient transform keeps a borrow of it.
            let argnums: &'static [i32] = Vec::leak((0..names.len() as i32).collect());
            let seed = self.dropout_seed.clone();
            Box::new(loss_and_grad(model, base, names, opts, seed, argnums))
        })
    }
}

/// How far before its first query each block of `b`'s attention queries starts its keys:
/// what `b` needs, at least `floor` (None: at 0, or `b` is not packed).
pub fn attention_reach(b: &TrainBatch, floor: usize) -> Result<Option<i32>> {
    let Some(s) = &b.segments else {
        return Ok(None);
    };
    let t = b.inputs.dim(1);
    let block = block_for(t)?;
    let positions = block.max(1) as usize;
    let needed = s.reach(positions).max(floor.next_multiple_of(positions));
    Ok(reach_for(t, block, needed as i32))
}
