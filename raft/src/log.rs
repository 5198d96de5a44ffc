//! The Raft log: durable entries behind the [`LogStorage`] trait, plus the in-memory suffix
//! that is not yet persisted ([`Unstable`]).
//!
//! ```text
//!   storage (durable)                    unstable (memory)
//!   [snapshot] first_index ... offset-1 | offset ... last_index
//!                                      ^ entries below `offset` are durable and match ours
//! ```
//! After a conflicting append truncates below `offset`, storage may still hold a stale suffix
//! at and after `offset`; it is masked by the unstable entries until their persistence
//! overwrites it.

use crate::message::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

/// Why a storage read did not return data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The entry was compacted into the snapshot.
    #[error("entry compacted into the snapshot")]
    Compacted,
    /// The data exists but cannot be read right now (slow disk, read in progress). The core
    /// never blocks: it skips the work and retries on a later tick or message.
    #[error("log storage temporarily unavailable")]
    Unavailable,
    /// A snapshot chunk was requested for a snapshot that has since been replaced.
    #[error("snapshot replaced by a newer one")]
    SnapshotOutOfDate,
}

/// Durable log storage of one group, backed by the engine in production and by
/// `MemStorage` in tests. It holds what the caller persisted from `Ready`s; the core only reads.
///
/// Contract: `first_index() = snapshot_meta().index + 1` and `last_index() >= snapshot index`.
pub trait LogStorage {
    /// The persisted hard state (term, vote, commit).
    fn initial_state(&self) -> Result<HardState, StorageError>;
    /// The first index that `entries` may return.
    fn first_index(&self) -> u64;
    /// The last persisted index (the snapshot's index when the log is empty).
    fn last_index(&self) -> u64;
    /// The term of entry `index`, for `index` in `[first_index() - 1, last_index()]`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Entries `[low, high)`, stopping early once `bytes_max` is reached but always returning
    /// at least one entry when `low < high`. A storage that reads asynchronously may also
    /// stop early before an entry it cannot give without waiting; it answers
    /// [`StorageError::Unavailable`] only when it cannot give entry `low`.
    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError>;
    /// Metadata of the latest snapshot (index 0 with the bootstrap configuration before any).
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// Up to `bytes_max` bytes of the data of snapshot `index` starting at `offset`.
    fn snapshot_chunk(
        &self,
        index: u64,
        offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<u8>, StorageError>;
    /// The indexes of the `ConfChange` entries in `(snapshot index, last_index()]`, ascending.
    /// Storage keeps them in memory (the engine notes them as entries are written and dropped
    /// by truncation or compaction), so that a restarting member finds its configuration
    /// without reading the log: `RawNode::new` then reads only the newest of these entries
    /// through `entries`, which must be able to answer for them at that time.
    fn conf_entry_indexes(&self) -> Vec<u64>;
}

/// Entries (and possibly a snapshot) accepted but not yet persisted.
///
/// Invariant: `entries[i].index == offset + i`; `persist_handed_out + 1 >= offset`; with a
/// snapshot, `offset == snapshot.meta.index + 1`.
#[derive(Debug)]
pub struct Unstable {
    snapshot: Option<Snapshot>,
    snapshot_handed_out: bool,
    entries: Vec<Entry>,
    offset: u64,
    /// The last entry index already handed to the caller for persistence.
    persist_handed_out: u64,
}

/// The log of one group member.
///
/// Invariant: `applied <= committed <= last_index()`; `confs` is non-empty, sorted by index,
/// its first element is at or below `committed` and every other element is the configuration
/// entry at that index in the log.
pub struct RaftLog<S> {
    pub storage: S,
    unstable: Unstable,
    pub committed: u64,
    /// The last index handed to the application to apply.
    pub applied: u64,
    /// Raft §6: a member uses the latest configuration in its log, committed or not. These are
    /// the configurations that a truncation could fall back to: the latest committed one and
    /// every one appended after it (at most two, since a leader has one change in flight).
    confs: Vec<(u64, ConfState)>,
}

impl<S: LogStorage> RaftLog<S> {
    /// `confs` as computed by [`load_confs`].
    pub fn new(storage: S, committed: u64, applied: u64, confs: Vec<(u64, ConfState)>) -> Self {
        assert!(!confs.is_empty());
        let offset = storage.last_index() + 1;
        RaftLog {
            storage,
            unstable: Unstable {
                snapshot: None,
                snapshot_handed_out: false,
                entries: Vec::new(),
                offset,
                persist_handed_out: offset - 1,
            },
            committed,
            applied,
            confs,
        }
    }

