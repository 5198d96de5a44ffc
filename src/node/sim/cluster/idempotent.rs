//! Idempotent producers, as a Kafka client with `enable.idempotence` behaves: a producer id
//! and epoch from InitProducerId, one sequence per partition, up to `window` batches in
//! flight, and every failed batch (a timeout, a lost answer, not the leader, not ready)
//! retried as it was, same sequence, possibly to a new leader, in sequence order; a sequence
//! is never skipped. The checker then sees each batch acknowledged once at its offset, the
//! batches of a producer in sequence order in every replica's log, and never a batch refused
//! as out of order after all of its predecessors were acknowledged.

use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;

use futures_lite::future;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_net::records::{build_batch_for, ProducerStamp};
use tern_raft::message::NodeId;

use super::super::super::kafka::producer_id;
use super::super::super::requests::{ProduceReply, RequestError};
use super::super::super::shard::TICK;
use super::super::checker::{idempotent_value, Acked};
use super::{Asked, World};

/// Most batches a producer has in flight per partition (Kafka's limit with idempotence on,
/// `max.in.flight.requests.per_connection` = 5, which the producer table's
/// `BATCHES_PER_PRODUCER_MAX` matches).
pub(super) const WINDOW_MAX: usize = 5;

/// One idempotent producer (a client), writing to every partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct Client {
    pub producer_id: i64,
    pub epoch: i16,
    /// Batches in flight per partition at most.
    pub window: usize,
    /// Ticks between two new batches at least (Kafka's `linger.ms`): the producer writes
    /// about as much as a plain one, and its window fills only when answers are slow (a
    /// failover, a lost answer), which is when retries and pipelining matter.
    pub linger_ticks: u64,
}

