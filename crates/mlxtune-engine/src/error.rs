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
}

/// Result alias of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<mlx_rs::error::Exception> for EngineError {
    fn from(e: mlx_rs::error::Exception) -> Self {
        EngineError::Mlx(e.what().to_string())
    }
}

impl From<mlx_rs::error::IoError> for EngineError {
    fn from(e: mlx_rs::error::IoError) -> Self {
        EngineError::Mlx(e.to_string())
    }
}

impl EngineError {
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
