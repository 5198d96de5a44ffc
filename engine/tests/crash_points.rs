//! Crash consistency at every durability boundary of a scripted workload.
//!
//! The workload (three groups, several appends in flight, segment rolls across 1 MiB
//! segments, an overwrite, a truncation, a compaction that lets segments be purged, hard
//! states) runs once to count its mutating storage ops. Then, for every op boundary `n`, it
//! runs again on a fresh simulated disk with the power cut after `n` ops, the disk crashes
//! (losing every unsynced write, or tearing them at sector granularity, with two seeds), and
//! the WAL is recovered in the default mode. Recovery must succeed (a torn tail is fine), and
//! the recovered state must be the acknowledged state plus some prefix of the
//! unacknowledged ops: every acknowledged append intact, nothing reported that was not
//! written. The recovered WAL must then accept more appends and survive another restart.
//!
//! Environment: `TERN_CRASH_SEEDS=<n>` torn-write seeds per crash point (default 2);
//! `TERN_CRASH_POINT=<n>` runs only boundary `n` (to reproduce a failure).

mod common;

use common::*;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::storage::Storage;
use tern_engine::{HardState, ShardWal, WalConfig, WalSync};

const GROUPS: [u64; 3] = [11, 12, 13];
const STEPS: u64 = 48;

fn config() -> WalConfig {
    config_with(WalSync::Fdatasync)
}

fn config_with(sync: WalSync) -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 16 << 10,
        pending_bytes_max: 256 << 10,
        sync,
        ..WalConfig::default()
    }
}

/// Steps that append many entries per call, so that a short workload rolls segments.
fn big(step: u64) -> bool {
    !step.is_multiple_of(3)
}

