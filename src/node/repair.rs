//! Repair of damaged log entries from peers (protocol-aware recovery, as TigerBeetle and PAR,
//! FAST '18, do it): a record whose checksum fails on this node is never dropped or truncated
//! (it may be committed, and a committed entry must survive); the node asks the group's other
//! replicas for the entry and writes a checked copy back through the engine.
//!
//! How one repair goes:
//! 1. Detection: a read of the entry fails its record checksum or identity check
//!    (`tern_engine::Error::Corruption` naming the group and index) — a Kafka fetch, Raft
//!    replication reading an old entry, a partition's start (its offset map reads its log) or
//!    the background scrubber (`shard/scrubber.rs`); or recovery, which keeps a damaged entry
//!    of an acknowledged batch in its group's log and lists it (`tern_engine::repaired`): the
//!    shard starts its repair at once. The entry's term comes from the engine's index (as
//!    recovery applied it: the checks of `tern_engine::repaired` stand behind a scanned one).
//! 2. The shard asks every other replica of the group (`EntryRepair::Query`, one frame each,
//!    net/src/entry_repair.rs) and asks again every [`REPAIR_RETRY_TICKS`] while some replica
//!    has not answered for sure (down or unreachable peers may hold the only copy).
//! 3. A `Found` answer is checked: its end-to-end checksum and its identity (group, index,
//!    term) by the codec — a copy that fails never reaches the shard (the frame is refused
//!    and the connection closed) — and the identity against the pending entry, whose term is
//!    this node's log's. The first good copy is written as a `Repair` record
//!    (`ShardWal::repair`): it supersedes the damaged record's place in the engine's index;
//!    the damaged bytes stay where they are (acknowledged bytes are never rewritten in
//!    place) until their segment is purged. See docs/format.md, record kind 9.
//! 4. Outcome, in a log line with stable words and `tern_repair_total{outcome}`:
//!    `detected` ("damaged entry detected"), `repaired` ("entry repaired from peer", with
//!    the time since detection), `write_failed` (asked again), `unrepairable` ("entry
//!    unrepairable, group halted": every other replica answered that it holds no correct
//!    copy; the group halts, saying why in /v1/raft, rather than serve or lose data).
//!
//! Meanwhile reads of the entry keep failing with a storage error (Kafka:
//! `KAFKA_STORAGE_ERROR`, code 56, retriable), never with garbage.
//!
//! This module is the decision logic, without I/O; the shard (src/node/shard.rs) sends the
//! queries, reads for the peers' queries and writes the copies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tern_engine::OwnedEntry;
use tern_net::{EntryAnswer, EntryId};
use tern_raft::message::NodeId;

/// Ticks between two rounds of queries for one entry (1 s at the default 10 ms tick).
pub const REPAIR_RETRY_TICKS: u64 = 100;
/// Damaged entries tracked at once per shard. Past it, a newly found one waits until it is
/// found again (every read of it fails and reports it): a disk that lost this many records
/// at once needs an operator more than a flood of queries.
pub const REPAIRS_PENDING_MAX: usize = 1024;

/// Metric label values of `tern_repair_total{outcome}`.
pub mod outcome {
    pub const DETECTED: &str = "detected";
    pub const REPAIRED: &str = "repaired";
    pub const UNREPAIRABLE: &str = "unrepairable";
    pub const WRITE_FAILED: &str = "write_failed";
}

/// The damaged entry a failed read names, if the error is damage of one located entry.
pub fn damaged_entry(e: &tern_engine::Error) -> Option<(u64, u64)> {
    match e {
        tern_engine::Error::Corruption { at, .. } => Some((at.group?, at.index?)),
        _ => None,
    }
}

/// One damaged entry being repaired.
#[derive(Debug)]
struct Pending {
    detected: Instant,
    /// Tick of the last round of queries (None: not asked yet).
    asked_tick: Option<u64>,
    /// Replicas that answered `NotHeld` or `Damaged`.
    without_copy: BTreeSet<NodeId>,
    /// A copy is being written: later answers are ignored.
    writing: bool,
}

/// What the shard does with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerAction {
    /// Write this copy (it passed the checks).
    Write(OwnedEntry),
    /// No other replica holds a correct copy: halt the group with this reason.
    Unrepairable(String),
    /// Nothing to do (an answer for an entry not pending, a duplicate, a write in progress).
    Ignore,
}

/// The damaged entries of one shard.
#[derive(Debug, Default)]
pub struct Repairs {
    pending: BTreeMap<EntryId, Pending>,
}

