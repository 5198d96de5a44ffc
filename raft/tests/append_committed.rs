//! `RawNode::append_committed`: committed entries from the recovery stream enter a follower's
//! log as an AppendEntries would put them there (docs/replication.md, section 4), a
//! contradiction of a committed entry is refused as corruption, and a rebuilding member still
//! acknowledges nothing beyond what its leader vouched for.

mod harness;

use std::cell::RefCell;
use std::rc::Rc;

use harness::{Cluster, NodeOpts};
use tern_raft::{
    AppendCommittedError, Config, Entry, EntryKind, MemStorage, Message, MessageBody, RawNode, Role,
};

type Disk = Rc<RefCell<MemStorage>>;

fn ent(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: format!("e{index}").into_bytes(),
    }
}

fn ents(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| ent(term, i)).collect()
}

/// Member 3 of a three-voter group whose disk holds `log` with `commit` committed.
fn follower(log: &[Entry], commit: u64) -> RawNode<Disk> {
    let mut storage = MemStorage::new_with_conf(&[1, 2, 3]);
    storage.append(log);
    storage.hard_state.term = log.last().map_or(0, |e| e.term);
    storage.hard_state.commit = commit;
    let mut cfg = Config::new(3);
    cfg.seed = 3;
    RawNode::new(cfg, Rc::new(RefCell::new(storage))).expect("valid member")
}

/// Takes the next `Ready`, makes it durable on the member's disk and acknowledges it.
fn persist(node: &mut RawNode<Disk>) -> tern_raft::Ready {
    let rd = node.ready();
    {
        let disk = node.storage();
        let mut disk = disk.borrow_mut();
        disk.append(&rd.entries);
        if let Some(hs) = rd.hard_state {
            disk.hard_state = hs;
        }
    }
    node.on_persisted(rd.persist_ack);
    rd
}

fn terms(node: &RawNode<Disk>) -> Vec<(u64, u64)> {
    (node.first_index()..=node.last_index())
        .map(|i| (i, node.log_term(i).unwrap_or(0)))
        .collect()
}

#[test]
fn streamed_entries_are_persisted_then_committed_up_to_the_server_commit() {
    let mut node = follower(&[], 0);
    let last = node
        .append_committed(0, 0, &ents(1, 1..=8), 20)
        .expect("a chunk after an empty log");
    assert_eq!(last, 8);
    assert_eq!(node.commit(), 8, "committed up to the chunk's last entry");
    let rd = persist(&mut node);
    assert_eq!(
        rd.entries,
        ents(1, 1..=8),
        "the entries go out for persistence"
    );
    assert_eq!(rd.hard_state.map(|hs| hs.commit), Some(8));
    assert!(
        rd.committed_entries.is_empty(),
        "nothing is applied before the batch holding it is durable"
    );
    assert!(rd.messages.is_empty(), "streaming sends nothing to anyone");
    let rd = persist(&mut node);
    assert_eq!(rd.committed_entries, ents(1, 1..=8));
    assert_eq!(node.storage().borrow().hard_state.commit, 8);
}

#[test]
fn entries_already_held_are_skipped_and_a_restart_resumes_after_the_last_durable_one() {
    let mut node = follower(&ents(1, 1..=5), 2);
    node.append_committed(2, 1, &ents(1, 3..=9), 9)
        .expect("overlapping chunk");
    let rd = persist(&mut node);
    assert_eq!(rd.entries, ents(1, 6..=9), "only the entries not yet held");
    assert_eq!(node.commit(), 9);
    // A restart resumes from the durable log: the next chunk follows index 9.
    let disk = node.storage().clone();
    let mut node = RawNode::new(Config::new(3), disk).expect("restart");
    assert_eq!((node.last_index(), node.commit()), (9, 9));
    node.append_committed(9, 1, &ents(1, 10..=12), 12)
        .expect("resumed chunk");
    assert_eq!(persist(&mut node).entries, ents(1, 10..=12));
}

