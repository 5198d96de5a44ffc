//! The peer protocol's codecs: round trips of every frame and message kind, and the typed
//! error of every kind of damage (data-driven from `testdata/bad_frames.txt`).

mod common;

use tern_net::constants::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, PROTOCOL_VERSION};
use tern_net::frame::{decode_frame, encode_frame_with_version, FrameType};
use tern_net::heartbeat::{GroupHeartbeat, GroupHeartbeatResp};
use tern_net::message_codec::{
    batch_encoded_bytes, decode_batch, encode_batch, message_encoded_bytes,
};
use tern_net::{
    DecodeError, FrameError, HeartbeatBatch, Hello, PeerFrame, Refusal, RefuseReason, WireError,
};
use tern_raft::message::{Entry, EntryKind, Message, MessageBody};

fn round_trip(frame: PeerFrame) {
    let mut buf = Vec::new();
    let size = frame.encode(&mut buf);
    assert_eq!(size, buf.len());
    let (decoded, used) = PeerFrame::decode(&buf).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
    assert_eq!(used, buf.len());
    assert_eq!(decoded, frame);
}

#[test]
fn every_message_variant_round_trips_alone_and_in_one_batch() {
    let messages = common::every_variant();
    for message in &messages {
        round_trip(PeerFrame::Raft(vec![message.clone()]));
    }
    round_trip(PeerFrame::Raft(messages));
    round_trip(PeerFrame::Raft(Vec::new()));
}

#[test]
fn encoded_size_is_what_the_queues_count() {
    let messages = common::every_variant();
    for message in &messages {
        let mut payload = Vec::new();
        encode_batch(&mut payload, std::iter::once(message));
        assert_eq!(
            payload.len(),
            batch_encoded_bytes(message_encoded_bytes(&message.1)),
            "{}",
            message.1
        );
    }
}

#[test]
fn handshake_and_heartbeat_frames_round_trip() {
    round_trip(PeerFrame::Hello(Hello {
        cluster_id: 0xfeed_beef,
        node_id: 3,
        to_node: 1,
        shard: 2,
        shard_count: 4,
        protocol_version: PROTOCOL_VERSION,
    }));
    for reason in [
        RefuseReason::ClusterMismatch,
        RefuseReason::VersionUnsupported,
        RefuseReason::UnexpectedNode,
        RefuseReason::ShardOutOfRange,
        RefuseReason::ShardCountMismatch,
        RefuseReason::Busy,
        RefuseReason::Malformed,
    ] {
        round_trip(PeerFrame::Refuse(Refusal::new(
            reason,
            format!("because {reason:?} ✓"),
        )));
    }
    round_trip(PeerFrame::Heartbeats(HeartbeatBatch::new(1, 2)));
    round_trip(PeerFrame::Heartbeats(HeartbeatBatch {
        from: 1,
        to: 2,
        heartbeats: (0..1000)
            .map(|g| GroupHeartbeat {
                group: g,
                term: g / 10,
                commit: g * 3,
                read_seq: g % 7,
                quiesce: g % 2 == 0,
            })
            .collect(),
        responses: (0..500)
            .map(|g| GroupHeartbeatResp {
                group: g * 2,
                term: 9,
                read_seq: 1,
            })
            .collect(),
    }));
}

#[test]
fn a_long_refusal_is_cut_at_a_character_boundary() {
    let refusal = Refusal::new(RefuseReason::Malformed, "é".repeat(1000));
    let mut buf = Vec::new();
    PeerFrame::Refuse(refusal).encode(&mut buf);
    let (PeerFrame::Refuse(decoded), _) = PeerFrame::decode(&buf).unwrap() else {
        panic!("not a refusal");
    };
    assert_eq!(decoded.detail, "é".repeat(256));
}

#[test]
fn heartbeat_batch_coalesces_and_expands_to_the_same_messages() {
    let mut batch = HeartbeatBatch::new(1, 2);
    let mut expected = Vec::new();
    for group in 0..50u64 {
        let body = if group % 3 == 0 {
            MessageBody::HeartbeatResp { read_seq: group }
        } else {
            MessageBody::Heartbeat {
                commit: group * 2,
                read_seq: group,
                quiesce: false,
            }
        };
        let message = Message {
            from: 1,
            to: 2,
            term: group + 1,
            body,
        };
        expected.push((group, message.clone()));
        assert_eq!(batch.push(group, message), None);
    }
    // Not a heartbeat, or another node pair: given back to be sent on its own.
    let append = common::every_variant().remove(0).1;
    assert_eq!(batch.push(9, append.clone()), Some(append));
    let other_pair = Message {
        from: 1,
        to: 3,
        term: 1,
        body: MessageBody::HeartbeatResp { read_seq: 0 },
    };
    assert_eq!(batch.push(9, other_pair.clone()), Some(other_pair));
    assert_eq!(batch.len(), 50);

    let mut buf = Vec::new();
    PeerFrame::Heartbeats(batch).encode(&mut buf);
    let (PeerFrame::Heartbeats(decoded), _) = PeerFrame::decode(&buf).unwrap() else {
        panic!("not heartbeats");
    };
    let mut got: Vec<_> = decoded.into_messages().collect();
    got.sort_by_key(|(group, _)| *group);
    assert_eq!(got, expected);
}

