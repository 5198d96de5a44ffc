//! `MemStorage`: an in-memory [`LogStorage`], the reference for what the engine must provide.
//! The simulator uses it as each node's durable disk. Reads can be made to fail with
//! `Unavailable` to exercise the core's retry paths: all of them for a while (`unavailable`),
//! or, like the engine over a real disk, those of older entries until the driver has fetched
//! them into a bounded cache ([`SlowDisk`]).

use std::collections::VecDeque;

use crate::log::{LogStorage, StorageError};
use crate::message::{ConfState, Entry, EntryKind, HardState, NodeId, Snapshot, SnapshotMeta};

/// Invariant: `entries[i].index == snapshot.meta.index + 1 + i`.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
    /// When set, `term`, `entries` and `snapshot_chunk` answer `Unavailable`.
    pub unavailable: bool,
    /// When set, older entries are readable only once fetched (see [`SlowDisk`]).
    pub slow_disk: Option<SlowDisk>,
}

/// A model of the engine's read side over a slow disk. Terms and bounds answer at once (the
/// engine keeps them in memory), and so do the newest `tail_entries` entries (its tail cache).
/// Older entries answer `Unavailable` until [`MemStorage::fill_cache`] (the driver's
/// asynchronous read, done for a `Ready::fetches` request) brings them into a cache of at most
/// `cached_ranges_max` ranges, which evicts the oldest range first.
#[derive(Clone, Debug)]
pub struct SlowDisk {
    pub tail_entries: u64,
    pub cached_ranges_max: usize,
    /// `[low, high)` ranges fetched, oldest first.
    cached: VecDeque<(u64, u64)>,
}

impl SlowDisk {
    pub fn new(tail_entries: u64, cached_ranges_max: usize) -> Self {
        SlowDisk {
            tail_entries,
            cached_ranges_max,
            cached: VecDeque::new(),
        }
    }

    fn readable(&self, index: u64, last_index: u64) -> bool {
        index.saturating_add(self.tail_entries) > last_index
            || self
                .cached
                .iter()
                .any(|&(lo, hi)| lo <= index && index < hi)
    }

    /// Forgets every fetched range (a restart empties the cache).
    pub fn clear_cache(&mut self) {
        self.cached.clear();
    }
}

impl MemStorage {
    /// A fresh member of a new group: an empty log and a bootstrap snapshot at index 0 that
    /// carries the initial configuration. Pass `&[]` for a node that will be added later.
    pub fn new_with_conf(voters: &[NodeId]) -> Self {
        let mut storage = MemStorage::default();
        storage.snapshot.meta.conf = ConfState::with_voters(voters);
        storage
    }

    /// Writes `entries`, first truncating any suffix they replace.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let base = self.snapshot.meta.index + 1;
        assert!(
            first.index >= base,
            "append at {} below first index {base}",
            first.index
        );
        let keep = (first.index - base) as usize;
        assert!(
            keep <= self.entries.len(),
            "append at {} leaves a gap",
            first.index
        );
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// The driver's asynchronous read of an `EntryFetch` completed: the term of `low - 1` and
    /// entries `[low, high)` (at most about `bytes_max` of them, at least one) are now
    /// readable. Without a [`SlowDisk`] this changes nothing.
    pub fn fill_cache(&mut self, low: u64, high: u64, bytes_max: u64) {
        let base = self.snapshot.meta.index + 1;
        let Some(slow) = self.slow_disk.as_mut() else {
            return;
        };
        // Like a real read: stop after `bytes_max`, but always bring the first entry.
        let mut end = low;
        let mut bytes = 0;
        for e in self.entries.iter().skip(low.saturating_sub(base) as usize) {
            if e.index >= high || (end > low && bytes + e.size_bytes() > bytes_max) {
                break;
            }
            bytes += e.size_bytes();
            end = e.index + 1;
        }
        let start = low.saturating_sub(1).max(base);
        if end > start {
            slow.cached.push_back((start, end));
            while slow.cached.len() > slow.cached_ranges_max {
                slow.cached.pop_front();
            }
        }
    }

    /// Installs a snapshot received from the leader, discarding the whole log.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.snapshot = snapshot;
        self.entries.clear();
    }

    /// Takes a snapshot of the application's state at `index` (which must be applied) and
    /// drops the entries it covers.
    pub fn compact(&mut self, index: u64, conf: ConfState, data: Vec<u8>) {
        let base = self.snapshot.meta.index;
        if index <= base {
            return;
        }
        assert!(
            index <= self.last_index(),
            "compact {index} beyond last {}",
            self.last_index()
        );
        let term = self.entries[(index - base - 1) as usize].term;
        self.entries.drain(..(index - base) as usize);
        let size_bytes = data.len() as u64;
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf,
                size_bytes,
            },
            data,
        };
    }
}

impl LogStorage for MemStorage {
    fn initial_state(&self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }

    fn first_index(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let base = self.snapshot.meta.index;
        if index < base {
            return Err(StorageError::Compacted);
        }
        if index == base {
            return Ok(self.snapshot.meta.term);
        }
        if self.unavailable {
            return Err(StorageError::Unavailable);
        }
        Ok(self
            .entries
            .get((index - base - 1) as usize)
            .map_or(0, |e| e.term))
    }

    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if self.unavailable {
            return Err(StorageError::Unavailable);
        }
        let last = self.last_index();
        let readable = |index: u64| {
            self.slow_disk
                .as_ref()
                .is_none_or(|s| s.readable(index, last))
        };
        if low <= last && !readable(low) {
            return Err(StorageError::Unavailable);
        }
        let high = high.min(last + 1);
        let base = self.snapshot.meta.index + 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self
            .entries
            .iter()
            .skip((low - base) as usize)
            .take(high.saturating_sub(low) as usize)
        {
            // A slow disk hands out the readable prefix, like a read that reached the end of
            // the cached range.
            if !out.is_empty() && (bytes + e.size_bytes() > bytes_max || !readable(e.index)) {
                break;
            }
            bytes += e.size_bytes();
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
        if self.unavailable {
            return Err(StorageError::Unavailable);
        }
        let data = &self.snapshot.data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(bytes_max as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn conf_entry_indexes(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| e.index)
            .collect()
    }
}

/// Shared handles let a test or the simulator write the "disk" while the core reads it.
impl<T: LogStorage> LogStorage for std::rc::Rc<std::cell::RefCell<T>> {
    fn initial_state(&self) -> Result<HardState, StorageError> {
        self.borrow().initial_state()
    }
    fn first_index(&self) -> u64 {
        self.borrow().first_index()
    }
    fn last_index(&self) -> u64 {
        self.borrow().last_index()
    }
    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.borrow().term(index)
    }
    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        self.borrow().entries(low, high, bytes_max)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.borrow().snapshot_meta()
    }
    fn snapshot_chunk(
        &self,
        index: u64,
        offset: u64,
        bytes_max: u64,
    ) -> Result<Vec<u8>, StorageError> {
        self.borrow().snapshot_chunk(index, offset, bytes_max)
    }
    fn conf_entry_indexes(&self) -> Vec<u64> {
        self.borrow().conf_entry_indexes()
    }
}
