//! Controller state machine: scenario tests and property tests over random command sequences.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

fn member(id: u64) -> Member {
    let ip = [127, 0, (id >> 8) as u8, id as u8];
    Member {
        node_id: id,
        peer_addr: SocketAddr::from((ip, 9093)),
        kafka_addr: SocketAddr::from((ip, 9092)),
        http_addr: SocketAddr::from((ip, 9090)),
    }
}

fn create(name: &str, id: u128, partitions: u32, rf: u8) -> Command {
    Command::CreateTopic(TopicSpec {
        name: name.into(),
        id: Uuid::from_u128(id),
        partitions,
        replication_factor: rf,
        retention: Retention::default(),
    })
}

/// Applies commands at indexes 1, 2, …; returns the outcomes.
fn run(state: &mut ControllerState, cmds: &[Command]) -> Vec<Outcome> {
    let start = state.applied_index();
    cmds.iter()
        .enumerate()
        .map(|(i, c)| {
            let out = state.apply(start + 1 + i as u64, c).unwrap();
            state.check_invariants().unwrap();
            out
        })
        .collect()
}

fn three_nodes() -> ControllerState {
    let mut s = ControllerState::default();
    run(&mut s, &[1, 2, 3].map(|i| Command::AddMember(member(i))));
    s
}

#[test]
fn create_topic_places_every_partition_on_rf_distinct_members() {
    let mut s = three_nodes();
    let out = run(&mut s, &[create("orders", 1, 64, 3)]);
    let Outcome::TopicCreated { groups, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(groups, &(1..=64).collect::<Vec<u64>>());
    let t = s.topic("orders").unwrap();
    assert_eq!(t.created_index, 4);
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 3);
    }
    let mut leaders = BTreeMap::<u64, u32>::new();
    for p in &t.partitions {
        *leaders.entry(p.replicas[0]).or_default() += 1;
    }
    assert!(leaders.values().all(|&n| n == 21 || n == 22), "{leaders:?}");
}

#[test]
fn validation_failures_are_outcomes_and_leave_the_state_alone() {
    let mut s = three_nodes();
    run(&mut s, &[create("orders", 1, 4, 3)]);
    let before = s.clone();
    let cases = [
        (create("orders", 2, 1, 1), "exists"),
        (create("other", 1, 1, 1), "id in use"),
        (create("other", 0, 1, 1), "nil id"),
        (create("bad/name", 3, 1, 1), "name"),
        (create("", 3, 1, 1), "empty name"),
        (create("..", 3, 1, 1), "dotdot"),
        (create("other", 3, 0, 1), "zero partitions"),
        (
            create("other", 3, PARTITIONS_PER_TOPIC_MAX + 1, 1),
            "too many partitions",
        ),
        (create("other", 3, 1, 0), "rf 0"),
        (create("other", 3, 1, 4), "rf > members"),
        (
            Command::DeleteTopic {
                name: "nope".into(),
                id: Uuid::nil(),
            },
            "unknown topic",
        ),
        (
            Command::DeleteTopic {
                name: "orders".into(),
                id: Uuid::from_u128(99),
            },
            "id mismatch",
        ),
        (Command::RemoveMember { node_id: 9 }, "unknown member"),
        (
            Command::SetTopicConfig {
                name: "orders".into(),
                retention: Retention {
                    bytes_max: Some(0),
                    age_ms_max: None,
                },
                read_only: false,
            },
            "retention 0",
        ),
    ];
    for (i, (cmd, what)) in cases.iter().enumerate() {
        let index = before.applied_index() + 1 + i as u64;
        let out = s.apply(index, cmd).unwrap();
        let Outcome::Rejected(rejection) = &out else {
            panic!("{what}: {out:?}")
        };
        // Topic requests map onto a Kafka error code; member changes are not Kafka's.
        let is_member_change = matches!(cmd, Command::RemoveMember { .. });
        assert_eq!(
            rejection.kafka_error_code().is_none(),
            is_member_change,
            "{what}"
        );
    }
    // Only the applied index moved.
    let mut expected = before;
    expected.applied_index = s.applied_index();
    assert_eq!(s, expected);
}