/// The reference frame of `testdata/bad_frames.txt`.
fn reference_frame() -> Vec<u8> {
    let message = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::Append {
            prev_index: 10,
            prev_term: 3,
            entries: vec![
                Entry {
                    term: 3,
                    index: 11,
                    kind: EntryKind::Normal,
                    data: b"abc".to_vec(),
                },
                Entry {
                    term: 4,
                    index: 12,
                    kind: EntryKind::Normal,
                    data: b"de".to_vec(),
                },
            ],
            commit: 9,
        },
    };
    let mut buf = Vec::new();
    PeerFrame::Raft(vec![(7, message)]).encode(&mut buf);
    assert_eq!(
        buf.len(),
        FRAME_HEADER_BYTES + 112,
        "the offsets in bad_frames.txt assume this"
    );
    buf
}

/// Rewrites header and CRC around `payload`, as a peer with a bug (or another version) would.
fn reframe(version: u16, frame_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame_with_version(&mut buf, version, frame_type, |out| {
        out.extend_from_slice(payload)
    });
    buf
}

fn position(arg: &str, len: usize) -> usize {
    let n: i64 = arg.parse().expect("position");
    if n < 0 {
        (len as i64 + n) as usize
    } else {
        n as usize
    }
}

fn mutate(frame: &[u8], op: &str, args: &[&str]) -> Vec<u8> {
    let mut buf = frame.to_vec();
    let version = u16::from_le_bytes([frame[8], frame[9]]);
    let frame_type = u16::from_le_bytes([frame[10], frame[11]]);
    let mut payload = frame[FRAME_HEADER_BYTES..].to_vec();
    let num = |i: usize| -> u64 { args[i].parse().expect("number") };
    match op {
        "truncate" => buf.truncate(position(args[0], buf.len())),
        "flip" => {
            let at = position(args[0], buf.len());
            buf[at] ^= 0xff;
        }
        "header_u32" => {
            let at = num(0) as usize;
            buf[at..at + 4].copy_from_slice(&(num(1) as u32).to_le_bytes());
        }
        "version" => buf = reframe(num(0) as u16, frame_type, &payload),
        "type" => buf = reframe(version, num(0) as u16, &payload),
        "payload_u8" | "payload_u32" | "payload_u64" => {
            let at = num(0) as usize;
            let bytes = (num(1)).to_le_bytes();
            let width = match op {
                "payload_u8" => 1,
                "payload_u32" => 4,
                _ => 8,
            };
            payload[at..at + width].copy_from_slice(&bytes[..width]);
            buf = reframe(version, frame_type, &payload);
        }
        "append_zero" => {
            payload.extend(std::iter::repeat_n(0u8, num(0) as usize));
            buf = reframe(version, frame_type, &payload);
        }
        other => panic!("unknown mutation {other}"),
    }
    buf
}

fn variant_name(err: &WireError) -> String {
    let debug = match err {
        WireError::Frame(e) => format!("{e:?}"),
        WireError::Decode(e) => format!("{e:?}"),
    };
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn damaged_frames_give_their_typed_error() {
    let reference = reference_frame();
    assert!(PeerFrame::decode(&reference).is_ok());
    let script = include_str!("../testdata/bad_frames.txt");
    let mut cases = 0;
    for (line_no, line) in script.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line.split_once(':').expect("`name: mutation => Error`");
        let (mutation, expected) = rest.split_once("=>").expect("`=> Error`");
        let words: Vec<&str> = mutation.split_whitespace().collect();
        let damaged = mutate(&reference, words[0], &words[1..]);
        let got = match PeerFrame::decode(&damaged) {
            Ok(frame) => panic!("line {}: {name}: decoded {frame:?}", line_no + 1),
            Err(err) => err,
        };
        assert_eq!(
            variant_name(&got),
            expected.trim(),
            "line {}: {name}: got {got}",
            line_no + 1
        );
        cases += 1;
    }
    assert!(cases >= 30, "only {cases} cases ran");
}

#[test]
fn oversize_is_refused_before_the_payload_is_read() {
    // A header claiming a 4 GiB payload, with no payload: refused from the 12 bytes alone.
    let mut header = vec![0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode_frame(&header),
        Err(FrameError::Oversize {
            payload_bytes: u32::MAX as usize,
            payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
        })
    );
}

