//! A member that lost its disk and is rebuilt under its old id (docs/replication.md, section
//! 5): while rebuilding it grants no vote, never campaigns, confirms no read, and its
//! acknowledgements never make the leader commit; it becomes a voter again only once it holds
//! what the leader had committed when the rebuild began.

mod harness;

use std::cell::RefCell;
use std::rc::Rc;

use harness::{Cluster, NodeOpts};
use tern_raft::{MemStorage, Message, MessageBody, Role, NO_NODE};

fn elect(c: &mut Cluster, id: u64) {
    c.raft_mut(id).campaign();
    c.stabilize();
    assert_eq!(c.raft(id).role(), Role::Leader);
}

fn propose(c: &mut Cluster, leader: u64, count: usize) {
    for i in 0..count {
        c.raft_mut(leader)
            .propose(format!("v{i}").into_bytes())
            .expect("leader accepts");
        c.stabilize();
    }
}

/// Crashes `id`, gives it an empty disk (wiped data directory) and restarts it rebuilding.
fn wipe_and_rebuild(c: &mut Cluster, id: u64) {
    c.crash(id);
    c.nodes.get_mut(&id).expect("known node").disk = Rc::new(RefCell::new(MemStorage::default()));
    c.restart(id);
    c.raft_mut(id).set_rebuilding();
}

/// Three voters, 1 leads with five entries committed, 3 is wiped and rebuilt from 1.
fn three_with_rebuilt_three() -> Cluster {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    elect(&mut c, 1);
    propose(&mut c, 1, 5);
    wipe_and_rebuild(&mut c, 3);
    // A heartbeat tells 3 the leader and its commit index: the rebuild target.
    c.tick(1, 5);
    c.stabilize();
    c
}

fn vote_request(from: u64, to: u64, term: u64, pre: bool, last: (u64, u64)) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            pre,
            last_index: last.0,
            last_term: last.1,
            transfer: false,
        },
    }
}

/// The answers `id` sent to `to` in its next Ready (durable or not).
fn vote_answers(c: &mut Cluster, id: u64) -> Vec<bool> {
    let rd = c.raft_mut(id).ready();
    let answers = rd
        .messages
        .iter()
        .filter_map(|m| match m.msg.body {
            MessageBody::VoteResp { reject, .. } => Some(!reject),
            _ => None,
        })
        .collect();
    c.raft_mut(id).on_persisted(rd.persist_ack);
    answers
}

#[test]
fn rebuild_wiped_follower_catches_up_and_learns_its_target() {
    let c = three_with_rebuilt_three();
    let leader_commit = c.raft(1).commit();
    assert!(c.raft(3).is_rebuilding());
    assert_eq!(c.raft(3).rebuild_target(), Some(leader_commit));
    assert_eq!(c.raft(3).last_index(), c.raft(1).last_index());
    assert!(c.raft(3).rebuild_caught_up());
}

#[test]
fn rebuild_member_grants_no_vote_nor_pre_vote_even_to_an_up_to_date_candidate() {
    let mut c = three_with_rebuilt_three();
    let (term, last) = (c.raft(3).term(), c.raft(3).last_index());
    let last_term = c.raft(3).log_term(last).expect("in log");
    // Pre-vote and vote, each in a term above 3's, from a candidate as up to date as 3.
    // The lease of check-quorum would hide the request; 3 has not heard the leader for a while.
    c.tick(3, 100);
    c.raft_mut(3)
        .step(vote_request(2, 3, term + 1, true, (last, last_term)))
        .expect("valid message");
    c.raft_mut(3)
        .step(vote_request(2, 3, term + 1, false, (last, last_term)))
        .expect("valid message");
    assert_eq!(vote_answers(&mut c, 3), vec![false, false]);
    assert_eq!(c.raft(3).vote(), NO_NODE);
}

#[test]
fn rebuild_member_never_campaigns_however_long_it_hears_no_leader() {
    let mut c = three_with_rebuilt_three();
    c.partition(&[vec![1, 2], vec![3]]);
    let term = c.raft(3).term();
    for _ in 0..50 {
        c.tick(3, 10);
        c.stabilize();
        assert_eq!(c.raft(3).role(), Role::Follower);
    }
    assert_eq!(c.raft(3).term(), term, "not even a pre-vote round");
    // Nor when the leader hands leadership to it.
    c.partition(&[vec![1, 2, 3]]);
    c.tick(1, 5);
    c.stabilize();
    let _ = c.raft_mut(1).transfer_leader(3);
    c.stabilize();
    assert_eq!(c.raft(3).role(), Role::Follower);
    assert_eq!(c.raft(1).role(), Role::Leader);
}