#[test]
fn apply_refuses_an_index_that_does_not_advance() {
    let mut s = three_nodes();
    let err = s.apply(3, &create("t", 1, 1, 1)).unwrap_err();
    assert_eq!(
        err,
        ControllerError::IndexNotAfterApplied {
            index: 3,
            applied: 3
        }
    );
    assert!(s.topics().is_empty());
}

#[test]
fn removing_a_member_moves_its_replicas_and_adding_one_refills() {
    let mut s = ControllerState::default();
    run(&mut s, &[1, 2, 3, 4].map(|i| Command::AddMember(member(i))));
    run(&mut s, &[create("t", 1, 8, 3)]);
    let hosted_on_4: Vec<u64> = s
        .topic("t")
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&4))
        .map(|p| p.group)
        .collect();
    let out = run(&mut s, &[Command::RemoveMember { node_id: 4 }]);
    let Outcome::MemberRemoved {
        dropped,
        orphaned,
        added,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(dropped, &hosted_on_4);
    assert!(orphaned.is_empty(), "RF 3: other copies remain");
    // Three members remain for RF 3: every dropped replica found a new home.
    assert_eq!(
        added.iter().map(|a| a.group).collect::<Vec<_>>(),
        hosted_on_4
    );
    assert!(s
        .topic("t")
        .unwrap()
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 3));
    // Down to two members: partitions run under-replicated, then refill on a new member.
    let out = run(&mut s, &[Command::RemoveMember { node_id: 3 }]);
    let Outcome::MemberRemoved { added, .. } = &out[0] else {
        panic!()
    };
    assert!(added.is_empty());
    assert!(s
        .topic("t")
        .unwrap()
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 2));
    let out = run(&mut s, &[Command::AddMember(member(5))]);
    let Outcome::MemberAdded { added, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(added.len(), 8);
    assert!(added.iter().all(|a| a.node == 5));
    // The last member cannot go.
    let out = run(
        &mut s,
        &[
            Command::RemoveMember { node_id: 1 },
            Command::RemoveMember { node_id: 2 },
        ],
    );
    assert!(matches!(out[1], Outcome::MemberRemoved { .. }));
    let out = run(&mut s, &[Command::RemoveMember { node_id: 5 }]);
    assert_eq!(out[0], Outcome::Rejected(Rejection::LastMember(5)));
}

#[test]
fn removing_the_only_replica_is_reported_as_orphaned() {
    let mut s = ControllerState::default();
    run(&mut s, &[1, 2].map(|i| Command::AddMember(member(i))));
    run(&mut s, &[create("solo", 1, 4, 1)]);
    let on_2: Vec<u64> = s
        .topic("solo")
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.replicas == [2])
        .map(|p| p.group)
        .collect();
    assert_eq!(on_2.len(), 2, "balanced over two nodes");
    let out = run(&mut s, &[Command::RemoveMember { node_id: 2 }]);
    let Outcome::MemberRemoved {
        orphaned, added, ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(orphaned, &on_2);
    // The partitions get a new, empty home on the remaining member.
    assert!(added.iter().all(|a| a.node == 1) && added.len() == 2);
}

#[test]
fn add_member_updates_addresses_and_refuses_a_taken_one() {
    let mut s = three_nodes();
    let mut moved = member(2);
    moved.kafka_addr = "127.0.0.2:19092".parse().unwrap();
    let out = run(&mut s, &[Command::AddMember(moved.clone())]);
    assert_eq!(out[0], Outcome::MemberUpdated { node_id: 2 });
    assert_eq!(s.members()[&2], moved);
    let mut clash = member(4);
    clash.peer_addr = member(1).peer_addr;
    let out = run(&mut s, &[Command::AddMember(clash)]);
    assert!(matches!(
        out[0],
        Outcome::Rejected(Rejection::AddressInUse { other: 1, .. })
    ));
}