    /// The configuration in force: the latest one in the log.
    pub fn conf(&self) -> &ConfState {
        &self.confs[self.confs.len() - 1].1
    }

    /// The index of the entry (or snapshot) that set the configuration in force.
    pub fn conf_index(&self) -> u64 {
        self.confs[self.confs.len() - 1].0
    }

    pub fn first_index(&self) -> u64 {
        match &self.unstable.snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> u64 {
        if let Some(last) = self.unstable.entries.last() {
            return last.index;
        }
        match &self.unstable.snapshot {
            Some(s) => s.meta.index,
            None => self.storage.last_index(),
        }
    }

    /// The term of `index`; `Ok(0)` past the end of the log (term 0 matches nothing real).
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index > self.last_index() {
            return Ok(0);
        }
        if index >= self.unstable.offset {
            return Ok(self.unstable.entries[(index - self.unstable.offset) as usize].term);
        }
        if let Some(s) = &self.unstable.snapshot {
            return if index == s.meta.index {
                Ok(s.meta.term)
            } else {
                Err(StorageError::Compacted)
            };
        }
        if index + 1 < self.storage.first_index() {
            return Err(StorageError::Compacted);
        }
        self.storage.term(index)
    }

    pub fn last_term(&self) -> Result<u64, StorageError> {
        self.term(self.last_index())
    }

    /// Whether the log holds an entry at `index` with `term`. Nothing beyond the last index
    /// matches, whatever `term` (even 0, which `term` reports there).
    pub fn match_term(&self, index: u64, term: u64) -> Result<bool, StorageError> {
        if index > self.last_index() {
            return Ok(false);
        }
        Ok(self.term(index)? == term)
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up-to-date as
    /// ours? When our last term cannot be read, answer no (refusing a vote is always safe).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        match self.last_term() {
            Ok(ours) => last_term > ours || (last_term == ours && last_index >= self.last_index()),
            Err(_) => false,
        }
    }

