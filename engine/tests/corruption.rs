//! Corruption is detected, never served, and handled per recovery mode.
//!
//! - `bit_flips_are_detected_or_harmless`: one bit flipped at a time at >= 1000 distinct
//!   positions of a sealed segment and of the open segment (segment header, unused header
//!   space, batch headers, record headers, payloads, padding, unused space after the data).
//!   Each flip is checked on a fresh copy of the same WAL: recovery (scanning everything) must
//!   stop with `Error::Corruption` naming the file and an offset at or before the flip, or
//!   keep exactly one damaged entry (an entry record failing its checksum in an intact,
//!   acknowledged batch: always so for a flipped payload) whose reads fail as corruption
//!   while every other entry reads back exactly (the node repairs it from peers), or the flip
//!   was in bytes no reader trusts and every entry reads back exactly, or (last batch /
//!   unused space of the open segment) the tail is cut and reported as torn. With the sealed segment's index in use, recovery does
//!   not read the data, so reads must catch it: a read returns the exact bytes or an error.
//! - Corruption followed by valid batches: stop in tolerate-tail and absolute, naming file,
//!   offset, group and index; tolerate-any quarantines the region and reports the losses.
//! - A torn tail (a real torn write, from a simulated crash) is truncated and reported.
//! - A misdirected write is detected at the next start.
//!
//! Environment: `TERN_FLIPS=<n>` flip positions per segment (default 700 in the sealed
//! segment, 350 in the open one); `TERN_FLIP_SEED=<n>` picks other positions.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::format::RecordKind;
use tern_engine::repaired::EntryDamage;
use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::storage::Storage;
use tern_engine::{Error, RecoveryMode, ShardWal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 16 << 10,
        pending_bytes_max: 256 << 10,
        ..WalConfig::default()
    }
}

/// Every file of a disk with its bytes, to stamp out fresh copies.
type Image = Vec<(PathBuf, Vec<u8>)>;

