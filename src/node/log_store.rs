//! [`EngineLog`]: the Raft core's [`LogStorage`] for one group, over the shard's engine.
//!
//! The core is synchronous; the engine's reads are not. Everything the core asks for without
//! payload bytes (bounds, terms, hard state, the snapshot point, where the configuration
//! entries are) comes from the engine's in-memory query side. Entry payloads come from a
//! bounded cache of recent entries, filled as the driver persists them and by asynchronous
//! reads: a miss answers `Unavailable`, the core asks for an [`EntryFetch`] in its `Ready`,
//! the driver reads the entries from disk into the cache and calls `on_entries_fetched`.
//!
//! [`EntryFetch`]: tern_raft::ready::EntryFetch

use std::collections::BTreeMap;
use std::rc::Rc;

use tern_engine::storage::Storage;
use tern_engine::ShardWal;
use tern_raft::message::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use tern_raft::{LogStorage, StorageError};

use super::snapshot_meta::GroupSnapshot;

/// Payload bytes kept in one group's cache before the oldest entries are dropped. A dropped
/// entry still needed is read back from disk (one fetch), so this bounds memory, not
/// correctness.
pub const CACHE_BYTES_MAX: u64 = 4 << 20;

/// Recent entries of one group, by index.
///
/// Invariant: `bytes` is the sum of the payload sizes of `entries`.
#[derive(Debug, Default)]
pub struct EntryCache {
    entries: BTreeMap<u64, Entry>,
    bytes: u64,
}

impl EntryCache {
    /// Inserts entries written or read back; a write at index i first drops every cached
    /// entry at or after i (the suffix a Raft conflict replaced).
    pub fn insert_written(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let dropped = self.entries.split_off(&first.index);
        self.bytes -= dropped.values().map(|e| e.data.len() as u64).sum::<u64>();
        self.insert_read(entries.iter().cloned());
    }

