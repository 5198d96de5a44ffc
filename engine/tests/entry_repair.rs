//! Repair of a damaged entry from a correct copy (issue 12, "corrupt records repaired from
//! peers"): the engine side. A bit flipped in an entry of a sealed segment makes that one read
//! fail as corruption; `ShardWal::repair` writes a `Repair` record that takes its place in the
//! group table; reads then return the correct bytes, before and after a crash, and nothing
//! else of the log moves (no truncation of committed data).

mod common;

use common::*;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::{Entry, EntryKind, Error, OwnedEntry, WalConfig};

const GROUPS: u64 = 3;
const PAYLOAD_BYTES: usize = 3000;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 16 << 10,
        pending_bytes_max: 64 << 10,
        ..WalConfig::default()
    }
}

fn owned(group: u64, index: u64, term: u64) -> OwnedEntry {
    OwnedEntry {
        term,
        index,
        kind: EntryKind::Normal,
        data: payload(group, index, term, PAYLOAD_BYTES),
    }
}

/// Appends entries 1..=`count` of every group, round robin, one entry per call (so one batch
/// each: several segments end up sealed).
async fn fill(wal: &tern_engine::ShardWal<SimStorage>, count: u64) {
    for i in 1..=count {
        for g in 1..=GROUPS {
            let data = payload(g, i, 1, PAYLOAD_BYTES);
            wal.append(
                g,
                &[Entry {
                    term: 1,
                    index: i,
                    kind: EntryKind::Normal,
                    data: &data,
                }],
            )
            .await
            .unwrap();
        }
    }
}

/// Offset of entry (group, index)'s payload in the first segment, found by its bytes (each
/// payload is unique).
fn payload_offset(sim: &SimStorage, group: u64, index: u64) -> (std::path::PathBuf, u64) {
    let want = payload(group, index, 1, PAYLOAD_BYTES);
    for path in used_segment_files(sim) {
        let bytes = sim.read_current(&path).unwrap();
        if let Some(at) = bytes.windows(want.len()).position(|w| w == want.as_slice()) {
            return (path, at as u64);
        }
    }
    panic!("payload of {group}/{index} not found");
}

async fn read_one(
    wal: &tern_engine::ShardWal<SimStorage>,
    group: u64,
    index: u64,
) -> tern_engine::Result<OwnedEntry> {
    let mut v = wal.read(group, index, index + 1, u64::MAX).await?;
    assert_eq!(v.len(), 1);
    Ok(v.remove(0))
}

#[test]
fn repair_sealed_entry_three_groups_survives_crash_and_truncates_nothing() {
    run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        fill(&wal, 200).await;
        wal.close().await.unwrap();
        assert!(
            used_segment_files(&sim).len() >= 3,
            "the first segments are sealed"
        );

        // Damage entry 2/5 (in the first, sealed segment) while the node is down.
        let (path, at) = payload_offset(&sim, 2, 5);
        sim.flip_bit(&path, at + 100, 3);
        let wal = open(&sim, &config()).await.unwrap();
        match read_one(&wal, 2, 5).await {
            Err(Error::Corruption { at, .. }) => {
                assert_eq!((at.group, at.index), (Some(2), Some(5)));
                assert_eq!(at.file, path);
            }
            other => panic!("damaged read answered {other:?}"),
        }
        let before: Vec<_> = (1..=GROUPS).map(|g| wal.group(g).unwrap()).collect();

        // A copy for another term is dead on arrival: the damage stays visible.
        wal.repair(2, vec![owned(2, 5, 7)]).await.unwrap();
        assert!(matches!(
            read_one(&wal, 2, 5).await,
            Err(Error::Corruption { .. })
        ));
        // Outside the log: refused, nothing written.
        assert!(matches!(
            wal.repair(2, vec![owned(2, 201, 1)]).await,
            Err(Error::InvalidRequest { .. })
        ));

        wal.repair(2, vec![owned(2, 5, 1)]).await.unwrap();
        assert_eq!(read_one(&wal, 2, 5).await.unwrap(), owned(2, 5, 1));
        let after: Vec<_> = (1..=GROUPS).map(|g| wal.group(g).unwrap()).collect();
        assert_eq!(before, after, "bounds and state of every group unchanged");
        // A range read across the repaired entry reads it from its new place.
        let range = wal.read(2, 1, 201, u64::MAX).await.unwrap();
        assert_eq!(range.len(), 200);
        for e in &range {
            assert_eq!(e, &owned(2, e.index, 1));
        }
        wal.close().await.unwrap();

        // The repair is durable, and replay (with the sealed indexes) gives the same answer.
        sim.crash(3, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &config()).await.unwrap();
        for g in 1..=GROUPS {
            for e in wal.read(g, 1, 201, u64::MAX).await.unwrap() {
                assert_eq!(e, owned(g, e.index, 1));
            }
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn repair_of_an_entry_truncated_meanwhile_is_ignored() {
    run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        fill(&wal, 10).await;
        wal.truncate(1, 8).await.unwrap();
        wal.append(
            1,
            &[Entry {
                term: 2,
                index: 8,
                kind: EntryKind::Normal,
                data: &payload(1, 8, 2, PAYLOAD_BYTES),
            }],
        )
        .await
        .unwrap();
        // A copy of the term-1 entry that was replaced: applying it would resurrect a
        // truncated entry.
        wal.repair(1, vec![owned(1, 8, 1)]).await.unwrap();
        let e = read_one(&wal, 1, 8).await.unwrap();
        assert_eq!((e.term, e.data), (2, payload(1, 8, 2, PAYLOAD_BYTES)));
        wal.close().await.unwrap();
        sim.crash(1, CrashMode::LoseAllUnsynced);
        let wal = open(&sim, &config()).await.unwrap();
        assert_eq!(read_one(&wal, 1, 8).await.unwrap().term, 2);
        assert_eq!(wal.group(1).unwrap().last_index, 8);
        wal.close().await.unwrap();
    });
}
