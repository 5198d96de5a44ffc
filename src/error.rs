//! Errors of the operator CLI and how they map to exit codes.

use std::path::PathBuf;

/// Exit codes, documented in `tern --help` and docs/operations/recovery.md.
pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_PROBLEMS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;
/// stdout was closed by its reader (`| head`): the command stopped quietly. 128 + SIGPIPE,
/// the status a shell reports for `grep` or `cat` in the same place.
pub const EXIT_STDOUT_CLOSED: u8 = 141;

/// Anything that stops a command before it could check or repair (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(tern_engine::Error),
    #[error("{0}")]
    Usage(String),
    #[error("data directory {path} is locked by {holder} (lock file {lock}): stop it first")]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("group {group} is unknown: {path} holds no record of it")]
    UnknownGroup { group: u64, path: PathBuf },
    #[error("import of group {group} failed: {cause}; {outcome}")]
    ImportFailed {
        group: u64,
        cause: Box<CliError>,
        outcome: String,
    },
    /// The reader of stdout went away; not reported (see `output.rs`).
    #[error("stdout closed")]
    StdoutClosed,
    #[error("I/O error on {path}: {}", tern_engine::error::errno_text(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] tern_net::kafka_client::ClientError),
    #[error(transparent)]
    Http(#[from] crate::commands::online::http_client::HttpError),
    #[error("{path}: {source}")]
    Export {
        path: PathBuf,
        #[source]
        source: tern_engine::export::ExportError,
    },
}

impl From<tern_engine::Error> for CliError {
    /// The engine's "locked" error is completed with who holds the lock.
    fn from(e: tern_engine::Error) -> Self {
        match e {
            tern_engine::Error::Locked { path, lock } => CliError::Locked {
                holder: tern_engine::engine::lock_holder(&lock),
                path,
                lock,
            },
            e => CliError::Engine(e),
        }
    }
}

impl CliError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => crate::commands::online::client_exit_code(e),
            CliError::Http(
                crate::commands::online::http_client::HttpError::Unreachable { .. }
                | crate::commands::online::http_client::HttpError::Incomplete { .. },
            ) => crate::commands::online::EXIT_UNREACHABLE,
            CliError::Http(_) => crate::commands::online::EXIT_REFUSED,
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
