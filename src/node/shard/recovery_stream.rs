//! The shard's side of the recovery stream (docs/replication.md, sections 2 and 4; the pulling
//! rules are in `super::super::recovery_stream_rules`). Serving: any replica answers a fetch
//! with committed entries that are durable here, read in the recovery task queue and charged
//! to the recovery budget like a leader's catch-up reads. Pulling: a rebuilding group far
//! behind its leader's commit fetches chunks from the other members and appends them through
//! `RawNode::append_committed`; they reach the disk in the Ready loop's write batch like
//! appended entries, so a crash leaves a prefix of the committed log and a restart resumes
//! from the last durable index.

use std::collections::BTreeMap;

use tern_engine::storage::Storage;
use tern_net::{Outbound, PeerTransport, RecoveryChunk, RecoveryMessage, RecoveryRefuseReason};
use tern_raft::message::{Entry, NodeId};
use tern_raft::{AppendCommittedError, Role};
use tracing::{debug, error, warn};

use super::super::controller::CONTROLLER_GROUP;
use super::super::log_store::raft_kind;
use super::super::recovery_budget::Direction;
use super::super::recovery_stream_rules::{server_order, ChunkFault, Pull, StreamLimits};
use super::super::repair::damaged_entry;
use super::super::stats;
use super::{round_has_room, Event, Shard};

/// The most a server reads for one fetch, whatever the fetch asks: a chunk must fit a frame
/// (16 MiB) with room for one entry larger than it.
pub(super) const SERVE_BYTES_MAX: u64 = 8 << 20;

