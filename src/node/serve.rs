//! `tern serve`: start-up, the shards, signals and a bounded shutdown.
//!
//! Start-up, in order (each step logs a line with a stable first word, so operators can
//! follow it with `grep -E "(recovery|replay|caught_up)"`):
//!
//! 1. `config`: the validated [`NodeConfig`] (done by the caller).
//! 2. `identity`: the data directory's `NODE` file is checked or created ([`identity`]).
//! 3. `admission`: may this node vote ([`bootstrap::decide`])?
//! 4. `recovery`: the engine takes the directory's lock and each shard replays its WAL
//!    (`replay` per shard), then `caught_up: every shard recovered`; shard 0 starts the HTTP
//!    endpoints (`http`), each group logs `caught_up` when it applied its leader's commit,
//!    and `caught_up: node ready` (with each phase's time) when `/ready` first holds.
//! 5. The node runs until SIGTERM/SIGINT (or a shard fails), then `shutdown`: each shard
//!    stops, its WAL is flushed and closed, the lock is released. A stop that takes longer
//!    than `shutdown_timeout`, or a second signal, exits at once ([`EXIT_FORCED`]); the WAL
//!    is crash-safe, so that loses nothing acknowledged.
//!
//! Not yet here (the shard driver, the peer transport and the Kafka listener integrate on
//! top of this): listeners, Raft groups, the controller group. A multi-node node that is not
//! yet admitted stays pending (it cannot ask its peers without the transport).

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::node::bootstrap::{self, Admission, AdmissionError};
use crate::node::config::NodeConfig;
use crate::node::force_new_cluster::ForceNewCluster;
use crate::node::http::{self, HttpSetup, NodeProgress};
use crate::node::identity::{self, IdentityError, IdentityOrigin, IdentityRequest};
use crate::node::kafka;
use crate::node::kafka::broker::BrokerSetup;
use crate::node::rebuild::NodeRebuild;
use crate::node::runtime::NodeRuntime;
use crate::node::stop::{spawn_signal_thread, ShardWatch, StopReason, StopSwitch};
use tern_net::{ClusterView, SharedView};

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

/// Runs the node until it is stopped. `Ok` after a clean stop on a signal. Every error is
/// logged (`stopped: …`) before it is returned.
pub fn run(cfg: &NodeConfig) -> Result<(), ServeError> {
    let result = run_until_stopped(cfg);
    match &result {
        Ok(()) => info!("shutdown: complete; WAL closed, lock released"),
        Err(e) => error!("stopped: {e}"),
    }
    result
}

