//! A partition's offset checkpoint: what a restart needs to rebuild the offset map and the
//! producer table without reading the whole log.
//!
//! Every `CHECKPOINT_ENTRIES` applied entries, or `[recovery] offset_checkpoint_bytes`
//! (default `CHECKPOINT_BYTES`) of applied payload, whichever comes first, a partition writes
//! one into the shard's round write batch, as the engine's `GroupMeta` record of the group (the newest wins; the engine
//! restates it at each segment's start, so purging old segments keeps it). It holds sparse
//! marks over `(snapshot point, index]` (docs/format.md "Offset checkpoint") and the producer
//! table as of `index`. `index` is at most the applied index, so it is committed: Raft never
//! rewrites it, and the hard state written with or before it has `commit >= index`.
//!
//! At start (`restore`) the checkpoint is used only if it still describes the log: its term
//! at `index` equals the engine's (by Raft's log matching, the whole prefix up to it is then
//! the one it summarised), `index` is in the log and at most the durable commit. Otherwise
//! (missing, damaged, older than the snapshot point, from a rewritten log) the start reads
//! every entry after the snapshot point, as without checkpoints: a bad checkpoint costs time,
//! never correctness or the start.

use super::partition::{EntryFacts, Mark, PRODUCER_SNAPSHOT_BYTES_MAX};
use super::producers::ProducerTable;

/// Applied entries between two checkpoints of a partition: what a restart reads at most past
/// the newest one (plus the entries not yet applied).
pub const CHECKPOINT_ENTRIES: u64 = 1024;

/// Default applied payload bytes between two checkpoints: with large entries the entry count
/// alone would let a restart read up to 1024 of them (a GiB of 1 MiB batches). A checkpoint
/// costs at most `GROUP_META_BYTES_MAX` (64 KiB) of WAL, under 0.1% of this. The same bound
/// ends a mark's span, so a lookup inside one after a restart reads about as much at most
/// (until spans merge past `MARKS_MAX`).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Marks a checkpoint keeps at most. Their spans lengthen as the log grows (merged pairwise),
/// so a lookup inside one after a restart reads at most `entries / MARKS_MAX` entries.
pub const MARKS_MAX: usize = 512;

const MAGIC: u32 = u32::from_le_bytes(*b"TROC");
const VERSION: u16 = 1;
const MARK_BYTES: usize = 32;
/// `max_timestamp_ms` of a span without records.
const NO_TIMESTAMP: i64 = i64::MIN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCheckpoint {
    /// The entry the checkpoint is taken at (the last mark's index) and its term.
    pub index: u64,
    pub term: u64,
    /// Spans over `(snapshot point when written, index]`, oldest first.
    pub marks: Vec<Mark>,
    /// The idempotent producers as of `index`.
    pub producers: ProducerTable,
}

impl OffsetCheckpoint {
    /// Encoding (little-endian): `{ u32 magic "TROC" | u16 version | u16 reserved |
    /// u32 crc32c (of the body) | body }`, body = `{ u64 index | u64 term | u32 n |
    /// n * mark | producer table }`, mark = `{ u64 index | u64 end_offset | u64 bytes |
    /// i64 max_timestamp_ms (i64::MIN: none) }`. The producer table takes what is left of
    /// the engine's `GROUP_META_BYTES_MAX` (at most the snapshot's own limit).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(20 + self.marks.len() * MARK_BYTES);
        body.extend_from_slice(&self.index.to_le_bytes());
        body.extend_from_slice(&self.term.to_le_bytes());
        body.extend_from_slice(&(self.marks.len() as u32).to_le_bytes());
        for m in &self.marks {
            body.extend_from_slice(&m.index.to_le_bytes());
            body.extend_from_slice(&m.facts.end_offset.to_le_bytes());
            body.extend_from_slice(&m.facts.bytes.to_le_bytes());
            let ts = m.facts.max_timestamp_ms.unwrap_or(NO_TIMESTAMP);
            body.extend_from_slice(&ts.to_le_bytes());
        }
        let room = tern_engine::constants::GROUP_META_BYTES_MAX
            .saturating_sub(super::meta_record::HEADER_BYTES + body.len())
            .min(PRODUCER_SNAPSHOT_BYTES_MAX);
        self.producers.encode(&mut body, room);
        super::meta_record::frame(MAGIC, VERSION, &body)
    }

    /// Checks length, magic, version and checksum before reading a field, then that the marks
    /// are a valid sequence (increasing indexes, non-decreasing end offsets, the last at
    /// `index`).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body = super::meta_record::unframe(bytes, MAGIC, VERSION)?;
        let (index, rest) = take::<8>(body)?;
        let (term, rest) = take::<8>(rest)?;
        let (n, mut rest) = take::<4>(rest)?;
        let n = u32::from_le_bytes(n) as usize;
        if n == 0 || n > rest.len() / MARK_BYTES {
            return Err(format!("{n} marks in {} bytes", rest.len()));
        }
        let mut marks: Vec<Mark> = Vec::with_capacity(n);
        for _ in 0..n {
            let (m_index, r) = take::<8>(rest)?;
            let (end, r) = take::<8>(r)?;
            let (bytes, r) = take::<8>(r)?;
            let (ts, r) = take::<8>(r)?;
            rest = r;
            let ts = i64::from_le_bytes(ts);
            let mark = Mark {
                index: u64::from_le_bytes(m_index),
                facts: EntryFacts {
                    end_offset: u64::from_le_bytes(end),
                    bytes: u64::from_le_bytes(bytes),
                    max_timestamp_ms: (ts != NO_TIMESTAMP).then_some(ts),
                },
            };
            if let Some(prev) = marks.last() {
                if mark.index <= prev.index || mark.facts.end_offset < prev.facts.end_offset {
                    return Err(format!(
                        "mark at {} does not follow {}",
                        mark.index, prev.index
                    ));
                }
            }
            marks.push(mark);
        }
        let index = u64::from_le_bytes(index);
        if marks.last().map(|m| m.index) != Some(index) {
            return Err(format!(
                "the last mark is not at the checkpoint's index {index}"
            ));
        }
        let producers =
            ProducerTable::decode(rest).map_err(|why| format!("producer table: {why}"))?;
        Ok(OffsetCheckpoint {
            index,
            term: u64::from_le_bytes(term),
            marks,
            producers,
        })
    }
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), String> {
    bytes
        .split_first_chunk::<N>()
        .map(|(a, rest)| (*a, rest))
        .ok_or_else(|| "truncated".to_string())
}

