//! The payload of an `EntryRepair` frame: one node asking a peer for a copy of a log entry
//! whose record failed its checksum on the asker's disk, and the peer's answer (issue 12,
//! protocol-aware recovery).
//!
//! Encoding (all little-endian):
//! ```text
//! repair = { u8 tag | u64 from | u64 to | u64 group | u64 index | u64 term | body }
//! body by tag:
//!   1 Query  { }
//!   2 Answer { u8 status | found: { u8 kind (1 Normal, 2 ConfChange) | u32 len | len bytes
//!                                   | u32 entry_crc32c } }
//!            status: 1 found, 2 not held (compacted, truncated or never written),
//!                    3 damaged here too
//!            entry_crc32c = CRC32C of { u64 group | u64 index | u64 term | u8 kind | data }
//! ```
//!
//! The frame's own checksum covers the bytes on the wire; `entry_crc32c` is computed by the
//! answering node from the entry its engine read back and checked (record checksum and
//! identity), so the asker can check the copy end to end, from the peer's disk to its own
//! write, whatever the frame went through. Decoding checks the structure: known tag and
//! status, non-zero node ids with `from != to`, index and term at least 1, the data length
//! against the bytes left (before allocating), the entry checksum, and no trailing bytes.
//! Whether the group exists and whether the term matches the asker's log is the receiver's
//! check.

use tern_raft::message::{EntryKind, NodeId, NO_NODE};

use crate::cursor::Cursor;
use crate::error::DecodeError;
use crate::GroupId;

const TAG_QUERY: u8 = 1;
const TAG_ANSWER: u8 = 2;

const STATUS_FOUND: u8 = 1;
const STATUS_NOT_HELD: u8 = 2;
const STATUS_DAMAGED: u8 = 3;

const KIND_NORMAL: u8 = 1;
const KIND_CONF_CHANGE: u8 = 2;

/// `tag, from, to, group, index, term`.
const HEAD_BYTES: usize = 1 + 8 * 5;

/// Which entry: the identity both messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub group: GroupId,
    pub index: u64,
    /// The term the asker's log holds at `index` (its index knows it even when the record's
    /// bytes are damaged); an answer for another term is no copy of this entry.
    pub term: u64,
}

/// What the peer holds of the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryAnswer {
    Found {
        kind: EntryKind,
        data: Vec<u8>,
    },
    /// Compacted, truncated, never written, or held at another term.
    NotHeld,
    /// The peer's copy failed its own checksum too.
    Damaged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryRepair {
    Query {
        from: NodeId,
        to: NodeId,
        entry: EntryId,
    },
    Answer {
        from: NodeId,
        to: NodeId,
        entry: EntryId,
        answer: EntryAnswer,
    },
}

/// The checksum an answer carries over the entry it copies.
pub fn entry_crc32c(entry: &EntryId, kind: EntryKind, data: &[u8]) -> u32 {
    let mut head = [0u8; 25];
    head[..8].copy_from_slice(&entry.group.to_le_bytes());
    head[8..16].copy_from_slice(&entry.index.to_le_bytes());
    head[16..24].copy_from_slice(&entry.term.to_le_bytes());
    head[24] = kind_byte(kind);
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => KIND_NORMAL,
        EntryKind::ConfChange => KIND_CONF_CHANGE,
    }
}

impl EntryRepair {
    pub fn from(&self) -> NodeId {
        match self {
            EntryRepair::Query { from, .. } | EntryRepair::Answer { from, .. } => *from,
        }
    }

    pub fn to(&self) -> NodeId {
        match self {
            EntryRepair::Query { to, .. } | EntryRepair::Answer { to, .. } => *to,
        }
    }

    pub fn entry(&self) -> EntryId {
        match self {
            EntryRepair::Query { entry, .. } | EntryRepair::Answer { entry, .. } => *entry,
        }
    }

    /// The bytes the payload takes: what send queues count.
    pub fn encoded_bytes(&self) -> usize {
        HEAD_BYTES
            + match self {
                EntryRepair::Query { .. } => 0,
                EntryRepair::Answer {
                    answer: EntryAnswer::Found { data, .. },
                    ..
                } => 1 + 1 + 4 + data.len() + 4,
                EntryRepair::Answer { .. } => 1,
            }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let (tag, from, to, entry) = match self {
            EntryRepair::Query { from, to, entry } => (TAG_QUERY, from, to, entry),
            EntryRepair::Answer {
                from, to, entry, ..
            } => (TAG_ANSWER, from, to, entry),
        };
        out.push(tag);
        for v in [*from, *to, entry.group, entry.index, entry.term] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let EntryRepair::Answer { answer, .. } = self {
            match answer {
                EntryAnswer::Found { kind, data } => {
                    out.push(STATUS_FOUND);
                    out.push(kind_byte(*kind));
                    let len = u32::try_from(data.len())
                        .expect("an entry is bounded by the frame size, far below u32::MAX");
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(&entry_crc32c(entry, *kind, data).to_le_bytes());
                }
                EntryAnswer::NotHeld => out.push(STATUS_NOT_HELD),
                EntryAnswer::Damaged => out.push(STATUS_DAMAGED),
            }
        }
    }