impl World {
    /// InitProducerId as a node answers it (`kafka/producer_id.rs`): the id of a node the
    /// client reaches, in the node's layout, with the simulated clock in place of the wall
    /// clock so a seed replays exactly. `None` while no node is up.
    pub(super) fn init_producer_id(&self, rng: &mut SmallRng) -> Option<(i64, i16)> {
        let live = self.live_ids();
        if live.is_empty() {
            return None;
        }
        let node = live[rng.gen_range(0..live.len())];
        let now_ms = self.clock.now() * TICK.as_millis() as u64;
        let mut last = self.producer_ids_given.borrow_mut();
        let given = last.entry(node).or_insert(0);
        *given = (now_ms << 4).max(*given + 1);
        Some((producer_id::compose(node, *given), 0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent yet, or its last attempt failed: to be sent (again).
    Waiting,
    InFlight,
    Acked,
}

struct Batch {
    sequence: i32,
    values: Vec<Vec<u8>>,
    records: Vec<u8>,
    state: State,
    attempts: u32,
}

/// What an attempt came back with.
struct Attempt {
    sequence: i32,
    node: NodeId,
    /// Every batch before this one was acknowledged when it was sent.
    predecessors_acked: bool,
    asked: Asked<ProduceReply>,
}

type AttemptFuture = Pin<Box<dyn std::future::Future<Output = Attempt>>>;

/// `client`'s producing to `partition` until the faults stop; then its batches in flight
/// come back and it stops (a batch never acknowledged may or may not be in the log, once).
pub(super) async fn produce_idempotent(
    world: Rc<World>,
    partition: u32,
    client: Client,
    seed: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids = world.ids();
    let mut target = ids[rng.gen_range(0..ids.len())];
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut next_sequence = 0i32;
    let mut inflight: FuturesUnordered<AttemptFuture> = FuturesUnordered::new();
    let mut retry_at = 0u64;
    let mut new_batch_at = 0u64;
    let group = loop {
        if !world.producing.get() {
            world
                .producers_running
                .set(world.producers_running.get() - 1);
            return;
        }
        if let Some(g) = world.groups.borrow().get(partition as usize).copied() {
            break g;
        }
        world.clock.sleep(2).await;
    };
    loop {
        while queue.front().is_some_and(|b| b.state == State::Acked) {
            queue.pop_front();
        }
        let producing = world.producing.get();
        if !producing && inflight.is_empty() {
            break;
        }
        // Send, in sequence order: the first batch waiting, or a new one.
        while producing && world.clock.now() >= retry_at && inflight.len() < client.window {
            let i = match queue.iter().position(|b| b.state == State::Waiting) {
                Some(i) => i,
                None if queue.len() < client.window && world.clock.now() >= new_batch_at => {
                    new_batch_at = world.clock.now() + client.linger_ticks;
                    let sequence = next_sequence;
                    let count = rng.gen_range(1..=3);
                    next_sequence += count;
                    let values: Vec<Vec<u8>> = (0..count)
                        .map(|r| idempotent_value(client.producer_id, partition, sequence + r))
                        .collect();
                    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                    let stamp = ProducerStamp {
                        producer_id: client.producer_id,
                        producer_epoch: client.epoch,
                        base_sequence: sequence,
                    };
                    let records = build_batch_for(&refs, 1_700_000_000_000, stamp);
                    queue.push_back(Batch {
                        sequence,
                        values,
                        records,
                        state: State::Waiting,
                        attempts: 0,
                    });
                    queue.len() - 1
                }
                None => break,
            };
            let b = &mut queue[i];
            b.state = State::InFlight;
            b.attempts += 1;
            let (w, sequence, records) = (world.clone(), b.sequence, b.records.clone());
            let node = target;
            inflight.push(Box::pin(async move {
                let asked = w.produce_committed(node, group, records).await;
                Attempt {
                    sequence,
                    node,
                    predecessors_acked: i == 0,
                    asked,
                }
            }));
        }
        // An empty set answers `None` at once: then only time can bring work.
        if inflight.is_empty() {
            world.clock.sleep(1).await;
            continue;
        }
        let came_back = future::or(inflight.next(), async {
            world.clock.sleep(1).await;
            None
        })
        .await;
        let Some(a) = came_back else {
            continue;
        };
        let Some(b) = queue.iter_mut().find(|b| b.sequence == a.sequence) else {
            continue;
        };
        let backoff = rng.gen_range(1..=3);
        match a.asked {
            Asked::Answer(Ok(reply)) => {
                b.state = State::Acked;
                if b.attempts > 1 {
                    world
                        .idempotent_retries_acked
                        .set(world.idempotent_retries_acked.get() + 1);
                }
                let ack = Acked {
                    base_offset: reply.base_offset,
                    values: b.values.clone(),
                };
                let checked = world.checker.borrow_mut().on_idempotent_ack(
                    group,
                    a.node,
                    client.producer_id,
                    a.sequence,
                    ack,
                );
                if let Err(v) = checked {
                    world.violate(v);
                    break;
                }
                continue;
            }
            Asked::Answer(Err(RequestError::OutOfOrderSequence { expected, .. })) => {
                let checked = world.checker.borrow_mut().on_out_of_order(
                    group,
                    a.node,
                    client.producer_id,
                    a.sequence,
                    expected,
                    a.predecessors_acked,
                );
                if let Err(v) = checked {
                    world.violate(v);
                    break;
                }
            }
            // One producer per id and epoch, one batch per request: neither may be refused.
            Asked::Answer(Err(e @ RequestError::ProducerFenced { .. }))
            | Asked::Answer(Err(e @ RequestError::Invalid(_))) => {
                world.violate(format!(
                    "group {group}: node {} refused producer {}'s sequence {}: {e}",
                    a.node, client.producer_id, a.sequence
                ));
                break;
            }
            Asked::Answer(Err(RequestError::NotLeader { leader })) if leader != 0 => {
                target = leader;
            }
            Asked::Answer(Err(RequestError::NotReady(_))) => {}
            _ => target = ids[rng.gen_range(0..ids.len())],
        }
        // Retried as it was, after a pause; batches after it that fail come back in order.
        b.state = State::Waiting;
        retry_at = retry_at.max(world.clock.now() + backoff);
    }
    world
        .producers_running
        .set(world.producers_running.get() - 1);
}
