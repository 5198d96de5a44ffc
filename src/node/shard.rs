//! The shard driver: runs every Raft group placed on one shard over the shard's WAL and peer
//! transport, on the shard's own executor. Nothing here is shared with another thread: other
//! shards and the client front ends talk to it through channels.
//!
//! One round of the loop (see `tern_raft`'s crate docs for the contract it follows):
//! 1. Take every event that arrived (ticks, peer messages, client requests, completed reads
//!    and writes) and feed it to its group.
//! 2. For every group with a `Ready`: send the messages that may leave before persistence
//!    (the leader's AppendEntries go out in parallel with its own fsync), add its snapshot
//!    point, entries and hard state to ONE engine write batch for the whole shard, apply its
//!    committed entries, start the entry reads it asked for.
//! 3. Submit the batch (one group-commit write, one fdatasync for every group of the shard)
//!    and queue the round behind the batches before it.
//! 4. When the batch is durable (batches finish in order): send the round's remaining
//!    messages and tell each group what it persisted (`on_persisted`).
//!
//! If the shard's WAL stops on an I/O error (fail-stop), every group on the shard stops: no
//! more heartbeats (so followers elect a leader elsewhere), no acknowledgement; requests are
//! answered with a storage error. Other shards keep serving.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use tern_engine::storage::Storage;
use tern_engine::{Durable, OwnedEntry, ShardWal, WriteBatch};
use tern_net::{
    ClusterView, HeartbeatBatch, LedGroup, NodeAddrs, NodeReport, Outbound, PeerDirectory,
    PeerEvent, PeerTransport, SharedView,
};
use tern_raft::message::{ConfState, Entry, EntryKind, Message, MessageBody, NodeId};
use tern_raft::ready::EntryFetch;
use tern_raft::{Config as RaftConfig, PersistAck, RawNode, Role};
use tracing::{debug, error, info, warn};

use super::compaction::{self, Compaction, CompactionOutcome};
use super::controller::{
    desired_groups, Command, ControllerState, HostedGroup, Member, Outcome, CONTROLLER_GROUP,
};
use super::fetch_wait::FetchWaiters;
use super::group::{Group, Machine, PendingCommand, PendingProduce};
use super::leader_balance::{transfer_target, LeaderBalancer, LeaderView};
use super::log_store::{engine_kind, raft_kind, EngineLog};
use super::node_reports::NodeReports;
use super::offset_checkpoint::{
    usable_marks, LogFacts, OffsetCheckpoint, CHECKPOINT_ENTRIES, MARKS_MAX,
};
use super::partition::{OffsetMap, PartitionSnapshot};
use super::planted::{self, Planted};
use super::producers::{ProducerTable, SequenceCheck};
use super::rebuild::NodeRebuild;
use super::records::{parse_batches, record_count, stamp, BatchInfo};
use super::replica_moves::{controller_placement, next_change};
use super::requests::{
    Acks, EpochEnd, FetchReply, OffsetSpec, PartitionRequest, PartitionView, ProduceReply,
    RequestError,
};
use super::retention::{retention_point, RETENTION_CHECK_TICKS};
use super::snapshot_meta::GroupSnapshot;

/// Ticks between the scans of every group for a rebuilding group that should start pulling
/// the recovery stream while none does (`tick_recovery_stream`). Not used for the leader
/// balancing and replica moves: their conditions (a replica's match index at the leader's
/// commit or last index) hold only now and then under load, and a scan every 10 ticks missed
/// them for over a minute (`tests/members.rs`).
pub(super) const GROUP_SCAN_TICKS: u64 = 10;

/// Ticks between the leader-balancing and replica-move checks of quiet groups (awake groups
/// are checked every tick, for the reason above). A quiet group's log and progress do not
/// change while it is quiet, so only time (the balancer's pause) and the controller's
/// placement can make it need a transfer or a configuration change: checking it every 100 ms
/// costs it at most that much delay, and an idle shard of 10 000 groups a tenth of the scans.
const QUIET_GROUP_SCAN_TICKS: u64 = 10;

mod liveness;
mod lost_replica;
mod rebuild_driver;
mod recovery_driver;
mod recovery_stream;
mod repair_driver;
mod scrubber;

pub use scrubber::ScrubConfig;

/// The Raft tick. Election and heartbeat timeouts are counted in ticks (`RaftConfig`).
pub const TICK: Duration = Duration::from_millis(10);
/// Largest produce payload accepted in one request: one Raft entry, well inside a WAL batch.
pub const PRODUCE_BYTES_MAX: u64 = 1 << 20;
/// Events handled per round before the round's Readies are processed, so a flood of one kind
/// of event cannot starve persistence.
const EVENTS_PER_ROUND_MAX: usize = 4096;
/// Fetch reads in flight per shard.
const ENTRY_READS_INFLIGHT_MAX: usize = 64;
/// A replica the controller moved away (see `Shard::leaving`) is purged at the latest after
/// this many of its longest election timeouts without a leader: its group's leader no
/// longer talks to it (the configuration without it committed before it heard of it), so it
/// would wait for ever. Purging it then is what a removal did before this rule: the others
/// hold a majority's copy of everything committed.
const LEAVING_LEADERLESS_ELECTIONS_MAX: u64 = 10;

/// How long a replica in `Shard::leaving` has been left alone, in ticks.
#[derive(Debug, Default, Clone, Copy)]
struct LeavingReplica {
    /// Without a leader.
    leaderless: u64,
    /// Without any message for its group. A learner keeps its last leader for ever (it never
    /// campaigns), so when the configuration that drops it commits before it hears of it, no
    /// message comes again while `leaderless` stays 0 (node simulation seed 24). Used only
    /// while the replica is no voter of its own configuration: a learner's copy counts for
    /// nothing, so purging it loses nothing, whereas a silent voter may be a quiet group's.
    unheard: u64,
}
/// A removed member stays in the controller group's configuration until it holds everything
/// committed, so that it applies its own `RemoveMember` and lets go of its partitions (once
/// out of the configuration nobody sends it anything), but at most this many of the longest
/// election timeouts after the controller's leader saw the removal: a dead node must not keep
/// a vote for ever. 15 s at the default timing.
const REMOVED_CATCH_UP_ELECTIONS_MAX: u64 = 50;

/// Messages that reach a shard from outside its executor (other shards, front ends).
#[derive(Debug)]
pub enum ShardMsg {
    Partition {
        group: u64,
        request: PartitionRequest,
    },
    /// A controller command, for the shard hosting group 0; answered once applied.
    Controller {
        command: Command,
        reply: oneshot::Sender<Result<Outcome, RequestError>>,
    },
    /// The controller's state after it changed (sent by the shard hosting group 0).
    ControllerState(Box<ControllerState>),
    /// A copy of the shard's view, for status endpoints and the CLI.
    Status { reply: oneshot::Sender<ShardStatus> },
    /// What a client front end needs for Metadata and routing: the controller state this
    /// shard knows and who leads each group hosted here.
    View { reply: oneshot::Sender<ShardView> },
    /// A copy of the shard's counters and status, for `/metrics` (src/node/http/metrics.rs).
    Metrics {
        reply: oneshot::Sender<ShardMetrics>,
    },
    /// Compact now: the snapshot point of `group` (or of every group on the shard) advances
    /// to its applied index (for `POST /admin/snapshot`). Answered with what each group did
    /// once the snapshot points are in a submitted write batch.
    Snapshot {
        group: Option<u64>,
        reply: oneshot::Sender<Vec<CompactionOutcome>>,
    },
    /// Another shard's once-a-second recovery budget settle (`recovery_budget.rs`).
    RecoveryLend(super::recovery_budget::Lend),
    /// Stop: fail waiting requests, stop the loop.
    Stop,
}

/// One follower's replication progress as its leader knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaProgress {
    pub node: u64,
    pub match_index: u64,
    /// `commit - match_index` (0 when the replica holds everything committed).
    pub lag: u64,
    /// Heard from since the leader's last check-quorum round.
    pub active: bool,
}

/// What a scrape of `/metrics` copies out of a shard: its status plus its plain counters.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    pub status: ShardStatus,
    pub wal: tern_engine::WalStats,
    /// WAL bytes and records replayed when the shard opened.
    pub replayed_bytes: u64,
    pub replayed_records: u64,
    pub counters: super::stats::ShardCounters,
}

/// One group as `tern raft-info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    pub group: u64,
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub role: String,
    pub term: u64,
    /// Who this replica voted for in `term` (0: nobody).
    pub vote: u64,
    pub leader: u64,
    pub commit: u64,
    /// The leader's commit index as this replica last heard it (its own when leading): lag
    /// on this node is `leader_commit - applied`.
    pub leader_commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub voters: Vec<u64>,
    /// The old voters while the configuration is joint (empty otherwise).
    pub voters_outgoing: Vec<u64>,
    pub learners: Vec<u64>,
    /// The configuration above is committed (its entry is at or below `commit`): a majority
    /// of the group holds it.
    pub conf_committed: bool,
    /// Leader only: every other member's progress. Empty on a follower.
    pub replicas: Vec<ReplicaProgress>,
    pub halted: Option<String>,
    /// Partitions: log entries read at start to rebuild the offset map (bounded by the
    /// offset checkpoint, src/node/offset_checkpoint.rs).
    pub entries_read_at_start: Option<u64>,
    /// This replica lost its disk and is being rebuilt: it votes for nobody and acknowledges
    /// nothing above its leader's commit (docs/replication.md, section 5).
    pub rebuilding: bool,
    /// Rebuilding only: the bytes it still has to receive, estimated from its entries behind
    /// its leader's commit and the mean entry size received so far (0 before the first).
    pub recovery_bytes_remaining: u64,
    /// Quiet: idle, sending no heartbeats and counting no election timeout (docs/raft.md,
    /// "Quiescence of idle groups").
    pub quiet: bool,
}

/// A shard's catch-up traffic (docs/replication.md, sections 6 and 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardRecovery {
    /// Bytes received by rebuilding groups (entries and snapshot chunks).
    pub bytes_in_total: u64,
    /// Bytes read back from disk for followers behind a leader's cache.
    pub bytes_out_total: u64,
    /// Catch-up bytes, both directions, in the last whole second.
    pub bytes_last_sec: u64,
    /// Groups receiving with a recovery slot, plus groups that served a catch-up read in
    /// the last second.
    pub transfers_active: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardStatus {
    pub shard: u32,
    pub failed: Option<String>,
    pub groups: Vec<GroupStatus>,
    pub recovery: ShardRecovery,
}

/// Who leads one group, as this shard's replica of it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLeader {
    pub group: u64,
    /// 0 when unknown.
    pub leader: u64,
    /// The Raft term (Kafka's leader epoch).
    pub term: u64,
}

/// A shard's answer to [`ShardMsg::View`].
#[derive(Debug, Clone)]
pub struct ShardView {
    pub controller: Option<Box<ControllerState>>,
    pub leaders: Vec<GroupLeader>,
}

/// What a shard needs to run; `Send`, so it can move into the shard's executor.
pub struct ShardSetup {
    pub node_id: NodeId,
    pub shard: u32,
    pub shards: u32,
    /// The Raft tick (`raft.tick`, default [`TICK`]).
    pub tick: Duration,
    /// When set, the shard ticks once per `()` received here instead of on a timer every
    /// `tick`: the node simulation drives simulated time itself.
    pub external_ticks: Option<mpsc::UnboundedReceiver<()>>,
    /// Initial voters of the controller group (this node included), if this node is one.
    pub controller_voters: Vec<NodeId>,
    /// The members a controller leader registers when its state lacks them: this node with
    /// its real addresses, and the other initial voters (see `runtime::initial_members`).
    pub initial_members: Vec<Member>,
    pub raft: RaftConfig,
    pub inbox: mpsc::Receiver<ShardMsg>,
    /// Senders to every shard (this one included), by shard index.
    pub shard_senders: Vec<mpsc::Sender<ShardMsg>>,
    /// Set when the node may be rebuilding (`NODE` said `rebuilding=1` at start).
    pub rebuild: Option<std::sync::Arc<NodeRebuild>>,
    /// Payload bytes of each group's entry cache (`log_store::CACHE_BYTES_MAX` in production).
    pub entry_cache_bytes: u64,
    /// The background scrubber (`[recovery] scrub_interval`); `None`: off.
    pub scrub: Option<ScrubConfig>,
    /// `[recovery]`: the node's catch-up budget and recovery slots per shard.
    pub recovery: super::recovery_budget::RecoveryLimits,
    /// The node joined a running cluster as a learner (`NODE` says `joined=1`): the
    /// controller group starts with an empty configuration (`controller_voters` is then
    /// empty) and no partition group takes its initial replicas as its configuration; every
    /// configuration comes from a leader, which adds this node as a learner first.
    pub joined: bool,
    /// Where the membership the controller holds is published on a real node; `None` in
    /// tests and the node simulation (whose transport knows every node).
    pub membership: Option<MembershipSink>,
}