#[test]
fn a_wrong_version_names_both_versions() {
    let mut buf = Vec::new();
    encode_frame_with_version(&mut buf, 7, FrameType::Hello as u16, |_| {});
    let err = PeerFrame::decode(&buf).unwrap_err();
    assert_eq!(
        err,
        WireError::Frame(FrameError::Version {
            version: 7,
            supported: PROTOCOL_VERSION
        })
    );
    assert!(err.to_string().contains("version 7"), "{err}");
}

#[test]
fn snapshot_chunk_outside_the_snapshot_is_invalid() {
    let mut messages = common::every_variant();
    let (_, snapshot) = messages
        .iter_mut()
        .find(|(_, m)| matches!(m.body, MessageBody::Snapshot { .. }))
        .expect("a snapshot message");
    if let MessageBody::Snapshot { offset, .. } = &mut snapshot.body {
        *offset = 5; // 5 + 6 bytes > size 10
    }
    let mut payload = Vec::new();
    encode_batch(&mut payload, std::iter::once(&(1, snapshot.clone())));
    assert!(matches!(
        decode_batch(&payload),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn flags_and_booleans_accept_only_their_values() {
    let vote = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::VoteResp {
            pre: true,
            reject: true,
        },
    };
    let mut payload = Vec::new();
    encode_batch(&mut payload, std::iter::once(&(1, vote)));
    let last = payload.len() - 1;
    payload[last] = 0x04;
    assert!(matches!(
        decode_batch(&payload),
        Err(DecodeError::Invalid(_))
    ));

    let resp = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendResp {
            index: 1,
            reject: true,
            hint_index: 0,
            hint_term: 0,
        },
    };
    let mut payload = Vec::new();
    encode_batch(&mut payload, std::iter::once(&(1, resp)));
    payload[4 + 33 + 8] = 2; // the `reject` byte
    assert!(matches!(
        decode_batch(&payload),
        Err(DecodeError::BadBool {
            what: "reject",
            value: 2
        })
    ));
}

#[test]
fn hello_with_a_reserved_field_set_is_malformed() {
    let hello = Hello {
        cluster_id: 1,
        node_id: 2,
        to_node: 1,
        shard: 0,
        shard_count: 1,
        protocol_version: PROTOCOL_VERSION,
    };
    let mut payload = Vec::new();
    hello.encode(&mut payload);
    assert_eq!(Hello::decode(&payload), Ok(hello));
    payload[35] = 1;
    assert!(matches!(
        Hello::decode(&payload),
        Err(DecodeError::Invalid(_))
    ));
}

/// A recovery chunk through the whole frame reader: round trip, a frame checksum that does not
/// match (transport damage), a chunk claiming more entry bytes than a frame may hold (refused
/// from the header, nothing allocated), and a frame cut short.
#[test]
fn recovery_frames_round_trip_and_refuse_damage_with_typed_errors() {
    use tern_net::{RecoveryChunk, RecoveryMessage};
    let chunk = RecoveryMessage::Chunk {
        from: 2,
        to: 1,
        group: 9,
        chunk: RecoveryChunk {
            snapshot_index: 0,
            server_commit: 3,
            prev_index: 0,
            prev_term: 0,
            entries: (1..=3)
                .map(|index| Entry {
                    term: 1,
                    index,
                    kind: EntryKind::Normal,
                    data: vec![index as u8; 100],
                })
                .collect(),
        },
    };
    round_trip(PeerFrame::Recovery(chunk.clone()));
    let mut buf = Vec::new();
    PeerFrame::Recovery(chunk).encode(&mut buf);
    assert_eq!(
        u16::from_le_bytes([buf[10], buf[11]]),
        FrameType::Recovery as u16
    );
    let mut flipped = buf.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        PeerFrame::decode(&flipped),
        Err(WireError::Frame(FrameError::Checksum { .. }))
    ));
    let mut oversize = buf[..FRAME_HEADER_BYTES].to_vec();
    oversize[0..4].copy_from_slice(&((FRAME_PAYLOAD_BYTES_MAX + 1) as u32).to_le_bytes());
    assert!(matches!(
        PeerFrame::decode(&oversize),
        Err(WireError::Frame(FrameError::Oversize { .. }))
    ));
    assert!(matches!(
        PeerFrame::decode(&buf[..buf.len() - 1]),
        Err(WireError::Frame(FrameError::Truncated { .. }))
    ));
    // The payload re-framed with a valid frame checksum but the entries cut: a decode error.
    let payload = &buf[FRAME_HEADER_BYTES..buf.len() - 1];
    let mut reframed = Vec::new();
    encode_frame_with_version(
        &mut reframed,
        PROTOCOL_VERSION,
        FrameType::Recovery as u16,
        |out| out.extend_from_slice(payload),
    );
    assert!(matches!(
        PeerFrame::decode(&reframed),
        Err(WireError::Decode(DecodeError::Truncated { .. }))
    ));
}
