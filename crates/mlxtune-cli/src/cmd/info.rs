use mlxtune_engine::{models, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mlx_backend": runtime::backend(),
        "device": runtime::current_device(),
        "supported_model_types": models::supported_model_types(),
    });
    if args.json {
        println!("{info}");
    } else {
        println!("mlxtune {}", env!("CARGO_PKG_VERSION"));
        println!("MLX backend: {}", runtime::backend());
        println!("device: {}", runtime::current_device());
        println!("models: {}", models::supported_model_types().join(", "));
    }
    Ok(())
}
