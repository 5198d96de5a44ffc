//! In-memory state of the Raft groups of one shard, rebuilt by recovery and kept current as
//! batches are written: where each entry lives, hard state, compaction and snapshot points.
//!
//! The same [`GroupTable::apply`] runs at recovery (records read back) and at run time (records
//! just written), so both paths agree on what a record means.

use std::collections::{BTreeMap, VecDeque};

use crate::format::{EntryKind, RecordKind};
use crate::group_map::GroupMap;

/// Where an entry's record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLoc {
    pub segment: u64,
    /// Offset of the record header in the segment file.
    pub offset: u64,
    pub payload_len: u32,
    pub term: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    /// 0 = no vote.
    pub vote: u64,
    pub commit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub term: u64,
    pub index: u64,
    pub meta: Vec<u8>,
}

/// One group's durable log and state. Fields are private to the engine (the group table is
/// the only writer, so its invariants hold); the layer above reads them through methods.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// Invariant: entries[i] holds index `first_index + i`.
    pub(crate) first_index: u64,
    /// Lowest index an entry may still have: raised only by compaction and snapshots.
    /// Invariant: floor_index <= first_index. They differ when an entry arrived in an empty
    /// log above the floor (a new group, or the first append after compacting everything):
    /// `first_index` jumps to it. On replay after a purge that jump can also happen because
    /// the entries before it were in a purged segment, and a later record may then rewrite
    /// the log from an index between the two (see the `Entry` arm of [`GroupTable::apply`]).
    pub(crate) floor_index: u64,
    pub(crate) entries: VecDeque<EntryLoc>,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) snapshot: Option<SnapshotInfo>,
    /// Index -> term of every configuration-change entry present in `entries`, so the Raft
    /// layer finds its configuration without reading the log.
    /// Invariant: every key k has first_index <= k <= last_index and
    /// entries[k - first_index] has that term.
    pub(crate) conf_entries: BTreeMap<u64, u64>,
    /// Payload of the newest `GroupMeta` record (opaque here).
    pub(crate) group_meta: Option<Vec<u8>>,
}

impl Default for GroupState {
    /// An empty log starts at index 1 (Raft's first index).
    fn default() -> Self {
        GroupState {
            first_index: 1,
            floor_index: 1,
            entries: VecDeque::new(),
            hard_state: None,
            snapshot: None,
            conf_entries: BTreeMap::new(),
            group_meta: None,
        }
    }
}

impl GroupState {
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Lowest index an entry may still have (raised by compaction and snapshots only).
    pub fn floor_index(&self) -> u64 {
        self.floor_index
    }

    /// Where each entry lives, `first_index` first.
    pub fn entries(&self) -> &VecDeque<EntryLoc> {
        &self.entries
    }

    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// The newest metadata the layer above kept with the group (`GroupMeta`).
    pub fn group_meta(&self) -> Option<&[u8]> {
        self.group_meta.as_deref()
    }

    pub fn snapshot(&self) -> Option<&SnapshotInfo> {
        self.snapshot.as_ref()
    }

    /// (index, term) of the configuration-change entries in the log, oldest first.
    pub fn conf_entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.conf_entries.iter().map(|(i, t)| (*i, *t))
    }

    /// Term of the entry at `index`, or of the snapshot point when `index` is its index.
    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some(s) = self.snapshot.as_ref().filter(|s| s.index == index) {
            return Some(s.term);
        }
        self.get(index).map(|l| l.term)
    }

    /// Drops the suffix of entries from `index` on (index >= first_index).
    fn drop_from(&mut self, index: u64, live: &mut BTreeMap<u64, u64>) {
        let keep = index.saturating_sub(self.first_index) as usize;
        if keep < self.entries.len() {
            for loc in self.entries.drain(keep..) {
                GroupTable::dec_live(live, &loc);
            }
        }
        self.conf_entries.split_off(&index);
    }

    /// Drops the entries below `first` and makes it the first index (first > first_index).
    fn drop_before(&mut self, first: u64, live: &mut BTreeMap<u64, u64>) {
        let drop = ((first - self.first_index) as usize).min(self.entries.len());
        for loc in self.entries.drain(..drop) {
            GroupTable::dec_live(live, &loc);
        }
        self.first_index = first;
        self.conf_entries = self.conf_entries.split_off(&first);
    }

    /// Last index present, or `first_index - 1` when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }

    pub fn get(&self, index: u64) -> Option<&EntryLoc> {
        if index < self.first_index {
            return None;
        }
        self.entries.get((index - self.first_index) as usize)
    }
}