    /// Entries `[low, high)` limited to about `bytes_max`, reading storage then memory.
    pub fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        let high = high.min(self.last_index() + 1);
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let offset = self.unstable.offset;
        if low < offset {
            out = self.storage.entries(low, high.min(offset), bytes_max)?;
            bytes = out.iter().map(Entry::size_bytes).sum();
            let expected = high.min(offset) - low;
            if (out.len() as u64) < expected || bytes >= bytes_max {
                return Ok(out);
            }
        }
        for e in
            &self.unstable.entries[(low.max(offset) - offset) as usize..(high - offset) as usize]
        {
            if !out.is_empty() && bytes + e.size_bytes() > bytes_max {
                break;
            }
            bytes += e.size_bytes();
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Appends `entries` (contiguous, starting anywhere after `committed`), truncating any
    /// conflicting suffix. Returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        let after = first.index;
        assert!(
            after > self.committed,
            "append at {after} would overwrite committed {}",
            self.committed
        );
        let u = &mut self.unstable;
        let end = u.offset + u.entries.len() as u64;
        if after == end {
            // Plain append.
        } else if after <= u.offset {
            // Replace everything in memory; storage from `after` on is masked until overwritten.
            assert!(
                u.snapshot.is_none() || after > u.offset - 1,
                "truncating a pending snapshot"
            );
            u.offset = after;
            u.entries.clear();
        } else {
            u.entries.truncate((after - u.offset) as usize);
        }
        u.persist_handed_out = u.persist_handed_out.min(after - 1);
        u.entries.extend_from_slice(entries);
        // Configurations of the replaced suffix are gone with it.
        self.confs.retain(|(index, _)| *index < after);
        assert!(
            !self.confs.is_empty(),
            "truncation removed the committed configuration"
        );
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            // Callers check that configuration entries decode before appending them.
            if let Some(conf) = ConfState::decode(&e.data) {
                self.confs.push((e.index, conf));
            }
        }
        self.last_index()
    }

    /// The AppendEntries consistency check and append (Raft Figure 2, receiver steps 2–5).
    /// Returns `Ok(None)` when the log does not contain (`prev_index`, `prev_term`), else the
    /// index of the last new entry.
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        commit: u64,
        entries: &[Entry],
    ) -> Result<Option<u64>, StorageError> {
        if !self.match_term(prev_index, prev_term)? {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        // Find the first entry that is not already in the log (same index, same term).
        let mut conflict = None;
        for (i, e) in entries.iter().enumerate() {
            if !self.match_term(e.index, e.term)? {
                conflict = Some(i);
                break;
            }
        }
        if let Some(i) = conflict {
            assert!(
                entries[i].index > self.committed,
                "leader would overwrite committed entry {} (commit {})",
                entries[i].index,
                self.committed
            );
            self.append(&entries[i..]);
        }
        self.commit_to(commit.min(last_new));
        Ok(Some(last_new))
    }

    /// Advances the commit index; never moves it back.
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// The highest index that is durable and belongs to our log, or 0 while a snapshot is
    /// waiting to be persisted (then nothing newer may count as durable).
    pub fn persisted_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        self.unstable.offset - 1
    }

    /// The caller persisted entries up to (`term`, `index`). Ignored when those entries were
    /// replaced in the meantime: a later acknowledgement will cover the replacements.
    pub fn stable_to(&mut self, term: u64, index: u64) {
        let u = &mut self.unstable;
        if index < u.offset || index >= u.offset + u.entries.len() as u64 {
            return;
        }
        if u.entries[(index - u.offset) as usize].term != term {
            return;
        }
        let count = (index + 1 - u.offset) as usize;
        u.entries.drain(..count);
        if u.entries.is_empty() {
            u.entries = Vec::new();
        }
        u.offset = index + 1;
        u.persist_handed_out = u.persist_handed_out.max(index);
    }

    /// The caller persisted the snapshot at `index`.
    pub fn stable_snapshot_to(&mut self, index: u64) {
        if self
            .unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_handed_out = false;
        }
    }

    /// Replaces the whole log with `snapshot` (the follower side of InstallSnapshot).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index > self.committed);
        self.committed = index;
        self.confs = vec![(index, snapshot.meta.conf.clone())];
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_handed_out: false,
            entries: Vec::new(),
            offset: index + 1,
            persist_handed_out: index,
        };
    }

    /// Entries not yet handed out for persistence; marks them handed out.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let u = &mut self.unstable;
        let from = u.persist_handed_out + 1;
        if from >= u.offset + u.entries.len() as u64 {
            return Vec::new();
        }
        let out = u.entries[(from - u.offset) as usize..].to_vec();
        u.persist_handed_out = u.offset + u.entries.len() as u64 - 1;
        out
    }

    pub fn has_unpersisted(&self) -> bool {
        let u = &self.unstable;
        u.persist_handed_out + 1 < u.offset + u.entries.len() as u64
            || (u.snapshot.is_some() && !u.snapshot_handed_out)
    }

    /// A snapshot to hand out for installation; marks it handed out.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        if self.unstable.snapshot_handed_out {
            return None;
        }
        let snap = self.unstable.snapshot.clone()?;
        self.unstable.snapshot_handed_out = true;
        Some(snap)
    }

    /// The last index that may be handed out to apply: committed AND durable here. Applying
    /// waits for a pending snapshot.
    pub fn applicable_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() && !self.unstable.snapshot_handed_out {
            return self.applied;
        }
        self.committed.min(self.persisted_index()).max(self.applied)
    }

    pub fn has_next_committed(&self) -> bool {
        self.applicable_index() > self.applied
    }

    /// The next committed, durable entries to apply (read from storage).
    pub fn next_committed(&self, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        let hi = self.applicable_index();
        if hi <= self.applied {
            return Ok(Vec::new());
        }
        self.storage.entries(self.applied + 1, hi + 1, bytes_max)
    }
}