#[test]
fn proposer_draws_a_fresh_topic_id() {
    let a = TopicSpec::new("t", 1, 1, Retention::default());
    let b = TopicSpec::new("t", 1, 1, Retention::default());
    assert_ne!(a.id, b.id);
    assert!(!a.id.is_nil());
}

#[test]
fn group_ids_are_never_reused() {
    let mut s = three_nodes();
    run(&mut s, &[create("a", 1, 3, 1)]);
    run(
        &mut s,
        &[Command::DeleteTopic {
            name: "a".into(),
            id: Uuid::from_u128(1),
        }],
    );
    let out = run(&mut s, &[create("a", 2, 2, 1)]);
    assert_eq!(
        out[0],
        Outcome::TopicCreated {
            id: Uuid::from_u128(2),
            groups: vec![4, 5]
        }
    );
}

#[test]
fn reconcile_plan_creates_updates_and_removes() {
    let mut s = three_nodes();
    run(&mut s, &[create("a", 1, 6, 2), create("b", 2, 3, 3)]);
    let want = desired_groups(&s, 2, 4);
    assert!(want.values().all(|g| g.replicas.contains(&2)));
    assert!(want
        .values()
        .all(|g| g.shard == tern_engine::shard_for_group(g.group, 4)));
    assert!(want.contains_key(&7) && want.contains_key(&8) && want.contains_key(&9));
    let p = plan(&BTreeMap::new(), &want);
    assert_eq!(p.create.len(), want.len());
    let mut running: BTreeMap<u64, Vec<u64>> = want
        .values()
        .map(|g| (g.group, g.replicas.clone()))
        .collect();
    assert!(plan(&running, &want).is_empty());
    running.insert(1000, vec![2]);
    running.get_mut(&7).unwrap().pop();
    let p = plan(&running, &want);
    assert_eq!(p.remove, vec![1000]);
    assert_eq!(
        p.update.iter().map(|g| g.group).collect::<Vec<_>>(),
        vec![7]
    );
    run(
        &mut s,
        &[Command::DeleteTopic {
            name: "b".into(),
            id: Uuid::nil(),
        }],
    );
    let after = desired_groups(&s, 2, 4);
    let p = plan(
        &want
            .values()
            .map(|g| (g.group, g.replicas.clone()))
            .collect(),
        &after,
    );
    assert_eq!(p.remove, vec![7, 8, 9]);
}

#[test]
fn snapshot_round_trip_and_damage() {
    let mut s = three_nodes();
    run(&mut s, &[create("a", 1, 6, 2), create("b", 2, 3, 3)]);
    let bytes = s.encode_snapshot().unwrap();
    assert_eq!(ControllerState::decode_snapshot(&bytes).unwrap(), s);
    for cut in 0..bytes.len() {
        assert!(ControllerState::decode_snapshot(&bytes[..cut]).is_err());
    }
    for i in (0..bytes.len() * 8).step_by(7) {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(ControllerState::decode_snapshot(&b).is_err(), "flip {i}");
    }
    assert!(ControllerState::decode_snapshot(&create("x", 1, 1, 1).encode().unwrap()).is_err());
}

#[test]
fn snapshot_with_broken_invariants_is_refused() {
    let mut s = three_nodes();
    run(&mut s, &[create("a", 1, 2, 2)]);
    let mut bad = s.clone();
    bad.topics.get_mut("a").unwrap().partitions[1].replicas = vec![1, 1];
    assert!(ControllerState::decode_snapshot(&bad.encode_snapshot().unwrap()).is_err());
    let mut bad = s.clone();
    bad.next_group = 1;
    assert!(ControllerState::decode_snapshot(&bad.encode_snapshot().unwrap()).is_err());
    let mut bad = s;
    bad.members.remove(&2);
    bad.members.remove(&3);
    assert!(ControllerState::decode_snapshot(&bad.encode_snapshot().unwrap()).is_err());
}