/// The scripted workload. Stops at the first error (the power cut).
async fn workload(wal: &ShardWal<SimStorage>, t: &mut Tracker) -> tern_engine::Result<()> {
    let mut next = [1u64; 3];
    let mut term = [1u64; 3];
    for step in 0..STEPS {
        // Up to four appends in flight, across groups, so group commit batches form.
        let inflight = 1 + step % 4;
        for j in 0..inflight {
            let gi = ((step + j) % 3) as usize;
            let g = GROUPS[gi];
            let count = if big(step) { 10 } else { 1 + j % 2 };
            t.enqueue_append(wal, g, next[gi], count, term[gi]).await?;
            next[gi] += count;
        }
        t.settle().await?;
        match step {
            7 => {
                let hs = HardState {
                    term: 1,
                    vote: 2,
                    commit: next[0] - 1,
                };
                t.control(
                    wal,
                    ModelOp::HardState {
                        group: GROUPS[0],
                        hs,
                    },
                )
                .await?;
            }
            15 => {
                // Raft conflict: group 12 replaces its last three entries with a new term.
                term[1] += 1;
                let at = next[1] - 3;
                t.enqueue_append(wal, GROUPS[1], at, 2, term[1]).await?;
                next[1] = at + 2;
                t.settle().await?;
            }
            22 => {
                let at = next[2] - 2;
                t.control(
                    wal,
                    ModelOp::Truncate {
                        group: GROUPS[2],
                        index: at,
                    },
                )
                .await?;
                next[2] = at;
            }
            30 => {
                // Compact every group far enough that the first segments hold no live entry
                // and are purged.
                for (gi, g) in GROUPS.iter().enumerate() {
                    let at = next[gi] - 3;
                    t.control(
                        wal,
                        ModelOp::Compact {
                            group: *g,
                            index: at,
                        },
                    )
                    .await?;
                }
            }
            40 => {
                let hs = HardState {
                    term: 3,
                    vote: 0,
                    commit: next[2] - 1,
                };
                t.control(
                    wal,
                    ModelOp::HardState {
                        group: GROUPS[2],
                        hs,
                    },
                )
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs the workload with the power cut after `point` ops (or without a cut, returning the
/// number of mutating ops), crashes, recovers and checks.
async fn run_point(
    point: Option<u64>,
    seed: u64,
    mode: CrashMode,
    sync: WalSync,
) -> Result<u64, String> {
    let sim = SimStorage::new();
    let cfg = config_with(sync);
    let mut t = Tracker::default();
    if let Some(n) = point {
        sim.set_power_cut_after(Some(n));
    }
    let wal = match open(&sim, &cfg).await {
        Ok(wal) => wal,
        Err(e) if point.is_some() && sim.power_lost() => {
            // Power cut before or during the first open: nothing was acknowledged.
            sim.crash(seed, mode);
            let wal = open(&sim, &cfg)
                .await
                .map_err(|e| format!("recovery after a cut in the first open: {e}"))?;
            let observed = observe(&wal).await?;
            if !observed.is_empty() {
                return Err(format!(
                    "unwritten state after a cut in open ({e}): {observed:?}"
                ));
            }
            wal.close().await.map_err(|e| e.to_string())?;
            return Ok(0);
        }
        Err(e) => return Err(format!("first open: {e}")),
    };
    let result = workload(&wal, &mut t).await;
    if point.is_none() {
        result.map_err(|e| format!("workload without a power cut failed: {e}"))?;
        t.settle().await.map_err(|e| e.to_string())?;
        wal.close().await.map_err(|e| e.to_string())?;
        let ops = sim.mutating_ops();
        let segs = used_segment_files(&sim).len();
        assert!(
            segs >= 2,
            "the workload should leave several segments ({segs})"
        );
        return Ok(ops);
    }
    if result.is_ok() {
        return Err("the workload finished despite the power cut".into());
    }
    let what = crash(&sim, wal, seed, mode).await;
    let (acked, unacked) = t.split();
    let mut model = Model::default();
    for op in &acked {
        model.apply(op);
    }
    let ctx = |stage: &str, e: String| {
        format!(
            "crash point {point:?} ({what}), {stage}: {e}\n  files: {:?}",
            sim.list_files()
        )
    };
    let wal = open(&sim, &cfg)
        .await
        .map_err(|e| ctx("recovery", e.to_string()))?;
    let observed = observe(&wal).await.map_err(|e| ctx("read-back", e))?;
    let (_, mut model) = match_prefix(&observed, &model, &unacked).map_err(|e| ctx("state", e))?;

    // The recovered WAL keeps working: append to every group, restart cleanly, check again.
    let mut t = Tracker::default();
    for g in GROUPS {
        let gm = model.group(g);
        let next = if gm.terms.is_empty() {
            gm.first
        } else {
            gm.last() + 1
        };
        let term = gm.terms.back().copied().unwrap_or(1);
        t.enqueue_append(&wal, g, next, 3, term)
            .await
            .map_err(|e| ctx("append after recovery", e.to_string()))?;
    }
    t.settle()
        .await
        .map_err(|e| ctx("append after recovery", e.to_string()))?;
    wal.close()
        .await
        .map_err(|e| ctx("close after recovery", e.to_string()))?;
    let (acked, _) = t.split();
    for op in &acked {
        model.apply(op);
    }
    sim.crash(seed ^ 0xdead, CrashMode::LoseAllUnsynced);
    let wal = open(&sim, &cfg)
        .await
        .map_err(|e| ctx("second recovery", e.to_string()))?;
    let observed = observe(&wal)
        .await
        .map_err(|e| ctx("second read-back", e))?;
    match_prefix(&observed, &model, &[]).map_err(|e| ctx("second state", e))?;
    wal.close()
        .await
        .map_err(|e| ctx("final close", e.to_string()))?;
    // Nothing left behind that recovery would have to clean up again.
    let leftovers: Vec<_> = sim
        .list_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    if !leftovers.is_empty() {
        return Err(ctx("files", format!("temp files left: {leftovers:?}")));
    }
    Ok(0)
}

fn every_boundary(sync: WalSync) {
    let seeds = std::env::var("TERN_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2u64);
    let only: Option<u64> = std::env::var("TERN_CRASH_POINT")
        .ok()
        .and_then(|v| v.parse().ok());
    let total = run(run_point(None, 0, CrashMode::LoseAllUnsynced, sync)).unwrap();
    assert!(total > 100, "workload has only {total} mutating ops");
    let mut failures = Vec::new();
    let mut runs = 0;
    for n in 0..total {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let mut modes = vec![(n, CrashMode::LoseAllUnsynced)];
        for s in 0..seeds {
            modes.push((n * 1000 + s, CrashMode::TornWrites));
        }
        for (seed, mode) in modes {
            runs += 1;
            if let Err(e) = run(run_point(Some(n), seed, mode, sync)) {
                failures.push(format!(
                    "{e}\n  reproduce: TERN_CRASH_POINT={n} cargo test -p tern-engine --test crash_points ({})", sync.name()
                ));
            }
        }
    }
    eprintln!(
        "crash points ({}): {total} boundaries, {runs} crash/recover runs",
        sync.name()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} crash runs failed; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn power_loss_at_every_write_and_fsync_boundary() {
    every_boundary(WalSync::Fdatasync);
}

/// The same with every batch written through `O_DSYNC` (one durable write, no fdatasync):
/// a batch is acknowledged only once its own write completed durable, and a cut between a
/// batch's write being issued and its completion loses or tears it, unacknowledged.
#[test]
fn power_loss_at_every_boundary_with_dsync_batch_writes() {
    every_boundary(WalSync::Dsync);
}

/// Guards the sim plumbing the test relies on: a power cut makes every later op fail.
#[test]
fn power_cut_stops_the_workload() {
    run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        sim.set_power_cut_after(Some(3));
        let mut t = Tracker::default();
        assert!(workload(&wal, &mut t).await.is_err());
        assert!(sim.power_lost());
        power_off(&sim, wal).await;
        assert!(sim.exists(std::path::Path::new("/data")).await.is_err());
    });
}
