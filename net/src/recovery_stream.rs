//! The payload of a `Recovery` frame: the recovery stream (docs/replication.md, section 2). A
//! rebuilding member pulls a group's committed entries from any caught-up replica in chunks:
//! it asks (`Fetch`), the replica answers with a `Chunk` of whole entries or a `Refuse`.
//!
//! Encoding (all little-endian):
//! ```text
//! recovery = { u8 tag | u64 from | u64 to | u64 group | body }
//! body by tag:
//!   1 Fetch  { u64 from_index | u64 bytes_max }
//!   2 Chunk  { u64 snapshot_index | u64 server_commit | u64 prev_index | u64 prev_term
//!            | u32 entries_bytes | u32 chunk_crc32c | entries }
//!            entries = { u32 n | n * entry }            (entries_bytes bytes)
//!            entry   = { u64 term | u64 index | u8 kind (1 Normal, 2 ConfChange) | u32 len
//!                      | len bytes | u32 entry_crc32c }
//!            chunk_crc32c = CRC32C of the entries_bytes bytes of `entries`
//!            entry_crc32c = CRC32C of { u64 group | u64 index | u64 term | u8 kind | data }
//!   3 Refuse { u64 from_index | u8 reason | reason body }
//!            reason: 1 NotCaughtUp { } | 2 Compacted { u64 log_start } | 3 Busy { u32 retry_after_ms }
//! ```
//!
//! Checked twice, and before a byte is trusted: the frame's checksum covers the transport;
//! `chunk_crc32c` covers the entries as the server encoded them from its disk reads, and is
//! checked (with `entries_bytes` against the bytes left) before any entry is parsed; then
//! every entry's own checksum (the same rule as an entry repair's copy,
//! [`crate::entry_repair::entry_crc32c`]) is recomputed, so an entry that went bad between the
//! server's engine check and the wire is refused here, not written. Structure is checked too:
//! known tags, non-zero distinct node ids, `from_index` and `bytes_max` at least 1, entries
//! numbered one by one after `prev_index`, terms at least 1 and never going back from
//! `prev_term`, every entry at or below `server_commit`, `snapshot_index <= prev_index`, a
//! configuration entry that decodes, counts checked against the bytes left before allocating,
//! no trailing bytes. Whether the group exists and whether the chunk fits the receiver's log
//! is the receiver's check (`RawNode::append_committed`).

use tern_raft::message::{ConfState, Entry, EntryKind, NodeId, NO_NODE};

use crate::cursor::Cursor;
use crate::entry_repair::{entry_crc32c, EntryId};
use crate::error::DecodeError;
use crate::GroupId;

const TAG_FETCH: u8 = 1;
const TAG_CHUNK: u8 = 2;
const TAG_REFUSE: u8 = 3;

const REASON_NOT_CAUGHT_UP: u8 = 1;
const REASON_COMPACTED: u8 = 2;
const REASON_BUSY: u8 = 3;

const KIND_NORMAL: u8 = 1;
const KIND_CONF_CHANGE: u8 = 2;

/// `tag, from, to, group`.
const HEAD_BYTES: usize = 1 + 8 * 3;
/// `snapshot_index, server_commit, prev_index, prev_term, entries_bytes, chunk_crc32c`.
const CHUNK_HEAD_BYTES: usize = 8 * 4 + 4 + 4;
/// `term, index, kind, len, entry_crc32c`: an entry without data.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 1 + 4 + 4;

/// Committed entries `(prev_index, prev_index + n]` of the server, all at or below
/// `server_commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryChunk {
    /// The server's snapshot index (its log starts after it).
    pub snapshot_index: u64,
    /// The server's commit index when it read the chunk.
    pub server_commit: u64,
    pub prev_index: u64,
    /// The term of `prev_index` in the server's log (0 only at index 0).
    pub prev_term: u64,
    pub entries: Vec<Entry>,
}

