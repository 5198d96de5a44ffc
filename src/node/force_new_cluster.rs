//! `tern serve --force-new-cluster`: this node becomes the only voter of every Raft group it
//! holds, the controller included, keeping what it had committed. The recovery when no
//! majority can be brought back consistent (the replicas diverged, or the other nodes are
//! lost): the operator keeps one node's data and adds the others back, wiped, as new members
//! (docs/operations/cluster.md, section 6). etcd's `--force-new-cluster` does the same.
//!
//! Per group, before the group starts, one engine write batch (all of it survives a crash or
//! none of it; nothing written before is rewritten, the batch is appended):
//! 1. the entries after the group's commit index are dropped (a suffix truncation): this node
//!    never saw them committed, and with the others gone nobody can commit them;
//! 2. a configuration-change entry naming this node alone is appended at `commit + 1`, in a
//!    new term (one past the group's current term; the node votes for itself in it);
//! 3. for the controller group, a `ForceNewCluster` command after it: once applied, the
//!    controller's members are this node alone and every partition's replicas are its replica
//!    here, so the other nodes are added back with `tern cluster add-node`;
//! 4. the hard state's commit index moves to the last of those entries (they are committed by
//!    construction: this node is the whole configuration that decides).
//!
//! A restart without the flag keeps the result: the configuration is in the log, committed.
//! A group already alone with nothing uncommitted is left as it is, so running the flag again
//! (after a crash part-way, or by mistake) changes nothing that was done. The controller group
//! is rewritten first, before any partition (the other shards wait for it): a crash before it
//! is durable leaves the whole directory as it was; after it, the node can only start again
//! with the flag (a start with `--peers` and no flag is refused by the single-voter rules of
//! `standalone.rs`), which finishes the partitions.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_engine::storage::Storage;
use tern_engine::{EntryKind, HardState, OwnedEntry, ShardWal, WriteBatch};
use tern_raft::message::{ConfState, NodeId};
use tracing::{info, warn};

use super::controller::{Command, CONTROLLER_GROUP};
use super::log_store::stored_conf;

/// Groups rewritten per write batch (each group adds a few small records; a batch stays far
/// below the WAL's request limit, and a shard of many groups pays one fsync per chunk).
const GROUPS_PER_BATCH: usize = 256;

/// What the rewrite needs to know of one group, from the engine's query side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    /// The durable hard state (`None`: the group never wrote one).
    pub hard_state: Option<HardState>,
    /// The snapshot point's index (0: none).
    pub snapshot_index: u64,
    pub last_index: u64,
    /// The newest configuration the log or the snapshot point names, if any (a group that
    /// never changed it runs the configuration placement gave it, which is not stored).
    pub conf: Option<ConfState>,
}

/// The batch one group needs, and what it drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRewrite {
    pub group: u64,
    /// The commit index kept (everything after it is dropped).
    pub commit: u64,
    /// Entries after the commit index that are dropped.
    pub dropped: u64,
    pub entries: Vec<OwnedEntry>,
    pub hard_state: HardState,
}

impl GroupRewrite {
    fn add_to(&self, batch: &mut WriteBatch) {
        batch
            .truncate(self.group, self.commit + 1)
            .append(self.group, self.entries.iter().cloned())
            .hard_state(self.group, self.hard_state);
    }
}

/// The rewrite of `group` that leaves `node_id` its only voter, or `None` when it already is
/// and nothing uncommitted follows (a rerun). Pure, so every case is tested without a disk.
pub fn plan(
    group: u64,
    facts: &GroupFacts,
    node_id: NodeId,
) -> Result<Option<GroupRewrite>, String> {
    let alone = ConfState::with_voters(&[node_id]);
    let hs = facts.hard_state.unwrap_or_default();
    // The snapshot point is committed whatever the hard state says (Raft's start rule).
    let commit = hs.commit.max(facts.snapshot_index);
    if commit > facts.last_index {
        return Err(format!(
            "group {group}: commit index {commit} beyond its last index {}: the directory is \
             damaged (run tern verify-data)",
            facts.last_index
        ));
    }
    if facts.last_index == commit && facts.conf.as_ref() == Some(&alone) {
        return Ok(None);
    }
    // A term of its own, one past any this node has seen (its current term is at least the
    // term of every entry it holds): no other replica can hold a different entry under the
    // same index and term, so Log Matching holds even if an old replica is restarted with its
    // data by mistake; and this node's vote in that term is its own, so it grants the term to
    // nobody else.
    let term = hs.term + 1;
    let mut entries = vec![OwnedEntry {
        term,
        index: commit + 1,
        kind: EntryKind::ConfChange,
        data: alone.encode(),
    }];
    if group == CONTROLLER_GROUP {
        let data = Command::ForceNewCluster { node_id }
            .encode()
            .map_err(|e| format!("controller command: {e}"))?;
        entries.push(OwnedEntry {
            term,
            index: commit + 2,
            kind: EntryKind::Normal,
            data,
        });
    }
    let last = commit + entries.len() as u64;
    Ok(Some(GroupRewrite {
        group,
        commit,
        dropped: facts.last_index - commit,
        entries,
        hard_state: HardState {
            term,
            vote: node_id,
            commit: last,
        },
    }))
}