/// What a real node publishes from its controller (`runtime.rs` builds it): the peer
/// transport's directory learns every member's peer address from the controller's state,
/// and the view the peer listener answers admission queries with names the controller
/// group's current voters (so a node removed by `tern cluster remove-node` and started
/// again on an empty directory is told it is not a voter, and joins).
#[derive(Clone, Debug)]
pub struct MembershipSink {
    pub directory: PeerDirectory,
    pub view: SharedView,
}

enum Event {
    Tick,
    Peer(PeerEvent),
    Msg(ShardMsg),
    Fetched {
        group: u64,
        fetch: EntryFetch,
        result: tern_engine::Result<Vec<OwnedEntry>>,
    },
    Persisted {
        round: Vec<PersistedGroup>,
        result: tern_engine::Result<()>,
    },
    Failed(String),
    /// A read outside the loop (a Kafka fetch) found entry `index` of `group` damaged.
    Damaged {
        group: u64,
        index: u64,
        why: String,
    },
    /// A repair copy from `from` was written (or not).
    RepairWritten {
        entry: tern_net::EntryId,
        from: NodeId,
        result: tern_engine::Result<()>,
    },
    /// A recovery-stream read served to a peer finished (`shard/recovery_stream.rs`).
    RecoveryServed {
        group: u64,
        bytes: u64,
        damage: Option<tern_engine::Error>,
    },
}

/// What one group does once a round's batch is durable.
struct PersistedGroup {
    group: u64,
    ack: PersistAck,
    messages: Vec<Message>,
    /// The group wrote a snapshot point in this round: its log's view must be refreshed.
    snapshot: bool,
}

struct Round {
    durable: Option<Durable>,
    groups: Vec<PersistedGroup>,
}

pub struct Shard<S: Storage, T: PeerTransport> {
    node_id: NodeId,
    shard: u32,
    shards: u32,
    tick: Duration,
    raft: RaftConfig,
    wal: Rc<ShardWal<S>>,
    transport: Rc<T>,
    /// Ordered, so that a round visits groups in the same order on every run (the node
    /// simulation replays a seed exactly).
    groups: BTreeMap<u64, Group<S>>,
    dirty: BTreeSet<u64>,
    /// The latest controller state this shard knows (applied here, or received).
    controller: Option<Box<ControllerState>>,
    initial_members: Vec<Member>,
    /// The controller term in which this node last proposed the missing members.
    members_proposed_term: u64,
    shard_senders: Vec<mpsc::Sender<ShardMsg>>,
    events: mpsc::UnboundedSender<Event>,
    rounds: mpsc::UnboundedSender<Round>,
    reads_inflight: Rc<std::cell::Cell<usize>>,
    /// Set by the ticker when it queues a tick, cleared when the loop handles it.
    tick_pending: Rc<std::cell::Cell<bool>>,
    failed: Option<String>,
    stopping: bool,
    /// Fetches parked until their partition's high watermark passes their offset.
    fetch_waiters: FetchWaiters,
    /// Groups that logged `caught_up` (applied their leader's commit as heard) since start.
    caught_up: BTreeSet<u64>,
    started: std::time::Instant,
    /// Paces the hand-over of leadership to preferred replicas.
    balancer: LeaderBalancer,
    /// Snapshot points planned (retention, snapshot requests) for the next round's batch.
    compactions: BTreeMap<u64, Compaction>,
    /// Per partition started on this shard: the log entries read to rebuild its offset map.
    entries_read_at_start: BTreeMap<u64, u64>,
    /// Ticks handled, to run retention every `RETENTION_CHECK_TICKS`.
    ticks: u64,
    /// Damaged entries being repaired from peers (`repair.rs`, `shard/repair_driver.rs`).
    repairs: super::repair::Repairs,
    /// Node reports sent and received (`node_reports.rs`).
    reports: NodeReports,
    /// See [`ShardSetup::rebuild`]; `shard/rebuild_driver.rs` uses it.
    rebuild: Option<std::sync::Arc<NodeRebuild>>,
    entry_cache_bytes: u64,
    /// Payload bytes of the entries stepped or proposed since the last Ready round: they all
    /// go into the next round's one write batch, which the engine refuses whole (and the
    /// shard would stop) over `request_bytes_max`. See [`Shard::round_has_room`].
    round_entry_bytes: u64,
    /// Catch-up budget, recovery slots, waiting work (`shard/recovery_driver.rs`).
    recovery: recovery_driver::Recovery,
    /// Recovery-stream pulls and counters (`shard/recovery_stream.rs`).
    streams: recovery_stream::Streams,
    /// See [`ShardSetup::joined`].
    joined: bool,
    membership: Option<MembershipSink>,
    /// Partition groups the controller no longer places here, kept until their own
    /// configuration no longer names this node (docs/replication.md, "a replica stays until
    /// a configuration of its group without the node reached it"), with how long each has
    /// been left alone since.
    leaving: BTreeMap<u64, LeavingReplica>,
    /// As the controller's leader: removed members still in the controller's configuration,
    /// with the ticks since this node saw them removed (`REMOVED_CATCH_UP_ELECTIONS_MAX`).
    /// Value: (ticks waited, the controller's last index when the removal was seen).
    removed_waits: BTreeMap<NodeId, (u64, u64)>,
    /// Groups with promises here, and lost ones being rebuilt (`node/group_ledger.rs`).
    lost: lost_replica::LostReplicas,
    /// The node-pair liveness that keeps quiet groups quiet (`shard/liveness.rs`).
    liveness: liveness::PeerLiveness,
}

impl<S: Storage + 'static, T: PeerTransport + 'static> Shard<S, T> {
    /// Runs the shard until it is told to stop. Returns the error that stopped it, if any.
    pub async fn run(setup: ShardSetup, wal: Rc<ShardWal<S>>, transport: Rc<T>) -> Option<String> {
        let (events_tx, events_rx) = mpsc::unbounded::<Event>();
        let (rounds_tx, rounds_rx) = mpsc::unbounded::<Round>();
        // A transfer that fails takes up to an election timeout; pausing twice the longest
        // one before the next attempt keeps a group writable most of the time even when its
        // preferred replica cannot win.
        let balance_pause = setup.raft.election_ticks_max.saturating_mul(2);
        let mut shard = Shard {
            node_id: setup.node_id,
            shard: setup.shard,
            shards: setup.shards,
            tick: setup.tick,
            raft: setup.raft,
            wal: wal.clone(),
            transport: transport.clone(),
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            controller: None,
            initial_members: setup.initial_members,
            members_proposed_term: 0,
            shard_senders: setup.shard_senders,
            events: events_tx,
            rounds: rounds_tx,
            reads_inflight: Rc::new(std::cell::Cell::new(0)),
            tick_pending: Rc::new(std::cell::Cell::new(false)),
            failed: None,
            stopping: false,
            fetch_waiters: FetchWaiters::default(),
            caught_up: BTreeSet::new(),
            started: std::time::Instant::now(),
            balancer: LeaderBalancer::new(balance_pause),
            compactions: BTreeMap::new(),
            entries_read_at_start: BTreeMap::new(),
            ticks: 0,
            repairs: super::repair::Repairs::default(),
            reports: NodeReports::default(),
            rebuild: setup.rebuild,
            entry_cache_bytes: setup.entry_cache_bytes,
            round_entry_bytes: 0,
            recovery: recovery_driver::Recovery::new(
                setup.shard,
                setup.shards,
                setup.recovery,
                setup.tick,
            ),
            streams: Default::default(),
            joined: setup.joined,
            membership: setup.membership,
            leaving: BTreeMap::new(),
            removed_waits: BTreeMap::new(),
            lost: lost_replica::LostReplicas::load(&wal, setup.shard, setup.shards),
            liveness: liveness::PeerLiveness::new(setup.node_id),
        };
        // Dropping these tasks (when the loop ends) cancels them.
        let mut tasks = shard.spawn_sources(setup.inbox, setup.external_ticks, rounds_rx);
        if let Some(cfg) = setup.scrub {
            tasks.push(glommio::spawn_local(scrubber::run(
                cfg,
                shard.shard,
                wal.clone(),
                shard.events.clone(),
            )));
        }
        // Damaged entries recovery kept in their logs (engine/src/repaired.rs): repaired from
        // peers at once rather than when something first reads them.
        let kept: Vec<(u64, u64)> = wal
            .recovery_report()
            .damaged_entries
            .iter()
            .filter(|(_, v)| *v == tern_engine::repaired::EntryDamage::Unrepaired)
            .map(|(e, _)| (e.group, e.index))
            .collect();
        for (group, index) in kept {
            shard.note_damage(group, index, "damaged entry record found by recovery");
        }
        if (!setup.controller_voters.is_empty() || shard.joined)
            && tern_engine::shard_for_group(CONTROLLER_GROUP, shard.shards) == shard.shard
        {
            // A joined node's controller waits, empty, for its leader to add it as a learner.
            let voters = if shard.joined {
                ConfState::default()
            } else {
                ConfState::with_voters(&setup.controller_voters)
            };
            if let Err(e) = shard.start_group(CONTROLLER_GROUP, voters, None).await {
                error!(shard = shard.shard, "controller group did not start: {e}");
                shard.failed = Some(format!("controller group did not start: {e}"));
            }
            // The single-voter rules compare the configuration with --peers, which says
            // nothing about a joined node's controller.
            if !shard.joined {
                if let Err(why) = shard.check_controller_start(&setup.controller_voters).await {
                    error!(shard = shard.shard, "{why}");
                    // Returning ends the node (a shard that exits stops the others).
                    return Some(why);
                }
            }
            // A controller restarted from a snapshot with no entries after it applies nothing:
            // its state must reach the shards (which start their partitions from it) now.
            let from_snapshot = shard
                .groups
                .get(&CONTROLLER_GROUP)
                .is_some_and(|g| g.raw.first_index() > 1);
            if from_snapshot {
                shard.broadcast_controller().await;
            }
        }
        shard.main_loop(events_rx).await;
        drop(tasks);
        shard.failed.clone()
    }