/// The shard's recovery-stream state: the pulls of rebuilding groups, by group (counters
/// are in `super::super::stats`).
#[derive(Default)]
pub(super) struct Streams {
    pulls: BTreeMap<u64, Pull>,
}

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    fn stream_limits(&self) -> StreamLimits {
        self.recovery.limits.stream
    }

    /// A recovery-stream message from a peer (the transport checked it is from that peer to
    /// this node).
    pub(super) fn on_recovery_message(&mut self, message: RecoveryMessage) {
        match message {
            RecoveryMessage::Fetch {
                from,
                group,
                from_index,
                bytes_max,
                ..
            } => self.serve_fetch(from, group, from_index, bytes_max),
            RecoveryMessage::Chunk {
                from, group, chunk, ..
            } => {
                let Some(pull) = self.streams.pulls.get_mut(&group) else {
                    return;
                };
                if pull.on_chunk(from, chunk) {
                    self.append_held_chunks(group);
                }
            }
            RecoveryMessage::Refuse {
                from,
                group,
                from_index,
                reason,
                ..
            } => {
                let servers = self.stream_servers(group).len();
                let now = self.ticks;
                if let Some(pull) = self.streams.pulls.get_mut(&group) {
                    debug!(group, from, from_index, ?reason, "recovery fetch refused");
                    pull.on_refuse(from, from_index, reason, now, servers);
                }
            }
        }
    }

    fn refuse_fetch(
        &mut self,
        to: NodeId,
        group: u64,
        from_index: u64,
        reason: RecoveryRefuseReason,
    ) {
        stats::stream_fetch_refused();
        let refuse = RecoveryMessage::Refuse {
            from: self.node_id,
            to,
            group,
            from_index,
            reason,
        };
        // A lost refusal costs the puller one timeout.
        let _ = self.transport.send(to, Outbound::Recovery(refuse));
    }

    /// Answers a fetch with the committed entries from `from_index` that are durable here
    /// (below the core's persisted index: a stale suffix on disk may still be masked by newer
    /// entries in memory), or a refusal.
    fn serve_fetch(&mut self, to: NodeId, group: u64, from_index: u64, bytes_max: u64) {
        // The decoder refuses index 0; a fetch from elsewhere (the node simulation's network
        // hands messages over without encoding them) is checked here as well.
        let hosted = self.groups.get(&group).filter(|g| g.halted.is_none());
        let Some(g) = hosted.filter(|_| from_index > 0) else {
            self.refuse_fetch(to, group, from_index, RecoveryRefuseReason::NotCaughtUp);
            return;
        };
        let status = g.raw.status();
        // A rebuilding member's commit is no promise that it holds the entries (it may learn a
        // commit before the entries): it serves nobody.
        let commit = status.commit.min(status.persisted_index);
        let rebuilding = g.raw.is_rebuilding();
        let first = g.raw.first_index();
        let prev_term = g.raw.log_term(from_index - 1);
        if rebuilding || from_index > commit {
            self.refuse_fetch(to, group, from_index, RecoveryRefuseReason::NotCaughtUp);
            return;
        }
        let (true, Some(prev_term)) = (from_index >= first, prev_term) else {
            self.refuse_fetch(
                to,
                group,
                from_index,
                RecoveryRefuseReason::Compacted { log_start: first },
            );
            return;
        };
        if !self.recovery.budget.may_start() {
            let retry_after_ms = self.recovery.budget.retry_after_ms();
            self.refuse_fetch(
                to,
                group,
                from_index,
                RecoveryRefuseReason::Busy { retry_after_ms },
            );
            return;
        }
        self.recovery.serving.insert(group, self.ticks);
        let wal = self.wal.clone();
        let transport = self.transport.clone();
        let events = self.events.clone();
        let me = self.node_id;
        let snapshot_index = first - 1;
        let bytes_max = bytes_max.clamp(1, SERVE_BYTES_MAX);
        let read = async move {
            let result = wal.read(group, from_index, commit + 1, bytes_max).await;
            let (answer, bytes, damage) = match result {
                Ok(entries) => {
                    let entries: Vec<Entry> = entries
                        .into_iter()
                        .map(|e| Entry {
                            term: e.term,
                            index: e.index,
                            kind: raft_kind(e.kind),
                            data: e.data,
                        })
                        .collect();
                    // Charged as a leader's catch-up reads are: payload plus entry overhead.
                    let bytes = entries.iter().map(Entry::size_bytes).sum();
                    let chunk = RecoveryChunk {
                        snapshot_index,
                        server_commit: commit,
                        prev_index: from_index - 1,
                        prev_term,
                        entries,
                    };
                    (
                        RecoveryMessage::Chunk {
                            from: me,
                            to,
                            group,
                            chunk,
                        },
                        bytes,
                        None,
                    )
                }
                // Compacted meanwhile, or a damaged record (repaired from peers; the puller
                // asks another server meanwhile).
                Err(e) => {
                    let log_start = wal.first_index(group);
                    let reason = if from_index < log_start {
                        RecoveryRefuseReason::Compacted { log_start }
                    } else {
                        RecoveryRefuseReason::NotCaughtUp
                    };
                    let refuse = RecoveryMessage::Refuse {
                        from: me,
                        to,
                        group,
                        from_index,
                        reason,
                    };
                    (refuse, 0, Some(e))
                }
            };
            let _ = transport.send(to, Outbound::Recovery(answer));
            let _ = events.unbounded_send(Event::RecoveryServed {
                group,
                bytes,
                damage,
            });
        };
        match self.recovery.queue {
            None => {
                glommio::spawn_local(read).detach();
            }
            Some(q) => match glommio::spawn_local_into(read, q) {
                Ok(task) => {
                    task.detach();
                }
                // The queue is this executor's own and never removed: not expected. The
                // puller times out and asks again.
                Err(e) => warn!(group, "recovery read not started: {e}"),
            },
        }
    }

    /// A served read finished: charge what it read, and hand damage to the repair path.
    pub(super) fn on_recovery_served(
        &mut self,
        group: u64,
        bytes: u64,
        damage: Option<tern_engine::Error>,
    ) {
        match damage {
            None => {
                stats::stream_chunk_out();
                self.recovery.budget.charge(bytes, Direction::Out);
            }
            Some(e) => {
                stats::stream_fetch_refused();
                if damaged_entry(&e).is_some() {
                    self.note_read_error(&e);
                } else {
                    debug!(group, "recovery read failed: {e}");
                }
            }
        }
    }

    /// The other members of `group`, in the order to ask them.
    fn stream_servers(&self, group: u64) -> Vec<NodeId> {
        let Some(g) = self.groups.get(&group) else {
            return Vec::new();
        };
        let conf = g.raw.conf();
        let members: Vec<NodeId> = conf
            .voters
            .iter()
            .chain(conf.voters_outgoing.iter())
            .chain(conf.learners.iter())
            .copied()
            .collect();
        server_order(&members, self.node_id, g.raw.leader(), group)
    }

    /// Per tick: start or stop the pulls of rebuilding groups, expire fetches, send the
    /// fetches that are due, and append chunks a full write batch held back.
    pub(super) fn tick_recovery_stream(&mut self) {
        // With no pull running, look for groups that should start one every
        // `GROUP_SCAN_TICKS` only (a pull starts up to 100 ms later): the scan of every group
        // each tick was 5 % of an idle node's CPU with 3 000 partitions.
        if self.streams.pulls.is_empty() && !self.ticks.is_multiple_of(super::GROUP_SCAN_TICKS) {
            return;
        }
        let limits = self.stream_limits();
        let cap = self.recovery.limits.partitions_per_shard_max;
        let mut wanted = Vec::new();
        for (&group, g) in &self.groups {
            let far_behind =
                g.raw.leader_commit().saturating_sub(g.raw.last_index()) > limits.lag_entries_max;
            let pulls = g.halted.is_none()
                && g.raw.is_rebuilding()
                && g.raw.role() == Role::Follower
                && far_behind;
            if pulls {
                wanted.push(group);
            }
        }
        // Within reach of AppendEntries, rebuilt, halted or gone: stop pulling.
        self.streams.pulls.retain(|g, _| wanted.contains(g));
        let now = self.ticks;
        for group in wanted {
            if !self
                .recovery
                .admission
                .try_admit(group, group == CONTROLLER_GROUP, cap)
            {
                continue;
            }
            let servers = self.stream_servers(group);
            let Some(g) = self.groups.get(&group) else {
                continue;
            };
            let (last, upto) = (g.raw.last_index(), g.raw.leader_commit());
            let may_start = self.recovery.budget.may_start();
            let seed = self.node_id.wrapping_mul(0x9E37_79B9) ^ group;
            let pull = self
                .streams
                .pulls
                .entry(group)
                .or_insert_with(|| Pull::new(limits, seed));
            pull.expire(now);
            let orders = pull.due(now, last, upto, &servers, may_start);
            for o in orders {
                let fetch = RecoveryMessage::Fetch {
                    from: self.node_id,
                    to: o.server,
                    group,
                    from_index: o.from_index,
                    bytes_max: o.bytes_max,
                };
                // A dropped fetch times out and is asked again.
                let _ = self.transport.send(o.server, Outbound::Recovery(fetch));
            }
            self.append_held_chunks(group);
        }
    }

    /// Appends the held chunks of `group` that start within its log, while the round's write
    /// batch has room.
    fn append_held_chunks(&mut self, group: u64) {
        let servers = self.stream_servers(group).len();
        let now = self.ticks;
        loop {
            let Some(g) = self.groups.get_mut(&group) else {
                return;
            };
            let Some(pull) = self.streams.pulls.get_mut(&group) else {
                return;
            };
            let last = g.raw.last_index();
            let Some((from, chunk)) = pull.next_ready(last) else {
                return;
            };
            let new: Vec<&Entry> = chunk.entries.iter().filter(|e| e.index > last).collect();
            // The round's write batch counts payload; the budget, payload plus overhead.
            let bytes: u64 = new.iter().map(|e| e.data.len() as u64).sum();
            let charged: u64 = new.iter().map(|e| e.size_bytes()).sum();
            let max = self.wal.payload_bytes_max();
            if new.iter().any(|e| e.data.len() as u64 > max) {
                // The same limit as for a leader's entries (`Shard::step`).
                warn!(
                    group,
                    from, "recovery chunk entry larger than this node's WAL record limit"
                );
                pull.on_fault(from, ChunkFault::Other, now, servers);
                continue;
            }
            if !round_has_room(self.round_entry_bytes, bytes, self.wal.request_bytes_max()) {
                pull.put_back(from, chunk);
                return;
            }
            match g.raw.append_committed(
                chunk.prev_index,
                chunk.prev_term,
                &chunk.entries,
                chunk.server_commit,
            ) {
                Ok(_) => {
                    pull.on_appended();
                    self.round_entry_bytes += bytes;
                    stats::stream_chunk_in();
                    self.recovery.budget.charge(charged, Direction::In);
                    let r = self.recovery.received.entry(group).or_default();
                    r.0 += charged;
                    r.1 += new_count(&chunk.entries, last);
                    self.dirty.insert(group);
                }
                Err(e) => {
                    let fault = match e {
                        AppendCommittedError::PrevMismatch { .. } => ChunkFault::PrevMismatch {
                            commit: g.raw.commit(),
                        },
                        AppendCommittedError::Corrupt { .. } => {
                            error!(
                                group,
                                from,
                                "recovery chunk contradicts a committed entry: {e}; not asking that replica again"
                            );
                            ChunkFault::Corrupt
                        }
                        _ => {
                            debug!(group, from, "recovery chunk not appended: {e}");
                            ChunkFault::Other
                        }
                    };
                    pull.on_fault(from, fault, now, servers);
                }
            }
        }
    }
}

fn new_count(entries: &[Entry], last: u64) -> u64 {
    entries.iter().filter(|e| e.index > last).count() as u64
}
