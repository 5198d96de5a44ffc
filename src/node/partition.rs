//! A partition's offsets: Kafka offsets are dense per record, and Raft-internal entries (a new
//! leader's no-op, configuration changes) take none. The offset of an entry is a pure function
//! of the log prefix: the end offset (exclusive) after entry i is the end offset after entry
//! i - 1 plus the records in entry i. The leader stamps each data entry's batches with their
//! base offsets when it proposes them; every replica (the leader included) checks the stamp
//! when the entry is written to its log, and the map keeps the entry's end offset (with its
//! size and newest timestamp, which retention judges it by). A restart rebuilds the map from
//! the newest offset checkpoint (src/node/offset_checkpoint.rs: sparse marks summarising the
//! entries up to a committed index) and the batch headers of the entries after it; without a
//! usable checkpoint, from the snapshot point's end offset and every entry after it.
//!
//! The map is therefore dense (one `EntryFacts` per entry) except for a restarted replica's
//! oldest entries, which only the checkpoint's marks describe: a mark is the end offset, the
//! payload bytes and the newest timestamp of a span of entries ending at its index. Offsets
//! inside a span are found by reading the span's entries (`index_of` answers the span's first
//! entry, `mark_at_or_below` the start to read from); retention compacts at span ends.

use std::collections::VecDeque;

use tern_raft::message::{Entry, EntryKind};

use super::producers::ProducerTable;
use super::records::{check_stamp, parse_batches, record_count};

/// The partition's snapshot data: what the log prefix it replaced contributed.
///
/// Encoding (little-endian): version 1 is `{ u32 version (1) | u64 end_offset }`; version 2
/// (written since retention compacts partitions) is
/// `{ u32 version (2) | u64 end_offset | producer table (see ProducerTable::encode) }`, so an
/// idempotent producer's sequences survive the compaction of the entries that wrote them.
/// Both versions are read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionSnapshot {
    /// Offset of the first record after the snapshot point: the log start offset, which is
    /// also the next offset the prefix ends at (the two coincide at a snapshot point).
    pub end_offset: u64,
    /// The idempotent producers as of the snapshot point.
    pub producers: ProducerTable,
}

impl PartitionSnapshot {
    const VERSION_OFFSET_ONLY: u32 = 1;
    const VERSION: u32 = 2;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&Self::VERSION.to_le_bytes());
        out.extend_from_slice(&self.end_offset.to_le_bytes());
        self.producers.encode(&mut out, PRODUCER_SNAPSHOT_BYTES_MAX);
        out
    }

    /// An empty `data` (a group's bootstrap snapshot) is the start of an empty partition.
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        if data.is_empty() {
            return Ok(PartitionSnapshot::default());
        }
        let Some((version, rest)) = data.split_first_chunk::<4>() else {
            return Err("partition snapshot shorter than its version".into());
        };
        let version = u32::from_le_bytes(*version);
        if version != Self::VERSION && version != Self::VERSION_OFFSET_ONLY {
            return Err(format!("partition snapshot version {version}"));
        }
        let Some((end, rest)) = rest.split_first_chunk::<8>() else {
            return Err(format!("partition snapshot of {} bytes", data.len()));
        };
        let producers = if version == Self::VERSION_OFFSET_ONLY {
            if !rest.is_empty() {
                return Err(format!("partition snapshot of {} bytes", data.len()));
            }
            ProducerTable::default()
        } else {
            ProducerTable::decode(rest)
                .map_err(|why| format!("partition snapshot's producer table: {why}"))?
        };
        Ok(PartitionSnapshot {
            end_offset: u64::from_le_bytes(*end),
            producers,
        })
    }
}

/// Bytes of producer state a partition snapshot carries at most: the engine keeps snapshot
/// metadata (configuration and data) under `SNAPSHOT_META_BYTES_MAX` (64 KiB). Producers
/// beyond it (the least recently written first) are forgotten as if expired.
pub const PRODUCER_SNAPSHOT_BYTES_MAX: usize = 48 << 10;

/// A written entry whose stamp disagrees with the log prefix (a bug or a damaged entry: the
/// group stops rather than serve offsets twice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    #[error("entry {index}: its record batches do not parse: {why}")]
    Records { index: u64, why: String },
    #[error("entry {index}: stamped base offset {stamped}, but the log prefix ends at {expected}")]
    Stamp {
        index: u64,
        expected: u64,
        stamped: i64,
    },
    #[error("entry {index} does not follow the offset map (first {first}, next {next})")]
    Gap { index: u64, first: u64, next: u64 },
}

