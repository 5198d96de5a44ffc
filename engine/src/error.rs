//! Typed errors of the engine. Corruption is a first-class variant that names the file and
//! offset (and the group and index when they are known), so an operator can act on it.

use std::path::PathBuf;

/// Where in a data directory a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub offset: u64,
    /// Group and index of the damaged record, when its header could still be read.
    pub group: Option<u64>,
    pub index: Option<u64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.file.display(), self.offset)?;
        if let Some(g) = self.group {
            write!(f, ", group {g}")?;
        }
        if let Some(i) = self.index {
            write!(f, ", index {i}")?;
        }
        Ok(())
    }
}

/// An OS error as an operator reads it: the errno's name, then its text
/// (`ENOSPC (No space left on device)`); other errors as they display.
pub fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = std::io::Error::from_raw_os_error(code).to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("{:?} ({text})", nix::errno::Errno::from_i32(code))
        }
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {}", errno_text(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An fsync (fdatasync) failed. The shard has stopped: the kernel may have dropped the
    /// dirty pages, so a retry could report success for data that is gone (fail-stop).
    #[error(
        "fsync failed on {path}: {reason}; shard {shard} is stopped (fail-stop, never retried)"
    )]
    FsyncFailed {
        shard: u32,
        path: PathBuf,
        reason: String,
    },

    /// The shard stopped earlier (fsync or write failure); nothing more is accepted.
    #[error("shard {shard} is stopped after an earlier failure: {reason}")]
    ShardStopped { shard: u32, reason: String },

    #[error("corruption: {what} ({at})")]
    Corruption { at: Location, what: String },

    #[error("data directory {path} is locked by another process (lock file {lock}): stop that process first")]
    Locked { path: PathBuf, lock: PathBuf },

    #[error("{path} is not a tern data directory: {why}")]
    NotADataDir { path: PathBuf, why: String },

    #[error("invalid configuration: {key}: {why}")]
    Config { key: &'static str, why: String },

    #[error("group {group}: {why}")]
    InvalidRequest { group: u64, why: String },

    /// A request over a limit of the engine; nothing of it was queued. `limit` names the
    /// limit (a constant or configuration key), `max` is its value, `size` what was asked
    /// (bytes, or records for a record count).
    #[error(
        "group {group}: {what} is {size}, over the limit {limit} = {max}; nothing was written"
    )]
    TooLarge {
        group: u64,
        what: String,
        size: u64,
        limit: &'static str,
        max: u64,
    },

    #[error("group {group}: index {index} is not available ({why})")]
    Unavailable { group: u64, index: u64, why: String },

    #[error("decode error: {0}")]
    Decode(#[from] crate::format::DecodeError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
