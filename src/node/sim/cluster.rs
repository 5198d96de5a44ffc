//! One simulated cluster for one seed: 3-5 nodes, each running the real [`Shard`] driver over
//! its own simulated disk (with seeded latency) and the simulated network, all on the current
//! glommio executor, with time advanced tick by tick by [`run`]. Faults and the workload are
//! drawn from the seed; the checker looks at every acknowledgement and fetch, and at every
//! node's status and committed log every few ticks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_lite::future;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::storage::latency::Latent;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::{ShardWal, WalConfig};
use tern_raft::message::NodeId;
use uuid::Uuid;

use super::super::controller::{Command, Member, Outcome, Rejection, Retention, TopicSpec};
use super::super::identity::NodeIdentity;
use super::super::rebuild::NodeRebuild;
use super::super::records::build_batch;
use super::super::requests::{Acks, FetchReply, PartitionRequest, ProduceReply, RequestError};
use super::super::shard::{Shard, ShardMsg, ShardSetup, ShardStatus, TICK};
use super::checker::{Acked, Checker, Violation};
use super::clock::SimClock;
use super::fence::Fenced;
use super::net::{NetFaults, SimEndpoint, SimNet};

mod idempotent;

type Disk = Latent<Fenced<SimStorage>>;

/// Ticks of the faulty phase: faults and the workload run.
pub const FAULT_TICKS: u64 = 600;
/// Bound on the healing phase: every node back, no faults; every node must catch up with
/// every acknowledged record within it.
pub const SETTLE_TICKS_MAX: u64 = 3000;
/// Executor turns the simulation lets run between two ticks (the simulated disk completes an
/// I/O in up to `2 * DISK_LATENCY_TURNS_MAX` turns).
const TURNS_PER_TICK: u32 = 24;
const DISK_LATENCY_TURNS_MAX: u32 = 4;
/// Status and committed logs are checked every this many ticks.
const CHECK_EVERY_TICKS: u64 = 5;
/// A request not answered within this many ticks counts as timed out (outcome unknown).
const REPLY_TICKS_MAX: u64 = 100;
const TOPIC: &str = "sim";
const PARTITIONS: u32 = 2;
const REPLICATION_FACTOR: u8 = 3;
const SHARD_INBOX_MESSAGES_MAX: usize = 64;
const FETCH_BYTES_MAX: u64 = 16 << 10;
/// Records a run with [`Faults::corrupt_records`] damages, at most, all on one node.
const CORRUPT_RECORDS_MAX: usize = 4;

/// Faults a run adds to the default ones (network, crashes, restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Bit rot on one replica: flip a bit in committed entries of sealed segments of one
    /// node's disk (never two replicas of one entry), in the second half of the faulty phase.
    /// Each must be repaired from the other replicas by the end of the run.
    pub corrupt_records: bool,
}

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub nodes: usize,
    pub ticks: u64,
    pub crashes: u64,
    /// Crashes that also lost the node's disk; it came back with `--rebuild`.
    pub wipes: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub acks: u64,
    /// Of `acks`: those of idempotent producers' batches.
    pub idempotent_acks: u64,
    /// Idempotent batches acknowledged after more than one attempt (a retry, perhaps to a
    /// new leader, of a batch that may have been written already).
    pub idempotent_retries_acked: u64,
    /// Replicas the controller moved to other nodes after a member's removal (each then
    /// carried out by the partition's leader; `settled` checks the new replicas serve every
    /// acknowledged record).
    pub replicas_moved: u64,
    pub fetches: u64,
    pub entries_compared: u64,
    /// Committed records damaged on one node's disk (all repaired, or the run fails).
    pub corrupted: u64,
    /// Repairs the nodes made (`tern_repair_total{outcome="repaired"}` of the run).
    pub repaired: u64,
    /// Recovery-stream chunks appended by rebuilding groups
    /// (`tern_recovery_stream_chunks_total{direction="in"}` of the run).
    pub stream_chunks: u64,
    /// [`Checker::trace`]: equal for two runs of one seed.
    pub trace: u32,
}

struct Live {
    tx: mpsc::Sender<ShardMsg>,
    ticks: mpsc::UnboundedSender<()>,
    wal: Rc<ShardWal<Disk>>,
    alive: Rc<Cell<bool>>,
    task: glommio::Task<Option<String>>,
}

struct Node {
    id: NodeId,
    disk: SimStorage,
    lives: u64,
    live: Option<Live>,
    /// The tick at which a crashed node comes back.
    restart_at: u64,
    /// The model of the `NODE` file's `rebuilding` flag: set when the disk is wiped, cleared
    /// when a life's [`NodeRebuild`] cleared it (the real file is synced at once).
    rebuilding: bool,
    /// This life's rebuild state, while `rebuilding`.
    rebuild: Option<Arc<NodeRebuild>>,
}

impl Node {
    /// The node's life ends: keep what its `NODE` file would say.
    fn end_life(&mut self) {
        if let Some(rb) = self.rebuild.take() {
            self.rebuilding = rb.is_active();
        }
    }
}

