//! Wiring of a running node: the channels between shards, the peer network, and the shard
//! drivers on their executors. `serve` owns start-up and shutdown; this module owns what
//! runs in between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use tern_engine::engine::ShardContext;
use tern_net::{query_view, SharedView};
use tern_net::{
    LocalIdentity, Outbound, PeerDirectory, PeerEvent, PeerNetwork, PeerTransport, SendError,
    ShardPeerSetup, TcpTransport, TransportConfig, TransportStats,
};
use tern_raft::message::NodeId;
use tracing::{debug, info};
use uuid::Uuid;

use super::bootstrap::PeerView;
use super::config::NodeConfig;
use super::controller::{Member, CONTROLLER_GROUP};
use super::identity::wire_cluster_id;
use super::rebuild::NodeRebuild;
use super::shard::{MembershipSink, Shard, ShardMsg, ShardSetup};

/// Bounds each step of one view query to a peer.
const VIEW_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// Requests queued to one shard before senders wait (backpressure on the front ends).
pub const SHARD_INBOX_MAX: usize = 1024;

/// What every shard's task takes its part of, once.
pub struct NodeRuntime {
    node_id: u64,
    shards: u32,
    tick: Duration,
    raft: tern_raft::Config,
    /// The background scrubber's settings (`[recovery]`), `None` when it is off.
    scrub: Option<super::shard::ScrubConfig>,
    /// `[recovery]`, handed to every shard.
    recovery: super::recovery_budget::RecoveryLimits,
    controller_voters: Vec<u64>,
    admitted: AtomicBool,
    /// Admitted by joining a running cluster (`NODE` joined=1): see `ShardSetup::joined`.
    joined: AtomicBool,
    /// Set once before the shards start when the node's `NODE` file says it is rebuilding.
    rebuild: Mutex<Option<Arc<NodeRebuild>>>,
    identity: LocalIdentity,
    initial_members: Vec<Member>,
    senders: Vec<mpsc::Sender<ShardMsg>>,
    inboxes: Mutex<Vec<Option<mpsc::Receiver<ShardMsg>>>>,
    /// None for a standalone node (no peer listener).
    peer_setups: Option<Mutex<Vec<Option<ShardPeerSetup>>>>,
    network: Mutex<Option<PeerNetwork>>,
    /// The peer directory and the admission view, which the shards keep up to date from
    /// the controller (None for a standalone node).
    membership: Option<MembershipSink>,
}

/// A shard's transport: TCP to the peers, or none at all for a standalone node.
pub enum NodeTransport {
    Tcp(TcpTransport),
    /// `--standalone`: no peer listener, no peers; every send is refused.
    Alone,
}

impl PeerTransport for NodeTransport {
    fn send(&self, to: NodeId, outbound: Outbound) -> Result<(), SendError> {
        match self {
            NodeTransport::Tcp(t) => t.send(to, outbound),
            NodeTransport::Alone => Err(SendError::UnknownPeer(to)),
        }
    }

    async fn next_event(&self) -> Option<PeerEvent> {
        match self {
            NodeTransport::Tcp(t) => t.next_event().await,
            NodeTransport::Alone => std::future::pending().await,
        }
    }

    fn stats(&self) -> TransportStats {
        match self {
            NodeTransport::Tcp(t) => t.stats(),
            NodeTransport::Alone => TransportStats::default(),
        }
    }
}

/// The members a controller leader registers: this node with its configured addresses, and
/// each other initial voter at its peer address. A peer's Kafka and HTTP addresses are not in
/// this node's configuration: until the peer's own report arrives (`node_reports.rs`), which
/// registers the addresses it was configured with, they are taken to be on the peer's host
/// with this node's ports.
pub fn initial_members(cfg: &NodeConfig) -> Vec<Member> {
    let mut out = vec![Member {
        node_id: cfg.node_id,
        peer_addr: cfg.peer_addr,
        kafka_addr: cfg.kafka_addr,
        http_addr: cfg.http_addr,
    }];
    for p in cfg.peers.iter().filter(|p| p.node_id != cfg.node_id) {
        let mut kafka = cfg.kafka_addr;
        kafka.set_ip(p.addr.ip());
        let mut http = cfg.http_addr;
        http.set_ip(p.addr.ip());
        out.push(Member {
            node_id: p.node_id,
            peer_addr: p.addr,
            kafka_addr: kafka,
            http_addr: http,
        });
    }
    out
}

