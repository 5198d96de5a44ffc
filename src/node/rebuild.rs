//! A wiped node rebuilt under its old id (`tern serve --rebuild`; docs/replication.md,
//! section 5): when the node as a whole may vote again.
//!
//! While the `NODE` file says `rebuilding=1`, every Raft group the node starts is put in the
//! core's rebuilding mode (`RawNode::set_rebuilding`: no votes, no campaigns, no
//! acknowledgement above the leader's commit). Each group leaves that mode by itself once it
//! holds what its leader had committed when it first heard from it
//! (`RawNode::finish_rebuild`, which also takes the current term's vote for that leader).
//! The node clears the flag once no group it must host is still rebuilding. Which groups it
//! must host is known only from the controller's state, which is itself being rebuilt, so
//! the rule is:
//!
//! 1. The controller's shard finishes the controller group, then publishes the controller
//!    state's applied index `c` (and broadcasts that state to every shard).
//! 2. Every shard reports, each tick, the applied index of the controller state it has
//!    processed (its partition groups started from it, rebuilding) and whether any of its
//!    groups is still rebuilding.
//! 3. The flag is cleared (temp file + fsync + rename + directory fsync) once every shard
//!    reports no group rebuilding for a controller state at or after `c`. Groups started after
//!    that belong to partitions placed here after the rebuild: this node made them no promise.
//!
//! Clearing happens after the groups' own votes are recorded, so a crash anywhere in between
//! restarts the node rebuilding again, which is only more cautious.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::identity::{self, IdentityError, NodeIdentity};

/// What one shard last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ShardReport {
    /// Applied index of the controller state whose partitions the shard has started.
    controller_seen: u64,
    /// Some group of the shard is still rebuilding.
    rebuilding_groups: bool,
}

/// Shared by the shards of a node (one per node).
pub struct NodeRebuild {
    /// Where the `NODE` file is; `None` in the node simulation, whose model of the file is
    /// [`NodeRebuild::is_active`] itself (written and synced at once, as the real one).
    dir: Option<PathBuf>,
    /// `NODE` still says `rebuilding=1`.
    active: AtomicBool,
    /// The controller state's applied index once the controller group finished rebuilding;
    /// 0 until then. Invariant: set at most once.
    controller_ready: AtomicU64,
    reports: Mutex<Vec<Option<ShardReport>>>,
    identity: Mutex<NodeIdentity>,
    /// Groups that finished rebuilding in this life of the node (status, and the node
    /// simulation's check that nothing else voted or acknowledged).
    finished: Mutex<BTreeSet<u64>>,
}

impl NodeRebuild {
    pub fn new(dir: Option<PathBuf>, identity: NodeIdentity, shards: u32) -> Self {
        NodeRebuild {
            dir,
            active: AtomicBool::new(identity.rebuilding),
            controller_ready: AtomicU64::new(0),
            reports: Mutex::new(vec![None; shards as usize]),
            identity: Mutex::new(identity),
            finished: Mutex::new(BTreeSet::new()),
        }
    }

    /// Group `group` left rebuilding mode (`RawNode::finish_rebuild` succeeded).
    pub fn group_finished(&self, group: u64) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group);
    }

    /// Whether group `group` may vote and acknowledge as a normal member: the node is not
    /// rebuilding, or that group finished.
    pub fn group_is_normal(&self, group: u64) -> bool {
        !self.is_active()
            || self
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&group)
    }

    /// Groups started now must start in rebuilding mode.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// The controller group finished rebuilding; `applied` is its state's applied index.
    pub fn controller_finished(&self, applied: u64) {
        // 0 means "not yet"; an empty controller state still counts as ready.
        let _ = self.controller_ready.compare_exchange(
            0,
            applied.max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// A shard's report (see the module doc). Returns `Ok(true)` when this report let the
    /// node clear its `NODE` flag: the node is a normal member again.
    pub fn report(
        &self,
        shard: u32,
        controller_seen: u64,
        rebuilding_groups: bool,
    ) -> Result<bool, IdentityError> {
        if !self.is_active() {
            return Ok(false);
        }
        let all_done = {
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = reports.get_mut(shard as usize) {
                *slot = Some(ShardReport {
                    controller_seen,
                    rebuilding_groups,
                });
            }
            let ready = self.controller_ready.load(Ordering::SeqCst);
            ready > 0
                && reports.iter().all(|r| {
                    r.is_some_and(|r| !r.rebuilding_groups && r.controller_seen.max(1) >= ready)
                })
        };
        if !all_done {
            return Ok(false);
        }
        let mut id = self.identity.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.is_active() {
            return Ok(false);
        }
        // Blocking file I/O on a shard's thread: once in the node's life, a few hundred bytes.
        if let Some(dir) = &self.dir {
            *id = identity::mark_rebuilt(dir, *id)?;
        }
        self.active.store(false, Ordering::SeqCst);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rebuilding_node(dir: &std::path::Path, shards: u32) -> NodeRebuild {
        let req = identity::IdentityRequest {
            node_id: 2,
            cluster_id: Some(Uuid::from_u128(9)),
            multi_node: true,
        };
        let (id, _) = identity::open_or_create(dir, req).unwrap();
        let id = identity::mark_rebuilding(dir, id).unwrap();
        NodeRebuild::new(Some(dir.to_path_buf()), id, shards)
    }

    #[test]
    fn the_flag_clears_only_after_the_controller_and_every_shard_are_done() {
        let tmp = tempfile::tempdir().unwrap();
        let rb = rebuilding_node(tmp.path(), 2);
        assert!(rb.is_active());
        // Every shard done, but the controller not yet rebuilt: its state may still add
        // partitions here.
        assert!(!rb.report(0, 0, false).unwrap());
        assert!(!rb.report(1, 0, false).unwrap());
        rb.controller_finished(7);
        // Shard 1 has not yet started the partitions of controller state 7.
        assert!(!rb.report(0, 7, false).unwrap());
        assert!(!rb.report(1, 5, false).unwrap());
        // It has, but one of them is still rebuilding.
        assert!(!rb.report(1, 7, true).unwrap());
        assert!(
            identity::read_identity(tmp.path())
                .unwrap()
                .unwrap()
                .rebuilding
        );
        assert!(rb.report(1, 7, false).unwrap());
        assert!(!rb.is_active());
        let on_disk = identity::read_identity(tmp.path()).unwrap().unwrap();
        assert!(on_disk.admitted && !on_disk.rebuilding);
        // Later reports change nothing.
        assert!(!rb.report(0, 9, true).unwrap());
    }

    #[test]
    fn a_node_not_rebuilding_never_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let req = identity::IdentityRequest {
            node_id: 1,
            cluster_id: None,
            multi_node: false,
        };
        let (id, _) = identity::open_or_create(tmp.path(), req).unwrap();
        let rb = NodeRebuild::new(Some(tmp.path().to_path_buf()), id, 1);
        rb.controller_finished(3);
        assert!(!rb.is_active());
        assert!(!rb.report(0, 3, false).unwrap());
    }
}
