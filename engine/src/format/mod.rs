//! The on-disk format, mirrored from `docs/format.md`. Every decoder here checks length and
//! checksum before trusting a byte and returns a [`DecodeError`], never panics.
//!
//! All multi-byte integers are little-endian. The structs are `bytemuck::Pod` and cast in
//! place, so tern builds only for little-endian targets (checked below).

pub mod chain;
pub mod index;
pub mod record;
pub mod segment;

#[cfg(not(target_endian = "little"))]
compile_error!("tern's on-disk structs are cast in place and assume a little-endian host");

pub use index::{IndexEntry, IndexHeader, SealedIndex};
pub use record::{BatchHeaderPayload, EntryKind, RecordHeader, RecordKind};
pub use segment::SegmentHeader;

/// Format version written by this build. Readers accept exactly the versions listed in
/// `docs/format.md` (today: 1).
pub const FORMAT_VERSION: u16 = 1;

/// CRC32C (Castagnoli), hardware-accelerated where the CPU has it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Why a structure could not be decoded. Carries no location: callers add file and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("all zero (never written)")]
    Zero,
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported format version {0}")]
    BadVersion(u16),
    #[error("unknown record kind {0}")]
    BadKind(u16),
    #[error("length {len} out of bounds (max {max})")]
    BadLength { len: u64, max: u64 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("invalid field {field}: {why}")]
    BadField { field: &'static str, why: String },
}

/// Decodes the record of entry `group`/`index` (term `term`) read at its indexed offset
/// (`RECORD_HEADER_BYTES + payload_len` bytes), checking its checksum and that it is that
/// entry (a misdirected write or a stale index could put another record there; a
/// [`RecordKind::Repair`] copy is that entry too). Returns the
/// payload. The one identity check of a located entry, for the engine's reads and the CLI.
pub fn decode_entry_at(bytes: &[u8], group: u64, index: u64, term: u64) -> Result<&[u8], String> {
    let (h, payload) = record::decode_record(bytes).map_err(|e| e.to_string())?;
    let carries_entry = RecordKind::from_u16(h.kind).is_ok_and(RecordKind::carries_entry);
    if !carries_entry || h.group != group || h.index != index || h.term != term {
        return Err(format!(
            "record is kind {} group {} index {} term {}, expected entry {group}/{index} term {term}",
            h.kind, h.group, h.index, h.term
        ));
    }
    Ok(payload)
}

/// Bytes to read for a located record: its header and payload.
pub const fn record_bytes(payload_len: u32) -> usize {
    crate::constants::RECORD_HEADER_BYTES + payload_len as usize
}

/// Round `n` up to a multiple of `align` (a power of two).
pub const fn align_up(n: u64, align: u64) -> u64 {
    (n + align - 1) & !(align - 1)
}

pub const fn align_down(n: u64, align: u64) -> u64 {
    n & !(align - 1)
}
