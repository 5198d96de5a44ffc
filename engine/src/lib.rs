//! tern-engine: per-core shard WALs with O_DIRECT group commit and crash-safe recovery.
//!
//! Start with `docs/ARCHITECTURE.md`; the on-disk format is `docs/format.md`, mirrored in
//! [`format`]. Reading order: [`format`] → [`storage`] → `wal` → `recovery` → `engine`.

pub mod constants;
pub mod error;
pub mod format;
pub mod storage;

pub use error::{Error, Result};
