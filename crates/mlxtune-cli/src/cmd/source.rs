//! What `--model` and `--adapter` name: a model directory or a `.gguf` file (imported once
//! into a cache directory), and an adapter directory layered over the model.

use std::path::Path;

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::{gguf, Model, Tokenizer};

use super::ModelArgs;

/// Loads the model (directory, GGUF, or a name in the model registry) and its tokenizer.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<(Model, Tokenizer)> {
    let (dir, _) = super::registry::model_and_adapter(&args.model)?;
    let dir = gguf::resolve_model_path(&dir)?;
    let model = Model::load(&dir, &args.load_options()?)?;
    let tok = Tokenizer::from_dir(&dir, Some(&model.spec.tokens()))?;
    Ok((model, tok))
}

/// Loads the model and layers `adapter` over it (unfused: a quantized base stays
/// quantized, exactly as in training).
pub fn load_with_adapter(
    args: &ModelArgs,
    adapter: Option<&Path>,
) -> anyhow::Result<(Model, Tokenizer)> {
    let (mut model, tok) = args.load()?;
    // A fine-tuned registry id brings its adapter; `--adapter` overrides it.
    let from_registry = match adapter {
        Some(_) => None,
        None => super::registry::model_and_adapter(&args.model)?.1,
    };
    if let Some(dir) = adapter.or(from_registry.as_deref()) {
        let a = Adapter::load(dir)?;
        a.attach(&mut model)?;
        tracing::info!(
            modules = a.modules().len(),
            dora = a.dora,
            "adapter from {} attached",
            a.dir.display()
        );
    }
    Ok((model, tok))
}
