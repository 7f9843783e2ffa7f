//! The one error type of the core library: every variant names the file, line, key or tensor
//! that was wrong, so the CLI can print it as is.

use std::path::{Path, PathBuf};

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core. Messages are complete sentences a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON Lines record could not be used (bad JSON, missing or mistyped field, bad UTF-8).
    #[error("{path}:{line}: {message}")]
    Record {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        message: String,
    },
    /// A GGUF file is malformed, truncated or uses something this build does not support.
    #[error("GGUF {path}: {message}")]
    Gguf { path: String, message: String },
    /// A safetensors file is malformed or does not match the model.
    #[error("safetensors {path}: {message}")]
    Safetensors { path: String, message: String },
    /// A tokenizer could not be built or run.
    #[error("tokenizer ({source_name}): {message}")]
    Tokenizer { source_name: String, message: String },
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A model directory or config is missing something or is inconsistent.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// The caller asked for something invalid (bad flag value, unknown strategy, empty input...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error that names the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A record error naming a file and a 1-based line.
    pub fn record(path: impl AsRef<Path>, line: usize, message: impl Into<String>) -> Self {
        Error::Record {
            path: path.as_ref().to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A tokenizer error naming where the tokenizer came from.
    pub fn tokenizer(source_name: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Tokenizer {
            source_name: source_name.into(),
            message: message.to_string(),
        }
    }
}
