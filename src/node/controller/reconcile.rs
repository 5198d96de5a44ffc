//! Which partition groups this node must host, and what to change to get there.
//!
//! The shard driver calls [`desired_groups`] after each applied controller command (and
//! after installing a controller snapshot), then [`plan`] against the groups it runs, and
//! carries the plan out: create the groups it must host, change the replica set of groups
//! whose replicas changed, remove (and purge the data of) groups it must no longer host.
//! The controller group itself (group 0) is not in the plan: it lives on the voters and
//! changes by Raft membership change.

use std::collections::BTreeMap;

use tern_engine::shard_for_group;
use uuid::Uuid;

use super::state::ControllerState;

/// A partition group this node hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedGroup {
    pub group: u64,
    /// `tern_engine::shard_for_group(group, shards)`: the same on every node.
    pub shard: u32,
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: u32,
    /// All replicas, this node included; the first is the preferred leader.
    pub replicas: Vec<u64>,
    /// The replicas the group was created with (see `state::Partition::initial`).
    pub initial: Vec<u64>,
}

/// Every partition group that has a replica on `node_id`, by group id.
pub fn desired_groups(
    state: &ControllerState,
    node_id: u64,
    shards: u32,
) -> BTreeMap<u64, HostedGroup> {
    let mut out = BTreeMap::new();
    for t in state.topics().values() {
        for (p_no, p) in t.partitions.iter().enumerate() {
            if p.replicas.contains(&node_id) {
                out.insert(
                    p.group,
                    HostedGroup {
                        group: p.group,
                        shard: shard_for_group(p.group, shards),
                        topic: t.name.clone(),
                        topic_id: t.id,
                        partition: p_no as u32,
                        replicas: p.replicas.clone(),
                        initial: p.initial.clone(),
                    },
                );
            }
        }
    }
    out
}

/// What the driver must do, each list in group order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    pub create: Vec<HostedGroup>,
    /// Hosted already, but the replica set changed (a Raft membership change to propose
    /// where this node leads the group).
    pub update: Vec<HostedGroup>,
    /// Hosted now, not wanted: stop the group and purge its data.
    pub remove: Vec<u64>,
}

impl ReconcilePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

/// `running`: the partition groups the node runs now, with the replica set each was last
/// reconciled to.
pub fn plan(
    running: &BTreeMap<u64, Vec<u64>>,
    desired: &BTreeMap<u64, HostedGroup>,
) -> ReconcilePlan {
    let mut out = ReconcilePlan::default();
    for (group, want) in desired {
        match running.get(group) {
            None => out.create.push(want.clone()),
            Some(replicas) if *replicas != want.replicas => out.update.push(want.clone()),
            Some(_) => {}
        }
    }
    out.remove = running
        .keys()
        .filter(|g| !desired.contains_key(g))
        .copied()
        .collect();
    out
}
