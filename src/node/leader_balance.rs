//! Leaders follow the preferred replicas: the leader of a partition group hands leadership
//! to the group's preferred replica (the first of its replicas in the controller's state)
//! once that replica is a caught-up voter. Placement puts the preferred replicas of a
//! topic's partitions on different nodes in turn, so this spreads leaders over the nodes,
//! brings leadership back to a node after it restarts, and carries out
//! `tern cluster transfer-leader` (which makes the target the preferred replica).
//!
//! A transfer blocks the group's proposals until it ends (at most `election_ticks_min`
//! ticks, then the core abandons it), so a preferred replica that cannot win (its shard
//! failed, it is partitioned away) must not be asked again and again: attempts of one leader
//! back off exponentially, from [`LeaderBalancer::new`]'s first pause up to 64 times it.

use std::collections::BTreeMap;

use tern_raft::message::{ConfState, NodeId};
use tern_raft::Role;

/// What the balancer looks at for one group on one tick.
#[derive(Debug, Clone, Copy)]
pub struct LeaderView<'a> {
    pub node_id: NodeId,
    pub role: Role,
    /// The first replica in the controller's state.
    pub preferred: Option<NodeId>,
    pub conf: &'a ConfState,
    pub last_index: u64,
    /// The preferred replica's match index, as this leader tracks it.
    pub preferred_match: Option<u64>,
}

/// The node to hand leadership to now, if any: only a leader that is not the preferred
/// replica, outside a joint configuration, towards a voter holding the leader's whole log
/// (so the transfer ends in one round of messages instead of a catch-up).
pub fn transfer_target(v: &LeaderView<'_>) -> Option<NodeId> {
    let preferred = v.preferred?;
    if v.role != Role::Leader || preferred == v.node_id || v.conf.is_joint() {
        return None;
    }
    if !v.conf.voters.contains(&preferred) {
        return None;
    }
    (v.preferred_match? >= v.last_index).then_some(preferred)
}

/// Per-shard pacing of transfers: when each group's leader may try next.
#[derive(Debug)]
pub struct LeaderBalancer {
    now: u64,
    first_pause: u64,
    /// Group → (tick of the next allowed attempt, pause after it).
    next: BTreeMap<u64, (u64, u64)>,
}

/// Growth bound of the pause between attempts, as a multiple of the first pause.
const PAUSE_GROWTH_MAX: u64 = 64;

impl LeaderBalancer {
    /// `first_pause`: ticks between a group's first and second attempt (then doubling).
    pub fn new(first_pause: u64) -> Self {
        LeaderBalancer {
            now: 0,
            first_pause: first_pause.max(1),
            next: BTreeMap::new(),
        }
    }

    pub fn on_tick(&mut self) {
        self.now += 1;
    }

    /// Whether `group`'s leader may start a transfer now; if so the attempt is recorded.
    pub fn may_try(&mut self, group: u64) -> bool {
        let (at, pause) = self
            .next
            .get(&group)
            .copied()
            .unwrap_or((self.now, self.first_pause));
        if self.now < at {
            return false;
        }
        let next_pause = (pause * 2).min(self.first_pause * PAUSE_GROWTH_MAX);
        self.next.insert(group, (self.now + pause, next_pause));
        true
    }

    /// This node no longer leads `group` (or no longer hosts it): the next time it leads,
    /// attempts start again without a pause.
    pub fn forget(&mut self, group: u64) {
        self.next.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(conf: &ConfState) -> LeaderView<'_> {
        LeaderView {
            node_id: 1,
            role: Role::Leader,
            preferred: Some(2),
            conf,
            last_index: 10,
            preferred_match: Some(10),
        }
    }

    #[test]
    fn a_leader_hands_over_to_a_caught_up_preferred_voter_only() {
        let conf = ConfState::with_voters(&[1, 2, 3]);
        assert_eq!(transfer_target(&view(&conf)), Some(2));
        let behind = LeaderView {
            preferred_match: Some(9),
            ..view(&conf)
        };
        assert_eq!(transfer_target(&behind), None);
        let follower = LeaderView {
            role: Role::Follower,
            ..view(&conf)
        };
        assert_eq!(transfer_target(&follower), None);
        let preferred_itself = LeaderView {
            preferred: Some(1),
            ..view(&conf)
        };
        assert_eq!(transfer_target(&preferred_itself), None);
        let unknown_progress = LeaderView {
            preferred_match: None,
            ..view(&conf)
        };
        assert_eq!(transfer_target(&unknown_progress), None);
        let learner = ConfState {
            voters: vec![1, 3],
            voters_outgoing: vec![],
            learners: vec![2],
        };
        assert_eq!(transfer_target(&view(&learner)), None);
        let joint = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![1, 3, 4],
            learners: vec![],
        };
        assert_eq!(transfer_target(&view(&joint)), None);
    }

    #[test]
    fn attempts_back_off_and_restart_after_forget() {
        let mut b = LeaderBalancer::new(3);
        assert!(b.may_try(7));
        let mut attempts = vec![0u64];
        for tick in 1..=100u64 {
            b.on_tick();
            if b.may_try(7) {
                attempts.push(tick);
            }
        }
        // Pauses of 3, 6, 12, 24, 48 ticks.
        assert_eq!(attempts, vec![0, 3, 9, 21, 45, 93]);
        // Another group is paced on its own.
        assert!(b.may_try(8));
        b.forget(7);
        assert!(b.may_try(7));
        assert!(!b.may_try(7));
    }

    #[test]
    fn the_pause_stops_growing() {
        let mut b = LeaderBalancer::new(1);
        let mut last = 0;
        let mut gaps = Vec::new();
        for tick in 0..2000u64 {
            if b.may_try(1) {
                gaps.push(tick - last);
                last = tick;
            }
            b.on_tick();
        }
        assert!(gaps.iter().all(|&g| g <= PAUSE_GROWTH_MAX), "{gaps:?}");
        assert_eq!(*gaps.last().unwrap(), PAUSE_GROWTH_MAX);
    }
}
