//! The node's seams: one atomic `WriteBatch` per Raft `Ready`, the synchronous query side,
//! bounded reads, the fail-stop signal, and limits enforced as typed errors.
//!
//! - `write_batch_is_atomic_across_a_crash_at_every_boundary`: a workload of multi-group,
//!   multi-block write batches runs with the power cut after every mutating storage op in
//!   turn; after the crash (unsynced writes lost, or torn at sector granularity) each batch
//!   is present in full or not at all. Environment: `TERN_CRASH_SEEDS=<n>` torn-write seeds
//!   per point (default 2).
//! - the query side answers from memory, also after a reopen that loads sealed indexes (so
//!   the configuration entries are known without reading a payload);
//! - oversize requests (the reproductions of issue 7) are refused up front, with an error
//!   naming the limit; nothing is lost and the shard keeps working.

mod common;

use common::*;
use tern_engine::storage::sim::{CrashMode, FaultOp, SimStorage};
use tern_engine::{
    Entry, EntryKind, Error, HardState, OwnedEntry, ShardWal, WalConfig, WriteBatch,
};

const GROUPS: [u64; 3] = [21, 22, 23];

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 512 << 10,
        ..WalConfig::default()
    }
}

fn owned(group: u64, index: u64, term: u64, kind: EntryKind) -> OwnedEntry {
    OwnedEntry {
        term,
        index,
        kind,
        data: entry_data(group, index, term),
    }
}

/// Batches of one `Ready` each over the three groups: entries (several blocks' worth),
/// sometimes a conflict truncation first, a compaction, hard state. Several batches are
/// queued before any is awaited, so they share group-commit batches on disk while each stays
/// whole.
async fn workload(wal: &ShardWal<SimStorage>, t: &mut Tracker) -> tern_engine::Result<()> {
    let mut next = [1u64; 3];
    let mut term = [1u64; 3];
    for step in 0..12u64 {
        let mut ops = Vec::new();
        for (gi, &g) in GROUPS.iter().enumerate() {
            if (step + gi as u64) % 3 == 2 {
                continue;
            }
            if step % 5 == 4 && next[gi] > 3 {
                // A Raft conflict: the new leader's entries replace the last two.
                term[gi] += 1;
                next[gi] -= 2;
                ops.push(ModelOp::Truncate {
                    group: g,
                    index: next[gi],
                });
            }
            let count = 2 + (step + gi as u64) % 4;
            ops.push(ModelOp::Append {
                group: g,
                first: next[gi],
                count,
                term: term[gi],
            });
            next[gi] += count;
            if step == 8 {
                ops.push(ModelOp::Compact {
                    group: g,
                    index: next[gi] - 4,
                });
            }
            ops.push(ModelOp::HardState {
                group: g,
                hs: HardState {
                    term: term[gi],
                    vote: 1,
                    commit: next[gi] - 2,
                },
            });
        }
        t.submit(wal, ops).await?;
        if step % 3 == 2 {
            t.settle().await?;
        }
    }
    t.settle().await
}

async fn run_point(point: Option<u64>, seed: u64, mode: CrashMode) -> Result<u64, String> {
    let sim = SimStorage::new();
    let cfg = config();
    let wal = open(&sim, &cfg).await.map_err(|e| e.to_string())?;
    if let Some(n) = point {
        sim.set_power_cut_after(Some(n));
    }
    let mut t = Tracker::default();
    let result = workload(&wal, &mut t).await;
    if point.is_none() {
        result.map_err(|e| format!("workload without a power cut: {e}"))?;
        wal.close().await.map_err(|e| e.to_string())?;
        return Ok(sim.mutating_ops());
    }
    let what = crash(&sim, wal, seed, mode).await;
    let (acked, unacked) = t.split();
    let mut model = Model::default();
    for op in &acked {
        model.apply(op);
    }
    let wal = open(&sim, &cfg)
        .await
        .map_err(|e| format!("point {point:?} ({what}): recovery: {e}"))?;
    let observed = observe(&wal).await?;
    // Each unacknowledged batch is one op of the model: a prefix of whole batches.
    match_prefix(&observed, &model, &unacked)
        .map_err(|e| format!("point {point:?} ({what}): {e}"))?;
    wal.close().await.map_err(|e| e.to_string())?;
    Ok(0)
}

