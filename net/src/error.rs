//! Typed errors of the peer protocol. Every one of them closes the connection it came from
//! (with a log line naming the peer); none of them is a panic.

use std::net::SocketAddr;

/// A frame that cannot be trusted: checked before its payload is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated frame: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("frame payload of {payload_bytes} bytes exceeds the maximum of {payload_bytes_max}")]
    Oversize {
        payload_bytes: usize,
        payload_bytes_max: usize,
    },
    #[error("frame checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("peer protocol version {version} is not supported (this node speaks {supported})")]
    Version { version: u16, supported: u16 },
    #[error("unknown frame type {frame_type}")]
    UnknownType { frame_type: u16 },
}

/// A frame whose checksum held but whose payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: {needed} bytes needed, {available} available")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what} count {count} cannot fit in the {remaining} bytes left")]
    CountTooLarge {
        what: &'static str,
        count: usize,
        remaining: usize,
    },
    #[error("{what} is {value}, not a boolean (0 or 1)")]
    BadBool { what: &'static str, value: u8 },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u16 },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("a {what} frame is not allowed {when}")]
    UnexpectedFrame {
        what: &'static str,
        when: &'static str,
    },
}

/// Anything that makes a received frame unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Start-up errors of a listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{addr} is already in use (another process listens on it?): {source}")]
    AddrInUse {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Errors of the peer transport's set-up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("invalid transport configuration: {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("peer transport I/O: {0}")]
    Io(#[from] std::io::Error),
}
