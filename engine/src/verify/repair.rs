//! `tern repair`: plans and carries out the repair of a data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::analysis::{
    analyze_shard, is_leftover_temp, read_layout, rebuilt_segment_bytes, remove_salvage, replay,
    GroupLoss, RecordInfo, ShardAnalysis,
};
use super::check::{build_index, chain_problems, check_index, verify_dir, VerifyOptions};
use super::problem::Problem;
use super::problem::Severity;
use crate::batch::{BatchBuilder, NewRecord};
use crate::chain::{self, chain_path, write_chain, SegmentSeen};
use crate::constants::{BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::engine::QUARANTINE_DIR;
use crate::error::{Error, Location, Result};
use crate::format::record::decode_record;
use crate::format::segment::index_file_name;
use crate::format::{align_up, IndexEntry, RecordKind, SealedIndex, SegmentHeader};
use crate::group::HardState;
use crate::quarantine::{Quarantine, Remover};
use crate::recovery::{now_unix_ms, zero_region};
use crate::scan::{scan_segment, ScanStop};
use crate::storage::{write_file_atomic, IoBuf, Storage, StorageFile};
use crate::torn_tail::{self, DamageClass};

// ---------------------------------------------------------------------------------------
// repair

#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    pub skip_corrupt: bool,
    pub dry_run: bool,
    /// Only act on this shard (and segment): `tern repair --path SEGMENT`.
    pub only_shard: Option<u32>,
    pub only_segment: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    TruncateTail,
    RemoveSegment,
    RewriteSegment,
    RebuildIndex,
    LowerCommit,
    /// A leftover temporary file moved to the quarantine.
    QuarantineLeftover,
    /// The shard's chain record rewritten to the segments present.
    RewriteChain,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairAction {
    pub kind: ActionKind,
    pub shard: u32,
    pub segment: Option<u64>,
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub bytes: Option<u64>,
    pub reason: String,
    /// `done`, `planned` (dry run), `needs --skip-corrupt`, `outside --path`
    pub status: &'static str,
}

/// A damaged byte range whose records are lost (only the first bad record's identity is
/// known, when its header still decoded).
#[derive(Debug, Clone, Serialize)]
pub struct RegionLoss {
    pub shard: u32,
    pub segment: u64,
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
    pub group: Option<u64>,
    pub index: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub path: PathBuf,
    pub dry_run: bool,
    pub actions: Vec<RepairAction>,
    /// Entries removed (or that would be) from each group's log.
    pub losses: Vec<GroupLoss>,
    /// Damaged regions removed (or that would be).
    pub regions: Vec<RegionLoss>,
    /// Where removed bytes were copied, with a MANIFEST.
    pub quarantine: Option<PathBuf>,
    /// Problems left after the repair (a verify run after it), or found by a dry run.
    pub remaining: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SegPlan {
    Keep,
    TruncateTail { from: u64, to: u64 },
    Remove,
    Rewrite { why: String },
}

/// Rewrites a shard's chain record after repair changed its segments, or (with
/// `--skip-corrupt`) to accept segments lost from the chain: the record then names the
/// segments present, and the old one is kept in quarantine.
async fn repair_chain<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    opts: &RepairOptions,
    changed: bool,
    q: &mut Quarantine,
    report: &mut RepairReport,
) -> Result<()> {
    let k = sa.shard;
    let lost: Vec<String> = chain_problems(sa)
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.message)
        .collect();
    if lost.is_empty() && (!changed || opts.dry_run) {
        // A dry run plans no chain action for its own changes: they are not made yet.
        return Ok(());
    }
    let status = if !lost.is_empty() && opts.only_segment.is_some() {
        "outside --path"
    } else if !lost.is_empty() && !opts.skip_corrupt {
        "needs --skip-corrupt"
    } else if opts.dry_run {
        "planned"
    } else {
        "done"
    };
    let path = chain_path(&sa.dir);
    if status == "done" {
        let now = analyze_shard(storage, k, &sa.dir, false, &mut |_| {}).await?;
        let seen: Vec<SegmentSeen> = now
            .segments
            .iter()
            .map(|a| SegmentSeen::from_scan(a.id, &a.scan))
            .collect();
        let next = chain::from_seen(k, &seen);
        let current = sa.chain.as_ref().and_then(|c| c.as_ref().ok());
        if next.as_ref() == current || next.is_none() {
            return Ok(());
        }
        if let Some(c) = next {
            if path.exists() {
                q.copy_file(storage, &path, k, "chain record replaced by repair")
                    .await?;
            }
            write_chain(storage, &sa.dir, &c).await?;
        }
    }
    let reason = if lost.is_empty() {
        "segments changed by this repair".to_string()
    } else {
        format!(
            "{}: the record is rewritten to name the segments present (the loss is accepted)",
            lost.join("; ")
        )
    };
    report.actions.push(RepairAction {
        kind: ActionKind::RewriteChain,
        shard: k,
        segment: None,
        file: path,
        offset: None,
        bytes: None,
        reason,
        status,
    });
    Ok(())
}