#[test]
fn write_batch_is_atomic_across_a_crash_at_every_boundary() {
    let base_ops = run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        wal.close().await.unwrap();
        sim.mutating_ops()
    });
    let total = run(run_point(None, 0, CrashMode::LoseAllUnsynced)).unwrap();
    assert!(total > base_ops + 20, "workload too small: {total} ops");
    let seeds: u64 = std::env::var("TERN_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut points = 0;
    for n in 0..(total - base_ops) {
        let mut runs = vec![(0, CrashMode::LoseAllUnsynced)];
        runs.extend((0..seeds).map(|s| (s, CrashMode::TornWrites)));
        for (seed, mode) in runs {
            if let Err(e) = run(run_point(Some(n), seed, mode)) {
                panic!("{e}");
            }
            points += 1;
        }
    }
    eprintln!(
        "{points} crash points checked over {} ops",
        total - base_ops
    );
}

#[test]
fn query_side_answers_from_memory_and_after_reopen() {
    run(async {
        let sim = SimStorage::new();
        let cfg = config();
        let wal = open(&sim, &cfg).await.unwrap();
        // Group 1: entries 1..=40 with configuration changes at 1 and 30; group 2: a
        // snapshot with metadata, then entries after it; group 3: only hard state.
        let mut b = WriteBatch::new();
        b.append(
            1,
            (1..=40).map(|i| {
                let kind = if i == 1 || i == 30 {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                };
                owned(1, i, 2, kind)
            }),
        );
        b.snapshot(2, 3, 100, b"conf: voters 1 2 3".to_vec());
        b.append(2, (101..=103).map(|i| owned(2, i, 4, EntryKind::Normal)));
        let hs = HardState {
            term: 5,
            vote: 2,
            commit: 7,
        };
        b.hard_state(3, hs);
        b.group_meta(3, b"older meta".to_vec());
        b.group_meta(2, b"group 2 meta".to_vec());
        let durable = wal.submit(b).await.unwrap();
        // Queued, not yet durable: the query side shows durable state only.
        assert_eq!(wal.last_index(1), 0);
        durable.await.unwrap();
        // Group metadata: the newest record wins.
        let mut b = WriteBatch::new();
        b.group_meta(3, b"newest meta".to_vec());
        wal.write(b).await.unwrap();

        let check = |wal: &ShardWal<SimStorage>| {
            assert_eq!((wal.first_index(1), wal.last_index(1)), (1, 40));
            assert_eq!(wal.term(1, 30), Some(2));
            assert_eq!(wal.term(1, 41), None);
            assert_eq!(wal.conf_entries(1), vec![(1, 2), (30, 2)]);
            assert_eq!((wal.first_index(2), wal.last_index(2)), (101, 103));
            assert_eq!(wal.term(2, 100), Some(3), "the snapshot point's term");
            assert_eq!(wal.term(2, 99), None);
            let s = wal.snapshot(2).unwrap();
            assert_eq!((s.term, s.index), (3, 100));
            assert_eq!(s.meta, b"conf: voters 1 2 3");
            assert!(wal.conf_entries(2).is_empty());
            assert_eq!(wal.hard_state(3), Some(hs));
            assert_eq!(wal.group_meta(3).as_deref(), Some(&b"newest meta"[..]));
            assert_eq!(wal.group_meta(2).as_deref(), Some(&b"group 2 meta"[..]));
            assert_eq!(wal.group_meta(1), None);
            assert_eq!(
                (wal.first_index(9), wal.last_index(9)),
                (1, 0),
                "unknown group"
            );
        };
        check(&wal);

        // Roll past the segment holding them, so the reopen loads a sealed index.
        let big = vec![7u8; 200 << 10];
        for i in 0..8 {
            let e = [Entry {
                kind: EntryKind::Normal,
                term: 1,
                index: i + 1,
                data: &big,
            }];
            wal.append(50, &e).await.unwrap();
        }
        wal.close().await.unwrap();
        assert!(used_segment_files(&sim).len() >= 2);

        let wal = open(&sim, &cfg).await.unwrap();
        check(&wal);
        let read = wal.read(1, 29, 31, u64::MAX).await.unwrap();
        assert_eq!(read[0].kind, EntryKind::Normal);
        assert_eq!(read[1].kind, EntryKind::ConfChange);

        // A truncation drops the configuration entries after it; a compaction those before.
        let mut b = WriteBatch::new();
        b.truncate(1, 25).compact(1, 2);
        wal.write(b).await.unwrap();
        assert!(wal.conf_entries(1).is_empty());
        // Deleting a group drops its metadata; oversize metadata is refused.
        let mut b = WriteBatch::new();
        b.delete_group(2);
        wal.write(b).await.unwrap();
        assert_eq!(wal.group_meta(2), None);
        let mut b = WriteBatch::new();
        b.group_meta(3, vec![0; tern_engine::constants::GROUP_META_BYTES_MAX + 1]);
        assert_too_large(wal.write(b).await, "GROUP_META_BYTES_MAX");
        assert_eq!(wal.group_meta(3).as_deref(), Some(&b"newest meta"[..]));
        wal.close().await.unwrap();
    });
}