/// What the offset map keeps of one entry: its end offset, and what retention judges it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFacts {
    /// The end offset (exclusive) after the entry.
    pub end_offset: u64,
    /// Payload bytes of the entry (its record batches).
    pub bytes: u64,
    /// The largest `max_timestamp` of its batches; None for an entry without records.
    pub max_timestamp_ms: Option<i64>,
}

/// A span of entries the map knows only in sum (from an offset checkpoint): the entries after
/// the previous mark (or the snapshot point) up to `index`. `facts.bytes` and
/// `facts.max_timestamp_ms` cover the whole span; `facts.end_offset` is exact at `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub index: u64,
    pub facts: EntryFacts,
}

/// End offsets (and retention facts) of the entries after the snapshot point.
///
/// Invariant: the end offsets of `marks` then `entries` are non-decreasing and >=
/// `start_offset`; mark indexes increase and are > `snapshot_index`; `entries[i]` is entry
/// `dense_base() + 1 + i`.
#[derive(Debug, Clone, Default)]
pub struct OffsetMap {
    snapshot_index: u64,
    start_offset: u64,
    marks: VecDeque<Mark>,
    entries: VecDeque<EntryFacts>,
    /// The marks of the newest offset checkpoint (empty: none yet), the base of the next.
    checkpoint: Vec<Mark>,
    /// `bytes_since_checkpoint`'s running count, so each call reads only the entries the
    /// previous one did not: (the index counting started after, the last index counted, the
    /// payload bytes of the entries in between).
    since_checkpoint: (u64, u64, u64),
}

impl OffsetMap {
    /// The map of a log whose snapshot point is `snapshot_index` (with the log start offset
    /// `start_offset`), followed by `entries`.
    pub fn new(
        snapshot_index: u64,
        start_offset: u64,
        entries: impl IntoIterator<Item = EntryFacts>,
    ) -> Self {
        OffsetMap {
            snapshot_index,
            start_offset,
            marks: VecDeque::new(),
            entries: entries.into_iter().collect(),
            checkpoint: Vec::new(),
            since_checkpoint: (0, 0, 0),
        }
    }

    /// The map a checkpoint restores: the snapshot point, then `marks` (validated by the
    /// caller: increasing, past the snapshot point, end offsets non-decreasing from
    /// `start_offset`), then nothing yet; `on_written` adds the entries after the last mark.
    pub fn from_marks(snapshot_index: u64, start_offset: u64, marks: Vec<Mark>) -> Self {
        OffsetMap {
            snapshot_index,
            start_offset,
            checkpoint: marks.clone(),
            marks: marks.into(),
            entries: VecDeque::new(),
            since_checkpoint: (0, 0, 0),
        }
    }

    /// Index of the last entry only a mark describes (the snapshot point when none does):
    /// the dense entries follow it.
    fn dense_base(&self) -> u64 {
        self.marks.back().map_or(self.snapshot_index, |m| m.index)
    }

    /// The mark (or the snapshot point) at or below `index`: (its index, the end offset
    /// after it). Reading the entries after it finds what the map does not hold per entry.
    pub fn mark_at_or_below(&self, index: u64) -> (u64, u64) {
        let pos = self.marks.partition_point(|m| m.index <= index);
        match pos.checked_sub(1).and_then(|p| self.marks.get(p)) {
            Some(m) => (m.index, m.facts.end_offset),
            None => (self.snapshot_index, self.start_offset),
        }
    }

    /// The index the newest checkpoint was taken at (the snapshot point when it is newer, or
    /// when there is none).
    pub fn checkpointed_to(&self) -> u64 {
        self.checkpoint
            .last()
            .map_or(0, |m| m.index)
            .max(self.snapshot_index)
    }