/// The shared state of a run: tasks of the workload reach the nodes through it.
struct World {
    seed: u64,
    clock: Rc<SimClock>,
    net: Rc<SimNet>,
    nodes: RefCell<Vec<Node>>,
    checker: RefCell<Checker>,
    violation: RefCell<Option<Violation>>,
    producing: Cell<bool>,
    /// See [`SimReport::replicas_moved`].
    replicas_moved: Cell<u64>,
    /// Producer tasks not yet finished (each finishes its requests in flight after
    /// `producing` turns false).
    producers_running: Cell<usize>,
    /// Per node, the local part of the last producer id it handed out (InitProducerId).
    producer_ids_given: RefCell<BTreeMap<NodeId, u64>>,
    /// See [`SimReport::idempotent_retries_acked`].
    idempotent_retries_acked: Cell<u64>,
    members: Vec<Member>,
    groups: RefCell<Vec<u64>>,
    /// (node, group, index) of every entry whose record was damaged on disk.
    corrupted: RefCell<Vec<(NodeId, u64, u64)>>,
    /// See [`tight_recovery`].
    tight_recovery: bool,
}

enum Asked<T> {
    Answer(Result<T, RequestError>),
    /// Node down, its inbox full, or it dropped the request (crashed).
    Unavailable,
    TimedOut,
}

/// Odd seeds run with a tiny entry cache and small AppendEntries, so leaders serve lagging
/// and rebuilt followers from disk reads of a few entries each, which come back next to a
/// cache of other entries and stop short of what the core may send (a leader once re-read
/// the same entries for ever there). Derived from the seed alone so its other draws do not
/// change.
fn small_reads(seed: u64) -> bool {
    seed % 2 == 1
}

/// See [`small_reads`].
const APPEND_BYTES_SMALL: u64 = 200;

/// Seeds with `seed / 2` even run with quiescence of idle groups (as `tern serve` does by
/// default), the others without, so both timer regimes meet every other knob. Derived from
/// the seed alone so its other draws do not change.
fn quiesce(seed: u64) -> bool {
    (seed / 2).is_multiple_of(2)
}

fn entry_cache_bytes(seed: u64) -> u64 {
    if small_reads(seed) {
        256
    } else {
        crate::node::log_store::CACHE_BYTES_MAX
    }
}

/// Seeds `3k + 2` run with a tight recovery budget and one recovery slot per shard, so the
/// throttle holds and drops catch-up messages of rebuilding groups (the others: the
/// default budget, which a simulated cluster never reaches). Derived from the seed alone;
/// not in the corrupt-records runs, whose damage must find sealed segments (a throttled
/// run writes less).
fn tight_recovery(seed: u64, extra: Faults) -> bool {
    seed % 3 == 2 && !extra.corrupt_records
}

/// See [`tight_recovery`]. Catch-up reads stay in the default task queue: a run must replay
/// exactly, and glommio shares real CPU time between queues. The recovery stream works at the
/// simulation's scale (a few hundred small entries per partition): a rebuilding group more
/// than 8 entries behind pulls chunks of 2 KiB, two at a time, and gives a fetch 40 ticks.
fn recovery_limits(tight: bool) -> crate::node::recovery_budget::RecoveryLimits {
    use crate::node::recovery_budget::RecoveryLimits;
    use crate::node::recovery_stream_rules::StreamLimits;
    let limits = RecoveryLimits {
        low_priority_reads: false,
        stream: StreamLimits {
            chunk_bytes: 2 << 10,
            chunks_inflight_max: 2,
            chunk_timeout_ticks: 40,
            lag_entries_max: 8,
            backoff_min_ticks: 10,
            backoff_max_ticks: 200,
            tick_ms: 10,
        },
        ..RecoveryLimits::default()
    };
    if tight {
        RecoveryLimits {
            bytes_per_sec_max: 64 << 10,
            partitions_per_shard_max: 1,
            ..limits
        }
    } else {
        limits
    }
}