    /// The tasks that turn the outside world into events.
    fn spawn_sources(
        &self,
        mut inbox: mpsc::Receiver<ShardMsg>,
        mut external_ticks: Option<mpsc::UnboundedReceiver<()>>,
        mut rounds: mpsc::UnboundedReceiver<Round>,
    ) -> Vec<glommio::Task<()>> {
        let mut tasks = Vec::new();
        let ev = self.events.clone();
        // A tick is skipped rather than queued when the loop is behind: a slow round must not
        // turn into a burst of ticks (and a burst of elections) afterwards.
        let pending = self.tick_pending.clone();
        let tick = self.tick;
        tasks.push(glommio::spawn_local(async move {
            loop {
                match &mut external_ticks {
                    None => glommio::timer::sleep(tick).await,
                    Some(ticks) => {
                        if ticks.next().await.is_none() {
                            break;
                        }
                    }
                }
                if pending.replace(true) {
                    continue;
                }
                if ev.unbounded_send(Event::Tick).is_err() {
                    break;
                }
            }
        }));
        let ev = self.events.clone();
        let transport = self.transport.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(e) = transport.next_event().await {
                if ev.unbounded_send(Event::Peer(e)).is_err() {
                    break;
                }
            }
        }));
        let ev = self.events.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(m) = inbox.next().await {
                if ev.unbounded_send(Event::Msg(m)).is_err() {
                    break;
                }
            }
        }));
        // Rounds finish in submission order: one task awaits them one after another.
        let ev = self.events.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(round) = rounds.next().await {
                let result = match round.durable {
                    Some(d) => d.await,
                    None => Ok(()),
                };
                let event = Event::Persisted {
                    round: round.groups,
                    result,
                };
                if ev.unbounded_send(event).is_err() {
                    break;
                }
            }
        }));
        let ev = self.events.clone();
        let wal = self.wal.clone();
        tasks.push(glommio::spawn_local(async move {
            let err = wal.failed().await;
            let _ = ev.unbounded_send(Event::Failed(err.to_string()));
        }));
        tasks
    }

    async fn main_loop(&mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        while !self.stopping {
            let Some(first) = events.next().await else {
                break;
            };
            self.handle(first).await;
            let mut handled = 1;
            while handled < EVENTS_PER_ROUND_MAX {
                match events.try_recv() {
                    Ok(e) => self.handle(e).await,
                    _ => break,
                }
                handled += 1;
            }
            if self.failed.is_none() && !self.stopping {
                self.register_members();
                self.process_readies().await;
            }
        }
        for g in self.groups.values_mut() {
            g.fail_pending(RequestError::ShuttingDown);
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => {
                self.tick_pending.set(false);
                for (group, request) in self.fetch_waiters.expired(std::time::Instant::now()) {
                    self.partition_request(group, request);
                }
                if self.failed.is_some() {
                    return;
                }
                self.liveness.send_beats(
                    self.ticks,
                    self.raft.heartbeat_ticks,
                    self.controller.as_deref(),
                    &*self.transport,
                );
                let silent = self
                    .liveness
                    .silent_peers(self.ticks, self.raft.election_ticks_min);
                for (id, g) in self.groups.iter_mut() {
                    if g.raw.is_quiet() {
                        // A quiet group's ticks change nothing; it wakes when a fellow
                        // member's node falls silent.
                        if liveness::wake_if_silent(&mut g.raw, &silent) {
                            self.dirty.insert(*id);
                        }
                        continue;
                    }
                    if g.halted.is_none() {
                        g.raw.tick();
                        // Most ticks of an idle group change nothing: only a group with
                        // work (a heartbeat to send, an election) or a new role goes to
                        // the next Ready round.
                        if g.raw.has_ready() || g.raw.role() != g.last_role {
                            self.dirty.insert(*id);
                        }
                    }
                }
                self.log_caught_up();
                self.tick_rebuild().await;
                self.tick_lost_replicas();
                self.tick_recovery();
                self.tick_recovery_stream();
                self.balance_leaders();
                self.move_replicas();
                self.move_controller_members();
                self.retire_leaving();
                self.publish_voters();
                self.ticks += 1;
                self.send_reports();
                if self.ticks.is_multiple_of(RETENTION_CHECK_TICKS) {
                    self.enforce_retention();
                }
                self.repair_tick();
            }
            Event::Peer(PeerEvent::Repair(message)) => self.on_repair_message(message),
            Event::Damaged { group, index, why } => self.note_damage(group, index, &why),
            Event::RepairWritten {
                entry,
                from,
                result,
            } => self.on_repair_written(entry, from, result).await,
            Event::Peer(PeerEvent::Raft { messages, from }) => {
                self.liveness.heard(from, self.ticks);
                for (group, m) in messages {
                    self.step_recovering(group, m);
                }
            }
            Event::Peer(PeerEvent::Heartbeats(batch)) => {
                self.liveness.heard(batch.from, self.ticks);
                for (group, m) in batch.into_messages() {
                    self.step(group, m);
                }
            }
            Event::Peer(PeerEvent::Report(report)) => self.on_report(report),
            Event::Peer(PeerEvent::Recovery(message)) => self.on_recovery_message(message),
            Event::RecoveryServed {
                group,
                bytes,
                damage,
            } => self.on_recovery_served(group, bytes, damage),
            Event::Peer(PeerEvent::Unreachable { peer }) => {
                for (id, g) in self.groups.iter_mut() {
                    g.raw.report_unreachable(peer);
                    self.dirty.insert(*id);
                }
            }
            Event::Msg(m) => self.handle_msg(m).await,
            Event::Fetched {
                group,
                fetch,
                result,
            } => {
                self.reads_inflight.set(self.reads_inflight.get() - 1);
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                match result {
                    Ok(entries) => {
                        let entries: Vec<Entry> = entries
                            .into_iter()
                            .map(|e| Entry {
                                term: e.term,
                                index: e.index,
                                kind: raft_kind(e.kind),
                                data: e.data,
                            })
                            .collect();
                        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
                        g.raw.storage_mut().cache.insert_read(entries);
                        g.raw.on_entries_fetched(fetch);
                        self.dirty.insert(group);
                        self.on_catch_up_read(&fetch, bytes);
                    }
                    // The core forgets the fetch after `fetch_retry_ticks` and asks again (a
                    // damaged entry is read again once repaired).
                    Err(e) => {
                        warn!(group, "entry read failed: {e}");
                        self.note_read_error(&e);
                    }
                }
            }
            Event::Persisted { round, result } => match result {
                Ok(()) => self.on_round_durable(round),
                Err(e) => self.fail(format!("write failed: {e}")),
            },
            Event::Failed(why) => self.fail(why),
        }
    }

    fn step(&mut self, group: u64, m: Message) {
        let Some(g) = self.groups.get_mut(&group) else {
            // Not (yet) hosted here: the controller has not told this shard, or the group was
            // removed. Raft retransmits, so dropping is safe.
            debug!(
                group,
                "message for a group not hosted on this shard dropped"
            );
            return;
        };
        if g.halted.is_some() || self.failed.is_some() {
            return;
        }
        if let Some(alone) = self.leaving.get_mut(&group) {
            alone.unheard = 0;
        }
        liveness::wake_for_message(&mut g.raw, &m, &self.liveness, self.ticks);
        // An entry this node's WAL cannot hold as one record (a leader configured with larger
        // segments) would refuse the round's write batch and stop the whole shard: refuse the
        // message instead. The group cannot follow that leader until the configurations agree
        // (docs/configuration.md, `engine.segment_bytes`); every other group keeps going.
        if let MessageBody::Append { entries, .. } = &m.body {
            let max = self.wal.payload_bytes_max();
            if let Some(e) = entries.iter().find(|e| e.data.len() as u64 > max) {
                warn!(
                    group,
                    from = m.from,
                    index = e.index,
                    bytes = e.data.len(),
                    max,
                    "entry larger than this node's WAL record limit refused (engine.segment_bytes too small for the leader's entries)"
                );
                return;
            }
            let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
            if !round_has_room(self.round_entry_bytes, bytes, self.wal.request_bytes_max()) {
                // A follower catching up (or being rebuilt) receives a leader's whole window
                // between two rounds. Dropping a Raft message is safe: the leader sends it
                // again after the next heartbeat answer.
                debug!(
                    group,
                    from = m.from,
                    bytes,
                    "append dropped: this round's write batch is full"
                );
                return;
            }
            self.round_entry_bytes += bytes;
        }
        tracing::trace!(target: "tern::raft_messages", group, "step {m}");
        if let Err(e) = g.raw.step(m) {
            debug!(group, "message refused: {e}");
        }
        self.dirty.insert(group);
    }

    /// Fail-stop: the WAL refused a write or fsync. Nothing more is acknowledged or sent.
    fn fail(&mut self, why: String) {
        if self.failed.is_some() {
            return;
        }
        error!(
            shard = self.shard,
            "shard stopped (fail-stop): {why}; its groups stop acknowledging and step down"
        );
        for g in self.groups.values_mut() {
            g.fail_pending(RequestError::StorageFailed(why.clone()));
        }
        self.failed = Some(why);
    }

    async fn handle_msg(&mut self, m: ShardMsg) {
        match m {
            ShardMsg::Stop => self.stopping = true,
            ShardMsg::RecoveryLend(lend) => self.on_recovery_lend(lend),
            ShardMsg::Snapshot { group, reply } => {
                let groups: Vec<u64> = match group {
                    Some(id) => vec![id],
                    None => self.groups.keys().copied().collect(),
                };
                let outcomes = groups
                    .into_iter()
                    .map(|id| self.compact(id, u64::MAX))
                    .collect();
                let _ = reply.send(outcomes);
            }
            ShardMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            ShardMsg::Metrics { reply } => {
                let report = self.wal.recovery_report();
                let _ = reply.send(ShardMetrics {
                    status: self.status(),
                    wal: self.wal.stats(),
                    replayed_bytes: report.bytes,
                    replayed_records: report.records,
                    counters: super::stats::snapshot(),
                });
            }
            ShardMsg::View { reply } => {
                let leaders = self
                    .groups
                    .iter()
                    .map(|(&group, g)| GroupLeader {
                        group,
                        leader: g.raw.leader(),
                        term: g.raw.term(),
                    })
                    .collect();
                let leaders = self.reports.leaders(leaders, self.ticks);
                let _ = reply.send(ShardView {
                    controller: self.controller.clone(),
                    leaders,
                });
            }
            ShardMsg::ControllerState(state) => self.on_controller_state(state).await,
            ShardMsg::Controller { command, reply } => self.propose_command(command, reply),
            ShardMsg::Partition { group, request } => self.partition_request(group, request),
        }
    }

    /// Logs `caught_up` once per group (since this start) when it knows a leader and has
    /// applied everything that leader had committed when it last heard from it: the line
    /// operators follow with `grep -E "(recovery|replay|caught_up)"` (seed 000).
    fn log_caught_up(&mut self) {
        // `caught_up` holds only groups of this shard (removal takes them out): when it is as
        // large as `groups`, every group has logged and there is nothing to scan.
        if self.caught_up.len() >= self.groups.len() {
            return;
        }
        for (&id, g) in &self.groups {
            // Nothing committed heard: a new replica that has not received its leader's log
            // yet (the rule of `/ready`, http/status.rs).
            if self.caught_up.contains(&id) || g.raw.leader() == 0 || g.raw.leader_commit() == 0 {
                continue;
            }
            if g.raw.applied() < g.raw.leader_commit() {
                continue;
            }
            let (topic, partition) = match &g.machine {
                Machine::Partition { hosted, .. } => (hosted.topic.as_str(), hosted.partition),
                Machine::Controller(_) => ("(controller)", 0),
            };
            info!(
                shard = self.shard,
                group = id,
                topic,
                partition,
                applied = g.raw.applied(),
                leader = g.raw.leader(),
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "caught_up: group applied its leader's commit"
            );
            self.caught_up.insert(id);
        }
    }

    pub fn status(&self) -> ShardStatus {
        let mut groups: Vec<GroupStatus> = self
            .groups
            .iter()
            .map(|(&id, g)| {
                let (topic, partition) = match &g.machine {
                    Machine::Partition { hosted, .. } => {
                        (Some(hosted.topic.clone()), Some(hosted.partition))
                    }
                    Machine::Controller(_) => (None, None),
                };
                let conf = g.raw.conf();
                let commit = g.raw.commit();
                let recovery_bytes_remaining = if g.raw.is_rebuilding() {
                    let behind = g.raw.leader_commit().saturating_sub(g.raw.applied());
                    self.recovery_bytes_remaining(id, behind)
                } else {
                    0
                };
                let replicas = conf
                    .voters
                    .iter()
                    .chain(conf.learners.iter())
                    .filter(|&&n| n != self.node_id)
                    .filter_map(|&n| {
                        g.raw.progress(n).map(|p| ReplicaProgress {
                            node: n,
                            match_index: p.match_index,
                            lag: commit.saturating_sub(p.match_index),
                            active: p.recent_active,
                        })
                    })
                    .collect();
                GroupStatus {
                    group: id,
                    topic,
                    partition,
                    role: role_name(g.raw.role()).to_string(),
                    term: g.raw.term(),
                    vote: g.raw.vote(),
                    leader: g.raw.leader(),
                    commit,
                    leader_commit: g.raw.leader_commit(),
                    applied: g.raw.applied(),
                    first_index: g.raw.first_index(),
                    last_index: g.raw.last_index(),
                    voters: conf.voters.clone(),
                    voters_outgoing: conf.voters_outgoing.clone(),
                    learners: conf.learners.clone(),
                    conf_committed: g.raw.conf_index() <= commit,
                    replicas,
                    halted: g.halted.clone(),
                    entries_read_at_start: self.entries_read_at_start.get(&id).copied(),
                    rebuilding: g.raw.is_rebuilding(),
                    recovery_bytes_remaining,
                    quiet: g.raw.is_quiet(),
                }
            })
            .collect();
        groups.sort_by_key(|g| g.group);
        ShardStatus {
            shard: self.shard,
            failed: self.failed.clone(),
            groups,
            recovery: self.recovery_status(),
        }
    }

    // ----- Groups -----------------------------------------------------------------------------

    /// Starts (or restarts from its durable state) a group hosted on this shard.
    async fn start_group(
        &mut self,
        group: u64,
        bootstrap: ConfState,
        hosted: Option<HostedGroup>,
    ) -> Result<(), super::NodeError> {
        let mut log = EngineLog::open(self.wal.clone(), group, bootstrap, self.entry_cache_bytes)?;
        // Committed entries cut offline (a lost replica, `group_ledger.rs`): the log starts
        // from what it still holds, rebuilding.
        let lost_entries = log.cap_commit_at_last_index();
        // RawNode::new reads the newest configuration entries: bring them into the cache.
        for index in tern_raft::LogStorage::conf_entry_indexes(&log) {
            let entries = self
                .wal
                .read(group, index, index + 1, u64::MAX)
                .await
                .map_err(super::NodeError::from_engine)?;
            log.cache
                .insert_read(entries.into_iter().map(to_raft_entry));
        }
        let snapshot_index = log.snapshot().meta.index;
        let hs = tern_raft::LogStorage::initial_state(&log)
            .map_err(|e| super::NodeError::Engine(e.to_string()))?;
        let machine = match &hosted {
            None => {
                let state = if log.snapshot().data.is_empty() {
                    ControllerState::default()
                } else {
                    ControllerState::decode_snapshot(&log.snapshot().data).map_err(|e| {
                        super::NodeError::Corrupt {
                            group,
                            what: format!("controller snapshot: {e}"),
                        }
                    })?
                };
                Machine::Controller(Box::new(state))
            }
            Some(h) => {
                let start = PartitionSnapshot::decode(&log.snapshot().data)
                    .map_err(|what| super::NodeError::Corrupt { group, what })?;
                let last = tern_raft::LogStorage::last_index(&log);
                let (offsets, producers) = self
                    .rebuild_offsets(group, snapshot_index, start, last, hs.commit)
                    .await?;
                Machine::Partition {
                    hosted: h.clone(),
                    offsets,
                    producers,
                }
            }
        };
        let mut cfg = self.raft.clone();
        cfg.id = self.node_id;
        // A partition's state is its log: nothing to re-apply after a restart. The controller
        // re-applies its committed entries from its snapshot.
        cfg.applied = match machine {
            Machine::Partition { .. } => hs.commit.max(snapshot_index),
            Machine::Controller(_) => snapshot_index,
        };
        // Election timeouts are drawn from this seed: it must differ per node, not only per
        // group. With the same seed on every node, two followers whose timers started at the
        // same tick (both woken by their leader's silence, docs/raft.md "Quiescence") drew
        // the same timeouts for ever and split every vote: failovers of 0.4 to 1.8 s instead
        // of at most 300 ms (tests/crash_kill.rs `failover_figures`).
        cfg.seed = cfg.seed.wrapping_add(group.wrapping_mul(0x9E37_79B9))
            ^ self.node_id.wrapping_mul(0xA24B_AED4_963E_E407);
        let mut raw = RawNode::new(cfg, log).map_err(|e| super::NodeError::Raft {
            group,
            what: e.to_string(),
        })?;
        // A wiped node's groups start non-voting (docs/replication.md, section 5), and so
        // does a group whose replica alone was lost (`group_ledger.rs`).
        let has_state = self.wal.group(group).is_some_and(|i| {
            i.hard_state.is_some() || i.snapshot.is_some() || i.last_index >= i.first_index
        });
        let lost = self
            .lost
            .on_start(self.shard, group, has_state, lost_entries);
        if self.rebuild.as_ref().is_some_and(|rb| rb.is_active())
            || lost == super::group_ledger::GroupStart::Rebuilding
        {
            raw.set_rebuilding();
        }
        // A group whose only voter is this node (a standalone node) need not wait an election
        // timeout.
        if raw.conf().voters == [self.node_id] && raw.role() != Role::Leader {
            raw.campaign();
        }
        info!(
            shard = self.shard,
            group,
            first = raw.first_index(),
            last = raw.last_index(),
            commit = raw.commit(),
            "group started (recovery: replay done, catching up)"
        );
        self.groups.insert(group, Group::new(raw, machine));
        self.dirty.insert(group);
        Ok(())
    }

    /// The single-voter rules of `standalone.rs`, checked before the controller group runs:
    /// against its configuration, and (for a node configured alone) against the members its
    /// snapshot and committed commands registered.
    async fn check_controller_start(&self, configured: &[NodeId]) -> Result<(), String> {
        const READ_BYTES_MAX: u64 = 8 << 20;
        let Some(g) = self.groups.get(&CONTROLLER_GROUP) else {
            return Ok(());
        };
        super::standalone::check_controller_conf(self.node_id, configured, g.raw.conf())?;
        let Machine::Controller(state) = &g.machine else {
            return Ok(());
        };
        if configured != [self.node_id] {
            return Ok(());
        }
        let mut state = state.clone();
        let commit = g.raw.commit();
        let mut next = state.applied_index() + 1;
        'read: while next <= commit {
            let entries = self
                .wal
                .read(CONTROLLER_GROUP, next, commit + 1, READ_BYTES_MAX)
                .await
                .map_err(|e| format!("reading the controller log at start: {e}"))?;
            let Some(last) = entries.last().map(|e| e.index) else {
                break;
            };
            for e in entries {
                if raft_kind(e.kind) != EntryKind::Normal || e.data.is_empty() {
                    continue;
                }
                // A damaged entry halts the controller when it is applied; here it only
                // ends the look-ahead.
                if state.apply_payload(e.index, &e.data).is_err() {
                    break 'read;
                }
            }
            next = last + 1;
        }
        super::standalone::check_controller_members(self.node_id, configured, &state)
    }

    /// The offset map and producer table of a partition's log after a restart: from the
    /// newest offset checkpoint when it still describes the log, then each entry's end offset
    /// and producer sequences from the entries after it (or after the snapshot point without
    /// one), read in bounded chunks; only their batch headers are looked at.
    async fn rebuild_offsets(
        &mut self,
        group: u64,
        snapshot_index: u64,
        start: PartitionSnapshot,
        last: u64,
        commit: u64,
    ) -> Result<(OffsetMap, ProducerTable), super::NodeError> {
        const READ_BYTES_MAX: u64 = 8 << 20;
        let checkpoint = self.wal.group_meta(group).map(|bytes| {
            // A damaged checkpoint is worth a warning; one the snapshot point passed is the
            // normal state until the next checkpoint.
            let c = OffsetCheckpoint::decode(&bytes).map_err(|why| (true, why))?;
            let log = LogFacts {
                snapshot_index,
                start_offset: start.end_offset,
                last_index: last,
                commit,
                term_at_checkpoint: self.wal.term(group, c.index),
            };
            usable_marks(&c, &log)
                .map(|marks| (marks, c.producers))
                .map_err(|why| (false, why))
        });
        let (mut map, mut producers) = match checkpoint {
            Some(Ok((marks, producers))) => (
                OffsetMap::from_marks(snapshot_index, start.end_offset, marks),
                producers,
            ),
            Some(Err((damaged, why))) => {
                if damaged {
                    warn!(
                        shard = self.shard,
                        group, "offset checkpoint damaged, reading the log instead: {why}"
                    );
                } else {
                    info!(
                        shard = self.shard,
                        group, "offset checkpoint not used: {why}"
                    );
                }
                (
                    OffsetMap::new(snapshot_index, start.end_offset, []),
                    start.producers,
                )
            }
            None => (
                OffsetMap::new(snapshot_index, start.end_offset, []),
                start.producers,
            ),
        };
        let mut next = map.last_index() + 1;
        let mut read = 0u64;
        while next <= last {
            let entries = self
                .wal
                .read(group, next, last + 1, READ_BYTES_MAX)
                .await
                .map_err(super::NodeError::from_engine)?;
            let Some(end) = entries.last().map(|e| e.index) else {
                break;
            };
            let entries: Vec<Entry> = entries.into_iter().map(to_raft_entry).collect();
            map.on_written(&entries)
                .map_err(|e| super::NodeError::Corrupt {
                    group,
                    what: e.to_string(),
                })?;
            record_producers(&mut producers, &entries, None);
            read += entries.len() as u64;
            next = end + 1;
        }
        self.entries_read_at_start.insert(group, read);
        Ok((map, producers))
    }

    /// Brings the partition groups of this shard in line with the controller's state.
    async fn on_controller_state(&mut self, state: Box<ControllerState>) {
        let desired: BTreeMap<u64, HostedGroup> = desired_groups(&state, self.node_id, self.shards)
            .into_iter()
            .filter(|(_, h)| h.shard == self.shard)
            .collect();
        self.learn_addresses(&state);
        self.controller = Some(state);
        let running: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.machine, Machine::Partition { .. }))
            .map(|(&id, _)| id)
            .collect();
        for id in running {
            if !desired.contains_key(&id) {
                self.leave_group(id);
            }
        }
        for (id, hosted) in desired {
            // Placed here again before it left: it stays.
            self.leaving.remove(&id);
            if let Some(g) = self.groups.get_mut(&id) {
                // The replica order (the preferred leader) may have changed.
                if let Machine::Partition { hosted: known, .. } = &mut g.machine {
                    *known = hosted;
                }
                continue;
            }
            // Only the replicas the group was created with bootstrap its configuration; one
            // placed later joins empty and waits for the leader (`Partition::initial`). A
            // joined node never bootstraps: an initial replica it replaced (same id, new
            // directory) is not in the configuration any more, and must not claim a vote.
            let voters = if hosted.initial.contains(&self.node_id) && !self.joined {
                ConfState::with_voters(&hosted.initial)
            } else {
                ConfState::default()
            };
            match self.start_group(id, voters, Some(hosted)).await {
                Ok(()) => {}
                // Started again once the entry is repaired (`shard/repair_driver.rs`).
                Err(super::NodeError::DamagedEntry { group, index, what }) => {
                    error!(group = id, "partition group did not start: {what}");
                    self.note_damage(group, index, &what);
                }
                Err(e) => error!(group = id, "partition group did not start: {e}"),
            }
        }
    }

    /// Hands the leadership of each partition group this node leads to its preferred
    /// replica when that one is ready (`leader_balance.rs`).
    fn balance_leaders(&mut self) {
        self.balancer.on_tick();
        let scan_quiet = self.ticks.is_multiple_of(QUIET_GROUP_SCAN_TICKS);
        for (&id, g) in self.groups.iter_mut() {
            let Machine::Partition { hosted, .. } = &g.machine else {
                continue;
            };
            if g.halted.is_some() || (g.raw.is_quiet() && !scan_quiet) {
                continue;
            }
            if g.raw.role() != Role::Leader {
                self.balancer.forget(id);
                continue;
            }
            let preferred = hosted.replicas.first().copied();
            let view = LeaderView {
                node_id: self.node_id,
                role: g.raw.role(),
                preferred,
                conf: g.raw.conf(),
                last_index: g.raw.last_index(),
                preferred_match: preferred
                    .and_then(|p| g.raw.progress(p))
                    .map(|p| p.match_index),
            };
            let Some(to) = transfer_target(&view) else {
                continue;
            };
            if !self.balancer.may_try(id) {
                continue;
            }
            match g.raw.transfer_leader(to) {
                Ok(()) => {
                    info!(
                        group = id,
                        to, "handing leadership to the preferred replica"
                    );
                    self.dirty.insert(id);
                }
                Err(e) => debug!(group = id, to, "leadership transfer not started: {e}"),
            }
        }
    }

    /// Brings the configuration of each partition group this node leads one step closer to
    /// the replicas the controller placed (`replica_moves.rs`).
    fn move_replicas(&mut self) {
        let scan_quiet = self.ticks.is_multiple_of(QUIET_GROUP_SCAN_TICKS);
        for (&id, g) in self.groups.iter_mut() {
            let Machine::Partition { hosted, .. } = &g.machine else {
                continue;
            };
            if g.raw.role() != Role::Leader
                || g.halted.is_some()
                || (g.raw.is_quiet() && !scan_quiet)
            {
                continue;
            }
            let raw = &g.raw;
            let Some(change) = next_change(raw.conf(), &hosted.replicas, raw.commit(), |n| {
                raw.progress(n).map(|p| p.match_index)
            }) else {
                continue;
            };
            match g.raw.propose_conf_change(&change) {
                Ok(_) => {
                    info!(
                        group = id,
                        voters = ?change.voters,
                        learners = ?change.learners,
                        "moving replicas: configuration change proposed"
                    );
                    self.dirty.insert(id);
                }
                Err(e) => debug!(group = id, "configuration change not proposed yet: {e}"),
            }
        }
    }

    /// As the controller's leader, brings the controller group's own configuration to the
    /// members its state holds, one change at a time: a new member joins as a learner and is
    /// promoted once it holds everything committed; a removed member leaves
    /// (`replica_moves::controller_placement` and `next_change`).
    fn move_controller_members(&mut self) {
        let Some(g) = self.groups.get_mut(&CONTROLLER_GROUP) else {
            return;
        };
        if g.raw.role() != Role::Leader || g.halted.is_some() {
            return;
        }
        let Machine::Controller(state) = &g.machine else {
            return;
        };
        let mut placed = controller_placement(state, g.raw.conf());
        let wait_max = self
            .raft
            .election_ticks_max
            .saturating_mul(REMOVED_CATCH_UP_ELECTIONS_MAX);
        let members = g.raw.conf().members();
        let removed: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|&n| state.was_removed(n))
            .collect();
        self.removed_waits.retain(|n, _| removed.contains(n));
        let mut heard_of_it = true;
        for n in removed {
            // `mark`: the last index when this leader saw the removal (applied, so committed).
            // An entry after it reached the member together with a commit index at or above
            // its RemoveMember: once the member's match index passes `mark`, it applies its
            // own removal. An empty entry makes sure there is one.
            let last = g.raw.last_index();
            let (waited, mark) = self.removed_waits.entry(n).or_insert((0, last));
            *waited += 1;
            if g.raw.last_index() <= *mark {
                heard_of_it = false;
            }
            // The leader itself applied its removal already.
            let told =
                n == self.node_id || g.raw.progress(n).is_some_and(|p| p.match_index > *mark);
            if !told && *waited <= wait_max {
                placed.push(n);
            }
        }
        if !heard_of_it {
            match g.raw.propose(Vec::new()) {
                Ok(_) => {
                    self.dirty.insert(CONTROLLER_GROUP);
                }
                Err(e) => debug!("controller: entry telling a removed member not proposed: {e}"),
            }
        }
        let raw = &g.raw;
        placed.sort_unstable();
        placed.dedup();
        let Some(change) = next_change(raw.conf(), &placed, raw.commit(), |n| {
            raw.progress(n).map(|p| p.match_index)
        }) else {
            return;
        };
        match g.raw.propose_conf_change(&change) {
            Ok(_) => {
                info!(
                    voters = ?change.voters,
                    learners = ?change.learners,
                    "controller: membership change proposed"
                );
                self.dirty.insert(CONTROLLER_GROUP);
            }
            Err(e) => debug!("controller membership change not proposed yet: {e}"),
        }
    }

    /// Publishes the controller group's voters (old and new while joint) as this node's
    /// answer to admission queries (`bootstrap.rs`).
    fn publish_voters(&self) {
        let (Some(sink), Some(g)) = (&self.membership, self.groups.get(&CONTROLLER_GROUP)) else {
            return;
        };
        let conf = g.raw.conf();
        let mut voters: Vec<u64> = conf
            .voters
            .iter()
            .chain(conf.voters_outgoing.iter())
            .copied()
            .collect();
        voters.sort_unstable();
        voters.dedup();
        let view = sink.view.get();
        if view.voters != voters || !view.bootstrapped {
            sink.view.set(ClusterView {
                bootstrapped: true,
                voters,
                ..view
            });
        }
    }

    /// The peer transport learns every member's peer address from the controller's state
    /// (a member added by `tern cluster add-node` is not in `--peers`). Addresses are never
    /// dropped: a removed node's address is harmless, as no group names it any more, and it
    /// may be added again.
    fn learn_addresses(&self, state: &ControllerState) {
        let Some(sink) = &self.membership else {
            return;
        };
        for (&id, m) in state.members() {
            if id != self.node_id && sink.directory.get(id) != Some(m.peer_addr) {
                info!(node = id, addr = %m.peer_addr, "peer directory: member address learned");
                sink.directory.set(id, m.peer_addr);
            }
        }
    }

    /// The controller no longer places `group` here. A deleted topic's group goes at once.
    /// A moved replica stays a member of its group until a configuration without this node
    /// reaches it: as the leader it carries the move out itself (its placement is updated
    /// from the state), as a follower it keeps voting meanwhile, so the group keeps its fault
    /// tolerance during the move. [`Shard::retire_leaving`] removes it then.
    fn leave_group(&mut self, group: u64) {
        let placed = self.controller.as_ref().and_then(|state| {
            state.topics().values().find_map(|t| {
                t.partitions
                    .iter()
                    .find(|p| p.group == group)
                    .map(|p| p.replicas.clone())
            })
        });
        let Some(placed) = placed else {
            self.leaving.remove(&group);
            self.remove_group(group);
            return;
        };
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if let Machine::Partition { hosted, .. } = &mut g.machine {
            hosted.replicas = placed;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = self.leaving.entry(group) {
            slot.insert(LeavingReplica::default());
            info!(
                shard = self.shard,
                group, "replica moved away: it stays until its group's configuration leaves it"
            );
        }
        self.retire_leaving();
    }

    /// Removes the leaving replicas whose group's configuration no longer names this node,
    /// or that have known no leader for [`LEAVING_LEADERLESS_TICKS_MAX`] ticks.
    fn retire_leaving(&mut self) {
        let mut done = Vec::new();
        let alone_max = self
            .raft
            .election_ticks_max
            .saturating_mul(LEAVING_LEADERLESS_ELECTIONS_MAX);
        for (&id, alone) in self.leaving.iter_mut() {
            let Some(g) = self.groups.get(&id) else {
                done.push(id);
                continue;
            };
            if g.raw.leader() == 0 {
                alone.leaderless += 1;
            } else {
                alone.leaderless = 0;
            }
            alone.unheard += 1;
            let conf = g.raw.conf();
            let forgotten_learner = !conf.is_voter(self.node_id) && alone.unheard > alone_max;
            if !conf.contains(self.node_id) || alone.leaderless > alone_max || forgotten_learner {
                done.push(id);
            }
        }
        for id in done {
            self.leaving.remove(&id);
            self.remove_group(id);
        }
    }

    fn remove_group(&mut self, group: u64) {
        self.balancer.forget(group);
        self.caught_up.remove(&group);
        if let Some(mut g) = self.groups.remove(&group) {
            // Retriable: if the topic is gone, the client's metadata refresh says so.
            g.fail_pending(RequestError::NotLeader { leader: 0 });
            info!(
                shard = self.shard,
                group, "group removed (topic deleted or replica moved); its data is purged"
            );
            // Leaves the ledger in a later round (over-cautious until then, never unsafe).
            self.lost.on_deleted(group);
            let mut batch = WriteBatch::new();
            batch.delete_group(group);
            let wal = self.wal.clone();
            glommio::spawn_local(async move {
                if let Err(e) = wal.write(batch).await {
                    warn!(group, "purging a removed group failed: {e}");
                }
            })
            .detach();
        }
    }

    /// A controller leader proposes the members its state lacks (or whose addresses changed),
    /// once per term, after its term's first entry committed.
    fn register_members(&mut self) {
        let Some(g) = self.groups.get_mut(&CONTROLLER_GROUP) else {
            return;
        };
        let term = g.raw.term();
        if g.raw.role() != Role::Leader
            || self.members_proposed_term == term
            || g.raw.log_term(g.raw.commit()) != Some(term)
        {
            return;
        }
        let Machine::Controller(state) = &g.machine else {
            return;
        };
        let missing: Vec<Member> = self
            .initial_members
            .iter()
            .filter(|m| match state.members().get(&m.node_id) {
                // An initial voter removed since is not registered again.
                None => !state.was_removed(m.node_id),
                // Only this node's own addresses are authoritative here.
                Some(known) => m.node_id == self.node_id && known != *m,
            })
            .cloned()
            .collect();
        self.members_proposed_term = term;
        for m in missing {
            let data = match Command::AddMember(m.clone()).encode() {
                Ok(d) => d,
                Err(e) => {
                    warn!("member {} not registered: {e}", m.node_id);
                    continue;
                }
            };
            match g.raw.propose(data) {
                Ok(_) => info!(node = m.node_id, "controller: registering member"),
                Err(e) => {
                    // Retried in the next term (or after a restart).
                    warn!(node = m.node_id, "controller: member not registered: {e}");
                    self.members_proposed_term = 0;
                }
            }
        }
        self.dirty.insert(CONTROLLER_GROUP);
    }

    /// Sends every other member this node's addresses and the groups of this shard it
    /// leads, when due (`node_reports.rs`).
    fn send_reports(&mut self) {
        let Some(state) = &self.controller else {
            return;
        };
        let Some(me) = self
            .initial_members
            .iter()
            .find(|m| m.node_id == self.node_id)
        else {
            return;
        };
        let led: Vec<LedGroup> = self
            .groups
            .iter()
            .filter(|(_, g)| g.raw.role() == Role::Leader && g.halted.is_none())
            .map(|(&group, g)| LedGroup {
                group,
                term: g.raw.term(),
            })
            .collect();
        if !self.reports.due(self.ticks, &led) {
            return;
        }
        let addrs = NodeAddrs {
            kafka: me.kafka_addr,
            http: me.http_addr,
        };
        for &to in state.members().keys().filter(|&&n| n != self.node_id) {
            for report in NodeReport::chunks(self.node_id, to, addrs, &led) {
                if let Err(e) = self.transport.send(to, Outbound::Report(report)) {
                    debug!(to, "node report not sent: {e}");
                }
            }
        }
    }

    /// Keeps the leaders a peer reports; as the controller's leader, registers the peer's
    /// own addresses when its member entry differs (`node_reports.rs`).
    fn on_report(&mut self, report: NodeReport) {
        self.reports.record(&report, self.ticks);
        let Some(g) = self.groups.get_mut(&CONTROLLER_GROUP) else {
            return;
        };
        let term = g.raw.term();
        // Only once this term's missing members were proposed (`register_members`).
        if g.raw.role() != Role::Leader || self.members_proposed_term != term {
            return;
        }
        let Machine::Controller(state) = &g.machine else {
            return;
        };
        let Some(member) = self.reports.address_proposal(state, &report, term) else {
            return;
        };
        let node = member.node_id;
        let proposed = match Command::AddMember(member).encode() {
            Ok(data) => g.raw.propose(data).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match proposed {
            Ok(_) => info!(node, "controller: registering the member's own addresses"),
            Err(e) => {
                warn!(node, "controller: member's addresses not registered: {e}");
                self.reports.proposal_failed(node);
            }
        }
        self.dirty.insert(CONTROLLER_GROUP);
    }

    // ----- Requests -----------------------------------------------------------------------------

    fn propose_command(
        &mut self,
        command: Command,
        reply: oneshot::Sender<Result<Outcome, RequestError>>,
    ) {
        let Some(g) = self.groups.get_mut(&CONTROLLER_GROUP) else {
            let _ = reply.send(Err(RequestError::NotLeader { leader: 0 }));
            return;
        };
        if g.raw.role() != Role::Leader {
            let _ = reply.send(Err(g.leader_hint()));
            return;
        }
        // A new leader first registers the members it lacks (once its term's first entry
        // commits); a command proposed before that would be judged against a state without
        // them (e.g. a topic refused for want of members right after start-up).
        let term = g.raw.term();
        self.register_members();
        if self.members_proposed_term != term {
            let _ = reply.send(Err(RequestError::NotReady(
                "the controller's new leader is still registering members; retry".into(),
            )));
            return;
        }
        let Some(g) = self.groups.get_mut(&CONTROLLER_GROUP) else {
            let _ = reply.send(Err(RequestError::NotLeader { leader: 0 }));
            return;
        };
        let data = match command.encode() {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Err(RequestError::Invalid(e.to_string())));
                return;
            }
        };
        match g.raw.propose(data) {
            Ok((term, index)) => {
                g.commands.insert(index, PendingCommand { term, reply });
                self.dirty.insert(CONTROLLER_GROUP);
            }
            Err(e) => {
                let _ = reply.send(Err(RequestError::NotReady(e.to_string())));
            }
        }
    }

    fn partition_request(&mut self, group: u64, request: PartitionRequest) {
        if let Some(why) = &self.failed {
            request.fail(RequestError::StorageFailed(why.clone()));
            return;
        }
        // The front end found the partition in the controller's state, so a group this
        // shard does not host is one this node holds no replica of now (not created yet, a
        // wiped node still rebuilding, or moved away): Kafka's answer is
        // NOT_LEADER_OR_FOLLOWER, which clients retry after a metadata refresh, not
        // UNKNOWN_TOPIC_OR_PARTITION, which they give up on.
        let Some(g) = self.groups.get_mut(&group) else {
            request.fail(RequestError::NotLeader { leader: 0 });
            return;
        };
        let Machine::Partition {
            hosted,
            offsets,
            producers,
        } = &mut g.machine
        else {
            request.fail(RequestError::UnknownPartition);
            return;
        };
        let not_leader = RequestError::NotLeader {
            leader: g.raw.leader(),
        };
        let is_leader = g.raw.role() == Role::Leader;
        let hw = offsets
            .end_at(g.raw.applied())
            .unwrap_or(offsets.start_offset());
        match request {
            PartitionRequest::Describe { reply } => {
                let _ = reply.send(Ok(PartitionView {
                    group,
                    partition: hosted.partition,
                    replicas: hosted.replicas.clone(),
                    leader: g.raw.leader(),
                    leader_epoch: g.raw.term(),
                }));
            }
            PartitionRequest::ListOffsets { spec, reply } => {
                if !is_leader {
                    let _ = reply.send(Err(not_leader));
                    return;
                }
                let offset = match spec {
                    OffsetSpec::Earliest => offsets.start_offset(),
                    OffsetSpec::Latest => hw,
                    OffsetSpec::Timestamp(at_ms) => {
                        let Some(lo) = offsets.index_of(offsets.start_offset()) else {
                            let _ = reply.send(Ok(hw));
                            return;
                        };
                        let hi = g.raw.applied().min(self.wal.last_index(group)) + 1;
                        let wal = self.wal.clone();
                        glommio::spawn_local(async move {
                            let answer = offset_for_timestamp(&wal, group, lo, hi, at_ms, hw).await;
                            let _ = reply.send(answer);
                        })
                        .detach();
                        return;
                    }
                };
                let _ = reply.send(Ok(offset));
            }
            PartitionRequest::EpochEnd {
                leader_epoch,
                reply,
            } => {
                if !is_leader {
                    let _ = reply.send(Err(not_leader));
                    return;
                }
                let term = g.raw.term();
                if leader_epoch >= term {
                    let _ = reply.send(Ok(EpochEnd {
                        leader_epoch: term,
                        end_offset: offsets.next_offset(),
                    }));
                    return;
                }
                // The first durable entry of a later term: the asked epoch's writes end where
                // it starts. Terms only grow along the log, so a binary search finds it.
                let first = g.raw.first_index();
                let last = self.wal.last_index(group).min(offsets.last_index());
                let wal = &self.wal;
                let term_at = |i: u64| wal.term(group, i).unwrap_or(u64::MAX);
                let (mut lo, mut hi) = (first, last + 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if term_at(mid) > leader_epoch {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                let answer = if lo <= first {
                    // Every entry still in the log is of a later epoch.
                    EpochEnd {
                        leader_epoch,
                        end_offset: offsets.start_offset(),
                    }
                } else {
                    let leader_epoch = term_at(lo - 1).min(leader_epoch);
                    match offsets.end_at(lo - 1) {
                        Some(end_offset) => EpochEnd {
                            leader_epoch,
                            end_offset,
                        },
                        None => {
                            // Inside a checkpoint mark's span: counted from the mark.
                            let (from, from_end) = offsets.mark_at_or_below(lo - 1);
                            let wal = self.wal.clone();
                            glommio::spawn_local(async move {
                                let answer = end_offset_after(&wal, group, from, from_end, lo - 1)
                                    .await
                                    .map(|end_offset| EpochEnd {
                                        leader_epoch,
                                        end_offset,
                                    });
                                let _ = reply.send(answer);
                            })
                            .detach();
                            return;
                        }
                    }
                };
                let _ = reply.send(Ok(answer));
            }
            PartitionRequest::Produce {
                mut records,
                acks,
                reply,
            } => {
                if !is_leader {
                    let _ = reply.send(Err(not_leader));
                    return;
                }
                // The WAL stores the batch as one record: a batch over its payload limit would
                // refuse the round's whole write batch and stop the shard, so it is refused here.
                let max = PRODUCE_BYTES_MAX.min(self.wal.payload_bytes_max());
                if records.len() as u64 > max {
                    let _ = reply.send(Err(RequestError::TooLarge {
                        bytes: records.len() as u64,
                        max,
                    }));
                    return;
                }
                let mut batches = match parse_batches(&records) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::CorruptMessage(e.to_string())));
                        return;
                    }
                };
                // Idempotence: Kafka producers send one batch per partition; only then is a
                // retry recognisable.
                if batches.iter().any(|b| b.producer_id >= 0) {
                    if batches.len() != 1 {
                        let _ = reply.send(Err(RequestError::Invalid(
                            "an idempotent produce carries exactly one record batch".into(),
                        )));
                        return;
                    }
                    match producers.check(&batches[0]) {
                        SequenceCheck::Append => {}
                        SequenceCheck::Duplicate { index, base_offset } => {
                            // Answered once the original is committed, with its offset.
                            let answer = if index <= g.raw.applied() {
                                Ok(ProduceReply {
                                    base_offset,
                                    leader_epoch: g.raw.term(),
                                })
                            } else {
                                Err(RequestError::NotReady(
                                    "the original of this retried batch is not committed yet"
                                        .into(),
                                ))
                            };
                            let _ = reply.send(answer);
                            return;
                        }
                        SequenceCheck::OutOfOrder { expected } => {
                            let _ = reply.send(Err(RequestError::OutOfOrderSequence {
                                producer_id: batches[0].producer_id,
                                expected,
                                got: batches[0].base_sequence,
                            }));
                            return;
                        }
                        SequenceCheck::Fenced { current } => {
                            let _ = reply.send(Err(RequestError::ProducerFenced {
                                producer_id: batches[0].producer_id,
                                current,
                                got: batches[0].producer_epoch,
                            }));
                            return;
                        }
                    }
                }
                let term = g.raw.term();
                let base = match g.next_offset {
                    Some((t, next)) if t == term => next,
                    _ => {
                        // Just became leader: every entry before its no-op has been through a
                        // Ready, so the offset map covers the log up to the no-op (which holds
                        // no records).
                        if offsets.last_index() + 1 < g.raw.last_index() {
                            let _ = reply.send(Err(RequestError::NotReady(
                                "new leader still writing its log".into(),
                            )));
                            return;
                        }
                        if planted::active(Planted::ReuseOffsetAfterFailover) {
                            hw
                        } else {
                            offsets.next_offset()
                        }
                    }
                };
                if !round_has_room(
                    self.round_entry_bytes,
                    records.len() as u64,
                    self.wal.request_bytes_max(),
                ) {
                    let _ = reply.send(Err(RequestError::NotReady(
                        "this shard's next write is full; retry".into(),
                    )));
                    return;
                }
                self.round_entry_bytes += records.len() as u64;
                stamp(&mut records, &mut batches, base, term as i32);
                let count = record_count(&batches);
                match g.raw.propose(records) {
                    Ok((term, index)) => {
                        // Known at once, so a pipelined next batch of the same producer is
                        // checked against this one before the Ready writes it.
                        producers.on_written(index, &batches);
                        g.next_offset = Some((term, base + count));
                        g.produces.insert(
                            index,
                            PendingProduce {
                                term,
                                base_offset: base,
                                acks,
                                reply,
                            },
                        );
                        self.dirty.insert(group);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::NotReady(e.to_string())));
                    }
                }
            }
            PartitionRequest::Fetch {
                offset,
                bytes_max,
                wait_ms_max,
                reply,
            } => {
                let start = offsets.start_offset();
                if offset < start || offset > hw {
                    let _ = reply.send(Err(RequestError::OffsetOutOfRange {
                        offset,
                        start,
                        end: hw,
                    }));
                    return;
                }
                let empty = FetchReply {
                    records: Vec::new(),
                    high_watermark: hw,
                    log_start_offset: start,
                };
                if offset == hw && wait_ms_max > 0 {
                    let request = PartitionRequest::Fetch {
                        offset,
                        bytes_max,
                        wait_ms_max,
                        reply,
                    };
                    if let Err(PartitionRequest::Fetch { reply, .. }) =
                        self.fetch_waiters.park(group, request)
                    {
                        // Too many parked: answer at once, the client polls again.
                        let _ = reply.send(Ok(empty));
                    }
                    return;
                }
                let Some(lo) = offsets.index_of(offset) else {
                    let _ = reply.send(Ok(empty));
                    return;
                };
                // Only committed entries are served, and only durable ones are read.
                let hi = g.raw.applied().min(self.wal.last_index(group)) + 1;
                if lo >= hi {
                    let _ = reply.send(Ok(empty));
                    return;
                }
                let wal = self.wal.clone();
                let events = self.events.clone();
                glommio::spawn_local(async move {
                    // A damaged entry met on the way is reported for repair from peers
                    // (`repair.rs`); the fetch answers KAFKA_STORAGE_ERROR meanwhile.
                    let on_damage = |group, index, why| {
                        let _ = events.unbounded_send(Event::Damaged { group, index, why });
                    };
                    let answer = read_from_offset(
                        &wal,
                        group,
                        (lo, hi),
                        offset,
                        bytes_max.max(1),
                        (start, hw),
                        on_damage,
                    )
                    .await
                    .map(|records| FetchReply {
                        records,
                        high_watermark: hw,
                        log_start_offset: start,
                    });
                    let _ = reply.send(answer);
                })
                .detach();
            }
        }
    }

    // ----- The Ready round ----------------------------------------------------------------------

    async fn process_readies(&mut self) {
        // Everything stepped or proposed so far goes into this round's batch.
        self.round_entry_bytes = 0;
        let mut batch = WriteBatch::new();
        let mut round = Vec::new();
        let mut heartbeats: BTreeMap<NodeId, HeartbeatBatch> = BTreeMap::new();
        let mut controller_changed = false;
        let mut woken = Vec::new();
        let dirty = std::mem::take(&mut self.dirty);
        for id in dirty {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.halted.is_some() {
                continue;
            }
            self.check_role(id);
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if !g.raw.has_ready() {
                continue;
            }
            let rd = g.raw.ready();
            let writes_state =
                rd.snapshot.is_some() || !rd.entries.is_empty() || rd.hard_state.is_some();
            let mut after = Vec::new();
            for out in rd.messages {
                if out.before_persist {
                    send(&*self.transport, &mut heartbeats, self.node_id, id, out.msg);
                } else {
                    after.push(out.msg);
                }
            }
            let mut wrote_snapshot = false;
            if let Some(snap) = &rd.snapshot {
                let meta = GroupSnapshot {
                    conf: snap.meta.conf.clone(),
                    data: snap.data.clone(),
                }
                .encode();
                batch.snapshot(id, snap.meta.term, snap.meta.index, meta);
                batch.truncate(id, snap.meta.index + 1);
                g.raw.storage_mut().cache.evict_from(snap.meta.index + 1);
                if let Machine::Partition {
                    offsets, producers, ..
                } = &mut g.machine
                {
                    match PartitionSnapshot::decode(&snap.data) {
                        Ok(p) => {
                            *offsets = OffsetMap::new(snap.meta.index, p.end_offset, []);
                            // The producers as of the snapshot point come with it.
                            *producers = p.producers;
                        }
                        Err(why) => {
                            g.halted = Some(format!("installed snapshot does not decode: {why}"));
                            continue;
                        }
                    }
                }
                if let Machine::Controller(state) = &mut g.machine {
                    match ControllerState::decode_snapshot(&snap.data) {
                        Ok(s) => {
                            **state = s;
                            controller_changed = true;
                        }
                        Err(e) => {
                            g.halted = Some(format!("controller snapshot does not decode: {e}"));
                            continue;
                        }
                    }
                }
                wrote_snapshot = true;
            }
            if !rd.entries.is_empty() {
                if let Machine::Partition {
                    offsets, producers, ..
                } = &mut g.machine
                {
                    if let Err(e) = offsets.on_written(&rd.entries) {
                        error!(group = id, "entry refused, group halted: {e}");
                        g.halted = Some(e.to_string());
                        continue;
                    }
                    // A leader recorded its own proposals of this term when it made them.
                    let own_term = (g.raw.role() == Role::Leader).then(|| g.raw.term());
                    record_producers(producers, &rd.entries, own_term);
                }
                g.raw.storage_mut().cache.insert_written(&rd.entries);
                batch.append(
                    id,
                    rd.entries.iter().map(|e| OwnedEntry {
                        term: e.term,
                        index: e.index,
                        kind: engine_kind(e.kind),
                        data: e.data.clone(),
                    }),
                );
            }
            if let Some(hs) = rd.hard_state {
                batch.hard_state(
                    id,
                    tern_engine::HardState {
                        term: hs.term,
                        vote: hs.vote,
                        commit: hs.commit,
                    },
                );
            }
            if !rd.committed_entries.is_empty() {
                controller_changed |= apply_committed(g, id, &rd.committed_entries);
                woken.extend(self.fetch_waiters.take(id));
            }
            for fetch in rd.fetches {
                self.start_or_defer_fetch(id, fetch);
            }
            if writes_state {
                self.lost.on_state_written(id);
            }
            round.push(PersistedGroup {
                group: id,
                ack: rd.persist_ack,
                messages: after,
                snapshot: wrote_snapshot,
            });
        }
        self.add_compactions(&mut batch, &mut round);
        self.add_offset_checkpoints(&mut batch, &mut round);
        self.lost.add_to(&mut batch, !round.is_empty());
        for (_, hb) in heartbeats {
            if !hb.is_empty() {
                let to = hb.to;
                if let Err(e) = self.transport.send(to, Outbound::Heartbeats(hb)) {
                    debug!("heartbeats to node {to} dropped: {e}");
                }
            }
        }
        // Parked fetches of partitions whose high watermark moved: answered now, or parked
        // again if it did not pass their offset.
        for (group, request) in woken {
            self.partition_request(group, request);
        }
        if controller_changed {
            self.broadcast_controller().await;
        }
        if round.is_empty() {
            return;
        }
        let durable = if batch.is_empty() {
            None
        } else {
            match self.wal.submit(batch).await {
                Ok(d) => Some(d),
                Err(e) => {
                    // A refused batch (over a limit): the groups' writes are lost before being
                    // acknowledged; fail-stop, since Raft assumes a Ready's writes happen.
                    self.fail(format!("write batch refused: {e}"));
                    return;
                }
            }
        };
        let _ = self.rounds.unbounded_send(Round {
            durable,
            groups: round,
        });
    }

    /// Puts the planned snapshot points into the round's batch; each group's log view is
    /// refreshed when the batch is durable. A group that installed a leader's snapshot in this
    /// round skips its own (the installed one is newer: it is past the commit index).
    fn add_compactions(&mut self, batch: &mut WriteBatch, round: &mut Vec<PersistedGroup>) {
        for (id, c) in std::mem::take(&mut self.compactions) {
            if !self.groups.contains_key(&id) {
                continue;
            }
            match round.iter_mut().find(|pg| pg.group == id) {
                Some(pg) if pg.snapshot => continue,
                Some(pg) => pg.snapshot = true,
                None => round.push(PersistedGroup {
                    group: id,
                    ack: PersistAck {
                        hard_state: None,
                        entries: None,
                        snapshot: None,
                    },
                    messages: Vec::new(),
                    snapshot: true,
                }),
            }
            batch.snapshot(id, c.term, c.index, c.meta);
        }
    }

    /// Writes an offset checkpoint (src/node/offset_checkpoint.rs) into the round's batch for
    /// each partition written to in this round that applied `CHECKPOINT_ENTRIES` entries, or
    /// `[recovery] offset_checkpoint_bytes` of payload, since its last one. Taken at the
    /// applied index: committed, so never rewritten.
    fn add_offset_checkpoints(&mut self, batch: &mut WriteBatch, round: &mut [PersistedGroup]) {
        for pg in round.iter() {
            let Some(g) = self.groups.get_mut(&pg.group) else {
                continue;
            };
            if g.halted.is_some() {
                continue;
            }
            let applied = g.raw.applied();
            let Machine::Partition {
                offsets, producers, ..
            } = &mut g.machine
            else {
                continue;
            };
            let every_bytes = self.recovery.limits.offset_checkpoint_bytes;
            if applied < offsets.checkpointed_to() + CHECKPOINT_ENTRIES
                && offsets.bytes_since_checkpoint(applied) < every_bytes
            {
                continue;
            }
            let Some(term) = g.raw.log_term(applied) else {
                continue;
            };
            let Some(marks) =
                offsets.take_checkpoint(applied, CHECKPOINT_ENTRIES, every_bytes, MARKS_MAX)
            else {
                continue;
            };
            let checkpoint = OffsetCheckpoint {
                index: applied,
                term,
                marks,
                producers: producers.upto(applied),
            };
            batch.group_meta(pg.group, checkpoint.encode());
        }
    }

    /// Plans the compaction of group `id` up to `upto` (capped at its applied index) for the
    /// next round.
    fn compact(&mut self, id: u64, upto: u64) -> CompactionOutcome {
        let Some(g) = self.groups.get_mut(&id) else {
            return CompactionOutcome {
                group: id,
                old_first_index: 0,
                new_first_index: 0,
                log_start_offset: None,
                bytes_freed: None,
                skipped: Some("group not hosted on this shard".into()),
            };
        };
        let (planned, outcome) = compaction::plan(id, g, upto);
        if let Some(c) = planned {
            info!(
                shard = self.shard,
                group = id,
                index = c.index,
                log_start_offset = outcome.log_start_offset,
                "log compacted to a snapshot point"
            );
            self.compactions.insert(id, c);
            self.dirty.insert(id);
        }
        outcome
    }

    /// Compacts every partition whose log exceeds its topic's retention (see `retention`).
    fn enforce_retention(&mut self) {
        let Some(state) = self.controller.clone() else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut due = Vec::new();
        for (&id, g) in &self.groups {
            let Machine::Partition {
                hosted, offsets, ..
            } = &g.machine
            else {
                continue;
            };
            if g.halted.is_some() {
                continue;
            }
            let Some(topic) = state.topic(&hosted.topic) else {
                continue;
            };
            if let Some(point) = retention_point(offsets, g.raw.applied(), &topic.retention, now_ms)
            {
                due.push((id, point));
            }
        }
        for (id, point) in due {
            let outcome = self.compact(id, point);
            if let Some(why) = outcome.skipped {
                debug!(group = id, "retention compaction skipped: {why}");
            }
        }
    }

    /// Notices leadership changes: a leader that lost its role answers its waiting producers.
    fn check_role(&mut self, id: u64) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let role = g.raw.role();
        if role == g.last_role {
            return;
        }
        info!(
            shard = self.shard,
            group = id,
            term = g.raw.term(),
            "role {} -> {}",
            role_name(g.last_role),
            role_name(role)
        );
        if g.last_role == Role::Leader {
            let hint = g.leader_hint();
            g.fail_pending(hint);
            g.next_offset = None;
        }
        g.last_role = role;
    }

    /// Starts a read the core asked for, in task queue `queue` (the recovery queue for
    /// catch-up reads) or the default one.
    fn start_fetch(&self, group: u64, fetch: EntryFetch, queue: Option<glommio::TaskQueueHandle>) {
        if self.reads_inflight.get() >= ENTRY_READS_INFLIGHT_MAX {
            // The core asks again after `fetch_retry_ticks`.
            return;
        }
        self.reads_inflight.set(self.reads_inflight.get() + 1);
        let wal = self.wal.clone();
        let events = self.events.clone();
        let read = async move {
            // The term of low - 1 comes from the engine's table; the entries from disk.
            let result = if fetch.low >= fetch.high {
                Ok(Vec::new())
            } else {
                wal.read(group, fetch.low, fetch.high, fetch.bytes_max.max(1))
                    .await
            };
            let _ = events.unbounded_send(Event::Fetched {
                group,
                fetch,
                result,
            });
        };
        match queue {
            None => {
                glommio::spawn_local(read).detach();
            }
            Some(q) => match glommio::spawn_local_into(read, q) {
                Ok(task) => {
                    task.detach();
                }
                // The queue is this executor's own and never removed: not expected. The read
                // is lost and the core asks again after `fetch_retry_ticks`.
                Err(e) => {
                    self.reads_inflight.set(self.reads_inflight.get() - 1);
                    warn!(group, "catch-up read not started: {e}");
                }
            },
        }
    }

    fn on_round_durable(&mut self, round: Vec<PersistedGroup>) {
        let mut heartbeats: BTreeMap<NodeId, HeartbeatBatch> = BTreeMap::new();
        for pg in round {
            for m in pg.messages {
                send(&*self.transport, &mut heartbeats, self.node_id, pg.group, m);
            }
            let Some(g) = self.groups.get_mut(&pg.group) else {
                continue;
            };
            if pg.snapshot {
                if let Err(e) = g.raw.storage_mut().refresh_snapshot() {
                    g.halted = Some(e.to_string());
                    continue;
                }
            }
            g.raw.on_persisted(pg.ack);
            // acks=1: durable on the leader.
            if let Some((_, last)) = pg.ack.entries {
                let done: Vec<u64> = g
                    .produces
                    .range(..=last)
                    .filter(|(_, p)| {
                        p.acks == Acks::Leader || planted::active(Planted::AckBeforeMajority)
                    })
                    .map(|(&i, _)| i)
                    .collect();
                for i in done {
                    if let Some(p) = g.produces.remove(&i) {
                        let ok = g.raw.log_term(i) == Some(p.term);
                        let _ = p.reply.send(if ok {
                            Ok(ProduceReply {
                                base_offset: p.base_offset,
                                leader_epoch: p.term,
                            })
                        } else {
                            Err(RequestError::Unknown(
                                "entry replaced before it was durable".into(),
                            ))
                        });
                    }
                }
            }
            self.dirty.insert(pg.group);
        }
        for (_, hb) in heartbeats {
            if !hb.is_empty() {
                let to = hb.to;
                let _ = self.transport.send(to, Outbound::Heartbeats(hb));
            }
        }
    }

    async fn broadcast_controller(&mut self) {
        let Some(g) = self.groups.get(&CONTROLLER_GROUP) else {
            return;
        };
        let Machine::Controller(state) = &g.machine else {
            return;
        };
        let state = state.clone();
        for (i, tx) in self.shard_senders.iter_mut().enumerate() {
            if i as u32 == self.shard {
                continue;
            }
            if let Err(e) = tx.try_send(ShardMsg::ControllerState(state.clone())) {
                warn!(shard = i, "controller state not delivered to shard: {e}");
            }
        }
        self.on_controller_state(state).await;
    }
}