/// What the durable log says about the checkpoint's place in it.
pub struct LogFacts {
    pub snapshot_index: u64,
    pub start_offset: u64,
    pub last_index: u64,
    pub commit: u64,
    /// The term the engine holds for `index` (None: not in the log).
    pub term_at_checkpoint: Option<u64>,
}

/// The marks of a checkpoint still valid over the log (those past the snapshot point), or why
/// it cannot be used.
pub fn usable_marks(c: &OffsetCheckpoint, log: &LogFacts) -> Result<Vec<Mark>, String> {
    if c.index <= log.snapshot_index {
        return Err(format!(
            "taken at {}, at or below the snapshot point {}",
            c.index, log.snapshot_index
        ));
    }
    if c.index > log.last_index || c.index > log.commit.max(log.snapshot_index) {
        return Err(format!(
            "taken at {}, past the log (last {}, commit {})",
            c.index, log.last_index, log.commit
        ));
    }
    if log.term_at_checkpoint != Some(c.term) {
        return Err(format!(
            "term {} at {}, the log has {:?}",
            c.term, c.index, log.term_at_checkpoint
        ));
    }
    let marks: Vec<Mark> = c
        .marks
        .iter()
        .copied()
        .filter(|m| m.index > log.snapshot_index)
        .collect();
    if marks
        .first()
        .is_some_and(|m| m.facts.end_offset < log.start_offset)
    {
        return Err("its offsets end before the log start offset".into());
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(index: u64, end_offset: u64, bytes: u64, ts: Option<i64>) -> Mark {
        Mark {
            index,
            facts: EntryFacts {
                end_offset,
                bytes,
                max_timestamp_ms: ts,
            },
        }
    }

    fn checkpoint() -> OffsetCheckpoint {
        OffsetCheckpoint {
            index: 9,
            term: 3,
            marks: vec![mark(4, 10, 400, Some(5)), mark(9, 20, 500, None)],
            producers: ProducerTable::default(),
        }
    }

    #[test]
    fn round_trip_and_every_truncation_or_flip_is_refused() {
        let c = checkpoint();
        let bytes = c.encode();
        assert_eq!(OffsetCheckpoint::decode(&bytes), Ok(c));
        for cut in 0..bytes.len() {
            assert!(
                OffsetCheckpoint::decode(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(OffsetCheckpoint::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn marks_out_of_order_are_refused_even_with_a_good_checksum() {
        let mut c = checkpoint();
        c.marks.swap(0, 1);
        assert!(OffsetCheckpoint::decode(&c.encode()).is_err());
        let mut c = checkpoint();
        c.index = 8;
        assert!(OffsetCheckpoint::decode(&c.encode()).is_err());
    }

    #[test]
    fn a_checkpoint_is_used_only_where_the_log_still_matches_it() {
        let c = checkpoint();
        let log = |snapshot_index, last_index, commit, term| LogFacts {
            snapshot_index,
            start_offset: 0,
            last_index,
            commit,
            term_at_checkpoint: term,
        };
        assert_eq!(usable_marks(&c, &log(0, 12, 10, Some(3))).unwrap().len(), 2);
        // The snapshot point passed the first mark: only the later one describes the log.
        assert_eq!(
            usable_marks(&c, &log(5, 12, 10, Some(3))).unwrap(),
            vec![mark(9, 20, 500, None)]
        );
        assert!(usable_marks(&c, &log(9, 12, 10, Some(3))).is_err());
        assert!(usable_marks(&c, &log(0, 8, 8, None)).is_err());
        assert!(usable_marks(&c, &log(0, 12, 8, Some(3))).is_err());
        assert!(usable_marks(&c, &log(0, 12, 10, Some(2))).is_err());
    }
}
