//! GGUF, llama.cpp's model file: export of a model (optionally with an adapter fused) with
//! llama.cpp's tensor names, architecture keys and tokenizer metadata, in float or
//! block-quantized types; import of such a file back into a model directory.
//!
//! The file format and the GGML block quantizers come from the `candle-core` crate
//! (Hugging Face's, maintained; its K-quant kernels are ports of ggml's); what is ours is
//! the mapping of our architectures onto llama.cpp's conventions.

pub mod arch;
pub mod cache;
pub mod export;
pub mod hf_tokenizer;
pub mod import;
pub mod import_weights;
pub mod layout;
pub mod names;
pub mod quant;
pub mod to_mlx;
pub mod vocab;

pub use cache::{cached_import, default_cache_root, resolve_model_path};
pub use export::{export_gguf, ExportSummary, Progress};
pub use import::{import_gguf, GgufFile};
pub use quant::GgufQuant;

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
