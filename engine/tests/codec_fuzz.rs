//! Property tests of every on-disk decoder: round trips, and random, truncated or mutated
//! bytes never panic (they decode to an error, or — for a mutation that changed nothing the
//! checksum covers — to exactly the original).
//!
//! Environment: `PROPTEST_CASES=<n>` (proptest's own knob; default 256 per property).

use proptest::prelude::*;
use tern_engine::constants::{BLOCK_BYTES, RECORD_HEADER_BYTES};
use tern_engine::engine::EngineMeta;
use tern_engine::format::record::{
    decode_batch_payload, decode_header, decode_record, encode_record, RecordFields,
};
use tern_engine::format::{IndexEntry, RecordKind, SealedIndex, SegmentHeader};

const KINDS: [RecordKind; 8] = [
    RecordKind::BatchHeader,
    RecordKind::Entry,
    RecordKind::Truncate,
    RecordKind::Compact,
    RecordKind::HardState,
    RecordKind::SnapshotMeta,
    RecordKind::DeleteGroup,
    RecordKind::Seal,
];

fn fields() -> impl Strategy<Value = RecordFields> {
    (
        0..KINDS.len(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(k, batch_seq, group, term, index, aux)| RecordFields {
            kind: KINDS[k],
            batch_seq,
            group,
            term,
            index,
            // An entry's aux is its kind: 0 or 1 (other values are refused, tested below).
            aux: if KINDS[k] == RecordKind::Entry {
                aux % 2
            } else {
                aux
            },
        })
}

fn record(f: RecordFields, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; RECORD_HEADER_BYTES + payload.len()];
    encode_record(&mut buf, f, payload);
    buf
}

