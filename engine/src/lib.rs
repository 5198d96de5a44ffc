//! tern-engine: per-core shard WALs with O_DIRECT group commit and crash-safe recovery.
//!
//! Start with `docs/ARCHITECTURE.md`; the on-disk format is `docs/format.md`, mirrored in
//! [`format`]. Reading order: [`format`] → [`storage`] → [`scan`] → [`recovery`] → [`wal`]
//! (the API, then `wal/writer.rs` and `wal/segments.rs`) → [`engine`].

pub mod batch;
pub mod chain;
pub mod config;
pub mod constants;
pub mod engine;
pub mod error;
pub mod export;
pub mod format;
pub mod group;
pub mod group_map;
pub mod histogram;
mod notify;
pub mod quarantine;
pub mod recovery;
pub mod repaired;
pub mod scan;
pub mod storage;
pub mod torn_tail;
pub mod verify;
pub mod wal;
pub mod write_batch;

pub use config::{shard_for_group, EngineConfig, RecoveryMode, WalConfig, WalSync};
pub use error::{Error, Result};
pub use format::EntryKind;
pub use group::{GroupInfo, HardState, SnapshotInfo};
pub use wal::{Durable, Entry, OwnedEntry, ShardWal, WalStats};
pub use write_batch::WriteBatch;
