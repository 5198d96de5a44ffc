//! A partition's offsets: Kafka offsets are dense per record, and Raft-internal entries (a new
//! leader's no-op, configuration changes) take none. The offset of an entry is a pure function
//! of the log prefix: the end offset (exclusive) after entry i is the end offset after entry
//! i - 1 plus the records in entry i. The leader stamps each data entry's batches with their
//! base offsets when it proposes them; every replica (the leader included) checks the stamp
//! when the entry is written to its log, and the map keeps the entry's end offset (with its
//! size and newest timestamp, which retention judges it by). A restart rebuilds the map from
//! the snapshot point's end offset and the batch headers of the entries after it (retention
//! bounds how many there are).

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

/// End offsets (and retention facts) of the entries after the snapshot point.
///
/// Invariant: the end offsets of `entries` are non-decreasing and >= `start_offset`, and
/// `entries[i]` is entry `snapshot_index + 1 + i`.
#[derive(Debug, Clone, Default)]
pub struct OffsetMap {
    snapshot_index: u64,
    start_offset: u64,
    entries: VecDeque<EntryFacts>,
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
            entries: entries.into_iter().collect(),
        }
    }

    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Index of the last entry the map covers.
    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// The end offset after entry `index` (the snapshot point or an entry in the map).
    pub fn end_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.start_offset);
        }
        self.facts(index).map(|f| f.end_offset)
    }

    /// What the map keeps of entry `index` (after the snapshot point).
    pub fn facts(&self, index: u64) -> Option<&EntryFacts> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// The entries after the snapshot point, oldest first, with their indexes.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &EntryFacts)> {
        let first = self.snapshot_index + 1;
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, f)| (first + i as u64, f))
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
        self.entries
            .back()
            .map_or(self.start_offset, |f| f.end_offset)
    }

    /// The entry holding `offset` (the first entry whose end offset is past it), if the map has
    /// one.
    pub fn index_of(&self, offset: u64) -> Option<u64> {
        if offset < self.start_offset {
            return None;
        }
        let pos = self.entries.partition_point(|f| f.end_offset <= offset);
        (pos < self.entries.len()).then_some(self.snapshot_index + 1 + pos as u64)
    }

    /// Entries written to the log (Ready order): checks each data entry's stamp against the
    /// prefix and returns each entry's end offset. An entry at or below the last one replaces
    /// the suffix from there (a Raft conflict). Nothing changes on error.
    pub fn on_written(&mut self, entries: &[Entry]) -> Result<Vec<u64>, OffsetError> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        if first.index <= self.snapshot_index || first.index > self.last_index() + 1 {
            return Err(OffsetError::Gap {
                index: first.index,
                first: self.snapshot_index + 1,
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
            .truncate((first.index - self.snapshot_index - 1) as usize);
        self.entries.extend(facts.iter().copied());
        Ok(facts.iter().map(|f| f.end_offset).collect())
    }

    /// The log was compacted to a snapshot at `index` (retention, or a snapshot installed):
    /// entries up to it leave the map. `end_offset` is the offset after it.
    pub fn on_snapshot(&mut self, index: u64, end_offset: u64) {
        if index <= self.snapshot_index {
            return;
        }
        if index <= self.last_index() {
            let drop = (index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.start_offset = end_offset;
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
        let batches = parse_batches(&data).unwrap();
        stamp(&mut data, &batches, base, 1);
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
}
