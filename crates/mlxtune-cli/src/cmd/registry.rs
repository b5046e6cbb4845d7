//! `--model NAME` when NAME is not a path: the service's model registry (a registered base,
//! a fine-tuned `ft:…` id, an alias of the settings) or a Hugging Face id — resolved exactly
//! as the service resolves it, from the service's settings (`MLXTUNE_CONFIG_DIR`, default
//! `config/`) and database.

use std::path::{Path, PathBuf};

use mlxtune_server::registry::{resolve_in, Registry, Resolved};
use mlxtune_server::{db, hub, Settings};

/// The directory (and adapter) `name` stands for.
pub fn resolve(name: &str) -> anyhow::Result<Resolved> {
    let config_dir =
        PathBuf::from(std::env::var_os("MLXTUNE_CONFIG_DIR").unwrap_or_else(|| "config".into()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = match Settings::load(&config_dir) {
        Ok(s) => s,
        Err(_) if hub::is_repo_id(name) => return rt.block_on(from_hub(name)),
        Err(e) => anyhow::bail!(
            "--model {name}: not a file or directory, and no model registry to look it up in ({}: {e})",
            config_dir.display()
        ),
    };
    let location = settings.database();
    if matches!(&location, db::Location::Sqlite(path) if !path.exists()) {
        if hub::is_repo_id(name) {
            return rt.block_on(from_hub(name));
        }
        anyhow::bail!(
            "--model {name}: not a file or directory, and the registry {location:?} does not exist yet"
        );
    }
    rt.block_on(async {
        let pool = db::connect(&location).await?;
        let reg = Registry {
            db: &pool,
            settings: &settings,
        };
        resolve_in(reg, name, "--model")
            .await
            .map_err(|e| anyhow::anyhow!("--model {name}: {}", e.message))
    })
}

async fn from_hub(repo: &str) -> anyhow::Result<Resolved> {
    let dir = hub::download(repo, &hub::HubConfig::from_env(), None).await?;
    Ok(Resolved {
        id: repo.to_string(),
        dir,
        adapter: None,
    })
}

/// `model` as given when it is a path; else what the registry says.
pub fn model_and_adapter(model: &Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if model.exists() {
        return Ok((model.to_path_buf(), None));
    }
    let r = resolve(&model.to_string_lossy())?;
    Ok((r.dir, r.adapter))
}
