//! The payload of a `RaftBatch` frame: many `(group, Message)` for one connection.
//!
//! Encoding (all little-endian):
//! ```text
//! batch   = { u32 count | count * message }
//! message = { u64 group | u64 from | u64 to | u64 term | u8 body_tag | body }
//! body by tag:
//!   1 Append        { u64 prev_index | u64 prev_term | u64 commit | u32 n | n * entry }
//!                   entry = { u64 term | u64 index | u8 kind (1 Normal, 2 ConfChange) | u32 len | len bytes }
//!   2 AppendResp    { u64 index | u8 reject | u64 hint_index | u64 hint_term }
//!   3 Heartbeat     { u64 commit | u64 read_seq | u8 quiesce (0 or 1) }
//!   4 HeartbeatResp { u64 read_seq }
//!   5 Vote          { u8 flags (bit 0 pre, bit 1 transfer) | u64 last_index | u64 last_term }
//!   6 VoteResp      { u8 flags (bit 0 pre, bit 1 reject) }
//!   7 Snapshot      { u64 index | u64 term | u64 size_bytes | u32 conf_len | conf | u64 offset | u32 len | len bytes }
//!                   conf = ConfState::encode (tern-raft)
//!   8 SnapshotResp  { u64 index | u64 next_offset }
//!   9 TimeoutNow    { }
//!  10 ReadIndex     { u64 ctx }
//!  11 ReadIndexResp { u64 ctx | u64 index }
//!  12 Rebuilding    { u64 last_index }
//! ```
//!
//! Decoding validates structure so nothing absurd reaches the Raft core: every count is checked
//! against the bytes left before anything is allocated for it; booleans are 0 or 1 and flag
//! bytes have no unknown bits; node ids are non-zero and `from != to`; an Append's entries
//! have contiguous indexes starting at `prev_index + 1`, terms non-decreasing from
//! `prev_term` and at most the message's term, and a ConfChange entry holds a well-formed
//! `ConfState`; a snapshot chunk lies within the snapshot's size and its `ConfState` is well
//! formed. Whether the group exists, and whether `from`/`to` fit the connection, is the
//! receiver's check.

use tern_raft::message::{
    ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta, NO_NODE,
};

use crate::cursor::Cursor;
use crate::error::DecodeError;
use crate::GroupId;

/// `group, from, to, term, body_tag`.
const MESSAGE_HEAD_BYTES: usize = 8 * 4 + 1;
/// `term, index, kind, len`.
const ENTRY_HEAD_BYTES: usize = 8 + 8 + 1 + 4;

mod tag {
    pub const APPEND: u8 = 1;
    pub const APPEND_RESP: u8 = 2;
    pub const HEARTBEAT: u8 = 3;
    pub const HEARTBEAT_RESP: u8 = 4;
    pub const VOTE: u8 = 5;
    pub const VOTE_RESP: u8 = 6;
    pub const SNAPSHOT: u8 = 7;
    pub const SNAPSHOT_RESP: u8 = 8;
    pub const TIMEOUT_NOW: u8 = 9;
    pub const READ_INDEX: u8 = 10;
    pub const READ_INDEX_RESP: u8 = 11;
    pub const REBUILDING: u8 = 12;
}

const FLAG_PRE: u8 = 1;
const FLAG_SECOND: u8 = 2;

const KIND_NORMAL: u8 = 1;
const KIND_CONF_CHANGE: u8 = 2;

/// The bytes `message` takes in a batch: what queues and batching limits count.
pub fn message_encoded_bytes(message: &Message) -> usize {
    MESSAGE_HEAD_BYTES
        + match &message.body {
            MessageBody::Append { entries, .. } => {
                8 * 3
                    + 4
                    + entries
                        .iter()
                        .map(|e| ENTRY_HEAD_BYTES + e.data.len())
                        .sum::<usize>()
            }
            MessageBody::AppendResp { .. } => 8 + 1 + 8 + 8,
            MessageBody::Heartbeat { .. } => 17,
            MessageBody::HeartbeatResp { .. } => 8,
            MessageBody::Vote { .. } => 1 + 16,
            MessageBody::VoteResp { .. } => 1,
            MessageBody::Snapshot { meta, data, .. } => {
                8 * 3 + 4 + conf_encoded_bytes(&meta.conf) + 8 + 4 + data.len()
            }
            MessageBody::SnapshotResp { .. } => 16,
            MessageBody::TimeoutNow => 0,
            MessageBody::ReadIndex { .. } => 8,
            MessageBody::ReadIndexResp { .. } => 16,
            MessageBody::Rebuilding { .. } => 8,
        }
}

fn conf_encoded_bytes(conf: &ConfState) -> usize {
    12 + 8 * (conf.voters.len() + conf.voters_outgoing.len() + conf.learners.len())
}

/// Bytes of a batch payload holding messages of `messages_bytes` in total.
pub fn batch_encoded_bytes(messages_bytes: usize) -> usize {
    4 + messages_bytes
}

