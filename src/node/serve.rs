//! `tern serve`: start-up, the shards, signals and a bounded shutdown.
//!
//! Start-up, in order (each step logs a line with a stable first word, so operators can
//! follow it with `grep -E "(recovery|replay|caught_up)"`):
//!
//! 1. `config`: the validated [`NodeConfig`] (done by the caller).
//! 2. `identity`: the data directory's `NODE` file is checked or created ([`identity`]).
//! 3. `admission`: may this node vote ([`bootstrap::decide`])?
//! 4. `recovery`: the engine takes the directory's lock and each shard replays its WAL
//!    (`replay` per shard), then `caught_up` once every shard is ready.
//! 5. The node runs until SIGTERM/SIGINT (or a shard fails), then `shutdown`: each shard
//!    stops, its WAL is flushed and closed, the lock is released. A stop that takes longer
//!    than `shutdown_timeout`, or a second signal, exits at once ([`EXIT_FORCED`]); the WAL
//!    is crash-safe, so that loses nothing acknowledged.
//!
//! Not yet here (the shard driver, the peer transport and the Kafka listener integrate on
//! top of this): listeners, Raft groups, the controller group. A multi-node node that is not
//! yet admitted stays pending (it cannot ask its peers without the transport).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::oneshot;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::node::bootstrap::{self, Admission, AdmissionError};
use crate::node::config::NodeConfig;
use crate::node::identity::{self, IdentityError, IdentityOrigin, IdentityRequest};
use crate::node::kafka;
use crate::node::kafka::broker::BrokerSetup;
use crate::node::runtime::NodeRuntime;

/// Exit codes of `tern serve` (docs/operations/node.md).
/// Stopped cleanly after SIGTERM/SIGINT.
pub const EXIT_STOPPED: u8 = 0;
/// The node failed while recovering or running (WAL damage that the recovery mode refuses,
/// an fsync error, a shard that could not start): see the log and docs/operations/recovery.md.
pub const EXIT_FAILED: u8 = 1;
/// Refused to start: configuration, identity, admission, or the data directory is locked.
pub const EXIT_REFUSED: u8 = 2;
/// The stop took longer than `shutdown_timeout`, or a second signal came: exited without the
/// clean close (crash-safe; the next start replays).
pub const EXIT_FORCED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Engine(#[from] tern_engine::Error),
    #[error("cannot install the SIGTERM/SIGINT handler: {0}")]
    Signals(#[source] std::io::Error),
    #[error("a shard stopped while the node was running (see the lines above)")]
    ShardExited,
    #[error("{0}")]
    Runtime(String),
}

impl ServeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Identity(_) | ServeError::Admission(_) | ServeError::Signals(_) => {
                EXIT_REFUSED
            }
            ServeError::Engine(e) => match e {
                tern_engine::Error::Locked { .. }
                | tern_engine::Error::Config { .. }
                | tern_engine::Error::NotADataDir { .. } => EXIT_REFUSED,
                _ => EXIT_FAILED,
            },
            ServeError::ShardExited => EXIT_FAILED,
            ServeError::Runtime(_) => EXIT_REFUSED,
        }
    }
}

/// Why the node is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Signal(&'static str),
    ShardExited,
}

/// Broadcasts "stop" to every shard, from any thread.
struct StopSwitch {
    requested: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    /// One sender per registered shard.
    senders: Mutex<Vec<oneshot::Sender<()>>>,
}

impl StopSwitch {
    fn new() -> Self {
        StopSwitch {
            requested: AtomicBool::new(false),
            reason: Mutex::new(None),
            senders: Mutex::new(Vec::new()),
        }
    }

    /// A future that completes when the stop is requested (at once if it already was).
    fn register(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if self.requested.load(Ordering::SeqCst) {
            let _ = tx.send(());
        } else {
            senders.push(tx);
        }
        rx
    }

