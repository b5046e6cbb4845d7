pub mod bench;
pub mod choices;
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

use mlxtune_engine::{LoadOptions, Model, QuantSpec, Tokenizer};

/// Model-loading flags shared by the subcommands that load one.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, env = "MLXTUNE_MODEL_DIR")]
    pub model: PathBuf,
    /// Compute dtype. Default: f32 on the CPU (MLX's CPU half precision is slow), the
    /// checkpoint's own on a GPU.
    #[arg(long, value_enum)]
    pub dtype: Option<choices::DtypeArg>,
    /// Quantize linear layers on load to this many bits.
    #[arg(long, value_enum)]
    pub quantize_bits: Option<choices::Bits>,
    /// Group size of quantization (32, 64 or 128).
    #[arg(long, default_value_t = 64, value_parser = group_size)]
    pub group_size: i32,
}

impl ModelArgs {
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let dtype = match self.dtype {
            Some(d) => Some(d.dtype()),
            None if mlxtune_engine::runtime::current_device() == "cpu" => Some(mlx_rs_dtype_f32()),
            None => None,
        };
        let quantize = self.quantize_bits.map(|bits| QuantSpec {
            group_size: self.group_size,
            bits: bits.get(),
        });
        Ok(LoadOptions { dtype, quantize })
    }

    /// Loads the model (a directory or a `.gguf` file) and its tokenizer.
    pub fn load(&self) -> anyhow::Result<(Model, Tokenizer)> {
        source::load_model(self)
    }
}

/// Prints a command's result: one JSON object with `--json`, else the sentence.
pub fn report(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// `--group-size`: one of MLX's quantization group sizes.
fn group_size(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n @ (32 | 64 | 128)) => Ok(n),
        _ => Err(format!("`{s}`: expected 32, 64 or 128")),
    }
}

fn mlx_rs_dtype_f32() -> mlxtune_engine::weights::Dtype {
    mlxtune_engine::weights::Dtype::Float32
}
