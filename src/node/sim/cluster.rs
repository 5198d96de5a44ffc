//! One simulated cluster for one seed: 3-5 nodes, each running the real [`Shard`] driver over
//! its own simulated disk (with seeded latency) and the simulated network, all on the current
//! glommio executor, with time advanced tick by tick by [`run`]. Faults and the workload are
//! drawn from the seed; the checker looks at every acknowledgement and fetch, and at every
//! node's status and committed log every few ticks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

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
use super::super::records::build_batch;
use super::super::requests::{Acks, FetchReply, PartitionRequest, ProduceReply, RequestError};
use super::super::shard::{Shard, ShardMsg, ShardSetup, ShardStatus, TICK};
use super::checker::{Acked, Checker, Violation};
use super::clock::SimClock;
use super::fence::Fenced;
use super::net::{NetFaults, SimEndpoint, SimNet};

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

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub nodes: usize,
    pub ticks: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub acks: u64,
    pub fetches: u64,
    pub entries_compared: u64,
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
    /// Producer tasks not yet finished (each finishes its request in flight after
    /// `producing` turns false).
    producers_running: Cell<usize>,
    members: Vec<Member>,
    groups: RefCell<Vec<u64>>,
}

enum Asked<T> {
    Answer(Result<T, RequestError>),
    /// Node down, its inbox full, or it dropped the request (crashed).
    Unavailable,
    TimedOut,
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

    /// Starts (or restarts after a crash) node `idx` on its disk.
    async fn start(&self, idx: usize) -> Result<(), Violation> {
        let (id, disk, life) = {
            let mut nodes = self.nodes.borrow_mut();
            let n = &mut nodes[idx];
            n.lives += 1;
            (n.id, n.disk.clone(), n.lives)
        };
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
}

/// Runs the simulation of `seed` on the current glommio executor.
pub async fn run(seed: u64) -> Result<SimReport, Violation> {
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
                })
                .collect(),
        ),
        checker: RefCell::new(Checker::default()),
        violation: RefCell::new(None),
        producing: Cell::new(true),
        producers_running: Cell::new(PARTITIONS as usize),
        members,
        groups: RefCell::new(Vec::new()),
    });
    for idx in 0..node_count {
        world.start(idx).await?;
    }
    let admin = glommio::spawn_local(create_topic(world.clone(), rng.gen()));
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        producers.push(glommio::spawn_local(produce(world.clone(), p, rng.gen())));
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
                                "\n  node {id} group {}: {} term {} leader {} commit {} applied {} last {}",
                                g.group, g.role, g.term, g.leader, g.commit, g.applied, g.last_index
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
            if clock.now().is_multiple_of(CHECK_EVERY_TICKS) {
                check_nodes(&world, &mut checked_to).await?;
                if settling && settled(&world).await? {
                    return Ok(());
                }
            }
        }
    }
    .await;
    report.ticks = clock.now();
    let c = world.checker.borrow();
    report.acks = c.acks;
    report.fetches = c.fetches;
    report.entries_compared = c.entries_compared;
    report.trace = c.trace;
    drop(c);
    drop(admin);
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
                let entries = wal
                    .read(g.group, next, to + 1, 1 << 20)
                    .await
                    .map_err(|e| {
                        format!(
                            "node {id}: group {}: committed entries do not read: {e}",
                            g.group
                        )
                    })?;
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
        for g in status
            .groups
            .iter()
            .map(|g| g.group)
            .filter(|g| groups.contains(g))
        {
            *hosts.entry(g).or_default() += 1;
            let end = world.checker.borrow().acked_end(g);
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
                let got = world.checker.borrow_mut().on_fetch(g, id, offset, &reply)?;
                let Some(&(last, _)) = got.last() else {
                    return Ok(false);
                };
                served.extend(got);
                offset = last + 1;
            }
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

/// One producer per partition, one request at a time, every record value unique.
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
        let asked: Asked<ProduceReply> = world
            .ask(target, |reply| ShardMsg::Partition {
                group,
                request: PartitionRequest::Produce {
                    records,
                    acks: Acks::Committed,
                    reply,
                },
            })
            .await;
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