fn index_entries() -> impl Strategy<Value = Vec<IndexEntry>> {
    prop::collection::vec(
        (
            1..KINDS.len(),
            any::<u32>(),
            0..1u64 << 30,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        0..40,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(k, payload_len, offset, group, term, index)| IndexEntry {
                kind: KINDS[k] as u16,
                reserved: 0,
                payload_len,
                offset,
                group,
                term,
                index,
                aux: 0,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn record_round_trip(f in fields(), payload in prop::collection::vec(any::<u8>(), 0..3000)) {
        let buf = record(f, &payload);
        let (h, p) = decode_record(&buf).unwrap();
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(h.kind, f.kind as u16);
        prop_assert_eq!((h.batch_seq, h.group, h.term, h.index, h.aux), (f.batch_seq, f.group, f.term, f.index, f.aux));
        // Trailing bytes (the next record, padding) are not part of it.
        let mut longer = buf.clone();
        longer.extend_from_slice(&[0xAB; 100]);
        prop_assert_eq!(decode_record(&longer).unwrap().1, &payload[..]);
    }

    #[test]
    fn entry_with_an_unknown_kind_is_an_error(f in fields(), aux in 2..u64::MAX, payload in prop::collection::vec(any::<u8>(), 0..100)) {
        let f = RecordFields { kind: RecordKind::Entry, aux, ..f };
        let buf = record(f, &payload);
        prop_assert!(decode_header(&buf).is_err());
        prop_assert!(decode_record(&buf).is_err());
    }

    #[test]
    fn record_truncations_are_errors(f in fields(), payload in prop::collection::vec(any::<u8>(), 0..600)) {
        let buf = record(f, &payload);
        for len in 0..buf.len() {
            prop_assert!(decode_record(&buf[..len]).is_err(), "prefix of {} bytes decoded", len);
        }
    }

    #[test]
    fn record_single_bit_flips_are_errors(f in fields(), payload in prop::collection::vec(any::<u8>(), 0..600), bit in any::<prop::sample::Index>()) {
        let mut buf = record(f, &payload);
        let b = bit.index(buf.len() * 8);
        buf[b / 8] ^= 1 << (b % 8);
        prop_assert!(decode_record(&buf).is_err(), "flip of bit {} not detected", b);
    }

    #[test]
    fn record_mutations_never_panic(f in fields(), payload in prop::collection::vec(any::<u8>(), 0..600),
                                   edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let orig = record(f, &payload);
        let mut buf = orig.clone();
        for (at, v) in edits {
            let i = at.index(buf.len());
            buf[i] = v;
        }
        if let Ok((_, p)) = decode_record(&buf) {
            // Only if the edits restored the original bytes (a CRC32C collision is not
            // something a test can hit).
            prop_assert_eq!(&buf, &orig);
            prop_assert_eq!(p, &payload[..]);
        }
        let _ = decode_header(&buf);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        let _ = decode_header(&bytes);
        let _ = decode_record(&bytes);
        let _ = SegmentHeader::decode(&bytes);
        let _ = SealedIndex::decode(&bytes);
        if let Ok(h) = decode_header(&bytes) {
            let end = (RECORD_HEADER_BYTES + 16).min(bytes.len());
            let _ = decode_batch_payload(&h, &bytes[RECORD_HEADER_BYTES.min(bytes.len())..end], BLOCK_BYTES);
        }
        let _ = EngineMeta::decode(&String::from_utf8_lossy(&bytes));
    }

    /// A header that passes its own checks, followed by junk, must still not panic anywhere.
    #[test]
    fn valid_magic_with_random_fields_never_panics(f in fields(), junk in prop::collection::vec(any::<u8>(), 64..400), len in any::<u32>()) {
        let mut buf = record(f, &[]);
        buf.extend_from_slice(&junk);
        buf[8..12].copy_from_slice(&len.to_le_bytes());
        let _ = decode_record(&buf);
        if let Ok(h) = decode_header(&buf) {
            let _ = decode_batch_payload(&h, &junk[..16], BLOCK_BYTES);
        }
    }

    #[test]
    fn batch_payload_round_trip_and_bounds(blocks in 1u32..1000, count in 0u32..5000, junk in prop::collection::vec(any::<u8>(), 16)) {
        let p = tern_engine::format::BatchHeaderPayload { batch_bytes: blocks * BLOCK_BYTES as u32, record_count: count, reserved: 0 };
        let f = RecordFields { kind: RecordKind::BatchHeader, batch_seq: 1, group: 0, term: 0, index: 0, aux: 0 };
        let buf = record(f, bytemuck::bytes_of(&p));
        let (h, payload) = decode_record(&buf).unwrap();
        prop_assert_eq!(decode_batch_payload(&h, payload, BLOCK_BYTES).unwrap(), p);
        // Random payload bytes: an error or a payload within bounds, never a panic.
        if let Ok(q) = decode_batch_payload(&h, &junk, BLOCK_BYTES) {
            prop_assert!(q.batch_bytes > 0 && (q.batch_bytes as u64).is_multiple_of(BLOCK_BYTES));
        }
        // Wrong kind is refused.
        let f2 = RecordFields { kind: RecordKind::Entry, ..f };
        let buf2 = record(f2, bytemuck::bytes_of(&p));
        let (h2, p2) = decode_record(&buf2).unwrap();
        prop_assert!(decode_batch_payload(&h2, p2, BLOCK_BYTES).is_err());
    }

    #[test]
    fn segment_header_round_trip_and_damage(id in any::<u64>(), shard in any::<u32>(), mib in 1u64..1024, seq in any::<u64>(), ms in any::<u64>(), bit in 0usize..512) {
        let h = SegmentHeader::new(id, shard, mib << 20, seq, ms);
        let mut block = vec![0u8; BLOCK_BYTES as usize];
        h.encode_block(&mut block);
        prop_assert_eq!(SegmentHeader::decode(&block).unwrap(), h);
        for len in 0..64 {
            prop_assert!(SegmentHeader::decode(&block[..len]).is_err());
        }
        let mut bad = block.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(SegmentHeader::decode(&bad).is_err());
    }

    #[test]
    fn sealed_index_round_trip_and_damage(entries in index_entries(), pad in 0usize..5000, edit in any::<prop::sample::Index>(), v in 1u8..=255) {
        let idx = SealedIndex::new(9, 1 << 20, 1 << 31, 3, 70, entries);
        let bytes = idx.encode();
        let back = SealedIndex::decode(&bytes).unwrap();
        prop_assert_eq!(&back.entries, &idx.entries);
        // Zero padding after the entries (O_DIRECT writes whole blocks) is accepted.
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + pad, 0);
        prop_assert!(SealedIndex::decode(&padded).is_ok());
        for len in 0..bytes.len() {
            prop_assert!(SealedIndex::decode(&bytes[..len]).is_err());
        }
        // Any changed byte (header, entries or padding) is refused.
        let mut bad = padded.clone();
        let i = edit.index(bad.len());
        bad[i] ^= v;
        prop_assert!(SealedIndex::decode(&bad).is_err(), "edit at {} accepted", i);
    }

    #[test]
    fn engine_meta_round_trip_and_damage(shards in 1u32..=256, edit in any::<prop::sample::Index>(), v in 1u8..=127) {
        let m = EngineMeta { format_version: 1, shards };
        let text = m.encode();
        prop_assert_eq!(EngineMeta::decode(&text).unwrap(), m.clone());
        let mut bytes = text.clone().into_bytes();
        let i = edit.index(bytes.len());
        bytes[i] = (bytes[i] ^ v) & 0x7f;
        let edited = String::from_utf8(bytes).unwrap();
        if let Ok(back) = EngineMeta::decode(&edited) {
            // Only edits the checksum does not cover (trailing whitespace of the crc line).
            prop_assert_eq!(back, m);
        }
    }
}
