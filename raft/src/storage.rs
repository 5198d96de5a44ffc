//! `MemStorage`: an in-memory [`LogStorage`], the reference for what the engine must provide.
//! The simulator uses it as each node's durable disk. Reads can be made to fail with
//! `Unavailable` to exercise the core's retry paths.

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
        let high = high.min(self.last_index() + 1);
        let base = self.snapshot.meta.index + 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self
            .entries
            .iter()
            .skip((low - base) as usize)
            .take(high.saturating_sub(low) as usize)
        {
            if !out.is_empty() && bytes + e.size_bytes() > bytes_max {
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
