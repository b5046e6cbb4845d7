//! Loaded models for inference, least recently used first out, within a memory budget of
//! weights. A model is loaded once per (directory, adapter); the adapter is layered over
//! the base unfused, exactly as in training. MLX arrays stay on one thread, so the cache
//! lives on the inference thread; it publishes the ids it holds for everyone else.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::{runtime, weights, LoadOptions, Model, Tokenizer};

use crate::registry::Resolved;

/// A model ready to generate with.
pub struct Loaded {
    pub id: String,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Bytes of the weights (and adapter) held.
    pub bytes: u64,
}

type Key = (PathBuf, Option<PathBuf>);

/// The loaded models, most recently used last.
pub struct ModelCache {
    budget: u64,
    entries: Vec<(Key, Rc<Loaded>)>,
    /// The ids held, least recently used first, readable from any thread.
    published: Arc<Mutex<Vec<String>>>,
}

impl ModelCache {
    pub fn new(budget: u64, published: Arc<Mutex<Vec<String>>>) -> ModelCache {
        ModelCache {
            budget,
            entries: Vec::new(),
            published,
        }
    }

    /// The model `r` names, loaded now if it is not.
    pub fn get(&mut self, r: &Resolved) -> mlxtune_engine::Result<Rc<Loaded>> {
        let key: Key = (r.dir.clone(), r.adapter.clone());
        let loaded = match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => self.entries.remove(i).1,
            None => Rc::new(load(r)?),
        };
        self.entries.push((key, loaded.clone()));
        // Evict from the least recently used end; the newest always stays.
        while self.entries.len() > 1 && self.bytes() > self.budget {
            let (_, gone) = self.entries.remove(0);
            tracing::info!(model = %gone.id, "unloading a model over the inference memory budget");
            let _ = runtime::clear_cache();
        }
        self.publish();
        Ok(loaded)
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(|(_, l)| l.bytes).sum()
    }

    fn publish(&self) {
        let ids = self.entries.iter().map(|(_, l)| l.id.clone()).collect();
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = ids;
    }
}

fn load(r: &Resolved) -> mlxtune_engine::Result<Loaded> {
    runtime::init()?;
    // MLX's half precision is slow on the CPU: serve in f32 there, as the CLI does.
    let dtype = (runtime::current_device() == "cpu").then_some(weights::Dtype::Float32);
    let opts = LoadOptions {
        dtype,
        quantize: None,
    };
    let mut model = Model::load(&r.dir, &opts)?;
    if let Some(dir) = &r.adapter {
        let adapter = Adapter::load(dir)?;
        adapter.check(&model.spec)?;
        adapter.attach(&mut model)?;
    }
    let tokenizer = Tokenizer::from_dir(&r.dir, Some(&model.spec.tokens()))?;
    let bytes = model.weights.values().map(|a| a.nbytes() as u64).sum();
    Ok(Loaded {
        id: r.id.clone(),
        model,
        tokenizer,
        bytes,
    })
}
