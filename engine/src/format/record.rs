//! Records and batches: the body of a WAL segment.
//!
//! A segment after its header block is a sequence of *batches*. A batch starts on a block
//! boundary, is written by one group-commit write and covered by one fdatasync:
//!
//! ```text
//! batch = { BatchHeader record | record * record_count | zero padding to the next block }
//! ```
//!
//! Because every batch starts on a fresh block, a later write never touches a block holding
//! an earlier (acknowledged) batch: acknowledged bytes are never rewritten in place.

use bytemuck::{Pod, Zeroable};

use super::{crc32c, crc32c_append, DecodeError, FORMAT_VERSION};
use crate::constants::{
    BATCH_HEADER_PAYLOAD_BYTES, BATCH_RECORDS_MAX, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX,
};

pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"TRNR");

/// Encoding (64 bytes, little-endian):
/// `{ u32 magic | u16 version | u16 kind | u32 payload_len | u32 crc32c |
///    u64 batch_seq | u64 group | u64 term | u64 index | u64 aux | u64 reserved }`
///
/// `crc32c` covers the 64 header bytes (with the crc field taken as zero) followed by the
/// payload. The meaning of `group`, `term`, `index` and `aux` depends on `kind`
/// (see [`RecordKind`] and docs/format.md).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    pub magic: u32,
    pub version: u16,
    pub kind: u16,
    pub payload_len: u32,
    pub crc32c: u32,
    pub batch_seq: u64,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
    pub reserved: u64,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER_BYTES);

/// What a record means. Values are part of the format: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum RecordKind {
    /// First record of every batch. `batch_seq` is the batch's sequence number, `aux` the
    /// highest batch sequence known durable (fsynced) when this batch was formed, payload a
    /// [`BatchHeaderPayload`].
    BatchHeader = 1,
    /// A Raft log entry: `group`, `term`, `index`, its [`EntryKind`] in `aux`; payload =
    /// entry data.
    Entry = 2,
    /// Suffix truncation: entries of `group` with index >= `index` are removed.
    Truncate = 3,
    /// Prefix compaction: entries of `group` with index < `index` are removed; `index`
    /// becomes the group's first index.
    Compact = 4,
    /// Raft hard state of `group`: `term`, vote in `aux` (0 = none), commit in `index`.
    HardState = 5,
    /// The group's log now starts after a snapshot at (`term`, `index`); payload is opaque
    /// snapshot metadata kept for the caller.
    SnapshotMeta = 6,
    /// The group is deleted: all its entries and state are dropped.
    DeleteGroup = 7,
    /// Last record of a sealed segment; `aux` = id of the next segment.
    Seal = 8,
    /// A corrected copy of entry `index` of `group` at `term`, fetched from a peer after the
    /// entry's own record failed its checksum: fields and payload as an [`RecordKind::Entry`]
    /// record. It supersedes the damaged record's location in the group table and changes
    /// nothing else (no truncation, no new last index); it is ignored when the group no longer
    /// holds that index at that term (the log moved on). The damaged bytes stay where they are:
    /// acknowledged bytes are never rewritten in place.
    Repair = 9,
    /// Opaque metadata the layer above keeps with `group` (the newest one wins; restated at
    /// each segment's start like the hard state): payload = the metadata. tern's partitions
    /// keep their offset-map checkpoint in it (src/node/offset_checkpoint.rs).
    GroupMeta = 10,
}

impl RecordKind {
    /// Whether the record carries a Raft entry (its own or a repaired copy of one).
    pub fn carries_entry(self) -> bool {
        matches!(self, RecordKind::Entry | RecordKind::Repair)
    }
}

impl RecordKind {
    pub fn from_u16(v: u16) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => RecordKind::BatchHeader,
            2 => RecordKind::Entry,
            3 => RecordKind::Truncate,
            4 => RecordKind::Compact,
            5 => RecordKind::HardState,
            6 => RecordKind::SnapshotMeta,
            7 => RecordKind::DeleteGroup,
            8 => RecordKind::Seal,
            9 => RecordKind::Repair,
            10 => RecordKind::GroupMeta,
            other => return Err(DecodeError::BadKind(other)),
        })
    }

    /// Whether the group table keeps the record's payload (the records whose payload is state
    /// rather than log data).
    pub fn payload_kept(self) -> bool {
        matches!(self, RecordKind::SnapshotMeta | RecordKind::GroupMeta)
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::BatchHeader => "batch",
            RecordKind::Entry => "entry",
            RecordKind::Truncate => "truncate",
            RecordKind::Compact => "compact",
            RecordKind::HardState => "hard-state",
            RecordKind::SnapshotMeta => "snapshot-meta",
            RecordKind::DeleteGroup => "delete-group",
            RecordKind::Seal => "seal",
            RecordKind::Repair => "repair",
            RecordKind::GroupMeta => "group-meta",
        }
    }
}