/// Applies committed entries to the group's state machine and answers the requests waiting
/// on them. Returns whether the controller's state changed.
fn apply_committed<S: Storage>(g: &mut Group<S>, id: u64, entries: &[Entry]) -> bool {
    let mut changed = false;
    for e in entries {
        match &mut g.machine {
            Machine::Controller(state) => {
                if e.kind == EntryKind::Normal && !e.data.is_empty() {
                    match state.apply_payload(e.index, &e.data) {
                        Ok(outcome) => {
                            changed = true;
                            if let Some(c) = g.commands.remove(&e.index) {
                                let _ = c.reply.send(if c.term == e.term {
                                    Ok(outcome)
                                } else {
                                    Err(RequestError::Unknown("leadership changed".into()))
                                });
                            }
                        }
                        Err(err) => {
                            error!(group = id, "controller halted: {err}");
                            g.halted = Some(err.to_string());
                            return changed;
                        }
                    }
                }
            }
            Machine::Partition { .. } => {
                if let Some(p) = g.produces.remove(&e.index) {
                    let _ = p.reply.send(if p.term == e.term {
                        Ok(ProduceReply {
                            base_offset: p.base_offset,
                            leader_epoch: p.term,
                        })
                    } else {
                        Err(RequestError::Unknown(
                            "entry replaced by a new leader".into(),
                        ))
                    });
                }
            }
        }
        // Anything waiting at a lower index than a committed entry was replaced.
        let stale: Vec<u64> = g.produces.range(..e.index).map(|(&i, _)| i).collect();
        for i in stale {
            if let Some(p) = g.produces.remove(&i) {
                let _ = p.reply.send(Err(RequestError::Unknown(
                    "entry replaced by a new leader".into(),
                )));
            }
        }
    }
    changed
}

