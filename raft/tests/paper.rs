//! Paper-conformance tests. Each cites the sentence of the Raft paper (Ongaro & Ousterhout,
//! "In Search of an Understandable Consensus Algorithm", extended version) that it checks.

mod harness;

use harness::{Cluster, NodeOpts};
use tern_raft::{Entry, EntryKind, Message, MessageBody, Role};

fn plain() -> NodeOpts {
    NodeOpts {
        pre_vote: false,
        check_quorum: false,
        ..NodeOpts::default()
    }
}

fn elect(c: &mut Cluster, id: u64) {
    c.raft_mut(id).campaign();
    c.stabilize();
    assert_eq!(c.raft(id).role(), Role::Leader);
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request."
#[test]
fn paper_5_1_stale_term_request_is_rejected() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &plain());
    elect(&mut c, 1);
    c.tick(2, 40);
    c.stabilize();
    let term = c.raft(2).term();
    let stale = Message {
        from: 3,
        to: 2,
        term: term - 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                term: term - 1,
                index: 1,
                kind: EntryKind::Normal,
                data: b"x".to_vec(),
            }],
            commit: 0,
        },
    };
    let last = c.raft(2).last_index();
    assert_eq!(c.raft_mut(2).step(stale), Ok(()));
    assert_eq!(c.raft(2).last_index(), last);
    assert_eq!(c.raft(2).term(), term);
}

/// §5.1: "If a candidate or leader discovers that its term is out of date, it immediately
/// reverts to follower state."
#[test]
fn paper_5_1_leader_with_stale_term_reverts_to_follower() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &plain());
    elect(&mut c, 1);
    let higher = c.raft(1).term() + 5;
    let stepped = c.raft_mut(1).step(Message {
        from: 2,
        to: 1,
        term: higher,
        body: MessageBody::HeartbeatResp { read_seq: 0 },
    });
    assert_eq!(stepped, Ok(()));
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).term(), higher);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in
/// the full cluster for the same term."
#[test]
fn paper_5_2_candidate_wins_with_a_majority_only() {
    let mut c = Cluster::default();
    c.add_nodes(5, None, &plain());
    c.partition(&[vec![1, 2], vec![3, 4, 5]]);
    c.raft_mut(1).campaign();
    c.stabilize();
    assert_eq!(
        c.raft(1).role(),
        Role::Candidate,
        "2 of 5 votes is not a majority"
    );
    c.partition(&[vec![1, 2, 3], vec![4, 5]]);
    c.raft_mut(1).campaign();
    c.stabilize();
    assert_eq!(c.raft(1).role(), Role::Leader, "3 of 5 votes is");
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis."
#[test]
fn paper_5_2_one_vote_per_term_first_come_first_served() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &plain());
    let vote = |from| Message {
        from,
        to: 3,
        term: 1,
        body: MessageBody::Vote {
            pre: false,
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    };
    assert_eq!(c.raft_mut(3).step(vote(1)), Ok(()));
    assert_eq!(c.raft_mut(3).step(vote(2)), Ok(()));
    let rd = c.raft_mut(3).ready();
    let grants: Vec<u64> = rd
        .messages
        .iter()
        .filter(|m| {
            m.msg.body
                == MessageBody::VoteResp {
                    pre: false,
                    reject: false,
                }
        })
        .map(|m| m.msg.to)
        .collect();
    assert_eq!(grants, vec![1]);
    assert!(
        rd.messages.iter().all(|m| !matches!(
            m.msg.body,
            MessageBody::VoteResp { reject: false, .. }
        ) || !m.before_persist),
        "a granted vote leaves only after it is durable"
    );
}