impl World {
    fn violate(&self, v: Violation) {
        let mut slot = self.violation.borrow_mut();
        if slot.is_none() {
            *slot = Some(v);
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.borrow().iter().map(|n| n.id).collect()
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .borrow()
            .iter()
            .filter(|n| n.live.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The status of node `id`, if it is up and answers.
    async fn status(&self, id: NodeId) -> Option<ShardStatus> {
        let (reply, rx) = oneshot::channel();
        {
            let mut nodes = self.nodes.borrow_mut();
            let live = nodes
                .iter_mut()
                .find(|n| n.id == id)
                .and_then(|n| n.live.as_mut())?;
            live.tx.try_send(ShardMsg::Status { reply }).ok()?;
        }
        future::or(async { rx.await.ok() }, async {
            self.clock.sleep(REPLY_TICKS_MAX).await;
            None
        })
        .await
    }

    async fn ask<T>(
        &self,
        node: NodeId,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> ShardMsg,
    ) -> Asked<T> {
        let (reply, rx) = oneshot::channel();
        {
            let mut nodes = self.nodes.borrow_mut();
            let Some(live) = nodes
                .iter_mut()
                .find(|n| n.id == node)
                .and_then(|n| n.live.as_mut())
            else {
                return Asked::Unavailable;
            };
            if live.tx.try_send(make(reply)).is_err() {
                return Asked::Unavailable;
            }
        }
        let answer = future::or(async { Some(rx.await) }, async {
            self.clock.sleep(REPLY_TICKS_MAX).await;
            None
        })
        .await;
        match answer {
            Some(Ok(r)) => Asked::Answer(r),
            Some(Err(_)) => Asked::Unavailable,
            None => Asked::TimedOut,
        }
    }

    /// Produces `records` (one batch) to partition `group` on `node`, committed (`acks=all`).
    async fn produce_committed(
        &self,
        node: NodeId,
        group: u64,
        records: Vec<u8>,
    ) -> Asked<ProduceReply> {
        self.ask(node, |reply| ShardMsg::Partition {
            group,
            request: PartitionRequest::Produce {
                records,
                acks: Acks::Committed,
                reply,
            },
        })
        .await
    }

    /// Starts (or restarts after a crash) node `idx` on its disk.
    async fn start(&self, idx: usize) -> Result<(), Violation> {
        let (id, disk, life, rebuild) = {
            let mut nodes = self.nodes.borrow_mut();
            let n = &mut nodes[idx];
            n.lives += 1;
            n.rebuild = n.rebuilding.then(|| {
                let identity = NodeIdentity {
                    cluster_id: Uuid::from_u128(1),
                    node_id: n.id,
                    admitted: true,
                    rebuilding: true,
                    joined: false,
                };
                Arc::new(NodeRebuild::new(None, identity, 1))
            });
            (n.id, n.disk.clone(), n.lives, n.rebuild.clone())
        };
        match &rebuild {
            Some(rb) => self.net.watch_rebuild(id, rb.clone()),
            None => self.net.unwatch_rebuild(id),
        }
        let alive = Rc::new(Cell::new(true));
        let life_seed = self.seed ^ (id << 40) ^ (life << 32);
        let storage = Latent::new(
            Fenced::new(disk, alive.clone()),
            life_seed,
            DISK_LATENCY_TURNS_MAX,
        );
        let cfg = WalConfig {
            segment_bytes: 1 << 20,
            batch_bytes_max: 256 << 10,
            ..WalConfig::default()
        };
        let wal = ShardWal::open(
            storage,
            0,
            Path::new("/data/shard-0"),
            Path::new("/data/quarantine"),
            cfg,
        )
        .await
        .map_err(|e| format!("node {id} (life {life}): WAL did not open: {e}"))?;
        let wal = Rc::new(wal);
        let (tx, inbox) = mpsc::channel(SHARD_INBOX_MESSAGES_MAX);
        let (ticks, tick_rx) = mpsc::unbounded();
        let mut raft = tern_raft::Config::new(id);
        raft.seed = life_seed;
        raft.quiesce = quiesce(self.seed);
        if small_reads(self.seed) {
            raft.append_bytes_max = APPEND_BYTES_SMALL;
        }
        let setup = ShardSetup {
            node_id: id,
            shard: 0,
            shards: 1,
            tick: TICK,
            external_ticks: Some(tick_rx),
            controller_voters: self.ids(),
            initial_members: self.members.clone(),
            raft,
            inbox,
            shard_senders: vec![tx.clone()],
            rebuild,
            entry_cache_bytes: entry_cache_bytes(self.seed),
            scrub: None,
            recovery: recovery_limits(self.tight_recovery),
            joined: false,
            membership: None,
        };
        let transport: Rc<SimEndpoint> = Rc::new(self.net.endpoint(id));
        let task = glommio::spawn_local(Shard::run(setup, wal.clone(), transport));
        self.nodes.borrow_mut()[idx].live = Some(Live {
            tx,
            ticks,
            wal,
            alive,
            task,
        });
        Ok(())
    }

    /// Stops node `idx` the way SIGTERM does (the shard answers what waits and stops, the WAL
    /// closes), then starts it again on the same disk.
    async fn restart(&self, idx: usize) -> Result<(), Violation> {
        let Some(mut live) = self.nodes.borrow_mut()[idx].live.take() else {
            return Ok(());
        };
        let id = self.nodes.borrow()[idx].id;
        self.net.down(id);
        // The inbox may be full: the stop then waits for room, as the runtime's does.
        if let Err(e) = futures_util::SinkExt::send(&mut live.tx, ShardMsg::Stop).await {
            return Err(format!("node {id}: stop not delivered: {e}"));
        }
        if let Some(why) = (&mut live.task).await {
            return Err(format!("node {id}: shard stopped on an error: {why}"));
        }
        live.wal
            .close()
            .await
            .map_err(|e| format!("node {id}: WAL did not close: {e}"))?;
        live.alive.set(false);
        drop(live);
        self.nodes.borrow_mut()[idx].end_life();
        self.start(idx).await
    }

    /// Cuts the power of node `idx`: its tasks stop where they are, its disk loses (or keeps,
    /// or tears) what was not synced.
    fn crash(&self, idx: usize, rng: &mut SmallRng, down_ticks: u64) {
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[idx];
        let Some(live) = n.live.take() else {
            return;
        };
        live.alive.set(false);
        drop(live);
        n.end_life();
        self.net.down(n.id);
        let mode = match rng.gen_range(0..4) {
            0 => CrashMode::LoseAllUnsynced,
            1 => CrashMode::KeepAllUnsynced,
            2 => CrashMode::RandomUnsynced,
            _ => CrashMode::TornWrites,
        };
        n.disk.crash(rng.gen(), mode);
        n.restart_at = self.clock.now() + down_ticks;
    }

    /// Node `idx` crashes and loses its disk (an operator then wipes it and starts it with
    /// `--rebuild`): it comes back with an empty disk and its `NODE` flag set. May hit a node
    /// that is down, or still rebuilding from an earlier wipe (a crash mid-install).
    fn wipe(&self, idx: usize, rng: &mut SmallRng, down_ticks: u64) {
        self.crash(idx, rng, down_ticks);
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[idx];
        n.disk = SimStorage::new();
        n.rebuilding = true;
        n.restart_at = n.restart_at.max(self.clock.now() + down_ticks);
    }
}

impl World {
    /// Flips one bit in the payload of a committed entry of a partition on node `id`, in a
    /// sealed segment (recovery trusts a sealed segment's index and does not scan it; damage
    /// in the open segment stops recovery, which is the engine's business, not repair's).
    /// Returns whether it found such an entry.
    async fn corrupt_one(&self, id: NodeId, rng: &mut SmallRng) -> bool {
        let Some(status) = self.status(id).await else {
            return false;
        };
        let groups = self.groups.borrow().clone();
        let candidates: Vec<_> = status
            .groups
            .iter()
            .filter(|g| groups.contains(&g.group) && g.halted.is_none())
            .filter(|g| g.commit >= g.first_index.max(1))
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let g = candidates[rng.gen_range(0..candidates.len())];
        let (disk, wal) = {
            let nodes = self.nodes.borrow();
            let Some(n) = nodes.iter().find(|n| n.id == id) else {
                return false;
            };
            let Some(live) = n.live.as_ref() else {
                return false;
            };
            (n.disk.clone(), live.wal.clone())
        };
        let last = g.commit.min(wal.last_index(g.group));
        if last < g.first_index {
            return false;
        }
        let index = rng.gen_range(g.first_index..=last);
        if self
            .corrupted
            .borrow()
            .iter()
            .any(|&(n, gr, i)| n == id && gr == g.group && i == index)
        {
            return false;
        }
        let Ok(entries) = wal.read(g.group, index, index + 1, u64::MAX).await else {
            return false;
        };
        let Some(e) = entries.first().filter(|e| e.data.len() >= 32) else {
            return false;
        };
        let sealed: Vec<_> = disk
            .list_files()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .filter(|p| disk.file_len(&p.with_extension("idx")).is_some())
            .collect();
        for path in sealed {
            let Some(bytes) = disk.read_current(&path) else {
                continue;
            };
            if let Some(at) = bytes
                .windows(e.data.len())
                .position(|w| w == e.data.as_slice())
            {
                let byte = at as u64 + rng.gen_range(0..e.data.len() as u64);
                let bit = rng.gen_range(0..8);
                disk.flip_bit(&path, byte, bit);
                // The same bytes may also be a superseded copy (an entry written again after
                // a conflict, or another record's payload): damage there is never read, so
                // it would count as damage never repaired. Keep it only if the entry now
                // reads as damaged.
                if wal.read(g.group, index, index + 1, u64::MAX).await.is_ok() {
                    disk.flip_bit(&path, byte, bit);
                    continue;
                }
                self.corrupted.borrow_mut().push((id, g.group, index));
                return true;
            }
        }
        false
    }

    /// Whether a failed read on node `id` is damage this run planted there (the node is
    /// repairing it: not a violation while it lasts).
    fn planted_damage(&self, id: NodeId, e: &tern_engine::Error) -> bool {
        super::super::repair::damaged_entry(e).is_some_and(|(g, i)| {
            self.corrupted
                .borrow()
                .iter()
                .any(|&(n, gr, ix)| n == id && gr == g && ix == i)
        })
    }
}

/// Runs the simulation of `seed` on the current glommio executor.
pub async fn run(seed: u64) -> Result<SimReport, Violation> {
    run_with(seed, Faults::default()).await
}

/// [`run`] with extra faults.
pub async fn run_with(seed: u64, extra: Faults) -> Result<SimReport, Violation> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let node_count = rng.gen_range(3..=5usize);
    let faults = NetFaults {
        loss_pct: rng.gen_range(0..=10),
        duplicate_pct: rng.gen_range(0..=5),
        delay_ticks_max: rng.gen_range(1..=4),
    };
    let clock = SimClock::new();
    let net = SimNet::new(rng.gen(), faults);
    let members: Vec<Member> = (1..=node_count as u64).map(member).collect();
    let world = Rc::new(World {
        seed,
        clock: clock.clone(),
        net: net.clone(),
        nodes: RefCell::new(
            (1..=node_count as u64)
                .map(|id| Node {
                    id,
                    disk: SimStorage::new(),
                    lives: 0,
                    live: None,
                    restart_at: 0,
                    rebuilding: false,
                    rebuild: None,
                })
                .collect(),
        ),
        checker: RefCell::new(Checker::default()),
        violation: RefCell::new(None),
        producing: Cell::new(true),
        replicas_moved: Cell::new(0),
        producers_running: Cell::new(0),
        producer_ids_given: RefCell::new(BTreeMap::new()),
        idempotent_retries_acked: Cell::new(0),
        members,
        groups: RefCell::new(Vec::new()),
        corrupted: RefCell::new(Vec::new()),
        tight_recovery: tight_recovery(seed, extra),
    });
    // Drawn apart from the main generator, so runs without the fault keep their sequence.
    let mut corrupt_rng = SmallRng::seed_from_u64(seed ^ 0xc0ff_ee00);
    let corrupt_node = corrupt_rng.gen_range(1..=node_count as u64);
    for idx in 0..node_count {
        world.start(idx).await?;
    }
    let admin = glommio::spawn_local(create_topic(world.clone(), rng.gen()));
    // With 4 or 5 nodes, one member is removed during the faults, so the partitions it holds
    // move by Raft configuration changes (`replica_moves.rs`) while producers run. Drawn from
    // a generator of its own, so the other draws of a seed do not change.
    let remover = (node_count >= 4).then(|| {
        let mut moves = SmallRng::seed_from_u64(seed ^ 0x6d6f_7665);
        let node = moves.gen_range(1..=node_count as u64);
        let at = moves.gen_range(FAULT_TICKS / 4..FAULT_TICKS / 2);
        glommio::spawn_local(remove_member(world.clone(), node, at, moves.gen()))
    });
    let mut producers = Vec::new();
    let mix = ProducerMix::draw(seed);
    if mix.plain {
        for p in 0..PARTITIONS {
            world
                .producers_running
                .set(world.producers_running.get() + 1);
            producers.push(glommio::spawn_local(produce(world.clone(), p, rng.gen())));
        }
    }
    let mut ids_rng = SmallRng::seed_from_u64(seed ^ 0x1de0_9073);
    for (window, linger_ticks) in mix.idempotent_clients {
        let Some((producer_id, epoch)) = world.init_producer_id(&mut ids_rng) else {
            continue;
        };
        let client = idempotent::Client {
            producer_id,
            epoch,
            window,
            linger_ticks,
        };
        for p in 0..PARTITIONS {
            world
                .producers_running
                .set(world.producers_running.get() + 1);
            producers.push(glommio::spawn_local(idempotent::produce_idempotent(
                world.clone(),
                p,
                client,
                ids_rng.gen(),
            )));
        }
    }
    let fetcher = glommio::spawn_local(fetch(world.clone(), rng.gen()));
    let mut report = SimReport {
        nodes: node_count,
        ..SimReport::default()
    };
    let mut checked_to: BTreeMap<(NodeId, u64), u64> = BTreeMap::new();
    let mut heal_at: Option<u64> = None;
    let minority = (node_count - 1) / 2;
    let result = async {
        loop {
            let now = clock.now();
            let settling = now >= FAULT_TICKS;
            if now == FAULT_TICKS {
                world.producing.set(false);
                net.heal();
                net.set_faults(NetFaults::NONE);
                heal_at = None;
            }
            if settling && now >= FAULT_TICKS + SETTLE_TICKS_MAX {
                let mut why = format!(
                    "the cluster did not settle within {SETTLE_TICKS_MAX} ticks after the faults stopped (groups {:?}, producers running {}",
                    world.groups.borrow(),
                    world.producers_running.get()
                );
                for &g in world.groups.borrow().iter() {
                    why += &format!(", group {g} acked to {}", world.checker.borrow().acked_end(g));
                }
                why += ")";
                for id in world.ids() {
                    if let Some(st) = world.status(id).await {
                        for g in st.groups {
                            why += &format!(
                                "\n  node {id} group {}: {} term {} leader {} commit {} applied {} last {} voters {:?} learners {:?}{}",
                                g.group, g.role, g.term, g.leader, g.commit, g.applied, g.last_index,
                                g.voters, g.learners,
                                if g.rebuilding { " rebuilding" } else { "" }
                            );
                        }
                    }
                }
                return Err(why);
            }
            // Faults.
            if !settling {
                let down = world.nodes.borrow().iter().filter(|n| n.live.is_none()).count();
                if down < minority && rng.gen_range(0..120) == 0 {
                    let idx = rng.gen_range(0..node_count);
                    let down_ticks = rng.gen_range(10..120);
                    world.crash(idx, &mut rng, down_ticks);
                    report.crashes += 1;
                }
                if rng.gen_range(0..400) == 0 {
                    let idx = rng.gen_range(0..node_count);
                    world.restart(idx).await?;
                    report.restarts += 1;
                }
                // Disk loss: at most one node without its disk (wiped, or being rebuilt) at a
                // time, and only while a majority of intact nodes is up; the invariant is that
                // the lost disk's promises are never broken (`SimNet::watch_rebuild`).
                let without_disk = world
                    .nodes
                    .borrow()
                    .iter()
                    .filter(|n| n.rebuilding && n.rebuild.as_ref().is_none_or(|rb| rb.is_active()))
                    .count();
                // Not in the seeds that remove a member: a wiped node's replicas of groups moved
                // away from it while it was rebuilding are not rebuilt (the node only rebuilds
                // what the controller places on it), so a second fault can leave such a group
                // without a quorum. Open item in docs/replication.md ("Disk loss during a
                // replica move").
                if remover.is_none()
                    && down < minority
                    && without_disk == 0
                    && rng.gen_range(0..300) == 0
                {
                    let idx = rng.gen_range(0..node_count);
                    let down_ticks = rng.gen_range(1..60);
                    world.wipe(idx, &mut rng, down_ticks);
                    let id = world.ids()[idx];
                    checked_to.retain(|(n, _), _| *n != id);
                    report.wipes += 1;
                }
                // A crash in the middle of a rebuild (of its install, or its catch-up).
                let rebuilding: Vec<usize> = world
                    .nodes
                    .borrow()
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| {
                        n.live.is_some() && n.rebuild.as_ref().is_some_and(|rb| rb.is_active())
                    })
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&idx) = rebuilding.first() {
                    if rng.gen_range(0..40) == 0 {
                        let down_ticks = rng.gen_range(1..30);
                        world.crash(idx, &mut rng, down_ticks);
                        report.crashes += 1;
                    }
                }
                if heal_at.is_none() && rng.gen_range(0..150) == 0 {
                    let mut ids = world.ids();
                    for i in (1..ids.len()).rev() {
                        ids.swap(i, rng.gen_range(0..=i));
                    }
                    let cut = rng.gen_range(1..=minority.max(1));
                    net.partition(&ids[..cut], &ids[cut..]);
                    heal_at = Some(now + rng.gen_range(20..200));
                    report.partitions += 1;
                }
                if heal_at.is_some_and(|h| now >= h) {
                    net.heal();
                    heal_at = None;
                }
                if extra.corrupt_records
                    && now >= FAULT_TICKS / 2
                    && world.corrupted.borrow().len() < CORRUPT_RECORDS_MAX
                    && corrupt_rng.gen_range(0..30) == 0
                    && world.corrupt_one(corrupt_node, &mut corrupt_rng).await
                {
                    report.corrupted += 1;
                }
            }
            let restart: Vec<usize> = world
                .nodes
                .borrow()
                .iter()
                .enumerate()
                .filter(|(_, n)| n.live.is_none() && (settling || n.restart_at <= now))
                .map(|(i, _)| i)
                .collect();
            for idx in restart {
                world.start(idx).await?;
            }
            // Time moves: messages due arrive, every node ticks, the executor runs.
            clock.advance();
            net.deliver_due(clock.now());
            for n in world.nodes.borrow().iter() {
                if let Some(l) = &n.live {
                    let _ = l.ticks.unbounded_send(());
                }
            }
            for _ in 0..TURNS_PER_TICK {
                future::yield_now().await;
            }
            if let Some(v) = world.violation.borrow_mut().take() {
                return Err(v);
            }
            if let Some(v) = net.take_violation() {
                return Err(v);
            }
            if clock.now().is_multiple_of(CHECK_EVERY_TICKS) {
                check_nodes(&world, &mut checked_to).await?;
                if settling && settled(&world).await? && repaired(&world).await? {
                    return Ok(());
                }
            }
        }
    }
    .await;
    // A replica that left its group (a removed member's, purged once a configuration
    // without it reached it) takes the damage planted in it along: only damage on replicas
    // still hosted at the end must have been repaired.
    if result.is_ok() {
        let corrupted = world.corrupted.borrow().clone();
        for (id, group, _) in corrupted {
            let hosted = match world.status(id).await {
                Some(status) => status.groups.iter().any(|g| g.group == group),
                None => true,
            };
            if !hosted {
                report.corrupted = report.corrupted.saturating_sub(1);
            }
        }
    }
    report.ticks = clock.now();
    let c = world.checker.borrow();
    report.acks = c.acks;
    report.idempotent_acks = c.idempotent_acks;
    report.idempotent_retries_acked = world.idempotent_retries_acked.get();
    report.replicas_moved = world.replicas_moved.get();
    report.fetches = c.fetches;
    report.entries_compared = c.entries_compared;
    report.trace = c.trace;
    drop(c);
    // Every node runs on this executor's thread, whose counters start at zero each run.
    report.repaired = super::super::stats::snapshot()
        .repairs
        .get(super::super::repair::outcome::REPAIRED)
        .copied()
        .unwrap_or(0);
    report.stream_chunks = super::super::stats::snapshot().stream_chunks_in;
    drop(admin);
    drop(remover);
    drop(fetcher);
    drop(producers);
    result.map(|()| report)
}