#[test]
fn a_conflict_above_the_commit_index_truncates_the_uncommitted_suffix() {
    // Indexes 4..=6 came from a deposed leader of term 1; the cluster committed term 2 there.
    let mut node = follower(&ents(1, 1..=6), 3);
    let last = node
        .append_committed(3, 1, &ents(2, 4..=5), 5)
        .expect("truncating chunk");
    assert_eq!(last, 5);
    assert_eq!(node.last_index(), 5, "the stale entry 6 is gone");
    assert_eq!(terms(&node), vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
    let rd = persist(&mut node);
    assert_eq!(rd.entries, ents(2, 4..=5));
    assert_eq!(node.commit(), 5);
    let disk = node.storage().borrow();
    assert_eq!(
        disk.entries.len(),
        5,
        "the disk's stale suffix was replaced"
    );
}

#[test]
fn a_conflict_at_or_below_the_commit_index_is_corruption_and_changes_nothing() {
    let mut node = follower(&ents(1, 1..=6), 4);
    persist(&mut node);
    let before = node.status();
    // Entry 4 is committed here with term 1; the chunk says term 2.
    let err = node
        .append_committed(3, 1, &ents(2, 4..=6), 6)
        .expect_err("contradicts a committed entry");
    assert_eq!(
        err,
        AppendCommittedError::Corrupt {
            index: 4,
            ours: 1,
            theirs: 2
        }
    );
    // The same through `prev_term`: entry 3 is committed with term 1.
    let err = node
        .append_committed(3, 2, &ents(2, 4..=6), 6)
        .expect_err("contradicts committed prev");
    assert_eq!(
        err,
        AppendCommittedError::Corrupt {
            index: 3,
            ours: 1,
            theirs: 2
        }
    );
    assert_eq!(node.status(), before);
    assert!(!node.has_ready(), "nothing to persist after a refusal");
}

#[test]
fn a_chunk_that_does_not_fit_the_log_is_refused_with_where_to_ask_next() {
    let mut node = follower(&ents(1, 1..=6), 2);
    persist(&mut node);
    let before = node.status();
    assert_eq!(
        node.append_committed(8, 1, &ents(1, 9..=9), 9),
        Err(AppendCommittedError::Gap {
            prev_index: 8,
            last_index: 6
        })
    );
    // Our uncommitted 5 has term 1, the chunk's prev says 2: ask from commit + 1 instead.
    assert_eq!(
        node.append_committed(5, 2, &ents(2, 6..=7), 7),
        Err(AppendCommittedError::PrevMismatch {
            prev_index: 5,
            ours: 1,
            theirs: 2
        })
    );
    assert_eq!(
        node.append_committed(6, 1, &ents(1, 7..=9), 8),
        Err(AppendCommittedError::BeyondServerCommit {
            index: 9,
            server_commit: 8
        })
    );
    let mut gap = ents(1, 7..=9);
    gap.remove(1);
    assert!(matches!(
        node.append_committed(6, 1, &gap, 9),
        Err(AppendCommittedError::Malformed(_))
    ));
    let mut backwards = ents(2, 7..=8);
    backwards[1].term = 1;
    assert!(matches!(
        node.append_committed(6, 1, &backwards, 9),
        Err(AppendCommittedError::Malformed(_))
    ));
    assert_eq!(node.status(), before);
    assert!(!node.has_ready());
}

#[test]
fn entries_the_snapshot_covers_are_skipped() {
    let mut storage = MemStorage::new_with_conf(&[1, 2, 3]);
    storage.append(&ents(1, 1..=6));
    storage.compact(
        5,
        tern_raft::ConfState::with_voters(&[1, 2, 3]),
        b"snap".to_vec(),
    );
    storage.hard_state.commit = 5;
    let mut node = RawNode::new(Config::new(3), Rc::new(RefCell::new(storage))).expect("start");
    assert_eq!(node.first_index(), 6);
    // The chunk starts before the snapshot: 1..=5 are compacted here, 6 is held, 7.. new.
    node.append_committed(0, 0, &ents(1, 1..=8), 8)
        .expect("chunk across the snapshot");
    assert_eq!(persist(&mut node).entries, ents(1, 7..=8));
    assert_eq!(node.commit(), 8);
    // Entirely below the snapshot: nothing to do.
    assert_eq!(node.append_committed(0, 0, &ents(1, 1..=3), 3), Ok(8));
    // Contradicting the snapshot's term (committed) is corruption.
    assert!(matches!(
        node.append_committed(4, 1, &ents(2, 5..=6), 6),
        Err(AppendCommittedError::Corrupt { index: 5, .. })
    ));
}

#[test]
fn only_a_follower_appends_streamed_entries() {
    let mut c = Cluster::default();
    c.add_nodes(1, None, &NodeOpts::default());
    c.raft_mut(1).campaign();
    c.stabilize();
    assert_eq!(c.raft(1).role(), Role::Leader);
    let last = c.raft(1).last_index();
    assert_eq!(
        c.raft_mut(1)
            .append_committed(last, 1, &[ent(1, last + 1)], last + 1),
        Err(AppendCommittedError::NotFollower)
    );
}

fn append_from_leader(term: u64, prev_index: u64, prev_term: u64, commit: u64) -> Message {
    Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::Append {
            prev_index,
            prev_term,
            entries: Vec::new(),
            commit,
        },
    }
}

