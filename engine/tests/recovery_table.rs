//! The recovery decision table of `src/recovery.rs`, walked as data; and, at the end, the
//! same verdict (torn tail or corruption) from recovery, `verify-data` and `tern scan`.
//!
//! Each row builds the situation it names on the simulated disk (by running the WAL, then
//! damaging or extending what it wrote, as a crash or bit rot would), and states the outcome
//! expected in each recovery mode (tolerate-tail, absolute, tolerate-any). Every successful
//! recovery is then checked further: the recovered entries are exactly the expected ones,
//! and the WAL accepts a new append and recovers it again after another restart.

mod common;

use std::path::PathBuf;

use common::*;
use tern_engine::format::RecordKind;
use tern_engine::recovery::GroupLoss;
use tern_engine::repaired::EntryDamage;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::storage::Storage;
use tern_engine::torn_tail::DamageClass;
use tern_engine::verify::{
    analyze_lone_segment, analyze_shard, check_shard, Severity, VerifyOptions,
};
use tern_engine::{Error, RecoveryMode, WalConfig};

const MODES: [RecoveryMode; 3] = [
    RecoveryMode::TolerateTail,
    RecoveryMode::Absolute,
    RecoveryMode::TolerateAny,
];

/// What one mode must do with a row's situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Recover everything; nothing removed.
    Apply,
    /// Recover; a torn tail was cut, reported (torn_tail) and copied to quarantine.
    TornTail,
    /// Refuse to start with `Error::Corruption` naming the damage.
    Stop,
    /// Recover; the damaged region was quarantined and skipped, losses reported.
    Skip,
    /// Recover; the segment file was removed (crash while creating it).
    RemoveFile,
    /// Recover with the damaged entry `record` kept at its place in its group's log (an
    /// acknowledged batch whose frame is intact), reported `Unrepaired`, its read failing as
    /// corruption; a Repair record then makes it read back right, and a restart and
    /// `verify-data` call it repaired.
    Keep,
    /// Recover what is left (tolerate-any past a lost segment, logged): every entry read back
    /// is the model's, or the read fails with `Error::Corruption` (a sealed segment recovered
    /// from its index is read only on demand): never a wrong entry.
    Salvage,
}
use Expect::*;

/// A situation built on the disk, and what the damage looks like.
struct Situation {
    /// The state a successful recovery must produce (damaged parts excluded).
    model: Model,
    /// The state tolerate-any must produce when it skips (default: `model`).
    model_skipped: Option<Model>,
    losses: Vec<GroupLoss>,
    /// Where `Error::Corruption` must point: file, and offset/group/index when known.
    file: PathBuf,
    offset: Option<u64>,
    record: Option<(u64, u64)>,
}

struct Row {
    name: &'static str,
    /// tolerate-tail, absolute, tolerate-any.
    expect: [Expect; 3],
    build: fn(&SimStorage) -> Situation,
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 16 << 10,
        pending_bytes_max: 256 << 10,
        ..WalConfig::default()
    }
}

const N: u64 = 12;

/// One open segment with entries 1..=N of group 1, each in its own batch; cleanly closed.
fn one_segment(sim: &SimStorage) -> Model {
    let sim2 = sim.clone();
    glommio_block(
        async move {
            let sim = &sim2;
            let wal = open(sim, &config()).await.unwrap();
            let mut m = Model::default();
            fill(&wal, &mut m, 1, 1, N).await;
            wal.close().await.unwrap();
            m
        },
        sim,
    )
}

/// Two segments: 1 sealed (with its index), 2 open; returns the model and the last index.
fn two_segments(sim: &SimStorage) -> (Model, u64) {
    let sim2 = sim.clone();
    glommio_block(
        async move {
            let sim = &sim2;
            let wal = open(sim, &config()).await.unwrap();
            let mut m = Model::default();
            let mut i = 0;
            while used_segment_files(sim).len() < 2 {
                i += 1;
                fill(&wal, &mut m, 1, i, i).await;
            }
            fill(&wal, &mut m, 1, i + 1, i + 5).await;
            wal.close().await.unwrap();
            (m, i + 5)
        },
        sim,
    )
}

