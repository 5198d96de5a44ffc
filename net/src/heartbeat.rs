//! Coalesced heartbeats: the payload of a `Heartbeats` frame. One message carries, for one
//! node pair, the heartbeats and heartbeat responses of many groups, so thousands of idle
//! groups cost one small frame per heartbeat interval instead of one message each (Redpanda's
//! heartbeat_manager and CockroachDB's coalesced heartbeats are the model). The node does the
//! coalescing with [`HeartbeatBatch::push`] and hands each group its own message back with
//! [`HeartbeatBatch::into_messages`].
//!
//! Encoding (all little-endian):
//! ```text
//! heartbeats = { u64 from | u64 to | u32 h | h * { u64 group | u64 term | u64 commit | u64 read_seq | u8 quiesce }
//!                                  | u32 r | r * { u64 group | u64 term | u64 read_seq } }
//! ```
//!
//! A batch is sent every heartbeat interval to every peer node even when it is empty: it is
//! also the node-pair liveness beat that keeps quiet groups quiet (docs/raft.md,
//! "Quiescence of idle groups").

use tern_raft::message::{Message, MessageBody, NodeId, NO_NODE};

use crate::cursor::Cursor;
use crate::error::DecodeError;
use crate::GroupId;

const HEARTBEAT_BYTES: usize = 8 * 4 + 1;
const RESPONSE_BYTES: usize = 8 * 3;

/// One group's `Heartbeat` inside a [`HeartbeatBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupHeartbeat {
    pub group: GroupId,
    pub term: u64,
    pub commit: u64,
    pub read_seq: u64,
    pub quiesce: bool,
}

/// One group's `HeartbeatResp` inside a [`HeartbeatBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupHeartbeatResp {
    pub group: GroupId,
    pub term: u64,
    pub read_seq: u64,
}

/// The heartbeats and responses of many groups from node `from` to node `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatBatch {
    pub from: NodeId,
    pub to: NodeId,
    pub heartbeats: Vec<GroupHeartbeat>,
    pub responses: Vec<GroupHeartbeatResp>,
}

impl HeartbeatBatch {
    pub fn new(from: NodeId, to: NodeId) -> Self {
        HeartbeatBatch {
            from,
            to,
            heartbeats: Vec::new(),
            responses: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heartbeats.is_empty() && self.responses.is_empty()
    }

    pub fn len(&self) -> usize {
        self.heartbeats.len() + self.responses.len()
    }

    /// Adds `message` if it is a heartbeat or heartbeat response between this batch's two
    /// nodes and returns `None`; otherwise gives it back, to be sent as it is.
    #[must_use = "a message given back must still be sent"]
    pub fn push(&mut self, group: GroupId, message: Message) -> Option<Message> {
        if message.from != self.from || message.to != self.to {
            return Some(message);
        }
        match message.body {
            MessageBody::Heartbeat {
                commit,
                read_seq,
                quiesce,
            } => self.heartbeats.push(GroupHeartbeat {
                group,
                term: message.term,
                commit,
                read_seq,
                quiesce,
            }),
            MessageBody::HeartbeatResp { read_seq } => self.responses.push(GroupHeartbeatResp {
                group,
                term: message.term,
                read_seq,
            }),
            _ => return Some(message),
        }
        None
    }

    /// The per-group messages this batch stands for, heartbeats first.
    pub fn into_messages(self) -> impl Iterator<Item = (GroupId, Message)> {
        let (from, to) = (self.from, self.to);
        let heartbeats = self.heartbeats.into_iter().map(move |h| {
            let body = MessageBody::Heartbeat {
                commit: h.commit,
                read_seq: h.read_seq,
                quiesce: h.quiesce,
            };
            (
                h.group,
                Message {
                    from,
                    to,
                    term: h.term,
                    body,
                },
            )
        });
        let responses = self.responses.into_iter().map(move |r| {
            let body = MessageBody::HeartbeatResp {
                read_seq: r.read_seq,
            };
            (
                r.group,
                Message {
                    from,
                    to,
                    term: r.term,
                    body,
                },
            )
        });
        heartbeats.chain(responses)
    }

    /// Bytes of the encoded payload.
    pub fn encoded_bytes(&self) -> usize {
        8 + 8
            + 4
            + self.heartbeats.len() * HEARTBEAT_BYTES
            + 4
            + self.responses.len() * RESPONSE_BYTES
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let count =
            |n: usize| u32::try_from(n).expect("a heartbeat batch is bounded by the frame size");
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&count(self.heartbeats.len()).to_le_bytes());
        for h in &self.heartbeats {
            for value in [h.group, h.term, h.commit, h.read_seq] {
                out.extend_from_slice(&value.to_le_bytes());
            }
            out.push(u8::from(h.quiesce));
        }
        out.extend_from_slice(&count(self.responses.len()).to_le_bytes());
        for r in &self.responses {
            for value in [r.group, r.term, r.read_seq] {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }

    /// Decodes a payload; node ids must be non-zero and distinct.
    pub fn decode(payload: &[u8]) -> Result<HeartbeatBatch, DecodeError> {
        let mut cur = Cursor::new(payload);
        let from = cur.u64("from")?;
        let to = cur.u64("to")?;
        if from == NO_NODE || to == NO_NODE || from == to {
            return Err(DecodeError::Invalid(format!(
                "heartbeats from {from} to {to}"
            )));
        }
        let count = cur.count("heartbeat", HEARTBEAT_BYTES)?;
        let mut heartbeats = Vec::with_capacity(count);
        for _ in 0..count {
            heartbeats.push(GroupHeartbeat {
                group: cur.u64("group")?,
                term: cur.u64("term")?,
                commit: cur.u64("commit")?,
                read_seq: cur.u64("read_seq")?,
                quiesce: cur.bool("quiesce")?,
            });
        }
        let count = cur.count("heartbeat response", RESPONSE_BYTES)?;
        let mut responses = Vec::with_capacity(count);
        for _ in 0..count {
            responses.push(GroupHeartbeatResp {
                group: cur.u64("group")?,
                term: cur.u64("term")?,
                read_seq: cur.u64("read_seq")?,
            });
        }
        cur.finish("heartbeats")?;
        Ok(HeartbeatBatch {
            from,
            to,
            heartbeats,
            responses,
        })
    }
}