fn member(id: u64) -> Member {
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, id as u8], port));
    Member {
        node_id: id,
        peer_addr: addr(9093),
        kafka_addr: addr(9092),
        http_addr: addr(9090),
    }
}

/// Asks every live node for its status and the committed entries it has not shown yet.
async fn check_nodes(
    world: &World,
    checked_to: &mut BTreeMap<(NodeId, u64), u64>,
) -> Result<(), Violation> {
    for id in world.live_ids() {
        let Some(status) = world.status(id).await else {
            continue;
        };
        world.checker.borrow_mut().on_status(id, &status)?;
        let Some(wal) = world
            .nodes
            .borrow()
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.live.as_ref().map(|l| l.wal.clone()))
        else {
            continue;
        };
        for g in &status.groups {
            let from = checked_to.get(&(id, g.group)).copied().unwrap_or(0) + 1;
            let to = g.commit.min(wal.last_index(g.group));
            let mut next = from.max(g.first_index);
            while next <= to {
                let entries = match wal.read(g.group, next, to + 1, 1 << 20).await {
                    Ok(entries) => entries,
                    // Checked again once repaired.
                    Err(e) if world.planted_damage(id, &e) => break,
                    Err(e) => {
                        return Err(format!(
                            "node {id}: group {}: committed entries do not read: {e}",
                            g.group
                        ))
                    }
                };
                let Some(last) = entries.last().map(|e| e.index) else {
                    break;
                };
                let mut checker = world.checker.borrow_mut();
                for e in &entries {
                    checker.on_committed_entry(id, g.group, e.index, e.term, &e.data)?;
                }
                next = last + 1;
            }
            checked_to.insert((id, g.group), next.saturating_sub(1).max(from - 1));
        }
    }
    Ok(())
}

