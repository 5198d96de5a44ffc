//! `tern verify-data`: every check of a data directory, and the sealed index checks.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::analysis::{
    analyze_shard, is_leftover_temp, read_layout, replay, SegmentAnalysis, ShardAnalysis,
};
use super::problem::{problem, Problem, Severity, FIX_INDEX, FIX_REPAIR, FIX_SKIP};
use crate::chain::{self, chain_path, SegmentSeen};
use crate::config::shard_for_group;
use crate::engine::{list_shard_dirs, misplaced_groups, shard_count_problems, META_FILE};
use crate::error::{Error, Result};
use crate::format::segment::{index_file_name, segment_file_name};
use crate::format::SealedIndex;
use crate::group::{GroupTable, HardState};
use crate::repaired::{self, DamagedEntry, EntryDamage};
use crate::storage::{read_file, Storage};

// ---------------------------------------------------------------------------------------
// verify-data

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Restrict record-level problems (and the group summary) to this group.
    pub group: Option<u64>,
    /// Stop at the first problem.
    pub fail_fast: bool,
    /// Count what recovery fixes by itself (a missing index of a sealed segment that scans
    /// clean) as a problem rather than a warning.
    pub strict: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub shard: u32,
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: u64,
    pub shard: u32,
    pub first_index: u64,
    pub last_index: u64,
    pub entries: u64,
    pub hard_state: Option<HardState>,
    /// (term, index) of the snapshot the log starts after; in JSON an object `{term, index}`,
    /// like `hard_state` and like export-topic prints it.
    #[serde(serialize_with = "snapshot_as_object")]
    pub snapshot: Option<(u64, u64)>,
}

fn snapshot_as_object<S: serde::Serializer>(
    snapshot: &Option<(u64, u64)>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct SnapshotPoint {
        term: u64,
        index: u64,
    }
    match snapshot {
        Some((term, index)) => s.serialize_some(&SnapshotPoint {
            term: *term,
            index: *index,
        }),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub clean: bool,
    pub shards: Vec<ShardSummary>,
    pub groups: Vec<GroupSummary>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// True if `--fail-fast` stopped the check early.
    pub stopped_early: bool,
}

impl serde::Serialize for HardState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("HardState", 3)?;
        st.serialize_field("term", &self.term)?;
        st.serialize_field("vote", &self.vote)?;
        st.serialize_field("commit", &self.commit)?;
        st.end()
    }
}