fn append_resp_indexes(rd: &tern_raft::Ready) -> Vec<u64> {
    rd.messages
        .iter()
        .filter_map(|m| match m.msg.body {
            MessageBody::AppendResp {
                index,
                reject: false,
                ..
            } => Some(index),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rebuilding_member_acknowledges_no_more_than_its_leader_vouched_for() {
    let mut node = follower(&[], 0);
    node.set_rebuilding();
    node.append_committed(0, 0, &ents(1, 1..=10), 10)
        .expect("streamed");
    persist(&mut node);
    assert_eq!(node.commit(), 10);
    // A leader whose commit is 7 (a new leader that has not yet learned the rest) probes
    // below our commit: the answer stays at 7, so it cannot count us for anything above.
    node.step(append_from_leader(1, 5, 1, 7)).expect("valid");
    let rd = persist(&mut node);
    assert_eq!(append_resp_indexes(&rd), vec![7]);
    // Not rebuilding, the same member answers with its commit index.
    let mut normal = follower(&[], 0);
    normal
        .append_committed(0, 0, &ents(1, 1..=10), 10)
        .expect("streamed");
    persist(&mut normal);
    normal.step(append_from_leader(1, 5, 1, 7)).expect("valid");
    let rd = persist(&mut normal);
    assert_eq!(append_resp_indexes(&rd), vec![10]);
}

/// A wiped voter streams most of the leader's committed log from the other follower (the
/// leader cannot reach it meanwhile), then AppendEntries carries it the rest of the way and it
/// finishes its rebuild holding exactly the leader's log.
#[test]
fn a_wiped_voter_streams_from_a_follower_and_append_entries_finishes() {
    let mut c = Cluster::default();
    c.add_nodes(3, None, &NodeOpts::default());
    c.raft_mut(1).campaign();
    c.stabilize();
    for i in 0..30 {
        c.raft_mut(1)
            .propose(format!("v{i}").into_bytes())
            .expect("leader");
        c.stabilize();
    }
    c.crash(3);
    c.nodes.get_mut(&3).expect("node 3").disk = Rc::new(RefCell::new(MemStorage::default()));
    c.restart(3);
    c.raft_mut(3).set_rebuilding();
    c.partition(&[vec![1, 2], vec![3]]);
    // Stream from node 2 in chunks of 7 entries, only what 2 has committed.
    let server_commit = c.raft(2).commit();
    assert!(server_commit >= 30);
    let mut next = 1;
    while next <= server_commit {
        let hi = (next + 6).min(server_commit);
        let disk = c.nodes[&2].disk.borrow().clone();
        let chunk: Vec<Entry> = disk.entries[(next - 1) as usize..hi as usize].to_vec();
        let prev_term = if next == 1 {
            0
        } else {
            disk.entries[(next - 2) as usize].term
        };
        c.raft_mut(3)
            .append_committed(next - 1, prev_term, &chunk, server_commit)
            .expect("chunk fits");
        c.process_ready_node(3);
        next = hi + 1;
    }
    assert_eq!(c.raft(3).commit(), server_commit);
    assert_eq!(c.raft(3).status().persisted_index, server_commit);
    // The leader writes more meanwhile; then the partition heals.
    for i in 0..3 {
        c.raft_mut(1)
            .propose(format!("w{i}").into_bytes())
            .expect("leader");
        c.stabilize();
    }
    assert!(!c.raft(3).rebuild_caught_up(), "no leader heard yet");
    c.partition(&[vec![1, 2, 3]]);
    for _ in 0..3 {
        c.tick(1, 5);
        c.stabilize();
    }
    let leader_last = c.raft(1).last_index();
    assert_eq!(c.raft(3).last_index(), leader_last);
    assert_eq!(c.raft(3).commit(), c.raft(1).commit());
    assert_eq!(c.log(3).split(':').nth(1), c.log(1).split(':').nth(1));
    assert!(c.raft(3).rebuild_caught_up());
    assert!(c.raft_mut(3).finish_rebuild());
}

#[test]
fn a_chunk_of_a_newer_term_moves_the_member_to_that_term() {
    // The member follows a leader of term 1; the chunk holds entries a leader of term 4
    // committed. Holding them at term 1 would let it ask for votes in term 2 with a last term
    // of 4, and acknowledge to the deposed leader of term 1 an index that leader never had.
    let mut node = follower(&ents(1, 1..=3), 3);
    node.step(append_from_leader(1, 3, 1, 3))
        .expect("leader of term 1");
    persist(&mut node);
    assert_eq!((node.term(), node.leader()), (1, 1));
    node.append_committed(3, 1, &ents(4, 4..=6), 6)
        .expect("newer chunk");
    assert_eq!(node.term(), 4);
    assert_eq!(node.leader(), tern_raft::NO_NODE);
    let rd = persist(&mut node);
    assert_eq!(rd.hard_state.map(|hs| (hs.term, hs.commit)), Some((4, 6)));
    // The deposed leader's next message is of an older term: no acknowledgement for it.
    node.step(append_from_leader(1, 2, 1, 3))
        .expect("stale, answered as Raft says");
    let rd = persist(&mut node);
    assert!(append_resp_indexes(&rd).is_empty(), "{:?}", rd.messages);
    // A chunk of an older term than ours changes no term.
    let mut node = follower(&ents(5, 1..=3), 3);
    node.append_committed(3, 5, &ents(5, 4..=5), 5)
        .expect("same term");
    assert_eq!(node.term(), 5);
}
