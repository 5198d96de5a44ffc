//! `tern-bench recovery`: write N GiB, then reopen the data directory and time recovery,
//! first with the sealed-segment indexes, then by scanning every segment.
//!
//! Times reported per run:
//! - `wall_ms`: from the start of `run_shards` (lock, executors, recovery of every shard in
//!   parallel) to all shards having closed again: what an operator waits for at start-up;
//! - `engine_ms`: the slowest shard's own `RecoveryReport::elapsed`.
//!
//! Throughput (`gbps`, 10^9 bytes/s) divides the bytes recovered (segment data covered by
//! indexes or scanned, summed over shards) by `wall_ms`.
//!
//! The scan run goes second because recovery without indexes rewrites the index of every
//! sealed segment it scans (an engine behaviour); its time includes those writes.

use std::time::{Duration, Instant};

use serde::Serialize;
use tern_engine::engine::run_shards;
use tern_engine::recovery::RecoveryReport;
use tern_engine::EngineConfig;

use crate::data_dir::{drop_caches, BenchDir, FsInfo};
use crate::error::{BenchError, Result};
use crate::load::{LoadSpec, Stop};
use crate::report::{round1, round3, Throughput, Totals};
use crate::say;
use crate::wal_cmd::run_load;
use crate::{check_load, RecoveryArgs};

const GIB: f64 = (1u64 << 30) as f64;

/// One timed reopen.
#[derive(Debug, Clone, Serialize)]
struct RecoveryRun {
    bytes: u64,
    gib: f64,
    records: u64,
    segments: usize,
    segments_via_index: usize,
    rebuilt_indexes: usize,
    wall_ms: f64,
    engine_ms: f64,
    gbps: f64,
    caches_dropped: bool,
}

#[derive(Serialize)]
struct RecoveryJson<'a> {
    bench: &'static str,
    shards: u32,
    record_bytes: usize,
    segment_bytes: u64,
    written: Option<&'a Throughput>,
    indexed: &'a RecoveryRun,
    scan: Option<&'a RecoveryRun>,
    dir: String,
    #[serde(flatten)]
    fs: &'a FsInfo,
    kept: bool,
}

pub fn run(args: &RecoveryArgs) -> Result<()> {
    check_load(args.record_bytes, args.appenders, args.inflight)?;
    let gib = args.gib.unwrap_or(2.0);
    if !(gib >= 0.0 && gib.is_finite()) {
        return Err(BenchError::Arg {
            arg: "gib",
            why: format!("{gib} must be zero or more"),
        });
    }
    let mut cfg = args.engine.config()?;
    let dir = BenchDir::prepare(args.output.dir.as_deref(), args.output.keep)?;
    let quiet = args.output.json;

    let written = if gib > 0.0 {
        if !quiet {
            say!(
                "tern-bench recovery: writing {:.2} GiB of {}-byte records ({} appenders x {} in flight, {} shard(s)) to {} ({}) ...",
                gib,
                args.record_bytes,
                args.appenders,
                args.inflight,
                cfg.shards,
                dir.path().display(),
                dir.fs.fs_type
            )?;
        }
        // Indexes are written; only the scan run below ignores them.
        cfg.wal.write_sealed_index = true;
        let spec = LoadSpec {
            record_bytes: args.record_bytes,
            appenders: args.appenders,
            inflight: args.inflight,
            warmup: Duration::ZERO,
            stop: Stop::Bytes((gib * GIB) as u64),
            rate: None,
        };
        let outcomes = run_load(&dir, &cfg, spec)?;
        let t = Throughput::from_totals(&Totals::merge(&outcomes));
        if !quiet {
            say!(
                "  written       {:.2} GiB in {:.1} s ({:.1} MB/s, {} segments)",
                t.payload_bytes as f64 / GIB,
                t.seconds,
                t.write_mbps,
                t.segments_created
            )?;
        }
        Some(t)
    } else {
        if !dir.path().join(tern_engine::engine::META_FILE).is_file() {
            return Err(BenchError::Arg {
                arg: "gib",
                why: "0 needs --dir naming an existing tern data directory".into(),
            });
        }
        None
    };

    cfg.wal.use_sealed_index = true;
    let indexed = timed_reopen(&dir, &cfg)?;
    if !quiet {
        print_run("with indexes", &indexed)?;
    }
    let scan = if args.no_scan {
        None
    } else {
        cfg.wal.use_sealed_index = false;
        let r = timed_reopen(&dir, &cfg)?;
        if !quiet {
            print_run("by scanning", &r)?;
        }
        Some(r)
    };

    let dir_path = dir.path().display().to_string();
    let fs = dir.fs.clone();
    let kept = dir.finish()?;
    if quiet {
        let out = RecoveryJson {
            bench: "recovery",
            shards: cfg.shards,
            record_bytes: args.record_bytes,
            segment_bytes: cfg.wal.segment_bytes,
            written: written.as_ref(),
            indexed: &indexed,
            scan: scan.as_ref(),
            dir: dir_path,
            fs: &fs,
            kept: kept.is_some(),
        };
        say!("{}", serde_json::to_string(&out)?)?;
    } else if let Some(p) = kept {
        say!("  kept data directory {}", p.display())?;
    }
    Ok(())
}

/// Drops caches (if allowed), reopens every shard, and returns what recovery reported.
fn timed_reopen(dir: &BenchDir, cfg: &EngineConfig) -> Result<RecoveryRun> {
    let caches_dropped = drop_caches();
    let started = Instant::now();
    let reports: Vec<RecoveryReport> = run_shards(dir.path(), cfg, false, |ctx| async move {
        ctx.recovery().clone()
    })?;
    let wall = started.elapsed();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let engine = reports.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let wall_s = wall.as_secs_f64().max(1e-9);
    Ok(RecoveryRun {
        bytes,
        gib: round3(bytes as f64 / GIB),
        records: reports.iter().map(|r| r.records).sum(),
        segments: reports.iter().map(|r| r.segments.len()).sum(),
        segments_via_index: reports
            .iter()
            .map(|r| r.segments.iter().filter(|s| s.via_index).count())
            .sum(),
        rebuilt_indexes: reports.iter().map(|r| r.rebuilt_indexes.len()).sum(),
        wall_ms: round1(wall_s * 1e3),
        engine_ms: round1(engine.as_secs_f64() * 1e3),
        gbps: round3(bytes as f64 / wall_s / 1e9),
        caches_dropped,
    })
}

fn print_run(label: &str, r: &RecoveryRun) -> Result<()> {
    say!(
        "  recovery {label:<13} {:.3} GiB, {} records, {} segments ({} via index, {} indexes rebuilt): {:.1} ms wall ({:.1} ms in recovery), {:.2} GB/s{}",
        r.gib,
        r.records,
        r.segments,
        r.segments_via_index,
        r.rebuilt_indexes,
        r.wall_ms,
        r.engine_ms,
        r.gbps,
        if r.caches_dropped {
            ""
        } else {
            " (page cache not dropped: not root)"
        }
    )?;
    Ok(())
}
