//! Compacting one group's log prefix into a snapshot point: for retention (partitions) and
//! for an operator's "snapshot now" (`ShardMsg::Snapshot`, behind `POST /admin/snapshot`).
//!
//! Only applied entries are compacted, and the snapshot data is the state machine as of the
//! compaction point: for a partition, the offset after it (the new log start offset) and the
//! idempotent producers' table as of that entry; for the controller, its whole state (which is
//! at the applied index, so the controller compacts exactly there). The snapshot point goes
//! into the shard's next write batch; the group's log view is refreshed once it is durable.

use tern_engine::constants::SNAPSHOT_META_BYTES_MAX;
use tern_engine::storage::Storage;

use super::group::{Group, Machine};
use super::partition::PartitionSnapshot;
use super::snapshot_meta::GroupSnapshot;

/// A snapshot point to write for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub term: u64,
    pub index: u64,
    /// `GroupSnapshot` bytes (configuration and state machine data).
    pub meta: Vec<u8>,
}

/// What a compaction did (or why it did nothing), per group: the answer to a snapshot
/// request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactionOutcome {
    pub group: u64,
    /// First log index before and after (equal when nothing was compacted).
    pub old_first_index: u64,
    pub new_first_index: u64,
    /// Log start offset after the compaction (partitions).
    pub log_start_offset: Option<u64>,
    /// Payload bytes of the entries dropped, when known (partitions).
    pub bytes_freed: Option<u64>,
    /// Why nothing was compacted.
    pub skipped: Option<String>,
}

/// Plans the compaction of `g`'s log up to `upto` (at most its applied index) and moves its
/// in-memory view (the partition's offset map) to the new start. The caller writes the
/// returned snapshot point in the group's next write batch.
pub fn plan<S: Storage>(
    id: u64,
    g: &mut Group<S>,
    upto: u64,
) -> (Option<Compaction>, CompactionOutcome) {
    let current = g.compacted_to.max(g.raw.first_index().saturating_sub(1));
    let mut outcome = CompactionOutcome {
        group: id,
        old_first_index: current + 1,
        new_first_index: current + 1,
        log_start_offset: None,
        bytes_freed: None,
        skipped: None,
    };
    let skip = |mut o: CompactionOutcome, why: String| {
        o.skipped = Some(why);
        (None, o)
    };
    if let Some(why) = &g.halted {
        return skip(outcome, format!("group halted: {why}"));
    }
    let upto = upto.min(g.raw.applied());
    if upto <= current {
        return skip(outcome, "nothing applied past the snapshot point".into());
    }
    if g.raw.conf_index() > upto {
        // The configuration at `upto` is an older one the core no longer holds; compact once
        // the change is applied.
        return skip(
            outcome,
            format!(
                "a configuration change at {} is not yet applied",
                g.raw.conf_index()
            ),
        );
    }
    let Some(term) = g.raw.log_term(upto) else {
        return skip(outcome, format!("term of entry {upto} unavailable"));
    };
    let data = match &g.machine {
        Machine::Partition {
            offsets, producers, ..
        } => {
            let Some(end_offset) = offsets.end_at(upto) else {
                return skip(outcome, format!("entry {upto} is not in the offset map"));
            };
            outcome.log_start_offset = Some(end_offset);
            outcome.bytes_freed = Some(offsets.bytes_upto(upto));
            PartitionSnapshot {
                end_offset,
                producers: producers.upto(upto),
            }
            .encode()
        }
        Machine::Controller(state) => {
            if upto != g.raw.applied() {
                return skip(
                    outcome,
                    "the controller compacts at its applied index".into(),
                );
            }
            match state.encode_snapshot() {
                Ok(d) => d,
                Err(e) => return skip(outcome, format!("controller state: {e}")),
            }
        }
    };
    let meta = GroupSnapshot {
        conf: g.raw.conf().clone(),
        data,
    }
    .encode();
    if meta.len() > SNAPSHOT_META_BYTES_MAX {
        return skip(
            outcome,
            format!(
                "snapshot of {} bytes is over the engine's {SNAPSHOT_META_BYTES_MAX}",
                meta.len()
            ),
        );
    }
    if let Machine::Partition { offsets, .. } = &mut g.machine {
        if let Some(start) = outcome.log_start_offset {
            offsets.on_snapshot(upto, start);
        }
    }
    g.compacted_to = upto;
    outcome.new_first_index = upto + 1;
    (
        Some(Compaction {
            term,
            index: upto,
            meta,
        }),
        outcome,
    )
}