/// Checks a data directory: ENGINE file, every segment header, batch and record checksum,
/// the seal chain, every sealed index against the data it indexes (entry by entry), each
/// group's log (no holes, terms never decrease) and hard state (commit within the log, term
/// at least the last entry's).
pub async fn verify_dir<S: Storage>(
    storage: &S,
    root: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    let layout = read_layout(root)?;
    let mut out = Vec::new();
    if let Err(why) = &layout.meta {
        out.push(
            problem(
                "engine-meta",
                &root.join(META_FILE),
                format!("ENGINE file unusable: {why}"),
            )
            .fix("rebuild it (docs/operations/recovery.md, \"Lost or garbled ENGINE file\"): the shard count is the number of shard-<k> directories"),
        );
    }
    for p in &layout.strays {
        out.push(stray_or_leftover(p));
    }
    let shard_count = layout
        .meta
        .as_ref()
        .map(|m| m.shards)
        .unwrap_or_else(|_| layout.shards.keys().max().map_or(0, |k| k + 1));
    if layout.meta.is_ok() {
        for why in shard_count_problems(shard_count, &list_shard_dirs(root)?) {
            out.push(
                problem("shard-count", &root.join(META_FILE), why).fix(
                    "restore the ENGINE file from a replica of the same format and shard count",
                ),
            );
        }
    }
    let mut shards = Vec::new();
    let mut groups = Vec::new();
    let mut stopped_early = false;
    for (&k, dir) in layout.shards.iter().filter(|(k, _)| **k < shard_count) {
        if opts.fail_fast && out.iter().any(|p| p.severity == Severity::Error) {
            stopped_early = true;
            break;
        }
        let sa = analyze_shard(storage, k, dir, false, progress).await?;
        let (problems, table) = check_shard(storage, &sa, opts).await?;
        out.extend(problems);
        if layout.meta.is_ok() {
            let all = table.all_info();
            let misplaced = misplaced_groups(k, shard_count, all.iter().map(|g| g.group));
            if let Some(g) = misplaced.first() {
                out.push(
                    problem(
                        "shard-count",
                        dir,
                        format!(
                            "holds group {g} (and {} more) that ENGINE's {shard_count} shards place on shard {}",
                            misplaced.len() - 1,
                            shard_for_group(*g, shard_count)
                        ),
                    )
                    .shard(k)
                    .group(Some(*g), None),
                );
            }
        }
        shards.push(ShardSummary {
            shard: k,
            segments: sa.segments.len(),
            batches: sa.segments.iter().map(|s| s.batches.len() as u64).sum(),
            records: sa.segments.iter().map(|s| s.records.len() as u64).sum(),
            bytes: sa.segments.iter().map(|s| s.scan.valid_end).sum(),
        });
        for info in table.all_info() {
            if opts.group.is_some_and(|g| g != info.group) {
                continue;
            }
            groups.push(GroupSummary {
                group: info.group,
                shard: k,
                first_index: info.first_index,
                last_index: info.last_index,
                entries: (info.last_index + 1).saturating_sub(info.first_index),
                hard_state: info.hard_state,
                snapshot: info.snapshot,
            });
        }
    }
    groups.sort_by_key(|g| g.group);
    if let Some(g) = opts.group {
        out.retain(|p| p.group.is_none_or(|pg| pg == g));
    }
    let (mut problems, warnings): (Vec<_>, Vec<_>) = out
        .into_iter()
        .map(|p| p.for_dir(root))
        .partition(|p| p.severity == Severity::Error);
    if opts.fail_fast && problems.len() > 1 {
        problems.truncate(1);
        stopped_early = true;
    }
    Ok(VerifyReport {
        path: root.to_path_buf(),
        clean: problems.is_empty(),
        shards,
        groups,
        problems,
        warnings,
        stopped_early,
    })
}

