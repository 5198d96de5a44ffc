//! The shard's side of the recovery budget (`super::super::recovery_budget` has the rules;
//! docs/replication.md, section 6): catch-up reads for followers behind the cache wait for
//! tokens and run in a low-priority task queue; a rebuilding group's incoming entries wait
//! for tokens and for one of the shard's recovery slots; once a second the shard settles
//! with the others through the shard channels.

use std::collections::VecDeque;

use glommio::{Latency, Shares, TaskQueueHandle};
use tern_engine::storage::Storage;
use tern_net::PeerTransport;
use tern_raft::message::{Message, MessageBody};
use tern_raft::ready::{EntryFetch, FetchPurpose};
use tracing::debug;

use super::super::controller::CONTROLLER_GROUP;
use super::super::recovery_budget::{
    Admission, Candidate, Direction, Lend, RecoveryBudget, RecoveryLimits,
};
use super::{Shard, ShardMsg};

/// Messages of rebuilding groups held while the budget is in debt (one per group). Past it,
/// new ones are dropped: Raft resends.
const DEFERRED_MESSAGES_MAX: usize = 1024;
/// Shares of the recovery task queue, against the default 1000 of the Ready loop's queue.
const RECOVERY_QUEUE_SHARES: usize = 10;
/// A rebuilding group's whole catch-up in one message of at most this many new bytes needs
/// no recovery slot (the budget still charges it). The slots bound how many large transfers
/// interleave on a shard; a partition a few records long is not one. Without this, 10 000
/// small partitions took their turns 2 per shard, each waiting for its leader to resend:
/// ~400 rebuilt in 5 minutes (`tern-bench recovery --cluster --many-partitions 10000`).
const SMALL_CATCH_UP_BYTES: u64 = 256 << 10;

/// Whether `m` brings its group everything up to its leader's commit, in at most
/// [`SMALL_CATCH_UP_BYTES`] of new data.
fn whole_small_catch_up(m: &Message, bytes: u64) -> bool {
    match &m.body {
        MessageBody::Append {
            entries, commit, ..
        } => bytes <= SMALL_CATCH_UP_BYTES && entries.last().is_some_and(|e| e.index >= *commit),
        _ => false,
    }
}

/// The shard's recovery state.
pub(super) struct Recovery {
    pub(super) limits: RecoveryLimits,
    pub(super) budget: RecoveryBudget,
    pub(super) admission: Admission,
    /// Catch-up reads waiting for tokens, one per (group, follower); a newer request of the
    /// core for the same follower replaces the older one. Bounded by groups x members.
    pub(super) fetches: std::collections::BTreeMap<(u64, u64), EntryFetch>,
    /// Messages of admitted rebuilding groups waiting for tokens, in arrival order, at most
    /// one per group.
    pub(super) messages: VecDeque<(u64, Message)>,
    /// Per rebuilding group: (bytes, entries) received while rebuilding, for the estimate of
    /// the bytes still to come.
    pub(super) received: std::collections::BTreeMap<u64, (u64, u64)>,
    /// Groups this node led that read entries back for a follower, with the tick of the last
    /// such read (`tern_snapshot_transfer_active` counts those of the last second).
    pub(super) serving: std::collections::BTreeMap<u64, u64>,
    /// The low-priority queue catch-up reads run in; `None` in the node simulation, whose
    /// replay must not depend on how glommio shares real CPU time between queues.
    pub(super) queue: Option<TaskQueueHandle>,
}

impl Recovery {
    pub(super) fn new(
        shard: u32,
        shards: u32,
        limits: RecoveryLimits,
        tick: std::time::Duration,
    ) -> Self {
        let queue = limits.low_priority_reads.then(|| {
            glommio::executor().create_task_queue(
                Shares::Static(RECOVERY_QUEUE_SHARES),
                Latency::NotImportant,
                "tern-recovery",
            )
        });
        Recovery {
            limits,
            budget: RecoveryBudget::new(shard, shards, limits.bytes_per_sec_max, tick),
            admission: Admission::default(),
            fetches: Default::default(),
            messages: VecDeque::new(),
            received: Default::default(),
            serving: Default::default(),
            queue,
        }
    }
}