    /// Returns true for the first request.
    fn request(&self, reason: StopReason) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if self.requested.swap(true, Ordering::SeqCst) {
            return false;
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        for tx in senders.drain(..) {
            // A shard that already ended dropped its receiver; nothing to tell it.
            let _ = tx.send(());
        }
        true
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held by each copy of the shard task. `run_shards` gives every shard its own copy and
/// drops it when that shard ends; a copy dropped before the stop was requested means a shard
/// ended on its own (its WAL failed to open or recover, or its executor died), and the node
/// stops rather than run with a shard missing at start-up.
///
/// Only copies are armed: the original, kept by `run_shards` itself, is dropped when it
/// returns (also when it fails before starting any shard, e.g. on a locked directory).
struct ShardWatch {
    switch: Arc<StopSwitch>,
    armed: bool,
}

impl Clone for ShardWatch {
    fn clone(&self) -> Self {
        ShardWatch {
            switch: self.switch.clone(),
            armed: true,
        }
    }
}

impl Drop for ShardWatch {
    fn drop(&mut self) {
        if self.armed
            && !self.switch.requested.load(Ordering::SeqCst)
            && self.switch.request(StopReason::ShardExited)
        {
            error!("shutdown: a shard ended while the node was running; stopping the others");
        }
    }
}

/// Runs the node until it is stopped. `Ok` after a clean stop on a signal.
pub fn run(cfg: &NodeConfig) -> Result<(), ServeError> {
    info!(
        node_id = cfg.node_id,
        data_dir = %cfg.data_dir.display(),
        peers = cfg.peers.len(),
        "starting tern {}",
        env!("CARGO_PKG_VERSION")
    );
    let (id, origin) = identity::open_or_create(
        &cfg.data_dir,
        IdentityRequest {
            node_id: cfg.node_id,
            cluster_id: cfg.cluster_id,
            multi_node: cfg.is_multi_node(),
        },
    )?;
    let origin_word = match origin {
        IdentityOrigin::Existing => "existing",
        IdentityOrigin::Created => "created",
        IdentityOrigin::Adopted => "adopted (data from before NODE files)",
    };
    info!(node_id = id.node_id, cluster_id = %id.cluster_id, admitted = id.admitted,
        "identity: {origin_word}");
    let voters: Vec<u64> = if cfg.peers.is_empty() {
        vec![cfg.node_id]
    } else {
        cfg.peers.iter().map(|p| p.node_id).collect()
    };
    // The peers' answers come from the transport handshake once it is integrated; until
    // then a new node of a multi-node cluster cannot be admitted and stays pending.
    let admitted = match bootstrap::decide(id.admitted, id.node_id, id.cluster_id, &voters, &[])? {
        Admission::Resume => {
            info!("admission: resume (admitted earlier)");
            true
        }
        Admission::Bootstrap | Admission::Join => {
            identity::mark_admitted(&cfg.data_dir, id)?;
            info!("admission: admitted as a voter of a new single-node cluster");
            true
        }
        Admission::Wait => {
            warn!(
                "admission: pending: a new node of a multi-node cluster must hear from its peers \
             before it may vote; the peer transport is not integrated yet, so this node \
             recovers its WAL and holds its lock but takes no part in the cluster"
            );
            false
        }
    };

    let switch = Arc::new(StopSwitch::new());
    let signals_thread = spawn_signal_thread(switch.clone(), cfg.shutdown_timeout)?;
    let engine_cfg = cfg.engine_config();
    info!(
        shards = engine_cfg.shards,
        recovery_mode = engine_cfg.wal.recovery_mode.name(),
        "recovery: opening the data directory and replaying each shard's WAL"
    );
    let shards = crate::node::runtime::shard_count(cfg);
    let runtime =
        NodeRuntime::start(cfg, id.cluster_id, shards, admitted).map_err(ServeError::Runtime)?;
    // The Kafka listener: checked free once here (every shard then binds it with
    // SO_REUSEPORT, which would not notice another process); port 0 is resolved once, so all
    // shards share one port.
    let kafka_addr = tern_net::listen::ensure_addr_free(cfg.kafka_addr)
        .map_err(|e| ServeError::Runtime(format!("kafka_addr: {e}")))?;
    let kafka_setup = BrokerSetup {
        node_id: cfg.node_id,
        advertised: kafka_addr,
        cluster_id: id.cluster_id.to_string(),
        read_only: cfg.read_only,
        shard: 0,
        shards,
        senders: runtime.senders(),
    };
    let ready = Arc::new(AtomicU32::new(0));
    let watch = ShardWatch {
        switch: switch.clone(),
        armed: false,
    };
    let configured_shards = engine_cfg.shards;
    let shard_runtime = runtime.clone();
    let result = tern_engine::engine::run_shards(&cfg.data_dir, &engine_cfg, true, move |ctx| {
        let watch = watch.clone();
        let ready = ready.clone();
        let runtime = shard_runtime.clone();
        let kafka_setup = BrokerSetup {
            shard: ctx.shard,
            ..kafka_setup.clone()
        };
        async move {
            let stop = watch.switch.register();
            let r = ctx.recovery();
            info!(
                shard = ctx.shard,
                segments = r.segments.len(),
                records = r.records,
                bytes = r.bytes,
                elapsed_ms = r.elapsed.as_millis() as u64,
                torn_or_removed_regions = r.removed.len(),
                group_losses = r.losses.len(),
                rebuilt_indexes = r.rebuilt_indexes.len(),
                groups = ctx.wal.groups().len(),
                "replay: shard recovered"
            );
            if ctx.shard == 0 && ctx.shards != configured_shards {
                warn!(
                    directory_shards = ctx.shards,
                    configured_shards,
                    "the data directory was created with {} shards; that count wins \
                     (placement depends on it)",
                    ctx.shards
                );
            }
            if ready.fetch_add(1, Ordering::SeqCst) + 1 == ctx.shards {
                info!(
                    shards = ctx.shards,
                    "caught_up: every shard recovered; the node holds its data directory"
                );
            }
            // Dropped (which stops accepting) when the shard's driver ends.
            let kafka = match kafka::listener::spawn(kafka_addr, kafka_setup) {
                Ok(task) => Some(task),
                Err(e) => {
                    error!(shard = ctx.shard, "{e}");
                    watch.switch.request(StopReason::ShardExited);
                    None
                }
            };
            if let Some(why) = runtime.run_shard(&ctx, stop).await {
                error!(shard = ctx.shard, "shard stopped: {why}");
            }
            drop(kafka);
            info!(
                shard = ctx.shard,
                "shutdown: shard flushing and closing its WAL"
            );
            drop(watch);
        }
    });
    runtime.stop_network();
    let reason = switch.reason();
    // Make the signal thread end: a stop requested by a failure did not come through it.
    signals_thread.close();
    let outcome = match (result, reason) {
        (Err(e), _) => Err(ServeError::Engine(e)),
        (Ok(_), Some(StopReason::ShardExited)) => Err(ServeError::ShardExited),
        (Ok(_), _) => Ok(()),
    };
    match &outcome {
        Ok(()) => info!("shutdown: complete; WAL closed, lock released"),
        Err(e) => error!("stopped: {e}"),
    }
    outcome
}

struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalThread {
    fn close(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "a signal",
    }
}

fn spawn_signal_thread(
    switch: Arc<StopSwitch>,
    shutdown_timeout: Duration,
) -> Result<SignalThread, ServeError> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ServeError::Signals)?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("tern-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = signal_name(sig);
                if switch.request(StopReason::Signal(name)) {
                    info!(
                        timeout_ms = shutdown_timeout.as_millis() as u64,
                        "shutdown: {name} received; stopping"
                    );
                    spawn_watchdog(shutdown_timeout);
                } else {
                    error!("shutdown: {name} received again; exiting now without a clean close");
                    std::process::exit(EXIT_FORCED.into());
                }
            }
        })
        .map_err(ServeError::Signals)?;
    Ok(SignalThread { handle, thread })
}

/// Ends the process if the stop outlives its bound; a clean stop exits first.
fn spawn_watchdog(timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tern-shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            error!(
                timeout_ms = timeout.as_millis() as u64,
                "shutdown: not finished within shutdown_timeout; exiting without a clean close"
            );
            std::process::exit(EXIT_FORCED.into());
        });
    if let Err(e) = spawned {
        warn!("shutdown: cannot start the watchdog ({e}); the stop is unbounded");
    }
}
