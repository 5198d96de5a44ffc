//! tern-net: the peer protocol and transport between tern nodes (and, later, the client
//! library and HTTP endpoints).
//!
//! Reading order:
//! 1. `frame.rs` — the frame every byte travels in (length, CRC32C, version, type).
//! 2. `message_codec.rs`, `heartbeat.rs`, `handshake.rs`, `entry_repair.rs`,
//!    `recovery_stream.rs` — the payloads;
//!    `peer_frame.rs` ties
//!    a frame type to its payload codec.
//! 3. `transport.rs` — the trait a shard uses ([`PeerTransport`]), its limits and counters.
//! 4. `tcp/` — the glommio TCP implementation: acceptor thread, per-shard connections.
//! 5. `listen.rs` — binding listeners without silently sharing a port with another process.
//! 6. `records.rs` — Kafka v2 record batches, the partition payload (node and client share it).
//! 7. `kafka_client/` — the Kafka-protocol client used by the CLI, the tests and the bench.
//!
//! The byte layouts are specified in `docs/format.md`, "Wire format (peer protocol)".
#![forbid(unsafe_code)]

pub mod constants;
mod cursor;
pub mod entry_repair;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod kafka_client;
pub mod listen;
pub mod message_codec;
pub mod node_report;
pub mod peer_frame;
pub mod records;
pub mod recovery_stream;
pub mod tcp;
pub mod transport;
pub mod view;

/// A Raft group's id (a partition, or the controller: group 0).
pub type GroupId = u64;

pub use entry_repair::{EntryAnswer, EntryId, EntryRepair};
pub use error::{DecodeError, FrameError, ListenError, NetError, WireError};
pub use handshake::{Hello, LocalIdentity, Refusal, RefuseReason};
pub use heartbeat::{GroupHeartbeat, GroupHeartbeatResp, HeartbeatBatch};
pub use node_report::{LedGroup, NodeAddrs, NodeReport};
pub use peer_frame::PeerFrame;
pub use recovery_stream::{RecoveryChunk, RecoveryMessage, RefuseReason as RecoveryRefuseReason};
pub use tcp::{PeerDirectory, PeerNetwork, ShardPeerSetup, TcpTransport};
pub use transport::{
    Outbound, PeerEvent, PeerTransport, SendError, TransportConfig, TransportStats,
};
pub use view::{query_view, ClusterView, SharedView, ViewQueryError};
