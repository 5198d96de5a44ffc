//! Ra PR #589, "send RPCs to snapshot_backoff peers when the leader enforces leadership", in
//! tern's terms: a lagging follower whose snapshot chunk was lost waits `snapshot_retry_ticks`
//! for the leader to resend it; when it pre-votes (it has not heard from the leader for an
//! election timeout), the leader resends the chunk at once, without waiting for its timer.

mod harness;

use harness::{Cluster, NodeOpts};
use tern_raft::message::MessageBody;
use tern_raft::Role;

#[test]
fn lagging_follower_in_snapshot_backoff_gets_its_snapshot_when_it_pre_votes() {
    let opts = NodeOpts {
        snapshot_chunk_bytes: 8,
        ..NodeOpts::default()
    };
    let mut c = Cluster::three_led_by_one(&opts);

    // Node 3 falls behind a compaction: only a snapshot can catch it up.
    c.partition(&[vec![1, 2], vec![3]]);
    for v in ["a", "b", "c"] {
        c.raft_mut(1)
            .propose(v.as_bytes().to_vec())
            .expect("leader");
        c.stabilize();
    }
    let last = c.raft(1).last_index();
    c.compact(1, last, 30);

    // Node 3 is reachable again; the leader starts the transfer, and its first chunk is lost.
    c.blocked.clear();
    let mut lost = false;
    for _ in 0..50 {
        c.tick(1, 1);
        c.process_ready();
        let before = c.queue.len();
        c.queue.retain(|m| {
            !(m.from == 1 && m.to == 3 && matches!(m.body, MessageBody::Snapshot { .. }))
        });
        if c.queue.len() < before {
            lost = true;
            c.queue.clear();
            break;
        }
        c.deliver();
    }
    assert!(lost, "the leader never sent a snapshot chunk to node 3");
    assert!(c.raft(1).progress(3).is_some_and(|p| p.snapshot.is_some()));

    // Node 3's election timeout: it pre-votes. The leader answers with the snapshot chunk
    // at once (no tick of the leader in between).
    c.raft_mut(3).campaign();
    c.process_ready_node(3);
    let prevote_to_leader = c
        .queue
        .iter()
        .any(|m| m.to == 1 && matches!(m.body, MessageBody::Vote { pre: true, .. }));
    assert!(prevote_to_leader, "node 3 did not pre-vote");
    let to_leader: Vec<_> = c.queue.drain(..).filter(|m| m.to == 1).collect();
    for m in to_leader {
        c.raft_mut(1).step(m).expect("step");
    }
    c.process_ready_node(1);
    let chunk_sent = c
        .queue
        .iter()
        .any(|m| m.from == 1 && m.to == 3 && matches!(m.body, MessageBody::Snapshot { .. }));
    assert!(
        chunk_sent,
        "the leader did not resend the snapshot chunk on the pre-vote"
    );

    // And node 3 catches up from there.
    for _ in 0..200 {
        c.stabilize();
        if c.raft(3).commit() == c.raft(1).commit() {
            break;
        }
        c.tick(1, 1);
    }
    assert_eq!(c.raft(3).commit(), c.raft(1).commit());
    assert_eq!(
        c.raft(1).role(),
        Role::Leader,
        "the pre-vote did not disrupt the leader"
    );
}
