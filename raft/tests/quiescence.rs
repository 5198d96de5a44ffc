//! Quiescence of idle groups (docs/raft.md, "Quiescence of idle groups"): an idle leader sends
//! one heartbeat marked `quiesce` and then nothing; its followers stop their election timers;
//! anything that needs the group wakes it; a follower woken because its leader's node fell
//! silent elects a new leader as fast as without quiescence.

mod harness;

use harness::{Cluster, NodeOpts};
use tern_raft::message::MessageBody;
use tern_raft::Role;

fn quiet_cluster() -> Cluster {
    let opts = NodeOpts {
        quiesce: true,
        ..NodeOpts::default()
    };
    let mut c = Cluster::three_led_by_one(&opts);
    c.raft_mut(1).propose(b"x".to_vec()).expect("leader");
    c.stabilize();
    c
}

/// Ticks every node `n` times, running the Ready loops and the network after each tick;
/// returns the messages sent.
fn run_ticks(c: &mut Cluster, n: u64) -> usize {
    let mut sent = 0;
    for _ in 0..n {
        for id in 1..=3 {
            if c.nodes[&id].raft.is_some() {
                c.tick(id, 1);
            }
        }
        c.process_ready();
        sent += c.queue.len();
        c.stabilize();
    }
    sent
}

#[test]
fn an_idle_group_goes_quiet_and_sends_nothing() {
    let mut c = quiet_cluster();
    // The first heartbeat after the last answer carries `quiesce`.
    run_ticks(&mut c, 20);
    for id in 1..=3 {
        assert!(c.raft(id).is_quiet(), "node {id} is not quiet:\n{}", c.out);
    }
    assert!(c
        .out
        .contains("Heartbeat term=1 commit=2 read_seq=0 quiesce"));
    assert_eq!(run_ticks(&mut c, 200), 0, "a quiet group sent messages");
    assert_eq!(c.raft(1).role(), Role::Leader);
}

#[test]
fn a_proposal_wakes_the_group_and_it_goes_quiet_again() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    c.raft_mut(1).propose(b"y".to_vec()).expect("leader");
    assert!(!c.raft(1).is_quiet());
    c.stabilize();
    for id in 1..=3 {
        assert_eq!(c.raft(id).commit(), 3, "node {id}");
        assert!(
            !c.raft(id).is_quiet(),
            "node {id} stayed quiet past an append"
        );
    }
    run_ticks(&mut c, 20);
    for id in 1..=3 {
        assert!(c.raft(id).is_quiet(), "node {id}");
    }
}

#[test]
fn a_follower_woken_by_its_leaders_silence_elects_as_fast_as_without_quiescence() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    c.crash(1);
    // Quiet followers never time out on their own.
    run_ticks(&mut c, 100);
    assert_eq!(c.raft(2).role(), Role::Follower);
    assert!(c.raft(2).is_quiet() && c.raft(3).is_quiet());
    // The node-pair liveness says node 1 has been silent for an election timeout (15 ticks).
    for id in [2, 3] {
        c.raft_mut(id).unquiesce(15);
    }
    // Election timeouts are drawn from [15, 30): counting the silence, one of them campaigns
    // within 15 more ticks, and pre-vote plus vote take a few rounds.
    let mut elected_after = None;
    for t in 1..=20 {
        run_ticks(&mut c, 1);
        if [2, 3].iter().any(|id| c.raft(*id).role() == Role::Leader) {
            elected_after = Some(t);
            break;
        }
    }
    assert!(
        elected_after.is_some_and(|t| t <= 16),
        "no leader within 16 ticks of waking: {elected_after:?}"
    );
}

#[test]
fn a_woken_leader_cut_off_from_its_quorum_steps_down_within_one_period() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    c.partition(&[vec![1], vec![2, 3]]);
    // The liveness of nodes 2 and 3 is lost: the leader's node wakes it.
    c.raft_mut(1).unquiesce(15);
    assert!(!c.raft(1).is_quiet());
    // Answers from before the quiet spell do not count for check-quorum.
    run_ticks(&mut c, 16);
    assert_eq!(c.raft(1).role(), Role::Follower, "{}", c.out);
}

