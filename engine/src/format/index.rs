//! The sealed-segment index `<id:020>.idx`: every record of a sealed segment without its
//! payload, so recovery can rebuild group state without reading segment data.
//!
//! ```text
//! file = { IndexHeader (64 bytes) | IndexEntry (48 bytes) * entry_count }
//! ```
//! The header's `crc32c` covers the header (crc field taken as zero) and all entries. Batch
//! header records are not indexed; every other record is, in segment order.

use bytemuck::{Pod, Zeroable};

use super::record::RecordKind;
use super::{crc32c, crc32c_append, DecodeError, FORMAT_VERSION};
use crate::constants::{INDEX_ENTRIES_MAX, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};

pub const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"TRNI");

/// Encoding: `{ u32 magic | u16 version | u16 reserved | u32 entry_count | u32 crc32c |
///   u64 segment_id | u64 data_end | u64 first_batch_seq | u64 last_batch_seq |
///   u64 segment_bytes | u64 reserved }`
///
/// `data_end` is the offset just past the segment's last batch (the one holding the seal).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct IndexHeader {
    pub magic: u32,
    pub version: u16,
    pub reserved0: u16,
    pub entry_count: u32,
    pub crc32c: u32,
    pub segment_id: u64,
    pub data_end: u64,
    pub first_batch_seq: u64,
    pub last_batch_seq: u64,
    pub segment_bytes: u64,
    pub reserved1: u64,
}

/// Encoding: `{ u16 kind | u16 reserved | u32 payload_len | u64 offset | u64 group |
///   u64 term | u64 index | u64 aux }` — `offset` is where the record header starts.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct IndexEntry {
    pub kind: u16,
    pub reserved: u16,
    pub payload_len: u32,
    pub offset: u64,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
}

const _: () = assert!(std::mem::size_of::<IndexHeader>() == INDEX_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<IndexEntry>() == INDEX_ENTRY_BYTES);

/// A decoded, verified index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIndex {
    pub header: IndexHeader,
    pub entries: Vec<IndexEntry>,
}

impl SealedIndex {
    pub fn new(
        segment_id: u64,
        segment_bytes: u64,
        data_end: u64,
        first_batch_seq: u64,
        last_batch_seq: u64,
        entries: Vec<IndexEntry>,
    ) -> Self {
        let header = IndexHeader {
            magic: INDEX_MAGIC,
            version: FORMAT_VERSION,
            reserved0: 0,
            entry_count: entries.len() as u32,
            crc32c: 0,
            segment_id,
            data_end,
            first_batch_seq,
            last_batch_seq,
            segment_bytes,
            reserved1: 0,
        };
        SealedIndex { header, entries }
    }

    pub fn encoded_len(&self) -> usize {
        INDEX_HEADER_BYTES + self.entries.len() * INDEX_ENTRY_BYTES
    }

    /// Encodes header and entries, computing the checksum.
    pub fn encode(&self) -> Vec<u8> {
        assert!((self.entries.len() as u64) <= INDEX_ENTRIES_MAX);
        let mut header = self.header;
        header.entry_count = self.entries.len() as u32;
        header.crc32c = 0;
        let body: &[u8] = bytemuck::cast_slice(&self.entries);
        header.crc32c = crc32c_append(crc32c(bytemuck::bytes_of(&header)), body);
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < INDEX_HEADER_BYTES {
            return Err(DecodeError::Truncated {
                need: INDEX_HEADER_BYTES,
                have: bytes.len(),
            });
        }
        let header: IndexHeader = bytemuck::pod_read_unaligned(&bytes[..INDEX_HEADER_BYTES]);
        if header.magic != INDEX_MAGIC {
            return Err(DecodeError::BadMagic {
                found: header.magic,
            });
        }
        if header.version != FORMAT_VERSION {
            return Err(DecodeError::BadVersion(header.version));
        }
        let count = header.entry_count as u64;
        if count > INDEX_ENTRIES_MAX {
            return Err(DecodeError::BadLength {
                len: count,
                max: INDEX_ENTRIES_MAX,
            });
        }
        let need = INDEX_HEADER_BYTES + count as usize * INDEX_ENTRY_BYTES;
        // O_DIRECT writes whole blocks, so the file may end in zero padding.
        if bytes.len() < need {
            return Err(DecodeError::Truncated {
                need,
                have: bytes.len(),
            });
        }
        if bytes[need..].iter().any(|&b| b != 0) {
            return Err(DecodeError::BadField {
                field: "padding",
                why: format!("non-zero bytes after entry {count}"),
            });
        }
        let body = &bytes[INDEX_HEADER_BYTES..need];
        let mut zeroed = header;
        zeroed.crc32c = 0;
        let computed = crc32c_append(crc32c(bytemuck::bytes_of(&zeroed)), body);
        if computed != header.crc32c {
            return Err(DecodeError::BadChecksum {
                stored: header.crc32c,
                computed,
            });
        }
        let entries: Vec<IndexEntry> = body
            .chunks_exact(INDEX_ENTRY_BYTES)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        for e in &entries {
            let kind = RecordKind::from_u16(e.kind)?;
            if kind.carries_entry() {
                super::EntryKind::from_aux(e.aux)?;
            }
            if kind == RecordKind::BatchHeader {
                return Err(DecodeError::BadField {
                    field: "kind",
                    why: "batch headers are not indexed".into(),
                });
            }
            if e.offset >= header.data_end {
                return Err(DecodeError::BadField {
                    field: "offset",
                    why: format!("{} past data_end {}", e.offset, header.data_end),
                });
            }
        }
        Ok(SealedIndex { header, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedIndex {
        let entries = (0..10)
            .map(|i| IndexEntry {
                kind: RecordKind::Entry as u16,
                reserved: 0,
                payload_len: 100,
                offset: 4096 + i * 200,
                group: 1,
                term: 1,
                index: i + 1,
                aux: 0,
            })
            .collect();
        SealedIndex::new(3, 1 << 20, 1 << 19, 10, 20, entries)
    }

    #[test]
    fn index_round_trip() {
        let idx = sample();
        let bytes = idx.encode();
        let back = SealedIndex::decode(&bytes).unwrap();
        assert_eq!(back.entries, idx.entries);
        assert_eq!(back.header.segment_id, 3);
    }

    #[test]
    fn damaged_or_truncated_index_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                SealedIndex::decode(&bad).is_err(),
                "flip at {i} not detected"
            );
        }
        for len in 0..bytes.len() {
            assert!(SealedIndex::decode(&bytes[..len]).is_err());
        }
        let mut padded = bytes.clone();
        padded.resize(8192, 0);
        assert!(SealedIndex::decode(&padded).is_ok());
        padded[8000] = 1;
        assert!(SealedIndex::decode(&padded).is_err());
    }
}
