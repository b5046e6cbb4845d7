//! What `--model` and `--adapter` name: a model directory or a `.gguf` file (imported once
//! into a cache directory), and an adapter directory layered over the model.

use std::path::{Path, PathBuf};

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::{gguf, Model, Tokenizer};

use super::ModelArgs;

/// Where imported GGUF files are kept: `$MLXTUNE_CACHE_DIR`, else the user's cache folder.
fn cache_root() -> PathBuf {
    let base = std::env::var_os("MLXTUNE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("mlxtune")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mlxtune")))
        .unwrap_or_else(|| std::env::temp_dir().join("mlxtune"));
    base.join("gguf")
}

/// The model directory `--model` stands for (a GGUF file is imported first).
pub fn model_dir(model: &Path) -> anyhow::Result<PathBuf> {
    if gguf::is_gguf(model) {
        return Ok(gguf::cached_import(model, &cache_root())?);
    }
    Ok(model.to_path_buf())
}

/// Loads the model (directory or GGUF) and its tokenizer.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<(Model, Tokenizer)> {
    let dir = model_dir(&args.model)?;
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
    if let Some(dir) = adapter {
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