/// Reads what [`plan`] needs of `group`.
pub async fn facts<S: Storage>(wal: &ShardWal<S>, group: u64) -> Result<GroupFacts, String> {
    let snapshot_index = wal.snapshot(group).map_or(0, |s| s.index);
    Ok(GroupFacts {
        hard_state: wal.hard_state(group),
        snapshot_index,
        last_index: wal.last_index(group).max(snapshot_index),
        conf: stored_conf(wal, group).await?,
    })
}

/// Rewrites `groups` of this shard (in chunks, each one batch); answers how many groups were
/// rewritten and how many uncommitted entries dropped.
pub async fn rewrite_groups<S: Storage>(
    wal: &ShardWal<S>,
    groups: &[u64],
    node_id: NodeId,
) -> Result<(u64, u64), String> {
    let (mut rewritten, mut dropped) = (0u64, 0u64);
    for chunk in groups.chunks(GROUPS_PER_BATCH) {
        let mut batch = WriteBatch::new();
        for &group in chunk {
            let facts = facts(wal, group).await?;
            let Some(rw) = plan(group, &facts, node_id)? else {
                continue;
            };
            if rw.dropped > 0 {
                warn!(
                    group,
                    commit = rw.commit,
                    dropped_entries = rw.dropped,
                    "force-new-cluster: dropping entries this node never saw committed"
                );
            }
            rw.add_to(&mut batch);
            rewritten += 1;
            dropped += rw.dropped;
        }
        if !batch.is_empty() {
            wal.write(batch)
                .await
                .map_err(|e| format!("writing the new configurations: {e}"))?;
        }
    }
    Ok((rewritten, dropped))
}

const GATE_WAITING: u8 = 0;
const GATE_CONTROLLER_DONE: u8 = 1;
const GATE_FAILED: u8 = 2;
/// How often a partition shard looks whether the controller's rewrite is durable.
const GATE_POLL: Duration = Duration::from_millis(5);

/// The node-wide rewrite: the controller's shard rewrites the controller group first, the
/// other shards wait for it (module doc: crash safety), then every shard its own groups.
#[derive(Debug, Clone)]
pub struct ForceNewCluster {
    node_id: NodeId,
    controller_shard: u32,
    gate: Arc<AtomicU8>,
}

impl ForceNewCluster {
    pub fn new(node_id: NodeId, controller_shard: u32) -> Self {
        ForceNewCluster {
            node_id,
            controller_shard,
            gate: Arc::new(AtomicU8::new(GATE_WAITING)),
        }
    }

    /// Runs shard `shard`'s part. An error stops the node (the caller's), before any group of
    /// the shard starts.
    pub async fn run_shard<S: Storage>(&self, shard: u32, wal: &ShardWal<S>) -> Result<(), String> {
        let result = self.run_shard_inner(shard, wal).await;
        if result.is_err() {
            self.gate.store(GATE_FAILED, Ordering::SeqCst);
        }
        result
    }

