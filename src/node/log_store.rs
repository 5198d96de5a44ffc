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
#[derive(Debug)]
pub struct EntryCache {
    entries: BTreeMap<u64, Entry>,
    bytes: u64,
    /// Payload bytes kept before the oldest entries are dropped ([`CACHE_BYTES_MAX`] in
    /// production; the node simulation makes it tiny so catch-ups go through disk reads).
    bytes_max: u64,
}

impl Default for EntryCache {
    fn default() -> Self {
        EntryCache::new(CACHE_BYTES_MAX)
    }
}

impl EntryCache {
    pub fn new(bytes_max: u64) -> Self {
        EntryCache {
            entries: BTreeMap::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Inserts entries written or read back; a write at index i first drops every cached
    /// entry at or after i (the suffix a Raft conflict replaced).
    pub fn insert_written(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        // Usually nothing is cached at or after `first` (a plain append): then there is no
        // suffix to drop, and `split_off` (which allocates a node even for an empty result)
        // is skipped.
        if self
            .entries
            .last_key_value()
            .is_some_and(|(&last, _)| last >= first.index)
        {
            let dropped = self.entries.split_off(&first.index);
            self.bytes -= dropped.values().map(|e| e.data.len() as u64).sum::<u64>();
        }
        self.insert(entries.iter().cloned());
        self.trim(None);
    }

    /// Inserts entries read back from disk (they never replace newer ones: an index already
    /// cached keeps its entry). The entries just read are kept even when the cache is over its
    /// budget: the caller hands them to the core right after (`on_entries_fetched`), and
    /// evicting them first (they are usually the oldest) would make the core ask for the same
    /// read again, for ever. The excess is bounded by one fetch's `bytes_max` and goes at the
    /// next insert.
    pub fn insert_read(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let read = self.insert(entries);
        self.trim(read);
    }

    /// Inserts without trimming; returns the range of indexes inserted.
    fn insert(&mut self, entries: impl IntoIterator<Item = Entry>) -> Option<(u64, u64)> {
        let mut range: Option<(u64, u64)> = None;
        for e in entries {
            range = Some(range.map_or((e.index, e.index), |(lo, hi)| {
                (lo.min(e.index), hi.max(e.index))
            }));
            let len = e.data.len() as u64;
            if self.entries.insert(e.index, e).is_none() {
                self.bytes += len;
            } else {
                // Same index and term in a read-back as in the cache: the sizes match.
            }
        }
        range
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

    /// Drops the oldest entries until the cache is within its budget, never one of `keep`
    /// (an inclusive range of indexes) and never the newest entry.
    fn trim(&mut self, keep: Option<(u64, u64)>) {
        let kept = |i: u64| keep.is_some_and(|(lo, hi)| (lo..=hi).contains(&i));
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let Some(oldest) = self.entries.keys().copied().find(|&i| !kept(i)) else {
                return;
            };
            if Some(&oldest) == self.entries.keys().next_back() {
                return;
            }
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.data.len() as u64;
            }
        }
    }

    pub fn get(&self, index: u64) -> Option<&Entry> {
        self.entries.get(&index)
    }

    /// The cached entries from `low` on, before `high`, up to `bytes_max` (at least one), or
    /// `None` when `low` itself is not cached. A gap after `low` ends the run early: the core
    /// sends what it got and asks for the rest later. Answering `None` for a later gap would
    /// throw away the entries just read back for a lagging follower, and the core would ask
    /// for the same read again for ever (a rebuilt replica of a loaded partition never caught
    /// up, found by `tern-bench recovery --cluster`).
    pub fn run_from(&self, low: u64, high: u64, bytes_max: u64) -> Option<Vec<Entry>> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in low..high {
            let Some(e) = self.get(index) else { break };
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
        }
        (low >= high || !out.is_empty()).then_some(out)
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
    /// The durable commit index was past the last entry at open: committed entries were cut
    /// offline, so the log's initial commit is its last index (see `cap_commit_at_last_index`).
    commit_capped: bool,
}

impl<S: Storage> EngineLog<S> {
    /// The log of `group` as the engine holds it. Fails if the stored snapshot metadata does
    /// not decode (the group is then not started; the error names it).
    pub fn open(
        wal: Rc<ShardWal<S>>,
        group: u64,
        bootstrap: ConfState,
        cache_bytes_max: u64,
    ) -> Result<Self, super::NodeError> {
        let mut log = EngineLog {
            wal,
            group,
            bootstrap,
            snapshot: Snapshot::default(),
            cache: EntryCache::new(cache_bytes_max),
            commit_capped: false,
        };
        log.refresh_snapshot()?;
        Ok(log)
    }

    pub fn group(&self) -> u64 {
        self.group
    }

