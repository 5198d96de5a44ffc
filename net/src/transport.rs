//! The seam between a shard and the network: one small trait, so the node runs over glommio TCP
//! in production and over anything else (a simulated network, another runtime once glommio 0.9
//! is replaced) without change.

use std::future::Future;
use std::time::Duration;

use tern_raft::message::{Message, NodeId};

use crate::entry_repair::EntryRepair;
use crate::heartbeat::HeartbeatBatch;
use crate::node_report::NodeReport;
use crate::recovery_stream::RecoveryMessage;
use crate::GroupId;

/// What a shard sends to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    Raft(GroupId, Message),
    /// Coalesced heartbeats of this shard's groups for the peer.
    Heartbeats(HeartbeatBatch),
    /// A request for, or a copy of, a damaged entry (one frame each).
    Repair(EntryRepair),
    /// This node's addresses and the groups of this shard it leads (`node_report`).
    Report(NodeReport),
    /// A recovery-stream fetch, chunk or refusal (one frame each).
    Recovery(RecoveryMessage),
}

/// What a shard receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Messages from `from` (every one has `message.from == from` and `message.to` == this
    /// node: the transport checked). Whether each group exists is the receiver's check.
    Raft {
        from: NodeId,
        messages: Vec<(GroupId, Message)>,
    },
    /// Coalesced heartbeats from `batch.from` to this node.
    Heartbeats(HeartbeatBatch),
    /// A repair query or answer from `from()` to this node (the transport checked both).
    Repair(EntryRepair),
    /// A report from `report.from` to this node.
    Report(NodeReport),
    /// A recovery-stream message from `from()` to this node (the transport checked both).
    Recovery(RecoveryMessage),
    /// Messages to `peer` could not be delivered (connect failed, refused, or the connection
    /// broke) and were dropped: the caller reports it to Raft (`report_unreachable`), which
    /// then probes the peer instead of pipelining to it.
    Unreachable { peer: NodeId },
}

/// Why [`PeerTransport::send`] did not queue a message. Dropping a Raft message is always safe:
/// Raft retransmits (the leader resends from its progress, elections time out and restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no address known for node {0}")]
    UnknownPeer(NodeId),
    #[error("send queue to node {0} is full; message dropped")]
    QueueFull(NodeId),
    #[error("message of {bytes} bytes to node {to} cannot fit in one frame")]
    TooLarge { to: NodeId, bytes: usize },
}

/// Counters of one shard's transport, read by metrics. They only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub messages_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub messages_received: u64,
    /// Messages refused by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the peer was unreachable or the connection broke.
    pub dropped_unreachable: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub handshakes_refused: u64,
    /// Inbound connections closed for a frame or message that did not decode or validate.
    pub inbound_errors: u64,
}

/// A shard's view of the network. Runs on the shard's own executor; nothing crosses shards.
pub trait PeerTransport {
    /// Queues `outbound` for `to` and returns at once. Never waits: a full queue drops the
    /// message and says so (counted in [`TransportStats::dropped_queue_full`]).
    fn send(&self, to: NodeId, outbound: Outbound) -> Result<(), SendError>;

    /// The next received batch or signal; `None` once the transport is closed.
    fn next_event(&self) -> impl Future<Output = Option<PeerEvent>>;

    fn stats(&self) -> TransportStats;
}

/// Limits and timings of the TCP transport. Defaults are what a 3-5 node cluster on a LAN wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Messages queued to one peer before `send` drops. Default 4096.
    pub send_queue_messages_max: usize,
    /// Encoded bytes queued to one peer before `send` drops. Default 64 MiB (a few full
    /// pipelines of 1 MiB appends for many groups).
    pub send_queue_bytes_max: usize,
    /// Payload bytes packed into one frame by the writer (one message may exceed it, up to
    /// the protocol maximum). Default 1 MiB.
    pub frame_batch_bytes_max: usize,
    /// Received events queued for the shard before readers stop reading (TCP flow control then
    /// pushes back on the sender, whose queue drops). Each event is one frame, so the memory
    /// they hold is at most this many frames: senders pack frames up to their
    /// `frame_batch_bytes_max` (1 MiB), and Raft's flow control (`inflight_bytes_max`) keeps
    /// far less than that in flight per follower. Default 256.
    pub inbound_events_max: usize,
    /// Handshakes waiting for their shard to take them. Default 64.
    pub handoff_queue_max: usize,
    /// Bounds the TCP connect. Default 1 s.
    pub connect_timeout: Duration,
    /// Bounds each read and write of the handshake. Default 2 s.
    pub handshake_timeout: Duration,
    /// A write that makes no progress for this long breaks the connection. Default 5 s.
    pub write_timeout: Duration,
    /// First reconnect delay, doubled after every failure up to `reconnect_delay_max`.
    /// Default 50 ms.
    pub reconnect_delay_min: Duration,
    /// Default 2 s.
    pub reconnect_delay_max: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            send_queue_messages_max: 4096,
            send_queue_bytes_max: 64 << 20,
            frame_batch_bytes_max: 1 << 20,
            inbound_events_max: 256,
            handoff_queue_max: 64,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(2),
        }
    }
}

impl TransportConfig {
    /// Refuses values the transport cannot work with, naming the key.
    pub fn validate(&self) -> Result<(), crate::NetError> {
        let bad = |key: &'static str, reason: &str| {
            Err(crate::NetError::Config {
                key,
                reason: reason.to_string(),
            })
        };
        if self.send_queue_messages_max == 0 {
            return bad("send_queue_messages_max", "must be at least 1");
        }
        if self.send_queue_bytes_max < crate::constants::FRAME_PAYLOAD_BYTES_MAX {
            return bad(
                "send_queue_bytes_max",
                "must hold at least one maximum-size frame (16 MiB)",
            );
        }
        if self.frame_batch_bytes_max == 0
            || self.frame_batch_bytes_max > crate::constants::FRAME_PAYLOAD_BYTES_MAX
        {
            return bad("frame_batch_bytes_max", "must be 1 .. 16 MiB");
        }
        if self.inbound_events_max == 0 {
            return bad("inbound_events_max", "must be at least 1");
        }
        if self.handoff_queue_max == 0 {
            return bad("handoff_queue_max", "must be at least 1");
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("reconnect_delay_min", self.reconnect_delay_min),
        ] {
            if value.is_zero() {
                return bad(key, "must be more than 0");
            }
        }
        if self.reconnect_delay_max < self.reconnect_delay_min {
            return bad(
                "reconnect_delay_max",
                "must be at least reconnect_delay_min",
            );
        }
        Ok(())
    }
}
