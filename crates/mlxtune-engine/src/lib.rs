//! mlxtune's engine: MLX models loaded from Hugging Face checkpoints, tokenizers and chat
//! templates, generation, evaluation (and, built on them, training).
//!
//! The engine knows nothing about HTTP, SQL or the command line.

pub mod adapters;
mod closure;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod fuse;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod models;
pub mod runtime;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use error::{EngineError, Result};
pub use mlx_rs;
pub use models::{LoadOptions, Model, ModelSpec, QuantSpec};
pub use tokenizer::Tokenizer;
