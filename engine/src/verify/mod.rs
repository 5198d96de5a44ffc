//! Offline verification and repair of a stopped node's data directory (`tern verify-data`,
//! `tern repair`, `tern rebuild-index`). Everything here reads segments through
//! [`scan_segment`] and decides about damage with the same rules as [`crate::recovery`], so
//! the CLI, recovery and the writer agree on what is valid.
//!
//! Repair never rewrites acknowledged bytes in place:
//!
//! | what                                             | repair does                                        | needs `--skip-corrupt` |
//! |--------------------------------------------------|----------------------------------------------------|------------------------|
//! | torn tail of the last segment (not proven durable) | copy to quarantine, zero it (what recovery does) | no                     |
//! | last segment with an unwritten header, rest zero | copy to quarantine, remove the file (as recovery)  | no                     |
//! | sealed segment without (or with a wrong) index   | rebuild the index from a scan                      | no                     |
//! | damage before valid data, a bad header with data after it, a missing seal or a seal naming a missing segment | quarantine the whole segment, write a new one (temp file + fsync + rename + dir fsync) with every valid record | yes |
//! | entries that follow a hole in their group's log  | cut them (a Raft log has no holes), report the loss | yes                   |
//! | hard state commit beyond the repaired log        | append a hard state with commit = last index       | yes                    |

mod analysis;
mod check;
mod problem;
mod rebuild_index;
mod repair;

pub use analysis::*;
pub use check::*;
pub use problem::{Problem, Severity};
pub use rebuild_index::*;
pub use repair::*;

use std::path::{Path, PathBuf};

use crate::engine::shard_dir;

/// Shard directory of a data directory (re-exported for the CLI).
pub fn shard_path(root: &Path, shard: u32) -> PathBuf {
    shard_dir(root, shard)
}
