//! Fail-stop on I/O errors, and the data-directory lock.
//!
//! - An fdatasync EIO fails the append it covered with `Error::FsyncFailed`, stops the shard
//!   (every later request gets `Error::ShardStopped`), and is never retried: the simulated
//!   disk forgets the pending writes on a failed sync (as Linux does), so an engine that
//!   retried and acknowledged would lose an acknowledged append, which the restart checks.
//! - A write EIO stops the shard the same way.
//! - With `WalSync::Dsync` a durable write that fails is a failed fsync: the same fail-stop.
//! - The lock file refuses a second opener (in one process here; across processes in
//!   `sigkill.rs`).

mod common;

use common::*;
use tern_engine::engine::{lock_dir, run_shards};
use tern_engine::storage::sim::{CrashMode, FaultOp, SimStorage};
use tern_engine::{EngineConfig, Entry, Error, HardState, WalConfig, WalSync};

fn entry(index: u64, data: &[u8]) -> [Entry<'_>; 1] {
    [Entry {
        kind: tern_engine::EntryKind::Normal,
        term: 1,
        index,
        data,
    }]
}

#[test]
fn fsync_eio_fails_stop_and_is_never_retried() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 10).await;
        let fsyncs = wal.stats().fsyncs;

        sim.fail_next(FaultOp::Sync, 1);
        let d = entry_data(1, 11, 1);
        let r = wal.append(1, &entry(11, &d)).await;
        assert!(matches!(r, Err(Error::FsyncFailed { .. })), "{r:?}");
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("fail-stop") && msg.contains("never retried"),
            "{msg}"
        );

        // Everything after is refused, whatever its kind.
        let d = entry_data(1, 12, 1);
        for r in [
            wal.append(1, &entry(12, &d)).await,
            wal.append(2, &entry(1, &d)).await,
            wal.truncate(1, 5).await,
            wal.compact(1, 3).await,
            wal.set_hard_state(
                1,
                HardState {
                    term: 1,
                    vote: 1,
                    commit: 1,
                },
            )
            .await,
        ] {
            assert!(matches!(r, Err(Error::ShardStopped { .. })), "{r:?}");
        }
        assert!(matches!(
            wal.enqueue_append(1, &entry(12, &d)).await,
            Err(Error::ShardStopped { .. })
        ));
        // No fdatasync succeeded after the failed one (none was retried).
        assert_eq!(wal.stats().fsyncs, fsyncs);
        assert!(matches!(wal.close().await, Err(Error::ShardStopped { .. })));

        // After a restart: every acknowledged append is there, the failed one is not.
        sim.crash(1, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &cfg).await.unwrap();
        let got = observe(&wal).await.unwrap();
        match_prefix(&got, &m, &[]).unwrap();
        // The shard works again after the restart.
        fill(&wal, &mut m, 1, 11, 12).await;
        wal.close().await.unwrap();
    });
}

#[test]
fn fsync_eio_with_appends_in_flight_acknowledges_none_of_them() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 5).await;
        sim.fail_next(FaultOp::Sync, 1);
        let mut t = Tracker::default();
        let mut queued = 0;
        for i in 0..8u64 {
            // Three appends in the first batch; then yielding lets the writer cut more
            // batches until it sees the failed fsync, after which queueing is refused.
            let (g, idx) = if i % 2 == 0 {
                (1, 6 + i / 2)
            } else {
                (2, 1 + i / 2)
            };
            match t.enqueue_append(&wal, g, idx, 1, 1).await {
                Ok(()) => queued += 1,
                Err(e) => {
                    assert!(matches!(e, Error::ShardStopped { .. }), "{e:?}");
                    break;
                }
            }
            if i >= 2 {
                futures_lite::future::yield_now().await;
            }
        }
        assert!(queued >= 3, "only {queued} appends in flight");
        assert!(t.settle().await.is_err());
        let (acked, unacked) = t.split();
        assert!(
            acked.is_empty(),
            "acknowledged despite the failed fsync: {acked:?}"
        );
        assert_eq!(unacked.len(), queued);
        let _ = wal.close().await;
        sim.crash(2, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &cfg).await.unwrap();
        let got = observe(&wal).await.unwrap();
        match_prefix(&got, &m, &[]).unwrap();
        wal.close().await.unwrap();
    });
}

#[test]
fn durable_write_eio_in_dsync_mode_fails_stop_and_loses_nothing_acknowledged() {
    run(async {
        let sim = SimStorage::new();
        let cfg = WalConfig {
            sync: WalSync::Dsync,
            ..small_config()
        };
        let wal = open(&sim, &cfg).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 10).await;
        sim.fail_next(FaultOp::Sync, 1);
        let d = entry_data(1, 11, 1);
        let r = wal.append(1, &entry(11, &d)).await;
        assert!(matches!(r, Err(Error::FsyncFailed { .. })), "{r:?}");
        let d = entry_data(1, 12, 1);
        let r = wal.append(1, &entry(12, &d)).await;
        assert!(matches!(r, Err(Error::ShardStopped { .. })), "{r:?}");
        sim.crash(1, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &cfg).await.unwrap();
        let got = observe(&wal).await.unwrap();
        match_prefix(&got, &m, &[]).unwrap();
        fill(&wal, &mut m, 1, 11, 12).await;
        wal.close().await.unwrap();
    });
}

#[test]
fn write_eio_fails_stop() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 10).await;
        sim.fail_next(FaultOp::Write, 1);
        let d = entry_data(1, 11, 1);
        let r = wal.append(1, &entry(11, &d)).await;
        assert!(r.is_err(), "append whose write failed was acknowledged");
        let d = entry_data(1, 12, 1);
        let r = wal.append(1, &entry(12, &d)).await;
        assert!(matches!(r, Err(Error::ShardStopped { .. })), "{r:?}");
        assert!(wal.close().await.is_err());
        sim.crash(3, CrashMode::KeepAllUnsynced);
        let wal = open(&sim, &cfg).await.unwrap();
        let got = observe(&wal).await.unwrap();
        match_prefix(&got, &m, &[]).unwrap();
        wal.close().await.unwrap();
    });
}

#[test]
fn lock_file_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let first = lock_dir(dir.path()).unwrap();
    match lock_dir(dir.path()) {
        Err(Error::Locked { path, lock }) => {
            assert_eq!(path, dir.path());
            assert_eq!(lock, first.path);
        }
        other => panic!("second lock: {other:?}"),
    }
    // The whole engine refuses too, before touching any shard.
    let cfg = EngineConfig {
        shards: 1,
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig::default(),
    };
    let r = run_shards(dir.path(), &cfg, true, |_ctx| async {});
    assert!(matches!(r, Err(Error::Locked { .. })), "{r:?}");
    assert!(!dir.path().join("shard-0").exists());
    drop(first);
    let again = lock_dir(dir.path()).expect("lock is free once its holder is gone");
    drop(again);
}
