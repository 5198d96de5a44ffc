//! The payload of a partition's data entry: one or more Kafka record batches (magic v2),
//! stored verbatim as the client sent them. Only the fields tern needs are read, and each
//! batch's CRC32C is checked before anything in it is trusted.
//!
//! Encoding of one batch (Kafka's, big-endian; byte offsets on the left):
//! ```text
//!  0 i64 base_offset       | 8 i32 batch_length (bytes after this field)
//! 12 i32 partition_leader_epoch | 16 i8 magic (2) | 17 u32 crc32c (covers 21..end)
//! 21 i16 attributes        | 23 i32 last_offset_delta | 27 i64 base_timestamp
//! 35 i64 max_timestamp     | 43 i64 producer_id | 51 i16 producer_epoch
//! 53 i32 base_sequence     | 57 i32 records_count | 61 records...
//! ```
//! `base_offset` and `partition_leader_epoch` are outside the CRC: the leader stamps them
//! (the offset a pure function of the log prefix, the epoch the Raft term) without touching
//! the client's bytes otherwise, and followers check the stamp.

/// Fixed header bytes before the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of `base_offset` + `batch_length`, which `batch_length` does not count.
const LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_V2: u8 = 2;
const CRC_OFFSET: usize = 17;
const CRC_COVERED_FROM: usize = 21;

/// Why a produced payload is refused (answered CORRUPT_MESSAGE / INVALID_RECORD; nothing is
/// stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch truncated at byte {at}: {needed} bytes needed, {have} present")]
    Truncated {
        at: usize,
        needed: usize,
        have: usize,
    },
    #[error("record batch at byte {at} has magic {magic}; only v2 batches are accepted")]
    Magic { at: usize, magic: i8 },
    #[error(
        "record batch at byte {at} fails its CRC32C (stored {stored:#x}, computed {computed:#x})"
    )]
    Crc {
        at: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch at byte {at}: {what}")]
    Invalid { at: usize, what: &'static str },
    #[error("no record batch in the payload")]
    Empty,
}

/// What tern reads of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the payload.
    pub position: usize,
    pub bytes: usize,
    pub base_offset: i64,
    pub leader_epoch: i32,
    /// Records in the batch: `last_offset_delta + 1`.
    pub record_count: u64,
    /// Bits 0-2 compression codec, 3 timestamp type, 4 transactional, 5 control.
    pub attributes: i16,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Walks every batch of `payload`, checking lengths, magic and CRC32C before reading a field.
pub fn parse_batches(payload: &[u8]) -> Result<Vec<BatchInfo>, RecordsError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < payload.len() {
        let rest = &payload[pos..];
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(RecordsError::Truncated {
                at: pos,
                needed: BATCH_HEADER_BYTES,
                have: rest.len(),
            });
        }
        let magic = rest[16] as i8;
        if magic != MAGIC_V2 as i8 {
            return Err(RecordsError::Magic { at: pos, magic });
        }
        let batch_length = be_i32(rest, 8);
        if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Err(RecordsError::Invalid {
                at: pos,
                what: "batch_length shorter than the batch header",
            });
        }
        let bytes = LOG_OVERHEAD_BYTES + batch_length as usize;
        if rest.len() < bytes {
            return Err(RecordsError::Truncated {
                at: pos,
                needed: bytes,
                have: rest.len(),
            });
        }
        let batch = &rest[..bytes];
        let stored = u32::from_be_bytes([
            batch[CRC_OFFSET],
            batch[CRC_OFFSET + 1],
            batch[CRC_OFFSET + 2],
            batch[CRC_OFFSET + 3],
        ]);
        let computed = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
        if stored != computed {
            return Err(RecordsError::Crc {
                at: pos,
                stored,
                computed,
            });
        }
        let last_offset_delta = be_i32(batch, 23);
        if last_offset_delta < 0 {
            return Err(RecordsError::Invalid {
                at: pos,
                what: "negative last_offset_delta",
            });
        }
        let records_count = be_i32(batch, 57);
        if records_count < 0 || records_count as i64 > last_offset_delta as i64 + 1 {
            return Err(RecordsError::Invalid {
                at: pos,
                what: "records_count does not fit last_offset_delta",
            });
        }
        out.push(BatchInfo {
            position: pos,
            bytes,
            base_offset: be_i64(batch, 0),
            leader_epoch: be_i32(batch, 12),
            record_count: last_offset_delta as u64 + 1,
            attributes: be_i16(batch, 21),
            base_timestamp: be_i64(batch, 27),
            max_timestamp: be_i64(batch, 35),
            producer_id: be_i64(batch, 43),
            producer_epoch: be_i16(batch, 51),
            base_sequence: be_i32(batch, 53),
        });
        pos += bytes;
    }
    if out.is_empty() {
        return Err(RecordsError::Empty);
    }
    Ok(out)
}

