//! The controller state a stopped node's directory holds, read without running the group:
//! its snapshot, then its committed commands applied in order (what the controller replays
//! at start). For offline tools (`tern import-topic` looks up a partition's replicas).

use tern_engine::storage::Storage;
use tern_engine::{EntryKind, ShardWal};

use super::{ControllerState, CONTROLLER_GROUP};
use crate::node::snapshot_meta::GroupSnapshot;

/// Bytes of entries read per call.
const READ_BYTES_MAX: u64 = 8 << 20;

/// The committed controller state of the shard that hosts the controller group, or `None`
/// when the directory has no controller group. A damaged snapshot or entry is an error
/// (named), never skipped.
pub async fn committed_state<S: Storage>(
    wal: &ShardWal<S>,
) -> Result<Option<ControllerState>, String> {
    if wal.group(CONTROLLER_GROUP).is_none() {
        return Ok(None);
    }
    let snapshot = wal.snapshot(CONTROLLER_GROUP);
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
    let mut state = match &snapshot {
        None => ControllerState::default(),
        Some(s) => {
            let data = GroupSnapshot::decode(&s.meta)
                .map_err(|why| format!("controller snapshot metadata: {why}"))?
                .data;
            if data.is_empty() {
                ControllerState::default()
            } else {
                ControllerState::decode_snapshot(&data)
                    .map_err(|e| format!("controller snapshot: {e}"))?
            }
        }
    };
    let commit = wal
        .hard_state(CONTROLLER_GROUP)
        .map_or(0, |hs| hs.commit)
        .max(snapshot_index)
        .min(wal.last_index(CONTROLLER_GROUP).max(snapshot_index));
    let mut next = state.applied_index().max(snapshot_index) + 1;
    while next <= commit {
        let entries = wal
            .read(CONTROLLER_GROUP, next, commit + 1, READ_BYTES_MAX)
            .await
            .map_err(|e| format!("controller log at index {next}: {e}"))?;
        let Some(last) = entries.last().map(|e| e.index) else {
            break;
        };
        for e in entries {
            if e.kind != EntryKind::Normal || e.data.is_empty() {
                continue;
            }
            state
                .apply_payload(e.index, &e.data)
                .map_err(|err| format!("controller entry {}: {err}", e.index))?;
        }
        next = last + 1;
    }
    Ok(Some(state))
}
