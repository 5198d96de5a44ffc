//! The shard's side of entry repair (decisions in `super::super::repair`): detection hooks,
//! queries to peers, answers to peers' queries, and the write of a checked copy. A child of
//! the shard module so it can reach the shard's fields without making them public.

use tern_engine::storage::Storage;
use tern_net::{EntryAnswer, EntryId, EntryRepair, Outbound, PeerTransport};
use tern_raft::message::NodeId;
use tracing::{error, info, warn};

use super::super::controller::desired_groups;
use super::super::log_store::raft_kind;
use super::super::repair::{damaged_entry, outcome, AnswerAction};
use super::super::stats;
use super::{Event, Shard};

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    /// A read failed: if it names a damaged entry, start repairing it.
    pub(super) fn note_read_error(&mut self, e: &tern_engine::Error) {
        if let Some((group, index)) = damaged_entry(e) {
            self.note_damage(group, index, &e.to_string());
        }
    }

    /// Entry `index` of `group` failed its checks on this node's disk.
    pub(super) fn note_damage(&mut self, group: u64, index: u64, why: &str) {
        // The engine's index still knows the term: the damage is in the record's bytes.
        let Some(term) = self.wal.term(group, index) else {
            return;
        };
        let entry = EntryId { group, index, term };
        if self.repairs.detect(entry, std::time::Instant::now()) {
            stats::repair(outcome::DETECTED);
            warn!(
                shard = self.shard,
                group, index, term, "damaged entry detected; repairing from peers: {why}"
            );
            self.repair_tick();
        }
    }

    /// The group's other replicas: its configuration when it runs here, else the
    /// controller's placement (a group whose start failed on the damage is not running).
    fn repair_peers(&self, group: u64) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = match self.groups.get(&group) {
            Some(g) => {
                let conf = g.raw.conf();
                conf.voters
                    .iter()
                    .chain(conf.voters_outgoing.iter())
                    .chain(conf.learners.iter())
                    .copied()
                    .collect()
            }
            None => self
                .controller
                .as_ref()
                .and_then(|state| {
                    desired_groups(state, self.node_id, self.shards)
                        .remove(&group)
                        .map(|h| h.replicas)
                })
                .unwrap_or_default(),
        };
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|&n| n != self.node_id);
        peers
    }

    /// Sends the queries that are due (new damage, or unanswered for a while).
    pub(super) fn repair_tick(&mut self) {
        if self.repairs.is_empty() {
            return;
        }
        let wal = self.wal.clone();
        self.repairs.drop_moved_on(|g, i| wal.term(g, i));
        // `due` borrows the table mutably: the peers are looked up first.
        let known: std::collections::BTreeMap<u64, Vec<NodeId>> = self
            .repairs
            .groups()
            .into_iter()
            .map(|g| (g, self.repair_peers(g)))
            .collect();
        let due = self
            .repairs
            .due(self.ticks, |g| known.get(&g).cloned().unwrap_or_default());
        for (entry, peers) in due {
            for to in peers {
                let query = EntryRepair::Query {
                    from: self.node_id,
                    to,
                    entry,
                };
                // A dropped query is asked again after REPAIR_RETRY_TICKS.
                let _ = self.transport.send(to, Outbound::Repair(query));
            }
        }
    }

    /// A repair message from a peer (the transport checked it is from that peer to us).
    pub(super) fn on_repair_message(&mut self, message: EntryRepair) {
        match message {
            EntryRepair::Query { from, entry, .. } => self.answer_query(from, entry),
            EntryRepair::Answer {
                from,
                entry,
                answer,
                ..
            } => {
                let peers = self.repair_peers(entry.group);
                let commit = match self.groups.get(&entry.group) {
                    Some(g) => g.raw.commit(),
                    None => self.wal.hard_state(entry.group).map_or(0, |hs| hs.commit),
                };
                let committed = entry.index <= commit;
                match self
                    .repairs
                    .on_answer(from, entry, answer, &peers, committed)
                {
                    AnswerAction::Ignore => {}
                    AnswerAction::Unrepairable(why) => {
                        stats::repair(outcome::UNREPAIRABLE);
                        error!(
                            group = entry.group,
                            index = entry.index,
                            "entry unrepairable, group halted: {why}"
                        );
                        if let Some(g) = self.groups.get_mut(&entry.group) {
                            g.halted = Some(why);
                        }
                    }
                    AnswerAction::Write(copy) => {
                        let wal = self.wal.clone();
                        let events = self.events.clone();
                        glommio::spawn_local(async move {
                            let result = wal.repair(entry.group, vec![copy]).await;
                            let _ = events.unbounded_send(Event::RepairWritten {
                                entry,
                                from,
                                result,
                            });
                        })
                        .detach();
                    }
                }
            }
        }
    }

    /// Reads the entry a peer asks for and answers what this node holds of it.
    fn answer_query(&self, to: NodeId, entry: EntryId) {
        let wal = self.wal.clone();
        let transport = self.transport.clone();
        let me = self.node_id;
        glommio::spawn_local(async move {
            let answer = if wal.term(entry.group, entry.index) != Some(entry.term) {
                EntryAnswer::NotHeld
            } else {
                match wal
                    .read(entry.group, entry.index, entry.index + 1, u64::MAX)
                    .await
                {
                    Ok(mut v) if v.len() == 1 && v[0].term == entry.term => {
                        let e = v.remove(0);
                        EntryAnswer::Found {
                            kind: raft_kind(e.kind),
                            data: e.data,
                        }
                    }
                    Err(e) if damaged_entry(&e).is_some() => EntryAnswer::Damaged,
                    // Compacted or truncated meanwhile, or unreadable for another reason
                    // (an I/O error is no evidence about the copy: say nothing).
                    Ok(_) => EntryAnswer::NotHeld,
                    Err(tern_engine::Error::Unavailable { .. }) => EntryAnswer::NotHeld,
                    Err(e) => {
                        warn!(
                            group = entry.group,
                            index = entry.index,
                            "cannot answer a repair query: {e}"
                        );
                        return;
                    }
                }
            };
            let _ = transport.send(
                to,
                Outbound::Repair(EntryRepair::Answer {
                    from: me,
                    to,
                    entry,
                    answer,
                }),
            );
        })
        .detach();
    }

    /// A checked copy was written (or not).
    pub(super) async fn on_repair_written(
        &mut self,
        entry: EntryId,
        from: NodeId,
        result: tern_engine::Result<()>,
    ) {
        match result {
            Ok(()) => {
                let took = self.repairs.on_written(entry, true);
                stats::repair(outcome::REPAIRED);
                info!(
                    shard = self.shard,
                    group = entry.group,
                    index = entry.index,
                    term = entry.term,
                    from,
                    took_ms = took.map_or(0, |d| d.as_millis() as u64),
                    "entry repaired from peer"
                );
                // A partition whose start failed on this entry starts now.
                if !self.groups.contains_key(&entry.group) && !self.repairs.is_pending(entry.group)
                {
                    if let Some(state) = self.controller.clone() {
                        self.on_controller_state(state).await;
                    }
                }
            }
            Err(e) => {
                self.repairs.on_written(entry, false);
                stats::repair(outcome::WRITE_FAILED);
                warn!(
                    group = entry.group,
                    index = entry.index,
                    "repair write failed: {e}"
                );
            }
        }
    }
}