/// After the faults: true once every damaged entry reads back with the bytes its replicas
/// hold (a repair that never comes makes the run time out in settling, and fail).
async fn repaired(world: &World) -> Result<bool, Violation> {
    let corrupted = world.corrupted.borrow().clone();
    for (id, group, index) in corrupted {
        let Some(wal) = world
            .nodes
            .borrow()
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.live.as_ref().map(|l| l.wal.clone()))
        else {
            return Ok(false);
        };
        match wal.read(group, index, index + 1, u64::MAX).await {
            Ok(v) => {
                let mut checker = world.checker.borrow_mut();
                for e in &v {
                    checker.on_committed_entry(id, group, e.index, e.term, &e.data)?;
                }
            }
            Err(e) if world.planted_damage(id, &e) => return Ok(false),
            Err(e) => return Err(format!("node {id}: damaged entry {group}/{index}: {e}")),
        }
    }
    Ok(true)
}

/// After the faults: true once the producers stopped and every node serves every
/// acknowledged record (checked by fetching everything from every node).
async fn settled(world: &World) -> Result<bool, Violation> {
    if world.producing.get()
        || world.producers_running.get() > 0
        || world.groups.borrow().is_empty()
    {
        return Ok(false);
    }
    if world.live_ids().len() != world.ids().len() {
        return Ok(false);
    }
    let groups = world.groups.borrow().clone();
    let mut hosts: BTreeMap<u64, usize> = BTreeMap::new();
    for id in world.ids() {
        let Some(status) = world.status(id).await else {
            return Ok(false);
        };
        for gs in status.groups.iter().filter(|g| groups.contains(&g.group)) {
            let g = gs.group;
            *hosts.entry(g).or_default() += 1;
            // To the end of the log, not only of what was acknowledged: a batch written twice
            // after the last acknowledgement is found too.
            let mut end = world.checker.borrow().acked_end(g);
            let mut offset = 0;
            let mut served = BTreeMap::new();
            while offset < end {
                let asked = world
                    .ask(id, |reply| ShardMsg::Partition {
                        group: g,
                        request: PartitionRequest::Fetch {
                            offset,
                            bytes_max: 1 << 20,
                            wait_ms_max: 0,
                            reply,
                        },
                    })
                    .await;
                let reply: FetchReply = match asked {
                    Asked::Answer(Ok(r)) => r,
                    _ => return Ok(false),
                };
                if reply.high_watermark < end {
                    return Ok(false);
                }
                end = reply.high_watermark;
                let got = world.checker.borrow_mut().on_fetch(g, id, offset, &reply)?;
                let Some(&(last, _)) = got.last() else {
                    return Ok(false);
                };
                served.extend(got);
                offset = last + 1;
            }
            world.checker.borrow().on_whole_log(g, id, &served)?;
            // Every acknowledged record must be among what this node served, at its offset.
            for a in world.checker.borrow().acked(g) {
                for (i, v) in a.values.iter().enumerate() {
                    let o = a.base_offset + i as u64;
                    if served.get(&o) != Some(v) {
                        return Err(format!(
                            "group {g}: acknowledged record {:?} at offset {o} is not served by node {id} after the cluster healed",
                            String::from_utf8_lossy(v)
                        ));
                    }
                }
            }
        }
    }
    // Every partition is hosted by its replicas: `replication_factor` nodes.
    Ok(groups
        .iter()
        .all(|g| hosts.get(g) == Some(&(REPLICATION_FACTOR as usize))))
}

