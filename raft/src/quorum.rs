//! Majority and joint-majority arithmetic.
//!
//! A joint configuration (C_old,new) decides only with a majority of each half. An empty half
//! never constrains: its committed index is `u64::MAX` and its vote is won.

use crate::message::{ConfState, NodeId};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The largest index that a majority of `voters` has reached, where `acked(id)` is how far
/// `id` has reached.
pub fn majority_index(voters: &[NodeId], acked: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // Groups are small (3 or 5 voters): their values are sorted in an array on the stack, as
    // this runs for every acknowledgement a leader receives; larger sets take a vector.
    let mut small = [0u64; SMALL_VOTERS];
    let mut large = Vec::new();
    let values: &mut [u64] = if voters.len() <= SMALL_VOTERS {
        &mut small[..voters.len()]
    } else {
        large.resize(voters.len(), 0);
        &mut large
    };
    for (v, id) in values.iter_mut().zip(voters) {
        *v = acked(*id);
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[voters.len() / 2]
}

/// Voter sets up to this size compute their majority index without allocating.
const SMALL_VOTERS: usize = 9;

/// Counts `votes(id)` (`Some(true)` granted, `Some(false)` rejected, `None` not yet answered).
pub fn majority_vote(voters: &[NodeId], votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match votes(*id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// [`majority_index`] over both halves of a (possibly joint) configuration.
pub fn committed_index(conf: &ConfState, acked: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = majority_index(&conf.voters, &acked);
    let outgoing = majority_index(&conf.voters_outgoing, &acked);
    incoming.min(outgoing)
}

/// [`majority_vote`] over both halves of a (possibly joint) configuration.
pub fn vote_result(conf: &ConfState, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let incoming = majority_vote(&conf.voters, &votes);
    let outgoing = majority_vote(&conf.voters_outgoing, &votes);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_index_takes_the_median_of_the_quorum() {
        let acked = |id: NodeId| [0, 5, 3, 9, 1, 7][id as usize];
        assert_eq!(majority_index(&[1, 2, 3], acked), 5);
        assert_eq!(majority_index(&[1, 2, 3, 4, 5], acked), 5);
        assert_eq!(majority_index(&[1, 2, 3, 4], acked), 3);
        assert_eq!(majority_index(&[], acked), u64::MAX);
        // Past the stack array's size: the same median from the vector.
        let many: Vec<NodeId> = (1..=11).collect();
        assert_eq!(majority_index(&many, |id| id * 10), 60);
        let ten: Vec<NodeId> = (1..=10).collect();
        assert_eq!(majority_index(&ten, |id| id * 10), 50);
    }

    #[test]
    fn joint_configuration_needs_both_majorities() {
        let conf = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![3, 4, 5],
            learners: vec![],
        };
        let acked = |id: NodeId| [0, 9, 9, 2, 1, 1][id as usize];
        assert_eq!(committed_index(&conf, acked), 1);
        let votes = |id: NodeId| Some(id <= 3);
        assert_eq!(vote_result(&conf, votes), VoteResult::Lost);
        let votes = |id: NodeId| if id <= 4 { Some(true) } else { None };
        assert_eq!(vote_result(&conf, votes), VoteResult::Won);
        let votes = |id: NodeId| if id <= 3 { Some(true) } else { None };
        assert_eq!(vote_result(&conf, votes), VoteResult::Pending);
    }
}
