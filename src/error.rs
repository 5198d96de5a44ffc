//! Errors of the operator CLI and how they map to exit codes.

use std::path::PathBuf;

/// Exit codes, documented in `tern --help` and docs/operations/recovery.md.
pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_PROBLEMS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Anything that stops a command before it could check or repair (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] tern_engine::Error),
    #[error("{0}")]
    Usage(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] tern_net::kafka_client::ClientError),
    #[error("{path}: {source}")]
    Export {
        path: PathBuf,
        #[source]
        source: tern_engine::export::ExportError,
    },
}

impl CliError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => crate::commands::online::client_exit_code(e),
            _ => EXIT_ERROR,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