/// The property that keeps it from forgetting promises: with the other follower down, the
/// leader and the rebuilding member are a majority by count, yet nothing new commits.
#[test]
fn rebuild_member_acks_never_make_the_leader_commit() {
    let mut c = three_with_rebuilt_three();
    c.crash(2);
    let commit = c.raft(1).commit();
    let last = c.raft(1).last_index();
    propose(&mut c, 1, 3);
    c.tick(1, 20);
    c.stabilize();
    assert_eq!(c.raft(3).last_index(), last + 3, "it stores the entries");
    assert_eq!(c.raft(1).commit(), commit, "but its acks count for nothing");
    assert!(c.raft(1).progress(3).expect("member").match_index <= commit);
    // The control: with the other follower back, the entries commit (within a few heartbeats:
    // the leader probes 2 again once it sees replication to it stalled).
    c.restart(2);
    for _ in 0..10 {
        c.tick(1, 5);
        c.stabilize();
    }
    assert_eq!(c.raft(1).commit(), last + 3);
}

#[test]
fn rebuild_member_confirms_no_read_index() {
    let mut c = three_with_rebuilt_three();
    c.crash(2);
    c.out.clear();
    c.raft_mut(1).read_index(42).expect("leader takes the read");
    for _ in 0..5 {
        c.tick(1, 5);
        c.stabilize();
    }
    assert!(
        !c.out.contains("read ctx=42"),
        "a read confirmed by the leader and a rebuilding member alone: {}",
        c.out
    );
    c.restart(2);
    c.tick(1, 5);
    c.stabilize();
    assert!(c.out.contains("1 read ctx=42"), "{}", c.out);
}

#[test]
fn rebuild_finish_takes_the_leaders_vote_then_votes_only_in_later_terms() {
    let mut c = three_with_rebuilt_three();
    let term = c.raft(3).term();
    assert!(c.raft_mut(3).finish_rebuild());
    assert!(!c.raft(3).is_rebuilding());
    assert_eq!(
        c.raft(3).vote(),
        1,
        "the vote of this term is taken by its leader"
    );
    c.stabilize();
    assert_eq!(c.nodes[&3].disk.borrow().hard_state.vote, 1, "and durable");
    let last = c.raft(3).last_index();
    let last_term = c.raft(3).log_term(last).expect("in log");
    c.tick(3, 100);
    // In its term it refuses another candidate: its old self may have voted here.
    c.raft_mut(3)
        .step(vote_request(2, 3, term, false, (last, last_term)))
        .expect("valid message");
    assert_eq!(vote_answers(&mut c, 3), vec![false]);
    // In a later term it is an ordinary voter.
    c.raft_mut(3)
        .step(vote_request(2, 3, term + 1, false, (last, last_term)))
        .expect("valid message");
    assert_eq!(vote_answers(&mut c, 3), vec![true]);
}

/// A heartbeat's commit is capped at what the leader believes the member holds (its old
/// self's match index): it must not become the target, which is the leader's own commit.
#[test]
fn rebuild_target_comes_from_append_entries_not_from_a_heartbeat() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    elect(&mut c, 1);
    propose(&mut c, 1, 2);
    c.partition(&[vec![1, 2], vec![3]]);
    propose(&mut c, 1, 3);
    wipe_and_rebuild(&mut c, 3);
    let term = c.raft(1).term();
    let stale_match = c.raft(1).progress(3).expect("member").match_index;
    assert!(stale_match < c.raft(1).commit());
    let heartbeat = Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::Heartbeat {
            commit: stale_match,
            read_seq: 0,
            quiesce: false,
        },
    };
    c.raft_mut(3).step(heartbeat).expect("valid message");
    assert_eq!(c.raft(3).rebuild_target(), None);
    c.partition(&[vec![1, 2, 3]]);
    c.tick(1, 5);
    c.stabilize();
    assert_eq!(c.raft(3).rebuild_target(), Some(c.raft(1).commit()));
    assert!(c.raft(3).rebuild_caught_up());
}

#[test]
fn rebuild_cannot_finish_before_a_leader_was_heard() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    elect(&mut c, 1);
    propose(&mut c, 1, 2);
    c.partition(&[vec![1, 2], vec![3]]);
    wipe_and_rebuild(&mut c, 3);
    c.tick(1, 5);
    c.stabilize();
    assert_eq!(c.raft(3).rebuild_target(), None);
    assert!(!c.raft_mut(3).finish_rebuild());
    assert!(c.raft(3).is_rebuilding());
}