/// Three segments: 1 and 2 sealed (with their indexes), 3 open; group 1 only.
fn three_segments(sim: &SimStorage) -> Model {
    let sim2 = sim.clone();
    glommio_block(
        async move {
            let sim = &sim2;
            let wal = open(sim, &config()).await.unwrap();
            let mut m = Model::default();
            let mut i = 0;
            while used_segment_files(sim).len() < 3 {
                i += 1;
                fill(&wal, &mut m, 1, i, i).await;
            }
            fill(&wal, &mut m, 1, i + 1, i + 5).await;
            wal.close().await.unwrap();
            m
        },
        sim,
    )
}

/// A lost segment of the chain: tolerate-tail and absolute refuse to start naming it,
/// tolerate-any says so and recovers what is left.
fn chain_loss(sim: &SimStorage, segment: u64, damage: fn(&SimStorage, u64)) -> Situation {
    let m = three_segments(sim);
    damage(sim, segment);
    let mut s = situation(m, wal_path(segment));
    s.offset = Some(0);
    s
}

fn delete_segment(sim: &SimStorage, id: u64) {
    assert!(sim.remove_raw(&wal_path(id)));
    sim.remove_raw(&idx_path(id));
    // The spare after the newest segment holds nothing; without it the newest is the last.
    sim.remove_raw(&wal_path(4));
}

fn truncate_segment(sim: &SimStorage, id: u64) {
    let len = sim.file_len(&wal_path(id)).unwrap();
    sim.truncate_raw(&wal_path(id), len / 2);
}

/// Replaces segment `id` by a copy of another segment of the shard (as a mistaken restore
/// would).
fn replace_segment(sim: &SimStorage, id: u64) {
    let other = if id == 1 { 2 } else { 1 };
    let bytes = sim.read_current(&wal_path(other)).unwrap();
    sim.write_raw(&wal_path(id), 0, &bytes);
    sim.truncate_raw(&wal_path(id), bytes.len() as u64);
}

/// Runs a builder's WAL work on its own executor (builders run before the checked recovery).
fn glommio_block<T: 'static>(
    f: impl std::future::Future<Output = T> + 'static,
    sim: &SimStorage,
) -> T {
    let out = run(f);
    // Reboot: every builder hands over a disk with nothing pending.
    sim.crash(0, CrashMode::LoseAllUnsynced);
    out
}

fn last_batches(sim: &SimStorage, id: u64) -> (Vec<BatchLayout>, u64) {
    let (b, scan) = futures_lite::future::block_on(layout(sim, &wal_path(id)));
    (b, scan.valid_end)
}

fn situation(model: Model, file: PathBuf) -> Situation {
    Situation {
        model,
        model_skipped: None,
        losses: Vec::new(),
        file,
        offset: None,
        record: None,
    }
}

fn truncated(m: &Model, group: u64, from: u64) -> Model {
    let mut m = m.clone();
    m.apply(&ModelOp::Truncate { group, index: from });
    m
}

/// Flips one payload byte of the record of entry `index` of group 1 in segment `id`;
/// returns the record's offset.
fn rot_entry(sim: &SimStorage, id: u64, index: u64) -> u64 {
    let (batches, _) = last_batches(sim, id);
    let (off, h) = batches
        .iter()
        .flat_map(|b| b.records.iter())
        .find(|(_, h)| h.kind == RecordKind::Entry as u16 && h.index == index)
        .copied()
        .expect("entry record");
    // Flip in the header's `term` field if the payload is empty, else in the payload.
    let at = if h.payload_len > 0 {
        off + 64
    } else {
        off + 24
    };
    sim.flip_bit(&wal_path(id), at, 3);
    off
}

/// Flips a bit in the header of the batch holding entry `index` of group 1 in segment `id`
/// (its `batch_seq` field): the batch's frame is unreadable. Returns the batch's offset.
fn rot_batch_of(sim: &SimStorage, id: u64, index: u64) -> u64 {
    let (batches, _) = last_batches(sim, id);
    let b = batches
        .iter()
        .find(|b| {
            b.records
                .iter()
                .any(|(_, h)| h.kind == RecordKind::Entry as u16 && h.index == index)
        })
        .expect("batch of the entry");
    sim.flip_bit(&wal_path(id), b.offset + 16, 0);
    b.offset
}