impl Repairs {
    /// Notes a damaged entry; true if it is new (the caller counts and logs it).
    pub fn detect(&mut self, entry: EntryId, now: Instant) -> bool {
        if self.pending.contains_key(&entry) || self.pending.len() >= REPAIRS_PENDING_MAX {
            return false;
        }
        self.pending.insert(
            entry,
            Pending {
                detected: now,
                asked_tick: None,
                without_copy: BTreeSet::new(),
                writing: false,
            },
        );
        true
    }

    /// Groups with a pending repair, ascending.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self.pending.keys().map(|e| e.group).collect();
        groups.dedup();
        groups
    }

    pub fn is_pending(&self, group: u64) -> bool {
        self.pending.keys().any(|e| e.group == group)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Entries to ask about now, with the replicas still worth asking; marks them asked.
    pub fn due(
        &mut self,
        tick: u64,
        peers_of: impl Fn(u64) -> Vec<NodeId>,
    ) -> Vec<(EntryId, Vec<NodeId>)> {
        let mut out = Vec::new();
        for (entry, p) in self.pending.iter_mut() {
            let due = p
                .asked_tick
                .is_none_or(|t| tick.saturating_sub(t) >= REPAIR_RETRY_TICKS);
            if p.writing || !due {
                continue;
            }
            let ask: Vec<NodeId> = peers_of(entry.group)
                .into_iter()
                .filter(|n| !p.without_copy.contains(n))
                .collect();
            // Nobody to ask yet (damage found by recovery, before the shard knows the
            // group's replicas): asked at the next tick that knows them, not a retry later.
            if !ask.is_empty() {
                p.asked_tick = Some(tick);
                out.push((*entry, ask));
            }
        }
        out
    }

    /// Takes a peer's answer. `peers` are the group's other replicas as this node knows them;
    /// `committed`: the entry is at or below the commit index this node knows. Only a
    /// committed entry is ever declared unrepairable: a majority holds it, so "no replica
    /// holds it" is final. An uncommitted one may still reach a lagging replica, or be
    /// replaced by a new leader's log (then [`Repairs::drop_moved_on`] forgets it), so it is
    /// asked for again instead.
    pub fn on_answer(
        &mut self,
        from: NodeId,
        entry: EntryId,
        answer: EntryAnswer,
        peers: &[NodeId],
        committed: bool,
    ) -> AnswerAction {
        let Some(p) = self.pending.get_mut(&entry) else {
            return AnswerAction::Ignore;
        };
        if p.writing {
            return AnswerAction::Ignore;
        }
        match answer {
            EntryAnswer::Found { kind, data } => {
                // The codec checked the copy's checksum and that it names this (group,
                // index, term): the key it was looked up by. Same index and term means the
                // same entry (Raft's Log Matching property), so the copy is this entry.
                p.writing = true;
                AnswerAction::Write(OwnedEntry {
                    term: entry.term,
                    index: entry.index,
                    kind: super::log_store::engine_kind(kind),
                    data,
                })
            }
            EntryAnswer::NotHeld | EntryAnswer::Damaged => {
                p.without_copy.insert(from);
                let all_answered =
                    !peers.is_empty() && peers.iter().all(|n| p.without_copy.contains(n));
                if all_answered && !committed {
                    p.without_copy.clear();
                    AnswerAction::Ignore
                } else if all_answered {
                    self.pending.remove(&entry);
                    AnswerAction::Unrepairable(format!(
                        "entry {} of group {} (term {}) is damaged on this node and none of replicas {peers:?} holds a correct copy",
                        entry.index, entry.group, entry.term
                    ))
                } else {
                    AnswerAction::Ignore
                }
            }
        }
    }

    /// A copy was written (Ok) or the write failed (Err): returns the time since detection
    /// on success. A failed write is asked for again at the next round.
    pub fn on_written(&mut self, entry: EntryId, ok: bool) -> Option<Duration> {
        if ok {
            return self.pending.remove(&entry).map(|p| p.detected.elapsed());
        }
        if let Some(p) = self.pending.get_mut(&entry) {
            p.writing = false;
            p.asked_tick = None;
        }
        None
    }

    /// Forgets entries the log no longer holds at their term (truncated, compacted, or the
    /// group deleted): `term_of` is the log's term at an index now.
    pub fn drop_moved_on(&mut self, term_of: impl Fn(u64, u64) -> Option<u64>) {
        self.pending
            .retain(|e, p| p.writing || term_of(e.group, e.index) == Some(e.term));
    }

    /// Forgets the entries of a group that is no longer hosted here.
    pub fn forget_group(&mut self, group: u64) {
        self.pending.retain(|e, _| e.group != group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft::message::EntryKind;

    fn id(index: u64) -> EntryId {
        EntryId {
            group: 5,
            index,
            term: 2,
        }
    }

    #[test]
    fn asks_every_other_replica_then_again_after_the_retry_ticks() {
        let mut r = Repairs::default();
        let now = Instant::now();
        assert!(r.detect(id(3), now));
        assert!(
            !r.detect(id(3), now),
            "a second detection is the same repair"
        );
        // Replicas not known yet (found by recovery before the group's configuration):
        // nothing asked, and the first tick that knows them asks at once.
        assert!(r.due(9, |_g| vec![]).is_empty());
        let peers = |_g: u64| vec![2, 3];
        assert_eq!(r.due(10, peers), vec![(id(3), vec![2, 3])]);
        assert!(r.due(10 + REPAIR_RETRY_TICKS - 1, peers).is_empty());
        // Replica 2 has no copy: only 3 is asked again.
        assert_eq!(
            r.on_answer(2, id(3), EntryAnswer::NotHeld, &[2, 3], true),
            AnswerAction::Ignore
        );
        assert_eq!(
            r.due(10 + REPAIR_RETRY_TICKS, peers),
            vec![(id(3), vec![3])]
        );
    }

    #[test]
    fn first_good_copy_is_written_and_later_answers_ignored() {
        let mut r = Repairs::default();
        r.detect(id(3), Instant::now());
        let found = EntryAnswer::Found {
            kind: EntryKind::Normal,
            data: vec![1, 2, 3],
        };
        match r.on_answer(2, id(3), found.clone(), &[2, 3], true) {
            AnswerAction::Write(e) => {
                assert_eq!((e.index, e.term, e.data), (3, 2, vec![1, 2, 3]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.on_answer(3, id(3), found.clone(), &[2, 3], true),
            AnswerAction::Ignore
        );
        assert!(
            r.due(1000, |_| vec![2, 3]).is_empty(),
            "not asked while writing"
        );
        // A failed write is retried: asked again at once.
        assert!(r.on_written(id(3), false).is_none());
        assert_eq!(r.due(1000, |_| vec![2, 3]).len(), 1);
        assert!(matches!(
            r.on_answer(3, id(3), found, &[2, 3], true),
            AnswerAction::Write(_)
        ));
        assert!(r.on_written(id(3), true).is_some());
        assert!(r.is_empty());
    }

    #[test]
    fn no_correct_copy_anywhere_is_unrepairable_and_never_before_every_replica_answered() {
        let mut r = Repairs::default();
        r.detect(id(9), Instant::now());
        assert_eq!(
            r.on_answer(2, id(9), EntryAnswer::Damaged, &[2, 3], true),
            AnswerAction::Ignore
        );
        // A repeated answer from the same replica does not count twice.
        assert_eq!(
            r.on_answer(2, id(9), EntryAnswer::NotHeld, &[2, 3], true),
            AnswerAction::Ignore
        );
        match r.on_answer(3, id(9), EntryAnswer::NotHeld, &[2, 3], true) {
            AnswerAction::Unrepairable(why) => {
                assert!(why.contains("entry 9 of group 5"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(r.is_empty());
        // Uncommitted: every replica answering "no copy" only starts another round.
        r.detect(id(11), Instant::now());
        assert_eq!(
            r.on_answer(2, id(11), EntryAnswer::NotHeld, &[2], false),
            AnswerAction::Ignore
        );
        assert_eq!(r.due(0, |_| vec![2]), vec![(id(11), vec![2])]);
        r.drop_moved_on(|_, _| Some(3));
        assert!(r.is_empty(), "the log moved on to another term there");
        // With no other replica known, nothing is ever declared unrepairable.
        r.detect(id(10), Instant::now());
        assert_eq!(
            r.on_answer(2, id(10), EntryAnswer::NotHeld, &[], true),
            AnswerAction::Ignore
        );
    }

    #[test]
    fn bounded_and_forgotten_with_the_group() {
        let mut r = Repairs::default();
        let now = Instant::now();
        for i in 1..=REPAIRS_PENDING_MAX as u64 + 10 {
            r.detect(id(i), now);
        }
        assert_eq!(r.len(), REPAIRS_PENDING_MAX);
        assert!(r.is_pending(5));
        r.forget_group(5);
        assert!(r.is_empty());
    }

    #[test]
    fn only_located_corruption_is_a_damaged_entry() {
        let at = tern_engine::error::Location {
            file: "/x".into(),
            offset: 4096,
            group: Some(5),
            index: Some(7),
        };
        let e = tern_engine::Error::Corruption {
            at: at.clone(),
            what: "checksum".into(),
        };
        assert_eq!(damaged_entry(&e), Some((5, 7)));
        let unlocated = tern_engine::Error::Corruption {
            at: tern_engine::error::Location { index: None, ..at },
            what: "header".into(),
        };
        assert_eq!(damaged_entry(&unlocated), None);
    }
}