fn image(sim: &SimStorage) -> Image {
    sim.list_files()
        .into_iter()
        .map(|p| {
            let bytes = sim.read_current(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

async fn restore(img: &Image) -> SimStorage {
    let sim = SimStorage::new();
    let mut dirs = HashSet::new();
    for (p, bytes) in img {
        let dir = p.parent().unwrap().to_path_buf();
        sim.create_dir_all(&dir).await.unwrap();
        let f = sim.create_new(p).await.unwrap();
        drop(f);
        sim.write_raw(p, 0, bytes);
        dirs.insert(dir);
    }
    for d in dirs {
        sim.sync_dir(&d).await.unwrap();
    }
    sim
}

/// Three groups, appended one acknowledged call at a time (so each batch proves the one
/// before it durable) until segment 3 is open with a few batches in it.
async fn build() -> (Image, Model) {
    let sim = SimStorage::new();
    let wal = open(&sim, &config()).await.unwrap();
    let mut m = Model::default();
    let mut next = [1u64; 3];
    let mut k = 0;
    let mut after = 0;
    while after < 12 {
        let gi = k % 3;
        fill(&wal, &mut m, gi as u64 + 1, next[gi], next[gi]).await;
        next[gi] += 1;
        k += 1;
        // Segment 3 exists (as a prepared spare) before it is used: count only once it holds a
        // batch.
        let used = sim
            .read_current(&wal_path(3))
            .is_some_and(|b| b.len() > 8192 && b[4096..4160].iter().any(|&x| x != 0));
        if used {
            after += 1;
        }
    }
    wal.close().await.unwrap();
    sim.crash(0, CrashMode::LoseAllUnsynced);
    (image(&sim), m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Region {
    SegmentHeader,
    HeaderUnused,
    BatchHeader,
    RecordHeader,
    Payload,
    Padding,
    Unused,
}

const REGIONS: [Region; 7] = [
    Region::SegmentHeader,
    Region::HeaderUnused,
    Region::BatchHeader,
    Region::RecordHeader,
    Region::Payload,
    Region::Padding,
    Region::Unused,
];

/// A byte range of one region, with the batch and record it belongs to.
#[derive(Debug, Clone)]
struct Span {
    region: Region,
    lo: u64,
    hi: u64,
    batch: usize,
    /// (offset, group, index) of an entry record, for record headers and payloads.
    entry: Option<(u64, u64, u64)>,
}

fn spans(batches: &[BatchLayout], valid_end: u64, file_len: u64) -> Vec<Span> {
    let mut out = vec![
        Span {
            region: Region::SegmentHeader,
            lo: 0,
            hi: 64,
            batch: 0,
            entry: None,
        },
        Span {
            region: Region::HeaderUnused,
            lo: 64,
            hi: 4096,
            batch: 0,
            entry: None,
        },
    ];
    for (bi, b) in batches.iter().enumerate() {
        out.push(Span {
            region: Region::BatchHeader,
            lo: b.offset,
            hi: b.offset + 80,
            batch: bi,
            entry: None,
        });
        for (off, h) in &b.records {
            let entry = (h.kind == RecordKind::Entry as u16).then_some((*off, h.group, h.index));
            out.push(Span {
                region: Region::RecordHeader,
                lo: *off,
                hi: off + 64,
                batch: bi,
                entry,
            });
            if h.payload_len > 0 {
                out.push(Span {
                    region: Region::Payload,
                    lo: off + 64,
                    hi: off + 64 + h.payload_len as u64,
                    batch: bi,
                    entry,
                });
            }
        }
        let next = batches.get(bi + 1).map_or(valid_end, |n| n.offset);
        if b.records_end < next {
            out.push(Span {
                region: Region::Padding,
                lo: b.records_end,
                hi: next,
                batch: bi,
                entry: None,
            });
        }
    }
    out.push(Span {
        region: Region::Unused,
        lo: valid_end,
        hi: file_len,
        batch: batches.len(),
        entry: None,
    });
    out.retain(|s| s.lo < s.hi);
    out
}

/// Distinct flip positions, spread over the regions round robin.
fn positions(spans: &[Span], count: usize, rng: &mut SmallRng) -> Vec<(u64, u8, Span)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut r = 0;
    let mut attempts = 0;
    while out.len() < count && attempts < count * 50 {
        attempts += 1;
        let region = REGIONS[r % REGIONS.len()];
        r += 1;
        let of: Vec<&Span> = spans.iter().filter(|s| s.region == region).collect();
        if of.is_empty() {
            continue;
        }
        let s = of[rng.gen_range(0..of.len())];
        let pos = rng.gen_range(s.lo..s.hi);
        if seen.insert(pos) {
            out.push((pos, rng.gen_range(0..8u8), s.clone()));
        }
    }
    out
}

/// Reads every entry of the model one at a time: each read returns exactly the bytes that
/// were written or an error. Returns the entries that could not be read.
async fn read_each(wal: &ShardWal<SimStorage>, m: &Model) -> Result<Vec<(u64, u64)>, String> {
    let mut failed = Vec::new();
    for (g, gm) in &m.groups {
        for (k, term) in gm.terms.iter().enumerate() {
            let i = gm.first + k as u64;
            match wal.read(*g, i, i + 1, u64::MAX).await {
                Ok(v) => {
                    if v.len() != 1 || v[0].term != *term || v[0].data != entry_data(*g, i, *term) {
                        return Err(format!("read of {g}/{i} returned wrong bytes"));
                    }
                }
                Err(Error::Corruption { .. }) => failed.push((*g, i)),
                Err(e) => return Err(format!("read of {g}/{i}: unexpected error {e}")),
            }
        }
    }
    Ok(failed)
}

fn cfg_index(use_index: bool) -> WalConfig {
    WalConfig {
        use_sealed_index: use_index,
        ..config()
    }
}

/// Checks one flip; returns the outcome's name for the tally.
async fn check_flip(
    img: &Image,
    model: &Model,
    seg: u64,
    last_segment: bool,
    last_batch: usize,
    (pos, bit, span): &(u64, u8, Span),
) -> Result<&'static str, String> {
    let path = wal_path(seg);
    // 1. Recovery that scans every segment.
    let sim = restore(img).await;
    sim.flip_bit(&path, *pos, *bit);
    let harmless = matches!(span.region, Region::HeaderUnused | Region::Padding)
        || (span.region == Region::Unused && !last_segment);
    let torn = last_segment
        && (span.region == Region::Unused
            || (span.batch == last_batch
                && matches!(
                    span.region,
                    Region::BatchHeader | Region::RecordHeader | Region::Payload
                )));
    let outcome = match open(&sim, &cfg_index(false)).await {
        Err(Error::Corruption { at, what }) => {
            if harmless || torn {
                return Err(format!(
                    "flip in {:?} stopped recovery: {what} ({at})",
                    span.region
                ));
            }
            if at.file != path || at.offset > *pos {
                return Err(format!("error does not point at the flip ({at}): {what}"));
            }
            if span.region == Region::Payload {
                if let Some((off, g, i)) = span.entry {
                    if (at.offset, at.group, at.index) != (off, Some(g), Some(i)) {
                        return Err(format!(
                            "payload flip of {g}/{i} at {off}, error names {at}"
                        ));
                    }
                }
            }
            "stopped"
        }
        Err(e) => return Err(format!("unexpected error {e}")),
        Ok(wal) if !(harmless || torn) => {
            // Only an entry record whose checksum fails inside an intact, acknowledged batch
            // may let recovery start: kept at its place, to be repaired from peers, and every
            // read of it fails (never wrong bytes).
            let kept: Vec<(u64, u64, EntryDamage)> = wal
                .recovery_report()
                .damaged_entries
                .iter()
                .map(|(e, v)| (e.group, e.index, *v))
                .collect();
            if kept.len() != 1 || kept[0].2 != EntryDamage::Unrepaired {
                return Err(format!(
                    "flip in {:?} not detected (damaged entries kept: {kept:?})",
                    span.region
                ));
            }
            let failed = read_each(&wal, model).await?;
            if failed.len() > 1 {
                return Err(format!(
                    "reads that failed {failed:?} for one damaged record"
                ));
            }
            if span.region == Region::Payload {
                let (_, g, i) = span.entry.ok_or("payload span names its entry")?;
                if failed != [(g, i)] || (kept[0].0, kept[0].1) != (g, i) {
                    return Err(format!(
                        "payload flip of {g}/{i}: kept {kept:?}, reads that failed {failed:?}"
                    ));
                }
            }
            wal.close().await.map_err(|e| e.to_string())?;
            "kept"
        }
        Ok(wal) => {
            let rep = wal.recovery_report();
            let mut want = model.clone();
            if torn {
                if !rep.removed.iter().any(|r| r.torn_tail && r.segment == seg) {
                    return Err(format!("torn tail not reported: {rep:?}"));
                }
                if span.region != Region::Unused {
                    // The last batch is cut whole: what it held is gone (and was reported).
                    let (batches, _) = layout(&restore(img).await, &path).await;
                    for (_, h) in &batches[last_batch].records {
                        if h.kind == RecordKind::Entry as u16 {
                            want.apply(&ModelOp::Truncate {
                                group: h.group,
                                index: h.index,
                            });
                        }
                    }
                }
            } else if !rep.removed.is_empty() {
                return Err(format!("harmless flip removed data: {rep:?}"));
            }
            let got = observe(&wal).await?;
            match_prefix(&got, &want, &[])?;
            wal.close().await.map_err(|e| e.to_string())?;
            if torn {
                "torn tail cut"
            } else {
                "harmless"
            }
        }
    };
    // 2. Sealed segment, index in use: recovery skips its data, reads must catch the flip.
    if !last_segment {
        let sim = restore(img).await;
        sim.flip_bit(&path, *pos, *bit);
        let wal = open(&sim, &cfg_index(true))
            .await
            .map_err(|e| format!("recovery with index: {e}"))?;
        let failed = read_each(&wal, model).await?;
        let expect: Vec<(u64, u64)> = match (span.region, span.entry) {
            (Region::RecordHeader | Region::Payload, Some((_, g, i))) => vec![(g, i)],
            _ => vec![],
        };
        if failed != expect {
            return Err(format!(
                "with the index, reads that failed {failed:?}, expected {expect:?}"
            ));
        }
        wal.close().await.map_err(|e| e.to_string())?;
    }
    Ok(outcome)
}

#[test]
fn bit_flips_are_detected_or_harmless() {
    let flips: usize = std::env::var("TERN_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(700);
    let seed: u64 = std::env::var("TERN_FLIP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    run(async move {
        let (img, model) = build().await;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut total = 0;
        let mut tally = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for (seg, last, count) in [(2u64, false, flips), (3, true, flips / 2)] {
            let sim = restore(&img).await;
            let (batches, scan) = layout(&sim, &wal_path(seg)).await;
            assert!(
                batches.len() >= 4,
                "segment {seg} has {} batches",
                batches.len()
            );
            let sp = spans(&batches, scan.valid_end, scan.file_len);
            let pos = positions(&sp, count, &mut rng);
            assert_eq!(pos.len(), count, "not enough distinct positions");
            for p in &pos {
                total += 1;
                match check_flip(&img, &model, seg, last, batches.len() - 1, p).await {
                    Ok(outcome) => *tally.entry((p.2.region, outcome)).or_insert(0) += 1,
                    Err(e) => failures.push(format!(
                        "segment {seg} byte {} bit {} ({:?}): {e}",
                        p.0, p.1, p.2.region
                    )),
                }
            }
        }
        eprintln!("{total} flips: {tally:?}");
        assert!(total >= 1000, "only {total} flip positions");
        assert!(
            failures.is_empty(),
            "{} of {total} flips mishandled:\n{}",
            failures.len(),
            failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Every region was exercised, and real damage really stopped recovery.
        for r in REGIONS {
            assert!(tally.keys().any(|(reg, _)| *reg == r), "no flip in {r:?}");
        }
        let detected: usize = tally
            .iter()
            .filter(|((_, o), _)| *o == "stopped" || *o == "kept")
            .map(|(_, n)| n)
            .sum();
        assert!(
            detected > 500,
            "only {detected} flips stopped recovery or kept a damaged entry"
        );
        assert!(
            tally
                .keys()
                .any(|(r, o)| *r == Region::Payload && *o == "kept"),
            "no payload flip kept its entry for repair"
        );
    });
}

fn quarantine_files(sim: &SimStorage) -> Vec<PathBuf> {
    sim.list_files()
        .into_iter()
        .filter(|p| p.starts_with(quarantine()))
        .collect()
}

#[test]
fn corruption_followed_by_valid_batches_stops_default_and_absolute_quarantined_by_tolerate_any() {
    run(async {
        let (img, model) = build().await;
        let probe = restore(&img).await;
        let (batches, _) = layout(&probe, &wal_path(3)).await;
        // An entry in the middle of the open segment.
        let (off, h) = batches[batches.len() / 2]
            .records
            .iter()
            .find(|(_, h)| h.kind == RecordKind::Entry as u16)
            .copied()
            .unwrap();
        // Bit 24 of the record's `payload_len`: the record no longer fits its batch, so the
        // batch's frame is broken (a flip that only fails the record's checksum leaves the
        // frame intact: recovery then keeps the entry for repair, see recovery_table.rs).
        let at_byte = off + 11;
        for mode in [RecoveryMode::TolerateTail, RecoveryMode::Absolute] {
            let sim = restore(&img).await;
            sim.flip_bit(&wal_path(3), at_byte, 0);
            match open_mode(&sim, &config(), mode).await {
                Err(Error::Corruption { at, what }) => {
                    assert_eq!(at.file, wal_path(3), "{what}");
                    assert_eq!(at.offset, off, "{what}");
                    assert_eq!(
                        (at.group, at.index),
                        (Some(h.group), Some(h.index)),
                        "{what}"
                    );
                    let msg = Error::Corruption { at, what }.to_string();
                    assert!(msg.contains("00000000000000000003.wal"), "{msg}");
                    assert!(msg.contains(&format!("offset {off}")), "{msg}");
                    assert!(msg.contains(&format!("group {}", h.group)), "{msg}");
                    assert!(msg.contains(&format!("index {}", h.index)), "{msg}");
                }
                Err(e) => panic!("{mode:?}: unexpected error {e}"),
                Ok(_) => panic!("{mode:?}: corruption before valid data was accepted"),
            }
            assert!(quarantine_files(&sim).is_empty());
        }
        let sim = restore(&img).await;
        sim.flip_bit(&wal_path(3), at_byte, 0);
        let wal = open_mode(&sim, &config(), RecoveryMode::TolerateAny)
            .await
            .expect("tolerate-any recovers");
        let rep = wal.recovery_report().clone();
        assert!(
            rep.removed
                .iter()
                .any(|r| !r.torn_tail && r.quarantined_to.is_some()),
            "{rep:?}"
        );
        assert!(!quarantine_files(&sim).is_empty(), "nothing quarantined");
        // The damaged entry's group has a hole from there: later entries are reported lost.
        assert!(
            rep.losses
                .iter()
                .any(|l| l.group == h.group && l.first_index == h.index + 1),
            "losses {:?}",
            rep.losses
        );
        let mut want = model.clone();
        want.apply(&ModelOp::Truncate {
            group: h.group,
            index: h.index,
        });
        // Other groups lose only the entries of the damaged batch (one entry per batch).
        let got = observe(&wal).await.unwrap();
        assert_eq!(got.get(&h.group), want.normalized().get(&h.group));
        for (g, gm) in &got {
            let w = &model.groups[g];
            assert_eq!(gm.first, w.first);
            assert!(gm.terms.len() <= w.terms.len());
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    run(async {
        let mut torn_seen = 0;
        for seed in 0..60u64 {
            let sim = SimStorage::new();
            let wal = open(&sim, &config()).await.unwrap();
            let mut m = Model::default();
            fill(&wal, &mut m, 1, 1, 20).await;
            // Several large appends in flight, cut before their fsync completes.
            let mut t = Tracker::default();
            for i in 0..4 {
                t.enqueue_append(&wal, 1, 21 + 4 * i, 4, 2).await.unwrap();
            }
            // The four appends form one batch: its write is op 1, its fdatasync op 2. Cut
            // the power between them, so the crash tears (or keeps, or loses) the write.
            sim.set_power_cut_after(Some(1));
            let _ = t.settle().await;
            let what = crash(&sim, wal, seed, CrashMode::TornWrites).await;
            let (acked, unacked) = t.split();
            for op in &acked {
                m.apply(op);
            }
            let wal = open(&sim, &config())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let rep = wal.recovery_report().clone();
            if let Some(r) = rep.removed.iter().find(|r| r.torn_tail) {
                torn_seen += 1;
                let q = r.quarantined_to.as_ref().expect("quarantined");
                assert!(
                    sim.read_current(q).is_some(),
                    "{what}: quarantine file missing"
                );
                assert!(r.len > 0 && r.offset % 4096 == 0, "{what}: {r:?}");
            }
            assert!(rep.losses.is_empty(), "{what}");
            let got = observe(&wal).await.unwrap();
            match_prefix(&got, &m, &unacked).unwrap_or_else(|e| panic!("{what}: {e}"));
            wal.close().await.unwrap();
        }
        assert!(
            torn_seen >= 5,
            "only {torn_seen} of 60 crashes left a torn tail"
        );
    });
}

#[test]
fn misdirected_write_is_detected() {
    run(async {
        let sim = SimStorage::new();
        let wal = open(&sim, &config()).await.unwrap();
        let mut m = Model::default();
        fill(&wal, &mut m, 1, 1, 10).await;
        // The next batch lands four blocks past where it belongs; later batches follow on
        // from where the writer believes it wrote.
        sim.misdirect_next_write(4);
        fill(&wal, &mut m, 1, 11, 20).await;
        wal.close().await.unwrap();
        sim.crash(0, CrashMode::LoseAllUnsynced);
        match open(&sim, &config()).await {
            Err(Error::Corruption { at, what }) => {
                assert_eq!(at.file, wal_path(1), "{what}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(wal) => {
                // If recovery accepted it, every entry must still read back exactly.
                let got = observe(&wal).await;
                panic!("misdirected write not detected; read-back: {got:?}");
            }
        }
    });
}