    /// If the durable hard state's commit index is past the last entry (committed entries
    /// were cut offline: `tern repair --skip-corrupt` at a hole, an engine recovery that cut
    /// the group), the log reports its last index as its initial commit instead of refusing
    /// to start, and returns true: the caller starts the group rebuilding, since the
    /// acknowledgements of the cut entries were promises it no longer keeps. The entries it
    /// still holds are a committed prefix; its leader sends the rest.
    pub fn cap_commit_at_last_index(&mut self) -> bool {
        let last = LogStorage::last_index(self);
        self.commit_capped = self
            .wal
            .hard_state(self.group)
            .is_some_and(|hs| hs.commit > last);
        self.commit_capped
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
        let last = LogStorage::last_index(self);
        Ok(self
            .wal
            .hard_state(self.group)
            .map(|hs| HardState {
                term: hs.term,
                vote: hs.vote,
                commit: if self.commit_capped {
                    hs.commit.min(last)
                } else {
                    hs.commit
                },
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
        self.cache
            .run_from(low, high, bytes_max)
            .ok_or(StorageError::Unavailable)
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

/// The newest configuration `group` stores: its newest configuration-change entry (read from
/// disk, checksum verified) or else its snapshot point's. `None` when it stores none (it runs
/// the configuration placement gives it at start, `EngineLog::open`'s `bootstrap`). For the
/// offline readers (`force_new_cluster.rs`, `tern import-topic`); a running group asks its
/// Raft core.
pub async fn stored_conf<S: Storage>(
    wal: &ShardWal<S>,
    group: u64,
) -> Result<Option<ConfState>, String> {
    let snapshot = wal.snapshot(group);
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
    let last_index = wal.last_index(group).max(snapshot_index);
    let newest_entry = wal
        .conf_entries(group)
        .into_iter()
        .map(|(index, _)| index)
        .filter(|&i| i > snapshot_index && i <= last_index)
        .max();
    if let Some(index) = newest_entry {
        let read = wal
            .read(group, index, index + 1, u64::MAX)
            .await
            .map_err(|e| format!("group {group}: reading configuration entry {index}: {e}"))?;
        let entry = read
            .into_iter()
            .find(|e| e.index == index)
            .ok_or_else(|| format!("group {group}: configuration entry {index} not read"))?;
        return ConfState::decode(&entry.data)
            .map(Some)
            .ok_or_else(|| format!("group {group}: configuration entry {index} does not decode"));
    }
    match snapshot {
        Some(s) => GroupSnapshot::decode(&s.meta)
            .map(|decoded| Some(decoded.conf))
            .map_err(|why| format!("group {group}: snapshot metadata: {why}")),
        None => Ok(None),
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

    #[test]
    fn a_run_stops_at_a_gap_and_only_a_missing_first_entry_is_unavailable() {
        let mut c = EntryCache::default();
        c.insert_written(&[e(10, 1, 5), e(11, 1, 5)]);
        c.insert_read([e(1, 1, 5), e(2, 1, 5)]);
        let idx = |v: Option<Vec<Entry>>| v.map(|v| v.iter().map(|e| e.index).collect::<Vec<_>>());
        assert_eq!(idx(c.run_from(1, 12, u64::MAX)), Some(vec![1, 2]));
        assert_eq!(idx(c.run_from(10, 12, u64::MAX)), Some(vec![10, 11]));
        assert_eq!(
            idx(c.run_from(1, 12, 1)),
            Some(vec![1]),
            "at least one entry"
        );
        assert_eq!(idx(c.run_from(3, 12, u64::MAX)), None);
        assert_eq!(idx(c.run_from(5, 5, u64::MAX)), Some(vec![]));
    }

    /// A leader's cache full of its recent tail, and a lagging follower needing old entries:
    /// the entries read back for it must survive the insert, or the core asks for the same
    /// read again for ever (found by `tern-bench recovery --cluster`: a rebuilt replica of a
    /// loaded partition never caught up while its leader spun).
    #[test]
    fn entries_read_back_survive_a_full_cache() {
        let mut c = EntryCache::default();
        let big = (CACHE_BYTES_MAX / 4) as usize;
        c.insert_written(&[
            e(100, 1, big),
            e(101, 1, big),
            e(102, 1, big),
            e(103, 1, big),
        ]);
        c.insert_read([e(1, 1, big / 2), e(2, 1, big / 2), e(3, 1, big / 2)]);
        for i in 1..=3 {
            assert!(c.get(i).is_some(), "entry {i} read back is kept");
        }
        assert!(c.get(103).is_some(), "the newest entry is kept");
        assert!(
            c.get(100).is_none(),
            "the oldest entry outside the read goes first"
        );
        // The next write brings the cache back within its budget.
        c.insert_written(&[e(104, 1, 10)]);
        assert!(c.bytes() <= CACHE_BYTES_MAX);
    }
}
