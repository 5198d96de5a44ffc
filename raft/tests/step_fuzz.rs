//! Property tests: messages no correct peer sends never panic a node or corrupt its state.
//!
//! 1. Arbitrary messages (any sender, recipient, term, index, entries, snapshot chunk)
//!    interleaved with ticks, proposals and normal message delivery in a 3-node cluster: no
//!    panic, and every node's own state stays consistent (commit within the log, applied
//!    within commit, the log readable).
//! 2. The simulator with mutated copies of real messages (`sim/mutate.rs`) under its seeded
//!    faults: every mutant that no correct peer could send is refused, and every invariant
//!    (election safety, log matching, state machine safety, linearizability, ...) still holds.
//!    Arbitrary messages cannot be held to these: a well-formed message forged at a higher
//!    term is indistinguishable from a real leader's (Raft trusts its peers; the transport's
//!    handshake is what keeps strangers out).
//!
//! Deterministic by default (a fixed proptest seed); `PROPTEST_CASES=N` runs more cases and
//! `PROPTEST_RNG_SEED=N` other ones.

mod harness;

use harness::{Cluster, NodeOpts};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tern_raft::sim::{run_seed, SimOptions};
use tern_raft::{ConfState, Entry, EntryKind, Message, MessageBody, NodeId, SnapshotMeta};

/// Proptest's configuration from the environment, with `cases` and a fixed seed unless the
/// environment names them.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if c.rng_seed == RngSeed::Random {
        c.rng_seed = RngSeed::Fixed(0x7E44_5EED);
    }
    c
}

fn small_or_huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..12,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX >> 1),
        1 => any::<u64>(),
    ]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![8 => 1u64..=3, 1 => Just(0u64), 1 => 4u64..10]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        small_or_huge(),
        small_or_huge(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(term, index, conf, data)| {
            let (kind, data) = if conf && data.len() % 2 == 0 {
                (
                    EntryKind::ConfChange,
                    ConfState::with_voters(&[1, 2, 3]).encode(),
                )
            } else if conf {
                (EntryKind::ConfChange, data)
            } else {
                (EntryKind::Normal, data)
            };
            Entry {
                term,
                index,
                kind,
                data,
            }
        })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (
            small_or_huge(),
            small_or_huge(),
            prop::collection::vec(entry(), 0..4),
            small_or_huge(),
            any::<bool>()
        )
            .prop_map(|(prev_index, prev_term, mut entries, commit, fix)| {
                // Half the time, contiguous entries: these reach the log's append path.
                if fix {
                    for (i, e) in entries.iter_mut().enumerate() {
                        e.index = prev_index.saturating_add(1 + i as u64);
                    }
                }
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }),
        (
            small_or_huge(),
            any::<bool>(),
            small_or_huge(),
            small_or_huge()
        )
            .prop_map(
                |(index, reject, hint_index, hint_term)| MessageBody::AppendResp {
                    index,
                    reject,
                    hint_index,
                    hint_term,
                }
            ),
        (small_or_huge(), small_or_huge(), any::<bool>()).prop_map(
            |(commit, read_seq, quiesce)| {
                MessageBody::Heartbeat {
                    commit,
                    read_seq,
                    quiesce,
                }
            }
        ),
        small_or_huge().prop_map(|read_seq| MessageBody::HeartbeatResp { read_seq }),
        (
            any::<bool>(),
            small_or_huge(),
            small_or_huge(),
            any::<bool>()
        )
            .prop_map(|(pre, last_index, last_term, transfer)| MessageBody::Vote {
                pre,
                last_index,
                last_term,
                transfer,
            }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre, reject)| MessageBody::VoteResp { pre, reject }),
        (
            small_or_huge(),
            small_or_huge(),
            prop::collection::vec(0u64..5, 0..4),
            small_or_huge(),
            small_or_huge(),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(index, term, voters, size_bytes, offset, data)| {
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        conf: ConfState {
                            voters,
                            voters_outgoing: vec![],
                            learners: vec![],
                        },
                        size_bytes,
                    },
                    offset,
                    data,
                }
            }),
        (small_or_huge(), small_or_huge())
            .prop_map(|(index, next_offset)| MessageBody::SnapshotResp { index, next_offset }),
        Just(MessageBody::TimeoutNow),
        small_or_huge().prop_map(|ctx| MessageBody::ReadIndex { ctx }),
        (small_or_huge(), small_or_huge())
            .prop_map(|(ctx, index)| MessageBody::ReadIndexResp { ctx, index }),
        small_or_huge().prop_map(|last_index| MessageBody::Rebuilding { last_index }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (node_id(), node_id(), small_or_huge(), body()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

#[derive(Clone, Debug)]
enum Op {
    /// Step an arbitrary message into node `at` (1..=3), whatever its `to`.
    Inject {
        at: NodeId,
        msg: Message,
    },
    Tick {
        at: NodeId,
        count: u64,
    },
    Propose {
        at: NodeId,
    },
    /// One round of every node's Ready loop and delivery of queued messages.
    Round,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..=3, message()).prop_map(|(at, msg)| Op::Inject { at, msg }),
        2 => (1u64..=3, 1u64..20).prop_map(|(at, count)| Op::Tick { at, count }),
        1 => (1u64..=3).prop_map(|at| Op::Propose { at }),
        3 => Just(Op::Round),
    ]
}