#[test]
fn read_is_bounded_by_bytes_with_at_least_one_entry() {
    run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        let data = vec![1u8; 1000];
        let entries: Vec<Entry<'_>> = (1..=10)
            .map(|i| Entry {
                kind: EntryKind::Normal,
                term: 1,
                index: i,
                data: &data,
            })
            .collect();
        wal.append(1, &entries).await.unwrap();
        assert_eq!(wal.read(1, 1, 11, 3500).await.unwrap().len(), 3);
        assert_eq!(wal.read(1, 1, 11, 3000).await.unwrap().len(), 3);
        assert_eq!(wal.read(1, 1, 11, 10).await.unwrap().len(), 1);
        assert_eq!(wal.read(1, 4, 11, 0).await.unwrap()[0].index, 4);
        assert!(wal.read(1, 4, 4, 0).await.unwrap().is_empty());
        wal.close().await.unwrap();
    });
}

/// Asserts `r` is `TooLarge` naming `limit`.
fn assert_too_large<T: std::fmt::Debug>(r: tern_engine::Result<T>, limit: &str) {
    match r {
        Err(Error::TooLarge { limit: l, .. }) if l.contains(limit) => {}
        other => panic!("expected a TooLarge error naming {limit}, got {other:?}"),
    }
}

#[test]
fn oversize_requests_are_refused_nothing_is_lost_and_the_shard_lives() {
    run(async {
        let sim = SimStorage::new();
        let cfg = small_config(); // 1 MiB segments
        let wal = open(&sim, &cfg).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 5).await;

        // 1,048,586 empty entries in one append: over the record count of one batch.
        let empty: Vec<Entry<'_>> = (0..1_048_586u64)
            .map(|i| Entry {
                kind: EntryKind::Normal,
                term: 1,
                index: 6 + i,
                data: &[],
            })
            .collect();
        assert_too_large(wal.append(1, &empty).await, "BATCH_RECORDS_MAX");
        drop(empty);

        // Three 400 KiB entries with 1 MiB segments: over the request limit.
        let big = vec![3u8; 400 << 10];
        let three: Vec<Entry<'_>> = (0..3)
            .map(|i| Entry {
                kind: EntryKind::Normal,
                term: 1,
                index: 6 + i,
                data: &big,
            })
            .collect();
        assert_too_large(wal.append(1, &three).await, "payload_bytes_max");
        assert_too_large(wal.append(1, &three[..1]).await, "payload_bytes_max");

        // 4 GiB in one request (the same 4 MiB buffer 1024 times: nothing is allocated).
        let four_mib = vec![0u8; 4 << 20];
        let huge: Vec<Entry<'_>> = (0..1024)
            .map(|i| Entry {
                kind: EntryKind::Normal,
                term: 1,
                index: 6 + i,
                data: &four_mib,
            })
            .collect();
        assert_too_large(wal.append(1, &huge).await, "payload_bytes_max");
        drop(huge);

        // A 2 MiB snapshot meta.
        let mut b = WriteBatch::new();
        b.snapshot(1, 1, 3, vec![0u8; 2 << 20]);
        assert_too_large(wal.submit(b).await, "SNAPSHOT_META_BYTES_MAX");

        // A batch over the request limit across groups, each op of it valid alone.
        let mut b = WriteBatch::new();
        for g in 10..14 {
            b.append(
                g,
                [OwnedEntry {
                    term: 1,
                    index: 1,
                    kind: EntryKind::Normal,
                    data: vec![1u8; 100 << 10],
                }],
            );
        }
        assert_too_large(wal.submit(b).await, "request_bytes_max");
        // Nothing of it was accepted: group 10 can still start at index 1.
        assert_eq!(wal.last_index(10), 0);

        // An invalid op makes the whole batch fail, nothing queued.
        let mut b = WriteBatch::new();
        b.append(2, [owned(2, 1, 1, EntryKind::Normal)]);
        b.append(1, [owned(1, 9, 1, EntryKind::Normal)]); // gap after 5
        assert!(matches!(
            wal.submit(b).await,
            Err(Error::InvalidRequest { group: 1, .. })
        ));
        assert_eq!(wal.last_index(2), 0);

        // Indexes at the end of the u64 range, as a corrupt or hostile peer might send.
        let mut b = WriteBatch::new();
        b.snapshot(3, 1, u64::MAX, Vec::new());
        assert!(matches!(
            wal.submit(b).await,
            Err(Error::InvalidRequest { .. })
        ));
        let mut b = WriteBatch::new();
        b.append(
            3,
            [u64::MAX - 1, u64::MAX].map(|i| owned(3, i, 1, EntryKind::Normal)),
        );
        assert!(matches!(
            wal.submit(b).await,
            Err(Error::InvalidRequest { .. })
        ));
        let mut b = WriteBatch::new();
        b.compact(3, u64::MAX);
        assert!(matches!(
            wal.submit(b).await,
            Err(Error::InvalidRequest { .. })
        ));

        // The shard is alive and nothing was lost, also after a restart.
        assert!(wal.failure().is_none());
        fill(&wal, &mut m, 1, 6, 8).await;
        wal.close().await.unwrap();
        let wal = open(&sim, &cfg).await.unwrap();
        assert_eq!(observe(&wal).await.unwrap(), m.normalized());
        wal.close().await.unwrap();
    });
}

