//! The one rule that says what became of a damaged entry record that a scan passed over
//! ([`crate::torn_tail::passable`]: an entry that failed its checksum inside an acknowledged
//! batch whose frame is intact). Recovery, `verify-data`, `repair` and `tern scan` call it
//! with the group table the shard's whole log replays into (the damaged record applied at its
//! place, as its header reads), so they agree.
//!
//! Acknowledged bytes are never rewritten in place, so a repaired entry's damaged record
//! stays in its segment until the purge deletes the segment; a later durable Repair record
//! of the same (group, index, term) supersedes it in the table (docs/format.md, kind 9).
//!
//! | after replaying the shard, the group's entry at that index is | verdict |
//! |---|---|
//! | a later Repair record, at the same term | [`EntryDamage::Repaired`]: nothing to do |
//! | absent, or at another term (truncated, compacted, replaced, group deleted) | [`EntryDamage::Dead`]: nothing to repair, the purge removes it |
//! | still the damaged record, its term fits between its neighbours' and the hard state's, and the hard state's commit is within the log | [`EntryDamage::Unrepaired`]: repair it from peers |
//! | still the damaged record otherwise, or another record that is not a Repair at the same term | [`EntryDamage::Implausible`]: the header itself is damaged (it claimed another entry's place); stop |
//!
//! And before the table is built, recovery keeps a damaged record only where it appends to a
//! group already in the table ([`may_apply`]): a damaged header must not start a group,
//! truncate a suffix, or leave a hole.
//!
//! Why the term check: the checksum covers the header too, so the identity of a damaged record
//! is only what its header claims. A damaged index or group does not fit the group's log
//! (recovery refuses the hole); a damaged term is caught when it breaks the order of terms
//! around it. A flip that leaves the term between equal neighbours' terms is impossible; one
//! between different neighbours' terms goes unnoticed here, and then no peer holds that
//! (group, index, term): repair finds no copy and a committed entry halts its group rather
//! than serve anything (src/node/repair.rs).

use crate::group::GroupTable;

/// A damaged entry record: where it is and what its header claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedEntry {
    pub segment: u64,
    pub offset: u64,
    pub group: u64,
    pub index: u64,
    pub term: u64,
}

/// The verdict on one damaged entry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryDamage {
    /// Superseded by a later durable copy of the same (group, index, term).
    Repaired,
    /// No longer part of its group's log.
    Dead,
    /// Still in its group's log: acknowledged data to repair from peers.
    Unrepaired,
    /// Its header contradicts the group's log around it: not an entry recovery can keep.
    Implausible,
}

impl EntryDamage {
    pub fn name(self) -> &'static str {
        match self {
            EntryDamage::Repaired => "repaired",
            EntryDamage::Dead => "dead",
            EntryDamage::Unrepaired => "unrepaired",
            EntryDamage::Implausible => "implausible",
        }
    }
}

/// Whether a damaged entry record may be applied to `table` at all: as the next entry of a
/// group the table already holds. Anything else (a new group, a conflict that would cut the
/// suffix, a hole) would let an untrusted header change the log: the record is
/// [`EntryDamage::Implausible`].
pub fn may_apply(table: &GroupTable, e: &DamagedEntry) -> bool {
    table
        .group(e.group)
        .is_some_and(|g| g.last_index().checked_add(1) == Some(e.index))
}

