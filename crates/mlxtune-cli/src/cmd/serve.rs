use std::path::PathBuf;

use mlxtune_engine::runtime::Scheduling;
use mlxtune_server::settings::Sources;

use super::choices::RoleArg;
use mlxtune_server::{Application, Settings};

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding default.toml and <MLXTUNE_ENV>.toml, both optional: without them
    /// the built-in defaults apply and data lives in a per-user directory.
    #[arg(long, env = "MLXTUNE_CONFIG_DIR", default_value = "config")]
    config_dir: PathBuf,
    /// A settings file read instead of <config-dir>/default.toml (over the built-in
    /// defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.host).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one (overrides server.port).
    #[arg(long)]
    port: Option<u16>,
    /// Where jobs, the database and caches live (overrides storage.data_dir).
    #[arg(long, env = "MLXTUNE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// What this process runs (overrides server.role): the API and workers, the API only,
    /// or workers only; processes of every role may share one data directory
    /// (docs/deploy.md).
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
}

/// The settings the flags select.
pub fn settings(a: &Args) -> anyhow::Result<Settings> {
    let sources = Sources {
        config_dir: a.config_dir.clone(),
        file: a.config.clone(),
    };
    let where_ = a.config.as_ref().unwrap_or(&a.config_dir);
    let mut s = Settings::load_from(&sources)
        .map_err(|e| anyhow::anyhow!("settings ({}): {e}", where_.display()))?;
    if let Some(h) = &a.host {
        s.server.host = h.clone();
    }
    if let Some(p) = a.port {
        s.server.port = p;
    }
    if let Some(d) = &a.data_dir {
        s.storage.data_dir = d.clone();
    }
    if let Some(r) = a.role {
        s.server.role = r.role();
    }
    Ok(s)
}

/// The MLX scheduling `workers.scheduling` asks for. Settings that do not load are
/// reported by [`run`]; until then they mean the memory-lean default.
pub fn scheduling(a: &Args) -> Scheduling {
    settings(a).map_or(Scheduling::Memory, |s| s.workers.scheduling)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let settings = settings(&a)?;
    let host = settings.server.host.clone();
    let data_dir = settings.storage.data_dir.clone();
    let role = settings.server.role;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = Application::build(settings).await?;
        let url_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        eprintln!(
            "mlxtune serving on port {} (backend {}) at http://{url_host}:{}/ (data in {}; role {}, node {})",
            app.port(),
            mlxtune_engine::runtime::backend(),
            app.port(),
            data_dir.display(),
            role.as_str(),
            app.state().node
        );
        app.run_until_stopped().await
    })
}