/// Catch-up bytes a message brings to a replica whose log ends at `last_index`: entries it
/// does not hold yet (copies of entries it holds, which a leader resends after a loss or a
/// timeout, cost no write and are not charged), or a snapshot chunk. `None` for every other
/// message.
fn catch_up_bytes(m: &Message, last_index: u64) -> Option<u64> {
    match &m.body {
        MessageBody::Append { entries, .. } => Some(
            entries
                .iter()
                .filter(|e| e.index > last_index)
                .map(|e| e.size_bytes())
                .sum(),
        ),
        MessageBody::Snapshot { data, .. } => Some(data.len() as u64),
        _ => None,
    }
}

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    /// Steps a message into its group, unless the group is rebuilding and the message brings
    /// it new data: then it waits for a recovery slot (dropped meanwhile: its leader resends)
    /// and for tokens (held, one message per group; later ones are dropped while one waits,
    /// since a leader resends what goes unanswered and a queue of resends would only grow).
    pub(super) fn step_recovering(&mut self, group: u64, m: Message) {
        let Some(bytes) = self.new_catch_up_bytes(group, &m) else {
            self.step(group, m);
            return;
        };
        let cap = self.recovery.limits.partitions_per_shard_max;
        if !whole_small_catch_up(&m, bytes)
            && !self
                .recovery
                .admission
                .try_admit(group, group == CONTROLLER_GROUP, cap)
        {
            debug!(
                group,
                "catch-up message of a rebuilding group without a recovery slot dropped"
            );
            return;
        }
        if self.recovery.messages.iter().any(|(g, _)| *g == group) {
            return;
        }
        if !self.recovery.budget.may_start() {
            if self.recovery.messages.len() < DEFERRED_MESSAGES_MAX {
                self.recovery.messages.push_back((group, m));
            }
            return;
        }
        self.charge_in(group, &m, bytes);
        self.step(group, m);
    }

    /// The new bytes `m` brings to `group` if the group is rebuilding; `None` when it is not,
    /// or the message brings nothing new (it is stepped at once, uncharged).
    fn new_catch_up_bytes(&self, group: u64, m: &Message) -> Option<u64> {
        let g = self.groups.get(&group).filter(|g| g.raw.is_rebuilding())?;
        catch_up_bytes(m, g.raw.last_index()).filter(|&b| b > 0)
    }

    fn charge_in(&mut self, group: u64, m: &Message, bytes: u64) {
        self.recovery.budget.charge(bytes, Direction::In);
        let entries = match &m.body {
            MessageBody::Append { entries, .. } => entries.len() as u64,
            _ => 0,
        };
        let r = self.recovery.received.entry(group).or_default();
        r.0 += bytes;
        r.1 += entries;
    }

    /// Starts a read the core asked for: a catch-up read for a follower waits for tokens
    /// and runs in the recovery task queue; a read to apply runs at once.
    pub(super) fn start_or_defer_fetch(&mut self, group: u64, fetch: EntryFetch) {
        let FetchPurpose::Replicate { to } = fetch.purpose else {
            self.start_fetch(group, fetch, self.recovery.queue);
            return;
        };
        if !self.recovery.fetches.is_empty() || !self.recovery.budget.may_start() {
            self.recovery.fetches.insert((group, to), fetch);
            return;
        }
        self.recovery.serving.insert(group, self.ticks);
        self.start_fetch(group, fetch, self.recovery.queue);
    }

    /// A catch-up read finished: charge what it read.
    pub(super) fn on_catch_up_read(&mut self, fetch: &EntryFetch, bytes: u64) {
        if matches!(fetch.purpose, FetchPurpose::Replicate { .. }) {
            self.recovery.budget.charge(bytes, Direction::Out);
        }
    }

    /// Per tick: refill (and once a second settle with the other shards), hand out recovery
    /// slots, then start what waited for tokens.
    pub(super) fn tick_recovery(&mut self) {
        if let Some(lend) = self.recovery.budget.tick() {
            for (i, tx) in self.shard_senders.iter_mut().enumerate() {
                if i as u32 == self.shard {
                    continue;
                }
                // A full inbox loses one second's settle; the next one comes a second later.
                if let Err(e) = tx.try_send(ShardMsg::RecoveryLend(lend)) {
                    debug!(shard = i, "recovery settle not delivered: {e}");
                }
            }
            let second = self.ticks.saturating_sub(self.ticks_per_sec());
            self.recovery.serving.retain(|_, &mut t| t >= second);
        }
        let candidates: Vec<Candidate> = self
            .groups
            .iter()
            .filter(|(_, g)| g.raw.is_rebuilding() && g.halted.is_none())
            .map(|(&group, g)| Candidate {
                group,
                controller: group == CONTROLLER_GROUP,
                entries_behind: g.raw.leader_commit().saturating_sub(g.raw.applied()),
            })
            .collect();
        let cap = self.recovery.limits.partitions_per_shard_max;
        self.recovery.admission.update(&candidates, cap);
        let live: std::collections::BTreeSet<u64> = candidates.iter().map(|c| c.group).collect();
        self.recovery.received.retain(|g, _| live.contains(g));

        while !self.recovery.messages.is_empty() && self.recovery.budget.may_start() {
            let Some((group, m)) = self.recovery.messages.pop_front() else {
                break;
            };
            if let Some(bytes) = self.new_catch_up_bytes(group, &m) {
                self.charge_in(group, &m, bytes);
            }
            self.step(group, m);
        }
        while !self.recovery.fetches.is_empty() && self.recovery.budget.may_start() {
            let Some(((group, _), fetch)) = self.recovery.fetches.pop_first() else {
                break;
            };
            if !self.groups.contains_key(&group) {
                continue;
            }
            self.recovery.serving.insert(group, self.ticks);
            self.start_fetch(group, fetch, self.recovery.queue);
        }
    }

    pub(super) fn on_recovery_lend(&mut self, lend: Lend) {
        self.recovery.budget.on_lend(lend);
    }

    fn ticks_per_sec(&self) -> u64 {
        (1000 / (self.tick.as_millis() as u64).max(1)).max(1)
    }

    /// Estimated bytes group `group` still has to receive: its entries behind its leader's
    /// commit times the mean entry size it received so far (the shard's mean when it has
    /// received nothing yet; 0 when the shard has received nothing at all).
    pub(super) fn recovery_bytes_remaining(&self, group: u64, entries_behind: u64) -> u64 {
        let mean = |(bytes, entries): (u64, u64)| (entries > 0).then(|| bytes / entries);
        let own = self.recovery.received.get(&group).copied().and_then(mean);
        let shard = || {
            let total = self
                .recovery
                .received
                .values()
                .fold((0u64, 0u64), |a, r| (a.0 + r.0, a.1 + r.1));
            mean(total)
        };
        entries_behind.saturating_mul(own.or_else(shard).unwrap_or(0))
    }

    /// The shard's recovery numbers for `/metrics` and `/v1/cluster`.
    pub(super) fn recovery_status(&self) -> super::ShardRecovery {
        let stats = self.recovery.budget.stats();
        if stats.tokens < 0 && !self.recovery.messages.is_empty() {
            // Worth a line at debug only: this is the throttle doing its work.
            debug!(
                shard = self.shard,
                tokens = stats.tokens,
                "recovery throttled"
            );
        }
        super::ShardRecovery {
            bytes_in_total: stats.bytes_in_total,
            bytes_out_total: stats.bytes_out_total,
            bytes_last_sec: stats.bytes_last_sec,
            transfers_active: (self.recovery.admission.active() + self.recovery.serving.len())
                as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft::message::{Entry, EntryKind};

    fn append(last: u64, commit: u64) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: (1..=last)
                    .map(|index| Entry {
                        term: 1,
                        index,
                        kind: EntryKind::Normal,
                        data: vec![0; 10],
                    })
                    .collect(),
                commit,
            },
        }
    }

    #[test]
    fn only_a_small_message_reaching_the_leaders_commit_skips_the_slots() {
        assert!(whole_small_catch_up(&append(5, 5), 100));
        assert!(!whole_small_catch_up(&append(5, 9), 100), "more to come");
        assert!(!whole_small_catch_up(
            &append(5, 5),
            SMALL_CATCH_UP_BYTES + 1
        ));
        assert!(!whole_small_catch_up(&append(0, 0), 0), "no entries");
    }
}