#[test]
fn apply_payload_decodes_or_refuses() {
    let mut s = ControllerState::default();
    let bytes = Command::AddMember(member(1)).encode().unwrap();
    assert!(matches!(
        s.apply_payload(1, &bytes),
        Ok(Outcome::MemberAdded { .. })
    ));
    let err = s.apply_payload(2, &bytes[..bytes.len() - 1]).unwrap_err();
    assert!(matches!(err, ControllerError::Decode { index: 2, .. }));
    assert_eq!(
        s.applied_index(),
        1,
        "a payload that does not decode is not applied"
    );
}

#[test]
fn set_preferred_leader_moves_the_replica_first_and_keeps_the_set() {
    let mut s = three_nodes();
    run(&mut s, &[create("orders", 1, 4, 3)]);
    let before = s.topic("orders").unwrap().partitions[2].clone();
    let target = before.replicas[2];
    let out = run(
        &mut s,
        &[Command::SetPreferredLeader {
            name: "orders".into(),
            partition: 2,
            node_id: target,
        }],
    );
    let after = &s.topic("orders").unwrap().partitions[2];
    let expected = vec![target, before.replicas[0], before.replicas[1]];
    assert_eq!(after.replicas, expected);
    assert_eq!(
        out[0],
        Outcome::PreferredLeaderSet {
            group: before.group,
            replicas: expected.clone(),
        }
    );
    // Already first: applied, nothing changes.
    run(
        &mut s,
        &[Command::SetPreferredLeader {
            name: "orders".into(),
            partition: 2,
            node_id: target,
        }],
    );
    assert_eq!(s.topic("orders").unwrap().partitions[2].replicas, expected);
    // The other partitions are untouched.
    assert_eq!(s.topic("orders").unwrap().partitions[0].replicas.len(), 3);
}

#[test]
fn set_preferred_leader_rejections_change_nothing() {
    let mut s = ControllerState::default();
    run(&mut s, &[1, 2, 3, 4].map(|i| Command::AddMember(member(i))));
    run(&mut s, &[create("orders", 1, 2, 2)]);
    let before = s.clone();
    let p0 = s.topic("orders").unwrap().partitions[0].replicas.clone();
    let outsider = (1..=4).find(|n| !p0.contains(n)).unwrap();
    let cmds = [
        Command::SetPreferredLeader {
            name: "nope".into(),
            partition: 0,
            node_id: 1,
        },
        Command::SetPreferredLeader {
            name: "orders".into(),
            partition: 2,
            node_id: 1,
        },
        Command::SetPreferredLeader {
            name: "orders".into(),
            partition: 0,
            node_id: outsider,
        },
    ];
    let out = run(&mut s, &cmds);
    assert_eq!(
        out[0],
        Outcome::Rejected(Rejection::UnknownTopic("nope".into()))
    );
    assert!(matches!(
        &out[1],
        Outcome::Rejected(r @ Rejection::UnknownPartition { partition: 2, .. })
            if r.kafka_error_code() == Some(3)
    ));
    assert!(matches!(
        &out[2],
        Outcome::Rejected(r @ Rejection::NotAReplica { .. }) if r.kafka_error_code() == Some(39)
    ));
    assert_eq!(s.topics(), before.topics());
}