/// The Raft kind of an entry, stored in the `aux` field of its [`RecordKind::Entry`] record so
/// the group table knows which entries change the configuration without reading their
/// payloads. Values are part of the format: never renumber. Records written before the field
/// had a meaning carry 0, which reads as `Normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryKind {
    #[default]
    Normal,
    /// A membership change (Raft `ConfChange`/`ConfChangeV2`).
    ConfChange,
}

impl EntryKind {
    /// The value stored in the record's `aux` field.
    pub fn to_aux(self) -> u64 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    pub fn from_aux(aux: u64) -> Result<Self, DecodeError> {
        match aux {
            0 => Ok(EntryKind::Normal),
            1 => Ok(EntryKind::ConfChange),
            other => Err(DecodeError::BadField {
                field: "aux (entry kind)",
                why: format!("{other} is not an entry kind (0 normal, 1 conf change)"),
            }),
        }
    }
}

/// Payload of a [`RecordKind::BatchHeader`] record.
///
/// Encoding (16 bytes): `{ u32 batch_bytes | u32 record_count | u64 reserved }` where
/// `batch_bytes` is the whole batch including the header record and padding (a multiple of
/// the block size) and `record_count` counts the records after the batch header.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct BatchHeaderPayload {
    pub batch_bytes: u32,
    pub record_count: u32,
    pub reserved: u64,
}

const _: () = assert!(std::mem::size_of::<BatchHeaderPayload>() == BATCH_HEADER_PAYLOAD_BYTES);

/// Fields of a record, without magic, version and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFields {
    pub kind: RecordKind,
    pub batch_seq: u64,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
}

impl RecordHeader {
    /// Size of the record on disk: header plus payload (records are not padded individually).
    pub fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.payload_len as u64
    }

    pub fn kind(&self) -> RecordKind {
        // Only headers that passed `decode_header` exist outside this module's tests.
        RecordKind::from_u16(self.kind).unwrap_or(RecordKind::Entry)
    }
}

/// Builds the header of a record whose payload is `payload`, checksum included.
pub fn make_header(fields: RecordFields, payload: &[u8]) -> RecordHeader {
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX as usize,
        "payload over the record limit"
    );
    let mut header = unsealed_header(fields, payload.len());
    header.crc32c = crc32c_append(crc32c(bytemuck::bytes_of(&header)), payload);
    header
}

/// The header of a record with a `payload_len`-byte payload, its checksum field still zero.
fn unsealed_header(fields: RecordFields, payload_len: usize) -> RecordHeader {
    RecordHeader {
        magic: RECORD_MAGIC,
        version: FORMAT_VERSION,
        kind: fields.kind as u16,
        payload_len: payload_len as u32,
        crc32c: 0,
        batch_seq: fields.batch_seq,
        group: fields.group,
        term: fields.term,
        index: fields.index,
        aux: fields.aux,
        reserved: 0,
    }
}

/// Fills in the header of a record whose payload is already in place: `record` is exactly
/// `RECORD_HEADER_BYTES + payload length` bytes, the header first. The checksum is computed
/// in one pass over the contiguous header (crc field zero) and payload, the same bytes in the
/// same order as [`make_header`] checksums, without a second call for the payload.
pub fn seal_record_in_place(record: &mut [u8], fields: RecordFields) {
    let (head, payload) = record.split_at_mut(RECORD_HEADER_BYTES);
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX as usize,
        "payload over the record limit"
    );
    let header = unsealed_header(fields, payload.len());
    head.copy_from_slice(bytemuck::bytes_of(&header));
    let crc = crc32c(record);
    record[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Byte offset of `crc32c` in an encoded [`RecordHeader`].
const CRC_FIELD_OFFSET: usize = std::mem::offset_of!(RecordHeader, crc32c);
const _: () = assert!(CRC_FIELD_OFFSET == 12);

/// Encodes one record (header + payload) into `out`, which must be exactly
/// `RECORD_HEADER_BYTES + payload.len()` long. Returns the header as written.
pub fn encode_record(out: &mut [u8], fields: RecordFields, payload: &[u8]) -> RecordHeader {
    assert_eq!(out.len(), RECORD_HEADER_BYTES + payload.len());
    let header = make_header(fields, payload);
    out[..RECORD_HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    out[RECORD_HEADER_BYTES..].copy_from_slice(payload);
    header
}

/// Decodes and sanity-checks a record header from the first 64 bytes of `bytes`, without the
/// checksum (which needs the payload: see [`verify_record`]).
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, DecodeError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Truncated {
            need: RECORD_HEADER_BYTES,
            have: bytes.len(),
        });
    }
    let raw = &bytes[..RECORD_HEADER_BYTES];
    if raw.iter().all(|&b| b == 0) {
        return Err(DecodeError::Zero);
    }
    let header: RecordHeader = bytemuck::pod_read_unaligned(raw);
    if header.magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != FORMAT_VERSION {
        return Err(DecodeError::BadVersion(header.version));
    }
    if RecordKind::from_u16(header.kind)?.carries_entry() {
        EntryKind::from_aux(header.aux)?;
    }
    if header.payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::BadLength {
            len: header.payload_len as u64,
            max: RECORD_PAYLOAD_BYTES_MAX as u64,
        });
    }
    Ok(header)
}

