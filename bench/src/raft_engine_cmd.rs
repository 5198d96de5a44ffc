//! `tern-bench raft-engine` (cargo feature `raft-engine`): the raft-engine baseline of issue
//! 13, on the same workload shapes as `tern-bench wal`.
//!
//! raft-engine's `Engine::write` is blocking and does its own group commit across the threads
//! that call it, so "N writers x K in flight" becomes N x K threads, each appending R-byte
//! entries with `sync = true` to a region of its own (a region's indexes must be consecutive,
//! so K threads cannot share one). Threads are driven by `thread_load`, so the latency
//! accounting (closed loop from the call, open loop from the intended time) is the same as
//! that of the other blocking clients; `tern-bench wal` accounts the same way on its shards.
//! Compression is off (tern does not compress) and the payload is random bytes.

use std::time::Duration;

use clap::Args;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};
use raft_proto::eraftpb::Entry;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use crate::data_dir::BenchDir;
use crate::error::{BenchError, Result};
use crate::report::{latency_table, round1, thousands, LatencyUs};
use crate::samples::SamplesArgs;
use crate::thread_load::{self, Op, Schedule};
use crate::OutputArgs;

#[derive(Args, Debug, Clone)]
pub struct RaftEngineArgs {
    /// Payload bytes of each entry (one entry per write).
    #[arg(long, default_value_t = 4096)]
    pub record_bytes: usize,
    /// Writers (as `wal --appenders`).
    #[arg(long, default_value_t = 16)]
    pub appenders: u64,
    /// Writes each writer keeps in flight: run as appenders x inflight threads.
    #[arg(long, default_value_t = 4)]
    pub inflight: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Open loop: total writes per second over all threads.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub samples: SamplesArgs,
}

#[derive(Clone)]
struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.get_index()
    }
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    mode: &'static str,
    record_bytes: usize,
    appenders: u64,
    inflight: u64,
    threads: u64,
    rate: Option<f64>,
    seconds: f64,
    appends: u64,
    appends_per_s: f64,
    write_mbps: f64,
    #[serde(flatten)]
    latency: LatencyUs,
    dir: String,
}

fn engine_error(e: raft_engine::Error) -> BenchError {
    BenchError::io("raft-engine", std::io::Error::other(e.to_string()))
}

pub fn run(a: &RaftEngineArgs) -> Result<()> {
    crate::check_load(a.record_bytes, a.appenders, a.inflight)?;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !(positive(a.duration) && a.warmup.is_finite() && a.warmup >= 0.0) {
        return Err(BenchError::Arg {
            arg: "duration",
            why: "duration must be > 0 and warmup >= 0".into(),
        });
    }
    if a.rate.is_some_and(|r| !positive(r)) {
        return Err(BenchError::Arg {
            arg: "rate",
            why: "must be > 0".into(),
        });
    }
    let threads = a.appenders.saturating_mul(a.inflight);
    let dir = BenchDir::prepare(a.output.dir.as_deref(), a.output.keep)?;
    let cfg = Config {
        dir: dir.path().display().to_string(),
        batch_compression_threshold: ReadableSize(0),
        ..Config::default()
    };
    let engine = Engine::open(cfg).map_err(engine_error)?;
    let mut payload = vec![0u8; a.record_bytes];
    rand::rngs::SmallRng::seed_from_u64(1).fill_bytes(&mut payload);
    let schedule = Schedule {
        workers: threads as usize,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        rate: a.rate,
    };
    let totals = thread_load::run(schedule, |w| {
        let mut entry = Entry::new();
        entry.set_term(1);
        entry.set_data(payload.clone().into());
        Ok(WriteOp {
            engine: &engine,
            region: w as u64 + 1,
            entry,
            batch: LogBatch::default(),
            bytes: a.record_bytes as u64,
        })
    })?;
    drop(engine);
    a.samples
        .save("raft-engine", &totals.latency_ns, &totals.bytes_per_second)?;
    let report = Report {
        bench: "raft-engine",
        mode: if a.rate.is_some() { "open" } else { "closed" },
        record_bytes: a.record_bytes,
        appenders: a.appenders,
        inflight: a.inflight,
        threads,
        rate: a.rate,
        seconds: totals.seconds,
        appends: totals.ops,
        appends_per_s: round1(totals.ops as f64 / totals.seconds),
        write_mbps: round1(totals.payload_bytes as f64 / totals.seconds / 1e6),
        latency: LatencyUs::from_ns(&totals.latency_ns),
        dir: dir.path().display().to_string(),
    };
    dir.finish()?;
    if a.output.json {
        crate::say!("{}", serde_json::to_string(&report)?)?;
    } else {
        crate::say!(
            "tern-bench raft-engine ({} loop): {}-byte entries, {} writers x {} in flight = {} threads, sync writes",
            report.mode,
            report.record_bytes,
            report.appenders,
            report.inflight,
            report.threads
        )?;
        crate::say!(
            "  {:<14}{:>10.1} MB/s {:>14} appends/s",
            "throughput",
            report.write_mbps,
            thousands(report.appends_per_s)
        )?;
        crate::say!("{}", latency_table(&report.latency))?;
    }
    Ok(())
}

/// One thread's region: each write is one entry, the next index, synced.
struct WriteOp<'a> {
    engine: &'a Engine,
    region: u64,
    entry: Entry,
    batch: LogBatch,
    bytes: u64,
}

impl Op for WriteOp<'_> {
    fn send(&mut self, seq: u64) -> Result<u64> {
        self.entry.set_index(seq + 1);
        self.batch
            .add_entries::<EntryExt>(self.region, std::slice::from_ref(&self.entry))
            .map_err(engine_error)?;
        self.engine
            .write(&mut self.batch, true)
            .map_err(engine_error)?;
        Ok(self.bytes)
    }
}