/// The leader compacted everything a wiped member needs into a snapshot and has no entry
/// after it: the member is caught up by the snapshot alone, and must still hear the leader's
/// commit through an AppendEntries (its rebuild target), or it never votes again until the
/// next write to that group (found by the online runbook: a partition compacted by
/// `POST /admin/snapshot` kept a rebuilt node not ready for ever).
#[test]
fn rebuild_caught_up_by_a_snapshot_alone_learns_its_target_and_finishes() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    elect(&mut c, 1);
    propose(&mut c, 1, 5);
    let last = c.raft(1).last_index();
    assert_eq!(c.raft(1).commit(), last);
    c.compact(1, last, 64);
    wipe_and_rebuild(&mut c, 3);
    for _ in 0..5 {
        c.tick(1, 5);
        c.stabilize();
    }
    assert_eq!(c.raft(3).last_index(), last, "installed the snapshot");
    assert_eq!(c.raft(3).rebuild_target(), Some(c.raft(1).commit()));
    assert!(c.raft(3).rebuild_caught_up());
    assert!(c.raft_mut(3).finish_rebuild());
}

/// A member restarted mid-rebuild that already holds the whole log of an idle leader hears
/// only heartbeats, which carry no target: it asks (`Rebuilding`), and the leader's answer,
/// an AppendEntries, gives it one (found by the node simulation with one recovery slot per
/// shard: the controller group stayed rebuilding for ever).
#[test]
fn rebuild_member_restarted_holding_the_whole_log_of_an_idle_leader_still_learns_its_target() {
    let mut c = three_with_rebuilt_three();
    assert!(c.raft(3).rebuild_caught_up());
    c.crash(3);
    c.restart(3);
    c.raft_mut(3).set_rebuilding();
    assert_eq!(c.raft(3).rebuild_target(), None);
    c.tick(1, 5);
    c.stabilize();
    assert_eq!(c.raft(3).rebuild_target(), Some(c.raft(1).commit()));
    assert!(c.raft(3).rebuild_caught_up());
}

/// A rebuilding member holds an entry it acknowledged only up to the commit its message
/// carried; the entry commits later without it, and the member must learn that commit. Here
/// the leader's own AppendEntries after the commit tell it; the order of messages in which
/// none goes out is the next test.
#[test]
fn rebuild_member_holding_entries_learns_their_commit_on_an_idle_group() {
    let mut c = three_with_rebuilt_three();
    c.partition(&[vec![1, 3], vec![2]]);
    propose(&mut c, 1, 1);
    let last = c.raft(1).last_index();
    assert_eq!(c.raft(3).last_index(), last, "it stores the entry");
    assert!(c.raft(1).commit() < last, "its ack alone commits nothing");
    c.partition(&[vec![1, 2, 3]]);
    for _ in 0..10 {
        c.tick(1, 5);
        c.stabilize();
    }
    assert_eq!(c.raft(1).commit(), last);
    assert_eq!(c.raft(3).commit(), last, "the member learned the commit");
    assert!(c.raft(3).rebuild_caught_up());
}

/// The order the node simulation found (seed 173, one recovery slot): the member's
/// `Rebuilding` and its capped acknowledgement reach the leader only after the entry they are
/// about has committed without them. The leader has nothing new to send (the member holds its
/// whole log) and a heartbeat's commit stops at the match index, so the AppendEntries that
/// answers `Rebuilding` (sent because the leader's commit is above the member's match) is
/// what tells the member, at once: a heartbeat round would too in this core, but the node
/// drops a rebuilding group's resends while it waits for a recovery slot.
#[test]
fn rebuild_member_learns_a_commit_reached_before_its_rebuilding_message_arrived() {
    let mut c = three_with_rebuilt_three();
    let before = c.raft(3).commit();
    c.partition(&[vec![1, 3], vec![2]]);
    c.raft_mut(1)
        .propose(b"late".to_vec())
        .expect("leader accepts");
    let last = c.raft(1).last_index();
    // The entry reaches 3 only; everything 3 answers is held.
    c.stabilize_holding_from(3);
    assert_eq!(c.raft(3).last_index(), last, "it stores the entry");
    let held: Vec<Message> = std::mem::take(&mut c.held);
    assert!(
        held.iter()
            .any(|m| matches!(m.body, MessageBody::Rebuilding { .. })),
        "it told the leader where its log ends: {held:?}"
    );
    // 2 comes back and commits the entry with the leader while 3's answers are in flight.
    c.partition(&[vec![1, 2], vec![3]]);
    for _ in 0..5 {
        c.tick(1, 5);
        c.stabilize();
    }
    assert_eq!(c.raft(1).commit(), last);
    assert_eq!(c.raft(3).commit(), before, "3 heard nothing of it yet");
    c.partition(&[vec![1, 2, 3]]);
    c.queue.extend(held);
    c.stabilize(); // no tick: no heartbeat round
    assert_eq!(
        c.raft(3).commit(),
        last,
        "the member learned the commit at once"
    );
    assert!(c.raft(3).rebuild_caught_up());
}