#[test]
fn a_read_on_a_quiet_leader_waits_for_a_fresh_quorum_round() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    c.out.clear();
    c.raft_mut(1).read_index(7).expect("leader");
    assert!(!c.raft(1).is_quiet());
    c.process_ready();
    assert!(
        !c.out.contains("read ctx=7"),
        "served without a quorum round"
    );
    let heartbeats = c
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { read_seq: 1, .. }))
        .count();
    assert_eq!(heartbeats, 2);
    c.stabilize();
    assert!(c.out.contains("1 read ctx=7 index=2"), "{}", c.out);
}

#[test]
fn a_read_is_served_when_storage_cannot_say_the_committed_entrys_term() {
    let mut c = quiet_cluster();
    // The leader's storage answers `Unavailable` to every read, term lookups included: the
    // leader still knows its no-op is committed and serves the read after a quorum round.
    c.nodes[&1].disk.borrow_mut().unavailable = true;
    c.raft_mut(1).read_index(9).expect("leader");
    c.stabilize();
    c.nodes[&1].disk.borrow_mut().unavailable = false;
    assert!(c.out.contains("1 read ctx=9 index=2"), "{}", c.out);
}

#[test]
fn messages_from_outside_the_configuration_do_not_wake_a_quiet_member() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    let stranger = tern_raft::Message {
        from: 9,
        to: 2,
        term: 5,
        body: MessageBody::Vote {
            pre: true,
            last_index: 100,
            last_term: 4,
            transfer: false,
        },
    };
    let _ = c.raft_mut(2).step(stranger);
    assert!(c.raft(2).is_quiet());
}

#[test]
fn a_member_reported_unreachable_wakes_the_leader_which_goes_quiet_again() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    // A peer's connection broke (it restarted): its progress goes back to Probe. An idle
    // group has no entry to send that would bring it back to Replicate, and it need not.
    c.raft_mut(1).report_unreachable(2);
    assert!(!c.raft(1).is_quiet());
    run_ticks(&mut c, 40);
    for id in 1..=3 {
        assert!(c.raft(id).is_quiet(), "node {id} stayed awake:\n{}", c.out);
    }
}

#[test]
fn a_wiped_member_back_before_its_leader_noticed_announces_itself_and_is_rebuilt() {
    let mut c = quiet_cluster();
    run_ticks(&mut c, 20);
    let committed = c.raft(1).commit();
    // Node 3 loses its disk and is back before node 1's node noticed the silence: the quiet
    // leader still believes 3 holds everything and sends nothing.
    c.crash(3);
    c.nodes.get_mut(&3).expect("known node").disk = std::rc::Rc::new(std::cell::RefCell::new(
        tern_raft::MemStorage::new_with_conf(&[1, 2, 3]),
    ));
    c.restart(3);
    c.raft_mut(3).set_rebuilding();
    assert!(c.raft(1).is_quiet());
    // A rebuilding member never campaigns; at its election timeout it announces itself. The
    // driver (tern's shard) ends the rebuild once the member has caught up.
    for _ in 0..80 {
        run_ticks(&mut c, 1);
        if c.raft(3).rebuild_caught_up() {
            assert!(c.raft_mut(3).finish_rebuild());
        }
    }
    assert!(
        !c.raft(3).is_rebuilding(),
        "node 3 never rebuilt:\n{}",
        c.out
    );
    assert_eq!(c.raft(3).commit(), committed);
    assert_eq!(c.raft(1).role(), Role::Leader);
    run_ticks(&mut c, 40);
    for id in 1..=3 {
        assert!(c.raft(id).is_quiet(), "node {id} stayed awake");
    }
}
