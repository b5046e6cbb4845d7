use std::path::PathBuf;

use mlxtune_server::{Application, Settings};

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding default.toml (and <MLXTUNE_ENV>.toml).
    #[arg(long, default_value = "config")]
    config_dir: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let settings = Settings::load(&a.config_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = Application::build(settings).await?;
        eprintln!(
            "mlxtune serving on port {} (backend {})",
            app.port(),
            mlxtune_engine::runtime::backend()
        );
        app.run_until_stopped().await
    })
}