    /// Payload bytes of the entries after the newest checkpoint up to `upto`: what a restart
    /// would read past it. `upto` must be committed (applied): the counted entries are then
    /// never rewritten, and each call reads only the entries added since the previous one.
    pub fn bytes_since_checkpoint(&mut self, upto: u64) -> u64 {
        let base = self.checkpointed_to().max(self.dense_base());
        let (from, counted, bytes) = self.since_checkpoint;
        let (mut counted, mut bytes) =
            if from == base && (base..=self.last_index()).contains(&counted) {
                (counted, bytes)
            } else {
                (base, 0)
            };
        while counted < upto {
            let Some(f) = self.facts(counted + 1) else {
                break;
            };
            bytes += f.bytes;
            counted += 1;
        }
        self.since_checkpoint = (base, counted, bytes);
        bytes
    }

    /// The marks of a checkpoint at `upto`, describing `(snapshot point, upto]` (at most
    /// `marks_max` of them, `upto` itself always one), remembered as the newest checkpoint:
    /// the previous checkpoint's marks still past the snapshot point, then one span per
    /// `span_entries` entries or `span_bytes` payload bytes after it, whichever comes first
    /// (a span is what a lookup inside it reads after a restart). Adjacent spans are merged (oldest first) until the
    /// count fits, so a checkpoint stays small however long the log is; what it costs is
    /// longer spans to read through after a restart. Only the entries since the previous
    /// checkpoint are looked at. None when `upto` is not a dense entry past it.
    pub fn take_checkpoint(
        &mut self,
        upto: u64,
        span_entries: u64,
        span_bytes: u64,
        marks_max: usize,
    ) -> Option<Vec<Mark>> {
        let from = self.checkpointed_to().max(self.dense_base());
        if upto <= from || upto > self.last_index() {
            return None;
        }
        let snapshot_index = self.snapshot_index;
        let mut out: Vec<Mark> = self
            .checkpoint
            .iter()
            .copied()
            .filter(|m| m.index > snapshot_index)
            .collect();
        let mut span: Option<Mark> = None;
        for index in from + 1..=upto {
            let f = *self.facts(index)?;
            let m = span.get_or_insert(Mark {
                index,
                facts: EntryFacts {
                    end_offset: f.end_offset,
                    bytes: 0,
                    max_timestamp_ms: None,
                },
            });
            m.index = index;
            m.facts = merge_facts(m.facts, f);
            let first = out.last().map_or(snapshot_index, |m| m.index) + 1;
            if index == upto
                || index + 1 - first >= span_entries.max(1)
                || m.facts.bytes >= span_bytes.max(1)
            {
                out.extend(span.take());
            }
        }
        let marks_max = marks_max.max(1);
        while out.len() > marks_max {
            // Merge pairs from the oldest; the last mark (`upto`) stays last.
            let mut merged = Vec::with_capacity(out.len().div_ceil(2));
            let mut it = out.into_iter();
            while let Some(a) = it.next() {
                match it.next() {
                    Some(b) => merged.push(Mark {
                        index: b.index,
                        facts: merge_facts(a.facts, b.facts),
                    }),
                    None => merged.push(a),
                }
            }
            out = merged;
        }
        self.checkpoint = out.clone();
        Some(out)
    }

    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Index of the last entry the map covers.
    pub fn last_index(&self) -> u64 {
        self.dense_base() + self.entries.len() as u64
    }

