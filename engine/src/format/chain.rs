//! The chain record `shard-<k>/CHAIN`: which segments a shard's log is made of, so that a
//! segment deleted, truncated or replaced after it was once durable is detected (a sealed
//! segment's seal only names its successor: it cannot tell that the newest or the oldest
//! segment is gone).
//!
//! ```text
//! file = { ChainHeader (64 bytes) | ChainLink (32 bytes) * link_count | zeros to a multiple of 4096 }
//! ```
//! The header's `crc32c` covers the header (crc field taken as zero) and all links. There is
//! one link per sealed segment from `first_segment` on, in id order: for `first_segment ..
//! last_segment - 1`, and for `last_segment` too when it is sealed (no successor started yet).

use bytemuck::{Pod, Zeroable};

use super::{crc32c, crc32c_append, DecodeError, FORMAT_VERSION};

pub const CHAIN_MAGIC: u32 = u32::from_le_bytes(*b"TRNC");
pub const CHAIN_HEADER_BYTES: usize = 64;
pub const CHAIN_LINK_BYTES: usize = 32;
/// Sealed segments one chain record can list. A shard holds at most a few thousand segments
/// (each at least 1 MiB and purged when dead); this bound keeps a damaged count from asking
/// for an absurd allocation (32 MiB of links at most).
pub const CHAIN_LINKS_MAX: u64 = 1 << 20;

/// Encoding: `{ u32 magic | u16 version | u16 reserved | u32 link_count | u32 crc32c |
///   u32 shard | u32 reserved | u64 first_segment | u64 last_segment |
///   u64 last_first_batch_seq | u64 reserved | u64 reserved }`
///
/// `last_first_batch_seq`
/// is the sequence of the first batch (the checkpoint) of `last_segment`, made durable before
/// this record was written; 0 when that segment had no batch yet.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ChainHeader {
    pub magic: u32,
    pub version: u16,
    pub reserved0: u16,
    pub link_count: u32,
    pub crc32c: u32,
    pub shard: u32,
    pub reserved1: u32,
    pub first_segment: u64,
    pub last_segment: u64,
    pub last_first_batch_seq: u64,
    pub reserved2: u64,
    pub reserved3: u64,
}

/// Encoding: `{ u64 segment_id | u64 first_batch_seq | u64 seal_batch_seq | u64 data_end }`
/// — what a sealed segment held when it was sealed: the sequences of its first batch and of
/// its seal batch, and the offset just past the seal batch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ChainLink {
    pub segment_id: u64,
    pub first_batch_seq: u64,
    pub seal_batch_seq: u64,
    pub data_end: u64,
}

const _: () = assert!(std::mem::size_of::<ChainHeader>() == CHAIN_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<ChainLink>() == CHAIN_LINK_BYTES);

/// A decoded, verified chain record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    pub shard: u32,
    pub first_segment: u64,
    pub last_segment: u64,
    pub last_first_batch_seq: u64,
    /// Invariant: ids are consecutive from `first_segment`, up to `last_segment - 1` or
    /// `last_segment`.
    pub links: Vec<ChainLink>,
}

impl ChainRecord {
    /// Encodes header and links, computing the checksum.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.links_consecutive(),
            "chain links out of order: {self:?}"
        );
        let mut header = ChainHeader {
            magic: CHAIN_MAGIC,
            version: FORMAT_VERSION,
            reserved0: 0,
            link_count: self.links.len() as u32,
            crc32c: 0,
            shard: self.shard,
            reserved1: 0,
            first_segment: self.first_segment,
            last_segment: self.last_segment,
            last_first_batch_seq: self.last_first_batch_seq,
            reserved2: 0,
            reserved3: 0,
        };
        let body: &[u8] = bytemuck::cast_slice(&self.links);
        header.crc32c = crc32c_append(crc32c(bytemuck::bytes_of(&header)), body);
        let mut out = Vec::with_capacity(CHAIN_HEADER_BYTES + body.len());
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(body);
        out
    }

    fn links_consecutive(&self) -> bool {
        let span = self.last_segment.wrapping_sub(self.first_segment);
        self.first_segment <= self.last_segment
            // The last segment has a link too when it was sealed and no successor was
            // started yet (a crash right after a seal, or a close).
            && (self.links.len() as u64 == span || self.links.len() as u64 == span + 1)
            && self
                .links
                .iter()
                .zip(self.first_segment..)
                .all(|(l, id)| l.segment_id == id)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < CHAIN_HEADER_BYTES {
            return Err(DecodeError::Truncated {
                need: CHAIN_HEADER_BYTES,
                have: bytes.len(),
            });
        }
        let header: ChainHeader = bytemuck::pod_read_unaligned(&bytes[..CHAIN_HEADER_BYTES]);
        if header.magic != CHAIN_MAGIC {
            return Err(DecodeError::BadMagic {
                found: header.magic,
            });
        }
        if header.version != FORMAT_VERSION {
            return Err(DecodeError::BadVersion(header.version));
        }
        let count = header.link_count as u64;
        if count > CHAIN_LINKS_MAX {
            return Err(DecodeError::BadLength {
                len: count,
                max: CHAIN_LINKS_MAX,
            });
        }
        let need = CHAIN_HEADER_BYTES + count as usize * CHAIN_LINK_BYTES;
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
                why: format!("non-zero bytes after link {count}"),
            });
        }
        let body = &bytes[CHAIN_HEADER_BYTES..need];
        let mut zeroed = header;
        zeroed.crc32c = 0;
        let computed = crc32c_append(crc32c(bytemuck::bytes_of(&zeroed)), body);
        if computed != header.crc32c {
            return Err(DecodeError::BadChecksum {
                stored: header.crc32c,
                computed,
            });
        }
        let record = ChainRecord {
            shard: header.shard,
            first_segment: header.first_segment,
            last_segment: header.last_segment,
            last_first_batch_seq: header.last_first_batch_seq,
            links: body
                .chunks_exact(CHAIN_LINK_BYTES)
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        };
        if !record.links_consecutive() {
            return Err(DecodeError::BadField {
                field: "links",
                why: format!(
                    "{} links do not name segments {}..{}",
                    count, header.first_segment, header.last_segment
                ),
            });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChainRecord {
        ChainRecord {
            shard: 1,
            first_segment: 3,
            last_segment: 6,
            last_first_batch_seq: 40,
            links: (3..6)
                .map(|id| ChainLink {
                    segment_id: id,
                    first_batch_seq: id * 10,
                    seal_batch_seq: id * 10 + 9,
                    data_end: 1 << 19,
                })
                .collect(),
        }
    }

    #[test]
    fn chain_round_trip() {
        let c = sample();
        assert_eq!(ChainRecord::decode(&c.encode()).unwrap(), c);
        let mut padded = c.encode();
        padded.resize(4096, 0);
        assert_eq!(ChainRecord::decode(&padded).unwrap(), c);
    }

    #[test]
    fn damaged_or_truncated_chain_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                ChainRecord::decode(&bad).is_err(),
                "flip at {i} not detected"
            );
        }
        for len in 0..bytes.len() {
            assert!(ChainRecord::decode(&bytes[..len]).is_err());
        }
        let mut padded = bytes.clone();
        padded.resize(4096, 0);
        padded[4000] = 1;
        assert!(ChainRecord::decode(&padded).is_err());
    }
}
