//! The segment header: the first block of every WAL segment file `<id:020>.wal`.

use bytemuck::{Pod, Zeroable};

use super::{crc32c, DecodeError, FORMAT_VERSION};
use crate::constants::{BLOCK_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES};

pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"TRNS");

/// Encoding (first 64 bytes of block 0; the rest of the block is zero):
/// `{ u32 magic | u16 version | u16 reserved | u32 block_bytes | u32 crc32c |
///    u64 segment_id | u32 shard | u32 reserved | u64 segment_bytes | u64 first_batch_seq |
///    u64 created_unix_ms | u64 reserved }`
///
/// `crc32c` covers the 64 bytes with the crc field taken as zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    pub magic: u32,
    pub version: u16,
    pub reserved0: u16,
    pub block_bytes: u32,
    pub crc32c: u32,
    pub segment_id: u64,
    pub shard: u32,
    pub reserved1: u32,
    /// Capacity the file was preallocated to; batches never extend past it.
    pub segment_bytes: u64,
    /// A lower bound: the shard's next batch sequence when the segment was prepared; no batch
    /// in it has a lower one (the first batch may have a higher one).
    pub first_batch_seq: u64,
    pub created_unix_ms: u64,
    pub reserved2: u64,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);
const _: () = assert!(std::mem::size_of::<SegmentHeader>() as u64 <= SEGMENT_HEADER_BYTES);

impl SegmentHeader {
    pub fn new(
        segment_id: u64,
        shard: u32,
        segment_bytes: u64,
        first_batch_seq: u64,
        now_ms: u64,
    ) -> Self {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: FORMAT_VERSION,
            reserved0: 0,
            block_bytes: BLOCK_BYTES as u32,
            crc32c: 0,
            segment_id,
            shard,
            reserved1: 0,
            segment_bytes,
            first_batch_seq,
            created_unix_ms: now_ms,
            reserved2: 0,
        };
        h.crc32c = crc32c(bytemuck::bytes_of(&h));
        h
    }

    /// Writes the header block (header + zeros) into `block`, which must be one header block.
    pub fn encode_block(&self, block: &mut [u8]) {
        assert_eq!(block.len() as u64, SEGMENT_HEADER_BYTES);
        block.fill(0);
        block[..64].copy_from_slice(bytemuck::bytes_of(self));
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 64 {
            return Err(DecodeError::Truncated {
                need: 64,
                have: bytes.len(),
            });
        }
        if bytes[..64].iter().all(|&b| b == 0) {
            return Err(DecodeError::Zero);
        }
        let h: SegmentHeader = bytemuck::pod_read_unaligned(&bytes[..64]);
        if h.magic != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic { found: h.magic });
        }
        let mut zeroed = h;
        zeroed.crc32c = 0;
        let computed = crc32c(bytemuck::bytes_of(&zeroed));
        if computed != h.crc32c {
            return Err(DecodeError::BadChecksum {
                stored: h.crc32c,
                computed,
            });
        }
        if h.version != FORMAT_VERSION {
            return Err(DecodeError::BadVersion(h.version));
        }
        if h.block_bytes as u64 != BLOCK_BYTES {
            return Err(DecodeError::BadField {
                field: "block_bytes",
                why: format!("{} (this build writes {BLOCK_BYTES})", h.block_bytes),
            });
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&h.segment_bytes)
            || !h.segment_bytes.is_multiple_of(BLOCK_BYTES)
        {
            return Err(DecodeError::BadField {
                field: "segment_bytes",
                why: format!("{} out of range or unaligned", h.segment_bytes),
            });
        }
        Ok(h)
    }
}

/// File name of segment `id`: zero-padded so that lexical order is numeric order.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.wal")
}

/// A segment being prepared (preallocated, zero-filled) off the append path.
pub fn prep_file_name(id: u64) -> String {
    format!("{id:020}.wal.prep")
}

pub fn index_file_name(id: u64) -> String {
    format!("{id:020}.idx")
}

/// Parses `<id:020>.wal` back into the id; anything else is not a segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub fn parse_index_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".idx")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader::new(42, 1, 64 << 20, 1000, 1);
        let mut block = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        h.encode_block(&mut block);
        assert_eq!(SegmentHeader::decode(&block).unwrap(), h);
        for i in 0..64 {
            let mut bad = block.clone();
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), Err(DecodeError::Zero));
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(17)), Some(17));
        assert_eq!(parse_index_file_name(&index_file_name(17)), Some(17));
        assert_eq!(parse_segment_file_name("17.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001x.wal"), None);
    }
}