    /// The end offset after entry `index` (the snapshot point, a mark or an entry in the
    /// map); None inside a mark's span too (see `mark_at_or_below`).
    pub fn end_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.start_offset);
        }
        self.facts(index).map(|f| f.end_offset)
    }

    /// What the map keeps of entry `index` (after the snapshot point); for a mark, the facts
    /// of its whole span.
    pub fn facts(&self, index: u64) -> Option<&EntryFacts> {
        let base = self.dense_base();
        if index <= base {
            let pos = self.marks.partition_point(|m| m.index < index);
            return self
                .marks
                .get(pos)
                .filter(|m| m.index == index)
                .map(|m| &m.facts);
        }
        self.entries.get((index - base - 1) as usize)
    }

    /// The marks' spans then the entries after them, oldest first, each with the index it
    /// ends at.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &EntryFacts)> {
        let first = self.dense_base() + 1;
        self.marks.iter().map(|m| (m.index, &m.facts)).chain(
            self.entries
                .iter()
                .enumerate()
                .map(move |(i, f)| (first + i as u64, f)),
        )
    }

    /// Payload bytes of the entries in `(snapshot point, upto]`.
    pub fn bytes_upto(&self, upto: u64) -> u64 {
        self.iter()
            .take_while(|(i, _)| *i <= upto)
            .map(|(_, f)| f.bytes)
            .sum()
    }

    /// The next offset after the whole map.
    pub fn next_offset(&self) -> u64 {
        match (self.entries.back(), self.marks.back()) {
            (Some(f), _) => f.end_offset,
            (None, Some(m)) => m.facts.end_offset,
            (None, None) => self.start_offset,
        }
    }

    /// The entry holding `offset` (the first entry whose end offset is past it), if the map has
    /// one. Inside a mark's span the answer is the span's first entry: a reader skips the
    /// entries before `offset` (their batches are stamped with their offsets).
    pub fn index_of(&self, offset: u64) -> Option<u64> {
        if offset < self.start_offset {
            return None;
        }
        let pos = self.marks.partition_point(|m| m.facts.end_offset <= offset);
        if pos < self.marks.len() {
            return Some(match pos.checked_sub(1) {
                Some(p) => self.marks[p].index + 1,
                None => self.snapshot_index + 1,
            });
        }
        let pos = self.entries.partition_point(|f| f.end_offset <= offset);
        (pos < self.entries.len()).then_some(self.dense_base() + 1 + pos as u64)
    }

    /// Entries written to the log (Ready order): checks each data entry's stamp against the
    /// prefix and returns each entry's end offset. An entry at or below the last one replaces
    /// the suffix from there (a Raft conflict). Nothing changes on error.
    pub fn on_written(&mut self, entries: &[Entry]) -> Result<Vec<u64>, OffsetError> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        // Entries a mark covers are committed: Raft never rewrites them.
        if first.index <= self.dense_base() || first.index > self.last_index() + 1 {
            return Err(OffsetError::Gap {
                index: first.index,
                first: self.dense_base() + 1,
                next: self.last_index() + 1,
            });
        }
        let mut end = self.end_at(first.index - 1).unwrap_or(self.start_offset);
        let mut facts = Vec::with_capacity(entries.len());
        for e in entries {
            let (records, max_timestamp_ms) = records_in(e, end)?;
            end += records;
            facts.push(EntryFacts {
                end_offset: end,
                bytes: e.data.len() as u64,
                max_timestamp_ms,
            });
        }
        self.entries
            .truncate((first.index - self.dense_base() - 1) as usize);
        self.entries.extend(facts.iter().copied());
        Ok(facts.iter().map(|f| f.end_offset).collect())
    }

    /// The log was compacted to a snapshot at `index` (retention, or a snapshot installed):
    /// entries up to it leave the map. `end_offset` is the offset after it.
    pub fn on_snapshot(&mut self, index: u64, end_offset: u64) {
        if index <= self.snapshot_index {
            return;
        }
        if index > self.last_index() {
            self.marks.clear();
            self.entries.clear();
        } else if index <= self.dense_base() {
            // Inside the marks: the span the point falls in keeps its sums (an overestimate of
            // its bytes until it is compacted in turn).
            let pos = self.marks.partition_point(|m| m.index <= index);
            self.marks.drain(..pos);
        } else {
            let drop = (index - self.dense_base()) as usize;
            self.marks.clear();
            self.entries.drain(..drop);
        }
        self.snapshot_index = index;
        self.start_offset = end_offset;
    }
}

/// The facts of two adjacent spans as one (`b` after `a`).
fn merge_facts(a: EntryFacts, b: EntryFacts) -> EntryFacts {
    EntryFacts {
        end_offset: b.end_offset,
        bytes: a.bytes + b.bytes,
        max_timestamp_ms: a.max_timestamp_ms.max(b.max_timestamp_ms),
    }
}

/// Records that entry `e` adds and the largest max timestamp of its batches, checking its
/// stamp when it has any. `base` is the end offset of the prefix before it.
pub fn records_in(e: &Entry, base: u64) -> Result<(u64, Option<i64>), OffsetError> {
    if e.kind != EntryKind::Normal || e.data.is_empty() {
        return Ok((0, None));
    }
    let batches = parse_batches(&e.data).map_err(|why| OffsetError::Records {
        index: e.index,
        why: why.to_string(),
    })?;
    let max_timestamp_ms = batches.iter().map(|b| b.max_timestamp).max();
    if super::planted::active(super::planted::Planted::ReuseOffsetAfterFailover) {
        return Ok((record_count(&batches), max_timestamp_ms));
    }
    check_stamp(&batches, base).map_err(|(expected, stamped)| OffsetError::Stamp {
        index: e.index,
        expected,
        stamped,
    })?;
    Ok((record_count(&batches), max_timestamp_ms))
}