/// Records the idempotent producers' batches of written entries (their offsets stamped).
/// `own_term` is the current term while this replica leads it: data entries of that term are
/// this leader's own proposals, which `partition_request` recorded when it proposed them
/// (only the leader of a term makes entries of that term, and a leader's entries are not
/// replaced while it leads), so recording them again would only undo and redo the same
/// batches, parsing each payload (and checking its CRC32C) once more.
fn record_producers(producers: &mut ProducerTable, entries: &[Entry], own_term: Option<u64>) {
    for e in entries {
        // Entries of the term this replica leads were recorded when proposed, and a leader
        // only appends: none of them replaces an entry, so none truncates the table either.
        // (Truncating at a configuration change or no-op written in the same round as data
        // proposed after it forgot that data's batch: the producer's next batch was then
        // refused as out of order forever, and a retry of the forgotten one would have been
        // written twice. tests/members.rs found it, moving replicas under load.)
        let forget_own = planted::active(Planted::ForgetOwnProducerBatches)
            && (e.kind != EntryKind::Normal || e.data.is_empty());
        if own_term == Some(e.term) && !forget_own {
            continue;
        }
        if e.kind != EntryKind::Normal || e.data.is_empty() {
            producers.truncate_from(e.index);
            continue;
        }
        // The offset map checked these entries just before; a payload that does not parse
        // has no producer to record.
        match parse_batches(&e.data) {
            Ok(batches) => producers.on_written(e.index, &batches),
            Err(_) => producers.truncate_from(e.index),
        }
    }
}