/// Creates the topic through the controller, retrying on whatever node it believes leads.
async fn create_topic(world: Rc<World>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids = world.ids();
    let mut target = ids[rng.gen_range(0..ids.len())];
    loop {
        let asked = world
            .ask(target, |reply| ShardMsg::Controller {
                command: Command::CreateTopic(TopicSpec {
                    name: TOPIC.into(),
                    id: Uuid::from_u128(0x5eed),
                    partitions: PARTITIONS,
                    replication_factor: REPLICATION_FACTOR,
                    retention: Retention::default(),
                }),
                reply,
            })
            .await;
        match asked {
            Asked::Answer(Ok(Outcome::TopicCreated { groups, .. })) => {
                *world.groups.borrow_mut() = groups;
                return;
            }
            // Created by an earlier attempt whose answer was lost: find its groups.
            Asked::Answer(Ok(Outcome::Rejected(Rejection::TopicExists(_))))
            | Asked::Answer(Ok(Outcome::Rejected(Rejection::TopicIdInUse(_)))) => break,
            // Refused for now (members not registered yet): retry.
            Asked::Answer(Ok(Outcome::Rejected(Rejection::ReplicationFactorTooLarge {
                ..
            }))) => {}
            Asked::Answer(Ok(other)) => {
                world.violate(format!("topic creation answered {other:?}"));
                return;
            }
            Asked::Answer(Err(RequestError::NotLeader { leader })) if leader != 0 => {
                target = leader;
            }
            _ => target = ids[rng.gen_range(0..ids.len())],
        }
        world.clock.sleep(2).await;
    }
    // Each node hosts only the partitions it has a replica of: gather them from every node.
    let mut found: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        for id in world.live_ids() {
            if let Some(status) = world.status(id).await {
                for g in status
                    .groups
                    .iter()
                    .filter(|g| g.topic.as_deref() == Some(TOPIC))
                {
                    if let Some(p) = g.partition {
                        found.insert(p, g.group);
                    }
                }
            }
        }
        if found.len() == PARTITIONS as usize {
            *world.groups.borrow_mut() = found.into_values().collect();
            return;
        }
        world.clock.sleep(5).await;
    }
}