/// The rule. `table`: the group table after replaying every valid record of the shard, the
/// damaged one included at its place. `is_repair(segment, offset)`: whether the record there
/// is a Repair record.
pub fn judge(
    table: &GroupTable,
    e: &DamagedEntry,
    is_repair: impl Fn(u64, u64) -> bool,
) -> EntryDamage {
    let Some(g) = table.group(e.group) else {
        return EntryDamage::Dead;
    };
    let Some(loc) = g.get(e.index) else {
        return EntryDamage::Dead;
    };
    if loc.term != e.term {
        return EntryDamage::Dead;
    }
    if (loc.segment, loc.offset) != (e.segment, e.offset) {
        // The same (index, term) written again, not as a repair: Raft never rewrites an entry
        // it holds, so the damaged header claimed another record's identity.
        return if is_repair(loc.segment, loc.offset) {
            EntryDamage::Repaired
        } else {
            EntryDamage::Implausible
        };
    }
    if g.hard_state().is_some_and(|h| h.commit > g.last_index()) {
        // A committed entry is missing: the damaged record may have been it.
        return EntryDamage::Implausible;
    }
    let prev = e.index.checked_sub(1).and_then(|i| g.term(i));
    let next = g.get(e.index + 1).map(|l| l.term);
    let hard = g.hard_state().map(|h| h.term);
    let fits = prev.is_none_or(|p| p <= e.term)
        && next.is_none_or(|n| e.term <= n)
        && hard.is_none_or(|h| e.term <= h);
    if fits {
        EntryDamage::Unrepaired
    } else {
        EntryDamage::Implausible
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RecordKind;
    use crate::group::RecordMeta;

    fn rec(kind: RecordKind, term: u64, index: u64, segment: u64, offset: u64) -> RecordMeta {
        RecordMeta {
            kind,
            group: 7,
            term,
            index,
            aux: 0,
            segment,
            offset,
            payload_len: 10,
            snapshot_meta: None,
        }
    }

    fn table(records: &[RecordMeta]) -> GroupTable {
        let mut t = GroupTable::default();
        for r in records {
            t.apply(r).expect("fits");
        }
        t
    }

    fn damaged(term: u64, index: u64, offset: u64) -> DamagedEntry {
        DamagedEntry {
            segment: 1,
            offset,
            group: 7,
            index,
            term,
        }
    }

    #[test]
    fn a_later_repair_of_the_same_entry_supersedes_the_damaged_record() {
        let log = [
            rec(RecordKind::Entry, 2, 1, 1, 100),
            rec(RecordKind::Entry, 2, 2, 1, 200),
            rec(RecordKind::Entry, 2, 3, 1, 300),
        ];
        assert_eq!(
            judge(&table(&log), &damaged(2, 2, 200), |_, _| false),
            EntryDamage::Unrepaired
        );
        let mut repaired = log.to_vec();
        repaired.push(rec(RecordKind::Repair, 2, 2, 3, 50));
        let is_repair = |s, o| (s, o) == (3, 50);
        assert_eq!(
            judge(&table(&repaired), &damaged(2, 2, 200), is_repair),
            EntryDamage::Repaired
        );
        // The same entry written again as an entry: the damaged header claimed its place.
        assert_eq!(
            judge(&table(&repaired), &damaged(2, 2, 200), |_, _| false),
            EntryDamage::Implausible
        );
    }

    #[test]
    fn an_entry_no_longer_in_the_log_is_dead() {
        let mut log = vec![
            rec(RecordKind::Entry, 2, 1, 1, 100),
            rec(RecordKind::Entry, 2, 2, 1, 200),
        ];
        log.push(rec(RecordKind::Truncate, 0, 2, 1, 300));
        let no = |_, _| false;
        assert_eq!(
            judge(&table(&log), &damaged(2, 2, 200), no),
            EntryDamage::Dead
        );
        log.push(rec(RecordKind::Entry, 3, 2, 1, 400));
        assert_eq!(
            judge(&table(&log), &damaged(2, 2, 200), no),
            EntryDamage::Dead
        );
    }

    #[test]
    fn a_term_out_of_order_with_its_neighbours_is_implausible() {
        let log = [
            rec(RecordKind::Entry, 2, 1, 1, 100),
            rec(RecordKind::Entry, 9, 2, 1, 200),
            rec(RecordKind::Entry, 3, 3, 1, 300),
        ];
        // The damaged record claims term 9, but index 3 has term 3.
        assert_eq!(
            judge(&table(&log), &damaged(9, 2, 200), |_, _| false),
            EntryDamage::Implausible
        );
    }

    #[test]
    fn a_damaged_record_may_only_append_to_a_known_group() {
        let t = table(&[rec(RecordKind::Entry, 2, 1, 1, 100)]);
        assert!(may_apply(&t, &damaged(2, 2, 200)));
        assert!(!may_apply(&t, &damaged(2, 1, 200)), "a conflict would cut");
        assert!(!may_apply(&t, &damaged(2, 3, 200)), "a hole");
        let other = DamagedEntry {
            group: 8,
            ..damaged(2, 1, 200)
        };
        assert!(!may_apply(&t, &other), "a new group");
    }
}