/// §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare ...
/// election timeouts are chosen randomly from a fixed interval (e.g., 150–300 ms)."
#[test]
fn paper_5_2_election_timeouts_are_randomized_within_the_interval() {
    let mut c = Cluster::default();
    c.add_nodes(5, None, &plain());
    let mut fired = Vec::new();
    for id in 1..=5 {
        let mut ticks = 0;
        while c.raft(id).role() == Role::Follower {
            c.tick(id, 1);
            ticks += 1;
        }
        assert!(
            (15..30).contains(&ticks),
            "timeout {ticks} outside [15, 30)"
        );
        fired.push(ticks);
    }
    fired.sort_unstable();
    fired.dedup();
    assert!(fired.len() > 1, "all nodes timed out together: {fired:?}");
}

/// §5.3: "If the follower does not find an entry in its log with the same index and term, then
/// it refuses the new entries."
#[test]
fn paper_5_3_follower_refuses_entries_without_matching_prev() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &plain());
    elect(&mut c, 1);
    let term = c.raft(1).term();
    let last = c.raft(2).last_index();
    let gap = Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Append {
            prev_index: last + 3,
            prev_term: term,
            entries: vec![Entry {
                term,
                index: last + 4,
                kind: EntryKind::Normal,
                data: vec![],
            }],
            commit: 0,
        },
    };
    assert_eq!(c.raft_mut(2).step(gap), Ok(()));
    assert_eq!(c.raft(2).last_index(), last);
    let rd = c.raft_mut(2).ready();
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.msg.body, MessageBody::AppendResp { reject: true, .. })));
}

/// §5.4.1: "If the logs have last entries with different terms, then the log with the later
/// term is more up-to-date. If the logs end with the same term, then whichever log is longer is
/// more up-to-date."
#[test]
fn paper_5_4_1_vote_denied_to_a_less_up_to_date_candidate() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &plain());
    elect(&mut c, 1);
    c.raft_mut(1).propose(b"x".to_vec()).expect("leader");
    c.stabilize();
    let term = c.raft(3).term() + 1;
    let (li, lt) = (
        c.raft(3).last_index(),
        c.raft(3).log_term(c.raft(3).last_index()).unwrap_or(0),
    );
    let ask = |last_index, last_term| Message {
        from: 2,
        to: 3,
        term,
        body: MessageBody::Vote {
            pre: false,
            last_index,
            last_term,
            transfer: false,
        },
    };
    assert_eq!(c.raft_mut(3).step(ask(li - 1, lt)), Ok(()));
    let rd = c.raft_mut(3).ready();
    assert!(
        rd.messages.iter().any(|m| m.msg.body
            == MessageBody::VoteResp {
                pre: false,
                reject: true
            }),
        "shorter log, same term"
    );
}

/// §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log
/// entries from the leader's current term are committed by counting replicas." (The full
/// Figure 8 scenario is testdata/figure8_previous_term_commit.txt.)
#[test]
fn paper_5_4_2_previous_term_entries_are_not_committed_by_counting() {
    let mut c = Cluster::default();
    c.add_nodes(
        3,
        None,
        &NodeOpts {
            append_bytes_max: 1,
            inflight_msgs_max: 1,
            ..plain()
        },
    );
    elect(&mut c, 1);
    c.partition(&[vec![1], vec![2, 3]]);
    c.raft_mut(1).propose(b"old".to_vec()).expect("leader");
    c.stabilize();
    // Node 1 restarts and wins a later term; its no-op is appended after "old".
    c.crash(1);
    c.restart(1);
    c.blocked.clear();
    c.raft_mut(1).campaign();
    for _ in 0..4 {
        c.process_ready();
        c.deliver();
    }
    assert_eq!(c.raft(1).role(), Role::Leader);
    let old_index = 2;
    // Whenever "old" is on a majority but the no-op of the current term is not, it is not
    // committed.
    for _ in 0..20 {
        let r = c.raft(1);
        let noop_on_majority = [2, 3]
            .iter()
            .any(|id| r.progress(*id).is_some_and(|p| p.match_index > old_index));
        if !noop_on_majority {
            assert!(
                r.commit() < old_index,
                "committed a previous-term entry by counting"
            );
        }
        c.process_ready();
        c.deliver();
    }
    assert!(c.raft(1).commit() > old_index);
}