/// Removes member `node` through the controller at tick `at` (once the topic exists),
/// retrying on whatever node it believes leads the controller.
async fn remove_member(world: Rc<World>, node: NodeId, at: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    while world.clock.now() < at || world.groups.borrow().is_empty() {
        world.clock.sleep(5).await;
    }
    let ids = world.ids();
    let mut target = ids[rng.gen_range(0..ids.len())];
    loop {
        let asked = world
            .ask(target, |reply| ShardMsg::Controller {
                command: Command::RemoveMember { node_id: node },
                reply,
            })
            .await;
        match asked {
            Asked::Answer(Ok(Outcome::MemberRemoved { added, .. })) => {
                world.replicas_moved.set(added.len() as u64);
                return;
            }
            // Removed by an earlier attempt whose answer was lost.
            Asked::Answer(Ok(Outcome::Rejected(Rejection::UnknownMember(_)))) => return,
            Asked::Answer(Ok(other)) => {
                world.violate(format!("member removal answered {other:?}"));
                return;
            }
            Asked::Answer(Err(RequestError::NotLeader { leader })) if leader != 0 => {
                target = leader;
            }
            _ => target = ids[rng.gen_range(0..ids.len())],
        }
        world.clock.sleep(2).await;
    }
}

/// The producers of a seed: the plain ones (one per partition) or not, and the idempotent
/// clients (each writing to every partition) with their windows and lingers. One seed in six
/// runs plain producers only (the workload before idempotent ones), the others one
/// idempotent client, a third of them next to the plain producers: about the load of one
/// producer per partition, which keeps the default run's time. Drawn from a generator of its
/// own, so the other draws of a seed do not change.
struct ProducerMix {
    plain: bool,
    /// (window, linger ticks) of each idempotent client.
    idempotent_clients: Vec<(usize, u64)>,
}