/// Plans and (unless a dry run) carries out the repair of a data directory.
pub async fn repair_dir<S: Storage>(
    storage: &S,
    root: &Path,
    opts: &RepairOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<RepairReport> {
    let layout = read_layout(root)?;
    if let Err(why) = &layout.meta {
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: format!("ENGINE file unusable ({why}); repair will not guess the shard count"),
        });
    }
    let mut report = RepairReport {
        path: root.to_path_buf(),
        dry_run: opts.dry_run,
        actions: Vec::new(),
        losses: Vec::new(),
        regions: Vec::new(),
        quarantine: None,
        remaining: Vec::new(),
    };
    let mut q = Quarantine::new(&root.join(QUARANTINE_DIR), Remover::Repair);
    if opts.only_shard.is_none() {
        quarantine_leftovers(storage, &layout.strays, None, opts, &mut q, &mut report).await?;
    }
    for (&k, dir) in &layout.shards {
        if opts.only_shard.is_some_and(|s| s != k) {
            continue;
        }
        let sa = analyze_shard(storage, k, dir, true, progress).await?;
        // Leftovers first: after ENOSPC they may be what fills the disk, and the rest of the
        // repair may need the space they hold once the operator empties the quarantine.
        if opts.only_segment.is_none() {
            quarantine_leftovers(storage, &sa.strays, Some(k), opts, &mut q, &mut report).await?;
        }
        let actions_before = report.actions.len();
        let result = repair_shard(storage, &sa, opts, &mut q, &mut report).await;
        for a in &sa.segments {
            remove_salvage(a)?;
        }
        if let Err(e) = result {
            if !opts.dry_run {
                // What was moved so far stays described (best effort: the disk may be full).
                let _ = q.set_extra_lines(storage, manifest_lines(&report)).await;
            }
            return Err(e);
        }
        let changed = report.actions[actions_before..]
            .iter()
            .any(|a| a.status == "done" && a.kind != ActionKind::RebuildIndex);
        repair_chain(storage, &sa, opts, changed, &mut q, &mut report).await?;
    }
    if !opts.dry_run {
        q.set_extra_lines(storage, manifest_lines(&report)).await?;
        report.quarantine = q.dir().map(Path::to_path_buf);
    }
    // The claim that the directory is clean is checked, not assumed: a verify run after
    // the repair, whose problems and leftover files (if any) are what remains.
    let verify = verify_dir(storage, root, &VerifyOptions::default(), &mut |_| {}).await?;
    report.remaining = verify.problems;
    report.remaining.extend(
        verify
            .warnings
            .into_iter()
            .filter(|w| w.code == "leftover-temp"),
    );
    Ok(report)
}

/// What the quarantine's manifest says of a repair beyond its files: the losses it accepted
/// and the regions it cut.
fn manifest_lines(report: &RepairReport) -> Vec<String> {
    let losses = report.losses.iter().map(|l| {
        format!(
            "loss shard={} group={} first_index={} last_index={} why={}",
            l.shard, l.group, l.first_index, l.last_index, l.why
        )
    });
    let regions = report.regions.iter().map(|r| {
        format!(
            "region shard={} segment={} offset={} len={} reason={}",
            r.shard, r.segment, r.offset, r.bytes, r.reason
        )
    });
    losses.chain(regions).collect()
}