/// Problems of one shard, and the group table recovery would build from it.
pub async fn check_shard<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    opts: &VerifyOptions,
) -> Result<(Vec<Problem>, GroupTable)> {
    let k = sa.shard;
    let mut out = Vec::new();
    for p in &sa.strays {
        out.push(stray_or_leftover(p).shard(k));
    }
    for id in &sa.index_ids {
        if !sa.segments.iter().any(|s| s.id == *id) {
            out.push(
                problem(
                    "stray-file",
                    &sa.dir.join(index_file_name(*id)),
                    "index of a segment that is gone (removed by the engine at start-up)".into(),
                )
                .shard(k)
                .warning(),
            );
        }
    }
    out.extend(chain_problems(sa));
    let n = sa.segments.len();
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        if let Some(why) = a.bad_header() {
            let in_chain = matches!(&sa.chain, Some(Ok(c)) if (c.first_segment..=c.last_segment).contains(&a.id));
            let (msg, fix) = if in_chain {
                (format!("segment header unreadable ({why}); the chain record names the segment as durable, so the engine refuses to start"), FIX_CHAIN)
            } else if is_last {
                (format!("segment header unreadable ({why}); if nothing in the segment was acknowledged (a crash while creating it) the engine removes it at start-up, and so does `tern repair`"), FIX_REPAIR)
            } else {
                (format!("segment header unreadable ({why})"), FIX_SKIP)
            };
            out.push(
                problem("segment-header", &a.path, msg)
                    .at(0)
                    .shard(k)
                    .fix(fix),
            );
            continue;
        }
        if let Some(h) = &a.scan.header {
            if h.segment_id != a.id || h.shard != k {
                out.push(
                    problem(
                        "segment-header",
                        &a.path,
                        format!(
                            "header names segment {} of shard {}, file is segment {} of shard {k}",
                            h.segment_id, h.shard, a.id
                        ),
                    )
                    .at(0)
                    .shard(k),
                );
            }
            if a.scan.file_len > h.segment_bytes {
                // docs/format.md: a segment never grows past the size its header states; a
                // larger file was written by something that ignored it.
                out.push(
                    problem(
                        "segment-oversize",
                        &a.path,
                        format!(
                            "file is {} bytes, its header says {}: bytes past {} were written beyond the segment's size",
                            a.scan.file_len, h.segment_bytes, h.segment_bytes
                        ),
                    )
                    .at(h.segment_bytes)
                    .shard(k)
                    .fix("export the groups of this shard (tern export-topic) and import them into a new data directory"),
                );
            }
        }
        let torn = sa.torn_from(i);
        for (di, d) in a.damages.iter().enumerate() {
            if torn == Some(di) {
                let later: Vec<u64> = d.later_batches.iter().map(|b| b.seq).collect();
                let mut msg = format!(
                    "torn tail ({}) over bytes {}..{}: never acknowledged; the engine truncates it at start-up",
                    d.reason, d.offset, d.garbage_end
                );
                if !later.is_empty() {
                    msg.push_str(&format!(
                        " together with the unacknowledged batches {later:?} after it"
                    ));
                }
                out.push(
                    problem("torn-tail", &a.path, msg)
                        .at(d.record_offset)
                        .shard(k)
                        .group(d.group, d.index)
                        .fix(FIX_REPAIR),
                );
                break;
            }
            let why = if !is_last {
                "in a sealed segment".to_string()
            } else if crate::torn_tail::proven_durable(d) {
                "a later batch proves it was acknowledged".to_string()
            } else {
                "valid data follows".to_string()
            };
            out.push(
                problem(
                    "corruption",
                    &a.path,
                    format!(
                        "{} ({why}); bytes {}..{}",
                        d.reason, d.offset, d.garbage_end
                    ),
                )
                .at(d.record_offset)
                .shard(k)
                .group(d.group, d.index)
                .fix(FIX_SKIP),
            );
        }
        match a.sealed_next() {
            Some(next) if !is_last && sa.segments[i + 1].id != next => {
                out.push(
                    problem(
                        "missing-segment",
                        &a.path,
                        format!(
                            "seal names segment {next} as next, but the next segment is {}",
                            sa.segments[i + 1].id
                        ),
                    )
                    .at(a.scan.valid_end)
                    .shard(k)
                    .fix(FIX_SKIP),
                );
            }
            None if !is_last && a.damages.is_empty() => {
                out.push(
                    problem(
                        "unsealed-segment",
                        &a.path,
                        format!(
                            "segment {} is followed by segment {} but ends at {} without a seal record",
                            a.id,
                            sa.segments[i + 1].id,
                            a.scan.valid_end
                        ),
                    )
                    .at(a.scan.valid_end)
                    .shard(k)
                    .fix(FIX_SKIP),
                );
            }
            _ => {}
        }
        // Sealed indexes.
        let ipath = sa.dir.join(index_file_name(a.id));
        let has_index = sa.index_ids.contains(&a.id);
        let sealed_clean = a.sealed_next().is_some() && a.damages.is_empty();
        if sealed_clean && !has_index {
            // Routine after a crash between sealing and writing the index: recovery
            // rebuilds it by scanning, so only --strict counts it.
            let p = problem(
                "index-missing",
                &ipath,
                format!(
                    "sealed segment {} scans clean but has no index (recovery rebuilds it by scanning; --strict counts this as a problem)",
                    a.id
                ),
            )
            .shard(k)
            .fix(FIX_INDEX);
            out.push(if opts.strict { p } else { p.warning() });
        } else if has_index && a.damages.is_empty() {
            // (A damaged segment's index is rebuilt by repair; the damage is the problem.)
            if let Some(p) = check_index(storage, &ipath, a).await? {
                out.push(p.shard(k));
            }
        }
        if opts.fail_fast && out.iter().any(|p| p.severity == Severity::Error) {
            let t = GroupTable::default();
            return Ok((out, t));
        }
        let _ = n;
    }

    // The group table recovery would build (records after a torn tail are dropped, as
    // recovery zeroes them).
    let cut: Vec<Option<u64>> = (0..sa.segments.len())
        .map(|i| sa.torn_from(i).map(|d| sa.segments[i].damages[d].offset))
        .collect();
    let r = replay(sa, &|si, rec| cut[si].is_none_or(|c| rec.offset < c));
    for (g, (from, to)) in &r.holes {
        let first = r
            .orphans
            .iter()
            .find(|(si, ri)| sa.segments[*si].records[*ri].header.group == *g)
            .map(|(si, ri)| (&sa.segments[*si], &sa.segments[*si].records[*ri]));
        let (file, off) = first.map_or((sa.dir.clone(), None), |(s, rec)| {
            (s.path.clone(), Some(rec.offset))
        });
        let msg = if first.is_some() {
            format!(
                "entries {from}..={to} cannot be kept: the group's log has a hole at index {from}"
            )
        } else {
            format!("entries {from}..={to} were in the damaged region: the group's log now starts at {}", to + 1)
        };
        let mut p = problem("log-hole", &file, msg)
            .shard(k)
            .group(Some(*g), Some(*from))
            .fix(FIX_SKIP);
        p.offset = off;
        out.push(p);
    }
    out.extend(damaged_entry_problems(sa, &r.table));
    let mut ids: Vec<u64> = r.table.groups.keys().copied().collect();
    ids.sort_unstable();
    for g in ids {
        let st = &r.table.groups[&g];
        let mut prev_term = st.snapshot.as_ref().map_or(0, |s| s.term);
        let mut prev_index = st.first_index;
        for (i, e) in st.entries.iter().enumerate() {
            let index = st.first_index + i as u64;
            if e.term < prev_term {
                out.push(
                    problem(
                        "term-order",
                        &sa.dir.join(segment_file_name(e.segment)),
                        format!(
                            "entry term {} is below the term {prev_term} of index {prev_index}",
                            e.term
                        ),
                    )
                    .at(e.offset)
                    .shard(k)
                    .group(Some(g), Some(index)),
                );
                break;
            }
            prev_term = e.term;
            prev_index = index;
        }
        if let Some(hs) = st.hard_state {
            let last = st.last_index();
            let last_term = st.entries.back().map_or(prev_term, |e| e.term);
            if hs.commit > last {
                out.push(
                    problem(
                        "hard-state",
                        &sa.dir,
                        format!("commit {} is beyond the last index {last} of the log: committed entries are missing", hs.commit),
                    )
                    .shard(k)
                    .group(Some(g), Some(hs.commit))
                    .fix(FIX_SKIP),
                );
            }
            if hs.term < last_term {
                out.push(
                    problem(
                        "hard-state",
                        &sa.dir,
                        format!(
                            "hard state term {} is below the term {last_term} of the last entry",
                            hs.term
                        ),
                    )
                    .shard(k)
                    .group(Some(g), Some(last)),
                );
            }
        }
    }
    if let Some(g) = opts.group {
        out.retain(|p| p.group.is_none_or(|pg| pg == g));
    }
    Ok((out, r.table))
}