/// The configurations a restarting member needs, read without scanning the log: storage names
/// its configuration entries ([`LogStorage::conf_entry_indexes`]) and only the newest ones are
/// read: every one after `committed` (a truncation could remove them) and the latest at or
/// below it (what the member falls back to). With none at or below `committed`, the
/// snapshot's configuration is the fallback. Reads at most two or three entries.
pub fn load_confs<S: LogStorage>(
    storage: &S,
    committed: u64,
) -> Result<Vec<(u64, ConfState)>, LoadConfError> {
    let meta = storage.snapshot_meta();
    let last = storage.last_index();
    let indexes = storage.conf_entry_indexes();
    let in_range = indexes.iter().all(|&i| i > meta.index && i <= last);
    let ascending = indexes.windows(2).all(|w| w[0] < w[1]);
    if !in_range || !ascending {
        return Err(LoadConfError::Corrupt(
            "configuration entry indexes out of order or outside the log",
        ));
    }
    let mut newest_first = Vec::new();
    for &index in indexes.iter().rev() {
        let entries = storage
            .entries(index, index + 1, u64::MAX)
            .map_err(LoadConfError::Storage)?;
        let conf = match entries.as_slice() {
            [e] if e.index == index && e.kind == EntryKind::ConfChange => {
                ConfState::decode(&e.data).ok_or(LoadConfError::Corrupt(
                    "configuration entry does not decode",
                ))?
            }
            _ => {
                return Err(LoadConfError::Corrupt(
                    "storage named an entry that is not a configuration entry",
                ))
            }
        };
        newest_first.push((index, conf));
        if index <= committed {
            break;
        }
    }
    let fallback_found = newest_first.last().is_some_and(|(i, _)| *i <= committed);
    if !fallback_found {
        newest_first.push((meta.index, meta.conf));
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Why [`load_confs`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadConfError {
    #[error("raft storage: {0}")]
    Storage(StorageError),
    /// Storage contradicts itself about its configuration entries.
    #[error("raft configuration entries corrupt: {0}")]
    Corrupt(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EntryKind;
    use crate::storage::MemStorage;

    fn ent(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    #[test]
    fn truncation_masks_stale_storage_until_persisted() {
        let mut storage = MemStorage::new_with_conf(&[1]);
        storage.append(&[ent(1, 1), ent(1, 2), ent(1, 3)]);
        let mut log = RaftLog::new(storage, 1, 1, vec![(0, ConfState::default())]);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.maybe_append(1, 1, 0, &[ent(2, 2)]), Ok(Some(2)));
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2), Ok(2));
        assert_eq!(log.term(3), Ok(0));
        assert_eq!(log.persisted_index(), 1);
        let batch = log.take_unpersisted();
        assert_eq!(batch, vec![ent(2, 2)]);
        log.storage.append(&batch);
        log.stable_to(2, 2);
        assert_eq!(log.persisted_index(), 2);
        assert_eq!(log.storage.last_index(), 2);
    }

    #[test]
    fn stale_persistence_ack_is_ignored_after_replacement() {
        let storage = MemStorage::new_with_conf(&[1]);
        let mut log = RaftLog::new(storage, 0, 0, vec![(0, ConfState::default())]);
        log.append(&[ent(1, 1), ent(1, 2)]);
        assert_eq!(log.take_unpersisted().len(), 2);
        log.append(&[ent(2, 2)]);
        assert_eq!(log.take_unpersisted(), vec![ent(2, 2)]);
        log.stable_to(1, 2);
        assert_eq!(log.persisted_index(), 0);
        log.stable_to(2, 2);
        assert_eq!(log.persisted_index(), 2);
    }

    /// Counts the entries read through it, to show what a restart reads.
    struct CountingStorage {
        inner: MemStorage,
        entries_read: std::cell::Cell<u64>,
    }

    impl LogStorage for CountingStorage {
        fn initial_state(&self) -> Result<HardState, StorageError> {
            self.inner.initial_state()
        }
        fn first_index(&self) -> u64 {
            self.inner.first_index()
        }
        fn last_index(&self) -> u64 {
            self.inner.last_index()
        }
        fn term(&self, index: u64) -> Result<u64, StorageError> {
            self.inner.term(index)
        }
        fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
            let out = self.inner.entries(low, high, bytes_max)?;
            self.entries_read
                .set(self.entries_read.get() + out.len() as u64);
            Ok(out)
        }
        fn snapshot_meta(&self) -> SnapshotMeta {
            self.inner.snapshot_meta()
        }
        fn snapshot_chunk(&self, i: u64, o: u64, b: u64) -> Result<Vec<u8>, StorageError> {
            self.inner.snapshot_chunk(i, o, b)
        }
        fn conf_entry_indexes(&self) -> Vec<u64> {
            self.inner.conf_entry_indexes()
        }
    }

    fn conf_ent(term: u64, index: u64, voters: &[u64]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::ConfChange,
            data: ConfState::with_voters(voters).encode(),
        }
    }

    #[test]
    fn restart_reads_only_the_newest_configuration_entries_not_the_log() {
        let mut inner = MemStorage::new_with_conf(&[1]);
        let mut log: Vec<Entry> = (1..=10_000).map(|i| ent(1, i)).collect();
        log[99] = conf_ent(1, 100, &[1, 2]);
        log[4_999] = conf_ent(1, 5_000, &[1, 2, 3]);
        log[9_989] = conf_ent(1, 9_990, &[1, 2, 3, 4]);
        inner.append(&log);
        let storage = CountingStorage {
            inner,
            entries_read: std::cell::Cell::new(0),
        };
        // Committed 9000: 9990 may still be truncated, 5000 is the fallback, 100 is not needed.
        let confs = load_confs(&storage, 9_000).expect("confs");
        assert_eq!(
            confs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![5_000, 9_990]
        );
        assert_eq!(confs[1].1.voters, vec![1, 2, 3, 4]);
        assert_eq!(storage.entries_read.get(), 2);
        // Nothing committed after the snapshot: the snapshot's configuration is the fallback.
        let confs = load_confs(&storage, 0).expect("confs");
        assert_eq!(
            confs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 100, 5_000, 9_990]
        );
    }

    #[test]
    fn restart_refuses_storage_that_names_a_non_configuration_entry() {
        struct Lying(MemStorage);
        impl LogStorage for Lying {
            fn initial_state(&self) -> Result<HardState, StorageError> {
                self.0.initial_state()
            }
            fn first_index(&self) -> u64 {
                self.0.first_index()
            }
            fn last_index(&self) -> u64 {
                self.0.last_index()
            }
            fn term(&self, index: u64) -> Result<u64, StorageError> {
                self.0.term(index)
            }
            fn entries(&self, l: u64, h: u64, b: u64) -> Result<Vec<Entry>, StorageError> {
                self.0.entries(l, h, b)
            }
            fn snapshot_meta(&self) -> SnapshotMeta {
                self.0.snapshot_meta()
            }
            fn snapshot_chunk(&self, i: u64, o: u64, b: u64) -> Result<Vec<u8>, StorageError> {
                self.0.snapshot_chunk(i, o, b)
            }
            fn conf_entry_indexes(&self) -> Vec<u64> {
                vec![2, 9]
            }
        }
        let mut inner = MemStorage::new_with_conf(&[1]);
        inner.append(&[ent(1, 1), ent(1, 2), ent(1, 3)]);
        assert!(matches!(
            load_confs(&Lying(inner.clone()), 0),
            Err(LoadConfError::Corrupt(_))
        ));
        inner.append(&[
            ent(1, 4),
            ent(1, 5),
            ent(1, 6),
            ent(1, 7),
            ent(1, 8),
            ent(1, 9),
        ]);
        assert!(matches!(
            load_confs(&Lying(inner), 0),
            Err(LoadConfError::Corrupt(_))
        ));
    }
}
