pub mod bench;
pub mod eval;
pub mod export;
pub mod fuse;
pub mod generate;
pub mod info;
pub mod launch;
pub mod plot;
pub mod progress;
pub mod quantize;
pub mod registry;
pub mod serve;
pub mod source;
pub mod train;
pub mod train_setup;

use std::path::PathBuf;

use mlxtune_engine::{weights, LoadOptions, Model, QuantSpec, Tokenizer};

/// Model-loading flags shared by the subcommands that load one.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Compute dtype: f32, bf16 or f16. Default: f32 on the CPU (MLX's CPU half
    /// precision is slow), the checkpoint's own on a GPU.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Quantize linear layers on load to this many bits (4 or 8).
    #[arg(long)]
    pub quantize_bits: Option<i32>,
    /// Group size of on-load quantization.
    #[arg(long, default_value_t = 64)]
    pub group_size: i32,
}

impl ModelArgs {
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let dtype = match &self.dtype {
            Some(d) => Some(weights::parse_dtype(d)?),
            None if mlxtune_engine::runtime::current_device() == "cpu" => Some(mlx_rs_dtype_f32()),
            None => None,
        };
        let quantize = self.quantize_bits.map(|bits| QuantSpec {
            group_size: self.group_size,
            bits,
        });
        Ok(LoadOptions { dtype, quantize })
    }

    /// Loads the model (a directory or a `.gguf` file) and its tokenizer.
    pub fn load(&self) -> anyhow::Result<(Model, Tokenizer)> {
        source::load_model(self)
    }
}

fn mlx_rs_dtype_f32() -> mlxtune_engine::weights::Dtype {
    mlxtune_engine::weights::Dtype::Float32
}