/// `tern serve --force-new-cluster` on node 2: the other members go (and stay gone: a
/// controller leader does not register them again), every partition keeps its replica on
/// node 2, and a partition that had none there gets one that starts it alone (empty).
#[test]
fn force_new_cluster_leaves_one_member_and_restarts_orphaned_partitions_on_it() {
    let mut s = three_nodes();
    run(&mut s, &[create("kept", 1, 3, 3), create("lost", 2, 4, 1)]);
    let lost_elsewhere: Vec<u64> = s
        .topic("lost")
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.replicas != [2])
        .map(|p| p.group)
        .collect();
    assert!(
        !lost_elsewhere.is_empty(),
        "placement put every partition on node 2"
    );
    let kept_initial: Vec<Vec<u64>> = s
        .topic("kept")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.initial.clone())
        .collect();
    let out = run(&mut s, &[Command::ForceNewCluster { node_id: 2 }]);
    let Outcome::ClusterForced {
        node_id,
        removed,
        orphaned,
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*node_id, removed.as_slice()), (2, &[1, 3][..]));
    assert_eq!(orphaned, &lost_elsewhere);
    assert_eq!(s.members().keys().copied().collect::<Vec<_>>(), vec![2]);
    assert!(s.was_removed(1) && s.was_removed(3));
    for t in s.topics().values() {
        for p in &t.partitions {
            assert_eq!(p.replicas, vec![2], "{p:?}");
            if orphaned.contains(&p.group) {
                assert_eq!(p.initial, vec![2], "an orphaned partition starts on node 2");
            }
        }
    }
    // Node 3 added back: it gets a replica of the replication-factor-3 topic (a joined node
    // learns the configuration from node 2, whatever the initial replicas say).
    run(&mut s, &[Command::AddMember(member(3))]);
    for (p, before) in s
        .topic("kept")
        .unwrap()
        .partitions
        .iter()
        .zip(&kept_initial)
    {
        assert_eq!(p.replicas, vec![2, 3]);
        assert_eq!(
            &p.initial, before,
            "a partition with data keeps its initial replicas"
        );
    }
    // A second force on the same node changes nothing more.
    let mut again = s.clone();
    run(&mut again, &[Command::RemoveMember { node_id: 3 }]);
    let out = run(&mut again, &[Command::ForceNewCluster { node_id: 2 }]);
    assert!(matches!(&out[0], Outcome::ClusterForced { removed, .. } if removed.is_empty()));
}

// ---- property tests ----

fn arb_command() -> impl Strategy<Value = Command> {
    let names = prop::sample::select(vec!["a", "b", "c", "orders", "x.y_z-1", "bad name"]);
    prop_oneof![
        3 => (1u64..8).prop_map(|id| Command::AddMember(member(id))),
        1 => (1u64..8).prop_map(|node_id| Command::RemoveMember { node_id }),
        1 => (0u64..8).prop_map(|node_id| Command::ForceNewCluster { node_id }),
        4 => (names.clone(), 0u128..6, 0u32..12, 0u8..5, any::<Option<u32>>()).prop_map(
            |(name, id, partitions, rf, bytes)| Command::CreateTopic(TopicSpec {
                name: name.into(),
                id: Uuid::from_u128(id),
                partitions,
                replication_factor: rf,
                retention: Retention { bytes_max: bytes.map(u64::from), age_ms_max: None },
            })
        ),
        2 => (names.clone(), prop_oneof![Just(0u128), 0u128..6]).prop_map(|(name, id)| {
            Command::DeleteTopic { name: name.into(), id: Uuid::from_u128(id) }
        }),
        1 => (names.clone(), any::<Option<u64>>(), any::<bool>()).prop_map(|(name, age, read_only)| {
            Command::SetTopicConfig {
                name: name.into(),
                retention: Retention { bytes_max: None, age_ms_max: age },
                read_only,
            }
        }),
        1 => (names, 0u32..4, 0u64..8).prop_map(|(name, partition, node_id)| {
            Command::SetPreferredLeader { name: name.into(), partition, node_id }
        }),
    ]
}

