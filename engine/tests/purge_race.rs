//! A read racing a purge, on the simulated disk with seeded I/O latency (`storage::latency`).
//!
//! Readers of a group's oldest entries open their sealed segment while a compaction makes
//! that segment dead and the writer purges it. Before the fix, a reader whose open completed
//! after the purge put the purged segment back into the WAL's list; every later purge then
//! failed on the missing file and old segments piled up. Each seed interleaves the tasks
//! differently; afterwards everything is compacted and the WAL must be down to its newest
//! segments, with every read that succeeded returning the right bytes.
//!
//! Environment: `TERN_TEST_CASES=<n>` seeds (default 24).

mod common;

use std::rc::Rc;

use common::*;
use tern_engine::storage::latency::Latent;
use tern_engine::storage::sim::SimStorage;
use tern_engine::{Entry, EntryKind, Error, ShardWal, WalConfig};

const ENTRY_BYTES: usize = 60 << 10;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 256 << 10,
        ..WalConfig::default()
    }
}

fn data(index: u64) -> Vec<u8> {
    payload(1, index, 1, ENTRY_BYTES)
}

async fn append(wal: &ShardWal<Latent<SimStorage>>, from: u64, to: u64) {
    for i in from..=to {
        let d = data(i);
        let e = [Entry {
            kind: EntryKind::Normal,
            term: 1,
            index: i,
            data: &d,
        }];
        wal.append(1, &e).await.unwrap();
    }
}

async fn open_latent(
    sim: &SimStorage,
    seed: u64,
) -> Result<Rc<ShardWal<Latent<SimStorage>>>, String> {
    let storage = Latent::new(sim.clone(), seed, 200);
    let wal = ShardWal::open(storage, 0, &shard_dir(), &quarantine(), config())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Rc::new(wal))
}

async fn close(wal: Rc<ShardWal<Latent<SimStorage>>>) -> Result<(), String> {
    Rc::try_unwrap(wal)
        .map_err(|_| "wal still shared".to_string())?
        .close()
        .await
        .map_err(|e| e.to_string())
}

async fn run_seed(seed: u64) -> Result<(), String> {
    let sim = SimStorage::new();
    let mut wal = open_latent(&sim, seed).await?;
    // About 16 entries per segment: several sealed segments.
    let mut last = 0;
    let mut compacted = 1;
    for round in 0..6u64 {
        append(&wal, last + 1, last + 40).await;
        last += 40;
        // Segments sealed at run time keep the writer's handle; after a restart a read must
        // open them, which is where the race was.
        close(wal).await?;
        wal = open_latent(&sim, seed * 100 + round).await?;
        // Readers of the oldest live entries (in sealed segments not opened yet), then a
        // compaction past them, all in flight at once.
        // Each reader starts after its own seeded number of turns, so some open while the
        // purge runs.
        let mut readers = Vec::new();
        for k in 0..8u64 {
            let wal = wal.clone();
            let index = compacted + k * 2 + round % 2;
            let wait = payload(seed, round, k, 1)[0] as u64;
            readers.push(
                glommio::spawn_local(async move {
                    for _ in 0..wait {
                        futures_lite::future::yield_now().await;
                    }
                    (index, wal.read(1, index, index + 1, u64::MAX).await)
                })
                .detach(),
            );
        }
        compacted = last - 4;
        wal.compact(1, compacted).await.map_err(|e| e.to_string())?;
        for r in readers {
            let Some((index, r)) = r.await else {
                return Err("reader task cancelled".into());
            };
            match r {
                Ok(entries) => {
                    if entries.len() != 1 || entries[0].data != data(index) {
                        return Err(format!("read of {index} returned wrong bytes"));
                    }
                }
                // The entry was compacted and its segment purged while the read ran.
                Err(Error::Unavailable { .. }) => {}
                Err(e) => return Err(format!("read of {index}: {e}")),
            }
        }
        // Everything before the last few entries is dead; one more roll must purge all the
        // sealed segments (a segment listed again by a racing read made every later purge
        // fail on its missing file).
        append(&wal, last + 1, last + 20).await;
        compacted = last + 18;
        wal.compact(1, compacted).await.map_err(|e| e.to_string())?;
        append(&wal, last + 21, last + 40).await;
        last += 40;
        // The open segment, maybe the one before it, and the prepared spare.
        let files = segment_files(&sim);
        if files.len() > 4 {
            return Err(format!(
                "round {round}: {} segment files left after compacting everything ({} purged): {files:?}",
                files.len(),
                wal.stats().segments_purged
            ));
        }
    }
    close(wal).await
}

#[test]
fn read_racing_purge_does_not_resurrect_a_segment() {
    for seed in 0..cases(24) {
        if let Err(e) = run(run_seed(seed)) {
            panic!("seed {seed}: {e}");
        }
    }
}
