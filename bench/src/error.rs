//! The benchmark's error type: every failure names what it was doing and, for I/O, the path.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] tern_engine::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A shard's load generator stopped on an error from the WAL.
    #[error("shard {shard}: {why}")]
    Load { shard: u32, why: String },
    #[error("--{arg}: {why}")]
    Arg { arg: &'static str, why: String },
    /// The reader of stdout went away (`| head`); not reported.
    #[error("stdout closed")]
    StdoutClosed,
    #[error("{0}")]
    Client(#[from] tern_net::kafka_client::ClientError),
    /// The loopback cluster of `recovery --cluster` (cluster.sh, a node) failed.
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
