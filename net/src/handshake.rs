//! The handshake: the first frame each way on a peer connection.
//!
//! The dialer sends `Hello`; the acceptor checks it and answers with its own `Hello` (accepted)
//! or with `Refuse` and closes. The dialer checks the answer the same way and, on a mismatch,
//! sends `Refuse` and closes. The dialer sends nothing else before the answer arrives, so the
//! acceptor can hand the socket to the right shard with no bytes buffered.
//!
//! Encoding (all little-endian):
//! ```text
//! Hello  = { u64 cluster_id | u64 node_id | u64 to_node | u32 shard | u32 shard_count
//!          | u16 protocol_version | u16 reserved (0) }                        36 bytes
//! Refuse = { u16 reason | u16 detail_len | detail_len bytes of UTF-8 }
//! ```
//! `to_node` is the node the sender believes it talks to (the dialer: the node it dialed; the
//! acceptor: the dialer), so a wrong address in a peer list is caught on the first connection.

use tern_raft::message::{NodeId, NO_NODE};

use crate::constants::{PROTOCOL_VERSION, REFUSE_DETAIL_BYTES_MAX};
use crate::cursor::Cursor;
use crate::error::DecodeError;

pub const HELLO_BYTES: usize = 36;

/// Who this end of a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub to_node: NodeId,
    /// The shard both ends of this connection serve.
    pub shard: u32,
    /// Shards per node; equal on every node, because a group's shard is a function of it.
    pub shard_count: u32,
    pub protocol_version: u16,
}

impl Hello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.to_node.to_le_bytes());
        out.extend_from_slice(&self.shard.to_le_bytes());
        out.extend_from_slice(&self.shard_count.to_le_bytes());
        out.extend_from_slice(&self.protocol_version.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
    }

    pub fn decode(payload: &[u8]) -> Result<Hello, DecodeError> {
        let mut cur = Cursor::new(payload);
        let hello = Hello {
            cluster_id: cur.u64("cluster_id")?,
            node_id: cur.u64("node_id")?,
            to_node: cur.u64("to_node")?,
            shard: cur.u32("shard")?,
            shard_count: cur.u32("shard_count")?,
            protocol_version: cur.u16("protocol_version")?,
        };
        let reserved = cur.u16("reserved")?;
        if reserved != 0 {
            return Err(DecodeError::Invalid(format!(
                "hello reserved field is {reserved}, not 0"
            )));
        }
        cur.finish("hello")?;
        Ok(hello)
    }
}

/// Why a handshake was refused. The numeric codes are on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RefuseReason {
    ClusterMismatch = 1,
    VersionUnsupported = 2,
    UnexpectedNode = 3,
    ShardOutOfRange = 4,
    ShardCountMismatch = 5,
    /// The receiving shard cannot take another connection now; the dialer retries later.
    Busy = 6,
    /// The first frame was not a well-formed Hello.
    Malformed = 7,
}

impl RefuseReason {
    const ALL: [RefuseReason; 7] = [
        RefuseReason::ClusterMismatch,
        RefuseReason::VersionUnsupported,
        RefuseReason::UnexpectedNode,
        RefuseReason::ShardOutOfRange,
        RefuseReason::ShardCountMismatch,
        RefuseReason::Busy,
        RefuseReason::Malformed,
    ];
}

/// A refused handshake: what is sent back, and what both ends log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("handshake refused ({reason:?}): {detail}")]
pub struct Refusal {
    pub reason: RefuseReason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: RefuseReason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut end = self.detail.len().min(REFUSE_DETAIL_BYTES_MAX);
        while !self.detail.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(self.reason as u16).to_le_bytes());
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&self.detail.as_bytes()[..end]);
    }

    pub fn decode(payload: &[u8]) -> Result<Refusal, DecodeError> {
        let mut cur = Cursor::new(payload);
        let code = cur.u16("refuse reason")?;
        let reason = RefuseReason::ALL
            .into_iter()
            .find(|r| *r as u16 == code)
            .ok_or(DecodeError::UnknownTag {
                what: "refuse reason",
                tag: code,
            })?;
        let len = cur.u16("refuse detail length")? as usize;
        let detail = std::str::from_utf8(cur.bytes(len, "refuse detail")?)
            .map_err(|_| DecodeError::Invalid("refuse detail is not UTF-8".to_string()))?
            .to_string();
        cur.finish("refuse")?;
        Ok(Refusal { reason, detail })
    }
}

/// The facts about this node that a peer's Hello must agree with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalIdentity {
    pub cluster_id: u64,
    pub node_id: NodeId,
    pub shard_count: u32,
}

impl LocalIdentity {
    /// The Hello this node sends on a connection of `shard` to `to_node`.
    pub fn hello(&self, to_node: NodeId, shard: u32) -> Hello {
        Hello {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            to_node,
            shard,
            shard_count: self.shard_count,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// The checks both ends make on the other's Hello. `expected_node` is the node the dialer
    /// dialed (`None` on the accepting side, where `is_known` decides).
    pub fn check(
        &self,
        hello: &Hello,
        expected_node: Option<NodeId>,
        expected_shard: Option<u32>,
        is_known: impl Fn(NodeId) -> bool,
    ) -> Result<(), Refusal> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Refusal::new(
                RefuseReason::VersionUnsupported,
                format!(
                    "peer speaks protocol version {}, node {} speaks {PROTOCOL_VERSION}",
                    hello.protocol_version, self.node_id
                ),
            ));
        }
        if hello.cluster_id != self.cluster_id {
            return Err(Refusal::new(
                RefuseReason::ClusterMismatch,
                format!(
                    "peer is in cluster {:#x}, node {} is in cluster {:#x}",
                    hello.cluster_id, self.node_id, self.cluster_id
                ),
            ));
        }
        if hello.to_node != self.node_id {
            return Err(Refusal::new(
                RefuseReason::UnexpectedNode,
                format!(
                    "peer {} expected node {} at this address, this is node {}",
                    hello.node_id, hello.to_node, self.node_id
                ),
            ));
        }
        let node_ok = hello.node_id != NO_NODE
            && hello.node_id != self.node_id
            && expected_node.is_none_or(|node| node == hello.node_id)
            && is_known(hello.node_id);
        if !node_ok {
            return Err(Refusal::new(
                RefuseReason::UnexpectedNode,
                match expected_node {
                    Some(node) => format!("dialed node {node}, node {} answered", hello.node_id),
                    None => format!(
                        "node {} is not a known peer of node {}",
                        hello.node_id, self.node_id
                    ),
                },
            ));
        }
        if hello.shard_count != self.shard_count {
            return Err(Refusal::new(
                RefuseReason::ShardCountMismatch,
                format!(
                    "peer {} runs {} shards, node {} runs {} (placement needs the same count)",
                    hello.node_id, hello.shard_count, self.node_id, self.shard_count
                ),
            ));
        }
        if hello.shard >= self.shard_count
            || expected_shard.is_some_and(|shard| shard != hello.shard)
        {
            return Err(Refusal::new(
                RefuseReason::ShardOutOfRange,
                format!(
                    "peer {} asks for shard {}, node {} has shards 0..{}",
                    hello.node_id, hello.shard, self.node_id, self.shard_count
                ),
            ));
        }
        Ok(())
    }
}
