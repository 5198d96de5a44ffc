//! Asynchronous entry fetch: a leader whose storage must read older entries from disk
//! (`StorageError::Unavailable`, then `Ready::fetches` and `RawNode::on_entries_fetched`)
//! catches a follower up at the pace of the reads, not of its heartbeats.

mod harness;

use harness::{Cluster, NodeOpts};
use tern_raft::{FetchPurpose, SlowDisk};

const BEHIND_ENTRIES: u64 = 200;
const ROUNDS_MAX: u64 = 1000;

/// Builds a 3-node cluster whose node 3 is `BEHIND_ENTRIES` behind, with node 1 (the leader)
/// on a slow disk that keeps only its 4 newest entries readable, then runs rounds of
/// "process every Ready, deliver every message, complete the reads if `complete_fetches`"
/// without a single tick. Returns (rounds until node 3 holds the leader's whole log, or
/// `None`, and the number of reads node 1 asked for).
fn catch_up(heartbeat_ticks: u64, complete_fetches: bool) -> (Option<u64>, usize) {
    let opts = NodeOpts {
        // About four entries per AppendEntries and four messages in flight: many reads.
        append_bytes_max: 200,
        inflight_msgs_max: 4,
        heartbeat_ticks,
        ..NodeOpts::default()
    };
    let mut c = Cluster::three_led_by_one(&opts);
    c.partition(&[vec![1, 2], vec![3]]);
    for i in 0..BEHIND_ENTRIES {
        c.raft_mut(1)
            .propose(format!("entry-{i:020}").into_bytes())
            .expect("leader accepts");
        c.stabilize();
    }
    c.blocked.clear();
    c.nodes[&1].disk.borrow_mut().slow_disk = Some(SlowDisk::new(4, 8));
    // The transport reports node 3 reachable again; one more proposal wakes the leader.
    c.raft_mut(1).report_unreachable(3);
    c.raft_mut(1)
        .propose(b"wake".to_vec())
        .expect("leader accepts");
    let mut fetches = 0;
    for round in 1..=ROUNDS_MAX {
        c.process_ready();
        fetches += c.fetches.len();
        if complete_fetches {
            c.complete_fetches();
        } else {
            c.fetches.clear();
        }
        c.deliver();
        if c.raft(3).last_index() == c.raft(1).last_index()
            && c.raft(3).commit() == c.raft(1).commit()
        {
            return (Some(round), fetches);
        }
    }
    (None, fetches)
}

#[test]
fn follower_far_behind_catches_up_in_rounds_independent_of_heartbeat_ticks() {
    let (fast_heartbeat, fetches) = catch_up(1, true);
    let (slow_heartbeat, _) = catch_up(1_000, true);
    let rounds = fast_heartbeat.expect("caught up without a tick");
    eprintln!(
        "caught up {BEHIND_ENTRIES} entries in {rounds} rounds with {fetches} reads, no tick"
    );
    assert_eq!(
        fast_heartbeat, slow_heartbeat,
        "the heartbeat interval must not pace catch-up"
    );
    // Each read brings a window of about 16 entries; a few rounds per window.
    assert!(fetches >= 10, "the leader read from disk ({fetches} reads)");
    assert!(
        rounds <= 4 * fetches as u64,
        "{rounds} rounds for {fetches} reads"
    );
}

#[test]
fn without_completed_fetches_a_tickless_leader_sends_nothing_older_than_its_cache() {
    let (rounds, fetches) = catch_up(1, false);
    assert_eq!(rounds, None);
    assert!(fetches >= 1);
}

#[test]
fn a_fetch_completion_that_matches_nothing_changes_nothing() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    c.raft_mut(1).campaign();
    c.stabilize();
    let before = c.raft(1).status();
    let stale = tern_raft::EntryFetch {
        purpose: FetchPurpose::Replicate { to: 2 },
        low: 1,
        high: 2,
        bytes_max: 1,
    };
    c.raft_mut(1).on_entries_fetched(stale);
    c.raft_mut(2).on_entries_fetched(stale);
    c.raft_mut(1).on_entries_fetched(tern_raft::EntryFetch {
        purpose: FetchPurpose::Replicate { to: 99 },
        ..stale
    });
    assert!(!c.raft(1).has_ready());
    assert_eq!(c.raft(1).status(), before);
}