/// Appends a batch payload to `out`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    messages: impl ExactSizeIterator<Item = &'a (GroupId, Message)>,
) {
    let count = u32::try_from(messages.len())
        .expect("a batch is bounded by the frame size, far below u32::MAX");
    out.extend_from_slice(&count.to_le_bytes());
    for (group, message) in messages {
        encode_message(out, *group, message);
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len =
        u32::try_from(len).expect("lengths are bounded by the frame size, far below u32::MAX");
    out.extend_from_slice(&len.to_le_bytes());
}

fn flags(first: bool, second: bool) -> u8 {
    (if first { FLAG_PRE } else { 0 }) | (if second { FLAG_SECOND } else { 0 })
}

fn encode_message(out: &mut Vec<u8>, group: GroupId, message: &Message) {
    put_u64(out, group);
    put_u64(out, message.from);
    put_u64(out, message.to);
    put_u64(out, message.term);
    match &message.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.push(tag::APPEND);
            put_u64(out, *prev_index);
            put_u64(out, *prev_term);
            put_u64(out, *commit);
            put_len(out, entries.len());
            for entry in entries {
                put_u64(out, entry.term);
                put_u64(out, entry.index);
                out.push(match entry.kind {
                    EntryKind::Normal => KIND_NORMAL,
                    EntryKind::ConfChange => KIND_CONF_CHANGE,
                });
                put_len(out, entry.data.len());
                out.extend_from_slice(&entry.data);
            }
        }
        MessageBody::AppendResp {
            index,
            reject,
            hint_index,
            hint_term,
        } => {
            out.push(tag::APPEND_RESP);
            put_u64(out, *index);
            out.push(u8::from(*reject));
            put_u64(out, *hint_index);
            put_u64(out, *hint_term);
        }
        MessageBody::Heartbeat {
            commit,
            read_seq,
            quiesce,
        } => {
            out.push(tag::HEARTBEAT);
            put_u64(out, *commit);
            put_u64(out, *read_seq);
            out.push(u8::from(*quiesce));
        }
        MessageBody::HeartbeatResp { read_seq } => {
            out.push(tag::HEARTBEAT_RESP);
            put_u64(out, *read_seq);
        }
        MessageBody::Vote {
            pre,
            last_index,
            last_term,
            transfer,
        } => {
            out.push(tag::VOTE);
            out.push(flags(*pre, *transfer));
            put_u64(out, *last_index);
            put_u64(out, *last_term);
        }
        MessageBody::VoteResp { pre, reject } => {
            out.push(tag::VOTE_RESP);
            out.push(flags(*pre, *reject));
        }
        MessageBody::Snapshot { meta, offset, data } => {
            out.push(tag::SNAPSHOT);
            put_u64(out, meta.index);
            put_u64(out, meta.term);
            put_u64(out, meta.size_bytes);
            let conf = meta.conf.encode();
            put_len(out, conf.len());
            out.extend_from_slice(&conf);
            put_u64(out, *offset);
            put_len(out, data.len());
            out.extend_from_slice(data);
        }
        MessageBody::SnapshotResp { index, next_offset } => {
            out.push(tag::SNAPSHOT_RESP);
            put_u64(out, *index);
            put_u64(out, *next_offset);
        }
        MessageBody::TimeoutNow => out.push(tag::TIMEOUT_NOW),
        MessageBody::ReadIndex { ctx } => {
            out.push(tag::READ_INDEX);
            put_u64(out, *ctx);
        }
        MessageBody::ReadIndexResp { ctx, index } => {
            out.push(tag::READ_INDEX_RESP);
            put_u64(out, *ctx);
            put_u64(out, *index);
        }
        MessageBody::Rebuilding { last_index } => {
            out.push(tag::REBUILDING);
            put_u64(out, *last_index);
        }
    }
}

/// Decodes and validates a batch payload (see the module doc for what is checked).
pub fn decode_batch(payload: &[u8]) -> Result<Vec<(GroupId, Message)>, DecodeError> {
    let mut cur = Cursor::new(payload);
    let count = cur.count("message", MESSAGE_HEAD_BYTES)?;
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(decode_message(&mut cur)?);
    }
    cur.finish("batch")?;
    Ok(messages)
}

fn invalid(message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(message.into())
}

fn decode_flags(cur: &mut Cursor<'_>, what: &'static str) -> Result<(bool, bool), DecodeError> {
    let value = cur.u8(what)?;
    if value & !(FLAG_PRE | FLAG_SECOND) != 0 {
        return Err(invalid(format!(
            "{what} has unknown bits set: {value:#04x}"
        )));
    }
    Ok((value & FLAG_PRE != 0, value & FLAG_SECOND != 0))
}

