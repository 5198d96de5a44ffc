//! Moving a partition's replicas: the Raft configuration changes its leader proposes, one at
//! a time, to bring the group's configuration to the replica set the controller placed
//! (after `AddMember`/`RemoveMember` moved replicas; docs/operations/node.md, "Membership
//! changes").
//!
//! The order never lowers the group's fault tolerance below what it had:
//! 1. a placed replica that is not in the configuration joins as a **learner** (it receives
//!    the log but does not count for commit or elections);
//! 2. a learner that holds everything committed is **promoted** to voter (the core goes
//!    through the joint configuration and leaves it by itself);
//! 3. only once every placed replica is a voter are the voters no longer placed **removed**
//!    (and learners no longer placed dropped).
//!
//! One change at a time: the core refuses a proposal while one is uncommitted or the
//! configuration is joint, and [`next_change`] waits for that too.

use tern_raft::message::{ConfState, NodeId};
use tern_raft::ConfChange;

use super::controller::ControllerState;

/// The members the controller group itself should have: every member of the controller's
/// state, plus every node of its configuration that the state neither lists nor removed.
/// The second part keeps the initial voters while a new controller leader's registration of
/// them (`AddMember`, shard.rs `register_members`) has not committed yet: only an explicit
/// `RemoveMember` takes a node out of the controller's configuration. Sorted.
pub fn controller_placement(state: &ControllerState, conf: &ConfState) -> Vec<NodeId> {
    let mut placed: Vec<NodeId> = state.members().keys().copied().collect();
    for &n in conf
        .voters
        .iter()
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners)
    {
        if !state.members().contains_key(&n) && !state.was_removed(n) {
            placed.push(n);
        }
    }
    placed.sort_unstable();
    placed.dedup();
    placed
}