/// The record batches of entries `lo..hi` from the first entry holding a record at or after
/// `offset` (`lo` is that entry, or, inside an offset checkpoint's span, the span's first
/// entry: the entries before it are skipped by their stamped offsets), about `bytes_max` of
/// them (at least one entry).
pub(super) async fn read_from_offset<S: Storage>(
    wal: &ShardWal<S>,
    group: u64,
    (lo, hi): (u64, u64),
    offset: u64,
    bytes_max: u64,
    (start, end): (u64, u64),
    on_damage: impl Fn(u64, u64, String),
) -> Result<Vec<u8>, RequestError> {
    let mut records = Vec::new();
    let mut reached = false;
    let mut next = lo;
    while next < hi && !reached {
        let entries = wal.read(group, next, hi, bytes_max).await.map_err(|e| {
            if let Some((group, index)) = super::repair::damaged_entry(&e) {
                on_damage(group, index, e.to_string());
            }
            match e {
                // Compaction (retention, a snapshot) dropped the entries after the request
                // was checked against the log start: the offset is below the start now, which
                // the client learns as Kafka says it (it then asks ListOffsets), not as a
                // storage error.
                tern_engine::Error::Unavailable { .. } => {
                    RequestError::OffsetOutOfRange { offset, start, end }
                }
                e => RequestError::StorageFailed(e.to_string()),
            }
        })?;
        let Some(last) = entries.last().map(|e| e.index) else {
            break;
        };
        for e in entries {
            if e.kind != tern_engine::EntryKind::Normal || e.data.is_empty() {
                continue;
            }
            if !reached {
                let batches = parse_batches(&e.data).map_err(|why| {
                    RequestError::StorageFailed(format!("entry {}: {why}", e.index))
                })?;
                let end = batches
                    .last()
                    .map_or(0, |b| b.base_offset.max(0) as u64 + b.record_count);
                if end <= offset {
                    continue;
                }
                reached = true;
            }
            records.extend_from_slice(&e.data);
        }
        next = last + 1;
    }
    Ok(records)
}