/// Moves leftover temporary files (of `shard`, or of the data directory's root) to the
/// quarantine: after ENOSPC a half-prepared segment can be what fills the disk.
async fn quarantine_leftovers<S: Storage>(
    storage: &S,
    strays: &[PathBuf],
    shard: Option<u32>,
    opts: &RepairOptions,
    q: &mut Quarantine,
    report: &mut RepairReport,
) -> Result<()> {
    for path in strays {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_leftover_temp(&name) || !path.is_file() {
            continue;
        }
        let bytes = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let reason = "left-over temporary file of an interrupted write".to_string();
        let status = if opts.dry_run {
            "planned"
        } else {
            let prefix = shard.map_or("root".to_string(), |k| format!("shard-{k}"));
            q.move_file(storage, path, &format!("{prefix}-{name}"), &reason)
                .await?;
            "done"
        };
        report.actions.push(RepairAction {
            kind: ActionKind::QuarantineLeftover,
            shard: shard.unwrap_or(0),
            segment: None,
            file: path.clone(),
            offset: None,
            bytes: Some(bytes),
            reason,
            status,
        });
    }
    Ok(())
}

pub(super) async fn repair_shard<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    opts: &RepairOptions,
    q: &mut Quarantine,
    report: &mut RepairReport,
) -> Result<()> {
    let k = sa.shard;
    let n = sa.segments.len();
    let mut plans = Vec::with_capacity(n);
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        let plan = if a.header_rebuilt.is_some() {
            // As recovery decides (the same rule).
            let prev = sa.prev_last_seq(i).unwrap_or(0);
            let later = a
                .damages
                .iter()
                .flat_map(|d| d.later_batches.iter().map(|b| b.durable_seq));
            let seqs = a.batches.iter().map(|b| b.durable_seq).chain(later);
            if torn_tail::classify_headerless(seqs, prev, is_last) == DamageClass::TornTail {
                SegPlan::Remove
            } else {
                SegPlan::Rewrite {
                    why: format!(
                        "segment header unreadable ({})",
                        a.bad_header().unwrap_or_default()
                    ),
                }
            }
        } else if let Some(d) = a.damages.first() {
            if sa.torn_from(i) == Some(0) {
                SegPlan::TruncateTail {
                    from: d.offset,
                    to: d.garbage_end.max(d.offset),
                }
            } else {
                SegPlan::Rewrite {
                    why: format!(
                        "{} at offset {} before valid data",
                        d.reason, d.record_offset
                    ),
                }
            }
        } else {
            match a.sealed_next() {
                Some(next) if !is_last && sa.segments[i + 1].id != next => SegPlan::Rewrite {
                    why: format!("seal names missing segment {next}"),
                },
                None if !is_last => SegPlan::Rewrite {
                    why: "sealed segment has lost its seal".into(),
                },
                _ => SegPlan::Keep,
            }
        };
        plans.push(plan);
    }
    // What each segment keeps, before cutting holes.
    let cut: Vec<Option<u64>> = (0..n)
        .map(|i| match &plans[i] {
            SegPlan::TruncateTail { from, .. } => Some(*from),
            SegPlan::Remove => Some(0),
            _ => sa.torn_from(i).map(|d| sa.segments[i].damages[d].offset),
        })
        .collect();
    let keep = |si: usize, rec: &RecordInfo| cut[si].is_none_or(|c| rec.offset < c);
    let r = replay(sa, &keep);
    for (si, _) in &r.orphans {
        if !matches!(plans[*si], SegPlan::Rewrite { .. } | SegPlan::Remove) {
            plans[*si] = SegPlan::Rewrite {
                why: "holds entries that follow a hole in their group's log".into(),
            };
        }
    }
    let needs_skip = plans.iter().any(|p| matches!(p, SegPlan::Rewrite { .. }));

    // Losses.
    let mut dropped: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (si, a) in sa.segments.iter().enumerate() {
        for (ri, rec) in a.records.iter().enumerate() {
            let lost = !keep(si, rec) || r.orphans.contains(&(si, ri));
            if lost && rec.kind() == RecordKind::Entry {
                let e = dropped.entry(rec.header.group).or_insert((u64::MAX, 0));
                e.0 = e.0.min(rec.header.index);
                e.1 = e.1.max(rec.header.index);
            }
        }
        let torn = sa.torn_from(si);
        for (di, d) in a.damages.iter().enumerate() {
            if torn.is_some_and(|t| di > t) {
                break;
            }
            report.regions.push(RegionLoss {
                shard: k,
                segment: a.id,
                file: a.path.clone(),
                offset: d.offset,
                bytes: d
                    .later_batches
                    .first()
                    .map_or(d.garbage_end, |b| b.offset)
                    .saturating_sub(d.offset),
                reason: d.reason.to_string(),
                group: d.group,
                index: d.index,
            });
        }
    }
    for (g, (lo, hi)) in &r.holes {
        let e = dropped.entry(*g).or_insert((*lo, *hi));
        e.0 = e.0.min(*lo);
        e.1 = e.1.max(*hi);
    }
    for (g, (lo, hi)) in dropped {
        let cut_here = r
            .orphans
            .iter()
            .any(|(si, ri)| sa.segments[*si].records[*ri].header.group == g);
        let why = if cut_here {
            format!(
                "the group's log has a hole at index {}: entries after it are cut",
                r.holes[&g].0
            )
        } else if r.holes.contains_key(&g) {
            "in the damaged region (unreadable)".to_string()
        } else {
            "in the removed tail".to_string()
        };
        report.losses.push(GroupLoss {
            shard: k,
            group: g,
            first_index: lo,
            last_index: hi,
            why,
        });
    }

    let status_for = |seg: Option<u64>, needs: bool| -> &'static str {
        if opts.only_segment.is_some() && seg != opts.only_segment {
            "outside --path"
        } else if needs && !opts.skip_corrupt {
            "needs --skip-corrupt"
        } else if opts.dry_run {
            "planned"
        } else {
            "done"
        }
    };

    // Carry out the segment plans.
    let mut rewrites_done = true;
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        match &plans[i] {
            SegPlan::Keep => {
                let ipath = sa.dir.join(index_file_name(a.id));
                if a.sealed_next().is_none() {
                    if sa.index_ids.contains(&a.id) {
                        let status = status_for(Some(a.id), false);
                        if status == "done" {
                            drop_index(storage, sa, a.id, q).await?;
                        }
                        report.actions.push(RepairAction {
                            kind: ActionKind::RebuildIndex,
                            shard: k,
                            segment: Some(a.id),
                            file: ipath,
                            offset: None,
                            bytes: None,
                            reason: "index of a segment that is not sealed: removed".into(),
                            status,
                        });
                    }
                    continue;
                }
                let reason = if !sa.index_ids.contains(&a.id) {
                    "index missing".to_string()
                } else {
                    match check_index(storage, &ipath, a).await? {
                        None => continue,
                        Some(p) => p.message,
                    }
                };
                let status = status_for(Some(a.id), false);
                if status == "done" {
                    if sa.index_ids.contains(&a.id) {
                        q.copy_file(storage, &ipath, k, "index replaced by rebuild")
                            .await?;
                    }
                    write_file_atomic(storage, &ipath, &build_index(a).encode())
                        .await
                        .map_err(|e| Error::io(&ipath, e))?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RebuildIndex,
                    shard: k,
                    segment: Some(a.id),
                    file: ipath,
                    offset: None,
                    bytes: None,
                    reason,
                    status,
                });
            }
            SegPlan::TruncateTail { from, to } => {
                let status = status_for(Some(a.id), false);
                if status == "done" {
                    let name = format!("shard-{k}-segment-{}-offset-{from}.bin", a.id);
                    q.copy_region(storage, &a.path, &name, *from, *to, "torn tail")
                        .await?;
                    drop_index(storage, sa, a.id, q).await?;
                    zero_region(storage, &a.path, *from, align_up(*to, BLOCK_BYTES)).await?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::TruncateTail,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: Some(*from),
                    bytes: Some(to - from),
                    reason: format!(
                        "torn tail ({}): truncated to the last valid batch, which ends at {from}",
                        a.damages[0].reason
                    ),
                    status,
                });
            }
            SegPlan::Remove => {
                // A segment the chain record names held acknowledged records: removing it is
                // a loss to accept, not a crash artefact to clear.
                let in_chain = matches!(&sa.chain, Some(Ok(c)) if (c.first_segment..=c.last_segment).contains(&a.id));
                let status = status_for(Some(a.id), in_chain);
                if status == "done" {
                    q.copy_file(storage, &a.path, k, "segment with an unwritten header")
                        .await?;
                    drop_index(storage, sa, a.id, q).await?;
                    storage
                        .remove_file(&a.path)
                        .await
                        .map_err(|e| Error::io(&a.path, e))?;
                    storage
                        .sync_dir(&sa.dir)
                        .await
                        .map_err(|e| Error::io(&sa.dir, e))?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RemoveSegment,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: Some(0),
                    bytes: Some(a.scan.file_len),
                    reason: format!(
                        "segment header unreadable ({}) and nothing in it proven acknowledged: a crash while creating the segment",
                        a.bad_header().unwrap_or_default()
                    ),
                    status,
                });
            }
            SegPlan::Rewrite { why } => {
                let status = status_for(Some(a.id), true);
                let orphans: BTreeSet<usize> = r
                    .orphans
                    .iter()
                    .filter(|(si, _)| *si == i)
                    .map(|(_, ri)| *ri)
                    .collect();
                let kept = a
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(ri, rec)| keep(i, rec) && !orphans.contains(ri))
                    .count();
                if status == "done" {
                    let seal_next = (!is_last).then(|| sa.segments[i + 1].id);
                    q.copy_file(storage, &a.path, k, why).await?;
                    drop_index(storage, sa, a.id, q).await?;
                    rewrite_segment(
                        storage,
                        sa,
                        i,
                        &|ri, rec| keep(i, rec) && !orphans.contains(&ri),
                        seal_next,
                    )
                    .await?;
                } else {
                    rewrites_done = false;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RewriteSegment,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: None,
                    bytes: Some(a.scan.file_len),
                    reason: format!(
                        "{why}: rewritten with its {kept} valid records of {} (original in quarantine)",
                        a.records.len()
                    ),
                    status,
                });
            }
        }
    }

    // Hard states whose commit is now beyond the log.
    let mut lower = Vec::new();
    let mut gids: Vec<u64> = r.table.groups.keys().copied().collect();
    gids.sort_unstable();
    for g in gids {
        let st = &r.table.groups[&g];
        if let Some(hs) = st.hard_state {
            if hs.commit > st.last_index() {
                lower.push((g, hs, st.last_index()));
            }
        }
    }
    if !lower.is_empty() {
        let status = status_for(None, true);
        let status = if status == "done" && !(rewrites_done && opts.only_segment.is_none()) {
            "needs --skip-corrupt"
        } else {
            status
        };
        let path = sa
            .segments
            .last()
            .map_or(sa.dir.clone(), |s| s.path.clone());
        if status == "done" {
            append_hard_states(storage, sa, &lower).await?;
        }
        for (g, hs, last) in lower {
            report.actions.push(RepairAction {
                kind: ActionKind::LowerCommit,
                shard: k,
                segment: None,
                file: path.clone(),
                offset: None,
                bytes: None,
                reason: format!(
                    "group {g}: commit {} is beyond the repaired log's last index {last}: lowered to {last} (term {} and vote {} kept); committed entries were lost here, so rebuild this replica from a healthy one",
                    hs.commit, hs.term, hs.vote
                ),
                status,
            });
        }
    }
    let _ = needs_skip;
    Ok(())
}