/// Checks the checksum of a record given its decoded header and its payload bytes.
pub fn verify_record(header: &RecordHeader, payload: &[u8]) -> Result<(), DecodeError> {
    if payload.len() != header.payload_len as usize {
        return Err(DecodeError::Truncated {
            need: header.payload_len as usize,
            have: payload.len(),
        });
    }
    let mut zeroed = *header;
    zeroed.crc32c = 0;
    let computed = crc32c_append(crc32c(bytemuck::bytes_of(&zeroed)), payload);
    if computed != header.crc32c {
        return Err(DecodeError::BadChecksum {
            stored: header.crc32c,
            computed,
        });
    }
    Ok(())
}

/// Decodes a whole record from `bytes` (header at offset 0): header checks, length bound and
/// checksum. Returns the header and the payload slice.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let header = decode_header(bytes)?;
    let end = RECORD_HEADER_BYTES + header.payload_len as usize;
    if bytes.len() < end {
        return Err(DecodeError::Truncated {
            need: end,
            have: bytes.len(),
        });
    }
    let payload = &bytes[RECORD_HEADER_BYTES..end];
    verify_record(&header, payload)?;
    Ok((header, payload))
}

/// Decodes the payload of a verified batch header record and checks its bounds.
pub fn decode_batch_payload(
    header: &RecordHeader,
    payload: &[u8],
    block_bytes: u64,
) -> Result<BatchHeaderPayload, DecodeError> {
    if header.kind != RecordKind::BatchHeader as u16 {
        return Err(DecodeError::BadKind(header.kind));
    }
    if payload.len() != BATCH_HEADER_PAYLOAD_BYTES {
        return Err(DecodeError::BadLength {
            len: payload.len() as u64,
            max: BATCH_HEADER_PAYLOAD_BYTES as u64,
        });
    }
    let p: BatchHeaderPayload = bytemuck::pod_read_unaligned(payload);
    if !(p.batch_bytes as u64).is_multiple_of(block_bytes) || p.batch_bytes == 0 {
        return Err(DecodeError::BadField {
            field: "batch_bytes",
            why: format!(
                "{} is not a positive multiple of {block_bytes}",
                p.batch_bytes
            ),
        });
    }
    if p.record_count > BATCH_RECORDS_MAX {
        return Err(DecodeError::BadLength {
            len: p.record_count as u64,
            max: BATCH_RECORDS_MAX as u64,
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> RecordFields {
        RecordFields {
            kind: RecordKind::Entry,
            batch_seq: 7,
            group: 3,
            term: 2,
            index: 99,
            aux: 0,
        }
    }

    #[test]
    fn record_round_trip() {
        let payload = b"hello tern";
        let mut buf = vec![0u8; RECORD_HEADER_BYTES + payload.len()];
        let written = encode_record(&mut buf, fields(), payload);
        let (header, got) = decode_record(&buf).unwrap();
        assert_eq!(header, written);
        assert_eq!(got, payload);
        assert_eq!(header.kind(), RecordKind::Entry);
    }

    #[test]
    fn sealing_in_place_writes_what_encode_writes() {
        for len in [0usize, 1, 7, 64, 1000, 4096, 5000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut encoded = vec![0u8; RECORD_HEADER_BYTES + len];
            encode_record(&mut encoded, fields(), &payload);
            let mut sealed = vec![0xeeu8; RECORD_HEADER_BYTES + len];
            sealed[RECORD_HEADER_BYTES..].copy_from_slice(&payload);
            seal_record_in_place(&mut sealed, fields());
            assert_eq!(sealed, encoded, "payload of {len} bytes");
            assert!(decode_record(&sealed).is_ok());
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let payload = [0xabu8; 100];
        let mut buf = vec![0u8; RECORD_HEADER_BYTES + payload.len()];
        encode_record(&mut buf, fields(), &payload);
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            match decode_record(&damaged) {
                Err(_) => {}
                // A flip in payload_len can still decode only if the checksum matched, which
                // CRC32C rules out for single-bit errors.
                Ok(_) => panic!("bit {bit} flip not detected"),
            }
        }
    }

    #[test]
    fn zero_and_short_inputs_are_errors() {
        assert_eq!(decode_header(&[0u8; 64]), Err(DecodeError::Zero));
        assert!(matches!(
            decode_header(&[1u8; 10]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut buf = vec![0u8; RECORD_HEADER_BYTES + 10];
        encode_record(&mut buf, fields(), &[5u8; 10]);
        assert!(matches!(
            decode_record(&buf[..RECORD_HEADER_BYTES + 5]),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
