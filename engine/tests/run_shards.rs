//! `run_shards` start-up: a shard that fails to recover stops the others before any task runs,
//! and the directory's lock is released only once every shard has stopped; shards are pinned
//! within the process's CPU affinity mask.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tern_engine::engine::{allowed_cpus, lock_dir, run_shards};
use tern_engine::{shard_for_group, EngineConfig, Entry, Error, WalConfig};

fn config(pin_cpus: bool) -> EngineConfig {
    EngineConfig {
        shards: 2,
        pin_cpus,
        io_memory_bytes: 256 << 10,
        wal: WalConfig {
            segment_bytes: 1 << 20,
            batch_bytes_max: 64 << 10,
            pending_bytes_max: 256 << 10,
            ..WalConfig::default()
        },
    }
}

#[test]
fn a_shard_failing_recovery_stops_the_others_before_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // One entry in a group of each shard.
    run_shards(&root, &config(false), true, |ctx| async move {
        let g = (1..)
            .find(|&g| shard_for_group(g, ctx.shards) == ctx.shard)
            .unwrap();
        ctx.wal
            .append(
                g,
                &[Entry {
                    term: 1,
                    index: 1,
                    kind: tern_engine::EntryKind::Normal,
                    data: b"x",
                }],
            )
            .await
            .unwrap();
    })
    .unwrap();
    // Lose shard 1's only segment (its chain record names it).
    let seg = root.join("shard-1").join(format!("{:020}.wal", 1));
    std::fs::remove_file(&seg).unwrap();

    let tasks = Arc::new(AtomicUsize::new(0));
    let t = tasks.clone();
    let r = run_shards(&root, &config(false), false, move |_ctx| {
        let t = t.clone();
        async move {
            t.fetch_add(1, Ordering::SeqCst);
        }
    });
    match r {
        Err(Error::Corruption { at, what }) => {
            assert_eq!(at.file, seg, "{what}");
        }
        other => panic!("expected shard 1's corruption, got {other:?}"),
    }
    assert_eq!(
        tasks.load(Ordering::SeqCst),
        0,
        "a task ran although shard 1 failed"
    );
    // Every shard has stopped: the lock is free.
    drop(lock_dir(&root).expect("lock released after every shard stopped"));
}

#[test]
fn shards_are_pinned_within_the_affinity_mask() {
    let cpus = allowed_cpus().unwrap();
    assert!(!cpus.is_empty());
    assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    let dir = tempfile::tempdir().unwrap();
    let r = run_shards(
        &dir.path().join("data"),
        &config(true),
        true,
        |ctx| async move { ctx.shard },
    )
    .unwrap();
    assert_eq!(r, vec![0, 1]);
}
