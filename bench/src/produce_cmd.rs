//! `tern-bench produce`: produce load against a running node (or cluster) through tern's
//! Kafka client, closed loop or open loop, and report throughput and ack latency.
//!
//! Each worker is a thread with its own client and connections, sending one batch at a time
//! to its partitions in turn (worker w takes partitions w, w+N, ...; with fewer partitions than
//! workers, workers share them). Closed loop: the next batch leaves when the previous one is
//! acknowledged; latency is the round trip. Open loop (--rate): batches leave on a fixed
//! schedule; latency counts from each batch's intended send time, so a stalled server shows
//! up as queueing delay instead of being hidden (no coordinated omission).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tern_net::kafka_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, OffsetSpec, Producer,
};

use crate::error::{BenchError, Result};
use crate::load::{new_histogram, LATENCY_NS_MAX};
use crate::report::{latency_table, round1, thousands, LatencyUs};
use crate::samples::SamplesArgs;
use crate::thread_load::{self, Op, Schedule};

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Kafka address of a node (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub server: String,
    /// Topic to produce to.
    #[arg(long, default_value = "tern-bench")]
    pub topic: String,
    /// Create the topic with --partitions (and --replication-factor) if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Partitions of a topic created by --create.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replicas of a topic created by --create [default: the server's].
    #[arg(long)]
    pub replication_factor: Option<u8>,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per batch (one produce request carries one batch).
    #[arg(long, default_value_t = 16)]
    pub batch_records: usize,
    /// Worker threads, each with its own connection, one batch in flight each.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Acknowledgement: all, 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Open loop: total batches per second over all workers, on a fixed schedule. Without
    /// it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print one JSON object on one line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub samples: SamplesArgs,
    /// Also measure end to end: one consumer per partition long-polls Fetch from the latest
    /// offset, and a record's latency runs from its send to the fetch that returns it (the
    /// send time travels in the first 8 bytes of each value). Needs --record-bytes >= 8.
    #[arg(long)]
    pub end_to_end: bool,
}

fn parse_acks(text: &str) -> std::result::Result<Acks, String> {
    Acks::parse(text).ok_or_else(|| format!("{text:?} is not one of all, 1, 0"))
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    server: String,
    topic: String,
    partitions: usize,
    acks: &'static str,
    record_bytes: usize,
    batch_records: usize,
    batch_payload_bytes: usize,
    concurrency: usize,
    rate_batches_per_s: Option<f64>,
    seconds: f64,
    batches: u64,
    records: u64,
    records_per_s: f64,
    /// Payload MB/s (10^6 bytes), record values only.
    mb_per_s: f64,
    /// Ack latency of a batch.
    latency: LatencyUs,
    /// --end-to-end: from a record's send to the consumer's fetch that returned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end: Option<LatencyUs>,
}

fn check(a: &ProduceArgs) -> Result<()> {
    let bad = |arg, why: &str| {
        Err(BenchError::Arg {
            arg,
            why: why.to_string(),
        })
    };
    if a.record_bytes == 0 {
        return bad("record-bytes", "must be at least 1");
    }
    if a.batch_records == 0 {
        return bad("batch-records", "must be at least 1");
    }
    if a.concurrency == 0 {
        return bad("concurrency", "must be at least 1");
    }
    if a.partitions == 0 {
        return bad("partitions", "must be at least 1");
    }
    // Written so that NaN fails too.
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !(positive(a.duration) && a.warmup.is_finite() && a.warmup >= 0.0) {
        return bad("duration", "duration must be > 0 and warmup >= 0");
    }
    if a.rate.is_some_and(|r| !positive(r)) {
        return bad("rate", "must be > 0");
    }
    if a.end_to_end && a.record_bytes < STAMP_BYTES {
        return bad("record-bytes", "must be at least 8 with --end-to-end");
    }
    Ok(())
}

fn client_error(e: ClientError) -> BenchError {
    BenchError::Client(e)
}

