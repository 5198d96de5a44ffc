//! Random and mutated bytes never panic the decoders (`PROPTEST_CASES` raises the case count).

mod common;

use proptest::prelude::*;
use tern_net::constants::FRAME_HEADER_BYTES;
use tern_net::frame::encode_frame_with_version;
use tern_net::handshake::Hello;
use tern_net::message_codec::decode_batch;
use tern_net::{
    HeartbeatBatch, PeerFrame, RecoveryChunk, RecoveryMessage, RecoveryRefuseReason, Refusal,
};

/// Valid frames of every type, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut push = |frame: PeerFrame| {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        frames.push(buf);
    };
    push(PeerFrame::Raft(common::every_variant()));
    for message in common::every_variant() {
        push(PeerFrame::Raft(vec![message]));
    }
    let mut heartbeats = HeartbeatBatch::new(1, 2);
    for (group, message) in common::every_variant() {
        let _ = heartbeats.push(group, message);
    }
    push(PeerFrame::Heartbeats(heartbeats));
    push(PeerFrame::Hello(
        tern_net::LocalIdentity {
            cluster_id: 9,
            node_id: 1,
            shard_count: 2,
        }
        .hello(2, 1),
    ));
    push(PeerFrame::Refuse(Refusal::new(
        tern_net::RefuseReason::Busy,
        "busy",
    )));
    for message in recovery_variants() {
        push(PeerFrame::Recovery(message));
    }
    frames
}

/// One recovery-stream message of each kind, the chunk with entries of both kinds.
fn recovery_variants() -> Vec<RecoveryMessage> {
    use tern_raft::message::{ConfState, Entry, EntryKind};
    let refuse = |reason| RecoveryMessage::Refuse {
        from: 2,
        to: 1,
        group: 5,
        from_index: 41,
        reason,
    };
    vec![
        RecoveryMessage::Fetch {
            from: 1,
            to: 2,
            group: 5,
            from_index: 41,
            bytes_max: 1 << 20,
        },
        RecoveryMessage::Chunk {
            from: 2,
            to: 1,
            group: 5,
            chunk: RecoveryChunk {
                snapshot_index: 30,
                server_commit: 50,
                prev_index: 40,
                prev_term: 3,
                entries: vec![
                    Entry {
                        term: 3,
                        index: 41,
                        kind: EntryKind::Normal,
                        data: b"forty-one".to_vec(),
                    },
                    Entry {
                        term: 4,
                        index: 42,
                        kind: EntryKind::ConfChange,
                        data: ConfState::with_voters(&[1, 2, 3]).encode(),
                    },
                ],
            },
        },
        refuse(RecoveryRefuseReason::NotCaughtUp),
        refuse(RecoveryRefuseReason::Compacted { log_start: 31 }),
        refuse(RecoveryRefuseReason::Busy {
            retry_after_ms: 100,
        }),
    ]
}

/// Keeps the header's type and version but recomputes length and CRC, so the mutated payload
/// reaches the payload decoders instead of stopping at the checksum.
fn reframed(frame: &[u8], payload: &[u8]) -> Vec<u8> {
    let version = u16::from_le_bytes([frame[8], frame[9]]);
    let frame_type = u16::from_le_bytes([frame[10], frame[11]]);
    let mut buf = Vec::new();
    encode_frame_with_version(&mut buf, version, frame_type, |out| {
        out.extend_from_slice(payload)
    });
    buf
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PeerFrame::decode(&bytes);
        let _ = decode_batch(&bytes);
        let _ = HeartbeatBatch::decode(&bytes);
        let _ = Hello::decode(&bytes);
        let _ = Refusal::decode(&bytes);
        let _ = RecoveryMessage::decode(&bytes);
    }

    /// Random bytes behind a valid recovery head (tag, ids, group) reach the body decoders.
    #[test]
    fn random_recovery_bodies_never_panic(
        tag in 1u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![tag];
        for v in [1u64, 2, 5] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&body);
        let _ = RecoveryMessage::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic_and_round_trip_when_they_decode(
        seed in 0usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        keep_crc in any::<bool>(),
    ) {
        let seeds = seeds();
        let frame = &seeds[seed % seeds.len()];
        let mut payload = frame[FRAME_HEADER_BYTES..].to_vec();
        for (at, value) in edits {
            if !payload.is_empty() {
                let at = at % payload.len();
                payload[at] = value;
            }
        }
        if cut % 4 == 0 && !payload.is_empty() {
            payload.truncate(cut % payload.len());
        }
        let damaged = if keep_crc {
            let mut buf = frame[..FRAME_HEADER_BYTES].to_vec();
            buf.extend_from_slice(&payload);
            buf
        } else {
            reframed(frame, &payload)
        };
        if let Ok((decoded, used)) = PeerFrame::decode(&damaged) {
            // Whatever decodes must encode back to the same bytes: one layout, no slack.
            let mut again = Vec::new();
            decoded.encode(&mut again);
            prop_assert_eq!(&again[..], &damaged[..used]);
        }
    }
}

