//! Engine configuration with documented defaults, checked at start-up.

use std::time::Duration;

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_PAYLOAD_BYTES, BLOCK_BYTES, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SHARDS_MAX,
};
use crate::error::{Error, Result};

/// What recovery does when it meets damaged bytes (see the decision table in `recovery.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Default. A torn tail (an unacknowledged last batch) is truncated and reported; any
    /// other damage stops start-up with an error naming file, offset, group and index.
    #[default]
    TolerateTail,
    /// Any damage, even a torn tail, stops start-up. For verification.
    Absolute,
    /// Explicit opt-in: damaged regions are copied to `quarantine/` and skipped; groups whose
    /// log would have a hole are cut at the hole; every loss is reported.
    TolerateAny,
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tolerate-tail" => Ok(RecoveryMode::TolerateTail),
            "absolute" => Ok(RecoveryMode::Absolute),
            "tolerate-any" => Ok(RecoveryMode::TolerateAny),
            other => Err(format!(
                "unknown recovery mode {other:?} (expected tolerate-tail, absolute or tolerate-any)"
            )),
        }
    }
}

impl RecoveryMode {
    pub fn name(self) -> &'static str {
        match self {
            RecoveryMode::TolerateTail => "tolerate-tail",
            RecoveryMode::Absolute => "absolute",
            RecoveryMode::TolerateAny => "tolerate-any",
        }
    }
}

/// How a batch is made durable (docs/ARCHITECTURE.md, "The engine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalSync {
    /// Default. Each batch is one O_DIRECT write, then one fdatasync of the segment.
    #[default]
    Fdatasync,
    /// Each batch is one O_DIRECT write through an `O_DSYNC` handle of the segment: the
    /// write completes once its range (and the metadata needed to read it) is durable, the
    /// same guarantee as write + fdatasync for that range, in one I/O instead of two (a FUA
    /// write, or a write plus a flush inside the block layer). It spares the io_uring
    /// hand-off of every fdatasync to a worker thread; the gain depends on the device.
    Dsync,
}

impl std::str::FromStr for WalSync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fdatasync" => Ok(WalSync::Fdatasync),
            "dsync" => Ok(WalSync::Dsync),
            other => Err(format!(
                "unknown WAL sync mode {other:?} (expected fdatasync or dsync)"
            )),
        }
    }
}

impl WalSync {
    pub fn name(self) -> &'static str {
        match self {
            WalSync::Fdatasync => "fdatasync",
            WalSync::Dsync => "dsync",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Segment file size; segments are preallocated to it and rolled when full.
    /// Default 64 MiB: big enough that rolling is rare, small enough that recovery scans at
    /// most one open segment quickly.
    pub segment_bytes: u64,
    /// Upper bound of one group-commit batch (one write + one fdatasync). Default 2 MiB: the
    /// device sees megabyte writes under load, as a deep fio queue does.
    pub batch_bytes_max: u64,
    /// How long the writer may wait for a batch to fill before writing it. Default 0: write
    /// as soon as the previous write is done; batches still form while the previous fsync is
    /// in flight, which is what bounds latency under light load.
    pub batch_delay_max: Duration,
    /// Batches written or being written and not yet durable, at most. Each runs its own
    /// write then fdatasync; they are acknowledged in sequence order. Default 2: the next
    /// batch's write overlaps the previous batch's fdatasync (and may start before that
    /// batch's write ends), which keeps the device busy without splitting the in-flight data
    /// into batches too small to amortize an fdatasync.
    pub batches_inflight_max: usize,
    /// Bytes of appends accepted but not yet written; appenders wait beyond it (backpressure).
    /// Default 4 x batch_bytes_max.
    pub pending_bytes_max: u64,
    pub recovery_mode: RecoveryMode,
    /// Write a checksummed index when a segment is sealed. Default true; turning it off makes
    /// recovery scan every segment (used by the recovery benchmark's scan run).
    pub write_sealed_index: bool,
    /// Use sealed-segment indexes at recovery (default true).
    pub use_sealed_index: bool,
    /// Zero-fill new segments (off the append path, as a spare prepared ahead of time)
    /// instead of only fallocating them, while batches are small. Default true. On ext4 an
    /// O_DIRECT write into a fallocated (unwritten) extent makes the next fdatasync commit the
    /// journal to convert the extent (about a millisecond here); on written extents fdatasync
    /// is only a device flush (tens of µs). Zero-filling costs as many device writes as the
    /// data itself, so it pays while batches are small and the commit dominates.
    pub prefill_segments: bool,
    /// Prefill the next segment only while the average batch of the segment just sealed is
    /// below this. Default 256 KiB: the commit (~0.5 ms) costs about as much as zero-filling
    /// a megabyte, so larger batches amortize it better than prefilling would.
    pub prefill_batch_bytes_max: u64,
    /// How each batch is made durable. Default [`WalSync::Fdatasync`].
    pub sync: WalSync,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            batch_bytes_max: 2 << 20,
            batch_delay_max: Duration::ZERO,
            batches_inflight_max: 2,
            pending_bytes_max: 8 << 20,
            recovery_mode: RecoveryMode::TolerateTail,
            write_sealed_index: true,
            use_sealed_index: true,
            prefill_segments: true,
            prefill_batch_bytes_max: 256 << 10,
            sync: WalSync::Fdatasync,
        }
    }
}