/// Flips a bit of the `term` field (offset 32) of entry `index`'s record in segment `id`:
/// term 1 reads as 9, which its neighbours (term 1) contradict. Returns the record's offset.
fn rot_entry_term(sim: &SimStorage, id: u64, index: u64) -> u64 {
    let (batches, _) = last_batches(sim, id);
    let (off, _) = batches
        .iter()
        .flat_map(|b| b.records.iter())
        .find(|(_, h)| h.kind == RecordKind::Entry as u16 && h.index == index)
        .copied()
        .expect("entry record");
    sim.flip_bit(&wal_path(id), off + 32, 3);
    off
}

/// Writes the correct copy of entry `index` of group 1 (term 1) as a Repair record, as the
/// node does once a peer sent it.
fn repair_entry(sim: &SimStorage, index: u64) {
    let sim2 = sim.clone();
    glommio_block(
        async move {
            let wal = open(&sim2, &config()).await.unwrap();
            wal.repair(1, vec![correct_copy(index)]).await.unwrap();
            wal.close().await.unwrap();
        },
        sim,
    )
}

fn correct_copy(index: u64) -> tern_engine::OwnedEntry {
    tern_engine::OwnedEntry {
        term: 1,
        index,
        kind: tern_engine::EntryKind::Normal,
        data: entry_data(1, index, 1),
    }
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "any segment: valid batches (sealed with index + open)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let (m, _) = two_segments(sim);
                situation(m, wal_path(2))
            },
        },
        Row {
            name: "any segment: valid batches, sealed segment without its index (rebuilt)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let (m, _) = two_segments(sim);
                assert!(sim.remove_raw(&idx_path(1)));
                situation(m, wal_path(1))
            },
        },
        Row {
            name: "last segment: zero block, only zeros after (clean end)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let m = one_segment(sim);
                situation(m, wal_path(1))
            },
        },
        Row {
            name: "last segment: garbage after the last batch, no later batch (torn tail)",
            expect: [TornTail, Stop, TornTail],
            build: |sim| {
                let m = one_segment(sim);
                let (_, end) = last_batches(sim, 1);
                // Half of a batch header: what a torn write of the next batch leaves.
                let junk = craft_batch(
                    sim,
                    999,
                    0,
                    &[(RecordKind::Entry, 1, 1, N + 1, 0, entry_data(1, N + 1, 1))],
                );
                sim.write_raw(&wal_path(1), end, &junk[..40]);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(end);
                s
            },
        },
        Row {
            name: "last segment: bad last batch, no later batch (torn tail)",
            expect: [TornTail, Stop, TornTail],
            build: |sim| {
                let m = one_segment(sim);
                let off = rot_entry(sim, 1, N);
                // The last batch cannot be told from a torn write: it goes (reported).
                let mut s = situation(truncated(&m, 1, N), wal_path(1));
                s.offset = Some(off);
                s.record = Some((1, N));
                s
            },
        },
        Row {
            name: "last segment: zero block, later batch does not claim it durable (torn tail)",
            expect: [TornTail, Stop, TornTail],
            build: |sim| {
                let m = one_segment(sim);
                let (batches, end) = last_batches(sim, 1);
                let last = batches.last().unwrap().seq;
                // Batch last+1 never reached the disk; last+2, formed while last+1's fsync
                // was in flight, did.
                let b = craft_batch(
                    sim,
                    last + 2,
                    last,
                    &[(RecordKind::Entry, 2, 1, 1, 0, entry_data(2, 1, 1))],
                );
                sim.write_raw(&wal_path(1), end + 4096, &b);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(end);
                s
            },
        },
        Row {
            name: "last segment: damaged entry in a batch a later batch says was durable (kept, repaired from peers)",
            expect: [Keep, Stop, Keep],
            build: |sim| {
                let m = one_segment(sim);
                let k = N / 2;
                let off = rot_entry(sim, 1, k);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(off);
                s.record = Some((1, k));
                s
            },
        },
        Row {
            name: "last segment: damaged entry superseded by a later Repair record (repaired)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let m = one_segment(sim);
                rot_entry(sim, 1, N / 2);
                repair_entry(sim, N / 2);
                situation(m, wal_path(1))
            },
        },
        Row {
            name: "last segment: bad batch header, a later batch says it was durable (corruption)",
            expect: [Stop, Stop, Skip],
            build: |sim| {
                let m = one_segment(sim);
                let k = N / 2;
                let off = rot_batch_of(sim, 1, k);
                let mut s = situation(m.clone(), wal_path(1));
                s.model_skipped = Some(truncated(&m, 1, k));
                s.losses = vec![GroupLoss {
                    shard: 0,
                    why: String::new(),
                    group: 1,
                    first_index: k + 1,
                    last_index: N,
                }];
                s.offset = Some(off);
                s
            },
        },
        Row {
            name: "sealed segment: damaged entry (index missing, so it is scanned; kept, repaired from peers)",
            expect: [Keep, Stop, Keep],
            build: |sim| {
                let (m, _) = two_segments(sim);
                assert!(sim.remove_raw(&idx_path(1)));
                let off = rot_entry(sim, 1, 5);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(off);
                s.record = Some((1, 5));
                s
            },
        },
        Row {
            name: "sealed segment: damaged entry superseded by a later Repair record (index missing; repaired)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let (m, _) = two_segments(sim);
                rot_entry(sim, 1, 5);
                repair_entry(sim, 5);
                assert!(sim.remove_raw(&idx_path(1)));
                situation(m, wal_path(1))
            },
        },
        Row {
            name: "sealed segment: damaged entry whose term contradicts its neighbours (index missing)",
            expect: [Stop, Stop, Salvage],
            build: |sim| {
                let (m, _) = two_segments(sim);
                assert!(sim.remove_raw(&idx_path(1)));
                let off = rot_entry_term(sim, 1, 5);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(off);
                s.record = Some((1, 5));
                s
            },
        },
        Row {
            name: "sealed segment: damaged batch header (index missing, so it is scanned)",
            expect: [Stop, Stop, Skip],
            build: |sim| {
                let (m, last) = two_segments(sim);
                assert!(sim.remove_raw(&idx_path(1)));
                let k = 5;
                let off = rot_batch_of(sim, 1, k);
                let mut s = situation(m.clone(), wal_path(1));
                s.model_skipped = Some(truncated(&m, 1, k));
                s.losses = vec![GroupLoss {
                    shard: 0,
                    why: String::new(),
                    group: 1,
                    first_index: k + 1,
                    last_index: last,
                }];
                s.offset = Some(off);
                s
            },
        },
        Row {
            name: "sealed segment: seal record missing",
            expect: [Stop, Stop, Apply],
            build: |sim| {
                let (m, _) = two_segments(sim);
                assert!(sim.remove_raw(&idx_path(1)));
                let (batches, _) = last_batches(sim, 1);
                let seal = batches.last().unwrap();
                assert_eq!(seal.records[0].1.kind, RecordKind::Seal as u16);
                sim.write_raw(&wal_path(1), seal.offset, &[0u8; 4096]);
                let mut s = situation(m, wal_path(1));
                s.offset = Some(seal.offset);
                s
            },
        },
        Row {
            // A prepared segment whose header write was lost: it holds nothing, so every mode
            // reuses it as the next segment (the writer writes its header again).
            name: "last segment: header unreadable, rest all zero (prepared, header lost)",
            expect: [Apply, Apply, Apply],
            build: |sim| {
                let m = one_segment(sim);
                seal_and_create_next(sim, false);
                let mut s = situation(m, wal_path(2));
                s.offset = Some(0);
                s
            },
        },
        Row {
            name:
                "last segment: header unreadable, checkpoint batch present but never proven durable",
            expect: [RemoveFile, Stop, RemoveFile],
            build: |sim| {
                let m = one_segment(sim);
                seal_and_create_next(sim, true);
                let mut s = situation(m, wal_path(2));
                s.offset = Some(0);
                s
            },
        },
        Row {
            name: "chain: oldest segment deleted",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 1, delete_segment),
        },
        Row {
            name: "chain: middle segment deleted",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 2, delete_segment),
        },
        Row {
            name: "chain: newest segment deleted",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 3, delete_segment),
        },
        Row {
            name: "chain: oldest segment truncated",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 1, truncate_segment),
        },
        Row {
            name: "chain: middle segment truncated",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 2, truncate_segment),
        },
        Row {
            name: "chain: newest segment truncated",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 3, truncate_segment),
        },
        Row {
            name: "chain: oldest segment replaced by another",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 1, replace_segment),
        },
        Row {
            name: "chain: middle segment replaced by another",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 2, replace_segment),
        },
        Row {
            name: "chain: newest segment replaced by another",
            expect: [Stop, Stop, Salvage],
            build: |sim| chain_loss(sim, 3, replace_segment),
        },
        Row {
            name: "any: entry leaves a hole in its group's log",
            expect: [Stop, Stop, Skip],
            build: |sim| {
                let m = one_segment(sim);
                let (batches, end) = last_batches(sim, 1);
                let last = batches.last().unwrap().seq;
                let b = craft_batch(
                    sim,
                    last + 1,
                    last,
                    &[(RecordKind::Entry, 1, 1, N + 5, 0, entry_data(1, N + 5, 1))],
                );
                sim.write_raw(&wal_path(1), end, &b);
                let mut s = situation(m, wal_path(1));
                s.losses = vec![GroupLoss {
                    shard: 0,
                    why: String::new(),
                    group: 1,
                    first_index: N + 5,
                    last_index: N + 5,
                }];
                s.offset = Some(end + 80);
                s.record = Some((1, N + 5));
                s
            },
        },
    ]
}