fn conf_strategy() -> impl Strategy<Value = tern_raft::message::ConfState> {
    (
        proptest::collection::btree_set(1u64..20, 0..5),
        proptest::collection::btree_set(1u64..20, 0..3),
        proptest::collection::btree_set(20u64..30, 0..3),
    )
        .prop_map(
            |(voters, outgoing, learners)| tern_raft::message::ConfState {
                voters: voters.into_iter().collect(),
                voters_outgoing: outgoing.into_iter().collect(),
                learners: learners.into_iter().collect(),
            },
        )
}

/// Any message the Raft core could send, with field values across their whole range.
fn message_strategy() -> impl Strategy<Value = (u64, tern_raft::message::Message)> {
    use tern_raft::message::{Entry, EntryKind, Message, MessageBody, SnapshotMeta};
    let body = prop_oneof![
        (
            any::<u64>(),
            0u64..u64::MAX / 2,
            proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..6
            ),
            any::<u64>(),
            conf_strategy(),
        )
            .prop_map(|(prev_term, prev_index, entries, commit, conf)| {
                let entries = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (conf_change, data))| Entry {
                        term: prev_term.saturating_add(i as u64 / 2),
                        index: prev_index + 1 + i as u64,
                        kind: if conf_change {
                            EntryKind::ConfChange
                        } else {
                            EntryKind::Normal
                        },
                        data: if conf_change { conf.encode() } else { data },
                    })
                    .collect();
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }),
        (any::<u64>(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
            |(index, reject, hint_index, hint_term)| {
                MessageBody::AppendResp {
                    index,
                    reject,
                    hint_index,
                    hint_term,
                }
            }
        ),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(commit, read_seq, quiesce)| {
            MessageBody::Heartbeat {
                commit,
                read_seq,
                quiesce,
            }
        }),
        any::<u64>().prop_map(|read_seq| MessageBody::HeartbeatResp { read_seq }),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(pre, last_index, last_term, transfer)| {
                MessageBody::Vote {
                    pre,
                    last_index,
                    last_term,
                    transfer,
                }
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre, reject)| MessageBody::VoteResp { pre, reject }),
        (
            any::<u64>(),
            any::<u64>(),
            conf_strategy(),
            0u64..1 << 40,
            proptest::collection::vec(any::<u8>(), 0..64),
            0u64..1000,
        )
            .prop_map(
                |(index, term, conf, offset, data, spare)| MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        conf,
                        size_bytes: offset + data.len() as u64 + spare,
                    },
                    offset,
                    data,
                }
            ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(index, next_offset)| MessageBody::SnapshotResp { index, next_offset }),
        Just(MessageBody::TimeoutNow),
        any::<u64>().prop_map(|ctx| MessageBody::ReadIndex { ctx }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(ctx, index)| MessageBody::ReadIndexResp { ctx, index }),
        any::<u64>().prop_map(|last_index| MessageBody::Rebuilding { last_index }),
    ];
    (any::<u64>(), 1u64..u64::MAX, 1u64..u64::MAX, body).prop_map(|(group, from, to, body)| {
        // `from < u64::MAX`, so `from + 1` is a valid, different node.
        let to = if to == from { from + 1 } else { to };
        // The message's term is at least every entry's term.
        let term = match &body {
            MessageBody::Append {
                entries, prev_term, ..
            } => entries
                .last()
                .map_or(*prev_term, |e| e.term)
                .saturating_add(from % 3),
            _ => from.wrapping_mul(31) % 1000,
        };
        (
            group,
            Message {
                from,
                to,
                term,
                body,
            },
        )
    })
}

proptest! {
    #[test]
    fn any_valid_batch_round_trips(messages in proptest::collection::vec(message_strategy(), 0..20)) {
        let frame = PeerFrame::Raft(messages);
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        let (decoded, used) = PeerFrame::decode(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, frame);
    }
}
