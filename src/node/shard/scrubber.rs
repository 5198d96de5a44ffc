//! The background scrubber (`[recovery] scrub_interval`, `scrub_bytes_per_sec_max`): every
//! interval it reads every entry the shard's group table locates, oldest segments first as
//! the table orders them, checking each record's checksum as any read does, and hands every
//! damaged one to the repair path (`Event::Damaged`, the same event a failed fetch sends), so
//! bit rot in data nothing reads is repaired from peers before it is needed.
//!
//! Low priority: one entry per read, paced to the byte budget (it sleeps whenever it is ahead
//! of `scrub_bytes_per_sec_max`), and it yields to the shard's other tasks between reads. A
//! read that finds the entry gone (compacted, truncated meanwhile) is skipped.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use tern_engine::storage::Storage;
use tern_engine::ShardWal;

use super::super::repair::damaged_entry;
use super::super::stats;
use super::Event;

/// What the scrubber does, from `[recovery]` (docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Pause between the end of one pass and the start of the next.
    pub interval: Duration,
    /// Bytes of entries read per second, at most (per shard).
    pub bytes_per_sec_max: u64,
}

/// Entries read between two checks of the pace: bounds the burst to this many entries.
const PACE_EVERY_ENTRIES: u64 = 16;

/// Runs passes for ever (the task is dropped with the shard).
pub(super) async fn run<S: Storage + 'static>(
    cfg: ScrubConfig,
    shard: u32,
    wal: Rc<ShardWal<S>>,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        glommio::timer::sleep(cfg.interval).await;
        let (bytes, damaged) = pass(cfg, &wal, &events).await;
        stats::scrub_pass(bytes);
        tracing::info!(
            shard,
            bytes,
            damaged,
            "scrub: pass done (every located entry read and checked)"
        );
        if events.is_closed() {
            return;
        }
    }
}

/// One pass over every entry of every group; returns (bytes read, damaged entries found).
async fn pass<S: Storage + 'static>(
    cfg: ScrubConfig,
    wal: &ShardWal<S>,
    events: &mpsc::UnboundedSender<Event>,
) -> (u64, u64) {
    let started = Instant::now();
    let (mut bytes, mut damaged, mut entries) = (0u64, 0u64, 0u64);
    let budget = cfg.bytes_per_sec_max.max(1) as f64;
    for info in wal.groups() {
        // Bounded by the group's log as it was listed; entries compacted meanwhile fail as
        // unavailable and are skipped.
        for index in info.first_index..=info.last_index {
            match wal.read(info.group, index, index + 1, u64::MAX).await {
                Ok(v) => bytes += v.iter().map(|e| e.data.len() as u64 + 64).sum::<u64>(),
                Err(e) => {
                    if let Some((group, index)) = damaged_entry(&e) {
                        damaged += 1;
                        stats::scrub_damaged();
                        let why = format!("found by the scrubber: {e}");
                        if events
                            .unbounded_send(Event::Damaged { group, index, why })
                            .is_err()
                        {
                            return (bytes, damaged);
                        }
                    }
                }
            }
            entries += 1;
            if entries.is_multiple_of(PACE_EVERY_ENTRIES) {
                let due = Duration::from_secs_f64(bytes as f64 / budget);
                let elapsed = started.elapsed();
                if due > elapsed {
                    glommio::timer::sleep(due - elapsed).await;
                }
            }
            glommio::yield_if_needed().await;
        }
    }
    (bytes, damaged)
}
