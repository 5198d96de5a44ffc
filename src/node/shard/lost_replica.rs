//! The shard's side of one lost replica on an intact node (`node/group_ledger.rs` has the
//! rule): the ledger loaded at start, each starting group checked against it, the ledger
//! written in the round batches that need it, and rebuilt groups given their vote back.

use tern_engine::storage::Storage;
use tern_engine::WriteBatch;
use tern_net::PeerTransport;
use tracing::{error, info, warn};

use super::super::group_ledger::{ledger_group, GroupLedger, GroupStart};
use super::Shard;

/// The ledger as the shard keeps it.
pub(super) struct LostReplicas {
    /// The engine group whose `GroupMeta` record holds the ledger.
    engine_group: u64,
    ledger: GroupLedger,
    /// Changed since it was last put into a round batch.
    dirty: bool,
}

impl LostReplicas {
    /// The ledger of shard `shard` as the engine recovered it. A record that does not decode
    /// (the engine checked its CRC, so a bug or a newer format) is logged and replaced by
    /// what the groups' own states say: every group with state is listed again at its start,
    /// so only a group lost in the same fault goes undetected.
    pub(super) fn load<S: Storage>(
        wal: &tern_engine::ShardWal<S>,
        shard: u32,
        shards: u32,
    ) -> Self {
        let engine_group = ledger_group(shard, shards);
        let ledger = match wal.group_meta(engine_group) {
            None => GroupLedger::default(),
            Some(bytes) => GroupLedger::decode(&bytes).unwrap_or_else(|why| {
                error!(
                    shard,
                    "group ledger unreadable ({why}): rebuilt from the groups' own states; a \
                     replica lost together with it is not detected"
                );
                GroupLedger::default()
            }),
        };
        let rebuilding: Vec<u64> = ledger.rebuilding().collect();
        if !rebuilding.is_empty() {
            info!(shard, groups = ?rebuilding, "groups still rebuilding after a lost replica");
        }
        LostReplicas {
            engine_group,
            ledger,
            dirty: false,
        }
    }

    /// How group `group` starts; `has_state`: the engine holds entries, a hard state or a
    /// snapshot point for it.
    pub(super) fn on_start(
        &mut self,
        shard: u32,
        group: u64,
        has_state: bool,
        lost_entries: bool,
    ) -> GroupStart {
        let newly_lost = !self.ledger.is_rebuilding(group)
            && (lost_entries || self.ledger.is_hosted(group) && !has_state);
        let (start, changed) = self.ledger.on_start(group, has_state, lost_entries);
        self.dirty |= changed;
        if newly_lost && lost_entries {
            warn!(
                shard,
                group,
                "replica lost committed entries (its commit index is past its last entry): it \
                 votes and acknowledges nothing until rebuilt from its peers"
            );
        } else if newly_lost {
            warn!(
                shard,
                group,
                "replica lost: this node made promises in the group but holds no state for it; \
                 it votes and acknowledges nothing until rebuilt from its peers"
            );
        }
        start
    }

    pub(super) fn on_state_written(&mut self, group: u64) {
        self.dirty |= self.ledger.on_state_written(group);
    }

    pub(super) fn on_deleted(&mut self, group: u64) {
        self.dirty |= self.ledger.on_deleted(group);
    }

    /// Puts the ledger into a round's batch if it changed; `submitted`: the batch will be
    /// written (otherwise it stays due for the next one).
    pub(super) fn add_to(&mut self, batch: &mut WriteBatch, submitted: bool) {
        if !self.dirty || !submitted {
            return;
        }
        self.dirty = false;
        let bytes = self.ledger.encode();
        if bytes.len() > tern_engine::constants::GROUP_META_BYTES_MAX {
            // The engine would refuse the whole batch. Past this size (tens of thousands of
            // groups on one shard, docs/format.md) the durable ledger stays as it was: groups
            // it does not list are not protected against a lost replica.
            error!(
                bytes = bytes.len(),
                "group ledger too large for its engine record; not updated"
            );
            return;
        }
        batch.group_meta(self.engine_group, bytes);
    }
}

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    /// Once per tick: a lost group that holds what its leader had committed when it first
    /// heard from it takes its vote back (`RawNode::finish_rebuild`); the ledger forgets it
    /// in the round that makes that vote durable. A group the node-wide rebuild finished
    /// (`rebuild_driver.rs`) only leaves the ledger.
    pub(super) fn tick_lost_replicas(&mut self) {
        let rebuilding: Vec<u64> = self.lost.ledger.rebuilding().collect();
        for id in rebuilding {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.raw.is_rebuilding() {
                let Some(target) = g.raw.rebuild_target() else {
                    continue;
                };
                if g.raw.applied() < target || !g.raw.finish_rebuild() {
                    continue;
                }
                info!(
                    shard = self.shard,
                    group = id,
                    target,
                    term = g.raw.term(),
                    leader = g.raw.leader(),
                    "lost replica rebuilt; it votes and acknowledges again"
                );
            }
            // The vote goes out in the next Ready's hard state, in the same batch as this.
            self.dirty.insert(id);
            self.lost.dirty |= self.lost.ledger.on_rebuilt(id);
        }
    }
}