impl ProducerMix {
    fn draw(seed: u64) -> ProducerMix {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x7072_6f64);
        let clients = usize::from(rng.gen_range(0..6) != 0);
        let idempotent_clients = (0..clients)
            .map(|_| {
                (
                    rng.gen_range(1..=idempotent::WINDOW_MAX),
                    rng.gen_range(4..=6),
                )
            })
            .collect();
        let plain = clients == 0 || rng.gen_range(0..3) == 0;
        ProducerMix {
            plain,
            idempotent_clients,
        }
    }
}

/// The plain producer of a partition (no idempotence): one request at a time, every record
/// value unique, a failed request's records sent again as new ones.
async fn produce(world: Rc<World>, partition: u32, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids = world.ids();
    let mut target = ids[rng.gen_range(0..ids.len())];
    let mut attempt = 0u64;
    while world.producing.get() {
        let Some(group) = world.groups.borrow().get(partition as usize).copied() else {
            world.clock.sleep(2).await;
            continue;
        };
        attempt += 1;
        let values: Vec<Vec<u8>> = (0..rng.gen_range(1..=3))
            .map(|i| format!("p{partition}-a{attempt}-r{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let records = build_batch(&refs, 1_700_000_000_000 + attempt as i64);
        let asked = world.produce_committed(target, group, records).await;
        match asked {
            Asked::Answer(Ok(reply)) => {
                let ack = Acked {
                    base_offset: reply.base_offset,
                    values,
                };
                if let Err(v) = world.checker.borrow_mut().on_ack(group, target, ack) {
                    world.violate(v);
                    break;
                }
                continue;
            }
            Asked::Answer(Err(RequestError::NotLeader { leader })) if leader != 0 => {
                target = leader;
            }
            Asked::Answer(Err(RequestError::NotReady(_))) => {}
            _ => target = ids[rng.gen_range(0..ids.len())],
        }
        world.clock.sleep(rng.gen_range(1..=3)).await;
    }
    world
        .producers_running
        .set(world.producers_running.get() - 1);
}

/// Fetches from random nodes at random offsets up to what is known to be committed.
async fn fetch(world: Rc<World>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    loop {
        world.clock.sleep(rng.gen_range(1..=4)).await;
        let groups = world.groups.borrow().clone();
        let ids = world.live_ids();
        if groups.is_empty() || ids.is_empty() {
            continue;
        }
        let group = groups[rng.gen_range(0..groups.len())];
        let node = ids[rng.gen_range(0..ids.len())];
        let end = world.checker.borrow().known_end(group);
        let offset = rng.gen_range(0..=end);
        let asked = world
            .ask(node, |reply| ShardMsg::Partition {
                group,
                request: PartitionRequest::Fetch {
                    offset,
                    bytes_max: FETCH_BYTES_MAX,
                    wait_ms_max: 0,
                    reply,
                },
            })
            .await;
        if let Asked::Answer(Ok(reply)) = asked {
            if let Err(v) = world
                .checker
                .borrow_mut()
                .on_fetch(group, node, offset, &reply)
            {
                world.violate(v);
                return;
            }
        }
    }
}