/// The shard count the data directory has (its `ENGINE` file), or will have when created.
pub fn shard_count(cfg: &NodeConfig) -> u32 {
    let path = cfg.data_dir.join("ENGINE");
    match std::fs::read_to_string(&path) {
        Ok(text) => match tern_engine::engine::EngineMeta::decode(&text) {
            Ok(meta) => meta.shards,
            // The engine refuses the directory with a clear error when it opens it.
            Err(_) => cfg.shards_resolved(),
        },
        Err(_) => cfg.shards_resolved(),
    }
}

impl NodeRuntime {
    /// Binds the peer listener (refused if the address is taken, also by another process)
    /// and prepares one inbox per shard.
    /// `view` is what the peer listener answers view queries with. The node hosts no group
    /// until [`NodeRuntime::set_admitted`] says it may.
    pub fn start(
        cfg: &NodeConfig,
        cluster_id: Uuid,
        shards: u32,
        view: SharedView,
    ) -> Result<Arc<Self>, String> {
        let ticks = cfg.raft.ticks();
        let mut raft = tern_raft::Config::new(cfg.node_id);
        raft.heartbeat_ticks = ticks.heartbeat_ticks;
        raft.election_ticks_min = ticks.election_ticks_min;
        raft.election_ticks_max = ticks.election_ticks_max;
        raft.quiesce = cfg.raft.quiesce_idle_groups;
        raft.validate().map_err(|e| format!("raft timing: {e}"))?;
        // A forced start (`--force-new-cluster`) is this node alone, whatever --peers says.
        let controller_voters: Vec<u64> = if cfg.peers.is_empty() || cfg.force_new_cluster {
            vec![cfg.node_id]
        } else {
            cfg.peers.iter().map(|p| p.node_id).collect()
        };
        let initial_members = initial_members(cfg);
        let mut senders = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(SHARD_INBOX_MAX);
            senders.push(tx);
            inboxes.push(Some(rx));
        }
        if cfg.standalone {
            // Nobody asks a standalone node for its view.
            drop(view);
            info!("standalone: no peer listener");
            return Ok(Arc::new(NodeRuntime {
                node_id: cfg.node_id,
                shards,
                tick: cfg.raft.tick,
                raft,
                scrub: cfg.scrub_config(),
                recovery: super::recovery_budget::RecoveryLimits::new(&cfg.recovery, cfg.raft.tick),
                controller_voters,
                admitted: AtomicBool::new(false),
                joined: AtomicBool::new(false),
                rebuild: Mutex::new(None),
                identity: LocalIdentity {
                    cluster_id: wire_cluster_id(cluster_id),
                    node_id: cfg.node_id,
                    shard_count: shards,
                },
                initial_members,
                senders,
                inboxes: Mutex::new(inboxes),
                peer_setups: None,
                network: Mutex::new(None),
                membership: None,
            }));
        }
        let identity = LocalIdentity {
            cluster_id: wire_cluster_id(cluster_id),
            node_id: cfg.node_id,
            shard_count: shards,
        };
        let directory = PeerDirectory::new(
            cfg.peers
                .iter()
                .filter(|p| p.node_id != cfg.node_id)
                .map(|p| (p.node_id, p.addr)),
        );
        // The acceptor answers view queries with `view`: without it, peers would hear a nil
        // cluster id and "not bootstrapped" from every node, and admission could not tell a
        // wiped voter from a new cluster.
        let membership = MembershipSink {
            directory: directory.clone(),
            view: view.clone(),
        };
        let (network, setups) = PeerNetwork::start_with_view(
            identity,
            cfg.peer_addr,
            directory,
            TransportConfig::default(),
            view,
        )
        .map_err(|e| format!("peer listener on {}: {e}", cfg.peer_addr))?;
        info!(addr = %network.local_addr(), "peer listener bound");
        Ok(Arc::new(NodeRuntime {
            node_id: cfg.node_id,
            shards,
            tick: cfg.raft.tick,
            raft,
            scrub: cfg.scrub_config(),
            recovery: super::recovery_budget::RecoveryLimits::new(&cfg.recovery, cfg.raft.tick),
            controller_voters,
            admitted: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            rebuild: Mutex::new(None),
            identity,
            initial_members,
            senders,
            inboxes: Mutex::new(inboxes),
            peer_setups: Some(Mutex::new(setups.into_iter().map(Some).collect())),
            network: Mutex::new(Some(network)),
            membership: Some(membership),
        }))
    }

    /// Whether this node may run the controller group (decided before the shards start).
    pub fn set_admitted(&self, admitted: bool) {
        self.admitted.store(admitted, Ordering::SeqCst);
    }

    /// The node joined a running cluster as a learner (decided before the shards start).
    pub fn set_joined(&self, joined: bool) {
        self.joined.store(joined, Ordering::SeqCst);
    }

    /// The node is being rebuilt: its shards start every group non-voting (`rebuild.rs`).
    pub fn set_rebuild(&self, rebuild: Arc<NodeRebuild>) {
        *self.rebuild.lock().unwrap_or_else(PoisonError::into_inner) = Some(rebuild);
    }

    /// One round of view queries to every other initial voter; the answers that came back.
    pub fn ask_peers(&self, cfg: &NodeConfig) -> Vec<PeerView> {
        let mut answers = Vec::new();
        for p in cfg.peers.iter().filter(|p| p.node_id != cfg.node_id) {
            match query_view(p.addr, &self.identity, p.node_id, VIEW_QUERY_TIMEOUT) {
                Ok(v) => answers.push(PeerView {
                    node_id: p.node_id,
                    cluster_id: Uuid::from_bytes(v.cluster_uuid),
                    bootstrapped: v.bootstrapped,
                    voters: v.voters,
                }),
                Err(e) => debug!(peer = p.node_id, "admission: no answer yet: {e}"),
            }
        }
        answers
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Senders to every shard, for front ends (Kafka, HTTP) on any thread.
    pub fn senders(&self) -> Vec<mpsc::Sender<ShardMsg>> {
        self.senders.clone()
    }

    /// The shard hosting the controller group.
    pub fn controller_shard(&self) -> u32 {
        tern_engine::shard_for_group(CONTROLLER_GROUP, self.shards)
    }

    /// Runs shard `ctx.shard`'s driver until `stop` fires. Returns the error that stopped the
    /// shard early, if any.
    pub async fn run_shard(
        self: Arc<Self>,
        ctx: &ShardContext,
        stop: oneshot::Receiver<()>,
    ) -> Option<String> {
        let shard = ctx.shard as usize;
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(shard)
            .and_then(Option::take);
        let transport = match &self.peer_setups {
            None => Some(NodeTransport::Alone),
            Some(setups) => setups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(shard)
                .and_then(Option::take)
                .map(|s| NodeTransport::Tcp(s.start())),
        };
        let (Some(inbox), Some(transport)) = (inbox, transport) else {
            return Some(format!(
                "shard {shard} has no inbox or transport (the directory has more shards than the node was started for)"
            ));
        };
        let transport = std::rc::Rc::new(transport);
        let mut own = self.senders[shard].clone();
        // The stop signal becomes a message in the shard's own inbox, after what was queued.
        glommio::spawn_local(async move {
            let _ = stop.await;
            let _ = own.send(ShardMsg::Stop).await;
        })
        .detach();
        let setup = ShardSetup {
            node_id: self.node_id,
            shard: ctx.shard,
            shards: self.shards,
            tick: self.tick,
            external_ticks: None,
            controller_voters: if self.admitted.load(Ordering::SeqCst) {
                self.controller_voters.clone()
            } else {
                Vec::new()
            },
            initial_members: self.initial_members.clone(),
            raft: self.raft.clone(),
            inbox,
            shard_senders: self.senders.clone(),
            rebuild: self
                .rebuild
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            entry_cache_bytes: super::log_store::CACHE_BYTES_MAX,
            scrub: self.scrub,
            recovery: self.recovery,
            joined: self.joined.load(Ordering::SeqCst),
            membership: self.membership.clone(),
        };
        Shard::run(setup, ctx.wal.clone(), transport).await
    }

    /// Stops the peer listener (connections end with their shards).
    pub fn stop_network(&self) {
        if let Some(mut n) = self
            .network
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            n.stop();
        }
    }
}