fn decode_message(cur: &mut Cursor<'_>) -> Result<(GroupId, Message), DecodeError> {
    let group = cur.u64("group")?;
    let from = cur.u64("from")?;
    let to = cur.u64("to")?;
    let term = cur.u64("term")?;
    if from == NO_NODE || to == NO_NODE || from == to {
        return Err(invalid(format!(
            "group {group}: message from {from} to {to}"
        )));
    }
    let body_tag = cur.u8("body tag")?;
    let body = match body_tag {
        tag::APPEND => decode_append(cur, term)?,
        tag::APPEND_RESP => MessageBody::AppendResp {
            index: cur.u64("index")?,
            reject: cur.bool("reject")?,
            hint_index: cur.u64("hint_index")?,
            hint_term: cur.u64("hint_term")?,
        },
        tag::HEARTBEAT => MessageBody::Heartbeat {
            commit: cur.u64("commit")?,
            read_seq: cur.u64("read_seq")?,
            quiesce: cur.bool("quiesce")?,
        },
        tag::HEARTBEAT_RESP => MessageBody::HeartbeatResp {
            read_seq: cur.u64("read_seq")?,
        },
        tag::VOTE => {
            let (pre, transfer) = decode_flags(cur, "vote flags")?;
            MessageBody::Vote {
                pre,
                last_index: cur.u64("last_index")?,
                last_term: cur.u64("last_term")?,
                transfer,
            }
        }
        tag::VOTE_RESP => {
            let (pre, reject) = decode_flags(cur, "vote response flags")?;
            MessageBody::VoteResp { pre, reject }
        }
        tag::SNAPSHOT => decode_snapshot(cur)?,
        tag::SNAPSHOT_RESP => MessageBody::SnapshotResp {
            index: cur.u64("snapshot index")?,
            next_offset: cur.u64("next_offset")?,
        },
        tag::TIMEOUT_NOW => MessageBody::TimeoutNow,
        tag::READ_INDEX => MessageBody::ReadIndex {
            ctx: cur.u64("ctx")?,
        },
        tag::READ_INDEX_RESP => MessageBody::ReadIndexResp {
            ctx: cur.u64("ctx")?,
            index: cur.u64("read index")?,
        },
        tag::REBUILDING => MessageBody::Rebuilding {
            last_index: cur.u64("rebuilding last index")?,
        },
        other => {
            return Err(DecodeError::UnknownTag {
                what: "message body",
                tag: u16::from(other),
            })
        }
    };
    Ok((
        group,
        Message {
            from,
            to,
            term,
            body,
        },
    ))
}

fn decode_append(cur: &mut Cursor<'_>, term: u64) -> Result<MessageBody, DecodeError> {
    let prev_index = cur.u64("prev_index")?;
    let prev_term = cur.u64("prev_term")?;
    let commit = cur.u64("commit")?;
    let count = cur.count("entry", ENTRY_HEAD_BYTES)?;
    let mut entries = Vec::with_capacity(count);
    let mut expected_index = prev_index;
    let mut last_term = prev_term;
    for _ in 0..count {
        expected_index = expected_index
            .checked_add(1)
            .ok_or_else(|| invalid("entry index overflows u64"))?;
        let entry_term = cur.u64("entry term")?;
        let index = cur.u64("entry index")?;
        let kind = match cur.u8("entry kind")? {
            KIND_NORMAL => EntryKind::Normal,
            KIND_CONF_CHANGE => EntryKind::ConfChange,
            other => {
                return Err(DecodeError::UnknownTag {
                    what: "entry kind",
                    tag: u16::from(other),
                })
            }
        };
        let len = cur.u32("entry length")? as usize;
        let data = cur.bytes(len, "entry data")?.to_vec();
        if index != expected_index {
            return Err(invalid(format!(
                "append after {prev_index}: entry index {index} where {expected_index} was expected"
            )));
        }
        if entry_term < last_term || entry_term > term {
            return Err(invalid(format!(
                "entry {index} has term {entry_term}: terms must rise from prev_term {prev_term} \
                 and stay at most the message term {term}"
            )));
        }
        if kind == EntryKind::ConfChange && ConfState::decode(&data).is_none() {
            return Err(invalid(format!("entry {index}: malformed configuration")));
        }
        last_term = entry_term;
        entries.push(Entry {
            term: entry_term,
            index,
            kind,
            data,
        });
    }
    Ok(MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit,
    })
}

fn decode_snapshot(cur: &mut Cursor<'_>) -> Result<MessageBody, DecodeError> {
    let index = cur.u64("snapshot index")?;
    let term = cur.u64("snapshot term")?;
    let size_bytes = cur.u64("snapshot size")?;
    let conf_len = cur.u32("conf length")? as usize;
    let conf = ConfState::decode(cur.bytes(conf_len, "conf")?)
        .ok_or_else(|| invalid(format!("snapshot {index}: malformed configuration")))?;
    let offset = cur.u64("snapshot offset")?;
    let len = cur.u32("chunk length")? as usize;
    let data = cur.bytes(len, "chunk data")?.to_vec();
    let within = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= size_bytes);
    if !within {
        return Err(invalid(format!(
            "snapshot {index}: chunk of {len} bytes at offset {offset} passes its size {size_bytes}"
        )));
    }
    Ok(MessageBody::Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf,
            size_bytes,
        },
        offset,
        data,
    })
}
