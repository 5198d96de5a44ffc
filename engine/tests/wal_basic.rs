//! Basic WAL behaviour on the simulated disk: append, read, reopen, roll, purge.

mod common;

use common::*;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::{Entry, HardState};

#[test]
fn append_read_reopen_round_trip() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        for i in 1..=100u64 {
            let data = payload(7, i, 1, (i * 37 % 3000) as usize);
            wal.append(
                7,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 1,
                    index: i,
                    data: &data,
                }],
            )
            .await
            .unwrap();
        }
        wal.set_hard_state(
            7,
            HardState {
                term: 1,
                vote: 2,
                commit: 90,
            },
        )
        .await
        .unwrap();
        let got = wal.read(7, 1, 101, u64::MAX).await.unwrap();
        assert_eq!(got.len(), 100);
        for e in &got {
            assert_eq!(
                e.data,
                payload(7, e.index, 1, (e.index * 37 % 3000) as usize)
            );
        }
        wal.close().await.unwrap();
        sim.crash(1, CrashMode::LoseAllUnsynced);

        let wal = open(&sim, &cfg).await.unwrap();
        let info = wal.group(7).unwrap();
        assert_eq!((info.first_index, info.last_index), (1, 100));
        assert_eq!(
            info.hard_state,
            Some(HardState {
                term: 1,
                vote: 2,
                commit: 90
            })
        );
        let got = wal.read(7, 1, 101, u64::MAX).await.unwrap();
        assert_eq!(got.len(), 100);
        assert!(wal.recovery_report().removed.is_empty());
        wal.close().await.unwrap();
    });
}

#[test]
fn segments_roll_get_indexed_and_purge_after_compaction() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        let data = vec![0x5a; 4000];
        for i in 1..=1000u64 {
            wal.append(
                1,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 2,
                    index: i,
                    data: &data,
                }],
            )
            .await
            .unwrap();
        }
        let segs = used_segment_files(&sim).len();
        assert!(segs >= 4, "expected several segments, got {segs}");
        wal.compact(1, 600).await.unwrap();
        // One more write so a sync completes after the compaction and purge runs.
        wal.append(
            1,
            &[Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 2,
                index: 1001,
                data: &data,
            }],
        )
        .await
        .unwrap();
        wal.close().await.unwrap();
        let after = used_segment_files(&sim).len();
        assert!(after < segs, "purge removed nothing ({segs} -> {after})");
        sim.crash(2, CrashMode::LoseAllUnsynced);

        let wal = open(&sim, &cfg).await.unwrap();
        let info = wal.group(1).unwrap();
        assert_eq!((info.first_index, info.last_index), (600, 1001));
        let rep = wal.recovery_report();
        assert!(
            rep.segments.iter().any(|s| s.via_index),
            "sealed segments should load from their index: {rep:?} files {:?}",
            sim.list_files()
        );
        assert_eq!(wal.read(1, 600, 1002, u64::MAX).await.unwrap().len(), 402);
        wal.close().await.unwrap();
    });
}

#[test]
fn truncate_and_overwrite_suffix() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        for i in 1..=10u64 {
            wal.append(
                3,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 1,
                    index: i,
                    data: b"a",
                }],
            )
            .await
            .unwrap();
        }
        wal.append(
            3,
            &[Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 2,
                index: 6,
                data: b"b",
            }],
        )
        .await
        .unwrap();
        wal.truncate(3, 5).await.unwrap();
        wal.append(
            3,
            &[Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 3,
                index: 5,
                data: b"c",
            }],
        )
        .await
        .unwrap();
        assert!(wal
            .append(
                3,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 3,
                    index: 9,
                    data: b"gap"
                }]
            )
            .await
            .is_err());
        wal.close().await.unwrap();
        sim.crash(3, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &cfg).await.unwrap();
        let got = wal.read(3, 1, 6, u64::MAX).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![1, 1, 1, 1, 3]
        );
        wal.close().await.unwrap();
    });
}

/// A snapshot is a compaction to index + 1 (later entries kept), decided without looking at
/// the log: an overwrite still in flight when the snapshot is queued cannot make the accepted
/// bounds and the durable state disagree.
#[test]
fn install_snapshot_compacts_to_its_index_even_with_writes_in_flight() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config();
        let wal = open(&sim, &cfg).await.unwrap();
        for i in 1..=10u64 {
            wal.append(
                4,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 1,
                    index: i,
                    data: b"a",
                }],
            )
            .await
            .unwrap();
        }
        // Queued, not awaited: the snapshot below is accepted while this is in flight.
        let overwrite = wal
            .enqueue_append(
                4,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 2,
                    index: 7,
                    data: b"b",
                }],
            )
            .await
            .unwrap();
        wal.install_snapshot(4, 1, 5, b"meta").await.unwrap();
        overwrite.await.unwrap();
        let info = wal.group(4).unwrap();
        assert_eq!((info.first_index, info.last_index), (6, 7));
        assert_eq!(info.snapshot, Some((1, 5)));
        wal.append(
            4,
            &[Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 2,
                index: 8,
                data: b"c",
            }],
        )
        .await
        .unwrap();
        assert!(wal
            .append(
                4,
                &[Entry {
                    kind: tern_engine::EntryKind::Normal,
                    term: 2,
                    index: 4,
                    data: b"old"
                }]
            )
            .await
            .is_err());
        wal.close().await.unwrap();
        sim.crash(4, CrashMode::LoseAllUnsynced);

        let wal = open(&sim, &cfg).await.unwrap();
        let info = wal.group(4).unwrap();
        assert_eq!((info.first_index, info.last_index), (6, 8));
        assert_eq!(info.snapshot, Some((1, 5)));
        let got = wal.read(4, 6, 9, u64::MAX).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![1, 2, 2]
        );
        wal.close().await.unwrap();
    });
}