/// Appends a seal batch to segment 1 (naming segment 2) and creates segment 2 with a header
/// that never reached the disk; with `checkpoint`, its checkpoint batch did (it claims only
/// the seal durable, so nothing proves segment 2's start was ever synced).
fn seal_and_create_next(sim: &SimStorage, checkpoint: bool) {
    let (batches, end) = last_batches(sim, 1);
    let last = batches.last().unwrap().seq;
    let seal = craft_batch(
        sim,
        last + 1,
        last,
        &[(RecordKind::Seal, 0, 0, 0, 2, vec![])],
    );
    sim.write_raw(&wal_path(1), end, &seal);
    // The writer has already prepared segment 2 as a spare; this row models an older crash
    // in which segment 2 was being created, so replace it.
    sim.remove_raw(&wal_path(2));
    futures_lite::future::block_on(async {
        use tern_engine::storage::StorageFile;
        let f = sim.create_new(&wal_path(2)).await.unwrap();
        f.allocate(1 << 20).await.unwrap();
        f.sync_data().await.unwrap();
        sim.sync_dir(&shard_dir()).await.unwrap();
    });
    if checkpoint {
        let hs = (RecordKind::HardState, 1, 1, 3, 0, vec![]);
        let cp = craft_batch(sim, last + 2, last + 1, &[hs]);
        sim.write_raw(&wal_path(2), 4096, &cp);
    }
}