pub(super) async fn drop_index<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    id: u64,
    q: &mut Quarantine,
) -> Result<()> {
    let ipath = sa.dir.join(index_file_name(id));
    if ipath.exists() {
        q.copy_file(storage, &ipath, sa.shard, "index of a repaired segment")
            .await?;
        storage
            .remove_file(&ipath)
            .await
            .map_err(|e| Error::io(&ipath, e))?;
        storage
            .sync_dir(&sa.dir)
            .await
            .map_err(|e| Error::io(&sa.dir, e))?;
    }
    Ok(())
}

/// Writes segment `i` anew with the records `keep` selects, each batch re-encoded with its
/// original sequence numbers (checksums recomputed over the kept records), through a temp
/// file + fdatasync + rename + directory fsync; then writes its index if it is sealed.
pub(super) async fn rewrite_segment<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    i: usize,
    keep: &dyn Fn(usize, &RecordInfo) -> bool,
    seal_next: Option<u64>,
) -> Result<()> {
    let a = &sa.segments[i];
    let io = |p: &Path, e| Error::io(p, e);
    let src = storage
        .open(&a.source, false)
        .await
        .map_err(|e| io(&a.source, e))?;
    let prev_seq = sa.prev_last_seq(i);
    let first_kept_seq = a.batches.first().map(|b| b.seq);
    let header = match (&a.header_rebuilt, a.scan.header) {
        (None, Some(h)) => h,
        (_, h) => SegmentHeader::new(
            a.id,
            sa.shard,
            h.map_or(rebuilt_segment_bytes(a.scan.file_len), |h| h.segment_bytes),
            first_kept_seq.unwrap_or(prev_seq.map_or(1, |s| s + 1)),
            now_unix_ms(),
        ),
    };
    let capacity = header.segment_bytes;
    let tmp = a.path.with_extension("tmp");
    if tmp.exists() {
        storage.remove_file(&tmp).await.map_err(|e| io(&tmp, e))?;
    }
    let f = storage.create_new(&tmp).await.map_err(|e| io(&tmp, e))?;
    f.allocate(capacity).await.map_err(|e| io(&tmp, e))?;
    let mut hb = storage.alloc_buf(SEGMENT_HEADER_BYTES as usize);
    header.encode_block(hb.as_bytes_mut());
    f.write_at(hb, 0).await.map_err(|e| io(&tmp, e))?;
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut entries = Vec::new();
    let mut first_seq = None;
    let mut last_seq = None;
    let mut sealed = false;
    let mut ri = 0;
    for b in &a.batches {
        while ri < a.records.len() && a.records[ri].batch_offset < b.offset {
            ri += 1;
        }
        let mut recs = Vec::new();
        while ri < a.records.len() && a.records[ri].batch_offset == b.offset {
            if keep(ri, &a.records[ri]) {
                recs.push(&a.records[ri]);
            }
            ri += 1;
        }
        if recs.is_empty() {
            continue;
        }
        let bytes = src
            .read_at(b.offset, b.bytes as usize)
            .await
            .map_err(|e| io(&a.source, e))?;
        let mut builder = BatchBuilder::new(storage.alloc_buf(b.bytes as usize));
        for rec in recs {
            let rel = (rec.offset - b.offset) as usize;
            let at = Location {
                file: a.path.clone(),
                offset: rec.offset,
                group: Some(rec.header.group),
                index: Some(rec.header.index),
            };
            let (h, payload) = bytes
                .get(rel..)
                .ok_or_else(|| Error::Corruption {
                    at: at.clone(),
                    what: "short read while rewriting".into(),
                })
                .and_then(|b| {
                    decode_record(b).map_err(|e| Error::Corruption {
                        at: at.clone(),
                        what: format!("record changed since it was scanned: {e}"),
                    })
                })?;
            let kind = h.kind();
            let aux = match (kind, seal_next) {
                (RecordKind::Seal, Some(next)) => next,
                _ => h.aux,
            };
            sealed |= kind == RecordKind::Seal;
            builder.push(&NewRecord {
                kind,
                group: h.group,
                term: h.term,
                index: h.index,
                aux,
                payload,
            });
        }
        let (buf, ops, nbytes) = builder.finish(b.seq, b.durable_seq);
        if pos + nbytes > capacity {
            return Err(Error::Corruption {
                at: Location {
                    file: a.path.clone(),
                    offset: pos,
                    group: None,
                    index: None,
                },
                what: "rewritten segment does not fit its capacity".into(),
            });
        }
        f.write_at(buf, pos).await.map_err(|e| io(&tmp, e))?;
        for op in &ops {
            entries.push(IndexEntry {
                kind: op.kind as u16,
                reserved: 0,
                payload_len: op.payload_len,
                offset: pos + op.offset_in_batch as u64,
                group: op.group,
                term: op.term,
                index: op.index,
                aux: op.aux,
            });
        }
        first_seq.get_or_insert(b.seq);
        last_seq = Some(b.seq);
        pos += nbytes;
    }
    if let (Some(next), false) = (seal_next, sealed) {
        let seq = last_seq.or(prev_seq).map_or(1, |s| s + 1);
        let mut builder = BatchBuilder::new(storage.alloc_buf(BLOCK_BYTES as usize));
        builder.push(&NewRecord {
            kind: RecordKind::Seal,
            group: 0,
            term: 0,
            index: 0,
            aux: next,
            payload: &[],
        });
        let (buf, ops, nbytes) = builder.finish(seq, seq - 1);
        if pos + nbytes > capacity {
            return Err(Error::Corruption {
                at: Location {
                    file: a.path.clone(),
                    offset: pos,
                    group: None,
                    index: None,
                },
                what: "no room left for the seal record".into(),
            });
        }
        f.write_at(buf, pos).await.map_err(|e| io(&tmp, e))?;
        entries.push(IndexEntry {
            kind: RecordKind::Seal as u16,
            reserved: 0,
            payload_len: 0,
            offset: pos + ops[0].offset_in_batch as u64,
            group: 0,
            term: 0,
            index: 0,
            aux: next,
        });
        first_seq.get_or_insert(seq);
        last_seq = Some(seq);
        pos += nbytes;
        sealed = true;
    }
    f.sync_data().await.map_err(|e| io(&tmp, e))?;
    f.close().await.map_err(|e| io(&tmp, e))?;
    src.close().await.map_err(|e| io(&a.source, e))?;
    storage
        .rename(&tmp, &a.path)
        .await
        .map_err(|e| io(&a.path, e))?;
    storage
        .sync_dir(&sa.dir)
        .await
        .map_err(|e| io(&sa.dir, e))?;
    if sealed {
        let idx = SealedIndex::new(
            a.id,
            capacity,
            pos,
            first_seq.unwrap_or(0),
            last_seq.unwrap_or(0),
            entries,
        );
        let ipath = sa.dir.join(index_file_name(a.id));
        write_file_atomic(storage, &ipath, &idx.encode())
            .await
            .map_err(|e| io(&ipath, e))?;
    }
    Ok(())
}