/// The next configuration to propose for a group whose configuration is `conf`, whose
/// placed replicas are `placed`, whose commit index is `commit`, and whose members' match
/// indexes `match_index` gives (`None` when the leader has no progress for it). `None`
/// when the configuration already matches, or a change must finish first.
pub fn next_change(
    conf: &ConfState,
    placed: &[NodeId],
    commit: u64,
    match_index: impl Fn(NodeId) -> Option<u64>,
) -> Option<ConfChange> {
    if conf.is_joint() || placed.is_empty() {
        return None;
    }
    let known = |n: &NodeId| conf.voters.contains(n) || conf.learners.contains(n);
    let missing: Vec<NodeId> = placed.iter().copied().filter(|n| !known(n)).collect();
    if !missing.is_empty() {
        let mut learners = conf.learners.clone();
        learners.extend(missing);
        return Some(ConfChange {
            voters: conf.voters.clone(),
            learners,
        });
    }
    let caught_up: Vec<NodeId> = conf
        .learners
        .iter()
        .copied()
        .filter(|n| placed.contains(n) && match_index(*n).is_some_and(|m| m >= commit))
        .collect();
    if !caught_up.is_empty() {
        let mut voters = conf.voters.clone();
        voters.extend(&caught_up);
        let learners = conf
            .learners
            .iter()
            .copied()
            .filter(|n| !caught_up.contains(n))
            .collect();
        return Some(ConfChange { voters, learners });
    }
    let every_placed_votes = placed.iter().all(|n| conf.voters.contains(n));
    let extra_voters = conf.voters.iter().any(|n| !placed.contains(n));
    let extra_learners = conf.learners.iter().any(|n| !placed.contains(n));
    if every_placed_votes && (extra_voters || extra_learners) {
        return Some(ConfChange {
            voters: placed.to_vec(),
            learners: Vec::new(),
        });
    }
    // Placed learners still catching up: wait.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            voters_outgoing: Vec::new(),
            learners: learners.to_vec(),
        }
    }

    fn change(voters: &[u64], learners: &[u64]) -> Option<ConfChange> {
        Some(ConfChange {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        })
    }

    #[test]
    fn a_move_adds_a_learner_promotes_it_when_caught_up_then_removes_the_old_replica() {
        let placed = [1, 2, 4];
        let all_match = |_| Some(10);
        // Replica 3 moves to 4.
        let c = conf(&[1, 2, 3], &[]);
        assert_eq!(
            next_change(&c, &placed, 10, all_match),
            change(&[1, 2, 3], &[4])
        );
        // 4 is behind: nothing until it catches up.
        let c = conf(&[1, 2, 3], &[4]);
        let behind = |n| Some(if n == 4 { 5 } else { 10 });
        assert_eq!(next_change(&c, &placed, 10, behind), None);
        assert_eq!(next_change(&c, &placed, 10, |_| None), None);
        assert_eq!(
            next_change(&c, &placed, 10, all_match),
            change(&[1, 2, 3, 4], &[])
        );
        // Promoted: now the old voter goes.
        let c = conf(&[1, 2, 3, 4], &[]);
        assert_eq!(
            next_change(&c, &placed, 10, all_match),
            change(&[1, 2, 4], &[])
        );
        // Done.
        let c = conf(&[1, 2, 4], &[]);
        assert_eq!(next_change(&c, &placed, 10, all_match), None);
    }

    #[test]
    fn waits_while_joint_and_drops_learners_no_longer_placed() {
        let joint = ConfState {
            voters: vec![1, 2, 4],
            voters_outgoing: vec![1, 2, 3],
            learners: vec![],
        };
        assert_eq!(next_change(&joint, &[1, 2, 4], 10, |_| Some(10)), None);
        let c = conf(&[1, 2, 3], &[5]);
        assert_eq!(
            next_change(&c, &[1, 2, 3], 10, |_| Some(10)),
            change(&[1, 2, 3], &[])
        );
        assert_eq!(next_change(&c, &[], 10, |_| Some(10)), None);
    }

    fn member(node_id: u64) -> crate::node::controller::Command {
        crate::node::controller::Command::AddMember(crate::node::controller::Member {
            node_id,
            peer_addr: format!("127.0.0.{node_id}:9093").parse().unwrap(),
            kafka_addr: format!("127.0.0.{node_id}:9092").parse().unwrap(),
            http_addr: format!("127.0.0.{node_id}:9090").parse().unwrap(),
        })
    }

    /// The controller group follows the members: initial voters not yet registered stay, a
    /// new member joins as a learner and is promoted once caught up, a removed one leaves.
    #[test]
    fn controller_configuration_follows_the_members_and_keeps_unregistered_voters() {
        use crate::node::controller::Command;
        let mut state = ControllerState::default();
        let c = conf(&[1, 2, 3], &[]);
        // Nothing registered yet, or only some: the configured voters stay.
        assert_eq!(controller_placement(&state, &c), vec![1, 2, 3]);
        state.apply(1, &member(1)).unwrap();
        assert_eq!(controller_placement(&state, &c), vec![1, 2, 3]);
        state.apply(2, &member(2)).unwrap();
        state.apply(3, &member(3)).unwrap();
        // Node 4 added: it joins as a learner, then votes once caught up.
        state.apply(4, &member(4)).unwrap();
        let placed = controller_placement(&state, &c);
        assert_eq!(placed, vec![1, 2, 3, 4]);
        assert_eq!(
            next_change(&c, &placed, 10, |_| Some(10)),
            change(&[1, 2, 3], &[4])
        );
        let c = conf(&[1, 2, 3], &[4]);
        assert_eq!(
            next_change(&c, &placed, 10, |n| Some(if n == 4 { 3 } else { 10 })),
            None
        );
        assert_eq!(
            next_change(&c, &placed, 10, |_| Some(10)),
            change(&[1, 2, 3, 4], &[])
        );
        // Node 1 removed: it leaves the configuration, and is not kept as "unregistered".
        state
            .apply(5, &Command::RemoveMember { node_id: 1 })
            .unwrap();
        let c = conf(&[1, 2, 3, 4], &[]);
        let placed = controller_placement(&state, &c);
        assert_eq!(placed, vec![2, 3, 4]);
        assert_eq!(
            next_change(&c, &placed, 10, |_| Some(10)),
            change(&[2, 3, 4], &[])
        );
    }

    #[test]
    fn a_removed_member_leaves_the_voters_without_a_replacement() {
        // Only two members left: the controller placed the partition on them alone.
        let c = conf(&[1, 2, 3], &[]);
        assert_eq!(
            next_change(&c, &[1, 2], 10, |_| Some(10)),
            change(&[1, 2], &[])
        );
    }
}
