//! The engine's error type: one variant per kind of failure, each naming the file,
//! field or line it concerns, so that a user can act on the message alone.

use std::path::{Path, PathBuf};

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file required in a model directory is absent.
    #[error("{dir}: missing {file} ({why})")]
    MissingFile {
        dir: PathBuf,
        file: String,
        why: String,
    },
    /// A configuration value is missing, malformed or unsupported.
    #[error("{file}: field `{field}`: {message}")]
    Config {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// The model architecture is not one we implement.
    #[error("{file}: model_type `{model_type}` is not supported (supported: {supported})")]
    UnsupportedModel {
        file: PathBuf,
        model_type: String,
        supported: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{file}: {message}")]
    Safetensors { file: PathBuf, message: String },
    /// The weights do not match the architecture: every problem, listed once.
    #[error("{dir}: the weights do not match the `{model_type}` architecture:\n  {}", problems.join("\n  "))]
    WeightMismatch {
        dir: PathBuf,
        model_type: String,
        problems: Vec<String>,
    },
    /// The tokenizer (or its chat template) could not be loaded or applied.
    #[error("{file}: {message}")]
    Tokenizer { file: PathBuf, message: String },
    /// A data record is malformed.
    #[error("{file}:{line}: {message}")]
    Data {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// The requested device or backend is not available in this build.
    #[error("{0}")]
    Device(String),
    /// An invalid argument to an engine call.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// MLX reported an error while computing.
    #[error("MLX: {0}")]
    Mlx(String),
    /// MLX could not allocate memory (classified once, where MLX's error arrives).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A value could not be turned into (or read from) JSON.
    #[error("{what}: {message}")]
    Serialization { what: String, message: String },
    /// A weight the computation needs is not among the loaded arrays.
    #[error("weight `{name}` is not loaded")]
    MissingWeight { name: String },
    /// Training diverged: the loss or the gradient norm is not finite.
    #[error("{why} at step {step}; stopping. The last good checkpoint is kept in {}", checkpoints.display())]
    Diverged {
        step: u64,
        why: String,
        checkpoints: PathBuf,
    },
    /// A step stopped between its micro-batches because a pause or cancel arrived.
    #[error("the step was interrupted by a pause or cancel request")]
    Interrupted,
}

/// Result alias of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<mlx_rs::error::Exception> for EngineError {
    fn from(e: mlx_rs::error::Exception) -> Self {
        EngineError::from_mlx_message(e.what().to_string())
    }
}

/// Phrases with which MLX's backends (CPU allocator, Metal, CUDA) report an allocation
/// failure.
const OUT_OF_MEMORY_PHRASES: &[&str] = &[
    "out of memory",
    "bad_alloc",
    "resource limit",
    "unable to allocate",
    "failed to allocate",
    "cudaerrormemoryallocation",
];

impl From<mlx_rs::error::IoError> for EngineError {
    fn from(e: mlx_rs::error::IoError) -> Self {
        EngineError::Mlx(e.to_string())
    }
}

impl EngineError {
    /// An error message from MLX, classified: allocation failures become
    /// [`EngineError::OutOfMemory`], everything else [`EngineError::Mlx`].
    pub fn from_mlx_message(message: String) -> Self {
        let lower = message.to_lowercase();
        if OUT_OF_MEMORY_PHRASES.iter().any(|k| lower.contains(k)) {
            EngineError::OutOfMemory(message)
        } else {
            EngineError::Mlx(message)
        }
    }

    /// A JSON (de)serialization failure of `what`.
    pub fn serialization(what: &str, e: impl std::fmt::Display) -> Self {
        EngineError::Serialization {
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    /// Whether MLX ran out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, EngineError::OutOfMemory(_))
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn config(file: &Path, field: &str, message: impl Into<String>) -> Self {
        EngineError::Config {
            file: file.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_are_classified_as_out_of_memory() {
        for m in [
            "[metal::malloc] Resource limit (499000) exceeded.",
            "std::bad_alloc",
            "CUDA error: cudaErrorMemoryAllocation out of memory",
        ] {
            assert!(
                EngineError::from_mlx_message(m.into()).is_out_of_memory(),
                "{m}"
            );
        }
        let other = EngineError::from_mlx_message("[matmul] shapes (2,3) and (4,5)".into());
        assert!(matches!(other, EngineError::Mlx(_)));
    }
}