/// Summary of one group after recovery, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<(u64, u64)>,
}

/// One record as the group table sees it (no payload except snapshot metadata).
#[derive(Debug, Clone)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
    pub segment: u64,
    pub offset: u64,
    pub payload_len: u32,
    /// Only for `SnapshotMeta`.
    pub snapshot_meta: Option<Vec<u8>>,
}

/// Why a record could not be applied: the log would have a hole or go backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    pub group: u64,
    pub index: u64,
    pub why: String,
}

/// The groups of one shard. Written only by [`GroupTable::apply`] (and the purge, which
/// forgets segments), so fields are private to the engine.
#[derive(Debug, Default)]
pub struct GroupTable {
    pub(crate) groups: GroupMap<GroupState>,
    /// Live entries per segment id; a sealed segment at zero can be purged.
    pub(crate) live_per_segment: BTreeMap<u64, u64>,
}

impl GroupTable {
    pub fn group(&self, group: u64) -> Option<&GroupState> {
        self.groups.get(&group)
    }

    /// Group ids, ascending.
    pub fn group_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn info(&self, group: u64) -> Option<GroupInfo> {
        self.groups.get(&group).map(|g| GroupInfo {
            group,
            first_index: g.first_index,
            last_index: g.last_index(),
            hard_state: g.hard_state,
            snapshot: g.snapshot.as_ref().map(|s| (s.term, s.index)),
        })
    }

    pub fn all_info(&self) -> Vec<GroupInfo> {
        let mut ids: Vec<u64> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|g| self.info(g)).collect()
    }

    fn dec_live(live: &mut BTreeMap<u64, u64>, loc: &EntryLoc) {
        if let Some(n) = live.get_mut(&loc.segment) {
            *n = n.saturating_sub(1);
        }
    }

    /// Applies one record. Control records always apply; an entry that would leave a hole
    /// (or rewrite compacted history) is refused and the table is left unchanged.
    pub fn apply(&mut self, rec: &RecordMeta) -> Result<(), ApplyError> {
        let live = &mut self.live_per_segment;
        match rec.kind {
            RecordKind::BatchHeader | RecordKind::Seal => Ok(()),
            RecordKind::Entry => {
                let kind = EntryKind::from_aux(rec.aux).map_err(|e| ApplyError {
                    group: rec.group,
                    index: rec.index,
                    why: e.to_string(),
                })?;
                let g = self.groups.entry(rec.group).or_default();
                let index = rec.index;
                if index < g.floor_index {
                    return Err(ApplyError {
                        group: rec.group,
                        index,
                        why: format!("below first index {}", g.floor_index),
                    });
                }
                if index < g.first_index {
                    // Only on replay after a purge: the entries in front of `first_index`
                    // were in a purged segment (so all of them were dead), and this entry is
                    // a Raft overwrite that at run time replaced them and everything after.
                    // Run time never gets here: it validates against the same bounds.
                    for loc in g.entries.drain(..) {
                        Self::dec_live(live, &loc);
                    }
                    g.conf_entries.clear();
                    g.first_index = index;
                } else if g.entries.is_empty() {
                    g.first_index = index;
                } else if index > g.last_index() + 1 {
                    return Err(ApplyError {
                        group: rec.group,
                        index,
                        why: format!("gap after last index {}", g.last_index()),
                    });
                } else if index <= g.last_index() {
                    // Overwrite from `index` on: a Raft conflict replaced the suffix.
                    g.drop_from(index, live);
                }
                let loc = EntryLoc {
                    segment: rec.segment,
                    offset: rec.offset,
                    payload_len: rec.payload_len,
                    term: rec.term,
                };
                *live.entry(rec.segment).or_insert(0) += 1;
                g.entries.push_back(loc);
                if kind == EntryKind::ConfChange {
                    g.conf_entries.insert(index, rec.term);
                }
                Ok(())
            }
            RecordKind::Repair => {
                // Supersedes the location of an entry the group still holds at that term;
                // anything else means the log moved on since the repair was asked for (a
                // truncation, a compaction, a delete), and the copy is dead on arrival. Never
                // an error: run time and replay must take the same decision, and both see the
                // same table here.
                let Some(g) = self.groups.get_mut(&rec.group) else {
                    return Ok(());
                };
                if rec.index < g.first_index {
                    return Ok(());
                }
                let slot = (rec.index - g.first_index) as usize;
                let Some(loc) = g.entries.get_mut(slot).filter(|l| l.term == rec.term) else {
                    return Ok(());
                };
                Self::dec_live(live, loc);
                *loc = EntryLoc {
                    segment: rec.segment,
                    offset: rec.offset,
                    payload_len: rec.payload_len,
                    term: rec.term,
                };
                *live.entry(rec.segment).or_insert(0) += 1;
                Ok(())
            }
            RecordKind::Truncate => {
                if let Some(g) = self.groups.get_mut(&rec.group) {
                    g.drop_from(rec.index.max(g.first_index), live);
                    if g.entries.is_empty() {
                        // An empty log starts at its floor, whatever history emptied it: at
                        // run time and on replay after a purge (which may have moved
                        // `first_index` up) the answer must be the same.
                        g.first_index = g.floor_index;
                    }
                }
                Ok(())
            }
            RecordKind::Compact => {
                let g = self.groups.entry(rec.group).or_default();
                g.floor_index = g.floor_index.max(rec.index);
                if rec.index > g.first_index {
                    g.drop_before(rec.index, live);
                }
                Ok(())
            }
            RecordKind::HardState => {
                let g = self.groups.entry(rec.group).or_default();
                g.hard_state = Some(HardState {
                    term: rec.term,
                    vote: rec.aux,
                    commit: rec.index,
                });
                Ok(())
            }
            RecordKind::SnapshotMeta => {
                let g = self.groups.entry(rec.group).or_default();
                // The log now starts after the snapshot: exactly a compaction to index + 1.
                // Whether a suffix conflicts with the snapshot (Raft §7) is the Raft layer's
                // decision, made explicit with a Truncate record; deciding it here from the
                // log's state would let the accepted bounds and the durable table disagree
                // while earlier writes are in flight.
                let first = rec.index + 1;
                g.floor_index = g.floor_index.max(first);
                if first > g.first_index {
                    g.drop_before(first, live);
                }
                g.snapshot = Some(SnapshotInfo {
                    term: rec.term,
                    index: rec.index,
                    meta: rec.snapshot_meta.clone().unwrap_or_default(),
                });
                Ok(())
            }
            RecordKind::GroupMeta => {
                let g = self.groups.entry(rec.group).or_default();
                g.group_meta = Some(rec.snapshot_meta.clone().unwrap_or_default());
                Ok(())
            }
            RecordKind::DeleteGroup => {
                if let Some(g) = self.groups.remove(&rec.group) {
                    for loc in g.entries.iter() {
                        Self::dec_live(live, loc);
                    }
                }
                Ok(())
            }
        }
    }
}