/// Reads entries `lo..hi` of `group` in bounded chunks and hands `visit` the record batches of
/// each one that holds records (batch headers only), in index order, until `visit` answers
/// `Some`: that answer, or `None` once every entry was seen.
async fn scan_batches<S: Storage>(
    wal: &ShardWal<S>,
    group: u64,
    lo: u64,
    hi: u64,
    mut visit: impl FnMut(&[BatchInfo]) -> Option<u64>,
) -> Result<Option<u64>, RequestError> {
    const READ_BYTES_MAX: u64 = 4 << 20;
    let mut next = lo;
    while next < hi {
        let entries = wal
            .read(group, next, hi, READ_BYTES_MAX)
            .await
            .map_err(|e| RequestError::StorageFailed(e.to_string()))?;
        let Some(last) = entries.last().map(|e| e.index) else {
            return Err(RequestError::StorageFailed(format!(
                "entries {next}..{hi} of group {group} could not be read"
            )));
        };
        for e in &entries {
            if e.kind != tern_engine::EntryKind::Normal || e.data.is_empty() {
                continue;
            }
            let batches = parse_batches(&e.data)
                .map_err(|why| RequestError::StorageFailed(format!("entry {}: {why}", e.index)))?;
            if let Some(found) = visit(&batches) {
                return Ok(Some(found));
            }
        }
        next = last + 1;
    }
    Ok(None)
}

