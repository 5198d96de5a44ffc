//! The node's HTTP endpoints: `/health`, `/ready`, `/metrics`, `/v1/raft`, `/v1/cluster`
//! (docs/operations/node.md lists them; docs/operations/metrics.md the metrics).
//!
//! One listener, on shard 0's executor: admin traffic is a scrape every few seconds and an
//! operator's command now and then, so spreading it over the shards (SO_REUSEPORT, as the
//! Kafka listener does) would buy nothing and would make every shard carry HTTP state. The
//! handlers ask every shard for a copy of what they need over the shards' inboxes (the same
//! `ShardMsg` channel the Kafka front end uses) and never touch a shard's state directly.
//!
//! Reading order: [`server`] (accept loop, per-connection bounds) → [`io`] (glommio stream as
//! hyper IO) → [`routes`] (method + path → handler) → [`status`] (health, readiness, the
//! JSON of `/v1/raft` and `/v1/cluster`) → [`metrics`] (Prometheus text).

pub mod io;
pub mod members;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod status;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_channel::mpsc;

use super::shard::ShardMsg;

/// Open HTTP connections; past it a new connection is closed at once (with a log line).
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// hyper's read buffer, which bounds a request's line and headers: a larger head is answered
/// 431 and the connection closed. hyper does not accept less than 8 KiB.
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Request bodies: the endpoints take none beyond a small JSON argument; a larger declared
/// body is answered 413 without being read.
pub const HTTP_BODY_BYTES_MAX: u64 = 64 * 1024;
/// Time one connection may live, requests included (a glommio timer; hyper's own timers need
/// a tokio-style timer that glommio does not have). A slow client cannot hold a slot longer.
pub const HTTP_CONNECTION_TIME_MAX: Duration = Duration::from_secs(10);
/// How long a handler waits for one shard's answer. A shard that is still replaying its WAL,
/// or is stuck, is reported as not answering instead of holding the request.
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Start-up progress the shards publish for `/ready`, `/metrics` and the final `caught_up`
/// line. Shared between the shards' threads (written once per shard at start).
#[derive(Debug)]
pub struct NodeProgress {
    pub shards: u32,
    started: Instant,
    shards_replayed: AtomicU32,
    /// Milliseconds from start until the last shard finished its replay (0: not yet).
    replay_done_ms: AtomicU64,
    ready: AtomicBool,
}

impl NodeProgress {
    pub fn new(shards: u32) -> Self {
        NodeProgress {
            shards,
            started: Instant::now(),
            shards_replayed: AtomicU32::new(0),
            replay_done_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    /// A shard finished replaying its WAL; true for the last one.
    pub fn shard_replayed(&self) -> bool {
        let last = self.shards_replayed.fetch_add(1, Ordering::SeqCst) + 1 == self.shards;
        if last {
            let ms = self.elapsed_ms().max(1);
            self.replay_done_ms.store(ms, Ordering::SeqCst);
        }
        last
    }

    pub fn shards_replayed(&self) -> u32 {
        self.shards_replayed.load(Ordering::SeqCst)
    }

    pub fn replay_done_ms(&self) -> Option<u64> {
        match self.replay_done_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Marks the node ready; true the first time.
    pub fn set_ready(&self) -> bool {
        !self.ready.swap(true, Ordering::SeqCst)
    }

    pub fn was_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// What the HTTP server needs from the node; `Send`, built before the shards start.
#[derive(Clone)]
pub struct HttpSetup {
    pub node_id: u64,
    pub addr: SocketAddr,
    /// This node's Kafka address (a new member's Kafka port defaults to this one's).
    pub kafka_addr: SocketAddr,
    pub standalone: bool,
    pub senders: Vec<mpsc::Sender<ShardMsg>>,
    pub progress: std::sync::Arc<NodeProgress>,
}

/// How often the ready watch asks the shards until the node is ready.
const READY_POLL: Duration = Duration::from_millis(200);

/// Logs the final `caught_up` line once the node is ready (the rule of `/ready`), with the
/// time of each start-up phase. Ends then, or when dropped with its shard.
pub fn spawn_ready_watch(setup: HttpSetup) -> glommio::Task<()> {
    glommio::spawn_local(async move {
        // The first checks come quickly (a small node is ready within milliseconds and the
        // recovery-time figures should not include a poll interval); a node with many groups
        // is checked every READY_POLL, as a status round over all its groups costs.
        let mut pause = Duration::from_millis(5);
        loop {
            let shards = status::all_status(&setup.senders).await;
            if !status::ready_pending(&setup.progress, &shards).is_empty() {
                glommio::timer::sleep(pause).await;
                pause = (pause * 2).min(READY_POLL);
                continue;
            }
            if setup.progress.set_ready() {
                let total_ms = setup.progress.elapsed_ms();
                let replay_ms = setup.progress.replay_done_ms().unwrap_or(total_ms);
                let groups: usize = shards.iter().flatten().map(|s| s.groups.len()).sum();
                tracing::info!(
                    groups,
                    replay_ms,
                    catch_up_ms = total_ms.saturating_sub(replay_ms),
                    total_ms,
                    "caught_up: node ready (every local replica applied its leader's commit)"
                );
            }
            return;
        }
    })
}

#[cfg(test)]
mod fault_tests;
