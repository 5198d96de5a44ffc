//! [`WriteBatch`]: everything one Raft `Ready` persists, for any number of groups of a shard,
//! written with one call as one group-commit batch (all of it survives a crash or none of it).
//!
//! Within a group the operations apply in the order Raft needs, whatever order they were
//! added in: delete, snapshot point, suffix truncation, entries, repaired entries, compaction,
//! hard state.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::batch::NewRecord;
use crate::constants::{GROUP_META_BYTES_MAX, SNAPSHOT_META_BYTES_MAX};
use crate::error::{Error, Result};
use crate::format::RecordKind;
use crate::group::{Bounds, HardState};
use crate::group_map::GroupMap;
use crate::wal::{Entry, OwnedEntry};

/// Owned operations over groups of one shard, written atomically by
/// [`ShardWal::submit`](crate::ShardWal::submit).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Ordered by group id, so the records of a batch are laid out the same way every time.
    groups: BTreeMap<u64, GroupWrite>,
}

/// What a batch does to one group. At most one of each operation: a repeated call merges
/// (the lowest truncation, the highest compaction, the last snapshot and hard state, entries
/// appended after the earlier ones).
#[derive(Debug, Clone, Default)]
struct GroupWrite {
    delete: bool,
    snapshot: Option<(u64, u64, Vec<u8>)>,
    truncate: Option<u64>,
    entries: Vec<OwnedEntry>,
    repairs: Vec<OwnedEntry>,
    compact: Option<u64>,
    hard_state: Option<HardState>,
    group_meta: Option<Vec<u8>>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn group(&mut self, group: u64) -> &mut GroupWrite {
        self.groups.entry(group).or_default()
    }

    /// Drops the group's entries with index >= `index` (a Raft conflict).
    pub fn truncate(&mut self, group: u64, index: u64) -> &mut Self {
        let g = self.group(group);
        g.truncate = Some(g.truncate.map_or(index, |t| t.min(index)));
        self
    }

    /// Records a snapshot point at (`term`, `index`) with its metadata: the log now starts
    /// at `index + 1` (a compaction). Later entries are kept; a caller whose later entries
    /// conflict with the snapshot (Raft §7) truncates them in the same batch.
    pub fn snapshot(&mut self, group: u64, term: u64, index: u64, meta: Vec<u8>) -> &mut Self {
        self.group(group).snapshot = Some((term, index, meta));
        self
    }

    /// Appends entries (consecutive indexes; an index at or below the group's last one
    /// replaces the suffix from there, as a Raft conflict does).
    pub fn append(
        &mut self,
        group: u64,
        entries: impl IntoIterator<Item = OwnedEntry>,
    ) -> &mut Self {
        self.group(group).entries.extend(entries);
        self
    }

    /// Writes a corrected copy of an entry the group already holds (a
    /// [`RecordKind::Repair`] record): it takes the place of the damaged record in the group
    /// table, which keeps every other entry. Refused unless the index is within the group's
    /// accepted log; applied only if the entry there still has the copy's term.
    pub fn repair(&mut self, group: u64, entry: OwnedEntry) -> &mut Self {
        self.group(group).repairs.push(entry);
        self
    }

    pub fn hard_state(&mut self, group: u64, hs: HardState) -> &mut Self {
        self.group(group).hard_state = Some(hs);
        self
    }

    /// Keeps `meta` with the group (a `GroupMeta` record, replacing the previous one; at most
    /// `GROUP_META_BYTES_MAX`). Written after the batch's other operations on the group.
    pub fn group_meta(&mut self, group: u64, meta: Vec<u8>) -> &mut Self {
        self.group(group).group_meta = Some(meta);
        self
    }

    /// Drops the group's entries with index < `index`; their segments are purged once unused.
    pub fn compact(&mut self, group: u64, index: u64) -> &mut Self {
        let g = self.group(group);
        g.compact = Some(g.compact.map_or(index, |c| c.max(index)));
        self
    }

    /// Drops the group, its entries and its state (applied before anything else the batch
    /// does to the group, which can start it again).
    pub fn delete_group(&mut self, group: u64) -> &mut Self {
        self.group(group).delete = true;
        self
    }

