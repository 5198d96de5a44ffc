//! Every fixed limit of the engine, in one place. Names put the unit and the bound last.
//!
//! Tunable limits (batch size, delay, segment size, shard count) live in [`crate::config`];
//! this file holds what the on-disk format fixes and the compile-time checks that tie them.

/// Alignment of every write, and of every batch start. O_DIRECT needs the logical block size
/// (512 on the reference machine); 4096 also matches the page size and most devices' physical
/// sector, so one write never straddles a partly written physical sector of an earlier batch.
pub const BLOCK_BYTES: u64 = 4096;

/// Size of a record header (see `format::record`).
pub const RECORD_HEADER_BYTES: usize = 64;

/// The segment header occupies the whole first block of a segment file.
pub const SEGMENT_HEADER_BYTES: u64 = BLOCK_BYTES;

/// Size of the sealed-segment index header and of one index entry.
pub const INDEX_HEADER_BYTES: usize = 64;
pub const INDEX_ENTRY_BYTES: usize = 48;

/// Bytes of a batch header record's payload.
pub const BATCH_HEADER_PAYLOAD_BYTES: usize = 16;

/// Largest payload of one record. Bounded so that a corrupt length field can never make a
/// reader allocate or read past a segment; a record plus its batch header must fit one segment.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 64 << 20;

/// Largest number of records in one batch: bounds the per-batch bookkeeping and a decoder
/// that trusts a (checksummed) count.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;

/// Largest batch (header, records and padding): its size is a u32 field of the batch header.
pub const BATCH_BYTES_MAX: u64 = (u32::MAX as u64) & !(BLOCK_BYTES - 1);

/// Largest snapshot metadata a group may store. Every segment's checkpoint restates each
/// group's snapshot metadata, so it must stay small next to a segment; Raft's (a
/// configuration and a few indexes) takes a few hundred bytes.
pub const SNAPSHOT_META_BYTES_MAX: usize = 64 << 10;
/// Largest payload of a `GroupMeta` record (the layer above's per-group metadata).
pub const GROUP_META_BYTES_MAX: usize = 64 << 10;

/// Smallest and largest segment size a configuration may ask for.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
pub const SEGMENT_BYTES_MAX: u64 = 1 << 40;

/// Records of the index of one sealed segment: a segment of the maximum size filled with
/// the smallest records (header only, one block per batch at worst) stays under this.
pub const INDEX_ENTRIES_MAX: u64 = SEGMENT_BYTES_MAX / RECORD_HEADER_BYTES as u64;

/// Largest single read the recovery scanner issues; bounds its memory.
pub const SCAN_READ_BYTES_MAX: usize = 4 << 20;

/// Number of shards a data directory may be created with.
pub const SHARDS_MAX: u32 = 256;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(RECORD_HEADER_BYTES as u64 <= BLOCK_BYTES);
const _: () = assert!(
    (RECORD_HEADER_BYTES * 2 + BATCH_HEADER_PAYLOAD_BYTES) as u64 + RECORD_PAYLOAD_BYTES_MAX as u64
        <= SEGMENT_BYTES_MIN * 128
);
const _: () = assert!((SCAN_READ_BYTES_MAX as u64).is_multiple_of(BLOCK_BYTES));
