//! `tern-bench wal`: the append benchmark.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tern_engine::engine::run_shards;
use tern_engine::EngineConfig;

use crate::data_dir::{BenchDir, FsInfo};
use crate::error::{BenchError, Result};
use crate::load::{self, LoadSpec, ShardOutcome, Stop};
use crate::report::{latency_table, thousands, LatencyUs, Throughput, Totals};
use crate::say;
use crate::{check_load, WalArgs};

/// The `--json` object of a `wal` run (one line).
#[derive(Serialize)]
struct WalJson<'a> {
    bench: &'static str,
    mode: &'static str,
    record_bytes: usize,
    appenders: u64,
    inflight: u64,
    shards: usize,
    rate: Option<f64>,
    warmup_s: f64,
    #[serde(flatten)]
    throughput: &'a Throughput,
    #[serde(flatten)]
    latency: &'a LatencyUs,
    batch_bytes_max: u64,
    batch_delay_us: u64,
    segment_bytes: u64,
    dir: String,
    #[serde(flatten)]
    fs: &'a FsInfo,
    kept: bool,
}

pub fn run(args: &WalArgs) -> Result<()> {
    check_load(args.record_bytes, args.appenders, args.inflight)?;
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err(BenchError::Arg {
            arg: "duration",
            why: format!("{} must be a positive number of seconds", args.duration),
        });
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err(BenchError::Arg {
            arg: "warmup",
            why: format!("{} must be zero or more seconds", args.warmup),
        });
    }
    if let Some(r) = args.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(BenchError::Arg {
                arg: "rate",
                why: format!("{r} must be a positive number of appends per second"),
            });
        }
    }
    let cfg = args.engine.config()?;
    let dir = BenchDir::prepare(args.output.dir.as_deref(), args.output.keep)?;
    let (warmup, stop) = match args.appends {
        Some(0) => {
            return Err(BenchError::Arg {
                arg: "appends",
                why: "must be at least 1".into(),
            })
        }
        // Bytes mode stops each shard once it has enqueued its share.
        Some(n) => (
            Duration::ZERO,
            Stop::Bytes(n.saturating_mul(args.record_bytes as u64)),
        ),
        None => (
            Duration::from_secs_f64(args.warmup),
            Stop::After(Duration::from_secs_f64(args.duration)),
        ),
    };
    let spec = LoadSpec {
        record_bytes: args.record_bytes,
        appenders: args.appenders,
        inflight: args.inflight,
        warmup,
        stop,
        rate: args.rate,
    };
    if !args.output.json {
        print_header(args, &cfg, &dir)?;
    }
    let outcomes = run_load(&dir, &cfg, spec)?;
    let totals = Totals::merge(&outcomes);
    let throughput = Throughput::from_totals(&totals);
    let latency = LatencyUs::from_ns(&totals.latency_ns);
    args.samples
        .save("tern", &totals.latency_ns, &totals.bytes_per_second)?;
    let dir_path = dir.path().display().to_string();
    let fs = dir.fs.clone();
    let kept = dir.finish()?;

    if args.output.json {
        let out = WalJson {
            bench: "wal",
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            record_bytes: args.record_bytes,
            appenders: args.appenders,
            inflight: args.inflight,
            shards: outcomes.len(),
            rate: args.rate,
            warmup_s: warmup.as_secs_f64(),
            throughput: &throughput,
            latency: &latency,
            batch_bytes_max: cfg.wal.batch_bytes_max,
            batch_delay_us: cfg.wal.batch_delay_max.as_micros() as u64,
            segment_bytes: cfg.wal.segment_bytes,
            dir: dir_path,
            fs: &fs,
            kept: kept.is_some(),
        };
        say!("{}", serde_json::to_string(&out)?)?;
        return Ok(());
    }
    print_results(&throughput, &latency, outcomes.len())?;
    if let Some(path) = kept {
        say!()?;
        say!("  kept data directory {}", path.display())?;
        say!(
            "  time its recovery: tern-bench recovery --gib 0 --dir {}",
            path.display()
        )?;
    }
    Ok(())
}

/// Runs the load on every shard and fails if any shard stopped on an error.
pub fn run_load(dir: &BenchDir, cfg: &EngineConfig, spec: LoadSpec) -> Result<Vec<ShardOutcome>> {
    let ready = Arc::new(AtomicU32::new(0));
    let outcomes = run_shards(dir.path(), cfg, true, move |ctx| {
        load::run_shard(ctx, spec.clone(), ready.clone())
    })?;
    if let Some(o) = outcomes.iter().find(|o| o.error.is_some()) {
        return Err(BenchError::Load {
            shard: o.shard,
            why: o.error.clone().unwrap_or_default(),
        });
    }
    Ok(outcomes)
}

fn print_header(args: &WalArgs, cfg: &EngineConfig, dir: &BenchDir) -> Result<()> {
    let mode = match args.rate {
        Some(r) => format!("open loop at {} appends/s", thousands(r)),
        None => "closed loop".to_string(),
    };
    say!(
        "tern-bench wal: {}-byte records, {} appenders x {} in flight, {mode}, {} shard(s)",
        args.record_bytes,
        args.appenders,
        args.inflight,
        cfg.shards
    )?;
    say!(
        "  data dir      {} ({} on {}; {})",
        dir.path().display(),
        or_unknown(&dir.fs.fs_type),
        or_unknown(&dir.fs.source),
        if dir.will_remove() {
            "removed at exit"
        } else {
            "kept"
        }
    )?;
    say!(
        "  engine        batch_bytes_max {} KiB, batch_delay_max {} µs, segment {} MiB",
        cfg.wal.batch_bytes_max >> 10,
        cfg.wal.batch_delay_max.as_micros(),
        cfg.wal.segment_bytes >> 20
    )?;
    match args.appends {
        Some(n) => say!("  measuring     {} appends ...", thousands(n as f64))?,
        None => say!(
            "  measuring     {:.1} s after {:.1} s of warm-up ...",
            args.duration,
            args.warmup
        )?,
    }
    Ok(())
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

fn print_results(t: &Throughput, l: &LatencyUs, shards: usize) -> Result<()> {
    say!()?;
    say!(
        "  {:<14}{:>10.1} MB/s {:>14} appends/s   ({} appends in {:.2} s)",
        "throughput",
        t.write_mbps,
        thousands(t.appends_per_s),
        thousands(t.appends as f64),
        t.seconds
    )?;
    say!("{}", latency_table(l))?;
    say!(
        "  {:<14}{} batches over {shards} shard(s), avg {:.1} KiB / {:.1} records; {} fsyncs ({:.1}/s); device writes {:.1} MB/s",
        "engine",
        thousands(t.batches as f64),
        t.avg_batch_kib,
        t.records_per_batch,
        thousands(t.fsyncs as f64),
        t.fsyncs_per_s,
        t.device_write_mbps
    )?;
    say!(
        "  {:<14}write {:.1} µs, fdatasync {:.1} µs (mean per batch, issue to completion)",
        "",
        t.avg_write_us,
        t.avg_fsync_us
    )?;
    Ok(())
}