/// Why a replica does not serve a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// Its commit index does not cover `from_index`: ask a replica that is caught up.
    NotCaughtUp,
    /// `from_index` is compacted into its snapshot; its log starts at `log_start`.
    Compacted { log_start: u64 },
    /// Too busy (recovery budget or read queue); ask again after `retry_after_ms`.
    Busy { retry_after_ms: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryMessage {
    /// "Send me your committed entries of `group` from `from_index`, about `bytes_max` of them."
    Fetch {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        from_index: u64,
        bytes_max: u64,
    },
    Chunk {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        chunk: RecoveryChunk,
    },
    /// The answer to the fetch from `from_index` when no chunk comes.
    Refuse {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        from_index: u64,
        reason: RefuseReason,
    },
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => KIND_NORMAL,
        EntryKind::ConfChange => KIND_CONF_CHANGE,
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    let value =
        u32::try_from(value).expect("lengths are bounded by the frame size, far below u32::MAX");
    out.extend_from_slice(&value.to_le_bytes());
}

/// The bytes `entries` take inside a chunk (the `entries` field).
fn entries_encoded_bytes(entries: &[Entry]) -> usize {
    4 + entries
        .iter()
        .map(|e| ENTRY_BYTES_MIN + e.data.len())
        .sum::<usize>()
}

/// The bytes a chunk's `entries` take on the wire per entry of `data_bytes` bytes: what a
/// server counts against a fetch's `bytes_max`.
pub fn chunk_entry_bytes(data_bytes: usize) -> usize {
    ENTRY_BYTES_MIN + data_bytes
}

impl RecoveryMessage {
    pub fn from(&self) -> NodeId {
        match self {
            RecoveryMessage::Fetch { from, .. }
            | RecoveryMessage::Chunk { from, .. }
            | RecoveryMessage::Refuse { from, .. } => *from,
        }
    }

    pub fn to(&self) -> NodeId {
        match self {
            RecoveryMessage::Fetch { to, .. }
            | RecoveryMessage::Chunk { to, .. }
            | RecoveryMessage::Refuse { to, .. } => *to,
        }
    }

    pub fn group(&self) -> GroupId {
        match self {
            RecoveryMessage::Fetch { group, .. }
            | RecoveryMessage::Chunk { group, .. }
            | RecoveryMessage::Refuse { group, .. } => *group,
        }
    }

    /// The bytes the payload takes: what send queues count.
    pub fn encoded_bytes(&self) -> usize {
        HEAD_BYTES
            + match self {
                RecoveryMessage::Fetch { .. } => 16,
                RecoveryMessage::Chunk { chunk, .. } => {
                    CHUNK_HEAD_BYTES + entries_encoded_bytes(&chunk.entries)
                }
                RecoveryMessage::Refuse { reason, .. } => {
                    8 + 1
                        + match reason {
                            RefuseReason::NotCaughtUp => 0,
                            RefuseReason::Compacted { .. } => 8,
                            RefuseReason::Busy { .. } => 4,
                        }
                }
            }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let tag = match self {
            RecoveryMessage::Fetch { .. } => TAG_FETCH,
            RecoveryMessage::Chunk { .. } => TAG_CHUNK,
            RecoveryMessage::Refuse { .. } => TAG_REFUSE,
        };
        out.push(tag);
        put_u64(out, self.from());
        put_u64(out, self.to());
        put_u64(out, self.group());
        match self {
            RecoveryMessage::Fetch {
                from_index,
                bytes_max,
                ..
            } => {
                put_u64(out, *from_index);
                put_u64(out, *bytes_max);
            }
            RecoveryMessage::Chunk { group, chunk, .. } => {
                put_u64(out, chunk.snapshot_index);
                put_u64(out, chunk.server_commit);
                put_u64(out, chunk.prev_index);
                put_u64(out, chunk.prev_term);
                let mut entries = Vec::with_capacity(entries_encoded_bytes(&chunk.entries));
                put_u32(&mut entries, chunk.entries.len());
                for e in &chunk.entries {
                    put_u64(&mut entries, e.term);
                    put_u64(&mut entries, e.index);
                    entries.push(kind_byte(e.kind));
                    put_u32(&mut entries, e.data.len());
                    entries.extend_from_slice(&e.data);
                    let id = EntryId {
                        group: *group,
                        index: e.index,
                        term: e.term,
                    };
                    entries.extend_from_slice(&entry_crc32c(&id, e.kind, &e.data).to_le_bytes());
                }
                put_u32(out, entries.len());
                out.extend_from_slice(&crc32c::crc32c(&entries).to_le_bytes());
                out.extend_from_slice(&entries);
            }
            RecoveryMessage::Refuse {
                from_index, reason, ..
            } => {
                put_u64(out, *from_index);
                match reason {
                    RefuseReason::NotCaughtUp => out.push(REASON_NOT_CAUGHT_UP),
                    RefuseReason::Compacted { log_start } => {
                        out.push(REASON_COMPACTED);
                        put_u64(out, *log_start);
                    }
                    RefuseReason::Busy { retry_after_ms } => {
                        out.push(REASON_BUSY);
                        out.extend_from_slice(&retry_after_ms.to_le_bytes());
                    }
                }
            }
        }
    }

    pub fn decode(payload: &[u8]) -> Result<RecoveryMessage, DecodeError> {
        let mut cur = Cursor::new(payload);
        let tag = cur.u8("recovery.tag")?;
        let from = cur.u64("recovery.from")?;
        let to = cur.u64("recovery.to")?;
        let group = cur.u64("recovery.group")?;
        if from == NO_NODE || to == NO_NODE || from == to {
            return Err(invalid(format!(
                "recovery message {from} -> {to}: node ids must be non-zero and differ"
            )));
        }
        let out = match tag {
            TAG_FETCH => {
                let from_index = cur.u64("recovery.from_index")?;
                let bytes_max = cur.u64("recovery.bytes_max")?;
                if from_index == 0 || bytes_max == 0 {
                    return Err(invalid(format!(
                        "recovery fetch of group {group} from {from_index} for {bytes_max} bytes: both start at 1"
                    )));
                }
                RecoveryMessage::Fetch {
                    from,
                    to,
                    group,
                    from_index,
                    bytes_max,
                }
            }
            TAG_CHUNK => RecoveryMessage::Chunk {
                from,
                to,
                group,
                chunk: decode_chunk(&mut cur, group)?,
            },
            TAG_REFUSE => {
                let from_index = cur.u64("recovery.from_index")?;
                let reason = match cur.u8("recovery.reason")? {
                    REASON_NOT_CAUGHT_UP => RefuseReason::NotCaughtUp,
                    REASON_COMPACTED => RefuseReason::Compacted {
                        log_start: cur.u64("recovery.log_start")?,
                    },
                    REASON_BUSY => RefuseReason::Busy {
                        retry_after_ms: cur.u32("recovery.retry_after_ms")?,
                    },
                    other => {
                        return Err(DecodeError::UnknownTag {
                            what: "recovery.reason",
                            tag: u16::from(other),
                        })
                    }
                };
                RecoveryMessage::Refuse {
                    from,
                    to,
                    group,
                    from_index,
                    reason,
                }
            }
            other => {
                return Err(DecodeError::UnknownTag {
                    what: "recovery.tag",
                    tag: u16::from(other),
                })
            }
        };
        cur.finish("recovery message")?;
        Ok(out)
    }
}

fn invalid(message: String) -> DecodeError {
    DecodeError::Invalid(message)
}

fn decode_chunk(cur: &mut Cursor<'_>, group: GroupId) -> Result<RecoveryChunk, DecodeError> {
    let snapshot_index = cur.u64("recovery.snapshot_index")?;
    let server_commit = cur.u64("recovery.server_commit")?;
    let prev_index = cur.u64("recovery.prev_index")?;
    let prev_term = cur.u64("recovery.prev_term")?;
    let entries_bytes = cur.u32("recovery.entries_bytes")? as usize;
    let stored_crc = cur.u32("recovery.chunk_crc32c")?;
    // Length, then checksum, before a byte of the entries is looked at.
    let raw = cur.bytes(entries_bytes, "recovery.entries")?;
    let computed = crc32c::crc32c(raw);
    if computed != stored_crc {
        return Err(invalid(format!(
            "recovery chunk of group {group} after {prev_index}: chunk checksum {stored_crc:#010x}, bytes give {computed:#010x}"
        )));
    }
    if snapshot_index > prev_index || prev_index > server_commit {
        return Err(invalid(format!(
            "recovery chunk of group {group}: snapshot {snapshot_index}, prev {prev_index}, commit {server_commit} out of order"
        )));
    }
    if (prev_index == 0) != (prev_term == 0) {
        return Err(invalid(format!(
            "recovery chunk of group {group}: prev_term {prev_term} at index {prev_index}"
        )));
    }
    let mut ents = Cursor::new(raw);
    let count = ents.count("recovery entry", ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count);
    let mut previous_term = prev_term;
    for i in 0..count {
        let term = ents.u64("recovery entry term")?;
        let index = ents.u64("recovery entry index")?;
        let kind = match ents.u8("recovery entry kind")? {
            KIND_NORMAL => EntryKind::Normal,
            KIND_CONF_CHANGE => EntryKind::ConfChange,
            other => {
                return Err(DecodeError::UnknownTag {
                    what: "recovery entry kind",
                    tag: u16::from(other),
                })
            }
        };
        let len = ents.u32("recovery entry length")? as usize;
        let data = ents.bytes(len, "recovery entry data")?;
        let stored = ents.u32("recovery entry crc32c")?;
        let id = EntryId { group, index, term };
        let computed = entry_crc32c(&id, kind, data);
        if stored != computed {
            return Err(invalid(format!(
                "recovery entry {index} of group {group}: entry checksum {stored:#010x}, bytes give {computed:#010x}"
            )));
        }
        // `i < count <= u32::MAX`, and `prev_index <= server_commit`, checked below to stay
        // within `server_commit`: no overflow past the first comparison.
        let expected = prev_index.checked_add(i as u64 + 1);
        if expected != Some(index) {
            return Err(invalid(format!(
                "recovery chunk of group {group} after {prev_index}: entry index {index} out of sequence"
            )));
        }
        if index > server_commit {
            return Err(invalid(format!(
                "recovery entry {index} of group {group} above the server's commit {server_commit}"
            )));
        }
        if term == 0 || term < previous_term {
            return Err(invalid(format!(
                "recovery entry {index} of group {group}: term {term} after term {previous_term}"
            )));
        }
        if kind == EntryKind::ConfChange && ConfState::decode(data).is_none() {
            return Err(invalid(format!(
                "recovery entry {index} of group {group}: malformed configuration"
            )));
        }
        previous_term = term;
        entries.push(Entry {
            term,
            index,
            kind,
            data: data.to_vec(),
        });
    }
    ents.finish("recovery entries")?;
    Ok(RecoveryChunk {
        snapshot_index,
        server_commit,
        prev_index,
        prev_term,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.to_vec(),
        }
    }

    fn chunk_message() -> RecoveryMessage {
        RecoveryMessage::Chunk {
            from: 2,
            to: 3,
            group: 7,
            chunk: RecoveryChunk {
                snapshot_index: 10,
                server_commit: 20,
                prev_index: 12,
                prev_term: 2,
                entries: vec![
                    entry(2, 13, b"thirteen"),
                    Entry {
                        term: 3,
                        index: 14,
                        kind: EntryKind::ConfChange,
                        data: ConfState::with_voters(&[1, 2, 3]).encode(),
                    },
                    entry(3, 15, &[0xAB; 300]),
                ],
            },
        }
    }

    fn samples() -> Vec<RecoveryMessage> {
        let refuse = |reason| RecoveryMessage::Refuse {
            from: 2,
            to: 3,
            group: 7,
            from_index: 13,
            reason,
        };
        vec![
            RecoveryMessage::Fetch {
                from: 3,
                to: 2,
                group: 7,
                from_index: 13,
                bytes_max: 1 << 20,
            },
            chunk_message(),
            RecoveryMessage::Chunk {
                from: 2,
                to: 3,
                group: 0,
                chunk: RecoveryChunk {
                    snapshot_index: 0,
                    server_commit: 0,
                    prev_index: 0,
                    prev_term: 0,
                    entries: Vec::new(),
                },
            },
            refuse(RefuseReason::NotCaughtUp),
            refuse(RefuseReason::Compacted { log_start: 100 }),
            refuse(RefuseReason::Busy {
                retry_after_ms: 250,
            }),
        ]
    }

    fn encoded(m: &RecoveryMessage) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        buf
    }

    #[test]
    fn round_trip_with_exact_sizes() {
        for m in samples() {
            let buf = encoded(&m);
            assert_eq!(buf.len(), m.encoded_bytes(), "{m:?}");
            assert_eq!(RecoveryMessage::decode(&buf), Ok(m));
        }
    }

    #[test]
    fn every_truncation_and_any_extra_byte_is_an_error() {
        for m in samples() {
            let buf = encoded(&m);
            for len in 0..buf.len() {
                assert!(
                    RecoveryMessage::decode(&buf[..len]).is_err(),
                    "{m:?} cut at {len}"
                );
            }
            let mut long = buf.clone();
            long.push(0);
            assert!(RecoveryMessage::decode(&long).is_err());
        }
    }

    /// Offset of the chunk's `entries_bytes` field.
    const ENTRIES_BYTES_AT: usize = HEAD_BYTES + 32;

    #[test]
    fn every_bit_flip_in_a_chunk_after_its_header_is_refused() {
        let buf = encoded(&chunk_message());
        for byte in ENTRIES_BYTES_AT..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    RecoveryMessage::decode(&bad).is_err(),
                    "flip of bit {bit} at byte {byte} accepted"
                );
            }
        }
    }

    #[test]
    fn a_bad_entry_checksum_is_refused_even_under_a_good_chunk_checksum() {
        // A server whose memory flipped a data byte after its engine's check but before the
        // chunk checksum was computed: only the entry checksum catches it.
        let buf = encoded(&chunk_message());
        let entries_at = ENTRIES_BYTES_AT + 8;
        let mut raw = buf[entries_at..].to_vec();
        let data_at = 4 + 8 + 8 + 1 + 4; // count, then the first entry's head
        raw[data_at] ^= 0x01;
        let mut forged = buf[..ENTRIES_BYTES_AT + 4].to_vec();
        forged.extend_from_slice(&crc32c::crc32c(&raw).to_le_bytes());
        forged.extend_from_slice(&raw);
        let err = RecoveryMessage::decode(&forged).expect_err("damaged entry");
        assert!(err.to_string().contains("entry checksum"), "{err}");
    }

    #[test]
    fn an_entries_length_past_the_payload_is_refused_before_anything_is_read() {
        let mut buf = encoded(&chunk_message());
        buf[ENTRIES_BYTES_AT..ENTRIES_BYTES_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RecoveryMessage::decode(&buf),
            Err(DecodeError::Truncated { .. })
        ));
    }

    /// A chunk built field by field, with valid checksums, to check structure rules.
    fn forged_chunk(
        snapshot_index: u64,
        server_commit: u64,
        prev: (u64, u64),
        entries: &[Entry],
    ) -> Vec<u8> {
        encoded(&RecoveryMessage::Chunk {
            from: 2,
            to: 3,
            group: 7,
            chunk: RecoveryChunk {
                snapshot_index,
                server_commit,
                prev_index: prev.0,
                prev_term: prev.1,
                entries: entries.to_vec(),
            },
        })
    }

    #[test]
    fn structure_rules_are_checked_under_valid_checksums() {
        let bad = [
            // An entry above the server's commit.
            forged_chunk(0, 13, (12, 2), &[entry(2, 13, b""), entry(2, 14, b"")]),
            // A gap in the indexes.
            forged_chunk(0, 20, (12, 2), &[entry(2, 13, b""), entry(2, 15, b"")]),
            // Terms going back, and below prev_term.
            forged_chunk(0, 20, (12, 2), &[entry(3, 13, b""), entry(2, 14, b"")]),
            forged_chunk(0, 20, (12, 4), &[entry(3, 13, b"")]),
            // prev_term 0 at a real index, and a snapshot after prev.
            forged_chunk(0, 20, (12, 0), &[entry(1, 13, b"")]),
            forged_chunk(13, 20, (12, 2), &[entry(2, 13, b"")]),
            // A configuration entry that does not decode.
            forged_chunk(
                0,
                20,
                (12, 2),
                &[Entry {
                    term: 2,
                    index: 13,
                    kind: EntryKind::ConfChange,
                    data: vec![1, 2, 3],
                }],
            ),
        ];
        for buf in bad {
            assert!(
                matches!(RecoveryMessage::decode(&buf), Err(DecodeError::Invalid(_))),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn invalid_fields_and_unknown_tags_are_refused() {
        let fetch = |from, to, from_index, bytes_max| {
            encoded(&RecoveryMessage::Fetch {
                from,
                to,
                group: 1,
                from_index,
                bytes_max,
            })
        };
        let mut cases = vec![
            fetch(0, 2, 1, 1),
            fetch(1, 0, 1, 1),
            fetch(3, 3, 1, 1),
            fetch(1, 2, 0, 1),
            fetch(1, 2, 1, 0),
        ];
        let mut unknown_tag = encoded(&samples()[0]);
        unknown_tag[0] = 9;
        cases.push(unknown_tag);
        let mut unknown_reason = encoded(&samples()[3]);
        unknown_reason[HEAD_BYTES + 8] = 0;
        cases.push(unknown_reason);
        let mut unknown_kind = encoded(&chunk_message());
        // Keep both checksums valid: rewrite the kind, then the chunk checksum.
        let entries_at = ENTRIES_BYTES_AT + 8;
        unknown_kind[entries_at + 4 + 16] = 9;
        let crc = crc32c::crc32c(&unknown_kind[entries_at..]);
        unknown_kind[ENTRIES_BYTES_AT + 4..ENTRIES_BYTES_AT + 8]
            .copy_from_slice(&crc.to_le_bytes());
        cases.push(unknown_kind);
        for buf in cases {
            assert!(RecoveryMessage::decode(&buf).is_err(), "{buf:?}");
        }
    }
}
