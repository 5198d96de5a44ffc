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
/// outside the CRC change. `batches` (what `parse_batches` read of `payload`) are updated to
/// match, so they describe the stamped payload without parsing it again (and checking its
/// CRC32C a second time).
pub fn stamp(payload: &mut [u8], batches: &mut [BatchInfo], base: u64, leader_epoch: i32) {
    let mut next = base;
    for b in batches {
        let at = b.position;
        payload[at..at + 8].copy_from_slice(&(next as i64).to_be_bytes());
        payload[at + 12..at + 16].copy_from_slice(&leader_epoch.to_be_bytes());
        b.base_offset = next as i64;
        b.leader_epoch = leader_epoch;
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

/// The idempotent-producer fields of a batch header. [`ProducerStamp::NONE`] is a producer
/// without idempotence (Kafka's `-1` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record; the records take consecutive numbers.
    pub base_sequence: i32,
}

impl ProducerStamp {
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Builds one uncompressed v2 batch of `values` (no keys, no headers): what tern's own
/// client and tests produce. Timestamps are `timestamp_ms` for every record.
pub fn build_batch(values: &[&[u8]], timestamp_ms: i64) -> Vec<u8> {
    build_batch_for(values, timestamp_ms, ProducerStamp::NONE)
}

/// [`build_batch`] with the producer id, epoch and base sequence of an idempotent producer.
pub fn build_batch_for(values: &[&[u8]], timestamp_ms: i64, producer: ProducerStamp) -> Vec<u8> {
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
    b.extend_from_slice(&producer.producer_id.to_be_bytes());
    b.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    b.extend_from_slice(&producer.base_sequence.to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_COVERED_FROM..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The length of the longest prefix of `payload` made of whole batches, judged by the length
/// fields only (the batches themselves are checked by [`parse_batches`]). A fetch response may
/// end in a partial batch when the server cut it at the byte limit; a reader keeps the prefix
/// and asks again from the next offset.
pub fn whole_batches_len(payload: &[u8]) -> usize {
    let mut pos = 0usize;
    while payload.len() - pos >= LOG_OVERHEAD_BYTES {
        let batch_length = be_i32(payload, pos + 8);
        if batch_length < 0 {
            break;
        }
        let bytes = LOG_OVERHEAD_BYTES + batch_length as usize;
        if payload.len() - pos < bytes {
            break;
        }
        pos += bytes;
    }
    pos
}

/// One record of a batch as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// `base_offset` of the batch + the record's offset delta.
    pub offset: i64,
    /// `base_timestamp` of the batch + the record's timestamp delta.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Decodes the records of one uncompressed v2 batch (`batch` starts at the batch; `info` is
/// its [`parse_batches`] entry). Checks every length; a compressed batch is an error, since
/// tern's client supports no compression codec.
pub fn batch_records(batch: &[u8], info: &BatchInfo) -> Result<Vec<RecordView>, RecordsError> {
    let at = info.position;
    let invalid = |what| RecordsError::Invalid { at, what };
    if batch.len() < info.bytes || info.bytes < BATCH_HEADER_BYTES {
        return Err(invalid("batch slice shorter than the batch"));
    }
    if info.attributes & ATTRIBUTE_COMPRESSION_MASK != 0 {
        return Err(invalid(
            "compressed batches are not decoded by tern's client",
        ));
    }
    let mut cur = &batch[BATCH_HEADER_BYTES..info.bytes];
    // Bounded by the batch bytes: every record takes at least one byte.
    let mut out = Vec::new();
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
        let timestamp_delta = get_varint(&mut rec).ok_or(invalid("bad timestamp delta"))?;
        let offset_delta = get_varint(&mut rec).ok_or(invalid("bad offset delta"))?;
        let key = get_bytes_field(&mut rec).ok_or(invalid("key past the record"))?;
        let value = get_bytes_field(&mut rec).ok_or(invalid("value past the record"))?;
        out.push(RecordView {
            offset: info.base_offset.wrapping_add(offset_delta),
            timestamp_ms: info.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
        });
    }
    Ok(out)
}

/// Decodes the values of an uncompressed v2 batch built like [`build_batch`] (or by any Kafka
/// client without compression): what tern's own client reads back. Checks every length; a
/// null value reads as empty.
pub fn batch_values(batch: &[u8], info: &BatchInfo) -> Result<Vec<Vec<u8>>, RecordsError> {
    Ok(batch_records(batch, info)?
        .into_iter()
        .map(|r| r.value.unwrap_or_default())
        .collect())
}

/// A varint length followed by that many bytes; `-1` is null.
fn get_bytes_field(cur: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let len = get_varint(cur)?;
    if len < 0 {
        return Some(None);
    }
    if len as usize > cur.len() {
        return None;
    }
    let (field, rest) = cur.split_at(len as usize);
    *cur = rest;
    Some(Some(field.to_vec()))
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
        let mut batches = parse_batches(&a).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(record_count(&batches), 4);
        stamp(&mut a, &mut batches, 40, 7);
        let again = parse_batches(&a).unwrap();
        assert_eq!(
            batches, again,
            "stamp updates the infos as a new parse reads them"
        );
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
    fn producer_stamp_and_offsets_read_back() {
        let stamp_in = ProducerStamp {
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let mut a = build_batch_for(&[b"a", b"bb"], 5000, stamp_in);
        let mut infos = parse_batches(&a).unwrap();
        assert_eq!(infos[0].producer_id, 7);
        assert_eq!(infos[0].producer_epoch, 2);
        assert_eq!(infos[0].base_sequence, 40);
        stamp(&mut a, &mut infos, 100, 1);
        let infos = parse_batches(&a).unwrap();
        let records = batch_records(&a, &infos[0]).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].offset, 101);
        assert_eq!(records[1].timestamp_ms, 5000);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value.as_deref(), Some(b"bb".as_slice()));
    }

    #[test]
    fn whole_batches_len_stops_before_a_partial_batch() {
        let one = build_batch(&[b"x"], 0);
        let mut two = one.clone();
        two.extend_from_slice(&build_batch(&[b"y", b"z"], 0));
        assert_eq!(whole_batches_len(&two), two.len());
        for cut in one.len()..two.len() {
            assert_eq!(whole_batches_len(&two[..cut]), one.len(), "cut at {cut}");
        }
        assert_eq!(whole_batches_len(&two[..5]), 0);
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