pub fn run(a: &ProduceArgs) -> Result<()> {
    check(a)?;
    let config = ClientConfig::new(a.server.clone());
    let mut client = Client::connect(config.clone()).map_err(client_error)?;
    let partitions = match client.partition_count(&a.topic) {
        Ok(n) => n,
        Err(ClientError::UnknownTopic { .. }) if a.create => {
            client
                .create_topic(
                    &a.topic,
                    a.partitions.min(i32::MAX as u32) as i32,
                    a.replication_factor.map_or(-1, i16::from),
                )
                .map_err(client_error)?;
            client.partition_count(&a.topic).map_err(client_error)?
        }
        Err(e) => return Err(client_error(e)),
    };
    drop(client);
    let payload = vec![b'x'; a.record_bytes];
    let schedule = Schedule {
        workers: a.concurrency,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        rate: a.rate,
    };
    let clock = Instant::now();
    let open = |index: usize| {
        let client = Client::connect(config.clone()).map_err(client_error)?;
        let producer = Producer::new(client, a.acks, true).map_err(client_error)?;
        // This worker's partitions: index, index + concurrency, ... (at least one).
        let mine: Vec<i32> = (index..partitions.max(index + 1))
            .step_by(a.concurrency)
            .map(|p| (p % partitions) as i32)
            .collect();
        Ok(ProduceOp {
            producer,
            topic: &a.topic,
            values: vec![payload.clone(); a.batch_records],
            partitions: mine,
            stamp_clock: a.end_to_end.then_some(clock),
        })
    };
    let (totals, end_to_end) = if a.end_to_end {
        // Consumers start at the current end of every partition, before any record is sent.
        let mut starts = Vec::with_capacity(partitions);
        let mut admin = Client::connect(config.clone()).map_err(client_error)?;
        for p in 0..partitions {
            let at = admin
                .list_offset(&a.topic, p as i32, OffsetSpec::Latest)
                .map_err(client_error)?;
            starts.push(at);
        }
        drop(admin);
        let stop = AtomicBool::new(false);
        // The load starts ~100 ms after thread_load::run is called (its start delay); the
        // window is approximate at that edge only, and bounded the same way as the acks'.
        let window_start = clock.elapsed() + schedule.warmup;
        let window = (
            window_start.as_nanos() as u64,
            (window_start + schedule.duration + Duration::from_millis(100)).as_nanos() as u64,
        );
        thread::scope(|scope| {
            let consumers: Vec<_> = starts
                .iter()
                .enumerate()
                .map(|(p, &from)| {
                    let (config, stop) = (config.clone(), &stop);
                    scope.spawn(move || {
                        consume(config, &a.topic, p as i32, from, clock, window, stop)
                    })
                })
                .collect();
            let totals = thread_load::run(schedule, open);
            stop.store(true, Ordering::Release);
            let mut e2e = new_histogram();
            for c in consumers {
                let h = c.join().unwrap_or_else(|_| {
                    Err(BenchError::Arg {
                        arg: "end-to-end",
                        why: "a consumer thread panicked".into(),
                    })
                })?;
                e2e.add(&h).map_err(|e| BenchError::Arg {
                    arg: "end-to-end",
                    why: format!("merging histograms: {e}"),
                })?;
            }
            Ok::<_, BenchError>((totals?, Some(e2e)))
        })?
    } else {
        (thread_load::run(schedule, open)?, None)
    };
    a.samples
        .save("tern", &totals.latency_ns, &totals.bytes_per_second)?;
    let latency = totals.latency_ns;
    let batches = totals.ops;
    let records = batches * a.batch_records as u64;
    let bytes = totals.payload_bytes;
    let seconds = a.duration;
    let report = Report {
        mode: if a.rate.is_some() { "open" } else { "closed" },
        server: a.server.clone(),
        topic: a.topic.clone(),
        partitions,
        acks: match a.acks {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        },
        record_bytes: a.record_bytes,
        batch_records: a.batch_records,
        batch_payload_bytes: a.record_bytes * a.batch_records,
        concurrency: a.concurrency,
        rate_batches_per_s: a.rate,
        seconds,
        batches,
        records,
        records_per_s: round1(records as f64 / seconds),
        mb_per_s: round1(bytes as f64 / seconds / 1e6),
        latency: LatencyUs::from_ns(&latency),
        end_to_end: end_to_end.as_ref().map(LatencyUs::from_ns),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "tern-bench produce ({} loop): {} partitions, acks={}, {} workers, batches of {} x {} B",
            report.mode,
            report.partitions,
            report.acks,
            report.concurrency,
            report.batch_records,
            report.record_bytes
        );
        println!(
            "  {} records/s  {} MB/s  {} batches in {:.1} s",
            thousands(report.records_per_s),
            report.mb_per_s,
            thousands(report.batches as f64),
            seconds
        );
        println!("{}", latency_table(&report.latency));
        if let Some(e2e) = &report.end_to_end {
            println!("  end to end (send -> fetched by a consumer):");
            println!("{}", latency_table(e2e));
        }
        if a.acks == Acks::None {
            println!("  (acks=0: latency is the time to hand the batch to the socket)");
        }
    }
    Ok(())
}