/// Every damaged entry record the scans of a shard passed over, with the verdict of
/// [`repaired::judge`] on the group table recovery would build (records after a torn tail
/// dropped, as recovery zeroes them). `tern scan` of one segment uses it with the segment's
/// shard, so it judges as `verify-data` and recovery do.
pub fn damaged_entry_verdicts(sa: &ShardAnalysis) -> Vec<(DamagedEntry, EntryDamage)> {
    let cut: Vec<Option<u64>> = (0..sa.segments.len())
        .map(|i| sa.torn_from(i).map(|d| sa.segments[i].damages[d].offset))
        .collect();
    let r = replay(sa, &|si, rec| cut[si].is_none_or(|c| rec.offset < c));
    let repairs = repair_locations(sa);
    sa.segments
        .iter()
        .flat_map(|a| {
            a.records
                .iter()
                .filter(|r| r.damaged)
                .map(|rec| DamagedEntry {
                    segment: a.id,
                    offset: rec.offset,
                    group: rec.header.group,
                    index: rec.header.index,
                    term: rec.header.term,
                })
        })
        .map(|e| {
            (
                e,
                repaired::judge(&r.table, &e, |s, o| repairs.contains(&(s, o))),
            )
        })
        .collect()
}

/// (segment, offset) of every valid Repair record of a shard.
fn repair_locations(sa: &ShardAnalysis) -> std::collections::HashSet<(u64, u64)> {
    sa.segments
        .iter()
        .flat_map(|a| {
            a.records
                .iter()
                .filter(|r| !r.damaged && r.kind() == crate::format::RecordKind::Repair)
                .map(move |r| (a.id, r.offset))
        })
        .collect()
}