/// Appends one batch of hard state records (commit lowered to the last index) after the last
/// valid batch of the shard's last segment, at a block no acknowledged byte lives in.
pub(super) async fn append_hard_states<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    lower: &[(u64, HardState, u64)],
) -> Result<()> {
    let Some(last) = sa.segments.last() else {
        return Ok(());
    };
    let path = &last.path;
    let prev = sa.prev_last_seq(sa.segments.len() - 1);
    let scan = scan_segment(storage, path, prev, false, |_| {}).await?;
    let fail = |what: String| Error::Corruption {
        at: Location {
            file: path.clone(),
            offset: scan.valid_end,
            group: None,
            index: None,
        },
        what,
    };
    if !matches!(scan.stop, ScanStop::CleanEnd | ScanStop::EndOfFile) {
        return Err(fail(format!(
            "cannot append the lowered hard states: the last segment ends with {:?}",
            scan.stop
        )));
    }
    let need = lower.len() * crate::constants::RECORD_HEADER_BYTES
        + crate::batch::BATCH_HEADER_RECORD_BYTES;
    let size = align_up(need as u64, BLOCK_BYTES);
    let mut b = BatchBuilder::new(storage.alloc_buf(size as usize));
    for (g, hs, last_index) in lower {
        b.push(&NewRecord {
            kind: RecordKind::HardState,
            group: *g,
            term: hs.term,
            index: *last_index,
            aux: hs.vote,
            payload: &[],
        });
    }
    let seq = sa.max_seq().max(scan.last_batch_seq.unwrap_or(0)) + 1;
    let (buf, _, nbytes) = b.finish(seq, seq - 1);
    if scan.valid_end + nbytes + BLOCK_BYTES > scan.file_len {
        return Err(fail(
            "no room in the last segment for the lowered hard states".into(),
        ));
    }
    let f = storage
        .open(path, true)
        .await
        .map_err(|e| Error::io(path, e))?;
    f.write_at(buf, scan.valid_end)
        .await
        .map_err(|e| Error::io(path, e))?;
    f.sync_data().await.map_err(|e| Error::io(path, e))?;
    f.close().await.map_err(|e| Error::io(path, e))
}
