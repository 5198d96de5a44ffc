//! The shard's part of rebuilding a wiped node (`node/rebuild.rs` has the rule; the Raft
//! side is `tern_raft::rebuild`): once per tick, groups that hold what their leader had
//! committed take their vote back, and the shard reports to the node, which clears the `NODE`
//! flag when every shard is done.

use tern_engine::storage::Storage;
use tern_net::PeerTransport;
use tracing::{error, info};

use super::{Machine, Shard};

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    pub(super) async fn tick_rebuild(&mut self) {
        let Some(rb) = self.rebuild.clone() else {
            return;
        };
        if !rb.is_active() {
            return;
        }
        let mut controller_finished = None;
        for (&id, g) in self.groups.iter_mut() {
            let Some(target) = g.raw.rebuild_target() else {
                continue;
            };
            // Applied too, so the controller's state (which places the partitions) is the
            // one its leader had when the rebuild began.
            if g.raw.applied() < target || !g.raw.finish_rebuild() {
                continue;
            }
            info!(
                shard = self.shard,
                group = id,
                target,
                term = g.raw.term(),
                leader = g.raw.leader(),
                "rebuild: group rebuilt; it votes and acknowledges again"
            );
            // The vote `finish_rebuild` took goes out in the next Ready's hard state.
            self.dirty.insert(id);
            rb.group_finished(id);
            if let Machine::Controller(state) = &g.machine {
                controller_finished = Some(state.applied_index());
            }
        }
        if let Some(applied) = controller_finished {
            // Every shard starts the partitions this state places here (rebuilding), and
            // reports having seen it, before the node may clear its flag.
            self.broadcast_controller().await;
            rb.controller_finished(applied);
        }
        let rebuilding = self.groups.values().any(|g| g.raw.is_rebuilding());
        let seen = self.controller.as_ref().map_or(0, |s| s.applied_index());
        match rb.report(self.shard, seen, rebuilding) {
            Ok(true) => info!(
                shard = self.shard,
                "rebuild: every group of the node rebuilt; NODE says rebuilding=0"
            ),
            Ok(false) => {}
            Err(e) => {
                // An fsync failure is fatal (never retried): stop rather than guess.
                error!(
                    shard = self.shard,
                    "rebuild: clearing the NODE flag failed: {e}"
                );
                self.failed = Some(format!("rebuild: clearing the NODE flag failed: {e}"));
            }
        }
    }
}