proptest! {
    #[test]
    fn prop_commands_round_trip(cmd in arb_command()) {
        let bytes = cmd.encode().unwrap();
        prop_assert_eq!(Command::decode(&bytes).unwrap(), cmd);
    }

    #[test]
    fn prop_random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Command::decode(&bytes);
        let _ = ControllerState::decode_snapshot(&bytes);
    }

    /// Two replicas applying the same committed sequence agree at every step; a replica
    /// that restarts from a snapshot taken at any point and applies the rest ends in the
    /// same state as one that applied everything; every step keeps the invariants.
    #[test]
    fn prop_replicas_agree_and_snapshots_are_equivalent(
        cmds in prop::collection::vec(arb_command(), 1..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(cmds.len());
        let mut a = ControllerState::default();
        let mut b = ControllerState::default();
        let mut restored = None;
        for (i, cmd) in cmds.iter().enumerate() {
            let index = i as u64 + 1;
            // Replica b gets the command through its encoding, as from the Raft log.
            let out_a = a.apply(index, cmd).unwrap();
            let out_b = b.apply_payload(index, &cmd.encode().unwrap()).unwrap();
            prop_assert_eq!(&out_a, &out_b);
            prop_assert_eq!(&a, &b);
            a.check_invariants().map_err(TestCaseError::fail)?;
            if i == cut {
                let snap = a.encode_snapshot().unwrap();
                prop_assert_eq!(&snap, &b.encode_snapshot().unwrap());
                restored = Some(ControllerState::decode_snapshot(&snap).unwrap());
            }
            if i > cut {
                let r = restored.as_mut().unwrap();
                prop_assert_eq!(r.apply(index, cmd).unwrap(), out_a);
            }
        }
        prop_assert_eq!(restored.unwrap(), a);
    }
}

#[test]
fn initial_replicas_survive_moves_and_snapshots() {
    let mut s = three_nodes();
    run(
        &mut s,
        &[
            Command::AddMember(member(4)),
            create("a", 1, 4, 3),
            Command::RemoveMember { node_id: 2 },
        ],
    );
    let moved: Vec<&Partition> = s.topics()["a"]
        .partitions
        .iter()
        .filter(|p| p.initial != p.replicas)
        .collect();
    assert!(!moved.is_empty(), "no replica moved: {:?}", s.topics()["a"]);
    for p in &s.topics()["a"].partitions {
        assert_eq!(p.initial.len(), 3);
        assert!(!p.replicas.contains(&2));
        assert_eq!(
            p.initial.contains(&2),
            moved.iter().any(|m| m.group == p.group)
        );
    }
    assert!(s.was_removed(2));
    let bytes = s.encode_snapshot().unwrap();
    assert_eq!(ControllerState::decode_snapshot(&bytes).unwrap(), s);
    // Added again: no longer removed.
    let mut again = s.clone();
    run(&mut again, &[Command::AddMember(member(2))]);
    assert!(!again.was_removed(2));
    // What reconcile hands a node that received a moved replica: the initial set, without it.
    let joiner = moved[0]
        .replicas
        .iter()
        .find(|n| !moved[0].initial.contains(n))
        .copied()
        .expect("a replica placed after creation");
    let hosted = desired_groups(&s, joiner, 1);
    assert_eq!(hosted[&moved[0].group].initial, moved[0].initial);
}

#[test]
fn a_version_1_snapshot_is_read_with_its_replicas_as_the_initial_ones() {
    use super::codec::{encode_frame, Writer};
    use super::command::{write_member, write_retention};
    let mut s = three_nodes();
    run(&mut s, &[create("a", 1, 2, 3)]);
    // The version 1 body: as version 2 without the initial lists.
    let mut w = Writer::new("controller snapshot");
    w.u64(s.applied_index());
    let next_group = s.topics()["a"].partitions.last().unwrap().group + 1;
    w.u64(next_group);
    w.count("members", s.members().len()).unwrap();
    for m in s.members().values() {
        write_member(&mut w, m).unwrap();
    }
    w.count("topics", 1).unwrap();
    let t = &s.topics()["a"];
    w.str("topic.name", &t.name).unwrap();
    w.uuid(t.id);
    w.u8(t.replication_factor);
    write_retention(&mut w, t.retention);
    w.bool(t.read_only);
    w.u64(t.created_index);
    w.count("topic.partitions", t.partitions.len()).unwrap();
    for p in &t.partitions {
        w.u64(p.group);
        w.count("partition.replicas", p.replicas.len()).unwrap();
        for r in &p.replicas {
            w.u64(*r);
        }
    }
    let v1 = encode_frame(
        "controller snapshot",
        u32::from_le_bytes(*b"TCSN"),
        1,
        1,
        &w.buf,
    )
    .unwrap();
    assert_eq!(ControllerState::decode_snapshot(&v1).unwrap(), s);
}
