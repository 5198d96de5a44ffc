//! Random and mutated bytes never panic the decoders (`PROPTEST_CASES` raises the case count).

mod common;

use proptest::prelude::*;
use tern_net::constants::FRAME_HEADER_BYTES;
use tern_net::frame::encode_frame_with_version;
use tern_net::handshake::Hello;
use tern_net::message_codec::decode_batch;
use tern_net::{HeartbeatBatch, PeerFrame, Refusal};

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
    frames
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