    /// Borrowed views of the batch, for [`plan`].
    pub(crate) fn views(&self) -> Vec<GroupOps<'_>> {
        self.groups
            .iter()
            .map(|(&group, g)| GroupOps {
                group,
                delete: g.delete,
                snapshot: g.snapshot.as_ref().map(|(t, i, m)| (*t, *i, m.as_slice())),
                truncate: g.truncate,
                entries: Cow::Owned(g.entries.iter().map(OwnedEntry::as_entry).collect()),
                repairs: g.repairs.iter().map(OwnedEntry::as_entry).collect(),
                compact: g.compact,
                hard_state: g.hard_state,
                group_meta: g.group_meta.as_deref(),
            })
            .collect()
    }
}

/// One group's operations, borrowed (from a [`WriteBatch`] or a single-call wrapper such as
/// `ShardWal::append`).
pub(crate) struct GroupOps<'a> {
    pub group: u64,
    pub delete: bool,
    pub snapshot: Option<(u64, u64, &'a [u8])>,
    pub truncate: Option<u64>,
    pub entries: Cow<'a, [Entry<'a>]>,
    pub repairs: Vec<Entry<'a>>,
    pub compact: Option<u64>,
    pub hard_state: Option<HardState>,
    pub group_meta: Option<&'a [u8]>,
}

impl<'a> GroupOps<'a> {
    pub fn new(group: u64) -> Self {
        GroupOps {
            group,
            delete: false,
            snapshot: None,
            truncate: None,
            entries: Cow::Borrowed(&[]),
            repairs: Vec::new(),
            compact: None,
            hard_state: None,
            group_meta: None,
        }
    }
}

/// Limits a request is checked against before anything is queued.
pub(crate) struct Limits {
    /// Whole request as one batch (header, records, padding).
    pub request_bytes_max: u64,
    pub records_max: usize,
    pub payload_bytes_max: u64,
}

/// A validated request: its records in write order, its size, and the accepted bounds of
/// every group it touches once it is applied (None: the group is deleted).
pub(crate) struct Plan<'a> {
    pub records: Vec<NewRecord<'a>>,
    pub bytes: usize,
    pub bounds: Vec<(u64, Option<Bounds>)>,
}