#[test]
fn request_limit_stays_below_the_batch_header_u32() {
    let cfg = WalConfig {
        segment_bytes: tern_engine::constants::SEGMENT_BYTES_MAX,
        batch_bytes_max: 2 << 20,
        ..WalConfig::default()
    };
    cfg.validate().unwrap();
    assert!(cfg.request_bytes_max() <= u32::MAX as u64);
    assert!(cfg.payload_bytes_max() < cfg.request_bytes_max());
}

#[test]
fn failed_resolves_the_moment_the_shard_stops() {
    run(async {
        let sim = SimStorage::new();
        let wal = std::rc::Rc::new(open(&sim, &config()).await.unwrap());
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 3).await;
        assert!(wal.failure().is_none());
        let watcher = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.failed().await.to_string() }).detach()
        };
        // A heartbeat-only leader: no writes of its own. Another group's write fails.
        sim.fail_next(FaultOp::Sync, 1);
        let d = entry_data(2, 1, 1);
        let e = [Entry {
            kind: EntryKind::Normal,
            term: 1,
            index: 1,
            data: &d,
        }];
        assert!(wal.append(2, &e).await.is_err());
        let seen = watcher.await.unwrap();
        assert!(seen.contains("stopped"), "{seen}");
        assert!(matches!(wal.failure(), Some(Error::ShardStopped { .. })));
        // Failed before it was queued: refused at once.
        let mut b = WriteBatch::new();
        b.hard_state(1, HardState::default());
        assert!(matches!(
            wal.submit(b).await,
            Err(Error::ShardStopped { .. })
        ));
    });
}