/// The accepted (not necessarily written) bounds of a group, used to validate requests
/// before they are queued, so that a write, once queued, always applies. Mirrors the rules of
/// [`GroupTable::apply`] for first, last and floor index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub first_index: u64,
    /// `first_index - 1` when empty.
    pub last_index: u64,
    /// Lowest index an entry may have (raised by compaction and snapshots only).
    pub floor_index: u64,
}

impl Bounds {
    pub fn new() -> Self {
        Bounds {
            first_index: 1,
            last_index: 0,
            floor_index: 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.last_index < self.first_index
    }

    /// Checks that entries starting at `index` may be appended, then records them.
    pub fn append(&mut self, index: u64, count: u64) -> Result<(), String> {
        if index < self.floor_index || (!self.is_empty() && index < self.first_index) {
            return Err(format!(
                "index {index} is below first index {}",
                self.first_index
            ));
        }
        if self.is_empty() {
            self.first_index = index;
        } else if index > self.last_index + 1 {
            return Err(format!(
                "index {index} leaves a gap after last index {}",
                self.last_index
            ));
        }
        self.last_index = index + count - 1;
        Ok(())
    }

    pub fn truncate(&mut self, index: u64) {
        if index <= self.last_index {
            self.last_index = index.max(self.first_index) - 1;
        }
        if self.is_empty() {
            self.first_index = self.floor_index;
            self.last_index = self.floor_index - 1;
        }
    }

    pub fn compact(&mut self, index: u64) {
        self.floor_index = self.floor_index.max(index);
        if index > self.first_index {
            self.first_index = index;
            if self.last_index < index {
                self.last_index = index - 1;
            }
        }
    }

    /// The log now starts after a snapshot at `index` (see `RecordKind::SnapshotMeta`).
    pub fn snapshot(&mut self, index: u64) {
        self.compact(index + 1);
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&GroupState> for Bounds {
    fn from(g: &GroupState) -> Self {
        Bounds {
            first_index: g.first_index,
            last_index: g.last_index(),
            floor_index: g.floor_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(group: u64, index: u64, term: u64, kind: EntryKind) -> RecordMeta {
        RecordMeta {
            kind: RecordKind::Entry,
            group,
            term,
            index,
            aux: kind.to_aux(),
            segment: 1,
            offset: index * 64,
            payload_len: 0,
            snapshot_meta: None,
        }
    }

    fn control(kind: RecordKind, index: u64) -> RecordMeta {
        RecordMeta {
            kind,
            group: 1,
            term: 9,
            index,
            aux: 0,
            segment: 1,
            offset: 0,
            payload_len: 0,
            snapshot_meta: Some(Vec::new()),
        }
    }

    fn confs(t: &GroupTable) -> Vec<(u64, u64)> {
        t.group(1)
            .map(|g| g.conf_entries().collect())
            .unwrap_or_default()
    }

    #[test]
    fn conf_entries_follow_overwrite_truncation_compaction_and_snapshot() {
        let mut t = GroupTable::default();
        for i in 1..=10 {
            let kind = if i % 3 == 0 {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            };
            t.apply(&entry(1, i, 1, kind)).unwrap();
        }
        assert_eq!(confs(&t), vec![(3, 1), (6, 1), (9, 1)]);
        // A Raft conflict at 8 replaces 8..=10 (dropping the change at 9).
        t.apply(&entry(1, 8, 2, EntryKind::ConfChange)).unwrap();
        assert_eq!(confs(&t), vec![(3, 1), (6, 1), (8, 2)]);
        t.apply(&control(RecordKind::Truncate, 7)).unwrap();
        assert_eq!(confs(&t), vec![(3, 1), (6, 1)]);
        t.apply(&control(RecordKind::Compact, 4)).unwrap();
        assert_eq!(confs(&t), vec![(6, 1)]);
        assert_eq!(t.group(1).unwrap().term(6), Some(1));
        t.apply(&control(RecordKind::SnapshotMeta, 6)).unwrap();
        assert!(confs(&t).is_empty());
        assert_eq!(
            t.group(1).unwrap().term(6),
            Some(9),
            "the snapshot point's term"
        );
        // An unknown kind in a record is refused, the table unchanged.
        let mut bad = entry(1, 7, 1, EntryKind::Normal);
        bad.aux = 5;
        assert!(t.apply(&bad).is_err());
        assert_eq!(t.group(1).unwrap().last_index(), 6);
    }

    #[test]
    fn repair_moves_one_entry_and_nothing_else() {
        let mut t = GroupTable::default();
        for i in 1..=5 {
            t.apply(&entry(1, i, 1, EntryKind::Normal)).unwrap();
        }
        let mut repair = entry(1, 3, 1, EntryKind::Normal);
        repair.kind = RecordKind::Repair;
        repair.segment = 2;
        repair.offset = 4096;
        t.apply(&repair).unwrap();
        let g = t.group(1).unwrap();
        assert_eq!((g.first_index(), g.last_index()), (1, 5), "no truncation");
        assert_eq!(g.get(3).map(|l| (l.segment, l.offset)), Some((2, 4096)));
        assert_eq!(g.get(4).map(|l| l.segment), Some(1));
        assert_eq!(t.live_per_segment.get(&1), Some(&4));
        assert_eq!(t.live_per_segment.get(&2), Some(&1));

        // A copy for a term the log no longer holds at that index, or an index outside the
        // log, is dead on arrival: nothing changes.
        let before = t.group(1).unwrap().entries().clone();
        for (index, term) in [(4, 2), (9, 1), (0, 1)] {
            let mut stale = entry(1, index, term, EntryKind::Normal);
            stale.kind = RecordKind::Repair;
            stale.segment = 3;
            t.apply(&stale).unwrap();
        }
        let mut other_group = repair.clone();
        other_group.group = 2;
        t.apply(&other_group).unwrap();
        assert_eq!(t.group(1).unwrap().entries(), &before);
        assert!(t.group(2).is_none());
        assert_eq!(t.live_per_segment.get(&3), None);
    }
}