/// The end offset after entry `index`, counted from entry `from` (a checkpoint mark or the
/// snapshot point, whose end offset is `from_end`) by the records of the entries after it.
async fn end_offset_after<S: Storage>(
    wal: &ShardWal<S>,
    group: u64,
    from: u64,
    from_end: u64,
    index: u64,
) -> Result<u64, RequestError> {
    let mut end = from_end;
    scan_batches(wal, group, from + 1, index + 1, |batches| {
        end += record_count(batches);
        None
    })
    .await?;
    Ok(end)
}

/// ListOffsets by timestamp: the base offset of the first batch in entries `lo..hi` whose
/// max timestamp is at or after `at_ms` (`end` when none is).
async fn offset_for_timestamp<S: Storage>(
    wal: &ShardWal<S>,
    group: u64,
    lo: u64,
    hi: u64,
    at_ms: i64,
    end: u64,
) -> Result<u64, RequestError> {
    let found = scan_batches(wal, group, lo, hi, |batches| {
        batches
            .iter()
            .find(|b| b.max_timestamp >= at_ms)
            .map(|b| b.base_offset.max(0) as u64)
    })
    .await?;
    Ok(found.unwrap_or(end))
}

/// Whether `bytes` more of entries fit in the next round's write batch, which holds
/// `used` already. Half of the engine's `request_bytes_max` is for entries; the rest is for
/// the records around them (headers, hard states, snapshot points, offset checkpoints). The
/// first entries of a round always fit: one message or produce is bounded far below it.
fn round_has_room(used: u64, bytes: u64, request_bytes_max: u64) -> bool {
    used == 0 || used.saturating_add(bytes) <= request_bytes_max / 2
}

/// Sends one Raft message, coalescing heartbeats per peer.
fn send<T: PeerTransport>(
    transport: &T,
    heartbeats: &mut BTreeMap<NodeId, HeartbeatBatch>,
    from: NodeId,
    group: u64,
    m: Message,
) {
    let to = m.to;
    tracing::trace!(target: "tern::raft_messages", group, "send {m}");
    let batch = heartbeats
        .entry(to)
        .or_insert_with(|| HeartbeatBatch::new(from, to));
    if let Some(m) = batch.push(group, m) {
        if let Err(e) = transport.send(to, Outbound::Raft(group, m)) {
            debug!(group, "message to node {to} dropped: {e}");
        }
    }
}

fn to_raft_entry(e: OwnedEntry) -> Entry {
    Entry {
        term: e.term,
        index: e.index,
        kind: raft_kind(e.kind),
        data: e.data,
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    }
}

impl PartitionRequest {
    /// Answers the request with `err`.
    pub fn fail(self, err: RequestError) {
        match self {
            PartitionRequest::Produce { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            PartitionRequest::Fetch { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            PartitionRequest::ListOffsets { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            PartitionRequest::Describe { reply } => {
                let _ = reply.send(Err(err));
            }
            PartitionRequest::EpochEnd { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

#[cfg(test)]
mod record_producers_tests {
    use super::*;
    use crate::node::producers::SequenceCheck;
    use tern_net::records::{build_batch_for, ProducerStamp};

    fn batch(seq: i32, count: usize) -> Vec<u8> {
        let values: Vec<&[u8]> = vec![b"v"; count];
        build_batch_for(
            &values,
            1,
            ProducerStamp {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: seq,
            },
        )
    }

    /// A leader proposes a configuration change (index 10) and then a batch (index 11), which
    /// it records when proposing; both are written in one round. The batch stays recorded.
    #[test]
    fn a_leaders_own_entries_written_together_keep_the_batches_recorded_at_proposal() {
        let mut table = ProducerTable::default();
        let data = batch(0, 4);
        table.on_written(11, &parse_batches(&data).unwrap());
        let entries = [
            Entry {
                term: 3,
                index: 10,
                kind: EntryKind::ConfChange,
                data: vec![1],
            },
            Entry {
                term: 3,
                index: 11,
                kind: EntryKind::Normal,
                data: data.clone(),
            },
        ];
        record_producers(&mut table, &entries, Some(3));
        let next = parse_batches(&batch(4, 1)).unwrap();
        assert_eq!(table.check(&next[0]), SequenceCheck::Append);
        let retry = parse_batches(&data).unwrap();
        assert!(matches!(
            table.check(&retry[0]),
            SequenceCheck::Duplicate { index: 11, .. }
        ));
        // As a follower (no own term), the same entries are recorded from the log: the
        // configuration change truncates, the data entry records again.
        let mut follower = ProducerTable::default();
        record_producers(&mut follower, &entries, None);
        assert!(matches!(
            follower.check(&retry[0]),
            SequenceCheck::Duplicate { index: 11, .. }
        ));
    }
}