    /// Inserts entries read back from disk (they never replace newer ones: an index already
    /// cached keeps its entry).
    pub fn insert_read(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            let len = e.data.len() as u64;
            if self.entries.insert(e.index, e).is_none() {
                self.bytes += len;
            } else {
                // Same index and term in a read-back as in the cache: the sizes match.
            }
        }
        self.trim();
    }

    /// Drops entries below `index` (applied and no longer needed for replication).
    pub fn evict_below(&mut self, index: u64) {
        let keep = self.entries.split_off(&index);
        self.bytes -= self
            .entries
            .values()
            .map(|e| e.data.len() as u64)
            .sum::<u64>();
        self.entries = keep;
    }

    /// Drops entries at or after `index` (truncated by a snapshot install).
    pub fn evict_from(&mut self, index: u64) {
        let dropped = self.entries.split_off(&index);
        self.bytes -= dropped.values().map(|e| e.data.len() as u64).sum::<u64>();
    }

    fn trim(&mut self) {
        while self.bytes > CACHE_BYTES_MAX && self.entries.len() > 1 {
            if let Some((_, e)) = self.entries.pop_first() {
                self.bytes -= e.data.len() as u64;
            }
        }
    }

    pub fn get(&self, index: u64) -> Option<&Entry> {
        self.entries.get(&index)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// One group's durable log as the Raft core sees it.
pub struct EngineLog<S: Storage> {
    wal: Rc<ShardWal<S>>,
    group: u64,
    /// The group's configuration before its first snapshot (placement decided it).
    bootstrap: ConfState,
    /// The snapshot point as last made durable; refreshed by [`EngineLog::refresh_snapshot`].
    snapshot: Snapshot,
    pub cache: EntryCache,
}

impl<S: Storage> EngineLog<S> {
    /// The log of `group` as the engine holds it. Fails if the stored snapshot metadata does
    /// not decode (the group is then not started; the error names it).
    pub fn open(
        wal: Rc<ShardWal<S>>,
        group: u64,
        bootstrap: ConfState,
    ) -> Result<Self, super::NodeError> {
        let mut log = EngineLog {
            wal,
            group,
            bootstrap,
            snapshot: Snapshot::default(),
            cache: EntryCache::default(),
        };
        log.refresh_snapshot()?;
        Ok(log)
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    pub fn wal(&self) -> &Rc<ShardWal<S>> {
        &self.wal
    }

    /// Re-reads the durable snapshot point from the engine (after a batch with a snapshot
    /// became durable, and at open).
    pub fn refresh_snapshot(&mut self) -> Result<(), super::NodeError> {
        self.snapshot = match self.wal.snapshot(self.group) {
            None => Snapshot {
                meta: SnapshotMeta {
                    index: 0,
                    term: 0,
                    conf: self.bootstrap.clone(),
                    size_bytes: 0,
                },
                data: Vec::new(),
            },
            Some(info) => {
                let decoded =
                    GroupSnapshot::decode(&info.meta).map_err(|why| super::NodeError::Corrupt {
                        group: self.group,
                        what: format!("snapshot metadata at index {}: {why}", info.index),
                    })?;
                Snapshot {
                    meta: SnapshotMeta {
                        index: info.index,
                        term: info.term,
                        conf: decoded.conf,
                        size_bytes: decoded.data.len() as u64,
                    },
                    data: decoded.data,
                }
            }
        };
        self.cache.evict_below(self.snapshot.meta.index + 1);
        Ok(())
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl<S: Storage> LogStorage for EngineLog<S> {
    fn initial_state(&self) -> Result<HardState, StorageError> {
        Ok(self
            .wal
            .hard_state(self.group)
            .map(|hs| HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            })
            .unwrap_or_default())
    }

    fn first_index(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    fn last_index(&self) -> u64 {
        self.wal
            .last_index(self.group)
            .max(self.snapshot.meta.index)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let snap = &self.snapshot.meta;
        if index == snap.index {
            return Ok(snap.term);
        }
        if index < snap.index {
            return Err(StorageError::Compacted);
        }
        if let Some(t) = self.wal.term(self.group, index) {
            return Ok(t);
        }
        match self.cache.get(index) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable),
        }
    }

    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.snapshot.meta.index {
            return Err(StorageError::Compacted);
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in low..high {
            let Some(e) = self.cache.get(index) else {
                return Err(StorageError::Unavailable);
            };
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.meta.clone()
    }

    fn snapshot_chunk(
        &self,
        index: u64,
        offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<u8>, StorageError> {
        if index != self.snapshot.meta.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        let data = &self.snapshot.data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(bytes_max as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn conf_entry_indexes(&self) -> Vec<u64> {
        self.wal
            .conf_entries(self.group)
            .into_iter()
            .map(|(index, _term)| index)
            .filter(|&i| i > self.snapshot.meta.index)
            .collect()
    }
}

/// The engine's entry kind for a Raft entry kind, and back.
pub fn engine_kind(kind: EntryKind) -> tern_engine::EntryKind {
    match kind {
        EntryKind::Normal => tern_engine::EntryKind::Normal,
        EntryKind::ConfChange => tern_engine::EntryKind::ConfChange,
    }
}

pub fn raft_kind(kind: tern_engine::EntryKind) -> EntryKind {
    match kind {
        tern_engine::EntryKind::Normal => EntryKind::Normal,
        tern_engine::EntryKind::ConfChange => EntryKind::ConfChange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![7; len],
        }
    }

    #[test]
    fn cache_replaces_a_conflicting_suffix_and_stays_bounded() {
        let mut c = EntryCache::default();
        c.insert_written(&[e(1, 1, 10), e(2, 1, 10), e(3, 1, 10)]);
        c.insert_written(&[e(2, 2, 5)]);
        assert_eq!(c.get(2).map(|e| e.term), Some(2));
        assert!(c.get(3).is_none());
        assert_eq!(c.bytes(), 15);
        c.evict_below(2);
        assert!(c.get(1).is_none());
        assert_eq!(c.bytes(), 5);
        let big = (CACHE_BYTES_MAX / 2 + 1) as usize;
        c.insert_written(&[e(3, 2, big), e(4, 2, big), e(5, 2, big)]);
        assert!(c.bytes() <= CACHE_BYTES_MAX);
        assert!(c.get(5).is_some(), "the newest entry is kept");
    }
}