/// Every damaged entry record the scans passed over, judged by [`repaired::judge`] on the
/// table recovery would build, as recovery judges it: a repaired or dead one is a warning (the
/// engine starts and serves the later copy), an unrepaired one an error whose fix is to start
/// the node (it repairs the entry from a peer), an implausible one corruption.
fn damaged_entry_problems(sa: &ShardAnalysis, table: &GroupTable) -> Vec<Problem> {
    let mut out = Vec::new();
    let repairs = repair_locations(sa);
    for a in &sa.segments {
        for rec in a.records.iter().filter(|r| r.damaged) {
            let e = DamagedEntry {
                segment: a.id,
                offset: rec.offset,
                group: rec.header.group,
                index: rec.header.index,
                term: rec.header.term,
            };
            let verdict = repaired::judge(table, &e, |s, o| repairs.contains(&(s, o)));
            let p = match verdict {
                EntryDamage::Repaired => problem(
                    "repaired-entry",
                    &a.path,
                    format!(
                        "entry record fails its checksum but is repaired: a later durable Repair record holds entry {} term {} (the damaged bytes stay until the segment is purged)",
                        e.index, e.term
                    ),
                )
                .warning(),
                EntryDamage::Dead => problem(
                    "dead-damaged-entry",
                    &a.path,
                    "entry record fails its checksum but is no longer in its group's log (the purge removes it)".into(),
                )
                .warning(),
                EntryDamage::Unrepaired => problem(
                    "damaged-entry",
                    &a.path,
                    format!(
                        "entry {} term {} fails its checksum in an acknowledged batch; the engine starts with it and the node repairs it from a peer",
                        e.index, e.term
                    ),
                )
                .fix("start the node (tern serve): it repairs the entry from another replica; then stop it and run verify-data again"),
                EntryDamage::Implausible => problem(
                    "corruption",
                    &a.path,
                    format!(
                        "entry record fails its checksum and claims index {} term {}, which contradicts its group's log",
                        e.index, e.term
                    ),
                )
                .fix(FIX_SKIP),
            };
            out.push(
                p.at(e.offset)
                    .shard(sa.shard)
                    .group(Some(e.group), Some(e.index)),
            );
        }
    }
    out
}

/// The chain record's checks (`crate::chain`), as recovery applies them.
pub(super) fn chain_problems(sa: &ShardAnalysis) -> Vec<Problem> {
    let k = sa.shard;
    let path = chain_path(&sa.dir);
    let mut out = Vec::new();
    let chain = match &sa.chain {
        None => {
            if !sa.segments.is_empty() {
                out.push(
                    problem(
                        "chain-missing",
                        &path,
                        "no chain record (a directory from before chain records): a lost newest or oldest segment cannot be detected; the engine creates one at its next start".into(),
                    )
                    .shard(k)
                    .warning(),
                );
            }
            return out;
        }
        Some(Err(why)) => {
            out.push(
                problem("chain-record", &path, why.clone())
                    .shard(k)
                    .fix(FIX_SKIP),
            );
            return out;
        }
        Some(Ok(c)) => c,
    };
    for id in &sa.purge_leftovers {
        out.push(
            problem(
                "stray-file",
                &sa.dir.join(segment_file_name(*id)),
                "segment below the chain's first (an interrupted purge; removed by the engine at start-up)".into(),
            )
            .shard(k)
            .warning(),
        );
    }
    let ids: Vec<u64> = sa.segments.iter().map(|a| a.id).collect();
    let seen = sa
        .segments
        .iter()
        .filter_map(|a| chain::check_segment(chain, k, &SegmentSeen::from_scan(a.id, &a.scan)));
    // An unreadable header is reported with the segment's other checks.
    let seen = seen.filter(|p| p.code != "segment-header");
    for p in chain::check_files(chain, k, &ids).into_iter().chain(seen) {
        let file = p
            .segment
            .map_or_else(|| path.clone(), |id| sa.dir.join(segment_file_name(id)));
        out.push(
            problem(p.code, &file, p.what)
                .at(p.offset)
                .shard(k)
                .fix(FIX_CHAIN),
        );
    }
    out
}