fn check_node_consistent(c: &Cluster, id: NodeId) -> Result<(), TestCaseError> {
    let r = c.raft(id);
    let st = r.status();
    prop_assert!(st.applied <= st.commit, "node {id}: {st:?}");
    prop_assert!(st.commit <= st.last_index, "node {id}: {st:?}");
    prop_assert!(r.first_index() <= st.last_index + 1, "node {id}: {st:?}");
    for index in r.first_index()..=st.last_index {
        prop_assert!(r.log_term(index).is_some(), "node {id}: hole at {index}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_messages_never_panic_or_corrupt_a_node(ops in prop::collection::vec(op(), 1..60)) {
        let mut c = Cluster::default();
        c.add_nodes(3, None, &NodeOpts::default());
        c.raft_mut(1).campaign();
        c.stabilize();
        for op in ops {
            match op {
                Op::Inject { at, mut msg } => {
                    // Mostly addressed right, so the message gets past the first check.
                    if msg.to != 0 && msg.to <= 3 {
                        msg.to = at;
                    }
                    let _ = c.raft_mut(at).step(msg);
                }
                Op::Tick { at, count } => c.tick(at, count),
                Op::Propose { at } => {
                    let _ = c.raft_mut(at).propose(b"p".to_vec());
                }
                Op::Round => {
                    c.process_ready();
                    c.deliver();
                    c.complete_fetches();
                }
            }
            for id in 1..=3 {
                check_node_consistent(&c, id)?;
            }
        }
        // Whatever happened, the nodes still run their loop without panicking.
        for _ in 0..50 {
            c.process_ready();
            c.deliver();
        }
        for id in 1..=3 {
            check_node_consistent(&c, id)?;
        }
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn mutated_messages_are_refused_and_invariants_hold_under_faults(
        seed in any::<u64>(),
        mutate_per_mille in 20u64..400,
    ) {
        let report = run_seed(&SimOptions {
            steps: 400,
            mutate_per_mille,
            ..SimOptions::new(seed)
        });
        prop_assert!(
            !report.failed(),
            "seed {seed}: {:?} {:?} stuck={} (cargo run --release -p tern-raft --example sim -- --seed {seed} --mutate {mutate_per_mille} --steps 400)",
            report.violations,
            report.verdict,
            report.stuck
        );
    }
}

#[test]
fn simulator_mutations_fire_and_are_refused() {
    let (mut mutated, mut refused) = (0, 0);
    for seed in 0..8 {
        let report = run_seed(&SimOptions {
            steps: 400,
            mutate_per_mille: 100,
            ..SimOptions::new(seed)
        });
        assert!(!report.failed(), "seed {seed}: {report:?}");
        mutated += report.faults.msgs_mutated;
        refused += report.faults.msgs_mutated_refused;
    }
    assert!(
        mutated > 100 && refused > 50,
        "{mutated} mutants, {refused} refused"
    );
}