async fn check_row(
    sim: SimStorage,
    s: Situation,
    expect: Expect,
    mode: RecoveryMode,
) -> Result<(), String> {
    let segments_before: Vec<_> = segment_files(&sim)
        .into_iter()
        .map(|p| (sim.read_current(&p), p))
        .collect();
    let cfg = config();
    let result = open_mode(&sim, &cfg, mode).await;
    let wal = match (expect, result) {
        (Stop, Err(Error::Corruption { at, what })) => {
            if at.file != s.file {
                return Err(format!(
                    "error names {} not {}: {what}",
                    at.file.display(),
                    s.file.display()
                ));
            }
            if let Some(o) = s.offset {
                if at.offset != o {
                    return Err(format!("error names offset {} not {o}: {what}", at.offset));
                }
            }
            if let Some((g, i)) = s.record {
                if (at.group, at.index) != (Some(g), Some(i)) {
                    return Err(format!(
                        "error names group/index {:?}/{:?}, not {g}/{i}: {what}",
                        at.group, at.index
                    ));
                }
            }
            // Refusing to start must not change any segment (rebuilding an index is fine).
            let segments_after: Vec<_> = segment_files(&sim)
                .into_iter()
                .map(|p| (sim.read_current(&p), p))
                .collect();
            if segments_after != segments_before {
                return Err(format!(
                    "a refused recovery changed the segments: {:?}",
                    sim.list_files()
                ));
            }
            return Ok(());
        }
        (Stop, Ok(_)) => return Err("recovered, expected Error::Corruption".into()),
        (Stop, Err(e)) => return Err(format!("expected Error::Corruption, got {e}")),
        (_, Err(e)) => return Err(format!("expected {expect:?}, recovery failed: {e}")),
        (_, Ok(wal)) => wal,
    };
    let rep = wal.recovery_report().clone();
    if expect == Keep {
        let (g, i) = s.record.ok_or("a Keep row names its record")?;
        let kept: Vec<_> = rep
            .damaged_entries
            .iter()
            .map(|(e, v)| (e.group, e.index, *v))
            .collect();
        if kept != [(g, i, EntryDamage::Unrepaired)] || !rep.removed.is_empty() {
            return Err(format!("expected {g}/{i} kept unrepaired: {rep:?}"));
        }
        match wal.read(g, i, i + 1, u64::MAX).await {
            Err(Error::Corruption { .. }) => {}
            other => return Err(format!("read of the damaged entry: {other:?}")),
        }
        wal.repair(g, vec![correct_copy(i)])
            .await
            .map_err(|e| format!("repair: {e}"))?;
    }
    if expect == Salvage {
        let got = match observe(&wal).await {
            Ok(got) => got,
            Err(e) if e.contains("corruption") => {
                wal.close().await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let full = s.model.normalized();
        for (g, want) in &full {
            let Some(have) = got.get(g) else {
                continue;
            };
            for (k, term) in have.terms.iter().enumerate() {
                let index = have.first + k as u64;
                let model_term = index
                    .checked_sub(want.first)
                    .and_then(|o| want.terms.get(o as usize));
                if model_term != Some(term) {
                    return Err(format!(
                        "salvaged entry {g}/{index} (term {term}) is not the model's"
                    ));
                }
            }
        }
        wal.close().await.map_err(|e| e.to_string())?;
        return Ok(());
    }
    let want = match expect {
        Skip => s.model_skipped.clone().unwrap_or_else(|| s.model.clone()),
        _ => s.model.clone(),
    };
    let quarantined = |torn: bool| -> Result<(), String> {
        let r = rep
            .removed
            .iter()
            .find(|r| r.torn_tail == torn)
            .ok_or_else(|| format!("no removed region with torn_tail={torn} reported: {rep:?}"))?;
        let q = r.quarantined_to.as_ref().ok_or("region not quarantined")?;
        if !q.starts_with(quarantine()) || sim.read_current(q).is_none() {
            return Err(format!("quarantine file {} missing", q.display()));
        }
        Ok(())
    };
    match expect {
        Apply => {
            if !rep.removed.is_empty() || !rep.losses.is_empty() || !rep.removed_files.is_empty() {
                return Err(format!("expected nothing removed: {rep:?}"));
            }
        }
        TornTail => {
            quarantined(true)?;
            if !rep.losses.is_empty() {
                return Err(format!("a torn tail is not a loss: {:?}", rep.losses));
            }
        }
        Skip => {
            if s.losses.is_empty() || rep.removed.is_empty() {
                // A hole in a group's log: nothing on disk is damaged, the entry is refused.
            } else {
                quarantined(false)?;
            }
            let key = |l: &Vec<GroupLoss>| -> Vec<(u32, u64, u64, u64)> {
                l.iter()
                    .map(|l| (l.shard, l.group, l.first_index, l.last_index))
                    .collect()
            };
            if key(&rep.losses) != key(&s.losses) {
                return Err(format!("losses {:?}, expected {:?}", rep.losses, s.losses));
            }
        }
        RemoveFile => {
            if !rep.removed_files.contains(&s.file) || sim.read_current(&s.file).is_some() {
                return Err(format!("{} not removed: {rep:?}", s.file.display()));
            }
        }
        Keep => {}
        Stop | Salvage => unreachable!(),
    }
    let got = observe(&wal).await?;
    match_prefix(&got, &want, &[]).map_err(|e| format!("recovered state: {e}"))?;

    // The WAL goes on from there: one more entry, restart, same mode, still consistent.
    let mut want = want;
    let g = want.group(1);
    let next = if g.terms.is_empty() {
        g.first
    } else {
        g.last() + 1
    };
    let mut t = Tracker::default();
    t.enqueue_append(&wal, 1, next, 1, 1)
        .await
        .map_err(|e| format!("append after recovery: {e}"))?;
    t.settle()
        .await
        .map_err(|e| format!("append after recovery: {e}"))?;
    wal.close().await.map_err(|e| e.to_string())?;
    for op in t.split().0 {
        want.apply(&op);
    }
    sim.crash(1, CrashMode::LoseAllUnsynced);
    let wal = open_mode(&sim, &cfg, mode)
        .await
        .map_err(|e| format!("second recovery: {e}"))?;
    let got = observe(&wal).await?;
    match_prefix(&got, &want, &[]).map_err(|e| format!("after second recovery: {e}"))?;
    if let Some(v) = wal
        .recovery_report()
        .damaged_entries
        .iter()
        .find(|(_, v)| *v != EntryDamage::Repaired)
    {
        return Err(format!("after the repair, a damaged entry is {v:?}"));
    }
    wal.close().await.map_err(|e| e.to_string())?;
    if mode == RecoveryMode::TolerateAny && expect != Keep {
        // What tolerate-any skipped or accepted is still damage to verify-data.
        return Ok(());
    }
    // verify-data agrees: a repaired entry is a warning, never a problem.
    let sa = analyze_shard(&sim, 0, &shard_dir(), false, &mut |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let (problems, _) = check_shard(&sim, &sa, &VerifyOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let errors: Vec<_> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(format!("verify-data after recovery: {errors:?}"));
    }
    let repaired = problems.iter().any(|p| p.code == "repaired-entry");
    if matches!(expect, Keep) && !repaired {
        return Err(format!(
            "verify-data does not call the entry repaired: {problems:?}"
        ));
    }
    Ok(())
}

#[test]
fn recovery_decision_table() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in rows() {
        for (i, mode) in MODES.iter().enumerate() {
            checked += 1;
            let sim = SimStorage::new();
            let s = (row.build)(&sim);
            let expect = row.expect[i];
            if let Err(e) = run(check_row(sim, s, expect, *mode)) {
                failures.push(format!(
                    "[{}] {} => expected {:?}: {e}",
                    mode.name(),
                    row.name,
                    row.expect[i]
                ));
            }
        }
    }
    assert!(checked >= 30, "table too small: {checked}");
    assert!(
        failures.is_empty(),
        "{} of {checked} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// --- One verdict from recovery, `verify-data` and `tern scan` --------------------------------
//
// All three call `tern_engine::torn_tail`; these cases pin that they also feed it the same
// inputs, so the same damaged file gets the same verdict. The case that used to split them:
// the first batch of the last segment is damaged and a later batch was formed while it was in
// flight. `tern scan` read the segment without the batches of the segments before it and took
// the damaged batch's sequence as 1, so any later batch "proved" it durable: scan said
// corruption where recovery truncated a torn tail.

/// The three verdicts on segment `id`: (`tern scan`, `verify-data`, recovery in the default
/// mode). Recovery runs last: it changes the disk.
fn verdicts(sim: &SimStorage, id: u64) -> [DamageClass; 3] {
    let sim = sim.clone();
    run(async move {
        let (a, place) = analyze_lone_segment(&sim, &shard_dir(), id, Some(0))
            .await
            .expect("scan");
        // A damaged entry in an acknowledged batch is passed over and kept (corruption, to
        // repair from peers), not listed as a region where the scan stopped.
        let scan = match a.damage_classes(place.is_last).first() {
            Some(c) => *c,
            None if !a.scan.damaged_entries.is_empty() => DamageClass::Corruption,
            None => panic!("the scan sees no damage"),
        };

        let sa = analyze_shard(&sim, 0, &shard_dir(), false, &mut |_| {})
            .await
            .expect("analyze");
        let (problems, _) = check_shard(&sim, &sa, &VerifyOptions::default())
            .await
            .expect("verify");
        let verify = problems
            .iter()
            .filter(|p| p.file == wal_path(id))
            .find_map(|p| match p.code {
                "torn-tail" => Some(DamageClass::TornTail),
                "corruption" | "damaged-entry" => Some(DamageClass::Corruption),
                _ => None,
            })
            .unwrap_or_else(|| panic!("verify reports no damage: {problems:?}"));

        let recovery = match open_mode(&sim, &config(), RecoveryMode::TolerateTail).await {
            Ok(wal) => {
                let rep = wal.recovery_report().clone();
                wal.close().await.expect("close");
                let torn = rep.removed.iter().any(|r| r.torn_tail && r.segment == id);
                let kept = rep
                    .damaged_entries
                    .iter()
                    .any(|(e, v)| e.segment == id && *v == EntryDamage::Unrepaired);
                assert!(
                    torn != kept,
                    "recovery started without cutting a torn tail or keeping a damaged entry"
                );
                if torn {
                    DamageClass::TornTail
                } else {
                    DamageClass::Corruption
                }
            }
            Err(Error::Corruption { at, .. }) => {
                assert_eq!(at.file, wal_path(id), "recovery stopped on another file");
                DamageClass::Corruption
            }
            Err(e) => panic!("recovery failed otherwise: {e}"),
        };
        [scan, verify, recovery]
    })
}

/// On `two_segments`: damages the header of segment 2's first batch (its sequence becomes
/// unknown), drops every batch after it, and writes one batch (sequence `prev_last + 2`, where
/// `prev_last` is segment 1's last) claiming `prev_last + durable_seq_past_prev` durable.
fn first_batch_damaged_then(sim: &SimStorage, durable_seq_past_prev: u64) {
    let prev_last = last_batches(sim, 1)
        .0
        .last()
        .expect("segment 1 batches")
        .seq;
    let path = wal_path(2);
    let (batches, _) = last_batches(sim, 2);
    let (first, second) = (batches[0].offset, batches[1].offset);
    let len = sim.file_len(&path).unwrap();
    sim.write_raw(&path, second, &vec![0u8; (len - second) as usize]);
    // The batch header's `batch_seq` field: the record's checksum no longer matches.
    sim.flip_bit(&path, first + 16, 0);
    let later = craft_batch(
        sim,
        prev_last + 2,
        prev_last + durable_seq_past_prev,
        &[(RecordKind::Entry, 2, 1, 1, 0, entry_data(2, 1, 1))],
    );
    sim.write_raw(&path, second, &later);
}

const TORN: [DamageClass; 3] = [DamageClass::TornTail; 3];
const CORRUPT: [DamageClass; 3] = [DamageClass::Corruption; 3];

#[test]
fn verdict_torn_last_batch_is_a_torn_tail_everywhere() {
    let sim = SimStorage::new();
    one_segment(&sim);
    rot_entry(&sim, 1, N);
    assert_eq!(verdicts(&sim, 1), TORN);
}

#[test]
fn verdict_damage_before_acknowledged_batches_is_corruption_everywhere() {
    let sim = SimStorage::new();
    one_segment(&sim);
    rot_entry(&sim, 1, N / 2);
    assert_eq!(verdicts(&sim, 1), CORRUPT);
}

#[test]
fn verdict_first_batch_of_last_segment_under_an_in_flight_batch_is_a_torn_tail_everywhere() {
    let sim = SimStorage::new();
    two_segments(&sim);
    // The later batch was formed while the damaged one (prev_last + 1) was in flight.
    first_batch_damaged_then(&sim, 0);
    assert_eq!(verdicts(&sim, 2), TORN);
}

#[test]
fn verdict_first_batch_of_last_segment_proven_durable_is_corruption_everywhere() {
    let sim = SimStorage::new();
    two_segments(&sim);
    first_batch_damaged_then(&sim, 1);
    assert_eq!(verdicts(&sim, 2), CORRUPT);
}