/// Attribute bits tern looks at.
pub const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x7;
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Records in the whole payload.
pub fn record_count(batches: &[BatchInfo]) -> u64 {
    batches.iter().map(|b| b.record_count).sum()
}

/// Stamps each batch's `base_offset` (consecutive from `base`) and leader epoch. Only bytes
/// outside the CRC change.
pub fn stamp(payload: &mut [u8], batches: &[BatchInfo], base: u64, leader_epoch: i32) {
    let mut next = base;
    for b in batches {
        let at = b.position;
        payload[at..at + 8].copy_from_slice(&(next as i64).to_be_bytes());
        payload[at + 12..at + 16].copy_from_slice(&leader_epoch.to_be_bytes());
        next += b.record_count;
    }
}

/// Checks that the payload's stamped offsets start at `base` and are consecutive: what a
/// follower verifies of every data entry its leader sent.
pub fn check_stamp(batches: &[BatchInfo], base: u64) -> Result<(), (u64, i64)> {
    let mut next = base;
    for b in batches {
        if b.base_offset != next as i64 {
            return Err((next, b.base_offset));
        }
        next += b.record_count;
    }
    Ok(())
}

/// Builds one uncompressed v2 batch of `values` (no keys, no headers): what tern's own
/// client and tests produce. Timestamps are `timestamp_ms` for every record.
pub fn build_batch(values: &[&[u8]], timestamp_ms: i64) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        put_varint(&mut body, -1); // key length: null
        put_varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
        put_varint(&mut body, 0); // headers
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(MAGIC_V2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, create time
    let last_delta = values.len().saturating_sub(1) as i32;
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_COVERED_FROM..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Decodes the values of an uncompressed v2 batch built like [`build_batch`] (or by any Kafka
/// client without compression): what tern's own client reads back. Checks every length.
pub fn batch_values(batch: &[u8], info: &BatchInfo) -> Result<Vec<Vec<u8>>, RecordsError> {
    let at = info.position;
    let attributes = be_i16(batch, 21);
    if attributes & 0x7 != 0 {
        return Err(RecordsError::Invalid {
            at,
            what: "compressed batches are not decoded by tern's client",
        });
    }
    let mut cur = &batch[BATCH_HEADER_BYTES..info.bytes];
    let mut out = Vec::new();
    let invalid = |what| RecordsError::Invalid { at, what };
    while !cur.is_empty() {
        let len = get_varint(&mut cur).ok_or(invalid("bad record length"))?;
        if len < 0 || len as usize > cur.len() {
            return Err(invalid("record length past the batch"));
        }
        let (mut rec, rest) = cur.split_at(len as usize);
        cur = rest;
        if rec.is_empty() {
            return Err(invalid("empty record"));
        }
        rec = &rec[1..]; // attributes
        get_varint(&mut rec).ok_or(invalid("bad timestamp delta"))?;
        get_varint(&mut rec).ok_or(invalid("bad offset delta"))?;
        let key_len = get_varint(&mut rec).ok_or(invalid("bad key length"))?;
        if key_len > 0 {
            if key_len as usize > rec.len() {
                return Err(invalid("key past the record"));
            }
            rec = &rec[key_len as usize..];
        }
        let value_len = get_varint(&mut rec).ok_or(invalid("bad value length"))?;
        if value_len < 0 {
            out.push(Vec::new());
            continue;
        }
        if value_len as usize > rec.len() {
            return Err(invalid("value past the record"));
        }
        out.push(rec[..value_len as usize].to_vec());
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varint(cur: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = cur.split_first()?;
        *cur = rest;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_parse_stamp_round_trip() {
        let mut a = build_batch(&[b"one", b"two", b"three"], 1000);
        let b = build_batch(&[b"four"], 1001);
        a.extend_from_slice(&b);
        let batches = parse_batches(&a).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(record_count(&batches), 4);
        stamp(&mut a, &batches, 40, 7);
        let again = parse_batches(&a).unwrap();
        assert_eq!(again[0].base_offset, 40);
        assert_eq!(again[1].base_offset, 43);
        assert_eq!(again[1].leader_epoch, 7);
        assert!(check_stamp(&again, 40).is_ok());
        assert_eq!(check_stamp(&again, 41), Err((41, 40)));
        let values = batch_values(&a[..again[0].bytes], &again[0]).unwrap();
        assert_eq!(
            values,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let good = build_batch(&[b"x".as_slice(); 5], 0);
        assert_eq!(parse_batches(&[]), Err(RecordsError::Empty));
        for cut in 0..good.len() {
            assert!(parse_batches(&good[..cut]).is_err(), "cut at {cut}");
        }
        for byte in 16..good.len() {
            let mut bad = good.clone();
            bad[byte] ^= 0x40;
            assert!(parse_batches(&bad).is_err(), "flip at {byte}");
        }
    }
}