fn run_until_stopped(cfg: &NodeConfig) -> Result<(), ServeError> {
    info!(
        node_id = cfg.node_id,
        data_dir = %cfg.data_dir.display(),
        kafka_addr = %cfg.kafka_addr,
        peer_addr = %cfg.peer_addr,
        http_addr = %cfg.http_addr,
        peers = cfg.peers.len(),
        standalone = cfg.standalone,
        read_only = cfg.read_only,
        "starting tern {}",
        env!("CARGO_PKG_VERSION")
    );
    if cfg.force_new_cluster {
        refuse_force_on_empty(cfg)?;
    }
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
    let id = if cfg.force_new_cluster {
        force_identity(cfg, id)?
    } else {
        id
    };
    // A forced node is the cluster's only voter from this start on: it tells the nodes that
    // ask (the wiped ones starting empty) that it does not count them, so they join.
    let voters: Vec<u64> = if cfg.peers.is_empty() || cfg.force_new_cluster {
        vec![cfg.node_id]
    } else {
        cfg.peers.iter().map(|p| p.node_id).collect()
    };
    // The peer listener comes first: peers starting at the same time ask it for this node's
    // view while this node asks theirs.
    let shards = crate::node::runtime::shard_count(cfg);
    let view = SharedView::new(ClusterView {
        node_id: id.node_id,
        cluster_uuid: *id.cluster_id.as_bytes(),
        bootstrapped: id.admitted,
        voters: if id.admitted {
            voters.clone()
        } else {
            Vec::new()
        },
    });
    let runtime = NodeRuntime::start(cfg, id.cluster_id, shards, view.clone())
        .map_err(ServeError::Runtime)?;
    let admitted_id = admit(cfg, &id, &voters, &runtime)?;
    let admitted = admitted_id.is_some();
    let joined = admitted_id.is_some_and(|i| i.joined);
    runtime.set_joined(joined);
    if let Some(admitted_id) = admitted_id.filter(|i| i.rebuilding) {
        runtime.set_rebuild(Arc::new(NodeRebuild::new(
            Some(cfg.data_dir.clone()),
            admitted_id,
            shards,
        )));
    }
    if admitted {
        // A joined node names no voters until its controller learns its configuration from
        // the leader (the controller's shard publishes it from then on: shard.rs).
        view.set(ClusterView {
            bootstrapped: true,
            voters: if joined { Vec::new() } else { voters.clone() },
            ..view.get()
        });
    }
    runtime.set_admitted(admitted);

    let switch = Arc::new(StopSwitch::default());
    let signals_thread =
        spawn_signal_thread(switch.clone(), cfg.shutdown_timeout).map_err(ServeError::Signals)?;
    let engine_cfg = cfg.engine_config();
    info!(
        shards = engine_cfg.shards,
        recovery_mode = engine_cfg.wal.recovery_mode.name(),
        "recovery: opening the data directory and replaying each shard's WAL"
    );
    // The Kafka listener: checked free once here (every shard then binds it with
    // SO_REUSEPORT, which would not notice another process); port 0 is resolved once, so all
    // shards share one port.
    let kafka_addr = tern_net::listen::ensure_addr_free(cfg.kafka_addr)
        .map_err(|e| ServeError::Runtime(format!("kafka_addr: {e}")))?;
    // The HTTP listener (one, on shard 0: src/node/http/mod.rs says why), checked free
    // before the shards start so a taken address refuses the start.
    let http_addr = tern_net::listen::ensure_addr_free(cfg.http_addr)
        .map_err(|e| ServeError::Runtime(format!("http_addr: {e}")))?;
    let kafka_setup = BrokerSetup {
        node_id: cfg.node_id,
        advertised: kafka_addr,
        http_addr,
        cluster_id: id.cluster_id.to_string(),
        read_only: cfg.read_only,
        shard: 0,
        shards,
        senders: runtime.senders(),
        default_retention: cfg.default_retention(),
    };
    let progress = Arc::new(NodeProgress::new(shards));
    let http_setup = HttpSetup {
        node_id: cfg.node_id,
        addr: http_addr,
        kafka_addr,
        standalone: cfg.standalone,
        senders: runtime.senders(),
        progress: progress.clone(),
    };
    let watch = ShardWatch::new(switch.clone());
    let configured_shards = engine_cfg.shards;
    let force = cfg
        .force_new_cluster
        .then(|| ForceNewCluster::new(cfg.node_id, runtime.controller_shard()));
    let shard_runtime = runtime.clone();
    let result = tern_engine::engine::run_shards(&cfg.data_dir, &engine_cfg, true, move |ctx| {
        let watch = watch.clone();
        let progress = progress.clone();
        let http_setup = http_setup.clone();
        let runtime = shard_runtime.clone();
        let force = force.clone();
        let kafka_setup = BrokerSetup {
            shard: ctx.shard,
            ..kafka_setup.clone()
        };
        async move {
            let stop = watch.register();
            // Before any group of the shard starts (force_new_cluster.rs).
            if let Some(force) = &force {
                if let Err(why) = force.run_shard(ctx.shard, &ctx.wal).await {
                    error!(shard = ctx.shard, "{why}");
                    watch.stop_node(StopReason::ShardExited);
                    drop(watch);
                    return;
                }
            }
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
            if progress.shard_replayed() {
                info!(
                    shards = ctx.shards,
                    replay_ms = progress.elapsed_ms(),
                    "caught_up: every shard recovered; serving (Raft groups catch up to \
                     their leaders from here)"
                );
            }
            // Shard 0 serves HTTP and watches for the node to become ready.
            let http = if ctx.shard == 0 {
                match http::server::spawn(http_setup.clone()) {
                    Ok((task, _)) => Some((task, http::spawn_ready_watch(http_setup))),
                    Err(e) => {
                        error!(shard = ctx.shard, "{e}");
                        watch.stop_node(StopReason::ShardExited);
                        None
                    }
                }
            } else {
                None
            };
            // Dropped (which stops accepting) when the shard's driver ends.
            let kafka = match kafka::listener::spawn(kafka_addr, kafka_setup) {
                Ok(task) => Some(task),
                Err(e) => {
                    error!(shard = ctx.shard, "{e}");
                    watch.stop_node(StopReason::ShardExited);
                    None
                }
            };
            if let Some(why) = runtime.run_shard(&ctx, stop).await {
                error!(shard = ctx.shard, "shard stopped: {why}");
            }
            drop(kafka);
            drop(http);
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
    match (result, reason) {
        (Err(e), _) => Err(ServeError::Engine(e)),
        (Ok(_), Some(StopReason::ShardExited)) => Err(ServeError::ShardExited),
        (Ok(_), _) => Ok(()),
    }
}

/// `--force-new-cluster` keeps this directory's data as the cluster's: a directory without
/// an identity holds nothing to keep.
fn refuse_force_on_empty(cfg: &NodeConfig) -> Result<(), ServeError> {
    match identity::read_identity(&cfg.data_dir)? {
        Some(_) => Ok(()),
        None => Err(ServeError::Runtime(format!(
            "force-new-cluster: {} holds no node identity (an empty or new directory): there \
             is no data to make a cluster of; refused. Run it on the node whose data is kept \
             (docs/operations/cluster.md, section 6)",
            cfg.data_dir.display()
        ))),
    }
}

/// Checks that the directory may be forced and records it: never admitted or still being
/// rebuilt is refused (its groups do not hold what was committed); a node that had joined as
/// a learner stops being one, so topics it creates from now on bootstrap on it.
fn force_identity(
    cfg: &NodeConfig,
    id: identity::NodeIdentity,
) -> Result<identity::NodeIdentity, ServeError> {
    if !id.admitted {
        return Err(ServeError::Runtime(
            "force-new-cluster: this node was never admitted to its cluster: its directory \
             holds no group of it; refused"
                .into(),
        ));
    }
    if id.rebuilding {
        return Err(ServeError::Runtime(
            "force-new-cluster: this node is being rebuilt (its directory was wiped and not \
             every group holds what its leader had committed): its data cannot become the \
             cluster's; refused. Force the node whose data is complete"
                .into(),
        ));
    }
    info!(
        node_id = id.node_id,
        "force-new-cluster: this node becomes the only voter of every group it holds and the \
         cluster's only member; entries it never saw committed are dropped"
    );
    if id.joined {
        Ok(identity::mark_forced(&cfg.data_dir, id)?)
    } else {
        Ok(id)
    }
}

/// How long a new node of a multi-node cluster asks its peers before it gives up.
const ADMISSION_WAIT_MAX: Duration = Duration::from_secs(60);
/// Pause between rounds of questions.
const ADMISSION_RETRY: Duration = Duration::from_millis(300);

/// Decides whether this node may take part in the controller (`bootstrap.rs` has the table),
/// asking the peers for their view until the answer is clear. Records an admission in the
/// NODE file before any Raft group exists.
fn admit(
    cfg: &NodeConfig,
    id: &identity::NodeIdentity,
    voters: &[u64],
    runtime: &NodeRuntime,
) -> Result<Option<identity::NodeIdentity>, ServeError> {
    if cfg.bootstrap && !id.admitted {
        let id = identity::mark_admitted(&cfg.data_dir, *id)?;
        info!(voters = ?voters, "admission: bootstrapping a new cluster with the initial voters (--bootstrap)");
        return Ok(Some(id));
    }
    let started = std::time::Instant::now();
    let mut logged_wait = false;
    loop {
        let answers = if id.admitted {
            Vec::new()
        } else {
            runtime.ask_peers(cfg)
        };
        let decision = bootstrap::decide_start(
            cfg.rebuild,
            id.admitted,
            id.node_id,
            id.cluster_id,
            voters,
            &answers,
        )?;
        match decision {
            Admission::Resume => {
                if id.joined {
                    info!("admission: resume (joined earlier as a learner; configurations come from the leaders)");
                } else if id.rebuilding {
                    info!("admission: resume, still rebuilding (a crash interrupted the rebuild)");
                } else if cfg.rebuild {
                    info!("admission: resume; --rebuild ignored: the data directory was not wiped");
                } else {
                    info!("admission: resume (admitted earlier)");
                }
                return Ok(Some(*id));
            }
            Admission::Rebuild => {
                let id = identity::mark_rebuilding(&cfg.data_dir, *id)?;
                info!(answers = answers.len(), "admission: rebuild (--rebuild): the cluster counts this wiped node as a voter; every group starts non-voting until it holds what its leader had committed");
                return Ok(Some(id));
            }
            Admission::Bootstrap => {
                let id = identity::mark_admitted(&cfg.data_dir, *id)?;
                info!(voters = ?voters, answers = answers.len(), "admission: bootstrapping a new cluster with the initial voters");
                return Ok(Some(id));
            }
            Admission::Join => {
                // Recorded before any group exists: after a crash the node resumes as the
                // learner it joined as, never bootstrapping a configuration from --peers.
                let id = identity::mark_joined(&cfg.data_dir, *id)?;
                info!(
                    answers = answers.len(),
                    "admission: join: the cluster exists and does not count this node as a \
                     voter; starting as an empty learner, waiting for `tern cluster add-node \
                     --id {}` (its leaders add it as a learner and promote it once caught up)",
                    id.node_id
                );
                return Ok(Some(id));
            }
            Admission::Wait => {
                if started.elapsed() > ADMISSION_WAIT_MAX {
                    return Err(ServeError::Runtime(format!(
                        "admission: no majority of the initial voters {voters:?} answered within \
                         {}s; start them (or pass --bootstrap when creating a new cluster)",
                        ADMISSION_WAIT_MAX.as_secs()
                    )));
                }
                if !logged_wait {
                    info!(
                        answers = answers.len(),
                        "admission: waiting for a majority of the initial voters to answer"
                    );
                    logged_wait = true;
                }
                std::thread::sleep(ADMISSION_RETRY);
            }
        }
    }
}