/// One worker's producer: a batch to each of its partitions in turn.
pub(crate) struct ProduceOp<'a> {
    producer: Producer,
    topic: &'a str,
    values: Vec<Vec<u8>>,
    partitions: Vec<i32>,
    /// End to end: the clock whose reading (ns) is stamped into each value's first 8 bytes.
    stamp_clock: Option<Instant>,
}

impl<'a> ProduceOp<'a> {
    /// A worker sending `values` as one batch to each of `partitions` in turn (no end-to-end
    /// stamps); `partitions` must not be empty.
    pub(crate) fn new(
        producer: Producer,
        topic: &'a str,
        values: Vec<Vec<u8>>,
        partitions: Vec<i32>,
    ) -> ProduceOp<'a> {
        ProduceOp {
            producer,
            topic,
            values,
            partitions,
            stamp_clock: None,
        }
    }
}

impl Op for ProduceOp<'_> {
    fn send(&mut self, seq: u64) -> Result<u64> {
        let partition = self.partitions[(seq % self.partitions.len() as u64) as usize];
        if let Some(clock) = self.stamp_clock {
            let now = clock.elapsed().as_nanos() as u64;
            for v in &mut self.values {
                v[..STAMP_BYTES].copy_from_slice(&now.to_le_bytes());
            }
        }
        let values: Vec<&[u8]> = self.values.iter().map(Vec::as_slice).collect();
        self.producer
            .send(self.topic, partition, &values)
            .map_err(client_error)?;
        Ok(self.values.iter().map(|v| v.len() as u64).sum())
    }
}

/// Bytes of the send time stamped into each value (end to end).
const STAMP_BYTES: usize = 8;
/// How long consumers keep reading after the producers stopped, at most.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// End to end: reads `partition` from `from` until `stop` is set and it has caught up with
/// the high watermark (or DRAIN_MAX after `stop`), recording for each record stamped inside
/// [window_start, window_end) (ns on `clock`) the time from its stamp to its fetch.
#[allow(clippy::too_many_arguments)]
fn consume(
    config: ClientConfig,
    topic: &str,
    partition: i32,
    from: i64,
    clock: Instant,
    window: (u64, u64),
    stop: &AtomicBool,
) -> Result<Histogram<u64>> {
    let mut client = Client::connect(config).map_err(client_error)?;
    let mut latency = new_histogram();
    let mut offset = from;
    let options = FetchOptions {
        max_wait: Duration::from_millis(100),
        ..FetchOptions::default()
    };
    let mut stopped_at: Option<Instant> = None;
    // Bounded: after `stop`, by DRAIN_MAX.
    loop {
        let fetched = client
            .fetch(topic, partition, offset, options)
            .map_err(client_error)?;
        let now = clock.elapsed().as_nanos() as u64;
        for r in &fetched.records {
            let Some(v) = r.value.as_deref() else {
                continue;
            };
            let Some(stamp) = v.get(..STAMP_BYTES) else {
                continue;
            };
            let mut b = [0u8; STAMP_BYTES];
            b.copy_from_slice(stamp);
            let sent = u64::from_le_bytes(b);
            if sent >= window.0 && sent < window.1 {
                latency.saturating_record(now.saturating_sub(sent).clamp(1, LATENCY_NS_MAX));
            }
        }
        offset = fetched.next_offset(offset);
        if stop.load(Ordering::Acquire) {
            let t = *stopped_at.get_or_insert_with(Instant::now);
            if offset >= fetched.high_watermark || t.elapsed() >= DRAIN_MAX {
                break;
            }
        }
    }
    Ok(latency)
}
