//! A member that lost its disk and is being rebuilt (docs/replication.md, section 5).
//!
//! Its old self made promises it no longer remembers: votes, and acknowledgements of entries it
//! no longer holds. Until it again holds everything its leader had committed when the rebuild
//! began, it must add nothing to any quorum. `RawNode` consults [`Rebuild`] at four places:
//!
//! | input                  | normal voter             | rebuilding member                             |
//! |------------------------|--------------------------|-----------------------------------------------|
//! | election timeout       | campaigns                | never campaigns (nor on `TimeoutNow`)         |
//! | Vote / PreVote         | grants if up to date     | always rejects                                |
//! | AppendEntries accepted | acks its last new index  | acks `min(last new index, commit in message)` |
//! | Heartbeat              | confirms the read seq    | answers `read_seq 0`: confirms no ReadIndex   |
//!
//! Its acknowledgements are therefore never above a commit index the leader already reached,
//! so they never make the leader commit anything. The flag is not persisted by the core: the
//! driver persists it (tern: the `NODE` file's `rebuilding=1`) and sets it again at restart.

/// Rebuild progress of one member.
///
/// Invariant: `target`, once set, never decreases (a commit index stays committed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// The leader commit index of the first AppendEntries received since rebuilding began (at
    /// this start; a heartbeat's commit is capped by what the leader thinks this member holds,
    /// so it does not count): the member is rebuilt once it durably holds and has committed
    /// this index. `None` until then.
    target: Option<u64>,
}

impl Rebuild {
    /// Records a commit index heard from a leader; only the first one sets the target.
    pub fn heard_leader_commit(&mut self, commit: u64) {
        if self.target.is_none() {
            self.target = Some(commit);
        }
    }

    pub fn target(&self) -> Option<u64> {
        self.target
    }

    /// The index an accepting AppendResp may report: never above the commit index the leader
    /// sent with the entries, so the acknowledgement cannot raise the leader's commit.
    pub fn ack_index(last_new: u64, leader_commit: u64) -> u64 {
        last_new.min(leader_commit)
    }

    /// Holds everything the leader had committed when the rebuild began.
    pub fn caught_up(&self, committed: u64, persisted: u64) -> bool {
        self.target
            .is_some_and(|t| committed >= t && persisted >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_the_first_commit_heard_and_caught_up_needs_it_durable() {
        let mut r = Rebuild::default();
        assert!(!r.caught_up(100, 100), "no leader heard: no target yet");
        r.heard_leader_commit(7);
        r.heard_leader_commit(9);
        assert_eq!(r.target(), Some(7));
        assert!(!r.caught_up(6, 10));
        assert!(!r.caught_up(7, 6), "committed but not durable");
        assert!(r.caught_up(7, 7));
    }

    #[test]
    fn acks_never_exceed_the_leader_commit() {
        assert_eq!(Rebuild::ack_index(10, 4), 4);
        assert_eq!(Rebuild::ack_index(3, 4), 3);
    }
}