impl WalConfig {
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(BLOCK_BYTES)
        {
            return Err(Error::Config {
                key: "segment_bytes",
                why: format!(
                    "{} must be a multiple of {BLOCK_BYTES} between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            });
        }
        if self.batch_bytes_max < BLOCK_BYTES || self.batch_bytes_max > self.request_bytes_max() {
            return Err(Error::Config {
                key: "batch_bytes_max",
                why: format!(
                    "{} must be between {BLOCK_BYTES} and a quarter of segment_bytes, at most {BATCH_BYTES_MAX} ({})",
                    self.batch_bytes_max,
                    self.request_bytes_max()
                ),
            });
        }
        if !(1..=64).contains(&self.batches_inflight_max) {
            return Err(Error::Config {
                key: "batches_inflight_max",
                why: format!("{} must be between 1 and 64", self.batches_inflight_max),
            });
        }
        if self.pending_bytes_max < self.batch_bytes_max {
            return Err(Error::Config {
                key: "pending_bytes_max",
                why: format!(
                    "{} must be at least batch_bytes_max",
                    self.pending_bytes_max
                ),
            });
        }
        if self.batch_delay_max > Duration::from_millis(100) {
            return Err(Error::Config {
                key: "batch_delay_max",
                why: format!("{:?} is over the 100 ms bound", self.batch_delay_max),
            });
        }
        Ok(())
    }

    /// Largest request (one write batch or append: its records, batch header and padding to
    /// the block) this configuration accepts. A request is written as one batch inside one
    /// segment, so it must fit a fresh segment beside the segment header, the checkpoint that
    /// opens it and the seal block: a quarter of a segment (the bound `batch_bytes_max` has
    /// too), and never more than the batch header's u32 size field can say.
    pub fn request_bytes_max(&self) -> u64 {
        (self.segment_bytes / 4).min(BATCH_BYTES_MAX)
    }

    /// Largest payload of one record with this configuration.
    pub fn payload_bytes_max(&self) -> u64 {
        (self.request_bytes_max()
            - 2 * RECORD_HEADER_BYTES as u64
            - BATCH_HEADER_PAYLOAD_BYTES as u64)
            .min(RECORD_PAYLOAD_BYTES_MAX as u64)
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shards (one pinned executor each). Default: the number of CPUs. Fixed when
    /// the data directory is created: placement of groups depends on it.
    pub shards: u32,
    /// Pin shard k to the k-th CPU of the process's affinity mask, modulo its size (default
    /// true).
    pub pin_cpus: bool,
    /// Memory glommio reserves per shard for I/O buffers and registers with io_uring. Batch
    /// buffers come from this arena: no page faults or unmapping per batch, and registered
    /// buffers spare the kernel pinning pages on every write. Default 32 MiB (room for the
    /// pending batches plus the one being written). Registration needs `ulimit -l` (or root);
    /// when it fails glommio logs a warning and still uses the arena, unregistered; buffers
    /// beyond the arena fall back to ordinary aligned memory.
    pub io_memory_bytes: usize,
    pub wal: WalConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            pin_cpus: true,
            io_memory_bytes: 32 << 20,
            wal: WalConfig::default(),
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(Error::Config {
                key: "shards",
                why: format!("{} must be between 1 and {SHARDS_MAX}", self.shards),
            });
        }
        self.wal.validate()
    }
}

/// The shard that owns `group`: a stable function of the group id and the shard count, the
/// same on every node (a 64-bit mix, then modulo, so consecutive ids spread evenly).
pub fn shard_for_group(group: u64, shards: u32) -> u32 {
    let mut x = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % shards as u64) as u32
}
