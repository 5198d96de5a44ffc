//! The append load generator: on every shard, one appender per Raft group placed there, each
//! keeping up to `inflight` appends queued with `ShardWal::enqueue_append`.
//!
//! An appender is two local tasks joined by a channel: the *submitter* enqueues appends (in
//! index order, so the group's log stays consecutive) and the *acker* awaits their
//! durability receivers in the same order, recording each latency the moment it resolves.
//! A semaphore of `inflight` permits between them bounds what one appender has outstanding.
//!
//! Latency is measured from:
//! - closed loop (no `rate`): the moment the submitter had a free permit and called
//!   `enqueue_append` (so time spent blocked by the WAL's backpressure counts);
//! - open loop (`rate`): the *intended* send time of the append on the fixed schedule, even if
//!   the submitter got there late. A stall therefore shows up in the latency of every append
//!   it delayed, not only the one that was in flight (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel;
use glommio::sync::Semaphore;
use hdrhistogram::Histogram;
use rand::{RngCore, SeedableRng};
use tern_engine::engine::ShardContext;
use tern_engine::{shard_for_group, Entry, WalStats};

/// Highest latency the histograms hold (60 s, in ns); higher values saturate to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant figures of the latency histograms (0.1 % resolution).
const HISTOGRAM_SIGFIG: u8 = 3;
/// How long a shard waits for the others to finish recovery before starting anyway.
const START_WAIT_MAX: Duration = Duration::from_secs(600);

/// When the load stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Measure for this long after the warm-up.
    After(Duration),
    /// Stop once this many payload bytes were enqueued (over all shards; split evenly).
    Bytes(u64),
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub record_bytes: usize,
    /// Number of appenders, one Raft group each (ids 1..=appenders).
    pub appenders: u64,
    /// Appends one appender may have queued and not yet durable.
    pub inflight: u64,
    pub warmup: Duration,
    pub stop: Stop,
    /// Open loop: total appends per second over all appenders.
    pub rate: Option<f64>,
}

/// What one shard measured inside its window.
#[derive(Debug)]
pub struct ShardOutcome {
    pub shard: u32,
    /// Acknowledgement latencies, ns.
    pub latency_ns: Histogram<u64>,
    pub appends: u64,
    pub payload_bytes: u64,
    pub window: Duration,
    /// Engine counters accrued inside the window.
    pub stats: WalStats,
    /// Acknowledged payload bytes per whole second of the window (time mode).
    pub bytes_per_second: Vec<u64>,
    pub error: Option<String>,
}

/// Per-shard measurement state shared by the shard's appender tasks.
struct Meter {
    latency_ns: RefCell<Histogram<u64>>,
    appends: Cell<u64>,
    payload_bytes: Cell<u64>,
    enqueued_bytes: Cell<u64>,
    bytes_per_second: RefCell<Vec<u64>>,
    stop: Cell<bool>,
    error: RefCell<Option<String>>,
    window_start: Instant,
    /// Completions at or after this instant are drained but not counted (time mode).
    window_end: Cell<Option<Instant>>,
}

impl Meter {
    fn fail(&self, why: String) {
        self.stop.set(true);
        self.error.borrow_mut().get_or_insert(why);
    }

    fn record(&self, sent: Instant, done: Instant, bytes: u64) {
        if done < self.window_start || self.window_end.get().is_some_and(|end| done >= end) {
            return;
        }
        let ns = done.saturating_duration_since(sent).as_nanos() as u64;
        self.latency_ns
            .borrow_mut()
            .saturating_record(ns.clamp(1, LATENCY_NS_MAX));
        self.appends.set(self.appends.get() + 1);
        self.payload_bytes.set(self.payload_bytes.get() + bytes);
        let second = done.saturating_duration_since(self.window_start).as_secs() as usize;
        let mut per_second = self.bytes_per_second.borrow_mut();
        // Bytes mode has no end, so the timeline grows with the run (one slot per second).
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += bytes;
    }
}

pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// Runs the load on one shard (call from the closure given to `run_shards`). `ready` counts
/// shards that finished recovery, so that all start loading together.
pub async fn run_shard(ctx: ShardContext, spec: LoadSpec, ready: Arc<AtomicU32>) -> ShardOutcome {
    let wal = ctx.wal.clone();
    let groups: Vec<u64> = (1..=spec.appenders)
        .filter(|g| shard_for_group(*g, ctx.shards) == ctx.shard)
        .collect();

    ready.fetch_add(1, Ordering::SeqCst);
    let waiting_since = Instant::now();
    while ready.load(Ordering::SeqCst) < ctx.shards && waiting_since.elapsed() < START_WAIT_MAX {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }

    let t0 = Instant::now();
    let window_start = t0 + spec.warmup;
    let meter = Rc::new(Meter {
        latency_ns: RefCell::new(new_histogram()),
        appends: Cell::new(0),
        payload_bytes: Cell::new(0),
        enqueued_bytes: Cell::new(0),
        bytes_per_second: RefCell::new(Vec::new()),
        stop: Cell::new(false),
        error: RefCell::new(None),
        window_start,
        window_end: Cell::new(match spec.stop {
            Stop::After(d) => Some(window_start + d),
            Stop::Bytes(_) => None,
        }),
    });
    let budget = match spec.stop {
        Stop::Bytes(total) => Some(total.div_ceil(ctx.shards as u64)),
        Stop::After(_) => None,
    };
    // Random bytes, so nothing along the way (device, host, file system) can compress them.
    let mut payload = vec![0u8; spec.record_bytes];
    rand::rngs::SmallRng::seed_from_u64(ctx.shard as u64).fill_bytes(&mut payload);
    let payload = Rc::new(payload);

    let mut tasks = Vec::new();
    for (i, &group) in groups.iter().enumerate() {
        let first_index = wal.group(group).map_or(1, |g| g.last_index + 1);
        // Spread the open-loop schedules of a shard's appenders evenly over one interval.
        let interval = spec
            .rate
            .map(|r| Duration::from_secs_f64(spec.appenders as f64 / r.max(f64::MIN_POSITIVE)));
        let phase = i as f64 / groups.len().max(1) as f64;
        let a = Appender {
            wal: wal.clone(),
            group,
            first_index,
            inflight: spec.inflight,
            payload: payload.clone(),
            meter: meter.clone(),
            t0,
            deadline: meter.window_end.get(),
            budget,
            schedule: interval.map(|iv| (iv, phase)),
        };
        tasks.push(glommio::spawn_local(a.run()).detach());
    }

    // Engine counters at the window's edges (time mode), or over the whole run (bytes mode).
    let mut before = wal.stats();
    if let Stop::After(_) = spec.stop {
        sleep_until(window_start).await;
        before = wal.stats();
    }
    let mut after = None;
    if let Some(end) = meter.window_end.get() {
        sleep_until(end).await;
        meter.stop.set(true);
        after = Some(wal.stats());
    }
    for t in tasks {
        t.await;
    }
    let window_end = meter.window_end.get().unwrap_or_else(Instant::now);
    let after = after.unwrap_or_else(|| wal.stats());

    let error = meter.error.borrow_mut().take();
    ShardOutcome {
        shard: ctx.shard,
        latency_ns: meter.latency_ns.replace(new_histogram()),
        appends: meter.appends.get(),
        payload_bytes: meter.payload_bytes.get(),
        window: window_end.saturating_duration_since(window_start),
        stats: stats_delta(&before, &after),
        bytes_per_second: meter.bytes_per_second.take(),
        error,
    }
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        glommio::timer::sleep(t - now).await;
    }
}

fn stats_delta(before: &WalStats, after: &WalStats) -> WalStats {
    WalStats {
        batches: after.batches - before.batches,
        batch_bytes: after.batch_bytes - before.batch_bytes,
        records: after.records - before.records,
        fsyncs: after.fsyncs - before.fsyncs,
        segments_created: after.segments_created - before.segments_created,
        segments_purged: after.segments_purged - before.segments_purged,
        write_us: after.write_us - before.write_us,
        fsync_us: after.fsync_us - before.fsync_us,
        fsync_latency: after.fsync_latency.since(&before.fsync_latency),
        batch_size: after.batch_size.since(&before.batch_size),
    }
}

type Wal = Rc<tern_engine::ShardWal<tern_engine::storage::dma::DmaStorage>>;
type Ack = tern_engine::Durable;

struct Appender {
    wal: Wal,
    group: u64,
    first_index: u64,
    inflight: u64,
    payload: Rc<Vec<u8>>,
    meter: Rc<Meter>,
    t0: Instant,
    deadline: Option<Instant>,
    /// Bytes this shard may enqueue in all (bytes mode).
    budget: Option<u64>,
    /// Open loop: (interval between this appender's appends, phase in intervals).
    schedule: Option<(Duration, f64)>,
}

impl Appender {
    async fn run(self) {
        let permits = Rc::new(Semaphore::new(self.inflight));
        let (tx, rx) = local_channel::new_unbounded::<(Instant, Ack)>();
        let acker = glommio::spawn_local(ack_loop(
            rx,
            permits.clone(),
            self.meter.clone(),
            self.payload.len() as u64,
        ))
        .detach();
        let bytes = self.payload.len() as u64;
        let mut index = self.first_index;
        let mut k = 0u64;
        // Bounded by the deadline or the byte budget (one of them is always set by callers),
        // and by `stop` on error.
        loop {
            let m = &self.meter;
            if m.stop.get() || self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self.budget.is_some_and(|b| m.enqueued_bytes.get() >= b) {
                break;
            }
            let intended = match self.schedule {
                Some((interval, phase)) => {
                    let t = self.t0 + interval.mul_f64(k as f64 + phase);
                    if self.deadline.is_some_and(|d| t >= d) {
                        break;
                    }
                    sleep_until(t).await;
                    Some(t)
                }
                None => None,
            };
            if permits.acquire(1).await.is_err() {
                break;
            }
            let sent = intended.unwrap_or_else(Instant::now);
            let entry = Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 1,
                index,
                data: &self.payload,
            };
            match self.wal.enqueue_append(self.group, &[entry]).await {
                Ok(ack) => {
                    if tx.try_send((sent, ack)).is_err() {
                        m.fail("acker channel closed".into());
                        break;
                    }
                }
                Err(e) => {
                    m.fail(format!("append to group {} failed: {e}", self.group));
                    break;
                }
            }
            m.enqueued_bytes.set(m.enqueued_bytes.get() + bytes);
            index += 1;
            k += 1;
        }
        drop(tx);
        acker.await;
    }
}

/// Awaits an appender's acknowledgements in order. The WAL acknowledges batches in order,
/// so an append behind the one awaited is never durable earlier than it.
async fn ack_loop(
    rx: local_channel::LocalReceiver<(Instant, Ack)>,
    permits: Rc<Semaphore>,
    meter: Rc<Meter>,
    bytes: u64,
) {
    while let Some((sent, ack)) = rx.recv().await {
        let res = ack.await;
        let done = Instant::now();
        permits.signal(1);
        match res {
            Ok(()) => meter.record(sent, done, bytes),
            Err(e) => meter.fail(format!("append not durable: {e}")),
        }
    }
}
