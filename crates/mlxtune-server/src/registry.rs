//! What a model name stands for: a registered model (base or fine-tuned, through the
//! settings' aliases), a directory or `.gguf` file under the model roots, or a Hugging Face
//! id (downloaded on first use and registered). Jobs, inference and `/v1/models` all
//! resolve names here.

use std::path::{Path, PathBuf};

use crate::api::{Lineage, ModelKind, ModelObject};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::hub;
use crate::settings::Settings;
use crate::validate::confine;

/// A model ready to load: its directory and, for a fine-tuned adapter, the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The registry id (or the name as given, for a path).
    pub id: String,
    pub dir: PathBuf,
    pub adapter: Option<PathBuf>,
}

/// The registry: the database's `models` and the settings (aliases, roots, downloads).
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    pub db: &'a crate::db::Db,
    pub settings: &'a Settings,
}

/// The name after the settings' aliases.
pub fn aliased<'a>(settings: &'a Settings, name: &'a str) -> &'a str {
    settings
        .models
        .aliases
        .get(name)
        .map_or(name, String::as_str)
}

/// Resolves `name` in `reg`; errors name `param`.
pub async fn resolve_in(reg: Registry<'_>, name: &str, param: &str) -> ApiResult<Resolved> {
    let state = reg;
    let name = aliased(state.settings, name);
    if let Some(m) = db::get_model(state.db, name).await? {
        return Box::pin(resolve_registered(state, m, param)).await;
    }
    if let Ok(dir) = confine(name, &state.settings.paths.model_roots, param) {
        return Ok(Resolved {
            id: name.to_string(),
            dir: local_model_dir(state, &dir, param).await?,
            adapter: None,
        });
    }
    if hub::is_repo_id(name) && state.settings.models.download {
        let dir = download_base(state, name, param).await?;
        return Ok(Resolved {
            id: name.to_string(),
            dir,
            adapter: None,
        });
    }
    Err(ApiError::not_found_param(
        param,
        &format!(
            "model `{name}` (not registered, not under the model roots, not a Hugging Face id)"
        ),
    ))
}

async fn resolve_registered(
    state: Registry<'_>,
    m: ModelObject,
    param: &str,
) -> ApiResult<Resolved> {
    match (m.kind, &m.lineage) {
        (ModelKind::FineTuned, Some(l)) => fine_tuned(state, &m.id, l, param).await,
        _ => {
            let dir = match &m.path {
                Some(p) => PathBuf::from(p),
                None => download_base(state, &m.source, param).await?,
            };
            Ok(Resolved {
                id: m.id,
                dir,
                adapter: None,
            })
        }
    }
}

async fn fine_tuned(
    state: Registry<'_>,
    id: &str,
    l: &Lineage,
    param: &str,
) -> ApiResult<Resolved> {
    let l = &crate::artifacts::lineage_here(state.settings, l).await?;
    if let Some(model) = &l.fused_path {
        return Ok(Resolved {
            id: id.to_string(),
            dir: PathBuf::from(model),
            adapter: None,
        });
    }
    let base = Box::pin(resolve_in(state, &l.base_model, param)).await?;
    if base.adapter.is_some() {
        return Err(ApiError::invalid(
            param,
            format!("`{id}` adapts `{}`, itself an adapter: stacked adapters are not served; fuse the base first", l.base_model),
        ));
    }
    Ok(Resolved {
        id: id.to_string(),
        dir: base.dir,
        adapter: l.adapter_path.as_ref().map(PathBuf::from),
    })
}

/// A directory, or a `.gguf` file imported once into the data directory's cache.
async fn local_model_dir(state: Registry<'_>, path: &Path, param: &str) -> ApiResult<PathBuf> {
    if !mlxtune_engine::gguf::is_gguf(path) {
        return Ok(path.to_path_buf());
    }
    let cache = state.settings.storage.data_dir.join("cache").join("gguf");
    let file = path.to_path_buf();
    tokio::task::spawn_blocking(move || mlxtune_engine::gguf::cached_import(&file, &cache))
        .await
        .map_err(|e| ApiError::internal("gguf import", e))?
        .map_err(|e| ApiError::invalid(param, e.to_string()))
}

/// Downloads a Hugging Face model into the Hub cache and registers it as a base model.
async fn download_base(state: Registry<'_>, repo: &str, param: &str) -> ApiResult<PathBuf> {
    let dir = hub::download(repo, &hub::HubConfig::from_env(), None)
        .await
        .map_err(|e| ApiError::invalid(param, e.to_string()))?;
    let m = ModelObject {
        id: repo.to_string(),
        object: "model".into(),
        created: db::now(),
        owned_by: "user".into(),
        kind: ModelKind::Base,
        source: repo.to_string(),
        path: Some(dir.display().to_string()),
        lineage: None,
        loaded: false,
    };
    db::insert_model(state.db, &m).await?;
    Ok(dir)
}