    async fn run_shard_inner<S: Storage>(
        &self,
        shard: u32,
        wal: &ShardWal<S>,
    ) -> Result<(), String> {
        let mut groups: Vec<u64> = wal.groups().into_iter().map(|g| g.group).collect();
        groups.sort_unstable();
        if shard == self.controller_shard {
            if !groups.contains(&CONTROLLER_GROUP) {
                return Err(
                    "force-new-cluster: the data directory holds no controller group (an \
                     empty directory, or one that never joined a cluster): there is nothing \
                     to keep; refused"
                        .into(),
                );
            }
            let controller = facts(wal, CONTROLLER_GROUP).await?;
            let committed = controller
                .hard_state
                .map_or(0, |hs| hs.commit)
                .max(controller.snapshot_index);
            if committed == 0 {
                return Err(
                    "force-new-cluster: this node's controller has nothing committed (it never \
                     caught up with a cluster): there is nothing to keep; refused"
                        .into(),
                );
            }
            let (rewritten, _) = rewrite_groups(wal, &[CONTROLLER_GROUP], self.node_id).await?;
            info!(
                node = self.node_id,
                changed = rewritten == 1,
                "force-new-cluster: controller group rewritten: this node is its only voter \
                 and the cluster's only member"
            );
            self.gate.store(GATE_CONTROLLER_DONE, Ordering::SeqCst);
        } else {
            loop {
                match self.gate.load(Ordering::SeqCst) {
                    GATE_CONTROLLER_DONE => break,
                    GATE_FAILED => {
                        return Err("force-new-cluster: the controller group's rewrite failed \
                                    (see above); no partition was changed"
                            .into())
                    }
                    _ => glommio::timer::sleep(GATE_POLL).await,
                }
            }
        }
        let partitions: Vec<u64> = groups
            .into_iter()
            .filter(|&g| g != CONTROLLER_GROUP)
            .collect();
        let (rewritten, dropped) = rewrite_groups(wal, &partitions, self.node_id).await?;
        info!(
            shard,
            groups = partitions.len(),
            rewritten,
            dropped_entries = dropped,
            "force-new-cluster: shard's groups rewritten: this node is the only voter of each"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::controller::{ControllerState, Member, Outcome, Retention, TopicSpec};
    use crate::node::log_store::EngineLog;
    use glommio::LocalExecutorBuilder;
    use std::rc::Rc;
    use tern_engine::storage::dma::DmaStorage;
    use tern_engine::WalConfig;
    use tern_raft::RawNode;

    fn facts(hs: (u64, u64, u64), snapshot_index: u64, last: u64, conf: &[u64]) -> GroupFacts {
        GroupFacts {
            hard_state: Some(HardState {
                term: hs.0,
                vote: hs.1,
                commit: hs.2,
            }),
            snapshot_index,
            last_index: last,
            conf: (!conf.is_empty()).then(|| ConfState::with_voters(conf)),
        }
    }

    #[test]
    fn uncommitted_entries_are_dropped_and_a_single_voter_configuration_committed() {
        let rw = plan(7, &facts((5, 2, 10), 0, 14, &[1, 2, 3]), 1)
            .unwrap()
            .unwrap();
        assert_eq!((rw.commit, rw.dropped), (10, 4));
        assert_eq!(rw.entries.len(), 1);
        let e = &rw.entries[0];
        assert_eq!((e.index, e.term, e.kind), (11, 6, EntryKind::ConfChange));
        assert_eq!(
            ConfState::decode(&e.data),
            Some(ConfState::with_voters(&[1]))
        );
        assert_eq!(
            rw.hard_state,
            HardState {
                term: 6,
                vote: 1,
                commit: 11
            }
        );
    }

    #[test]
    fn the_controller_also_gets_its_force_command() {
        let rw = plan(CONTROLLER_GROUP, &facts((3, 3, 6), 0, 6, &[1, 2, 3]), 2)
            .unwrap()
            .unwrap();
        assert_eq!(rw.dropped, 0);
        let idx: Vec<u64> = rw.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![7, 8]);
        assert_eq!(
            Command::decode(&rw.entries[1].data).unwrap(),
            Command::ForceNewCluster { node_id: 2 }
        );
        assert_eq!(rw.hard_state.commit, 8);
    }

    #[test]
    fn a_rerun_changes_nothing_and_a_snapshot_point_counts_as_committed() {
        assert_eq!(plan(7, &facts((5, 1, 11), 0, 11, &[1]), 1).unwrap(), None);
        // Alone, but with uncommitted entries (it ran alone and crashed before committing):
        // they are dropped all the same.
        assert!(plan(7, &facts((5, 1, 11), 0, 12, &[1]), 1)
            .unwrap()
            .is_some());
        // A hard state older than the snapshot point: the snapshot point is the commit.
        let rw = plan(7, &facts((4, 0, 2), 20, 25, &[1, 2, 3]), 1)
            .unwrap()
            .unwrap();
        assert_eq!((rw.commit, rw.dropped, rw.entries[0].index), (20, 5, 21));
        // No hard state at all: term 1, its own vote.
        let empty = GroupFacts {
            hard_state: None,
            snapshot_index: 0,
            last_index: 0,
            conf: None,
        };
        let rw = plan(7, &empty, 1).unwrap().unwrap();
        assert_eq!(
            rw.hard_state,
            HardState {
                term: 1,
                vote: 1,
                commit: 1
            }
        );
        assert!(plan(7, &facts((4, 0, 9), 0, 5, &[]), 1).is_err());
    }

    fn member(id: u64) -> Member {
        let ip = std::net::IpAddr::from([127, 0, 0, id as u8]);
        Member {
            node_id: id,
            peer_addr: (ip, 9093).into(),
            kafka_addr: (ip, 9092).into(),
            http_addr: (ip, 9090).into(),
        }
    }

    fn entry(index: u64, term: u64, kind: EntryKind, data: Vec<u8>) -> OwnedEntry {
        OwnedEntry {
            term,
            index,
            kind,
            data,
        }
    }

    /// On a real WAL: a three-voter controller log and a partition log, each with entries
    /// after their commit index, rewritten for node 2 (the controller first, then a "crash",
    /// then the whole rerun). The Raft core then starts each group
    /// with node 2 as its only voter, the controller state has node 2 alone with every
    /// replica on it, the uncommitted entries are gone, and a second run writes nothing.
    #[test]
    fn rewritten_groups_restart_with_this_node_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        LocalExecutorBuilder::default()
            .io_memory(4 << 20)
            .spawn(move || async move {
                tern_engine::storage::dma::probe_iopoll(&dir, 0)
                    .await
                    .unwrap();
                let wal = ShardWal::open(
                    DmaStorage,
                    0,
                    &dir.join("shard-0"),
                    &dir.join("quarantine"),
                    WalConfig::default(),
                )
                .await
                .unwrap();
                let wal = Rc::new(wal);
                let cmd = |c: Command| c.encode().unwrap();
                let mut controller = vec![
                    entry(1, 1, EntryKind::Normal, cmd(Command::AddMember(member(1)))),
                    entry(2, 1, EntryKind::Normal, cmd(Command::AddMember(member(2)))),
                    entry(3, 1, EntryKind::Normal, cmd(Command::AddMember(member(3)))),
                ];
                controller.push(entry(
                    4,
                    1,
                    EntryKind::Normal,
                    cmd(Command::CreateTopic(TopicSpec {
                        name: "events".into(),
                        id: uuid::Uuid::from_u128(9),
                        partitions: 2,
                        replication_factor: 3,
                        retention: Retention::default(),
                    })),
                ));
                // Uncommitted: never applied by anyone.
                controller.push(entry(
                    5,
                    2,
                    EntryKind::Normal,
                    cmd(Command::DeleteTopic {
                        name: "events".into(),
                        id: uuid::Uuid::nil(),
                    }),
                ));
                let conf3 = ConfState::with_voters(&[1, 2, 3]).encode();
                let partition = vec![
                    entry(1, 1, EntryKind::ConfChange, conf3.clone()),
                    entry(2, 1, EntryKind::Normal, b"committed".to_vec()),
                    entry(3, 2, EntryKind::Normal, b"uncommitted".to_vec()),
                ];
                let mut batch = WriteBatch::new();
                batch
                    .append(CONTROLLER_GROUP, controller)
                    .hard_state(
                        CONTROLLER_GROUP,
                        HardState {
                            term: 2,
                            vote: 3,
                            commit: 4,
                        },
                    )
                    .append(1000, partition)
                    .hard_state(
                        1000,
                        HardState {
                            term: 2,
                            vote: 1,
                            commit: 2,
                        },
                    );
                wal.write(batch).await.unwrap();

                // A crash right after the controller's batch: the partition is untouched, and
                // the rerun finishes it, leaving the controller as it was.
                let (rewritten, _) = rewrite_groups(&wal, &[CONTROLLER_GROUP], 2).await.unwrap();
                assert_eq!(rewritten, 1);
                assert_eq!(wal.last_index(1000), 3);
                let controller_after_crash =
                    (wal.last_index(CONTROLLER_GROUP), wal.hard_state(CONTROLLER_GROUP));
                assert_eq!(controller_after_crash.0, 6);
                let force = ForceNewCluster::new(2, 0);
                force.run_shard(0, &wal).await.unwrap();
                assert_eq!(
                    (wal.last_index(CONTROLLER_GROUP), wal.hard_state(CONTROLLER_GROUP)),
                    controller_after_crash
                );

                for group in [CONTROLLER_GROUP, 1000] {
                    // As the shard starts a group: the configuration entries in the cache.
                    let mut log = EngineLog::open(
                        wal.clone(),
                        group,
                        ConfState::with_voters(&[1, 2, 3]),
                        1 << 20,
                    )
                    .unwrap();
                    for index in tern_raft::LogStorage::conf_entry_indexes(&log) {
                        let read = wal.read(group, index, index + 1, u64::MAX).await.unwrap();
                        log.cache.insert_read(read.into_iter().map(|e| tern_raft::message::Entry {
                            term: e.term,
                            index: e.index,
                            kind: crate::node::log_store::raft_kind(e.kind),
                            data: e.data,
                        }));
                    }
                    let raw = RawNode::new(tern_raft::Config::new(2), log).unwrap();
                    assert_eq!(raw.conf(), &ConfState::with_voters(&[2]), "group {group}");
                    assert_eq!(raw.commit(), raw.last_index(), "group {group}");
                }
                assert_eq!(wal.last_index(1000), 3);
                let kept = wal.read(1000, 1, 4, u64::MAX).await.unwrap();
                assert_eq!(kept[1].data, b"committed");
                assert_eq!(kept[2].kind, EntryKind::ConfChange, "entry 3 replaced");

                // The controller state as a restart applies it.
                let mut state = ControllerState::default();
                let mut last = None;
                for e in wal.read(CONTROLLER_GROUP, 1, 7, u64::MAX).await.unwrap() {
                    if e.kind == EntryKind::Normal {
                        last = Some(state.apply_payload(e.index, &e.data).unwrap());
                    }
                }
                assert!(matches!(
                    last,
                    Some(Outcome::ClusterForced { node_id: 2, ref removed, .. }) if removed == &[1, 3]
                ));
                assert_eq!(state.members().keys().copied().collect::<Vec<_>>(), vec![2]);
                let topic = state.topic("events").expect("the uncommitted delete is gone");
                for p in &topic.partitions {
                    assert_eq!(p.replicas, vec![2]);
                }

                // A second run writes nothing.
                let before: Vec<_> = [CONTROLLER_GROUP, 1000]
                    .iter()
                    .map(|&g| (wal.last_index(g), wal.hard_state(g)))
                    .collect();
                ForceNewCluster::new(2, 0).run_shard(0, &wal).await.unwrap();
                let after: Vec<_> = [CONTROLLER_GROUP, 1000]
                    .iter()
                    .map(|&g| (wal.last_index(g), wal.hard_state(g)))
                    .collect();
                assert_eq!(before, after);
                wal.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_directory_without_a_committed_controller_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        LocalExecutorBuilder::default()
            .io_memory(4 << 20)
            .spawn(move || async move {
                let wal = ShardWal::open(
                    DmaStorage,
                    0,
                    &dir.join("shard-0"),
                    &dir.join("quarantine"),
                    WalConfig::default(),
                )
                .await
                .unwrap();
                let err = ForceNewCluster::new(1, 0)
                    .run_shard(0, &wal)
                    .await
                    .unwrap_err();
                assert!(err.contains("no controller group"), "{err}");
                // A controller group with nothing committed (a learner that never caught up).
                let mut batch = WriteBatch::new();
                batch.append(
                    CONTROLLER_GROUP,
                    [entry(1, 1, EntryKind::Normal, Vec::new())],
                );
                wal.write(batch).await.unwrap();
                let err = ForceNewCluster::new(1, 0)
                    .run_shard(0, &wal)
                    .await
                    .unwrap_err();
                assert!(err.contains("nothing committed"), "{err}");
                assert_eq!(wal.last_index(CONTROLLER_GROUP), 1, "nothing written");
                wal.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