/// Checks every operation against the limits and the groups' accepted bounds and lays out the
/// records. Nothing is changed: the caller installs `Plan::bounds` when it queues the records.
pub(crate) fn plan<'a, 'b: 'a>(
    ops: &'a [GroupOps<'b>],
    bounds: &GroupMap<Bounds>,
    limits: &Limits,
) -> Result<Plan<'a>> {
    // The record count first, before anything is laid out for a request that is refused.
    let count: usize = ops
        .iter()
        .map(|g| {
            usize::from(g.delete)
                + usize::from(g.snapshot.is_some())
                + usize::from(g.truncate.is_some())
                + g.entries.len()
                + g.repairs.len()
                + usize::from(g.compact.is_some())
                + usize::from(g.hard_state.is_some())
                + usize::from(g.group_meta.is_some())
        })
        .sum();
    if count > limits.records_max {
        return Err(Error::TooLarge {
            group: ops.first().map_or(0, |g| g.group),
            what: format!("request of {count} records"),
            size: count as u64,
            limit: "BATCH_RECORDS_MAX (records of one batch)",
            max: limits.records_max as u64,
        });
    }
    let mut records = Vec::with_capacity(count);
    let mut new_bounds = Vec::with_capacity(ops.len());
    for g in ops {
        let group = g.group;
        let invalid = |why: String| Error::InvalidRequest { group, why };
        let mut b = if g.delete {
            Bounds::new()
        } else {
            bounds.get(&group).copied().unwrap_or_default()
        };
        if g.delete {
            records.push(rec(RecordKind::DeleteGroup, group, 0, 0, 0, &[]));
        }
        if let Some((term, index, meta)) = g.snapshot {
            if meta.len() > SNAPSHOT_META_BYTES_MAX {
                return Err(Error::TooLarge {
                    group,
                    what: "snapshot metadata".into(),
                    size: meta.len() as u64,
                    limit: "SNAPSHOT_META_BYTES_MAX",
                    max: SNAPSHOT_META_BYTES_MAX as u64,
                });
            }
            if index == u64::MAX {
                return Err(invalid(format!(
                    "snapshot index {index} leaves no room after it"
                )));
            }
            b.snapshot(index);
            records.push(rec(RecordKind::SnapshotMeta, group, term, index, 0, meta));
        }
        if let Some(index) = g.truncate {
            b.truncate(index);
            records.push(rec(RecordKind::Truncate, group, 0, index, 0, &[]));
        }
        if let Some(first) = g.entries.first() {
            for pair in g.entries.windows(2) {
                if pair[1].index != pair[0].index + 1 {
                    return Err(invalid(format!(
                        "entries not consecutive at index {}",
                        pair[1].index
                    )));
                }
            }
            if let Some(e) = g
                .entries
                .iter()
                .find(|e| e.data.len() as u64 > limits.payload_bytes_max)
            {
                return Err(Error::TooLarge {
                    group,
                    what: format!("entry {}", e.index),
                    size: e.data.len() as u64,
                    limit: "payload_bytes_max (a quarter of segment_bytes, at most RECORD_PAYLOAD_BYTES_MAX)",
                    max: limits.payload_bytes_max,
                });
            }
            if first.index == 0 || first.index.checked_add(g.entries.len() as u64).is_none() {
                return Err(invalid(format!(
                    "entries from index {} are outside 1..u64::MAX",
                    first.index
                )));
            }
            b.append(first.index, g.entries.len() as u64)
                .map_err(invalid)?;
            records.extend(g.entries.iter().map(|e| {
                rec(
                    RecordKind::Entry,
                    group,
                    e.term,
                    e.index,
                    e.kind.to_aux(),
                    e.data,
                )
            }));
        }
        for e in &g.repairs {
            if e.data.len() as u64 > limits.payload_bytes_max {
                return Err(Error::TooLarge {
                    group,
                    what: format!("repaired entry {}", e.index),
                    size: e.data.len() as u64,
                    limit: "payload_bytes_max (a quarter of segment_bytes, at most RECORD_PAYLOAD_BYTES_MAX)",
                    max: limits.payload_bytes_max,
                });
            }
            if b.is_empty() || e.index < b.first_index || e.index > b.last_index {
                return Err(invalid(format!(
                    "repair of entry {} outside the log {}..={}",
                    e.index, b.first_index, b.last_index
                )));
            }
            records.push(rec(
                RecordKind::Repair,
                group,
                e.term,
                e.index,
                e.kind.to_aux(),
                e.data,
            ));
        }
        if let Some(index) = g.compact {
            if index == u64::MAX {
                return Err(invalid(format!("compaction to index {index}")));
            }
            b.compact(index);
            records.push(rec(RecordKind::Compact, group, 0, index, 0, &[]));
        }
        if let Some(hs) = g.hard_state {
            records.push(rec(
                RecordKind::HardState,
                group,
                hs.term,
                hs.commit,
                hs.vote,
                &[],
            ));
        }
        if let Some(meta) = g.group_meta {
            if meta.len() > GROUP_META_BYTES_MAX {
                return Err(Error::TooLarge {
                    group,
                    what: "group metadata".into(),
                    size: meta.len() as u64,
                    limit: "GROUP_META_BYTES_MAX",
                    max: GROUP_META_BYTES_MAX as u64,
                });
            }
            records.push(rec(RecordKind::GroupMeta, group, 0, 0, 0, meta));
        }
        // A deleted group has no accepted bounds unless the batch starts it again.
        let only_delete = g.delete
            && g.snapshot.is_none()
            && g.truncate.is_none()
            && g.entries.is_empty()
            && g.repairs.is_empty()
            && g.compact.is_none()
            && g.hard_state.is_none()
            && g.group_meta.is_none();
        new_bounds.push((group, (!only_delete).then_some(b)));
    }
    if records.is_empty() {
        return Err(Error::InvalidRequest {
            group: ops.first().map_or(0, |g| g.group),
            why: "empty request".into(),
        });
    }
    let bytes: usize = records.iter().map(NewRecord::bytes).sum();
    let batch_bytes = crate::format::align_up(
        (crate::batch::BATCH_HEADER_RECORD_BYTES + bytes) as u64,
        crate::constants::BLOCK_BYTES,
    );
    if batch_bytes > limits.request_bytes_max {
        return Err(Error::TooLarge {
            group: records[0].group,
            what: format!("request of {} records", records.len()),
            size: batch_bytes,
            limit: "request_bytes_max (a quarter of segment_bytes, at most BATCH_BYTES_MAX)",
            max: limits.request_bytes_max,
        });
    }
    Ok(Plan {
        records,
        bytes,
        bounds: new_bounds,
    })
}

fn rec(
    kind: RecordKind,
    group: u64,
    term: u64,
    index: u64,
    aux: u64,
    payload: &[u8],
) -> NewRecord<'_> {
    NewRecord {
        kind,
        group,
        term,
        index,
        aux,
        payload,
    }
}