#[cfg(test)]
mod tests {
    use super::super::records::{build_batch, parse_batches, stamp};
    use super::*;

    fn data_entry(index: u64, base: u64, n: usize) -> Entry {
        let values: Vec<&[u8]> = (0..n).map(|_| b"v".as_slice()).collect();
        let mut data = build_batch(&values, 0);
        let mut batches = parse_batches(&data).unwrap();
        stamp(&mut data, &mut batches, base, 1);
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    fn noop(index: u64) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Vec::new(),
        }
    }

    #[test]
    fn offsets_are_dense_and_skip_raft_internal_entries() {
        let mut m = OffsetMap::default();
        let tags = m
            .on_written(&[noop(1), data_entry(2, 0, 3), data_entry(3, 3, 2)])
            .unwrap();
        assert_eq!(tags, vec![0, 3, 5]);
        assert_eq!(m.index_of(0), Some(2));
        assert_eq!(m.index_of(2), Some(2));
        assert_eq!(m.index_of(3), Some(3));
        assert_eq!(m.index_of(5), None);
        assert_eq!(m.next_offset(), 5);
        // A conflicting suffix from index 3 is replaced and its offsets are reused.
        let tags = m.on_written(&[noop(3), data_entry(4, 3, 1)]).unwrap();
        assert_eq!(tags, vec![3, 4]);
        assert_eq!(m.next_offset(), 4);
    }

    #[test]
    fn a_wrong_stamp_is_refused_and_changes_nothing() {
        let mut m = OffsetMap::default();
        m.on_written(&[data_entry(1, 0, 2)]).unwrap();
        let err = m.on_written(&[data_entry(2, 1, 1)]).unwrap_err();
        assert!(matches!(err, OffsetError::Stamp { expected: 2, .. }));
        assert_eq!(m.last_index(), 1);
        assert!(matches!(
            m.on_written(&[data_entry(5, 2, 1)]),
            Err(OffsetError::Gap { .. })
        ));
    }

    #[test]
    fn snapshot_moves_the_start() {
        let mut m = OffsetMap::default();
        m.on_written(&[
            data_entry(1, 0, 2),
            data_entry(2, 2, 2),
            data_entry(3, 4, 2),
        ])
        .unwrap();
        m.on_snapshot(2, 4);
        assert_eq!(m.start_offset(), 4);
        assert_eq!(m.index_of(3), None);
        assert_eq!(m.index_of(4), Some(3));
        assert_eq!(m.end_at(3), Some(6));
        let snap = PartitionSnapshot {
            end_offset: 4,
            producers: ProducerTable::default(),
        };
        assert_eq!(PartitionSnapshot::decode(&snap.encode()), Ok(snap));
        assert!(PartitionSnapshot::decode(&[1, 0]).is_err());
        // Version 1 (no producer table) is still read.
        let mut v1 = 1u32.to_le_bytes().to_vec();
        v1.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(PartitionSnapshot::decode(&v1).map(|s| s.end_offset), Ok(9));
        v1.push(0);
        assert!(PartitionSnapshot::decode(&v1).is_err());
    }

    #[test]
    fn bytes_since_the_checkpoint_count_each_entry_once_and_spans_end_at_the_byte_limit() {
        let mut m = OffsetMap::default();
        let entries: Vec<Entry> = (1..=10).map(|i| data_entry(i, 2 * (i - 1), 2)).collect();
        let bytes = entries[0].data.len() as u64;
        m.on_written(&entries).unwrap();
        assert_eq!(m.bytes_since_checkpoint(0), 0);
        assert_eq!(m.bytes_since_checkpoint(3), 3 * bytes);
        // Counted on from where the last call stopped, never twice.
        assert_eq!(m.bytes_since_checkpoint(5), 5 * bytes);
        assert_eq!(m.bytes_since_checkpoint(5), 5 * bytes);
        // Spans cut at 2 entries' bytes, not at the (large) entry count.
        let marks = m.take_checkpoint(5, 1024, 2 * bytes, 16).unwrap();
        let ends: Vec<u64> = marks.iter().map(|k| k.index).collect();
        assert_eq!(ends, vec![2, 4, 5]);
        // The count starts again after the checkpoint.
        assert_eq!(m.bytes_since_checkpoint(5), 0);
        assert_eq!(m.bytes_since_checkpoint(8), 3 * bytes);
        // Past the snapshot point when a snapshot passes the checkpoint.
        m.on_snapshot(7, 14);
        assert_eq!(m.bytes_since_checkpoint(10), 3 * bytes);
        // Never past what the map holds.
        assert_eq!(m.bytes_since_checkpoint(12), 3 * bytes);
    }

    #[test]
    fn checkpoint_marks_summarise_spans_and_a_restored_map_answers_from_them() {
        let mut m = OffsetMap::default();
        let entries: Vec<Entry> = (1..=10).map(|i| data_entry(i, 2 * (i - 1), 2)).collect();
        m.on_written(&entries).unwrap();
        // Spans of 4 entries up to 9: (0, 4], (4, 8], (8, 9].
        let marks = m.clone().take_checkpoint(9, 4, u64::MAX, 16).unwrap();
        let ends: Vec<(u64, u64)> = marks
            .iter()
            .map(|k| (k.index, k.facts.end_offset))
            .collect();
        assert_eq!(ends, vec![(4, 8), (8, 16), (9, 18)]);
        let bytes = entries[0].data.len() as u64;
        assert_eq!(marks[0].facts.bytes, 4 * bytes);
        assert_eq!(m.clone().take_checkpoint(11, 4, u64::MAX, 16), None);
        // Over the limit, pairs merge from the oldest and the last mark stays.
        let merged = m.clone().take_checkpoint(9, 1, u64::MAX, 4).unwrap();
        assert!(merged.len() <= 4);
        assert_eq!(merged.last().map(|k| k.index), Some(9));
        assert_eq!(merged.iter().map(|k| k.facts.bytes).sum::<u64>(), 9 * bytes);

        // A restart: the marks, then the entries after the last one.
        // The next checkpoint starts from the previous one's marks.
        let mut incremental = m.clone();
        incremental.take_checkpoint(6, 4, u64::MAX, 16).unwrap();
        assert_eq!(incremental.checkpointed_to(), 6);
        assert_eq!(incremental.take_checkpoint(6, 4, u64::MAX, 16), None);
        let next = incremental.take_checkpoint(9, 4, u64::MAX, 16).unwrap();
        let ends: Vec<u64> = next.iter().map(|k| k.index).collect();
        assert_eq!(ends, vec![4, 6, 9]);
        assert_eq!(next.iter().map(|k| k.facts.bytes).sum::<u64>(), 9 * bytes);

        let mut r = OffsetMap::from_marks(0, 0, marks);
        assert_eq!(r.last_index(), 9);
        assert_eq!(r.checkpointed_to(), 9);
        assert_eq!(r.next_offset(), 18);
        r.on_written(&[data_entry(10, 18, 2)]).unwrap();
        assert_eq!(r.next_offset(), 20);
        // Exact at marks and dense entries, unknown inside a span.
        assert_eq!(r.end_at(8), Some(16));
        assert_eq!(r.end_at(10), Some(20));
        assert_eq!(r.end_at(6), None);
        assert_eq!(r.mark_at_or_below(6), (4, 8));
        assert_eq!(r.mark_at_or_below(3), (0, 0));
        // Inside a span: the span's first entry, read from there.
        assert_eq!(r.index_of(0), Some(1));
        assert_eq!(r.index_of(9), Some(5));
        assert_eq!(r.index_of(16), Some(9));
        assert_eq!(r.index_of(18), Some(10));
        assert_eq!(r.index_of(20), None);
        // Entries a mark covers are committed: a write below the dense part is refused.
        assert!(matches!(
            r.on_written(&[data_entry(9, 16, 2)]),
            Err(OffsetError::Gap { .. })
        ));
        // Compaction at a mark drops the spans up to it.
        r.on_snapshot(4, 8);
        assert_eq!(r.start_offset(), 8);
        assert_eq!(r.iter().map(|(i, _)| i).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert_eq!(r.bytes_upto(9), 5 * bytes);
        // Compaction into the dense part drops every mark.
        r.on_snapshot(10, 20);
        assert_eq!(r.last_index(), 10);
        assert_eq!(r.next_offset(), 20);
    }
}