    pub fn decode(payload: &[u8]) -> Result<EntryRepair, DecodeError> {
        let mut cur = Cursor::new(payload);
        let tag = cur.u8("repair.tag")?;
        let from = cur.u64("repair.from")?;
        let to = cur.u64("repair.to")?;
        let entry = EntryId {
            group: cur.u64("repair.group")?,
            index: cur.u64("repair.index")?,
            term: cur.u64("repair.term")?,
        };
        if from == NO_NODE || to == NO_NODE || from == to {
            return Err(DecodeError::Invalid(format!(
                "repair message {from} -> {to}: node ids must be non-zero and differ"
            )));
        }
        if entry.index == 0 || entry.term == 0 {
            return Err(DecodeError::Invalid(format!(
                "repair of group {} index {} term {}: index and term start at 1",
                entry.group, entry.index, entry.term
            )));
        }
        let out = match tag {
            TAG_QUERY => EntryRepair::Query { from, to, entry },
            TAG_ANSWER => {
                let answer = match cur.u8("repair.status")? {
                    STATUS_FOUND => {
                        let kind = match cur.u8("repair.kind")? {
                            KIND_NORMAL => EntryKind::Normal,
                            KIND_CONF_CHANGE => EntryKind::ConfChange,
                            other => {
                                return Err(DecodeError::UnknownTag {
                                    what: "repair.kind",
                                    tag: other as u16,
                                })
                            }
                        };
                        let len = cur.u32("repair.len")? as usize;
                        let data = cur.bytes(len, "repair.data")?.to_vec();
                        let stored = cur.u32("repair.entry_crc32c")?;
                        let computed = entry_crc32c(&entry, kind, &data);
                        if stored != computed {
                            return Err(DecodeError::Invalid(format!(
                                "repair copy of group {} index {}: entry checksum {stored:#010x}, bytes give {computed:#010x}",
                                entry.group, entry.index
                            )));
                        }
                        EntryAnswer::Found { kind, data }
                    }
                    STATUS_NOT_HELD => EntryAnswer::NotHeld,
                    STATUS_DAMAGED => EntryAnswer::Damaged,
                    other => {
                        return Err(DecodeError::UnknownTag {
                            what: "repair.status",
                            tag: other as u16,
                        })
                    }
                };
                EntryRepair::Answer {
                    from,
                    to,
                    entry,
                    answer,
                }
            }
            other => {
                return Err(DecodeError::UnknownTag {
                    what: "repair.tag",
                    tag: other as u16,
                })
            }
        };
        cur.finish("repair message")?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<EntryRepair> {
        let entry = EntryId {
            group: 7,
            index: 42,
            term: 3,
        };
        let answer = |answer| EntryRepair::Answer {
            from: 2,
            to: 1,
            entry,
            answer,
        };
        vec![
            EntryRepair::Query {
                from: 1,
                to: 2,
                entry,
            },
            answer(EntryAnswer::Found {
                kind: EntryKind::Normal,
                data: (0..300u32).map(|i| i as u8).collect(),
            }),
            answer(EntryAnswer::Found {
                kind: EntryKind::ConfChange,
                data: Vec::new(),
            }),
            answer(EntryAnswer::NotHeld),
            answer(EntryAnswer::Damaged),
        ]
    }

    #[test]
    fn round_trip_with_exact_sizes() {
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(buf.len(), m.encoded_bytes(), "{m:?}");
            assert_eq!(EntryRepair::decode(&buf).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_and_every_data_bit_flip_is_an_error() {
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            for len in 0..buf.len() {
                assert!(
                    EntryRepair::decode(&buf[..len]).is_err(),
                    "{m:?} cut at {len}"
                );
            }
            let mut long = buf.clone();
            long.push(0);
            assert!(EntryRepair::decode(&long).is_err());
        }
        // A found copy: any flipped bit of the entry (identity, kind, length, data, checksum)
        // is refused, not taken as another entry's copy.
        let m = &samples()[1];
        let mut buf = Vec::new();
        m.encode(&mut buf);
        for byte in 17..buf.len() {
            if (HEAD_BYTES..HEAD_BYTES + 1).contains(&byte) {
                continue; // the status byte: checked by its own test below
            }
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            assert!(
                EntryRepair::decode(&bad).is_err(),
                "flip at byte {byte} accepted"
            );
        }
    }

    #[test]
    fn invalid_fields_are_refused() {
        let mut cases = Vec::new();
        for (from, to, index, term) in [
            (0, 2, 1, 1),
            (1, 0, 1, 1),
            (3, 3, 1, 1),
            (1, 2, 0, 1),
            (1, 2, 1, 0),
        ] {
            let m = EntryRepair::Query {
                from,
                to,
                entry: EntryId {
                    group: 1,
                    index,
                    term,
                },
            };
            let mut buf = Vec::new();
            m.encode(&mut buf);
            cases.push(buf);
        }
        let mut unknown_tag = Vec::new();
        samples()[0].encode(&mut unknown_tag);
        unknown_tag[0] = 9;
        cases.push(unknown_tag);
        let mut unknown_status = Vec::new();
        samples()[3].encode(&mut unknown_status);
        unknown_status[HEAD_BYTES] = 0;
        cases.push(unknown_status);
        for buf in cases {
            assert!(EntryRepair::decode(&buf).is_err(), "{buf:?}");
        }
    }
}