/// What to do about a segment lost from the chain: it cannot be rebuilt from this node.
const FIX_CHAIN: &str = "restore the segment, or rebuild this node from a replica; `tern repair --skip-corrupt` accepts the loss";

/// The index a scan of `a` implies (what the writer wrote when it sealed the segment).
pub fn build_index(a: &SegmentAnalysis) -> SealedIndex {
    SealedIndex::new(
        a.id,
        a.scan.header.map_or(0, |h| h.segment_bytes),
        a.scan.valid_end,
        a.scan.first_batch_seq.unwrap_or(0),
        a.scan.last_batch_seq.unwrap_or(0),
        a.records.iter().map(|r| r.index_entry()).collect(),
    )
}

/// Decodes an index and compares it with the segment's records, entry by entry.
pub async fn check_index<S: Storage>(
    storage: &S,
    ipath: &Path,
    a: &SegmentAnalysis,
) -> Result<Option<Problem>> {
    let bytes = read_file(storage, ipath)
        .await
        .map_err(|e| Error::io(ipath, e))?;
    let idx = match SealedIndex::decode(&bytes) {
        Ok(i) => i,
        Err(e) => {
            return Ok(Some(
                problem("index-corrupt", ipath, format!("index unreadable: {e}")).fix(FIX_INDEX),
            ))
        }
    };
    Ok(compare_index(&idx, a).map(|(offset, msg)| {
        let mut p = problem("index-mismatch", ipath, msg).fix(FIX_INDEX);
        p.offset = offset;
        p
    }))
}

/// The first difference between an index and the records of its segment, as
/// (segment offset, description).
pub fn compare_index(idx: &SealedIndex, a: &SegmentAnalysis) -> Option<(Option<u64>, String)> {
    let h = &idx.header;
    if h.segment_id != a.id {
        return Some((
            None,
            format!(
                "index names segment {}, file is segment {}",
                h.segment_id, a.id
            ),
        ));
    }
    if a.sealed_next().is_none() || !a.damages.is_empty() {
        return Some((
            None,
            "index exists but the segment is not a cleanly sealed segment".into(),
        ));
    }
    if h.data_end != a.scan.valid_end {
        return Some((
            Some(a.scan.valid_end),
            format!(
                "index says data ends at {}, the segment's data ends at {}",
                h.data_end, a.scan.valid_end
            ),
        ));
    }
    if Some(h.first_batch_seq) != a.scan.first_batch_seq
        || Some(h.last_batch_seq) != a.scan.last_batch_seq
    {
        return Some((
            None,
            format!(
                "index covers batches {}..={}, the segment holds {:?}..={:?}",
                h.first_batch_seq, h.last_batch_seq, a.scan.first_batch_seq, a.scan.last_batch_seq
            ),
        ));
    }
    for (i, (e, r)) in idx.entries.iter().zip(&a.records).enumerate() {
        let want = r.index_entry();
        if *e != want {
            return Some((
                Some(r.offset),
                format!(
                    "index entry {i} is {e:?}, the record at offset {} is {want:?}",
                    r.offset
                ),
            ));
        }
    }
    if idx.entries.len() != a.records.len() {
        return Some((
            None,
            format!(
                "index has {} entries, the segment {} records",
                idx.entries.len(),
                a.records.len()
            ),
        ));
    }
    None
}

/// A file tern did not expect: a leftover temporary file of its own (`tern repair`
/// quarantines it) or a stray it ignores.
fn stray_or_leftover(p: &Path) -> Problem {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if is_leftover_temp(&name) {
        problem(
            "leftover-temp",
            p,
            "left-over temporary file of an interrupted write (the engine removes those of a shard at start-up)".into(),
        )
        .fix(FIX_REPAIR)
        .warning()
    } else {
        problem(
            "stray-file",
            p,
            "not written by tern (ignored by the engine)".into(),
        )
        .warning()
    }
}
